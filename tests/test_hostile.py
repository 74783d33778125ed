"""Hostile HTTP input beyond test_gateway.py's cases: encoded traversal, absolute and Windows
paths, overlong UTF-8 and broken percent-encoding, 10,000-character and SQL-looking ids,
polyglot files, wrong content types and wrong types. Each gets its documented 4xx and leaves
the servers' and the gallery's files and the catalog exactly as they were.

And the keys: every route but `GET /` refuses a missing key before reading a byte of the
body, keys never reach logs, errors or the catalog in plain text, revoking is immediate."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import time
import zipfile
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest
import ray
from PIL import Image

from conftest import start_fresh_service, wait_job
from facenet_ray import auth
from facenet_ray.runtime import actor, shard_name

pytestmark = pytest.mark.ray

LONG = "x" * 10_000
SQL = "x' OR '1'='1'; DROP TABLE api_keys; --"


# -- the service and its snapshot --------------------------------------------------------


@pytest.fixture(scope="module")
def svc(ray_cluster, http_port, tmp_path_factory):
    """The sample gallery, loaded and distributed, on the fake encoder (nothing here searches
    faces); slow heartbeats so that a loaded machine never marks the server down meanwhile."""
    svc = start_fresh_service(
        tmp_path_factory.mktemp("hostile"), http_port, encoder="fake",
        heartbeat_interval_s=2.0, heartbeat_misses=5,
    )
    with httpx.Client(base_url=svc.url, timeout=60, headers=svc.headers()) as client:
        for route in ("/distribution/loadDirs", "/distribution/startAutoDistrib"):
            job = wait_job(client, svc, client.get(route).json(), timeout_s=60)
            assert job["status"] == "done", job
        (svc.server_id,) = client.get("/distribution/getServersList").json().split(",")
    assert ray.get(actor(shard_name(svc.server_id)).wait_idle.remote(60))
    deadline = time.monotonic() + 30
    while snapshot(svc) != snapshot(svc, settle_s=2.5):  # the encodings cache is saved
        assert time.monotonic() < deadline, "the service did not settle"
    return svc


@pytest.fixture(scope="module")
def client(svc):
    with httpx.Client(base_url=svc.url, timeout=60) as client:
        yield client


def snapshot(svc, settle_s: float = 0.0) -> dict:
    """sha256 of every file under the servers' folders and the source gallery (temp files
    and encodings caches included), and what the catalog holds (heartbeat times left out)."""
    time.sleep(settle_s)
    files = {}
    for root in (svc.data_dir / "shards", svc.gallery):
        for path in sorted(root.rglob("*")):
            if path.is_file():
                files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    catalog = actor("catalog")
    folders = ray.get(catalog.list_folders.remote())
    stats = ray.get(catalog.stats.remote())
    stats.pop("heartbeats")
    return {
        "files": files,
        "folders": ray.get(catalog.files_of.remote(folders)),
        "assignments": ray.get(catalog.get_assignments.remote()),
        "keys": ray.get(catalog.list_keys.remote()),
        "servers": sorted(
            (s["server_id"], s["status"], s["cpu_count"], s["ip"], s["port"])
            for s in ray.get(catalog.list_servers.remote())
        ),
        "events": len(ray.get(catalog.events.remote(None, 1_000_000))),
        "stats": stats,
    }


def raw_request(
    url: str, method: str, target: str, headers: dict[str, str] | None = None,
    body: bytes = b"", timeout_s: float = 30.0,
) -> tuple[int, bytes]:
    """Send exactly this request line (no client-side normalising or re-encoding of the
    target); returns the status and the body."""
    where = urlsplit(url)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {where.hostname}:{where.port}",
             "Connection: close", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    with socket.create_connection((where.hostname, where.port), timeout=timeout_s) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        payload = _dechunk(payload)
    return int(head.split(b" ", 2)[1]), payload


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2:]
    return out


# -- inputs ------------------------------------------------------------------------------


def jpeg(side: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (90, 120, 150)).save(buf, "JPEG")
    return buf.getvalue()


def zipped(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr(name, data)
    return buf.getvalue()


# name -> (bytes, status): 415 when no image format is recognised, 422 when one is but the
# data does not decode.
POLYGLOTS = {
    # GIF header that is also JavaScript (the GIF/JS trick), no image data.
    "gif+js": (b"GIF89a/*\x00\x00\x00\x00*/=1;alert(document.domain)//" + b"\x00" * 64, 415),
    # JPEG start-of-image marker followed by an HTML page.
    "jpeg+html": (b"\xff\xd8\xff\xe0" + b"<html><script>alert(1)</script></html>" * 20, 422),
    # PNG signature followed by a PHP script.
    "png+php": (b"\x89PNG\r\n\x1a\n" + b"<?php system($_GET['c']); ?>" * 10, 415),
    # A ZIP (JAR, DOCX, ...) whose entry is named like a photo.
    "zip": (zipped("photo.jpg", b"MZ\x90\x00" + b"\x00" * 200), 415),
    # A JPEG cut right after its header, with a ZIP glued on: truncated image data.
    "jpeg head+zip": (jpeg()[:200] + zipped("evil.php", b"<?php ?>"), 422),
    "windows exe": (b"MZ\x90\x00\x03\x00\x00\x00\x04\x00" + b"\x00" * 500, 415),
    "pdf": (b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n", 415),
    "svg+script": (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', 415),
    "html": (b"<!doctype html><title>x</title><script>alert(1)</script>", 415),
    "elf": (b"\x7fELF\x02\x01\x01" + b"\x00" * 200, 415),
}


# (id, method, raw target, extra headers, body, status). {sid} is the server's id. The
# targets are sent byte for byte: nothing re-encodes `%2F`, `%C0%AE` or `%zz` on the way.
def _name_cases() -> list[tuple]:
    traversal = {
        "encoded ../": "..%2F..%2Fescape",
        "encoded ..": "%2E%2E",
        "lowercase encoded ../": "%2e%2e%2f%2e%2e%2fetc",
        "absolute": "%2Fetc%2Fpasswd",
        "absolute raw slash": "/etc/passwd",
        "windows path": "C:%5CWindows%5CSystem32",
        "windows ..\\": "..%5C..%5Cboot.ini",
        "unc path": "%5C%5Cserver%5Cshare",
        "nul": "a%00b",
        "lone nul": "%00",
        "newline": "a%0Ab",
        "overlong ../": "%C0%AE%C0%AE%2F",
        "overlong ..": "%C0%AE%C0%AE",
        "overlong /": "a%C0%AFb",
        "3-byte overlong .": "%E0%80%AE%E0%80%AE",
        "invalid utf-8": "%FF%FE",
        "lone surrogate (cesu)": "%ED%A0%80",
        "10000 chars": LONG,
    }
    cases = []
    for kind, value in traversal.items():
        cases += [
            (f"createDir {kind}", "GET", f"/worker/{{sid}}/createDir?dirName={value}", 400),
            (f"checkDir {kind}", "GET", f"/worker/{{sid}}/checkDir?dirName={value}", 400),
            (f"removeDir {kind}", "GET", f"/worker/{{sid}}/removeDir?dirname={value}", 400),
            (f"checkPhoto dir {kind}", "GET",
             f"/worker/{{sid}}/checkPhoto?dirname={value}&photo=obama.jpg", 400),
            (f"checkPhoto photo {kind}", "GET",
             f"/worker/{{sid}}/checkPhoto?dirname=Barack_Obama&photo={value}", 400),
            (f"taskResult faceId {kind}", "GET",
             f"/taskResult?taskId=x&found=1&faceId={value}", 400),
        ]
        if "%2f" not in value.lower() and "/" not in value:  # a decoded / is another path
            cases += [
                (f"person {kind}", "GET", f"/persons/{value}", 400),
                (f"delete person {kind}", "DELETE", f"/persons/{value}", 400),
                (f"server {kind}", "GET", f"/worker/{value}/checkDir?dirName=x", 400),
            ]
    return [(i, m, t, {}, b"", s) for i, m, t, s in cases]


RAW_CASES = [
    *_name_cases(),
    # A decoded slash in a path parameter matches no route at all.
    ("person encoded ../", "GET", "/persons/..%2F..%2Fcatalog.duckdb", {}, b"", 404),
    ("server encoded ../", "GET", "/worker/..%2F..%2Fstats/checkDir?dirName=x", {}, b"", 404),
    ("task encoded ../", "GET", "/tasks/..%2F..%2Fjobs%2Fx", {}, b"", 404),
    ("dot segments", "GET", "/worker/../stats", {}, b"", 404),
    # Broken percent-encoding stays literal text: a name that simply does not exist.
    ("checkDir %zz", "GET", "/worker/{sid}/checkDir?dirName=%zz", {}, b"", 404),
    ("checkDir lone %", "GET", "/worker/{sid}/checkDir?dirName=%", {}, b"", 404),
    ("checkDir double-encoded ..", "GET", "/worker/{sid}/checkDir?dirName=%252E%252E", {}, b"",
     404),
    ("removeDir %zz", "GET", "/worker/{sid}/removeDir?dirname=%zz%2", {}, b"", 404),
    ("person %zz", "GET", "/persons/%zz", {}, b"", 404),
    ("fullwidth dots", "GET", f"/worker/{{sid}}/checkDir?dirName={quote('．．')}", {}, b"", 404),
    # Ids that are not names: stored and looked up verbatim, as bound parameters.
    ("task 10000 chars", "GET", f"/tasks/{LONG}", {}, b"", 404),
    ("job 10000 chars", "GET", f"/jobs/{LONG}", {}, b"", 404),
    ("revoke key 10000 chars", "DELETE", f"/keys/{LONG}", {}, b"", 404),
    ("task sql", "GET", f"/tasks/{quote(SQL)}", {}, b"", 404),
    ("task sql wildcard", "GET", "/tasks/%25", {}, b"", 404),
    ("job sql", "GET", f"/jobs/{quote(SQL)}", {}, b"", 404),
    ("revoke key sql", "DELETE", f"/keys/{quote(SQL)}", {}, b"", 404),
    ("revoke key sql wildcard", "DELETE", "/keys/%25", {}, b"", 404),
    ("person sql", "GET", f"/persons/{quote(SQL.replace('/', ''))}", {}, b"", 404),
    ("delete person sql", "DELETE", f"/persons/{quote(SQL)}", {}, b"", 404),
    ("server sql", "GET", f"/worker/{quote(SQL)}/checkDir?dirName=x", {}, b"", 404),
    ("checkDir sql", "GET", f"/worker/{{sid}}/checkDir?dirName={quote(SQL)}", {}, b"", 404),
    ("taskResult sql task", "GET", f"/taskResult?taskId={quote(SQL)}&found=0", {}, b"", 404),
    ("task nul", "GET", "/tasks/a%00b", {}, b"", 404),
    # Wrong types and out-of-range numbers.
    ("count distributed=2", "GET", "/distribution/count?distributed=2", {}, b"", 400),
    ("count distributed=sql", "GET", f"/distribution/count?distributed={quote(SQL)}", {}, b"",
     400),
    ("integrity fixErrors=abc", "GET", "/distribution/checkNetworkIntegrity?fixErrors=abc", {},
     b"", 400),
    ("integrity fullCheck list", "GET",
     "/distribution/checkNetworkIntegrity?fullCheck=%5B1%5D", {}, b"", 400),
    ("checkPhoto checksumm=yes please", "GET",
     "/worker/{sid}/checkPhoto?dirname=Barack_Obama&photo=obama.jpg&checksumm=yes%20please",
     {}, b"", 400),
    ("taskResult found=maybe", "GET", "/taskResult?taskId=x&found=maybe", {}, b"", 400),
    *[
        (f"addServer {kind}", "GET", f"/addServer?{query}", {}, b"", 400)
        for kind, query in {
            "ip sql": f"ip={quote(SQL)}&dirs=0&port=80&cpuCount=1",
            "ip shell": "ip=10.0.0.1%3Brm%20-rf%20%2F&dirs=0&port=80&cpuCount=1",
            "ip 10000 chars": f"ip={LONG}&dirs=0&port=80&cpuCount=1",
            "ip dots": "ip=..&dirs=0&port=80&cpuCount=1",
            "ip hostname": "ip=localhost&dirs=0&port=80&cpuCount=1",
            "port 99999": "ip=10.0.0.1&dirs=0&port=99999&cpuCount=1",
            "port text": "ip=10.0.0.1&dirs=0&port=http&cpuCount=1",
            "cpuCount -1": "ip=10.0.0.1&dirs=0&port=80&cpuCount=-1",
            "cpuCount 1.5": "ip=10.0.0.1&dirs=0&port=80&cpuCount=1.5",
            "cpuCount 1e3": "ip=10.0.0.1&dirs=0&port=80&cpuCount=1e3",
            "cpuCount 10**30": f"ip=10.0.0.1&dirs=0&port=80&cpuCount={10**30}",
            "dirs 10**30": f"ip=10.0.0.1&dirs={10**30}&port=80&cpuCount=1",
            "dirs -5": "ip=10.0.0.1&dirs=-5&port=80&cpuCount=1",
        }.items()
    ],
    ("keys role sql", "POST", f"/keys?role={quote(SQL)}", {}, b"", 400),
    ("keys role list", "POST", "/keys?role=admin&role=root", {}, b"", 400),
    # Wrong methods.
    ("DELETE createTask", "DELETE", "/createTask", {}, b"", 405),
    ("POST getLag", "POST", "/getLag", {}, b"", 405),
    ("PUT jobs", "PUT", "/jobs/x", {}, b"", 405),
]


def _multipart(field: str, filename: bytes | None, data: bytes, kind: str = "image/jpeg",
               boundary: str = "hostile") -> tuple[dict[str, str], bytes]:
    disposition = b'form-data; name="' + field.encode() + b'"'
    if filename is not None:
        disposition += b'; filename="' + filename + b'"'
    body = (
        b"--" + boundary.encode() + b"\r\nContent-Disposition: " + disposition
        + b"\r\nContent-Type: " + kind.encode() + b"\r\n\r\n" + data
        + b"\r\n--" + boundary.encode() + b"--\r\n"
    )
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}, body


def _upload_case(ident: str, target: str, filename: bytes | None, data: bytes, status: int,
                 field: str = "filedata", kind: str = "image/jpeg") -> tuple:
    headers, body = _multipart(field, filename, data, kind)
    return (ident, "POST", target, headers, body, status)


ADD_PHOTO = "/worker/{sid}/addPhoto?dirName=Barack_Obama"
BODY_CASES = [
    # Upload file names (the name a photo is stored under).
    *[
        _upload_case(f"addPhoto file name {kind}", ADD_PHOTO, name, jpeg(), 400)
        for kind, name in {
            "absolute": b"/etc/cron.d/evil.jpg",
            "windows ..\\": b"..\\..\\evil.jpg",
            "unc": b"\\\\server\\share\\x.jpg",
            "nul": b"evil.jpg\x00.png",
            "empty": b"",
            "10000 chars": LONG.encode() + b".jpg",
            "overlong utf-8 ../": b"\xc0\xae\xc0\xae/evil.jpg",
            "c1 control (latin-1 fallback)": b"\xc2\x85\x85.jpg",
            "control": b"a\x1b[31mred.jpg",
        }.items()
    ],
    _upload_case("addPhoto no file name", ADD_PHOTO, None, jpeg(), 400),
    _upload_case("createTask text field", "/createTask", None, b"not a file", 400),
    _upload_case("createTask wrong field", "/createTask", b"a.jpg", jpeg(), 400, field="file"),
    # Polyglots and other files passed off as photos (the declared type is never trusted).
    *[
        _upload_case(f"{route} {kind}", target, b"p.jpg", data, status)
        for kind, (data, status) in POLYGLOTS.items()
        for route, target in [("createTask", "/createTask"), ("addPhoto", ADD_PHOTO),
                              ("addTask", "/worker/{sid}/addTask")]
    ],
    _upload_case("createTask exe declared jpeg", "/createTask", b"setup.exe",
                 POLYGLOTS["windows exe"][0], 415, kind="image/jpeg"),
    # Wrong content types for an upload route.
    ("createTask json", "POST", "/createTask", {"Content-Type": "application/json"},
     b'{"filedata": "/etc/passwd"}', 400),
    ("createTask text", "POST", "/createTask", {"Content-Type": "text/plain"}, jpeg(), 400),
    ("createTask urlencoded", "POST", "/createTask",
     {"Content-Type": "application/x-www-form-urlencoded"}, b"filedata=%2Fetc%2Fpasswd", 400),
    ("createTask no content type", "POST", "/createTask", {}, jpeg(), 400),
    ("createTask multipart without boundary", "POST", "/createTask",
     {"Content-Type": "multipart/form-data"}, b"--x\r\n\r\n", 400),
    ("createTask multipart garbage", "POST", "/createTask",
     {"Content-Type": "multipart/form-data; boundary=b"}, b"\x00\xff garbage \r\n--b", 400),
    ("createTask raw jpeg", "POST", "/createTask", {"Content-Type": "image/jpeg"}, jpeg(), 400),
    # Person info that is not a JSON object.
    ("put person text", "PUT", "/persons/Barack_Obama", {"Content-Type": "text/plain"},
     b"hello", 400),
    ("put person null", "PUT", "/persons/Barack_Obama", {"Content-Type": "application/json"},
     b"null", 400),
    ("put person string", "PUT", "/persons/Barack_Obama",
     {"Content-Type": "application/json"}, b'"x"', 400),
    ("put person broken json", "PUT", "/persons/Barack_Obama",
     {"Content-Type": "application/json"}, b'{"a": ', 400),
    ("put person 100k-deep json", "PUT", "/persons/Barack_Obama",
     {"Content-Type": "application/json"}, b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 400),
    ("put person invalid utf-8", "PUT", "/persons/Barack_Obama",
     {"Content-Type": "application/json"}, b'{"a": "\xff\xfe"}', 400),
    ("put person form", "PUT", "/persons/Barack_Obama",
     {"Content-Type": "application/x-www-form-urlencoded"}, b"a=1", 400),
]


@pytest.mark.parametrize(
    ("method", "target", "headers", "body", "status"),
    [case[1:] for case in RAW_CASES + BODY_CASES],
    ids=[case[0] for case in RAW_CASES + BODY_CASES],
)
def test_hostile_request_gets_its_4xx_and_changes_nothing(
    svc, method, target, headers, body, status
):
    before = snapshot(svc)
    got, payload = raw_request(
        svc.url, method, target.format(sid=svc.server_id),
        {"X-API-Key": svc.admin_key, **headers}, body,
    )
    assert got == status, payload[:500]
    text = payload.decode("utf-8", "replace")
    assert text.startswith('{"error":') and '"detail":' in text, text[:300]
    assert "Traceback" not in text and svc.admin_key not in text
    assert snapshot(svc) == before


def test_sql_looking_ids_are_stored_verbatim(svc, client):
    """A person id that looks like SQL is just a name: it round-trips, and nothing else moves."""
    admin = svc.headers()
    keys, folders = ray.get(actor("catalog").list_keys.remote()), snapshot(svc)["folders"]
    person = SQL.replace("/", "")
    stored = client.put(f"/persons/{quote(person)}", json={"note": SQL}, headers=admin)
    assert stored.status_code == 200, stored.text
    assert client.get(f"/persons/{quote(person)}", headers=admin).json() == {"note": SQL}
    assert client.delete(f"/persons/{quote(person)}", headers=admin).json() is True
    assert client.get(f"/persons/{quote(person)}", headers=admin).status_code == 404
    assert ray.get(actor("catalog").list_keys.remote()) == keys
    assert snapshot(svc)["folders"] == folders


def test_decodable_polyglot_is_only_ever_an_image(svc, client):
    """A real JPEG with an HTML page and a ZIP appended decodes, so it is searched as a photo;
    nothing of it lands on disk and the answer is an ordinary task."""
    before = snapshot(svc)["files"]
    data = jpeg() + b"<html><script>alert(1)</script></html>" + zipped("x.php", b"<?php ?>")
    r = client.post("/createTask", headers=svc.headers("search"),
                    files={"filedata": ("x.html", data, "text/html")})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 30
    while (task := client.get(f"/tasks/{r.json()}", headers=svc.headers()).json())[
        "status"
    ] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert task["status"] == "done" and task["found"] is False, task
    assert snapshot(svc)["files"] == before


# -- keys --------------------------------------------------------------------------------

UPLOAD_ROUTES = [
    ("POST", "/createTask"),
    ("POST", "/worker/{sid}/addTask"),
    ("POST", "/worker/{sid}/addPhoto?dirName=Barack_Obama"),
    ("PUT", "/persons/Barack_Obama"),
]


@pytest.mark.parametrize("key", ["missing", "empty", "unknown", "revoked"])
@pytest.mark.parametrize(("method", "path"), UPLOAD_ROUTES, ids=[p for _, p in UPLOAD_ROUTES])
def test_no_key_is_refused_before_the_body_is_read(svc, client, key, method, path):
    """The request declares a 5 MB body and sends none of it: the 401 must come anyway."""
    headers = {"Content-Type": "multipart/form-data; boundary=b",
               "Content-Length": str(5 * 1024 * 1024)}
    if key == "empty":
        headers["X-API-Key"] = ""
    elif key == "unknown":
        headers["X-API-Key"] = auth.generate_key()
    elif key == "revoked":
        made = client.post("/keys", params={"role": "admin"}, headers=svc.headers()).json()
        assert client.delete(f"/keys/{made['keyId']}", headers=svc.headers()).json() is True
        headers["X-API-Key"] = made["key"]
    where = urlsplit(svc.url)
    request = [f"{method} {path.format(sid=svc.server_id)} HTTP/1.1", f"Host: {where.netloc}"]
    request += [f"{name}: {value}" for name, value in headers.items()]
    started = time.monotonic()
    with socket.create_connection((where.hostname, where.port), timeout=15) as sock:
        sock.sendall(("\r\n".join(request) + "\r\n\r\n").encode())
        answer = b""
        while b"}" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 401"), answer[:300]
    assert b'"unauthorized"' in answer
    assert time.monotonic() - started < 10


def test_every_route_but_ping_needs_a_key(svc, client):
    """Walks the app's own route table, so a route added later cannot forget its key."""
    spec = client.get("/openapi.json").json()
    routes = [(method.upper(), path) for path, ops in spec["paths"].items() for method in ops]
    assert len(routes) >= 30
    bogus = auth.generate_key()
    for method, path in routes:
        url = path.replace("{serverId}", svc.server_id).replace("{", "").replace("}", "")
        for headers in ({}, {"X-API-Key": bogus}, {"X-API-Key": SQL}, {"X-API-Key": LONG}):
            r = client.request(method, url, headers=headers)
            if path == "/" and method == "GET":
                assert r.status_code == 200
                continue
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            assert r.json()["error"] == "unauthorized"
            assert bogus not in r.text and SQL not in r.text
    # Serve's own proxy routes and FastAPI's documentation carry no data and need no key.
    for public in ("/docs", "/openapi.json"):
        assert client.get(public).status_code == 200


