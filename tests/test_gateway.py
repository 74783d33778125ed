"""The HTTP API over real Serve, real actors and real HTTP: every route of SPEC §3, the full
load -> distribute -> search -> check flow, API keys and roles, upload limits, and bad input
that must be refused with its status and change nothing."""

from __future__ import annotations

import hashlib
import io
import socket
import struct
import time
import zlib
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from conftest import BIDEN, OBAMA, wait_job, wait_task
from facenet_ray.config import Settings

pytestmark = pytest.mark.ray

PORTRAITS = [
    (OBAMA / "obama.jpg", "Barack_Obama"),
    (OBAMA / "obama2.jpg", "Barack_Obama"),
    (OBAMA / "obama3.jpg", "Barack_Obama"),
    (BIDEN / "biden.jpg", "Joseph_Biden"),
]


# -- inputs ------------------------------------------------------------------------------


def plain_jpeg(seed: int = 0) -> bytes:
    """A valid photo with no face in it (a gradient), so it never disturbs a search."""
    image = Image.new("RGB", (96, 64))
    image.putdata([((x * 3 + seed) % 256, y * 4 % 256, 128) for y in range(64) for x in range(96)])
    buf = io.BytesIO()
    image.save(buf, "JPEG")
    return buf.getvalue()


def png_bomb(side: int = 30_000) -> bytes:
    """A ~100 KB PNG that decodes to side x side pixels (900 megapixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    row = b"\x00" * (1 + side // 8)  # filter byte + 1-bit grey pixels
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


LIMIT = Settings.model_fields["max_upload_bytes"].default  # the fixture keeps the default
TRUNCATED_JPEG = (OBAMA / "obama.jpg").read_bytes()[:100_000]
TEXT_AS_JPEG = b"this is a text file, not a photo\n" * 10
BOMB = png_bomb()


# -- helpers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(service):
    assert service.settings.max_upload_bytes == LIMIT
    with httpx.Client(base_url=service.url, timeout=120) as client:
        yield client


def upload(name: str, data: bytes, kind: str = "image/jpeg") -> dict:
    return {"filedata": (name, data, kind)}


def snapshot(service, client) -> tuple[dict[str, int], int]:
    """Every photo file (path -> size) on the servers and in the source gallery, and the
    catalog's folder count. Encoding caches are left out: shards rewrite them on their own."""
    files = {}
    for root in (service.data_dir / "shards", service.gallery):
        for path in root.rglob("*"):
            if path.is_file() and not path.name.startswith(".") and path.suffix != ".parquet":
                files[str(path)] = path.stat().st_size
    dirs = client.get("/distribution/dirsCount", headers=service.headers()).json()
    return files, dirs


def wait_indexed(client, service, server_id: str, faces: int, timeout_s: float = 300) -> None:
    """Until the server's shard has encoded everything it holds (searches need encodings)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        shard = client.get("/stats", headers=service.headers()).json()["shards"].get(server_id)
        if shard and shard["pending"] == 0 and shard["faces"] >= faces:
            return
        time.sleep(0.5)
    raise AssertionError(f"server {server_id} did not finish encoding in {timeout_s}s")


def search(client, service, data: bytes, path: str = "/createTask", role: str = "search"):
    r = client.post(path, headers=service.headers(role), files=upload("probe.jpg", data))
    assert r.status_code == 200, r.text
    assert isinstance(r.json(), str)
    return wait_task(client, service, r.json())


@pytest.fixture(scope="module")
def server_id(service, client) -> str:
    """The sample gallery loaded and distributed through the API; the (only) server's id."""
    admin = service.headers()
    loaded = wait_job(client, service, client.get("/distribution/loadDirs", headers=admin).json())
    assert loaded["status"] == "done", loaded
    assert loaded["result"]["folders"] == 2
    job_id = client.get("/distribution/startAutoDistrib", headers=admin).json()
    distributed = wait_job(client, service, job_id)
    assert distributed["status"] == "done", distributed
    assert distributed["result"]["distributed"] == 2 and not distributed["result"]["failed"]
    servers = client.get("/distribution/getServersList", headers=admin).json()
    assert isinstance(servers, str) and servers
    server_id = servers.split(",")[0]
    wait_indexed(client, service, server_id, faces=4)
    return server_id


# -- the flow ----------------------------------------------------------------------------


