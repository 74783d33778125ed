"""The HTTP API of SPEC §3: a stateless Ray Serve ingress over the catalog, coordinator and
distributor actors, with API-key auth, upload limits, JSON errors and request metrics."""

# No `from __future__ import annotations`: Serve rebuilds the routes of the ingress class,
# and FastAPI must see the parameter annotations as real objects, not strings.
import asyncio
import functools
import logging
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Annotated, Any

import ray
from fastapi import Body, Depends, FastAPI, File, Form, Query, Request, Security, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel
from ray import serve
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from ray.util import metrics
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facenet_ray import __version__, auth, faces
from facenet_ray.config import NAMESPACE, Settings
from facenet_ray.errors import BadRequest, FacenetError, TooLarge, Unauthorized, Unavailable
from facenet_ray.names import check_name
from facenet_ray.runtime import LagMonitor, freeze_startup_objects

log = logging.getLogger(__name__)

APP_NAME = "facenet"  # the Serve application's name
ACTOR_CALL_TIMEOUT_S = 120.0  # an actor that takes longer is treated as unavailable (503)
# A key lookup is one indexed read: a catalog that cannot answer it this fast is restarting
# or stuck, and the caller hears 503 at once instead of waiting for it.
KEY_LOOKUP_TIMEOUT_S = 10.0
MAX_COUNT = 2**31 - 1  # counts a client sends must fit the catalog's INTEGER columns


# -- errors: one JSON shape, one place ---------------------------------------------------


class ErrorBody(BaseModel):
    """What every error answer carries."""

    error: str
    detail: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "Bad parameter or name",
        401: "Missing or unknown API key",
        403: "The key's role may not use this route",
        404: "No such task, job, server, folder, file or person",
        413: "Upload or image too large",
        415: "Not an image",
        422: "Image cannot be decoded",
        503: "A service actor or server is not available",
    }.items()
}


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


async def _facenet_error(request: Request, exc: Exception) -> JSONResponse:
    # An error raised inside an actor arrives as Ray's RayTaskError subclass of the same
    # type; its own text is a traceback, so report the original error's detail only.
    cause = getattr(exc, "cause", exc)
    error = cause if isinstance(cause, FacenetError) else exc
    return error_response(error.status, error.code, error.detail)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = []
    for err in exc.errors():
        where = " ".join(str(part) for part in err.get("loc", ()))
        problems.append(f"{where}: {err.get('msg', 'invalid')}")
    return error_response(400, BadRequest.code, "; ".join(problems) or "invalid request")


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own errors (unknown route, wrong method) in the service's error shape."""
    status = exc.status_code
    code = TooLarge.code if status == 413 else HTTPStatus(status).phrase.lower().replace(" ", "_")
    return error_response(status, code, str(exc.detail), exc.headers)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", "internal error")


# -- middleware --------------------------------------------------------------------------


class UploadLimit:
    """Answers 413 to a request body over `max_upload_bytes`, before the body is read when
    Content-Length says so, else as soon as the bytes read pass the limit (chunked uploads).

    Pure ASGI: it wraps `receive`, so nothing past the limit is ever buffered.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = scope["app"].state.gateway.settings.max_upload_bytes
        detail = f"the request body is over the limit of {limit} bytes"
        too_large = error_response(413, TooLarge.code, detail)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await too_large(scope, receive, send)
            return

        received = 0
        exceeded = answered = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise HTTPException(413, detail)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise HTTPException(413, detail)
            return message

        async def checked_send(message: Message) -> None:
            # Whatever the app made of the aborted read (FastAPI may call it a parse
            # error), the client is told the body was too large.
            nonlocal answered
            if exceeded and not answered and message["type"] == "http.response.start":
                answered = True
                await too_large(scope, receive, send)
            if not answered:
                await send(message)

        try:
            await self.app(scope, limited_receive, checked_send)
        except Exception:
            if not exceeded:
                raise
            if not answered:
                await too_large(scope, receive, send)


# Reachable without a key: the ping (SPEC) and the API's own documentation, which describes
# the routes and holds no data (Swagger UI cannot send a key when it fetches the schema).
PUBLIC_PATHS = frozenset({"/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
CALLER = "facenet_caller"  # scope["state"] entry: the caller's key record, set by ApiKeyGate


class ApiKeyGate:
    """Authenticates every request but PUBLIC_PATHS from its headers alone: a missing, unknown
    or revoked key is answered 401 before a byte of the body is read (FastAPI would parse a
    whole multipart upload before any route dependency ran). The key's record goes on in
    `scope["state"]`, where the route's role dependency finds it (403 for a wrong role)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        key = Headers(scope=scope).get("x-api-key", "")
        try:
            if not key:
                raise Unauthorized("missing X-API-Key header")
            actors: Actors = scope["app"].state.gateway.actors
            found = await actors.call(
                "catalog", "find_key", auth.hash_key(key), timeout_s=KEY_LOOKUP_TIMEOUT_S
            )
            if found is None:
                raise Unauthorized("unknown or revoked API key")
        except FacenetError as exc:
            await error_response(exc.status, exc.code, exc.detail)(scope, receive, send)
            return
        scope.setdefault("state", {})[CALLER] = found
        await self.app(scope, receive, send)


