"""The coordinator actor: the server list, heartbeats, search tasks and the worker routes."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
import uuid
from collections import defaultdict

import numpy as np
import ray
from ray.util import metrics

from facenet_ray.config import NAMESPACE, Settings
from facenet_ray.decision import decide
from facenet_ray.errors import BadRequest, Conflict, FacenetError, NotFound, Unavailable
from facenet_ray.faces import Detection
from facenet_ray.index import Candidate, merge_candidates
from facenet_ray.names import check_name
from facenet_ray.runtime import (
    LagMonitor,
    actor,
    freeze_startup_objects,
    pinned,
    server_id_of,
    shard_name,
)
from facenet_ray.shard import ShardActor, _encoder
from facenet_ray.store import PhotoStore, sha256_bytes

log = logging.getLogger(__name__)

# Prometheus metrics, exported on Ray's metrics port (names get Ray's `ray_` prefix).
TASK_LATENCY = metrics.Histogram(
    "facenet_task_latency_ms", "Search task latency, probe to answer",
    boundaries=[10, 25, 50, 100, 250, 500, 1000, 2500, 5000], tag_keys=("status",),
)
TASKS = metrics.Counter("facenet_tasks_total", "Search tasks by outcome", tag_keys=("outcome",))
HEARTBEAT_LATENCY = metrics.Gauge(
    "facenet_heartbeat_latency_ms", "Last heartbeat round trip", tag_keys=("server",)
)
SERVERS_DOWN = metrics.Counter("facenet_servers_down_total", "Servers marked down")


@ray.remote(max_concurrency=1)  # dlib is not thread-safe: one encoding at a time per process
class ProbeEncoder:
    """Keeps the face model warm on the head node so a search does not wait for a worker start.

    The coordinator keeps a small pool of them for searches that arrive together.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        _encoder(settings)

    def encode(self, data: bytes) -> Detection:
        # Only the largest face is searched unless every face is asked for.
        return _encoder(self.settings).encode_bytes(data, None if self.settings.all_faces else 1)


def _candidate_json(c: Candidate) -> dict:
    return {"faceId": c.person_id, "distance": round(float(c.distance), 6), "photo": c.photo}