def test_revoking_takes_effect_at_once(svc, client):
    admin = svc.headers()
    made = client.post("/keys", params={"role": "admin"}, headers=admin).json()
    theirs = {"X-API-Key": made["key"]}
    assert client.get("/distribution/dirsCount", headers=theirs).status_code == 200
    # The key revokes itself: the very next request, of any kind, is refused.
    assert client.delete(f"/keys/{made['keyId']}", headers=theirs).json() is True
    for method, path in [("GET", "/distribution/dirsCount"), ("POST", "/keys?role=admin"),
                         ("GET", "/getLag"), ("DELETE", f"/keys/{made['keyId']}")]:
        r = client.request(method, path, headers=theirs)
        assert r.status_code == 401, (path, r.text)
    assert made["key"] not in client.get("/keys", headers=admin).text


def test_keys_never_reach_logs_errors_or_the_catalog(svc, client, ray_cluster):
    """Uses keys every way there is (good, wrong role, unknown, revoked, in a query string by
    mistake), then looks for them in every Ray log of this session and the data dir."""
    admin = svc.headers()
    made = client.post("/keys", params={"role": "search"}, headers=admin).json()
    unknown = auth.generate_key()
    for key in (svc.admin_key, svc.search_key, made["key"], unknown):
        client.get("/stats", headers={"X-API-Key": key})
        client.get("/getLag", headers={"X-API-Key": key})
        client.post("/createTask", headers={"X-API-Key": key},
                    files={"filedata": ("a.jpg", b"not an image", "image/jpeg")})
        client.get("/worker/x/createDir", params={"dirName": "../x"},
                   headers={"X-API-Key": key})
    client.delete(f"/keys/{made['keyId']}", headers=admin)
    client.get("/getLag", headers={"X-API-Key": made["key"]})
    time.sleep(2)  # log lines reach their files asynchronously
    secrets = {k: k.encode() for k in (svc.admin_key, svc.search_key, made["key"], unknown)}
    logs = Path(ray_cluster.head_node.get_session_dir_path()) / "logs"
    places = [p for p in logs.rglob("*") if p.is_file()]
    places += [p for p in svc.data_dir.rglob("*") if p.is_file() and p.name != auth.ADMIN_KEY_FILE]
    assert len(places) > 10 and any(p.name.startswith("catalog.duckdb") for p in places)
    for path in places:
        data = path.read_bytes()
        for key, raw in secrets.items():
            assert raw not in data, f"an API key ({key[:6]}...) is in {path}"