def test_ping_needs_no_key(client):
    r = client.get("/")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_loaded_and_distributed_through_the_api(service, client, server_id):
    admin = service.headers()
    assert client.get("/distribution/dirsCount", headers=admin).json() == 2
    counted = client.get("/distribution/count", params={"distributed": 1}, headers=admin)
    assert counted.json() == 2
    counted = client.get("/distribution/count", params={"distributed": 0}, headers=admin)
    assert counted.json() == 0
    check = client.get("/distribution/checkDistribution", headers=admin).json()
    assert check["expected"] == check["present"] == 2
    assert check["missing"] == [] and check["unexpected"] == []


@pytest.mark.parametrize(("photo", "person"), PORTRAITS, ids=lambda v: getattr(v, "name", v))
def test_create_task_finds_the_right_person(service, client, server_id, photo, person):
    task = search(client, service, photo.read_bytes())
    assert task["status"] == "done", task
    assert task["found"] is True and task["faceId"] == person
    assert task["candidates"][0]["faceId"] == person
    assert task["missingServers"] == []


def test_worker_add_task_searches_that_server(service, client, server_id):
    photo, person = PORTRAITS[3]
    task = search(client, service, photo.read_bytes(), f"/worker/{server_id}/addTask")
    assert task["status"] == "done" and task["faceId"] == person


def test_network_integrity_is_clean(service, client, server_id):
    params = {"fixErrors": 0, "fullCheck": 1}
    r = client.get("/distribution/checkNetworkIntegrity", params=params, headers=service.headers())
    job = wait_job(client, service, r.json())
    assert job["kind"] == "checkNetworkIntegrity" and job["status"] == "done", job
    assert job["result"]["errors"] == 0 and job["result"]["folders"] == []
    assert set(job) == {"jobId", "kind", "status", "progress", "result", "error"}
    assert set(job["progress"]) == {"done", "total"}


# -- every other route -------------------------------------------------------------------


def test_server_routes(service, client, server_id):
    admin = service.headers()
    servers = client.get("/serversList", headers=admin).json()
    mine = next(s for s in servers if s["id"] == server_id)
    assert {"id", "url", "port", "cpu_count", "dirsCount"} <= set(mine)
    assert mine["dirsCount"] == 2
    assert client.get("/distribution/updateServerList", headers=admin).json() >= 1
    assert client.get(f"/worker/{server_id}/getTasksCount", headers=admin).json() == 0
    lag = client.get("/getLag", headers=service.headers("search")).json()
    assert isinstance(lag, (int, float)) and 0 <= lag < 1000
    stats = client.get("/stats", headers=admin).json()
    assert server_id in stats["shards"] and "lagMs" in stats["gateway"]


def test_add_server_keeps_an_unknown_ip_pending(service, client, server_id):
    params = {"ip": "10.255.0.7", "dirs": 0, "port": 8001, "cpuCount": 2}
    r = client.get("/addServer", params=params, headers=service.headers())
    assert r.status_code == 200, r.text
    pending = next(
        s
        for s in client.get("/serversList", headers=service.headers()).json()
        if s["id"] == r.json()
    )
    assert pending["status"] == "pending" and pending["cpu_count"] == 2
    assert r.json() not in client.get(
        "/distribution/getServersList", headers=service.headers()
    ).json().split(",")


def test_check_dir_and_photo(service, client, server_id):
    admin = service.headers()
    worker = f"/worker/{server_id}"
    assert (
        client.get(f"{worker}/checkDir", params={"dirName": "Barack_Obama"}, headers=admin).json()
        == 3
    )
    params = {"dirname": "Barack_Obama", "photo": "obama.jpg"}
    assert client.get(f"{worker}/checkPhoto", params=params, headers=admin).json() == 1
    digest = hashlib.sha256((OBAMA / "obama.jpg").read_bytes()).hexdigest()
    params["checksumm"] = 1
    assert client.get(f"{worker}/checkPhoto", params=params, headers=admin).json() == digest


