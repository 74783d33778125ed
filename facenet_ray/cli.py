"""`facenet-ray`: start and stop the service, and drive it over its HTTP API."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from facenet_ray.config import Settings

DEFAULT_URL = "http://127.0.0.1:8000"
STARTED_MARK = "ray-started-by-facenet"


class CliError(Exception):
    """One clear line for the user; the command exits non-zero."""


# -- HTTP client side ------------------------------------------------------------------------


class Client:
    def __init__(self, url: str, key: str | None, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(timeout=timeout, headers={"X-API-Key": key} if key else {})

    def call(self, method: str, path: str, **kwargs):
        try:
            response = self.http.request(method, self.url + path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach {self.url}: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if response.status_code >= 400:
            if isinstance(body, dict) and "error" in body:
                detail = body.get("detail", "")
                raise CliError(f"{body['error']}: {detail} ({response.status_code})")
            raise CliError(f"HTTP {response.status_code}: {body}")
        return body

    def job(self, path: str, params: dict | None = None, label: str = "") -> dict:
        """Start a job and show its progress until it ends."""
        job_id = self.call("GET", path, params=params)
        while True:
            job = self.call("GET", f"/jobs/{job_id}")
            progress = job.get("progress") or {}
            _bar(label or job["kind"], progress.get("done") or 0, progress.get("total") or 0)
            if job["status"] in ("done", "failed"):
                print(file=sys.stderr)
                if job["status"] == "failed":
                    raise CliError(f"{job['kind']} failed: {job.get('error')}")
                return job["result"]
            time.sleep(0.3)

    def search(self, photo: Path, timeout_s: float = 120.0) -> dict:
        try:
            data = photo.read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read {photo}: {exc.strerror}") from exc
        task_id = self.call("POST", "/createTask", files={"filedata": (photo.name, data)})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            task = self.call("GET", f"/tasks/{task_id}")
            if task["status"] in ("done", "failed"):
                return task
            time.sleep(0.1)
        raise CliError(f"search of {photo} did not finish in {timeout_s:.0f}s")


def _bar(label: str, done: int, total: int, width: int = 30) -> None:
    if not sys.stderr.isatty() and (not total or done < total):
        return  # no carriage-return animation in logs; the final line is printed
    filled = int(width * done / total) if total else 0
    print(f"\r{label:<22} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}",
          end="", file=sys.stderr, flush=True)


def describe(photo: str, task: dict) -> str:
    """One line per searched photo: the answer, its distance, and the runners-up."""
    if task["status"] == "failed":
        return f"{photo}: failed ({task.get('error')})"
    others = ", ".join(f"{c['faceId']} {c['distance']:.3f}" for c in task["candidates"][:3])
    missing = f"  [missing servers: {', '.join(task['missingServers'])}]" \
        if task["missingServers"] else ""
    if task["found"]:
        head = (f"{photo}: {task['faceId']} (distance {task['distance']:.3f}, "
                f"confidence {task.get('confidence') or 0:.2f})")
    else:
        head = f"{photo}: not in the gallery ({task.get('reason')})"
    return f"{head}{'  candidates: ' + others if others else ''}{missing}"


def _client(args) -> Client:
    key = args.api_key or os.environ.get("FACENET_API_KEY")
    if not key:  # local convenience: the admin key that `up` wrote
        key_file = Path(args.data_dir or Settings().data_dir) / "admin.key"
        if key_file.exists():
            key = key_file.read_text().strip()
    if not key:
        raise CliError("no API key: set FACENET_API_KEY or pass --api-key")
    return Client(args.url or os.environ.get("FACENET_URL", DEFAULT_URL), key)


def cmd_status(args) -> None:
    client = _client(args)
    servers = client.call("GET", "/serversList")
    stats = client.call("GET", "/stats")
    lag = client.call("GET", "/getLag")
    shards = stats.get("shards") or {}
    print(f"{'server':<16}{'status':<9}{'cpus':>5}{'dirs':>7}{'photos':>8}{'faces':>8}"
          f"{'pending':>9}{'heartbeat ms':>14}")
    for s in servers:
        shard = shards.get(s["id"]) or {}
        latency = s.get("latency_ms")
        print(f"{s['id']:<16}{s.get('status', ''):<9}{s['cpu_count']:>5}{s['dirsCount']:>7}"
              f"{shard.get('photos', '-'):>8}{shard.get('faces', '-'):>8}"
              f"{shard.get('pending', '-'):>9}"
              f"{'-' if latency is None else f'{latency:.1f}':>14}")
    folders = stats.get("folders", {})
    print(f"folders: {folders.get('distributed', 0)}/{folders.get('total', 0)} distributed; "
          f"gateway lag {lag:.1f} ms")


def cmd_search(args) -> None:
    client = _client(args)
    failed = False
    for photo in args.photos:
        task = client.search(Path(photo))
        failed |= task["status"] == "failed"
        print(describe(photo, task))
    if failed:
        raise CliError("some searches failed")


def load(client: Client) -> None:
    loaded = client.job("/distribution/loadDirs", label="loading gallery")
    files = loaded["files"]
    print(f"loaded {loaded['folders']} folders ({files['added']} new photos, "
          f"{files['changed']} changed, {files['removed']} removed; "
          f"{loaded['foldersRemoved']} folders removed, "
          f"{loaded['emptyFilesRemoved']} empty files deleted)")
    for skipped in loaded["skipped"]:
        print(f"  skipped folder {skipped['dir']!r}: {skipped['problem']}")


def distribute(client: Client) -> None:
    """Distribute every undistributed folder, then wait until the shards have encoded them."""
    spread = client.job("/distribution/startAutoDistrib", label="distributing")
    print(f"distributed {spread['distributed']} folders over {len(spread['servers'])} "
          f"server(s); {len(spread['failed'])} failed")
    for failed in spread["failed"]:
        print(f"  {failed['server']}  {failed['dir']}: {failed['problem']}")
    _wait_searchable(client)
    if spread["failed"]:
        raise CliError(f"{len(spread['failed'])} folder(s) could not be distributed")


def cmd_load(args) -> None:
    load(_client(args))


def cmd_distribute(args) -> None:
    distribute(_client(args))


def cmd_redistribute(args) -> None:
    """Spread the whole gallery again by CPU weight, e.g. over machines that joined later."""
    client = _client(args)
    spread = client.job("/distribution/runReDistribution", label="redistributing")
    print(f"removed {sum(n or 0 for n in spread['removed'].values())} folders, distributed "
          f"{spread['distributed']} over {len(spread['servers'])} server(s); "
          f"{len(spread['failed'])} failed")
    _wait_searchable(client)
    if spread["failed"]:
        raise CliError(f"{len(spread['failed'])} folder(s) could not be distributed")


def check_report(result: dict) -> tuple[list[str], str | None]:
    """The lines `check` prints for an integrity job's result, and what is still wrong (None
    when every server was checked and every error it found was fixed)."""
    lines = [f"errors: {result['errors']}  fixed: {result['fixed']}  "
             f"empty files removed: {result['emptyFilesRemoved']}"]
    lines += [f"  {f['server']}  {f['dir']}: {'; '.join(f['problems'])}"
              for f in result["folders"]]
    unchecked = result.get("missingServers") or []
    if unchecked:  # their folders were not seen: not a clean check
        lines.append(f"  not checked (did not answer): {', '.join(unchecked)}")
    if result["errors"] > result["fixed"]:
        return lines, f"{result['errors'] - result['fixed']} folder(s) still have errors"
    if unchecked:
        return lines, f"{len(unchecked)} server(s) could not be checked"
    return lines, None


def cmd_check(args) -> None:
    result = _client(args).job(
        "/distribution/checkNetworkIntegrity",
        {"fixErrors": int(args.fix), "fullCheck": int(args.full)}, label="checking integrity",
    )
    lines, problem = check_report(result)
    print("\n".join(lines))
    if problem:
        raise CliError(problem)


def cmd_keys_create(args) -> None:
    created = _client(args).call("POST", "/keys", params={"role": args.role})
    print(created["key"] if isinstance(created, dict) else created)


# -- service side ----------------------------------------------------------------------------


def _settings(args) -> Settings:
    overrides = {k: v for k, v in {
        "data_dir": args.data_dir, "gallery_dir": getattr(args, "gallery", None),
        "host": getattr(args, "host", None), "port": getattr(args, "port", None),
    }.items() if v is not None}
    return Settings(**overrides)


def _ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


def _connect(address: str | None, settings: Settings, start: bool) -> None:
    """Join `address`, or the local Ray head an earlier `up` started for this data dir, or
    (with `start`) start one. Without `--address` facenet_ray never joins a Ray cluster that
    it did not start, so other Ray work on the machine is left alone.
    """
    import ray

    os.environ.pop("RAY_ADDRESS", None)
    if address:
        try:
            ray.init(address=address, namespace="facenet", log_to_driver=False)
        except (ConnectionError, RuntimeError) as exc:
            raise CliError(f"no Ray cluster at {address}: {exc}") from exc
        return
    mark = settings.data_dir / STARTED_MARK
    if mark.exists():
        try:
            started = json.loads(mark.read_text())
            if not _answers(started["address"]):  # ray.init would wait minutes for a dead head
                raise ConnectionError(f"the Ray head at {started['address']} is gone")
            if started.get("auth") == "token":  # an explicit address never turns it on itself
                _use_token_auth()
            ray.init(address=started["address"], _temp_dir=started["temp_dir"],
                     namespace="facenet", log_to_driver=False)
            return
        except (ConnectionError, RuntimeError, ValueError, KeyError):
            _stop_local_ray(settings)
    if not start:
        raise CliError(f"no facenet_ray service was started with data dir {settings.data_dir}")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    temp_dir = _ray_temp_dir(settings)
    auth = _ray_token_auth()
    subprocess.run(
        [_ray_bin(), "start", "--head", f"--port={port}",
         f"--temp-dir={temp_dir}", "--include-dashboard=false", "--disable-usage-stats"],
        check=True, stdout=subprocess.DEVNULL,
        env={**os.environ, "RAY_enable_worker_prestart": "0"},
    )
    address = f"{ray.util.get_node_ip_address()}:{port}"
    mark.write_text(json.dumps({"address": address, "temp_dir": temp_dir, "auth": auth}))
    if auth == "token":
        print("Ray cluster auth: token (Ray's own; a machine that joins needs the same token: "
              "`ray get-auth-token` prints it)", file=sys.stderr)
    ray.init(address=address, _temp_dir=temp_dir, namespace="facenet", log_to_driver=False)


def _answers(address: str, timeout_s: float = 2.0) -> bool:
    """True when something accepts connections at `address` ("host:port")."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def _ray_token_auth() -> str:
    """Turn Ray's own cluster auth (token mode, Ray >= 2.52) on for the head `up` starts, unless
    the operator set RAY_AUTH_MODE otherwise; returns the mode. Ray keeps the token in
    ~/.ray/auth_token (or RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH); a missing one is generated
    and, as Ray writes it world-readable, made owner-only."""
    mode = os.environ.get("RAY_AUTH_MODE", "token")
    if mode != "token":
        return mode
    _use_token_auth()
    subprocess.run(  # prints the token: never to the terminal
        [_ray_bin(), "get-auth-token", "--generate"], check=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    default = Path.home() / ".ray" / "auth_token"
    if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
        default.chmod(0o600)
    return mode


def _use_token_auth() -> None:
    """Make this process (and the Ray processes it starts) use Ray's token auth. Ray reads
    RAY_AUTH_MODE once, when imported: the config is re-read the way Ray itself does it
    when it turns token auth on (`_enable_token_auth`, ray 2.60)."""
    from ray._raylet import Config

    os.environ["RAY_AUTH_MODE"] = "token"
    Config.initialize("")


def _ray_temp_dir(settings: Settings) -> str:
    # Short and unique per data dir: Ray's socket paths must stay under 107 bytes.
    digest = hashlib.sha256(str(settings.data_dir.resolve()).encode()).hexdigest()[:10]
    return f"/tmp/facenet-ray-{digest}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_local_ray(settings: Settings) -> None:
    """Stop the Ray processes of the head `up` started (found by their temp dir), only those."""
    import psutil

    mark = settings.data_dir / STARTED_MARK
    temp_dir = _ray_temp_dir(settings)
    mine = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(temp_dir in part for part in proc.info["cmdline"] or []):
            mine.append(proc)
    for proc in mine:
        proc.terminate()
    _, alive = psutil.wait_procs(mine, timeout=10)
    for proc in alive:
        proc.kill()
    mark.unlink(missing_ok=True)


def cmd_up(args) -> None:
    from facenet_ray.gateway import deploy
    from facenet_ray.runtime import admin_key_path, start_service

    settings = _settings(args)
    if settings.gallery_dir is not None and not settings.gallery_dir.is_dir():
        raise CliError(f"gallery {settings.gallery_dir} is not a folder")
    _connect(args.address, settings, start=True)
    print("starting catalog, distributor, coordinator and shards...", file=sys.stderr)
    start_service(settings)
    url = deploy(settings)
    key_file = admin_key_path(settings)
    print(f"facenet_ray is serving at {url}  (API docs: {url}/docs)")
    if key_file.exists():
        print(f"admin API key: {key_file.resolve()}  (send it as the X-API-Key header)")
    else:
        print("admin API key: the value of FACENET_ADMIN_KEY at the first start")
    client = Client(url, os.environ.get("FACENET_ADMIN_KEY") or _read(key_file))
    if settings.gallery_dir is not None:
        _wait_servers(client, args.servers)
        load(client)
        distribute(client)
    if args.try_photo:
        _wait_searchable(client)
        print(describe(args.try_photo, client.search(Path(args.try_photo))))
    print(f"search your own photo:\n  curl -H \"X-API-Key: $(cat {key_file})\" "
          f"-F filedata=@photo.jpg {url}/createTask\n"
          f"  FACENET_URL={url} facenet-ray search photo.jpg")
    if args.detach:
        return
    print("serving until Ctrl-C", file=sys.stderr)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        while not stop:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    print("stopping (Ctrl-C again stops Ray at once)...", file=sys.stderr)
    try:
        _shutdown(settings)
    except KeyboardInterrupt:  # impatient: no graceful Serve shutdown, but nothing left running
        if (settings.data_dir / STARTED_MARK).exists():
            _stop_local_ray(settings)
        raise


def _wait_searchable(client: Client, timeout_s: float = 600.0) -> None:
    """Wait until the shards have encoded the photos they received, showing the progress."""
    deadline = time.monotonic() + timeout_s
    total = 0
    while True:
        shards = client.call("GET", "/stats").get("shards") or {}
        pending = sum((s or {}).get("pending", 0) for s in shards.values())
        total = max(total, pending)
        if total:
            _bar("encoding faces", total - pending, total)
        if not pending:
            if total:
                print(file=sys.stderr)
            return
        if time.monotonic() > deadline:
            print(file=sys.stderr)
            raise CliError(f"{pending} photo(s) still waiting to be encoded after "
                           f"{timeout_s:.0f}s; `facenet-ray status` shows the progress")
        time.sleep(0.5)


def _wait_servers(client: Client, wanted: int, timeout_s: float = 900.0) -> None:
    """Wait until `wanted` servers take part, so the gallery is spread over all of them."""
    deadline = time.monotonic() + timeout_s
    while True:
        servers = client.call("GET", "/distribution/getServersList")
        active = len([s for s in servers.split(",") if s])
        if active >= wanted:
            if wanted > 1:
                print(file=sys.stderr)
            return
        _bar("waiting for servers", active, wanted)
        if time.monotonic() > deadline:
            print(file=sys.stderr)
            raise CliError(f"only {active} of {wanted} servers joined in {timeout_s:.0f}s; "
                           "`ray status` shows the nodes")
        time.sleep(2)
        client.call("GET", "/distribution/updateServerList")


def _read(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def _shutdown(settings: Settings) -> None:
    import ray
    from ray import serve

    from facenet_ray.runtime import stop_service

    serve.shutdown()
    stop_service()
    ray.shutdown()
    if (settings.data_dir / STARTED_MARK).exists():
        _stop_local_ray(settings)
    print("facenet_ray stopped", file=sys.stderr)


def cmd_down(args) -> None:
    settings = _settings(args)
    _connect(args.address, settings, start=False)
    _shutdown(settings)


# -- argument parsing ------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="facenet-ray", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="gateway URL (default $FACENET_URL or " + DEFAULT_URL + ")")
    common.add_argument("--api-key", help="API key (default $FACENET_API_KEY)")
    common.add_argument("--data-dir", type=Path, help="data dir (default ./facenet-data)")
    sub = top.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", parents=[common], help="start (or join) Ray and the service")
    up.add_argument("--gallery", type=Path, help="source gallery: one folder per person")
    up.add_argument("--host", help="address the gateway binds (default 127.0.0.1)")
    up.add_argument("--port", type=int, help="gateway port (default 8000)")
    up.add_argument("--address", help="Ray cluster to join (default: local, started if needed)")
    up.add_argument("--detach", action="store_true", help="return once the gateway answers")
    up.add_argument("--try", dest="try_photo", help="search this photo once started")
    up.add_argument("--servers", type=int, default=1, metavar="N",
                    help="with --gallery: wait until N servers (Ray nodes) have joined before "
                         "distributing (default 1)")
    up.set_defaults(run=cmd_up)

    down = sub.add_parser("down", parents=[common], help="stop everything `up` started")
    down.add_argument("--address")
    down.set_defaults(run=cmd_down)

    sub.add_parser("status", parents=[common], help="servers, folders, heartbeats, lag") \
        .set_defaults(run=cmd_status)
    search = sub.add_parser("search", parents=[common], help="who is in these photos?")
    search.add_argument("photos", nargs="+")
    search.set_defaults(run=cmd_search)
    sub.add_parser("load", parents=[common], help="scan the source gallery") \
        .set_defaults(run=cmd_load)
    sub.add_parser("distribute", parents=[common], help="copy undistributed folders") \
        .set_defaults(run=cmd_distribute)
    sub.add_parser("redistribute", parents=[common],
                   help="spread every folder again by CPU weight (after servers joined)") \
        .set_defaults(run=cmd_redistribute)
    check = sub.add_parser("check", parents=[common], help="integrity check of every server")
    check.add_argument("--full", action="store_true", help="verify every file's sha256")
    check.add_argument("--fix", action="store_true", help="repair from the source gallery")
    check.set_defaults(run=cmd_check)
    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys", required=True)
    create = keys.add_parser("create", parents=[common], help="create an API key")
    create.add_argument("--role", required=True, choices=["admin", "search"])
    create.set_defaults(run=cmd_keys_create)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except CliError as exc:
        print(f"facenet-ray: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

