"""The distributor actor: long admin jobs (load, distribute, check, heal) with progress."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

import ray
from ray.util import metrics

from facenet_ray.config import Settings
from facenet_ray.errors import BadRequest, FacenetError, InvalidName
from facenet_ray.names import check_name
from facenet_ray.placement import plan
from facenet_ray.runtime import LagMonitor, actor, freeze_startup_objects, shard_name
from facenet_ray.shard import background_priority
from facenet_ray.store import PhotoStore, sha256_bytes, sha256_file

log = logging.getLogger(__name__)

JOB_PROGRESS = metrics.Gauge(
    "facenet_job_progress", "Fraction of the running job done", tag_keys=("kind",)
)
INTEGRITY_ERRORS = metrics.Counter("facenet_integrity_errors_total", "Bad folders found")
EMPTY_FILES = metrics.Counter("facenet_empty_files_removed_total", "Empty files deleted")

SCAN_BATCH = 50  # folders hashed per catalog call during loadDirs
COPY_BATCH = 32  # folders per shard call: fewer round trips, still fine-grained progress
SHARD_CALL_SLICE_S = 10.0  # a shard call that takes longer is waited for while its server is up
SHARD_CALL_MAX_S = 3600.0  # ... but never longer than this
JOB_KINDS = ("loadDirs", "startAutoDistrib", "checkNetworkIntegrity", "runReDistribution", "heal")


class Progress:
    """Writes a job's progress to the catalog, at most every `every` items."""

    def __init__(self, catalog, job_id: str, total: int, every: int = 25, kind: str = "") -> None:
        self.catalog, self.job_id, self.total, self.every = catalog, job_id, total, every
        self.kind = kind
        self.done = 0

    async def start(self) -> None:
        await self.catalog.update_job.remote(self.job_id, done=0, total=self.total)

    async def step(self, n: int = 1) -> None:
        before = self.done // self.every
        self.done += n
        if self.done // self.every != before or self.done >= self.total:
            JOB_PROGRESS.set(self.done / max(1, self.total), tags={"kind": self.kind})
            await self.catalog.update_job.remote(self.job_id, done=self.done, total=self.total)