@ray.remote
class CoordinatorActor:
    """Owns the live view of servers and runs every search task.

    Servers are Ray nodes with CPUs; each gets a shard actor pinned to it. A heartbeat loop
    pings every shard, records latency in the catalog and marks a server down after
    `heartbeat_misses` missed beats (or at once when Ray reports its node dead); with
    auto-heal on, the distributor then re-copies that server's folders to the live ones.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.catalog = actor("catalog")
        self.gallery = PhotoStore(settings.gallery_dir or settings.data_dir / "gallery")
        self.shards: dict[str, ray.actor.ActorHandle] = {}
        self.status: dict[str, str] = {}
        self.node_alive: set[str] = set()  # servers whose Ray node is alive
        self.server_of_node: dict[str, str] = {}  # Ray node id -> server id
        # Servers of the catalog that no node of this cluster has been since the service
        # started (a machine not back after a restart): since when, and whether it was healed.
        self.absent_since: dict[str, float] = {}
        self.absent_healed: set[str] = set()
        self.misses: dict[str, int] = defaultdict(int)
        self.in_flight: dict[str, int] = defaultdict(int)
        self.lag = LagMonitor()
        self.background: set[asyncio.Task] = set()
        self.probe_encoders: asyncio.Queue = asyncio.Queue()  # idle ProbeEncoder actors
        self.started: asyncio.Future | None = None
        # Start at once, not on the first call: after a restart (max_restarts=-1) nothing may
        # call for a while, and until start() runs no heartbeat watches the servers and the
        # tasks the old process left running stay so. Ray runs an async actor's __init__ on
        # its event loop.
        self._spawn(self.start())

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> int:
        """Idempotent: discover servers, then start the heartbeat and lag loops."""
        if self.started is None:
            self.started = asyncio.get_running_loop().create_future()
            try:
                await self.catalog.fail_unfinished_tasks.remote("coordinator restarted")
                head = pinned(ray.get_runtime_context().get_node_id())
                for _ in range(self.settings.probe_encoders):
                    self.probe_encoders.put_nowait(
                        ProbeEncoder.options(num_cpus=0, scheduling_strategy=head)
                        .remote(self.settings)
                    )
                await self.update_server_list()
                freeze_startup_objects()
                self._spawn(self.lag.run())
                self._spawn(self._heartbeat_loop())
                self.started.set_result(True)
            except BaseException as exc:
                self.started.set_exception(exc)
                self.started = None
                raise
        await self.started
        return len(self.participating_servers_now())

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def lag_ms(self) -> float:
        return self.lag.current_ms()

    # -- servers ----------------------------------------------------------------------------

    async def update_server_list(self) -> int:
        """Refresh from Ray's node table: new nodes get a shard, dead ones are marked down.

        A server keeps its id across restarts of Ray (a Ray node id is new at every `ray
        start`): a node that joins takes over the id of the catalog's server on its machine
        (same IP and CPU count) whose node is gone, so it finds its folders, its encodings
        cache and its assignments again. Servers of the catalog that no node takes over are
        absent: searches name them missing, and after `absent_grace_s` they are healed.
        """
        nodes = await asyncio.to_thread(ray.nodes)
        alive = {n["NodeID"]: n for n in nodes if n["Alive"] and n["Resources"].get("CPU", 0) > 0}
        records = await self.catalog.list_servers.remote()
        for node_id, node in alive.items():
            if node_id in self.server_of_node:
                continue  # known: the heartbeat decides whether it is up
            server_id = await self._identify(node, records, alive)
            self.server_of_node[node_id] = server_id
            self.shards[server_id] = ShardActor.options(
                name=shard_name(server_id), namespace=NAMESPACE, lifetime="detached",
                get_if_exists=True, scheduling_strategy=pinned(node_id),
                max_restarts=-1, num_cpus=self.settings.shard_cpus,
            ).remote(server_id, self.settings)
            await self.catalog.upsert_server.remote(
                server_id, node_id=node_id, ip=node["NodeManagerAddress"],
                port=self.settings.port, cpu_count=int(node["Resources"]["CPU"]),
                status="active",
            )
            self.absent_since.pop(server_id, None)
            await self._mark_up(server_id)
        self.node_alive = {self.server_of_node[n] for n in alive}
        await self._join_pending(records, {n["NodeManagerAddress"] for n in alive.values()})
        for server_id in list(self.shards):
            if server_id not in self.node_alive and self.status.get(server_id) == "active":
                await self._mark_down(server_id, "node not alive in Ray")
        await self._note_absent(records)
        return len(self.participating_servers_now())

    async def _identify(self, node: dict, records: list[dict], alive: dict) -> str:
        """The server id of a node that joined: its own record's (this coordinator restarted),
        or that of a gone server on the same machine, or a new one from its node id."""
        node_id = node["NodeID"]
        taken = set(self.server_of_node.values())
        for r in records:
            if r["node_id"] == node_id:
                return r["server_id"]
        gone = [
            r for r in records
            if r["status"] in ("active", "down") and r["server_id"] not in taken
            and r["node_id"] not in alive and r["ip"] == node["NodeManagerAddress"]
            and r["cpu_count"] == int(node["Resources"]["CPU"])
        ]
        if not gone:
            return server_id_of(node_id)
        server_id = max(gone, key=lambda r: r["last_seen"] or 0)["server_id"]
        try:  # the shard actor of its old node (same Ray session) can never run again
            ray.kill(actor(shard_name(server_id)), no_restart=True)
        except ValueError:
            pass
        await self.catalog.add_event.remote(
            "server_rejoined", {"node_id": node_id}, server_id=server_id
        )
        return server_id

    async def _note_absent(self, records: list[dict]) -> None:
        """Servers of the catalog with no node in this cluster: down at once (searches name
        them missing), healed once they have been absent for `absent_grace_s`."""
        now = time.monotonic()
        for r in records:
            server_id = r["server_id"]
            if r["status"] not in ("active", "down") or server_id in self.node_alive \
                    or server_id in self.shards:
                continue
            if server_id not in self.absent_since:
                self.absent_since[server_id] = now
                self.status[server_id] = "down"
                await self.catalog.set_server_status.remote(server_id, "down")
                await self.catalog.add_event.remote(
                    "server_absent", {"dirs": r["dirs_count"]}, server_id=server_id
                )
            waited = now - self.absent_since[server_id]
            if (self.settings.auto_heal and server_id not in self.absent_healed
                    and r["dirs_count"] > 0 and waited >= self.settings.absent_grace_s):
                self.absent_healed.add(server_id)
                log.warning("server %s absent for %.0f s: healing its folders", server_id, waited)
                await actor("distributor").start_job.remote("heal", {"server": server_id})

    async def _join_pending(self, records: list[dict], ips: set[str]) -> None:
        for server in records:
            if server["status"] == "pending" and server["ip"] in ips:
                await self.catalog.set_server_status.remote(server["server_id"], "joined")
                await self.catalog.add_event.remote(
                    "pending_server_joined", {"ip": server["ip"]}, server_id=server["server_id"]
                )

    async def _mark_up(self, server_id: str) -> None:
        self.status[server_id] = "active"
        self.misses[server_id] = 0
        await self.catalog.set_server_status.remote(server_id, "active")
        await self.catalog.add_event.remote("server_up", server_id=server_id)

    async def _mark_down(self, server_id: str, reason: str) -> None:
        self.status[server_id] = "down"
        SERVERS_DOWN.inc()
        await self.catalog.set_server_status.remote(server_id, "down")
        await self.catalog.add_event.remote("server_down", {"reason": reason}, server_id=server_id)
        log.warning("server %s down: %s", server_id, reason)
        if self.settings.auto_heal:
            await actor("distributor").start_job.remote("heal", {"server": server_id})

    def participating_servers_now(self) -> list[str]:
        return sorted(s for s, st in self.status.items() if st == "active")

    async def participating_servers(self) -> list[str]:
        await self.start()
        return self.participating_servers_now()

    async def weights(self) -> dict[str, float]:
        """CPU weight of each active server, for placement."""
        await self.start()
        servers = await self.catalog.list_servers.remote()
        active = set(self.participating_servers_now())
        return {s["server_id"]: float(s["cpu_count"]) for s in servers if s["server_id"] in active}

    async def servers_list(self) -> list[dict]:
        await self.start()
        out = []
        for s in await self.catalog.list_servers.remote():
            url = f"http://{self.settings.host}:{self.settings.port}/worker/{s['server_id']}"
            out.append({
                "id": s["server_id"], "url": url if s["status"] != "pending" else s["ip"],
                "port": s["port"], "cpu_count": s["cpu_count"], "dirsCount": s["dirs_count"],
                "status": s["status"], "ip": s["ip"], "group": s.get("grp"),
                "last_seen": s["last_seen"], "latency_ms": s["latency_ms"],
            })
        return out

    async def add_server(self, ip: str, port: int, cpu_count: int, dirs: int) -> str:
        """Register a server record; it stays `pending` until a Ray node with that IP joins."""
        await self.start()
        try:
            ipaddress.ip_address(ip)
        except ValueError as exc:
            raise BadRequest(f"ip {ip!r} is not an IP address") from exc
        if not (0 < port < 65536) or cpu_count < 1 or dirs < 0:
            raise BadRequest("port must be 1-65535, cpuCount >= 1, dirs >= 0")
        for s in await self.catalog.list_servers.remote():
            if s["ip"] == ip and self.status.get(s["server_id"]) == "active":
                return s["server_id"]
        server_id = f"pending-{uuid.uuid5(uuid.NAMESPACE_URL, f'{ip}:{port}').hex[:8]}"
        await self.catalog.upsert_server.remote(
            server_id, node_id=None, ip=ip, port=port, cpu_count=cpu_count, status="pending"
        )
        await self.catalog.add_event.remote("server_registered", {"ip": ip, "dirs": dirs},
                                            server_id=server_id)
        return server_id

    # -- heartbeats -------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval_s)
            try:
                await self.heartbeat()
            except Exception:  # the loop must survive a catalog restart
                log.exception("heartbeat round failed")

    async def heartbeat(self) -> dict[str, bool]:
        """One round: refresh membership, ping every known shard, record the results."""
        await self.update_server_list()
        # Down servers whose node lives are pinged too: one that answers again is back.
        servers = [s for s in self.shards if s in self.node_alive]
        results = await asyncio.gather(*(self._ping(s) for s in servers))
        beats = []
        for server_id, latency_ms in zip(servers, results, strict=True):
            beats.append((server_id, latency_ms is not None, latency_ms))
            if latency_ms is not None:
                HEARTBEAT_LATENCY.set(latency_ms, tags={"server": server_id})
                self.misses[server_id] = 0
                if self.status.get(server_id) != "active":
                    await self._mark_up(server_id)
                continue
            self.misses[server_id] += 1
            if (self.misses[server_id] >= self.settings.heartbeat_misses
                    and self.status.get(server_id) == "active"):
                await self._mark_down(server_id, f"{self.misses[server_id]} missed heartbeats")
        if beats:
            await self.catalog.record_heartbeats.remote(beats)
        return {s: ok for s, ok, _ in beats}

    async def _ping(self, server_id: str) -> float | None:
        start = time.perf_counter()
        try:
            await asyncio.wait_for(
                self.shards[server_id].ping.remote(), self.settings.heartbeat_interval_s * 2
            )
        except Exception:
            return None
        return (time.perf_counter() - start) * 1000

    # -- search tasks -----------------------------------------------------------------------

    async def create_task(self, data: bytes, server_ids: list[str] | None = None) -> str:
        """Queue a search of `data` over the given servers (all by default); return its id."""
        await self.start()
        if server_ids:
            for server_id in server_ids:
                self._known(server_id)
            targets = list(server_ids)
        else:  # a down or absent server still holding folders is reported missing until healed
            targets = sorted(
                s["server_id"] for s in await self.catalog.list_servers.remote()
                if self.status.get(s["server_id"]) == "active"
                or (s["status"] in ("active", "down") and s["dirs_count"] > 0)
            )
        if not any(self.status.get(s) == "active" for s in targets):
            raise Unavailable("no server is available to search")
        task_id = uuid.uuid4().hex
        await self.catalog.create_task.remote(task_id, targets)
        self._spawn(self._run_task(task_id, data, targets))
        return task_id

    async def _run_task(self, task_id: str, data: bytes, targets: list[str]) -> None:
        started = time.perf_counter()
        timings: dict = {}
        try:
            await self.catalog.update_task.remote(task_id, status="running")
            encoder = await self.probe_encoders.get()
            try:
                detection: Detection = await encoder.encode.remote(data)
            finally:
                self.probe_encoders.put_nowait(encoder)
            timings["encode_ms"] = _ms(started)
            faces = detection.faces  # the largest only, unless all_faces
            if not faces:
                result = _answer(None, [], reason="no_face")
            else:
                answers = []
                for face in faces:
                    candidates, missing, pending, search_ms = await self._scatter(
                        face.encoding, targets
                    )
                    answers.append((face, decide(candidates, self.settings), missing))
                    timings.setdefault("search_ms", []).append(search_ms)
                face, decision, missing = answers[0]
                result = _answer(decision, missing, box=face.box)
                if len(answers) > 1:
                    result["faces"] = [_answer(d, m, box=f.box) for f, d, m in answers]
                result["pendingServers"] = pending
            result["fallback"] = detection.fallback
            timings["total_ms"] = _ms(started)
            await self.catalog.update_task.remote(
                task_id, status="done", result=result, timings=timings
            )
            TASK_LATENCY.observe(timings["total_ms"], tags={"status": "done"})
            await self.catalog.add_event.remote(  # the history behind latency histograms
                "task_done", {"ms": timings["total_ms"], "found": result["found"]}
            )
            TASKS.inc(tags={"outcome": "found" if result["found"] else (result["reason"] or "")})
        except Exception as exc:
            error = exc.detail if isinstance(exc, FacenetError) else "search failed"
            if not isinstance(exc, FacenetError):
                log.exception("task %s failed", task_id)
            timings["total_ms"] = _ms(started)
            TASK_LATENCY.observe(timings["total_ms"], tags={"status": "failed"})
            TASKS.inc(tags={"outcome": "failed"})
            await self.catalog.update_task.remote(
                task_id, status="failed", error=error, timings=timings
            )

    async def _scatter(
        self, probe: np.ndarray, targets: list[str]
    ) -> tuple[list[Candidate], list[str], list[str], dict[str, float]]:
        """Search every target shard at once; those that fail or time out come back missing.

        Also returns the servers that answered while photos still waited to be encoded.
        """
        live = [s for s in targets if self.status.get(s) == "active"]
        missing = [s for s in targets if s not in live]
        timings: dict[str, float] = {}

        async def one(server_id: str):
            start = time.perf_counter()
            self.in_flight[server_id] += 1
            try:
                return await asyncio.wait_for(
                    self._search_shard(server_id, probe), self.settings.search_timeout_s
                )
            except Exception as exc:
                log.warning("search on %s failed: %r", server_id, exc)
                return None
            finally:
                self.in_flight[server_id] -= 1
                timings[server_id] = _ms(start)

        results = await asyncio.gather(*(one(s) for s in live))
        found, pending = [], []
        for server_id, answer in zip(live, results, strict=True):
            if answer is None:
                missing.append(server_id)
                continue
            candidates, waiting = answer
            found.append(candidates)
            if waiting:
                pending.append(server_id)
        return merge_candidates(found, self.settings.top_k), sorted(missing), pending, timings

    async def _search_shard(self, server_id: str, probe: np.ndarray):
        """One shard's search. A shard that is restarting (its handle here may learn of the
        restart a moment after the actor is back) is asked again until the caller's timeout."""
        delay = 0.05
        while True:
            try:
                return await self.shards[server_id].search.remote(probe, self.settings.top_k)
            except ray.exceptions.ActorUnavailableError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def get_task(self, task_id: str) -> dict:
        task = await self.catalog.get_task.remote(task_id)
        result = task.get("result") or {}
        return {
            "taskId": task["task_id"],
            "status": task["status"],
            "found": result.get("found", False),
            "faceId": result.get("faceId"),
            "distance": result.get("distance"),
            "confidence": result.get("confidence"),
            "reason": result.get("reason"),
            "candidates": result.get("candidates", []),
            "missingServers": result.get("missingServers", []),
            "pendingServers": result.get("pendingServers", []),
            "servers": task.get("servers", []),
            "timings": task.get("timings") or {},
            "error": task.get("error"),
            "workerResults": task.get("worker_results", []),
            **({"faces": result["faces"]} if "faces" in result else {}),
        }

    async def record_worker_result(self, task_id: str, found: bool, face_id: str | None) -> None:
        if found and not face_id:
            raise BadRequest("found=true needs a faceId")
        await self.catalog.record_worker_result.remote(task_id, found, face_id)

    # -- worker routes (SPEC 3.2); every change is mirrored in the catalog -------------------

    def _known(self, server_id: str) -> ray.actor.ActorHandle:
        if server_id not in self.shards:
            raise NotFound(f"no server {server_id!r}")
        return self.shards[server_id]

    def _live(self, server_id: str) -> ray.actor.ActorHandle:
        shard = self._known(server_id)
        if self.status.get(server_id) != "active":
            raise Unavailable(f"server {server_id} is down")
        return shard

    async def _claim(self, server_id: str, person_id: str) -> bool:
        """Check that the folder may live on this server; True when it is already there."""
        assignment = (await self.catalog.get_assignments.remote()).get(person_id)
        if assignment and assignment["server_id"] != server_id:
            raise Conflict(f"folder {person_id!r} is assigned to server {assignment['server_id']}")
        return assignment is not None

    async def create_dir(self, server_id: str, person_id: str) -> bool:
        check_name(person_id, "dirName")
        await self.start()
        shard = self._live(server_id)
        await self._claim(server_id, person_id)
        await asyncio.to_thread(self.gallery.create_dir, person_id)
        created = await shard.create_dir.remote(person_id)
        await self._sync_from_gallery(person_id)
        await self.catalog.set_assignment.remote(person_id, server_id, "distributed")
        await self.catalog.add_event.remote("dir_created", server_id=server_id, dir=person_id)
        return created

    async def add_photo(self, server_id: str, person_id: str, photo: str, data: bytes) -> dict:
        """Store the photo in the source gallery (the system of record), then on the server."""
        check_name(person_id, "dirName")
        check_name(photo, "photo")
        await self.start()
        shard = self._live(server_id)
        already_there = await self._claim(server_id, person_id)
        digest = sha256_bytes(data)
        await asyncio.to_thread(self.gallery.add_photo, person_id, photo, data, digest)
        if not already_there:  # the server gets the whole folder, not this photo alone
            files = await asyncio.to_thread(self._read_gallery_folder, person_id)
            await shard.put_folder.remote(person_id, files)
        info = await shard.add_photo.remote(person_id, photo, data, digest)
        await self._sync_from_gallery(person_id)
        await self.catalog.set_assignment.remote(person_id, server_id, "distributed")
        await self.catalog.add_event.remote("photo_added", {"photo": photo},
                                            server_id=server_id, dir=person_id)
        return {"name": info.name, "size": info.size, "sha256": info.sha256}

    def _read_gallery_folder(self, person_id: str) -> list[tuple[str, bytes, str]]:
        files = []
        for info in self.gallery.list_photos(person_id):
            data = self.gallery.photo_path(person_id, info.name).read_bytes()
            files.append((info.name, data, sha256_bytes(data)))
        return files

    async def _sync_from_gallery(self, person_id: str) -> None:
        infos = await asyncio.to_thread(self.gallery.inventory, True)
        files = [(i.name, i.size, i.sha256) for i in infos.get(person_id, {}).values()]
        await self.catalog.sync_folder.remote(person_id, files)

    async def tasks_count(self, server_id: str) -> int:
        await self.start()
        self._known(server_id)
        return self.in_flight[server_id]

    async def check_dir(self, server_id: str, person_id: str) -> int:
        check_name(person_id, "dirName")
        await self.start()
        return await self._live(server_id).check_dir.remote(person_id)

    async def check_photo(self, server_id: str, person_id: str, photo: str,
                          checksum: bool) -> int | str:
        check_name(person_id, "dirname")
        check_name(photo, "photo")
        await self.start()
        info = await self._live(server_id).check_photo.remote(person_id, photo, checksum)
        return info.sha256 if checksum else 1

    async def remove_dir(self, server_id: str, person_id: str) -> int:
        """Remove a folder from the server (all folders when `person_id` is empty).

        The source gallery keeps its copy: the folder just becomes undistributed.
        """
        await self.start()
        shard = self._live(server_id)
        if person_id == "":
            removed = await shard.remove_all.remote()
            await self.catalog.clear_assignments.remote(server_id)
            await self.catalog.add_event.remote("dirs_removed_all", {"count": removed},
                                                server_id=server_id)
            return removed
        check_name(person_id, "dirname")
        removed = await shard.remove_dir.remote(person_id)
        assignment = (await self.catalog.get_assignments.remote()).get(person_id)
        if assignment and assignment["server_id"] == server_id:
            await self.catalog.delete_assignment.remote(person_id)
        await self.catalog.add_event.remote("dir_removed", server_id=server_id, dir=person_id)
        return removed

    # -- statistics -------------------------------------------------------------------------

    async def stats(self) -> dict:
        await self.start()
        stats = await self.catalog.stats.remote()
        shards = {}
        for server_id in self.participating_servers_now():
            try:
                shards[server_id] = await asyncio.wait_for(self.shards[server_id].ping.remote(), 5)
            except Exception:
                shards[server_id] = None
        stats["shards"] = shards
        stats["coordinator_lag_ms"] = self.lag.current_ms()
        stats["in_flight"] = dict(self.in_flight)
        return stats


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def _answer(decision, missing: list[str], *, reason: str | None = None,
            box: tuple | None = None) -> dict:
    if decision is None:
        return {"found": False, "faceId": None, "distance": None, "confidence": 0.0,
                "reason": reason, "candidates": [], "missingServers": missing, "box": box}
    return {
        "found": decision.found,
        "faceId": decision.person_id if decision.found else None,
        "distance": None if decision.distance is None else round(float(decision.distance), 6),
        "confidence": round(float(decision.confidence), 4),
        "reason": decision.reason,
        "candidates": [_candidate_json(c) for c in decision.candidates],
        "missingServers": missing,
        "box": list(box) if box else None,
    }