def test_file_names_the_multipart_parser_rewrites_stay_inside_the_folder(svc):
    """Two rewrites happen before the gateway sees an upload's file name: a Windows path is cut
    to its last part (python-multipart's rule for old browsers) and bytes that are not UTF-8
    are read as Latin-1 (Starlette's). Either way the photo lands in its folder, under the
    name the answer reports, and nowhere else. Last in this module: it adds photos."""
    before = set(snapshot(svc)["files"])
    written = set()
    for sent, stored in [(b"C:\\Windows\\win.ini.jpg", "win.ini.jpg"),
                         (b"\xc0\xae\xc0\xae", "\u00c0\u00ae\u00c0\u00ae"),
                         (b"\xff\xfe.jpg", "\u00ff\u00fe.jpg")]:
        headers, body = _multipart("filedata", sent, jpeg())
        status, payload = raw_request(
            svc.url, "POST", ADD_PHOTO.format(sid=svc.server_id),
            {"X-API-Key": svc.admin_key, **headers}, body,
        )
        assert status == 200, payload
        assert json.loads(payload)["name"] == stored
        written |= {str(svc.gallery / "Barack_Obama" / stored),
                    str(svc.data_dir / "shards" / svc.server_id / "photos" / "Barack_Obama"
                        / stored)}
    after = {p for p in snapshot(svc)["files"] if not p.endswith(".parquet")}
    assert after - before == written