def test_photo_name_with_spaces_round_trip(service, client, server_id):
    admin = service.headers()
    worker = f"/worker/{server_id}"
    person = "Тест Person Ω"
    created = client.get(f"{worker}/createDir", params={"dirName": person}, headers=admin)
    assert created.status_code == 200 and created.json() is True
    data = plain_jpeg()
    added = client.post(
        f"{worker}/addPhoto",
        params={"dirName": person},
        headers=admin,
        files=upload("my photo 1.jpg", data),
    )
    assert added.status_code == 200, added.text
    digest = hashlib.sha256(data).hexdigest()
    assert added.json() == {"name": "my photo 1.jpg", "size": len(data), "sha256": digest}
    assert client.get(f"{worker}/checkDir", params={"dirName": person}, headers=admin).json() == 1
    params = {"dirname": person, "photo": "my photo 1.jpg", "checksumm": 1}
    assert client.get(f"{worker}/checkPhoto", params=params, headers=admin).json() == digest
    # the folder may also be given as a multipart field
    added = client.post(
        f"{worker}/addPhoto",
        data={"dirName": person},
        headers=admin,
        files=upload("фото 2.jpg", plain_jpeg(1)),
    )
    assert added.status_code == 200 and added.json()["name"] == "фото 2.jpg"
    removed = client.get(f"{worker}/removeDir", params={"dirname": person}, headers=admin)
    assert removed.status_code == 200 and removed.json() == 2
    gone = client.get(f"{worker}/checkDir", params={"dirName": person}, headers=admin)
    assert gone.status_code == 404 and gone.json()["error"] == "not_found"


def test_task_result_records_a_worker_answer(service, client, server_id):
    task = search(client, service, plain_jpeg())
    assert task["status"] == "done" and task["found"] is False and task["reason"] == "no_face"
    params = {"taskId": task["taskId"], "found": "true", "faceId": "Barack_Obama"}
    r = client.get("/taskResult", params=params, headers=service.headers())
    assert r.status_code == 200, r.text
    task = client.get(f"/tasks/{task['taskId']}", headers=service.headers()).json()
    assert len(task["workerResults"]) == 1


def test_persons(service, client):
    admin = service.headers()
    info = {"name": "Барак Обама", "born": 1961, "tags": ["president"]}
    r = client.put("/persons/Barack_Obama", json=info, headers=admin)
    assert r.status_code == 200 and r.json() == info
    assert client.get("/persons/Barack_Obama", headers=admin).json() == info
    assert client.put("/persons/Barack_Obama", json=[1, 2], headers=admin).status_code == 400
    assert client.get("/persons/Barack_Obama", headers=admin).json() == info
    assert client.delete("/persons/Barack_Obama", headers=admin).json() is True
    assert client.get("/persons/Barack_Obama", headers=admin).status_code == 404


def test_openapi_documents_the_spec_routes(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    expected = {
        ("get", "/taskResult"): {"taskId", "found", "faceId"},
        ("get", "/addServer"): {"ip", "dirs", "port", "cpuCount"},
        ("post", "/worker/{serverId}/addTask"): {"serverId"},
        ("get", "/worker/{serverId}/createDir"): {"serverId", "dirName"},
        ("post", "/worker/{serverId}/addPhoto"): {"serverId", "dirName"},
        ("get", "/worker/{serverId}/getTasksCount"): {"serverId"},
        ("get", "/worker/{serverId}/checkDir"): {"serverId", "dirName"},
        ("get", "/worker/{serverId}/checkPhoto"): {"serverId", "dirname", "photo", "checksumm"},
        ("get", "/worker/{serverId}/removeDir"): {"serverId", "dirname"},
        ("get", "/distribution/dirsCount"): set(),
        ("get", "/distribution/count"): {"distributed"},
        ("get", "/distribution/checkDistribution"): set(),
        ("get", "/distribution/checkNetworkIntegrity"): {"fixErrors", "fullCheck"},
        ("get", "/distribution/startAutoDistrib"): set(),
        ("get", "/distribution/loadDirs"): set(),
        ("get", "/distribution/getServersList"): set(),
        ("get", "/distribution/updateServerList"): set(),
        ("get", "/distribution/runReDistribution"): set(),
        ("post", "/createTask"): set(),
        ("get", "/serversList"): set(),
        ("get", "/getLag"): set(),
        ("get", "/tasks/{taskId}"): {"taskId"},
        ("get", "/jobs/{jobId}"): {"jobId"},
        ("get", "/persons/{personId}"): {"personId"},
        ("put", "/persons/{personId}"): {"personId"},
        ("delete", "/persons/{personId}"): {"personId"},
        ("get", "/stats"): set(),
    }
    for (method, path), params in expected.items():
        operation = spec["paths"][path][method]
        names = {p["name"] for p in operation.get("parameters", [])}
        assert params <= names, (method, path, names)
        assert all(p.get("description") for p in operation.get("parameters", [])), path
    for path in ("/createTask", "/worker/{serverId}/addTask", "/worker/{serverId}/addPhoto"):
        body = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]
        schema = spec["components"]["schemas"][body["schema"]["$ref"].rsplit("/", 1)[1]]
        assert "filedata" in schema["properties"]