@ray.remote
class DistributorActor:
    """Runs jobs as asyncio tasks; the catalog holds each job's state, progress and result.

    File reads and hashing run in threads and every copy is awaited, so the actor's event loop
    (and the API) stays responsive however large the gallery is. One job of each kind runs at
    a time; a second request while one runs gets the running job's id.
    """

    def __init__(self, settings: Settings) -> None:
        background_priority(5)  # bulk copying yields the CPU to searches and the gateway
        self.settings = settings
        self.catalog = actor("catalog")
        self.gallery = PhotoStore(settings.gallery_dir or settings.data_dir / "gallery")
        self.running: dict[str, str] = {}  # kind -> job id
        self.tasks: set[asyncio.Task] = set()
        self.lag = LagMonitor()
        self.lock = None  # asyncio.Lock, created on the actor's loop
        # After a restart, mark the jobs the old process was running failed at once: nothing
        # else may call ready() for a long time. Ray runs an async actor's __init__ on its loop.
        self._spawn(self.ready())

    async def ready(self) -> bool:
        if self.lock is None:
            self.lock = asyncio.Lock()
            await self.catalog.fail_unfinished_jobs.remote("distributor restarted")
            freeze_startup_objects()
            self._spawn(self.lag.run())
        return True

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def lag_ms(self) -> float:
        return self.lag.current_ms()

    async def start_job(self, kind: str, params: dict | None = None) -> str:
        """Start a job in the background and return its id at once."""
        await self.ready()
        if kind not in JOB_KINDS:
            raise BadRequest(f"unknown job kind {kind!r}")
        params = params or {}
        if kind in self.running and kind != "heal":
            return self.running[kind]
        job_id = uuid.uuid4().hex
        await self.catalog.create_job.remote(job_id, kind, params)
        self.running[kind] = job_id
        runner: Callable[[str, dict], Awaitable[dict]] = {
            "loadDirs": self._load_dirs,
            "startAutoDistrib": self._auto_distrib,
            "checkNetworkIntegrity": self._check_integrity,
            "runReDistribution": self._redistribute,
            "heal": self._heal,
        }[kind]
        self._spawn(self._run(job_id, kind, runner, params))
        return job_id

    async def _run(self, job_id: str, kind: str, runner, params: dict) -> None:
        try:
            await self.catalog.update_job.remote(job_id, status="running")
            async with self.lock:  # jobs that move folders never interleave
                result = await runner(job_id, params)
            await self.catalog.update_job.remote(job_id, status="done", result=result)
            await self.catalog.add_event.remote(f"job_{kind}", {"job": job_id, **_summary(result)})
        except Exception as exc:
            log.exception("job %s (%s) failed", job_id, kind)
            detail = exc.detail if isinstance(exc, FacenetError) else repr(exc)
            await self.catalog.update_job.remote(job_id, status="failed", error=detail)
        finally:
            if self.running.get(kind) == job_id:
                del self.running[kind]

    async def wait(self, job_id: str, timeout_s: float = 300.0) -> dict:
        """Wait for a job to finish and return it (for the CLI and tests)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            job = await self.catalog.get_job.remote(job_id)
            if job["status"] in ("done", "failed") or asyncio.get_running_loop().time() > deadline:
                return job
            await asyncio.sleep(0.1)

    # -- loadDirs ---------------------------------------------------------------------------

    async def _load_dirs(self, job_id: str, params: dict) -> dict:
        """Scan the source gallery into the catalog: new, changed and removed folders and files."""
        root = self.gallery.root
        empty = await asyncio.to_thread(self.gallery.purge_empty)
        for person_id, photo in empty:
            await self.catalog.add_event.remote(
                "empty_file_removed", {"photo": photo, "where": "gallery"}, dir=person_id
            )
        entries = sorted(
            p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        skipped = []
        folders = []
        for name in entries:
            try:
                folders.append(check_name(name))
            except InvalidName as exc:
                skipped.append({"dir": name, "problem": exc.detail})
        progress = Progress(self.catalog, job_id, len(folders), kind="loadDirs")
        await progress.start()
        totals = {"added": 0, "changed": 0, "removed": 0}
        for i in range(0, len(folders), SCAN_BATCH):
            chunk = folders[i:i + SCAN_BATCH]
            scanned = await asyncio.to_thread(
                lambda chunk=chunk: [(f, self._scan_folder(f)) for f in chunk]
            )
            change = await self.catalog.sync_folders.remote(scanned)
            for key in totals:
                totals[key] += change[key]
            await progress.step(len(chunk))
        known = set(await self.catalog.list_folders.remote())
        gone = sorted(known - set(folders))
        assignments = await self.catalog.get_assignments.remote()
        for person_id in gone:
            server = assignments.get(person_id, {}).get("server_id")
            if server:
                await self._try_shard(server, "remove_dir", person_id)
            await self.catalog.remove_folder.remote(person_id)
        return {
            "folders": len(folders), "files": totals, "foldersRemoved": len(gone),
            "emptyFilesRemoved": len(empty), "skipped": skipped,
        }

    def _scan_folder(self, person_id: str) -> list[tuple[str, int, str]]:
        return [
            (info.name, info.size, sha256_file(self.gallery.photo_path(person_id, info.name)))
            for info in self.gallery.list_photos(person_id)
        ]

    # -- startAutoDistrib -------------------------------------------------------------------

    async def _auto_distrib(self, job_id: str, params: dict) -> dict:
        """Assign every undistributed folder by CPU weight and copy it; confirm each checksum."""
        weights = await actor("coordinator").weights.remote()
        assignments = await self.catalog.get_assignments.remote()
        folders = [
            f for f in await self.catalog.list_folders.remote()
            if assignments.get(f, {}).get("state") != "distributed"
        ]
        if not folders:
            return {"distributed": 0, "failed": [], "servers": {}}
        placement = plan(folders, weights)
        await self.catalog.set_assignments.remote(
            [(f, placement[f], "copying") for f in folders]
        )
        # A folder that moves leaves its old (live) server once its new copy is confirmed.
        previous = {f: assignments[f]["server_id"] for f in folders if f in assignments}
        return await self._copy_all(job_id, placement, previous)

    async def _copy_all(self, job_id: str, placement: dict[str, str],
                        previous: dict[str, str] | None = None) -> dict:
        """Copy folders to their servers in batches, a bounded number of batches at a time."""
        previous = previous or {}
        expected = await self.catalog.files_of.remote(sorted(placement))
        progress = Progress(self.catalog, job_id, len(placement), kind="distribute")
        await progress.start()
        gate = asyncio.Semaphore(self.settings.copy_concurrency)
        failed: list[dict] = []
        per_server: dict[str, int] = {}

        async def copy(server_id: str, folders: list[str]) -> None:
            async with gate:
                problems = await self._copy_folders(
                    server_id, {f: expected.get(f, []) for f in folders}
                )
            await self.catalog.set_assignments.remote([
                (f, server_id, "distributed" if problems[f] is None else "failed")
                for f in folders
            ])
            for person_id in folders:
                if problems[person_id] is not None:
                    failed.append(
                        {"dir": person_id, "server": server_id, "problem": problems[person_id]}
                    )
                    continue
                per_server[server_id] = per_server.get(server_id, 0) + 1
                old = previous.get(person_id)
                if old and old != server_id:  # it moved: the old copy goes once the new is sure
                    await self._try_shard(old, "remove_dir", person_id)
            await progress.step(len(folders))

        by_server: dict[str, list[str]] = {}
        for person_id, server_id in sorted(placement.items()):
            by_server.setdefault(server_id, []).append(person_id)
        await asyncio.gather(*(
            copy(server_id, folders[i:i + COPY_BATCH])
            for server_id, folders in by_server.items()
            for i in range(0, len(folders), COPY_BATCH)
        ))
        return {"distributed": sum(per_server.values()), "failed": failed, "servers": per_server}

    async def _copy_folders(
        self, server_id: str, expected: dict[str, list[dict]]
    ) -> dict[str, str | None]:
        """Copy folders from the source gallery to one server in one call.

        Returns each folder's problem, or None when the server confirmed every file's sha256.
        """
        problems: dict[str, str | None] = {}
        wanted = {d: {f["name"]: f["sha256"] for f in files} for d, files in expected.items()}
        payload, unreadable = await asyncio.to_thread(self._read_folders, wanted)
        problems.update(unreadable)
        try:
            written = await asyncio.wait_for(
                actor(shard_name(server_id)).put_folders.remote(payload),
                self.settings.search_timeout_s * 12,
            )
        except Exception as exc:
            detail = exc.detail if isinstance(exc, FacenetError) else f"copy failed: {exc!r}"
            return {**problems, **{d: detail for d, _ in payload}}
        for person_id, infos in written.items():
            if isinstance(infos, str):
                problems[person_id] = infos
            elif {i.name: i.sha256 for i in infos} != wanted[person_id]:
                problems[person_id] = "server confirmed different checksums"
            else:
                problems[person_id] = None
        return problems

    async def _copy_folder(self, person_id: str, server_id: str) -> str | None:
        files = await self.catalog.files_of.remote([person_id])
        return (await self._copy_folders(server_id, {person_id: files.get(person_id, [])}))[
            person_id
        ]

    def _read_folders(
        self, wanted: dict[str, dict[str, str]]
    ) -> tuple[list[tuple[str, list[tuple[str, bytes, str]]]], dict[str, str]]:
        """Read and re-hash source photos; a photo changed since loadDirs fails its folder."""
        payload, problems = [], {}
        for person_id, names in wanted.items():
            try:
                files = []
                for name, digest in names.items():
                    data = self.gallery.photo_path(person_id, name).read_bytes()
                    if sha256_bytes(data) != digest:
                        raise BadRequest(f"source photo {name} changed since loadDirs")
                    files.append((name, data, digest))
                payload.append((person_id, files))
            except (OSError, FacenetError) as exc:
                problems[person_id] = getattr(exc, "detail", None) or f"cannot read: {exc}"
        return payload, problems

    async def _try_shard(self, server_id: str, method: str, *args):
        """A shard call's answer, or None when it failed or its server went down meanwhile.

        A long call (a full inventory hashes every file, remove_all of a large shard) is waited
        for as long as the heartbeat keeps its server up, not cut at a fixed time: a slow
        server is not a dead one. SHARD_CALL_MAX_S bounds a call that never returns.
        """
        started = asyncio.get_running_loop().time()
        try:
            shard = actor(shard_name(server_id))
            call = asyncio.ensure_future(getattr(shard, method).remote(*args))
        except Exception as exc:
            log.warning("%s on %s failed: %r", method, server_id, exc)
            return None
        try:
            while True:
                done, _ = await asyncio.wait({call}, timeout=SHARD_CALL_SLICE_S)
                if done:
                    return call.result()
                up = await actor("coordinator").participating_servers.remote()
                waited = asyncio.get_running_loop().time() - started
                if server_id not in up or waited > SHARD_CALL_MAX_S:
                    log.warning("%s on %s: no answer after %.0f s (server %s)", method,
                                server_id, waited, "up" if server_id in up else "down")
                    return None
        except Exception as exc:
            log.warning("%s on %s failed: %r", method, server_id, exc)
            return None
        finally:
            call.cancel()

    # -- heal, redistribute -----------------------------------------------------------------

    async def _heal(self, job_id: str, params: dict) -> dict:
        """Move a down server's folders to the live servers (only those folders move)."""
        server_id = params["server"]
        weights = await actor("coordinator").weights.remote()
        weights.pop(server_id, None)
        folders = await self.catalog.assignments_of.remote(server_id)
        if not folders:
            return {"server": server_id, "moved": 0, "failed": []}
        placement = plan(folders, weights)
        await self.catalog.set_assignments.remote([(f, placement[f], "copying") for f in folders])
        result = await self._copy_all(job_id, placement)
        return {"server": server_id, "moved": result["distributed"], "failed": result["failed"]}

    async def _redistribute(self, job_id: str, params: dict) -> dict:
        """Full redistribution as the seed defines it: remove everything, then distribute."""
        # The catalog stops calling any folder distributed before a single one is removed: a
        # redistribution cut short (the distributor killed) then leaves folders for the next
        # startAutoDistrib, never assignments to folders that are gone.
        assignments = await self.catalog.get_assignments.remote()
        await self.catalog.set_assignments.remote(
            [(f, a["server_id"], "assigned") for f, a in assignments.items()]
        )
        removed = {}
        for server_id in await actor("coordinator").participating_servers.remote():
            removed[server_id] = await self._try_shard(server_id, "remove_all")
        await self.catalog.clear_assignments.remote(None)
        result = await self._auto_distrib(job_id, params)
        return {"removed": removed, **result}

    # -- integrity --------------------------------------------------------------------------

    async def check_distribution(self) -> dict:
        """The catalog's distributed folders against the folders present on each server."""
        assignments = await self.catalog.get_assignments.remote()
        expected = {(a["server_id"], f) for f, a in assignments.items()
                    if a["state"] == "distributed"}
        present = set()
        for server_id in await actor("coordinator").participating_servers.remote():
            dirs = await self._try_shard(server_id, "list_dirs")
            present |= {(server_id, d) for d in dirs or []}
        return {
            "expected": len(expected),
            "present": len(present & expected),
            "missing": [{"server": s, "dir": d} for s, d in sorted(expected - present)],
            "unexpected": [{"server": s, "dir": d} for s, d in sorted(present - expected)],
        }

    async def _check_integrity(self, job_id: str, params: dict) -> dict:
        """Compare every server's files with the catalog; one error per bad folder."""
        full, fix = bool(params.get("fullCheck")), bool(params.get("fixErrors"))
        assignments = await self.catalog.get_assignments.remote()
        servers = await actor("coordinator").participating_servers.remote()
        progress = Progress(
            self.catalog, job_id, len(servers), every=1, kind="checkNetworkIntegrity"
        )
        await progress.start()
        problems: dict[tuple[str, str], list[str]] = {}
        empty_removed = 0
        missing: list[str] = []  # servers that did not answer: their folders are unchecked
        for server_id in servers:
            answer = await self._try_shard(server_id, "inventory", full)
            if answer is None:  # it went down meanwhile (heal covers its folders), or is stuck
                missing.append(server_id)
                await progress.step()
                continue
            inventory, empty = answer
            empty_removed += len(empty)
            for person_id, photo in empty:
                await self.catalog.add_event.remote(
                    "empty_file_removed", {"photo": photo}, server_id=server_id, dir=person_id
                )
            mine = {f for f, a in assignments.items()
                    if a["server_id"] == server_id and a["state"] == "distributed"}
            expected = await self.catalog.files_of.remote(sorted(mine))  # one call a server
            for person_id in sorted(mine | set(inventory)):
                found = _folder_problems(
                    expected.get(person_id) if person_id in mine else None,
                    inventory.get(person_id), full,
                )
                if found:
                    problems[(server_id, person_id)] = found
            await progress.step()
        fixed = 0
        if fix:
            for (server_id, person_id), found in problems.items():
                if found == ["unexpected folder"]:
                    ok = await self._try_shard(server_id, "remove_dir", person_id) is not None
                else:
                    ok = await self._copy_folder(person_id, server_id) is None
                fixed += ok
        await self.catalog.add_event.remote(
            "integrity_check", {"errors": len(problems), "fixed": fixed, "full": full}
        )
        if problems:
            INTEGRITY_ERRORS.inc(len(problems))
        if empty_removed:
            EMPTY_FILES.inc(empty_removed)
        return {
            "errors": len(problems), "fixed": fixed, "emptyFilesRemoved": empty_removed,
            "folders": [{"server": s, "dir": d, "problems": p} for (s, d), p in problems.items()],
            "missingServers": missing,
        }

def _folder_problems(files: list[dict] | None, present: dict | None, full: bool) -> list[str]:
    """What is wrong with one folder on a server: `files` are the catalog's (None when the
    folder is not assigned there), `present` the server's inventory of it (None: absent)."""
    if files is None:
        return ["unexpected folder"]
    if present is None:
        return ["folder missing"]
    found = []
    for f in files:
        info = present.get(f["name"])
        if info is None:
            found.append(f"missing: {f['name']}")
        elif info.size != f["size"]:
            found.append(f"wrong size: {f['name']}")
        elif full and info.sha256 != f["sha256"]:
            found.append(f"wrong checksum: {f['name']}")
    expected = {f["name"] for f in files}
    found += [f"unexpected file: {name}" for name in sorted(set(present) - expected)]
    return found


def _summary(result: dict) -> dict:
    """The scalar part of a job result, for the event log."""
    return {k: v for k, v in result.items() if isinstance(v, (int, float, str))}