@functools.cache
def _request_metrics() -> tuple[metrics.Counter, metrics.Histogram]:
    """Created on first use, inside the replica; Ray exports them on its metrics port."""
    requests = metrics.Counter(
        "facenet_http_requests",
        description="HTTP requests answered by the gateway, by route, method and status.",
        tag_keys=("route", "method", "status"),
    )
    latency = metrics.Histogram(
        "facenet_http_request_seconds",
        description="Time to answer an HTTP request, by route.",
        boundaries=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
        tag_keys=("route", "method"),
    )
    return requests, latency


class RequestMetrics:
    """Counts every request by route template (never the raw path: ids would explode the
    label set) and status, and records its latency."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            requests, latency = _request_metrics()
            method = scope["method"]
            requests.inc(tags={"route": route, "method": method, "status": str(status)})
            latency.observe(time.perf_counter() - started, tags={"route": route, "method": method})


# -- the app -----------------------------------------------------------------------------

app = FastAPI(
    title="facenet_ray",
    version=__version__,
    description=(
        "Distributed face search over person folders. Every route but `GET /` needs an "
        "`X-API-Key` header (here: **Authorize**; this documentation itself is public); "
        "role `search` may create and read search tasks and read the "
        'lag, role `admin` may do everything. Errors are `{"error": code, "detail": text}`.'
    ),
    responses=ERROR_RESPONSES,
    openapi_tags=[
        {"name": "main", "description": "Main server: ping, worker results, server records."},
        {"name": "worker", "description": "One worker server's folders and tasks."},
        {"name": "distribution", "description": "Loading, distributing and checking folders."},
        {"name": "utilities", "description": "Search, servers and lag."},
        {"name": "results", "description": "Search tasks, jobs and statistics."},
        {"name": "persons", "description": "Information stored about each person."},
        {"name": "keys", "description": "API keys (admin)."},
    ],
)
app.add_exception_handler(FacenetError, _facenet_error)
app.add_exception_handler(RequestValidationError, _validation_error)
app.add_exception_handler(HTTPException, _http_error)
app.add_exception_handler(Exception, _internal_error)
app.add_middleware(UploadLimit)
app.add_middleware(ApiKeyGate)  # outside UploadLimit: no key, no 413 either, just 401
app.add_middleware(RequestMetrics)  # outermost: it also counts the 401s and 413s

API_KEY = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="An API key; `facenet-ray keys create --role ROLE` or `POST /keys` makes one.",
)


class Actors:
    """Handles to the service's named actors: found by name on first use, and found again
    after an actor was lost (it may have been restarted under the same name)."""

    def __init__(self, timeout_s: float = ACTOR_CALL_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._handles: dict[str, ray.actor.ActorHandle] = {}

    async def call(
        self, actor: str, method: str, *args: Any, timeout_s: float | None = None
    ) -> Any:
        """`await actor.method.remote(*args)`; a lost, missing or stuck actor is Unavailable."""
        handle = self._handles.get(actor)
        if handle is None:
            try:
                handle = await asyncio.to_thread(ray.get_actor, actor, namespace=NAMESPACE)
            except ValueError as exc:
                raise Unavailable(f"the {actor} is not running") from exc
            self._handles[actor] = handle
        try:
            return await asyncio.wait_for(
                getattr(handle, method).remote(*args), timeout_s or self.timeout_s
            )
        # RayActorError covers ActorDiedError and ActorUnavailableError.
        except (RayActorError, GetTimeoutError, TimeoutError) as exc:
            log.warning("%s.%s failed: %s", actor, method, type(exc).__name__)
            if isinstance(exc, RayTaskError):  # raised inside: an actor it called is down
                raise Unavailable(
                    f"the {actor} could not reach another service actor; try again"
                ) from exc
            self._handles.pop(actor, None)
            raise Unavailable(f"the {actor} is not available; try again") from exc


def _caller_with(role_needed: str):
    """A dependency admitting callers whose key grants `role_needed`; it returns the key id.

    ApiKeyGate has already looked the key up by its hash in the catalog, on every request (no
    cache), so a revoked key stops working at once. Keys are never logged or echoed. The
    `key` parameter only documents the header in the OpenAPI schema (Swagger's Authorize).
    """

    async def caller(request: Request, key: Annotated[str | None, Security(API_KEY)]) -> str:
        found = getattr(request.state, CALLER, None)
        if found is None:  # a route under PUBLIC_PATHS that asks for a role: refuse it
            raise Unauthorized("missing X-API-Key header")
        auth.require(role_needed, found["role"])
        return found["key_id"]

    return caller


ADMIN = [Depends(_caller_with(auth.ADMIN))]
SEARCH = [Depends(_caller_with(auth.SEARCH))]


def _name_param(source: Callable[..., Any], alias: str, description: str) -> Any:
    """A parameter that is a folder, photo or server name, checked with `check_name` as it is
    read, so a bad name is a 400 before anything else runs."""

    def read(value: Annotated[str, source(alias=alias, description=description)]) -> str:
        return check_name(value, alias)

    return Annotated[str, Depends(read)]


ServerId = _name_param(PathParam, "serverId", "A server's id, as in `/serversList`.")
PersonId = _name_param(PathParam, "personId", "The person's id (their folder name).")
DirName = _name_param(Query, "dirName", "Person folder name (the person's id).")
LowerDirName = _name_param(Query, "dirname", "Person folder name (the person's id).")
PhotoName = _name_param(Query, "photo", "Photo file name, with its extension.")
Upload = Annotated[
    UploadFile, File(description="The photo (JPEG, PNG, ...), as multipart field `filedata`.")
]


def job_view(job: dict) -> dict:
    """The catalog's job row in the API's shape (SPEC §3.4)."""
    progress = job.get("progress") or {}
    return {
        "jobId": job["job_id"],
        "kind": job["kind"],
        "status": job["status"],
        "progress": {"done": progress.get("done", 0), "total": progress.get("total", 0)},
        "result": job.get("result"),
        "error": job.get("error"),
    }


# No CPU reserved: a fraction would leave a 2-CPU node room for one 1-CPU encoding task only.
@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64)
@serve.ingress(app)
class Gateway:
    """The routes of SPEC §3. Holds nothing but settings, actor handles and its lag monitor."""

    def __init__(self, settings_overrides: dict | None = None) -> None:
        self.settings = Settings(**(settings_overrides or {}))
        self.actors = Actors()
        self.lag = LagMonitor()
        freeze_startup_objects()
        # Serve runs the constructor on the replica's request loop: the one to measure.
        self._lag_task = asyncio.get_running_loop().create_task(self.lag.run())
        app.state.gateway = self

    async def _call(self, actor: str, method: str, *args: Any) -> Any:
        return await self.actors.call(actor, method, *args)

    async def _read_photo(self, upload: UploadFile) -> bytes:
        """The upload's bytes once they are known to decode as an image within the limits."""
        data = await upload.read()
        if not data:
            raise BadRequest("the uploaded file `filedata` is empty")
        await asyncio.to_thread(faces.decode_image, data, self.settings.max_pixels)
        return data

    async def _start_job(self, kind: str, params: dict | None = None) -> str:
        return await self._call("distributor", "start_job", kind, params or {})

    # -- SPEC §3.1 main server -----------------------------------------------------------

    @app.get("/", tags=["main"], summary="Ping (no API key needed)")
    async def ping(self) -> dict[str, Any]:
        return {"status": "ok", "service": "facenet_ray", "version": __version__}

    @app.get("/taskResult", tags=["main"], dependencies=ADMIN, summary="Record a worker result")
    async def task_result(
        self,
        task_id: Annotated[str, Query(alias="taskId", description="The task's id.")],
        found: Annotated[bool, Query(description="Whether the worker found a match (1/0).")],
        face_id: Annotated[
            str | None,
            Query(alias="faceId", description="The matched person's id; needed if found."),
        ] = None,
    ) -> bool:
        if found and not face_id:
            raise BadRequest("faceId is required when found is true")
        if found:
            check_name(face_id, "faceId")
        await self._call(
            "coordinator", "record_worker_result", task_id, found, face_id if found else None
        )
        return True

    @app.get("/addServer", tags=["main"], dependencies=ADMIN, summary="Register a server")
    async def add_server(
        self,
        ip: Annotated[
            str,
            Query(
                pattern=r"^[A-Za-z0-9._:\-]{1,253}$",
                description="The server's IP address or host name.",
            ),
        ],
        dirs: Annotated[
            int, Query(ge=0, le=MAX_COUNT, description="Number of photo folders on it.")
        ],
        port: Annotated[int, Query(ge=1, le=65535, description="The worker's port.")],
        cpu_count: Annotated[
            int, Query(alias="cpuCount", ge=1, le=MAX_COUNT, description="Its CPU cores.")
        ],
    ) -> str:
        return await self._call("coordinator", "add_server", ip, port, cpu_count, dirs)

    # -- SPEC §3.2 worker server ---------------------------------------------------------

    @app.post(
        "/worker/{serverId}/addTask",
        tags=["worker"],
        dependencies=SEARCH,
        summary="Search one server's shard; returns the task id",
    )
    async def worker_add_task(self, server_id: ServerId, filedata: Upload) -> str:
        data = await self._read_photo(filedata)
        return await self._call("coordinator", "create_task", data, [server_id])

    @app.get("/worker/{serverId}/createDir", tags=["worker"], dependencies=ADMIN)
    async def worker_create_dir(self, server_id: ServerId, dir_name: DirName) -> bool:
        """Create a person folder; true if created, false if it existed."""
        return await self._call("coordinator", "create_dir", server_id, dir_name)

    @app.post("/worker/{serverId}/addPhoto", tags=["worker"], dependencies=ADMIN)
    async def worker_add_photo(
        self,
        server_id: ServerId,
        filedata: Upload,
        dir_name: Annotated[
            str | None, Query(alias="dirName", description="Person folder name.")
        ] = None,
        dir_name_field: Annotated[
            str | None, Form(alias="dirName", description="Or as a multipart field.")
        ] = None,
    ) -> dict[str, Any]:
        """Add a photo to a folder under its upload file name (spaces and Unicode kept)."""
        dir_name = check_name(dir_name if dir_name is not None else dir_name_field, "dirName")
        photo = check_name(filedata.filename, "filedata file name")
        data = await self._read_photo(filedata)
        return await self._call("coordinator", "add_photo", server_id, dir_name, photo, data)

    @app.get("/worker/{serverId}/getTasksCount", tags=["worker"], dependencies=ADMIN)
    async def worker_tasks_count(self, server_id: ServerId) -> int:
        """Number of queued and running tasks on the server."""
        return await self._call("coordinator", "tasks_count", server_id)

    @app.get("/worker/{serverId}/checkDir", tags=["worker"], dependencies=ADMIN)
    async def worker_check_dir(self, server_id: ServerId, dir_name: DirName) -> int:
        """Number of files in the folder; 404 if there is no such folder."""
        return await self._call("coordinator", "check_dir", server_id, dir_name)

    @app.get("/worker/{serverId}/checkPhoto", tags=["worker"], dependencies=ADMIN)
    async def worker_check_photo(
        self,
        server_id: ServerId,
        dir_name: LowerDirName,
        photo: PhotoName,
        checksum: Annotated[
            bool, Query(alias="checksumm", description="1: answer the file's sha256 instead.")
        ] = False,
    ) -> int | str:
        """`1` (or the sha256 hex when checksumm=1); 404 if there is no such file."""
        return await self._call("coordinator", "check_photo", server_id, dir_name, photo, checksum)

    @app.get("/worker/{serverId}/removeDir", tags=["worker"], dependencies=ADMIN)
    async def worker_remove_dir(
        self,
        server_id: ServerId,
        dir_name: Annotated[
            str,
            Query(alias="dirname", description="Folder to remove; empty removes every folder."),
        ],
    ) -> int:
        """Remove a folder (answers its file count) or, with an empty dirname, every folder
        on the server (answers the folder count)."""
        if dir_name:
            check_name(dir_name, "dirname")
        return await self._call("coordinator", "remove_dir", server_id, dir_name)

    # -- SPEC §3.3 distribution ----------------------------------------------------------

    @app.get("/distribution/dirsCount", tags=["distribution"], dependencies=ADMIN)
    async def dirs_count(self) -> int:
        """Number of person folders in the catalog."""
        return await self._call("catalog", "dirs_count")

    @app.get("/distribution/count", tags=["distribution"], dependencies=ADMIN)
    async def count(
        self,
        distributed: Annotated[
            bool, Query(description="1: distributed folders; 0: not yet distributed.")
        ],
    ) -> int:
        """Number of distributed (or undistributed) folders."""
        return await self._call("catalog", "count_folders", distributed)

    @app.get("/distribution/checkDistribution", tags=["distribution"], dependencies=ADMIN)
    async def check_distribution(self) -> dict[str, Any]:
        """Catalog assignments against the folders present on servers."""
        return await self._call("distributor", "check_distribution")

    @app.get("/distribution/checkNetworkIntegrity", tags=["distribution"], dependencies=ADMIN)
    async def check_network_integrity(
        self,
        fix_errors: Annotated[
            bool, Query(alias="fixErrors", description="1: re-copy bad folders from the gallery.")
        ] = False,
        full_check: Annotated[
            bool, Query(alias="fullCheck", description="1: verify every file's sha256.")
        ] = False,
    ) -> str:
        """Start an integrity check; returns its job id."""
        return await self._start_job(
            "checkNetworkIntegrity", {"fixErrors": fix_errors, "fullCheck": full_check}
        )

    @app.get("/distribution/startAutoDistrib", tags=["distribution"], dependencies=ADMIN)
    async def start_auto_distrib(self) -> str:
        """Start distributing every undistributed folder; returns the job id."""
        return await self._start_job("startAutoDistrib")

    @app.get("/distribution/loadDirs", tags=["distribution"], dependencies=ADMIN)
    async def load_dirs(self) -> str:
        """Start scanning the source gallery into the catalog; returns the job id."""
        return await self._start_job("loadDirs")

    @app.get("/distribution/getServersList", tags=["distribution"], dependencies=ADMIN)
    async def get_servers_list(self) -> str:
        """Ids of the servers taking part in distribution, comma-separated."""
        return ",".join(await self._call("coordinator", "participating_servers"))

    @app.get("/distribution/updateServerList", tags=["distribution"], dependencies=ADMIN)
    async def update_server_list(self) -> int:
        """Refresh the servers from Ray's node table; returns how many there are."""
        return await self._call("coordinator", "update_server_list")

    @app.get("/distribution/runReDistribution", tags=["distribution"], dependencies=ADMIN)
    async def run_redistribution(self) -> str:
        """Start a full redistribution (remove everywhere, distribute again); returns the job id."""
        return await self._start_job("runReDistribution")

    # -- SPEC §3.3 utilities -------------------------------------------------------------

    @app.post("/createTask", tags=["utilities"], dependencies=SEARCH)
    async def create_task(self, filedata: Upload) -> str:
        """Search the whole gallery for the photo's face; returns the task id."""
        data = await self._read_photo(filedata)
        return await self._call("coordinator", "create_task", data, None)

    @app.get("/serversList", tags=["utilities"], dependencies=ADMIN)
    async def servers_list(self) -> list[dict[str, Any]]:
        """Every server: id, url, port, cpu_count, dirsCount, status and more."""
        return await self._call("coordinator", "servers_list")

    @app.get("/getLag", tags=["utilities"], dependencies=SEARCH)
    async def get_lag(self) -> float:
        """This gateway's event-loop lag in ms (the worst over the last few seconds)."""
        return self.lag.current_ms()

    # -- SPEC §3.4 tasks, jobs, persons, statistics --------------------------------------

    @app.get("/tasks/{taskId}", tags=["results"], dependencies=SEARCH)
    async def get_task(
        self,
        task_id: Annotated[
            str, PathParam(alias="taskId", description="A task id from createTask.")
        ],
    ) -> dict[str, Any]:
        """A search task's status and, once done, its answer."""
        return await self._call("coordinator", "get_task", task_id)

    @app.get("/jobs/{jobId}", tags=["results"], dependencies=ADMIN)
    async def get_job(
        self,
        job_id: Annotated[
            str, PathParam(alias="jobId", description="A job id from a distribution route.")
        ],
    ) -> dict[str, Any]:
        """A job's status, progress and, once done, its result."""
        return job_view(await self._call("catalog", "get_job", job_id))

    @app.get("/stats", tags=["results"], dependencies=ADMIN)
    async def stats(self) -> dict[str, Any]:
        """Statistics of tasks, distribution, integrity and heartbeats."""
        stats = await self._call("coordinator", "stats")
        stats["gateway"] = {"lagMs": self.lag.current_ms()}
        return stats

    @app.get("/events", tags=["results"], dependencies=ADMIN)
    async def events(
        self,
        kind: Annotated[
            str | None, Query(max_length=64, description="Only events of this kind.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=10_000, description="At most this many.")] = 100,
    ) -> list[dict[str, Any]]:
        """The latest events (server up/down, integrity checks, empty files removed, jobs,
        photos added...), newest first: the history behind `/stats`."""
        return await self._call("catalog", "events", kind, limit)

    @app.get("/persons/{personId}", tags=["persons"], dependencies=ADMIN)
    async def get_person(self, person_id: PersonId) -> dict[str, Any]:
        """The information stored about a person."""
        return await self._call("catalog", "get_person", person_id)

    @app.put("/persons/{personId}", tags=["persons"], dependencies=ADMIN)
    async def put_person(
        self,
        person_id: PersonId,
        info: Annotated[dict[str, Any], Body(description="Any JSON object.")],
    ) -> dict[str, Any]:
        """Store (replace) the information about a person; answers what was stored."""
        await self._call("catalog", "put_person", person_id, info)
        return info

    @app.delete("/persons/{personId}", tags=["persons"], dependencies=ADMIN)
    async def delete_person(self, person_id: PersonId) -> bool:
        """Forget the information about a person."""
        await self._call("catalog", "delete_person", person_id)
        return True

    # -- API keys ------------------------------------------------------------------------

    @app.post("/keys", tags=["keys"], dependencies=ADMIN, status_code=201)
    async def create_key(
        self, role: Annotated[str, Query(description="`admin` or `search`.")]
    ) -> dict[str, str]:
        """Make a new key. The key itself is in this answer only: only its hash is kept."""
        issued = auth.issue_key(role)
        await self._call("catalog", "add_key", issued.key_id, issued.key_hash, issued.role)
        return {"keyId": issued.key_id, "role": issued.role, "key": issued.key}

    @app.get("/keys", tags=["keys"], dependencies=ADMIN)
    async def list_keys(self) -> list[dict[str, Any]]:
        """Every key's id, role and dates (never the key or its hash)."""
        return [
            {
                "keyId": row["key_id"],
                "role": row["role"],
                "createdAt": row.get("created_at"),
                "revokedAt": row.get("revoked_at"),
            }
            for row in await self._call("catalog", "list_keys")
        ]

    @app.delete("/keys/{keyId}", tags=["keys"], dependencies=ADMIN)
    async def revoke_key(
        self,
        key_id: Annotated[str, PathParam(alias="keyId", description="The key's id (not the key).")],
    ) -> bool:
        """Revoke a key; it is refused from the next request on."""
        await self._call("catalog", "revoke_key", key_id)
        return True


def build_app(args: dict | None = None) -> serve.Application:
    """The Serve application; `args` are Settings overrides (`serve run` passes them as strings)."""
    overrides = dict(args or {})
    Settings(**overrides)  # fail here, not in the replica, on a bad override
    return Gateway.bind(overrides)


def deploy(settings: Settings) -> str:
    """Start Serve's HTTP proxy (on the head only) and the gateway; returns the gateway's URL.

    The replica gets this process's settings, whatever its own environment says.
    """
    if bool(settings.ssl_certfile) != bool(settings.ssl_keyfile):
        raise ValueError("HTTPS needs both ssl_certfile and ssl_keyfile")
    http_options: dict[str, Any] = {"host": settings.host, "port": settings.port}
    if settings.ssl_certfile and settings.ssl_keyfile:
        http_options["ssl_certfile"] = str(settings.ssl_certfile)
        http_options["ssl_keyfile"] = str(settings.ssl_keyfile)
    serve.start(http_options=http_options, proxy_location="HeadOnly")
    serve.run(build_app(settings.model_dump(mode="json")), name=APP_NAME, route_prefix="/")
    return gateway_url(settings)


def gateway_url(settings: Settings) -> str:
    """Where a client on this machine reaches the gateway."""
    scheme = "https" if settings.ssl_certfile and settings.ssl_keyfile else "http"
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{settings.port}"