# -- keys and roles ----------------------------------------------------------------------

ADMIN_ROUTES = [
    ("GET", "/taskResult?taskId=x&found=0"),
    ("GET", "/addServer?ip=10.0.0.9&dirs=0&port=1&cpuCount=1"),
    ("GET", "/worker/{sid}/createDir?dirName=x"),
    ("POST", "/worker/{sid}/addPhoto?dirName=x"),
    ("GET", "/worker/{sid}/getTasksCount"),
    ("GET", "/worker/{sid}/checkDir?dirName=x"),
    ("GET", "/worker/{sid}/checkPhoto?dirname=x&photo=y.jpg"),
    ("GET", "/worker/{sid}/removeDir?dirname="),
    ("GET", "/distribution/dirsCount"),
    ("GET", "/distribution/count?distributed=1"),
    ("GET", "/distribution/checkDistribution"),
    ("GET", "/distribution/checkNetworkIntegrity?fixErrors=1&fullCheck=1"),
    ("GET", "/distribution/startAutoDistrib"),
    ("GET", "/distribution/loadDirs"),
    ("GET", "/distribution/getServersList"),
    ("GET", "/distribution/updateServerList"),
    ("GET", "/distribution/runReDistribution"),
    ("GET", "/serversList"),
    ("GET", "/jobs/x"),
    ("GET", "/stats"),
    ("GET", "/persons/x"),
    ("PUT", "/persons/x"),
    ("DELETE", "/persons/x"),
    ("POST", "/keys?role=admin"),
    ("GET", "/keys"),
    ("DELETE", "/keys/x"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES, ids=[p for _, p in ADMIN_ROUTES])
def test_search_key_is_refused_on_admin_routes(service, client, server_id, method, path):
    before = snapshot(service, client)
    extra = {"files": upload("a.jpg", plain_jpeg())} if method == "POST" and "Photo" in path else {}
    if method == "PUT":
        extra = {"json": {"a": 1}}
    r = client.request(
        method, path.format(sid=server_id), headers=service.headers("search"), **extra
    )
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "forbidden"
    assert snapshot(service, client) == before


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": ""}, {"X-API-Key": "fnr_not-a-key"}],
    ids=["missing", "empty", "unknown"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/stats"),
        ("GET", "/getLag"),
        ("GET", "/tasks/x"),
        ("POST", "/createTask"),
        ("GET", "/distribution/loadDirs"),
        ("DELETE", "/persons/Barack_Obama"),
    ],
)
def test_missing_or_unknown_key_is_401(service, client, headers, method, path):
    extra = {"files": upload("a.jpg", plain_jpeg())} if method == "POST" else {}
    r = client.request(method, path, headers=headers, **extra)
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized"
    assert "fnr_not-a-key" not in r.text


def test_keys_lifecycle(service, client):
    admin = service.headers()
    made = client.post("/keys", params={"role": "search"}, headers=admin)
    assert made.status_code == 201, made.text
    key, key_id = made.json()["key"], made.json()["keyId"]
    mine = {"X-API-Key": key}
    assert client.get("/getLag", headers=mine).status_code == 200
    assert client.get("/stats", headers=mine).status_code == 403
    listed = client.get("/keys", headers=admin)
    assert key_id in {k["keyId"] for k in listed.json()}
    assert key not in listed.text and hashlib.sha256(key.encode()).hexdigest() not in listed.text
    assert client.delete(f"/keys/{key_id}", headers=admin).json() is True
    refused = client.get("/getLag", headers=mine)  # at once: no cache
    assert refused.status_code == 401
    assert client.post("/keys", params={"role": "root"}, headers=admin).status_code == 400


# -- bad input: its status, and nothing changed ------------------------------------------


BAD_NAMES = {
    "dotdot": "..",
    "dot": ".",
    "slash": "a/b",
    "backslash": "a\\b",
    "nul": "a\x00b",
    "control": "a\x07b",
    "300 bytes": "é" * 150,
    "empty": "",
}

BAD_REQUESTS = [
    *[
        (f"createDir {k}", "GET", "/worker/{sid}/createDir", {"dirName": v}, None, 400)
        for k, v in BAD_NAMES.items()
    ],
    *[
        (
            f"addPhoto dir {k}",
            "POST",
            "/worker/{sid}/addPhoto",
            {"dirName": v},
            upload("ok.jpg", plain_jpeg()),
            400,
        )
        for k, v in BAD_NAMES.items()
    ],
    *[
        (
            f"addPhoto file {k}",
            "POST",
            "/worker/{sid}/addPhoto",
            {"dirName": "Barack_Obama"},
            upload(v, plain_jpeg()),
            400,
        )
        for k, v in BAD_NAMES.items()
        if k in ("dotdot", "slash", "backslash", "300 bytes")
    ],
    (
        "addPhoto path traversal",
        "POST",
        "/worker/{sid}/addPhoto",
        {"dirName": "Barack_Obama"},
        upload("../../evil.jpg", plain_jpeg()),
        400,
    ),
    (
        "checkPhoto dotdot",
        "GET",
        "/worker/{sid}/checkPhoto",
        {"dirname": "..", "photo": "obama.jpg"},
        None,
        400,
    ),
    ("removeDir dotdot", "GET", "/worker/{sid}/removeDir", {"dirname": ".."}, None, 400),
    (
        "removeDir slash",
        "GET",
        "/worker/{sid}/removeDir",
        {"dirname": "Barack_Obama/.."},
        None,
        400,
    ),
    ("person dotdot", "GET", "/persons/%2E%2E", None, None, 400),
    *[
        (f"{route} {kind}", "POST", path, params, upload("p.jpg", data), status)
        for route, path, params in [
            ("createTask", "/createTask", None),
            ("addTask", "/worker/{sid}/addTask", None),
            ("addPhoto", "/worker/{sid}/addPhoto", {"dirName": "Barack_Obama"}),
        ]
        for kind, data, status in [
            ("empty", b"", 400),
            ("text as jpg", TEXT_AS_JPEG, 415),
            ("truncated", TRUNCATED_JPEG, 422),
            ("bomb", BOMB, 413),
        ]
    ],
    (
        "createTask over limit",
        "POST",
        "/createTask",
        None,
        upload("p.jpg", b"\xff" * (LIMIT + 1)),
        413,
    ),
    (
        "addPhoto over limit",
        "POST",
        "/worker/{sid}/addPhoto",
        {"dirName": "Barack_Obama"},
        upload("big.jpg", b"\xff" * (LIMIT + 1)),
        413,
    ),
    ("unknown task", "GET", "/tasks/no-such-task", None, None, 404),
    ("unknown job", "GET", "/jobs/no-such-job", None, None, 404),
    ("unknown person", "GET", "/persons/Nobody", None, None, 404),
    ("delete unknown person", "DELETE", "/persons/Nobody", None, None, 404),
    ("unknown key", "DELETE", "/keys/no-such-key", None, None, 404),
    ("taskResult unknown task", "GET", "/taskResult", {"taskId": "nope", "found": 0}, None, 404),
    (
        "unknown server createDir",
        "GET",
        "/worker/000000000000/createDir",
        {"dirName": "x"},
        None,
        404,
    ),
    (
        "unknown server addPhoto",
        "POST",
        "/worker/000000000000/addPhoto",
        {"dirName": "x"},
        upload("a.jpg", plain_jpeg()),
        404,
    ),
    (
        "unknown server addTask",
        "POST",
        "/worker/000000000000/addTask",
        None,
        upload("a.jpg", plain_jpeg()),
        404,
    ),
    (
        "unknown server removeDir all",
        "GET",
        "/worker/000000000000/removeDir",
        {"dirname": ""},
        None,
        404,
    ),
    ("unknown folder checkDir", "GET", "/worker/{sid}/checkDir", {"dirName": "Nobody"}, None, 404),
    (
        "unknown folder removeDir",
        "GET",
        "/worker/{sid}/removeDir",
        {"dirname": "Nobody"},
        None,
        404,
    ),
    (
        "unknown photo",
        "GET",
        "/worker/{sid}/checkPhoto",
        {"dirname": "Barack_Obama", "photo": "nobody.jpg", "checksumm": 1},
        None,
        404,
    ),
    ("taskResult no taskId", "GET", "/taskResult", {"found": 0}, None, 400),
    (
        "taskResult found without faceId",
        "GET",
        "/taskResult",
        {"taskId": "x", "found": 1},
        None,
        400,
    ),
    (
        "addServer no cpuCount",
        "GET",
        "/addServer",
        {"ip": "10.0.0.8", "dirs": 1, "port": 80},
        None,
        400,
    ),
    (
        "addServer bad port",
        "GET",
        "/addServer",
        {"ip": "10.0.0.8", "dirs": 1, "port": 0, "cpuCount": 1},
        None,
        400,
    ),
    ("count no distributed", "GET", "/distribution/count", None, None, 400),
    ("count bad bool", "GET", "/distribution/count", {"distributed": "maybe"}, None, 400),
    ("createDir no dirName", "GET", "/worker/{sid}/createDir", None, None, 400),
    (
        "checkPhoto no photo",
        "GET",
        "/worker/{sid}/checkPhoto",
        {"dirname": "Barack_Obama"},
        None,
        400,
    ),
    ("removeDir no dirname", "GET", "/worker/{sid}/removeDir", None, None, 400),
    ("createTask no filedata", "POST", "/createTask", None, None, 400),
    (
        "addPhoto no dirName",
        "POST",
        "/worker/{sid}/addPhoto",
        None,
        upload("a.jpg", plain_jpeg()),
        400,
    ),
    ("addPhoto no filedata", "POST", "/worker/{sid}/addPhoto", {"dirName": "x"}, None, 400),
    ("keys no role", "POST", "/keys", None, None, 400),
]


@pytest.mark.parametrize(
    ("method", "path", "params", "files", "status"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[c[0] for c in BAD_REQUESTS],
)
def test_bad_request_is_refused_and_changes_nothing(
    service, client, server_id, method, path, params, files, status
):
    before = snapshot(service, client)
    r = client.request(
        method, path.format(sid=server_id), params=params, files=files, headers=service.headers()
    )
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"} and body["detail"]
    assert "Traceback" not in r.text
    assert snapshot(service, client) == before


def test_declared_oversize_body_is_refused_before_it_is_sent(service, client, server_id):
    """Content-Length over the limit: 413 comes back without a byte of the body read."""
    before = snapshot(service, client)
    url = urlsplit(service.url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(
            (
                "POST /createTask HTTP/1.1\r\nHost: x\r\n"
                f"X-API-Key: {service.search_key}\r\n"
                "Content-Type: multipart/form-data; boundary=b\r\n"
                f"Content-Length: {10 * LIMIT}\r\n\r\n"
            ).encode()
        )
        answer = b""
        while b'"too_large"' not in answer and (data := sock.recv(65536)):
            answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"too_large"' in answer
    assert snapshot(service, client) == before


def test_chunked_oversize_upload_is_cut_at_the_limit(service, client, server_id):
    """No Content-Length (chunked): the gateway counts bytes and stops at the limit."""
    before = snapshot(service, client)

    def body():
        yield (
            b'--b\r\nContent-Disposition: form-data; name="filedata"; filename="a.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n"
        )
        sent = 0
        while sent <= LIMIT:
            yield b"\xff" * 65536
            sent += 65536
        yield b"\r\n--b--\r\n"

    headers = {**service.headers("search"), "Content-Type": "multipart/form-data; boundary=b"}
    r = client.post("/createTask", content=body(), headers=headers)
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "too_large"
    assert snapshot(service, client) == before


# -- last: the destructive routes --------------------------------------------------------


def test_remove_all_then_redistribute(service, client, server_id):
    admin = service.headers()
    worker = f"/worker/{server_id}"
    refused = client.get(
        f"{worker}/removeDir", params={"dirname": ""}, headers=service.headers("search")
    )
    assert refused.status_code == 403
    removed = client.get(f"{worker}/removeDir", params={"dirname": ""}, headers=admin)
    assert removed.status_code == 200 and removed.json() >= 2
    assert (
        client.get(
            f"{worker}/checkDir", params={"dirName": "Barack_Obama"}, headers=admin
        ).status_code
        == 404
    )
    assert client.get("/distribution/count", params={"distributed": 1}, headers=admin).json() == 0
    job = wait_job(
        client, service, client.get("/distribution/runReDistribution", headers=admin).json()
    )
    assert job["kind"] == "runReDistribution" and job["status"] == "done", job
    assert (
        client.get(f"{worker}/checkDir", params={"dirName": "Barack_Obama"}, headers=admin).json()
        == 3
    )
    wait_indexed(client, service, server_id, faces=4)
    photo, person = PORTRAITS[0]
    assert search(client, service, photo.read_bytes())["faceId"] == person
