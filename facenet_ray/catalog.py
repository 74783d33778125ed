"""The catalog: one DuckDB file holding persons, gallery folders and files, servers,
assignments, heartbeats, tasks, jobs, API keys and events.

`Catalog` is a plain class over one DuckDB connection. It is not thread-safe: exactly one
owner (the `catalog` Ray actor, which runs one call at a time) serialises every call.
Every value reaches SQL as a bound parameter; ids are stored verbatim, whatever they look
like. Methods return plain Python values (dicts, lists, ints, str) so they cross Ray.
Timestamps are epoch seconds (DOUBLE); JSON columns hold `json.dumps` text.
Committed writes survive the process being killed (DuckDB's write-ahead log); `close()`
checkpoints the log into the database file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from facenet_ray.errors import BadRequest, Conflict, NotFound

SCHEMA_VERSION = 1

ASSIGNMENT_STATES = ("assigned", "copying", "distributed", "failed")
# "joined": a pending (addServer) record whose Ray node has since joined.
SERVER_STATUSES = ("active", "pending", "down", "joined")
RUN_STATUSES = ("queued", "running", "done", "failed")  # of tasks and of jobs
UNFINISHED = ("queued", "running")

# Event kinds that stats() counts; other kinds are free-form.
INTEGRITY_ERROR = "integrity_error"  # one event per bad folder
EMPTY_FILE_REMOVED = "empty_file_removed"  # detail {"count": n}; an event without count is 1

HEARTBEAT_RETENTION_S = 86400.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS persons (
    person_id VARCHAR PRIMARY KEY,
    info VARCHAR NOT NULL,
    updated_at DOUBLE NOT NULL
);
CREATE TABLE IF NOT EXISTS folders (
    dir VARCHAR PRIMARY KEY,
    created_at DOUBLE NOT NULL,
    synced_at DOUBLE            -- last seen in the source gallery; NULL if only added via the API
);
CREATE TABLE IF NOT EXISTS files (
    dir VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    size BIGINT NOT NULL,
    sha256 VARCHAR,
    PRIMARY KEY (dir, name)
);
CREATE TABLE IF NOT EXISTS assignments (
    dir VARCHAR PRIMARY KEY,
    server_id VARCHAR NOT NULL,
    state VARCHAR NOT NULL,
    updated_at DOUBLE NOT NULL
);
CREATE TABLE IF NOT EXISTS servers (
    server_id VARCHAR PRIMARY KEY,
    node_id VARCHAR,
    ip VARCHAR,
    port INTEGER,
    cpu_count INTEGER NOT NULL,
    status VARCHAR NOT NULL,
    grp VARCHAR,
    last_seen DOUBLE,
    latency_ms DOUBLE,
    registered_at DOUBLE NOT NULL
);
CREATE TABLE IF NOT EXISTS heartbeats (
    ts DOUBLE NOT NULL,
    server_id VARCHAR NOT NULL,
    ok BOOLEAN NOT NULL,
    latency_ms DOUBLE
);
CREATE TABLE IF NOT EXISTS tasks (
    task_id VARCHAR PRIMARY KEY,
    kind VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    created_at DOUBLE NOT NULL,
    finished_at DOUBLE,
    servers VARCHAR NOT NULL,
    result VARCHAR,
    timings VARCHAR,
    error VARCHAR
);
CREATE SEQUENCE IF NOT EXISTS worker_result_seq;
CREATE TABLE IF NOT EXISTS worker_results (
    seq BIGINT NOT NULL DEFAULT nextval('worker_result_seq'),
    task_id VARCHAR NOT NULL,
    ts DOUBLE NOT NULL,
    found BOOLEAN NOT NULL,
    face_id VARCHAR
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id VARCHAR PRIMARY KEY,
    kind VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    params VARCHAR NOT NULL,
    done BIGINT NOT NULL DEFAULT 0,
    total BIGINT NOT NULL DEFAULT 0,
    result VARCHAR,
    error VARCHAR,
    created_at DOUBLE NOT NULL,
    updated_at DOUBLE NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id VARCHAR PRIMARY KEY,
    key_hash VARCHAR NOT NULL UNIQUE,
    role VARCHAR NOT NULL,
    created_at DOUBLE NOT NULL,
    revoked_at DOUBLE
);
CREATE SEQUENCE IF NOT EXISTS event_seq;
CREATE TABLE IF NOT EXISTS events (
    id BIGINT NOT NULL DEFAULT nextval('event_seq'),
    ts DOUBLE NOT NULL,
    kind VARCHAR NOT NULL,
    server_id VARCHAR,
    dir VARCHAR,
    detail VARCHAR
);
"""

_SERVER_COLUMNS = """
    s.server_id, s.node_id, s.ip, s.port, s.cpu_count, s.status, s.grp, s.last_seen,
    s.latency_ms, s.registered_at,
    (SELECT count(*) FROM assignments a WHERE a.server_id = s.server_id) AS dirs_count
"""
_TASK_COLUMNS = "task_id, kind, status, created_at, finished_at, servers, result, timings, error"
_JOB_COLUMNS = "job_id, kind, status, params, done, total, result, error, created_at, updated_at"


def _dumps(value: Any) -> str | None:
    """JSON text of a value for a JSON column; None stays SQL NULL."""
    return None if value is None else json.dumps(value)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _check(value: str, allowed: Sequence[str], what: str) -> None:
    if value not in allowed:
        raise BadRequest(f"{what} must be one of {', '.join(allowed)}; got {value!r}")


class Catalog:
    """The service's DuckDB catalog. One owner, one call at a time (see the module doc)."""

    def __init__(self, path: Path | str, *, clock: Callable[[], float] = time.time) -> None:
        """Open (creating if needed) the catalog at `path`; `clock` gives epoch seconds."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._con = duckdb.connect(str(self.path))
        try:
            with self._transaction():
                self._con.execute(_SCHEMA)
                self._con.execute(
                    "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT DO NOTHING",
                    [str(SCHEMA_VERSION)],
                )
                found = self.schema_version
                if found != SCHEMA_VERSION:  # raising rolls the CREATEs above back
                    raise RuntimeError(
                        f"{self.path} holds catalog schema {found}; "
                        f"this facenet_ray reads schema {SCHEMA_VERSION}"
                    )
        except BaseException:
            self._con.close()
            raise

    @property
    def schema_version(self) -> int:
        row = self._con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Checkpoint the write-ahead log into the file and close the connection."""
        self._con.execute("CHECKPOINT")
        self._con.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self._con.execute(sql, params)
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    def _count(self, sql: str, params: Sequence[Any] = ()) -> int:
        """The single number a statement returns: rows changed by DML, or a count(*)."""
        return int(self._con.execute(sql, params).fetchone()[0])

    # -- persons -----------------------------------------------------------------------

    def get_person(self, person_id: str) -> dict:
        row = self._con.execute(
            "SELECT info FROM persons WHERE person_id = ?", [person_id]
        ).fetchone()
        if row is None:
            raise NotFound(f"no person {person_id!r}")
        return _loads(row[0])

    def put_person(self, person_id: str, info: dict) -> None:
        self._con.execute(
            "INSERT INTO persons VALUES (?, ?, ?) ON CONFLICT (person_id) "
            "DO UPDATE SET info = excluded.info, updated_at = excluded.updated_at",
            [person_id, _dumps(info), self._clock()],
        )

    def delete_person(self, person_id: str) -> None:
        if not self._count("DELETE FROM persons WHERE person_id = ?", [person_id]):
            raise NotFound(f"no person {person_id!r}")

    # -- source gallery folders and files ----------------------------------------------

    def sync_folder(self, dir: str, files: Sequence[tuple[str, int, str]]) -> dict[str, int]:
        """Replace `dir`'s file list with `files` [(name, size, sha256)], as found in the gallery.

        Returns {"added", "changed", "removed"} file counts. A changed folder that was
        distributed goes back to 'assigned', so that distribution copies it again.
        """
        return self.sync_folders([(dir, files)])

    def sync_folders(
        self, batch: Sequence[tuple[str, Sequence[tuple[str, int, str]]]]
    ) -> dict[str, int]:
        """sync_folder for many folders in one transaction; returns the summed counts.

        Set-based (a handful of statements for the whole batch, not per folder): a gallery of
        10,000 folders is loaded in seconds, not minutes. A folder named twice: the last wins.
        """
        totals = {"added": 0, "changed": 0, "removed": 0}
        wanted = {dir: {name: (size, sha256) for name, size, sha256 in files}
                  for dir, files in batch}
        if not wanted:
            return totals
        now = self._clock()
        with self._transaction():
            old: dict[str, dict[str, tuple[int, str]]] = {dir: {} for dir in wanted}
            for dir, name, size, sha256 in self._con.execute(
                "SELECT dir, name, size, sha256 FROM files "
                "WHERE dir IN (SELECT unnest(?::VARCHAR[]))", [list(wanted)]
            ).fetchall():
                old[dir][name] = (size, sha256)
            changed = []
            for dir, new in wanted.items():
                before = old[dir]
                counts = {
                    "added": sum(1 for name in new if name not in before),
                    "changed": sum(1 for name, v in new.items() if before.get(name, v) != v),
                    "removed": sum(1 for name in before if name not in new),
                }
                for key, n in counts.items():
                    totals[key] += n
                if any(counts.values()):
                    changed.append(dir)
            self._con.execute(
                "INSERT INTO folders SELECT unnest($1::VARCHAR[]), $2, $2 "
                "ON CONFLICT (dir) DO UPDATE SET synced_at = excluded.synced_at",
                [list(wanted), now],
            )
            if changed:
                self._con.execute(
                    "DELETE FROM files WHERE dir IN (SELECT unnest(?::VARCHAR[]))", [changed]
                )
                rows = [(dir, name, size, sha256) for dir in changed
                        for name, (size, sha256) in wanted[dir].items()]
                if rows:
                    self._con.execute(
                        "INSERT INTO files SELECT unnest($1::VARCHAR[]), unnest($2::VARCHAR[]), "
                        "unnest($3::BIGINT[]), unnest($4::VARCHAR[])",
                        [list(column) for column in zip(*rows, strict=True)],
                    )
                self._con.execute(
                    "UPDATE assignments SET state = 'assigned', updated_at = ? "
                    "WHERE dir IN (SELECT unnest(?::VARCHAR[])) AND state = 'distributed'",
                    [now, changed],
                )
        return totals

    def remove_folder(self, dir: str) -> None:
        """Forget a folder: its files and its assignment too. NotFound if unknown."""
        with self._transaction():
            if not self._count("DELETE FROM folders WHERE dir = ?", [dir]):
                raise NotFound(f"no folder {dir!r} in the catalog")
            self._con.execute("DELETE FROM files WHERE dir = ?", [dir])
            self._con.execute("DELETE FROM assignments WHERE dir = ?", [dir])

    def list_folders(self) -> list[str]:
        return [
            row[0] for row in self._con.execute("SELECT dir FROM folders ORDER BY dir").fetchall()
        ]

    def folder_files(self, dir: str) -> list[dict]:
        """[{name, size, sha256}] sorted by name. NotFound if the folder is unknown."""
        if not self._count("SELECT count(*) FROM folders WHERE dir = ?", [dir]):
            raise NotFound(f"no folder {dir!r} in the catalog")
        return self._rows("SELECT name, size, sha256 FROM files WHERE dir = ? ORDER BY name", [dir])

    def files_of(self, dirs: Sequence[str]) -> dict[str, list[dict]]:
        """{dir: [{name, size, sha256}]} for many folders in one call (unknown folders omitted)."""
        rows = self._con.execute(
            "SELECT f.dir, x.name, x.size, x.sha256 FROM folders f "
            "LEFT JOIN files x ON x.dir = f.dir WHERE f.dir IN (SELECT unnest(?::VARCHAR[])) "
            "ORDER BY f.dir, x.name",
            [list(dirs)],
        ).fetchall()
        out: dict[str, list[dict]] = {}
        for dir, name, size, sha256 in rows:
            files = out.setdefault(dir, [])
            if name is not None:
                files.append({"name": name, "size": size, "sha256": sha256})
        return out

    def folder_sizes(self) -> dict[str, dict[str, int]]:
        """Every folder -> {"files": n, "bytes": n} (empty folders included)."""
        rows = self._con.execute(
            "SELECT f.dir, count(x.name), coalesce(sum(x.size), 0) "
            "FROM folders f LEFT JOIN files x ON x.dir = f.dir GROUP BY f.dir"
        ).fetchall()
        return {dir: {"files": int(n), "bytes": int(size)} for dir, n, size in rows}

    def dirs_count(self) -> int:
        return self._count("SELECT count(*) FROM folders")

    def add_file(self, dir: str, name: str, size: int, sha256: str) -> None:
        """Record one file (a photo added through the API); creates the folder if needed."""
        with self._transaction():
            self._con.execute(
                "INSERT INTO folders VALUES (?, ?, NULL) ON CONFLICT DO NOTHING",
                [dir, self._clock()],
            )
            self._con.execute(
                "INSERT INTO files VALUES (?, ?, ?, ?) ON CONFLICT (dir, name) "
                "DO UPDATE SET size = excluded.size, sha256 = excluded.sha256",
                [dir, name, size, sha256],
            )

    def remove_file(self, dir: str, name: str) -> None:
        """Forget one file; its folder stays. NotFound if unknown."""
        if not self._count("DELETE FROM files WHERE dir = ? AND name = ?", [dir, name]):
            raise NotFound(f"no file {name!r} in folder {dir!r}")

    # -- assignments -------------------------------------------------------------------

    def set_assignment(self, dir: str, server_id: str, state: str) -> None:
        self.set_assignments([(dir, server_id, state)])

    def set_assignments(self, rows: Sequence[tuple[str, str, str]]) -> None:
        """Upsert many (dir, server_id, state) in one statement; a later row for a dir wins."""
        latest = {dir: (server_id, state) for dir, server_id, state in rows}
        for _, state in latest.values():
            _check(state, ASSIGNMENT_STATES, "assignment state")
        if not latest:
            return
        self._con.execute(
            "INSERT INTO assignments SELECT unnest($1::VARCHAR[]), unnest($2::VARCHAR[]), "
            "unnest($3::VARCHAR[]), $4 ON CONFLICT (dir) DO UPDATE SET server_id = "
            "excluded.server_id, state = excluded.state, updated_at = excluded.updated_at",
            [
                list(latest),
                [s for s, _ in latest.values()],
                [state for _, state in latest.values()],
                self._clock(),
            ],
        )

    def get_assignments(self) -> dict[str, dict[str, str]]:
        """Every assigned folder -> {"server_id", "state"}."""
        rows = self._con.execute("SELECT dir, server_id, state FROM assignments").fetchall()
        return {dir: {"server_id": server_id, "state": state} for dir, server_id, state in rows}

    def clear_assignments(self, server_id: str | None = None) -> int:
        """Drop the assignments of one server (or of all when None); returns how many."""
        if server_id is None:
            return self._count("DELETE FROM assignments")
        return self._count("DELETE FROM assignments WHERE server_id = ?", [server_id])

    def delete_assignment(self, dir: str) -> None:
        """Forget where one folder lives (it becomes undistributed)."""
        self._con.execute("DELETE FROM assignments WHERE dir = ?", [dir])

    def count_folders(self, distributed: bool) -> int:
        """Folders whose assignment is 'distributed', or (False) every other folder."""
        n = self._count(
            "SELECT count(*) FROM folders f JOIN assignments a ON a.dir = f.dir "
            "WHERE a.state = 'distributed'"
        )
        return n if distributed else self.dirs_count() - n

    def assignments_of(self, server_id: str) -> list[str]:
        """The folders assigned to a server, sorted."""
        rows = self._con.execute(
            "SELECT dir FROM assignments WHERE server_id = ? ORDER BY dir", [server_id]
        ).fetchall()
        return [row[0] for row in rows]

    # -- servers -----------------------------------------------------------------------

    def upsert_server(
        self,
        server_id: str,
        *,
        node_id: str | None,
        ip: str | None,
        port: int | None,
        cpu_count: int,
        status: str,
        grp: str | None = None,
    ) -> None:
        """Create or update a server record; `registered_at` is kept from the first call."""
        _check(status, SERVER_STATUSES, "server status")
        self._con.execute(
            "INSERT INTO servers VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?) "
            "ON CONFLICT (server_id) DO UPDATE SET node_id = excluded.node_id, ip = excluded.ip, "
            "port = excluded.port, cpu_count = excluded.cpu_count, status = excluded.status, "
            "grp = excluded.grp",
            [server_id, node_id, ip, port, cpu_count, status, grp, self._clock()],
        )

    def list_servers(self) -> list[dict]:
        """Every server, sorted by id, with `dirs_count` = folders assigned to it."""
        return self._rows(f"SELECT {_SERVER_COLUMNS} FROM servers s ORDER BY s.server_id")

    def get_server(self, server_id: str) -> dict:
        rows = self._rows(
            f"SELECT {_SERVER_COLUMNS} FROM servers s WHERE s.server_id = ?", [server_id]
        )
        if not rows:
            raise NotFound(f"no server {server_id!r}")
        return rows[0]

    def set_server_status(self, server_id: str, status: str) -> None:
        _check(status, SERVER_STATUSES, "server status")
        if not self._count(
            "UPDATE servers SET status = ? WHERE server_id = ?", [status, server_id]
        ):
            raise NotFound(f"no server {server_id!r}")

    def record_heartbeats(self, beats: Sequence[tuple[str, bool, float | None]]) -> None:
        """Log one round of heartbeats [(server_id, ok, latency_ms)].

        Answering servers get `last_seen` and `latency_ms` updated; every beat is kept in
        `heartbeats` for statistics, for one day.
        """
        if not beats:
            return
        now = self._clock()
        ids = [server_id for server_id, _, _ in beats]
        oks = [bool(ok) for _, ok, _ in beats]
        latencies = [latency for _, _, latency in beats]
        with self._transaction():
            self._con.execute(
                "INSERT INTO heartbeats SELECT $1, unnest($2::VARCHAR[]), unnest($3::BOOLEAN[]), "
                "unnest($4::DOUBLE[])",
                [now, ids, oks, latencies],
            )
            self._con.execute(
                "UPDATE servers SET last_seen = $1, latency_ms = b.latency_ms FROM ("
                "SELECT unnest($2::VARCHAR[]) AS server_id, unnest($3::BOOLEAN[]) AS ok, "
                "unnest($4::DOUBLE[]) AS latency_ms) b "
                "WHERE b.ok AND servers.server_id = b.server_id",
                [now, ids, oks, latencies],
            )
            self._con.execute("DELETE FROM heartbeats WHERE ts < ?", [now - HEARTBEAT_RETENTION_S])

    # -- search tasks ------------------------------------------------------------------

    def create_task(self, task_id: str, servers: Sequence[str], kind: str = "search") -> None:
        """A new task, 'queued', to be searched on `servers`. Conflict if the id exists."""
        try:
            self._con.execute(
                "INSERT INTO tasks (task_id, kind, status, created_at, servers) "
                "VALUES (?, ?, 'queued', ?, ?)",
                [task_id, kind, self._clock(), _dumps(list(servers))],
            )
        except duckdb.ConstraintException as exc:
            raise Conflict(f"task {task_id!r} exists") from exc

    def update_task(
        self,
        task_id: str,
        *,
        status: str,
        result: dict | None = None,
        timings: dict | None = None,
        error: str | None = None,
    ) -> None:
        """Set a task's status (done/failed stamp finished_at) and any result, timings, error."""
        _check(status, RUN_STATUSES, "task status")
        finished_at = None if status in UNFINISHED else self._clock()
        if not self._count(
            "UPDATE tasks SET status = ?, finished_at = coalesce(?, finished_at), "
            "result = coalesce(?, result), timings = coalesce(?, timings), "
            "error = coalesce(?, error) WHERE task_id = ?",
            [status, finished_at, _dumps(result), _dumps(timings), error, task_id],
        ):
            raise NotFound(f"no task {task_id!r}")

    def get_task(self, task_id: str) -> dict:
        """The task with its `servers`, `result`, `timings` parsed and its `worker_results`."""
        rows = self._rows(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE task_id = ?", [task_id])
        if not rows:
            raise NotFound(f"no task {task_id!r}")
        task = rows[0]
        for column in ("servers", "result", "timings"):
            task[column] = _loads(task[column])
        task["worker_results"] = self._rows(
            "SELECT found, face_id, ts FROM worker_results WHERE task_id = ? ORDER BY seq",
            [task_id],
        )
        return task

    def record_worker_result(self, task_id: str, found: bool, face_id: str | None) -> None:
        """Append a worker's answer (the `/taskResult` route) to a task. NotFound if unknown."""
        with self._transaction():
            if not self._count("SELECT count(*) FROM tasks WHERE task_id = ?", [task_id]):
                raise NotFound(f"no task {task_id!r}")
            self._con.execute(
                "INSERT INTO worker_results (task_id, ts, found, face_id) VALUES (?, ?, ?, ?)",
                [task_id, self._clock(), bool(found), face_id],
            )

    def fail_unfinished_tasks(self, reason: str) -> int:
        """Mark queued/running tasks failed with `reason` (at startup after a crash)."""
        return self._count(
            "UPDATE tasks SET status = 'failed', error = ?, finished_at = ? "
            "WHERE status IN ('queued', 'running')",
            [reason, self._clock()],
        )

    # -- jobs --------------------------------------------------------------------------

    def create_job(self, job_id: str, kind: str, params: dict) -> None:
        """A new job, 'queued', with progress 0/0. Conflict if the id exists."""
        now = self._clock()
        try:
            self._con.execute(
                "INSERT INTO jobs (job_id, kind, status, params, created_at, updated_at) "
                "VALUES (?, ?, 'queued', ?, ?, ?)",
                [job_id, kind, _dumps(params), now, now],
            )
        except duckdb.ConstraintException as exc:
            raise Conflict(f"job {job_id!r} exists") from exc

    def update_job(
        self,
        job_id: str,
        *,
        status: str | None = None,
        done: int | None = None,
        total: int | None = None,
        result: Any = None,
        error: str | None = None,
    ) -> None:
        """Change the fields given (None leaves a field as it is). NotFound if unknown."""
        if status is not None:
            _check(status, RUN_STATUSES, "job status")
        if not self._count(
            "UPDATE jobs SET status = coalesce(?, status), done = coalesce(?, done), "
            "total = coalesce(?, total), result = coalesce(?, result), "
            "error = coalesce(?, error), updated_at = ? WHERE job_id = ?",
            [status, done, total, _dumps(result), error, self._clock(), job_id],
        ):
            raise NotFound(f"no job {job_id!r}")

    def get_job(self, job_id: str) -> dict:
        rows = self._rows(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?", [job_id])
        if not rows:
            raise NotFound(f"no job {job_id!r}")
        return self._job(rows[0])

    def list_jobs(self, limit: int = 50) -> list[dict]:
        """The latest `limit` jobs, newest first."""
        rows = self._rows(
            f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY created_at DESC, job_id LIMIT ?", [limit]
        )
        return [self._job(row) for row in rows]

    @staticmethod
    def _job(row: dict) -> dict:
        row["params"] = _loads(row["params"])
        row["result"] = _loads(row["result"])
        row["progress"] = {"done": row.pop("done"), "total": row.pop("total")}
        return row

    def fail_unfinished_jobs(self, reason: str) -> int:
        """Mark queued/running jobs failed with `reason` (at startup after a crash)."""
        return self._count(
            "UPDATE jobs SET status = 'failed', error = ?, updated_at = ? "
            "WHERE status IN ('queued', 'running')",
            [reason, self._clock()],
        )

    # -- API keys ----------------------------------------------------------------------

    def add_key(self, key_id: str, key_hash: str, role: str) -> None:
        """Store a key by its hash. Conflict if the id or the hash is already stored."""
        try:
            self._con.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, NULL)",
                [key_id, key_hash, role, self._clock()],
            )
        except duckdb.ConstraintException as exc:
            raise Conflict(f"key {key_id!r} or its hash exists") from exc

    def find_key(self, key_hash: str) -> dict | None:
        """{key_id, role} of the non-revoked key with this hash, else None."""
        rows = self._rows(
            "SELECT key_id, role FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
            [key_hash],
        )
        return rows[0] if rows else None

    def revoke_key(self, key_id: str) -> None:
        """Revoke a key (revoking twice keeps the first time). NotFound if unknown."""
        if not self._count(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE key_id = ?",
            [self._clock(), key_id],
        ):
            raise NotFound(f"no key {key_id!r}")

    def list_keys(self) -> list[dict]:
        """Every key without its hash: {key_id, role, created_at, revoked_at}."""
        return self._rows(
            "SELECT key_id, role, created_at, revoked_at FROM api_keys ORDER BY created_at, key_id"
        )

    def count_keys(self) -> int:
        """Keys not revoked."""
        return self._count("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")

    # -- events and statistics ---------------------------------------------------------

    def add_event(
        self,
        kind: str,
        detail: dict | None = None,
        *,
        server_id: str | None = None,
        dir: str | None = None,
    ) -> None:
        self._con.execute(
            "INSERT INTO events (ts, kind, server_id, dir, detail) VALUES (?, ?, ?, ?, ?)",
            [self._clock(), kind, server_id, dir, _dumps(detail)],
        )

    def events(self, kind: str | None = None, limit: int = 100) -> list[dict]:
        """The latest events (of one kind, or all), newest first."""
        rows = self._rows(
            "SELECT id, ts, kind, server_id, dir, detail FROM events "
            "WHERE $1::VARCHAR IS NULL OR kind = $1 ORDER BY id DESC LIMIT $2",
            [kind, limit],
        )
        for row in rows:
            row["detail"] = _loads(row["detail"])
        return rows

    def stats(self) -> dict:
        """Statistics for `/stats`.

        tasks: {"by_status": {status: n}, "latency_ms": {"count", "p50", "p95", "p99"}} over
        'done' tasks (created -> finished; failed ones are left out: a task failed at restart
        has no meaningful latency); folders: {"total", "distributed"}; assignments:
        {server_id: n}; integrity_errors: number of INTEGRITY_ERROR events;
        empty_files_removed: sum over EMPTY_FILE_REMOVED events of detail["count"] (1 for
        an event without it); heartbeats: {server_id: {"ok", "failed", "mean_latency_ms"}}
        over the retained day; jobs: {"by_status": {status: n}}.
        """
        count, p50, p95, p99 = self._con.execute(
            "SELECT count(*), quantile_cont(ms, 0.5), quantile_cont(ms, 0.95), "
            "quantile_cont(ms, 0.99) FROM (SELECT (finished_at - created_at) * 1000 AS ms "
            "FROM tasks WHERE status = 'done' AND finished_at IS NOT NULL)"
        ).fetchone()
        heartbeats = self._con.execute(
            "SELECT server_id, count(*) FILTER (WHERE ok), count(*) FILTER (WHERE NOT ok), "
            "avg(latency_ms) FILTER (WHERE ok) FROM heartbeats GROUP BY server_id"
        ).fetchall()
        by_status: dict[str, dict[str, int]] = {"tasks": {}, "jobs": {}}
        for table, status, n in self._con.execute(
            "SELECT 'tasks', status, count(*) FROM tasks GROUP BY status UNION ALL "
            "SELECT 'jobs', status, count(*) FROM jobs GROUP BY status"
        ).fetchall():
            by_status[table][status] = n
        return {
            "tasks": {
                "by_status": by_status["tasks"],
                "latency_ms": {"count": int(count), "p50": p50, "p95": p95, "p99": p99},
            },
            "folders": {
                "total": self.dirs_count(),
                "distributed": self.count_folders(distributed=True),
            },
            "assignments": dict(
                self._con.execute(
                    "SELECT server_id, count(*) FROM assignments GROUP BY server_id"
                ).fetchall()
            ),
            "integrity_errors": self._count(
                "SELECT count(*) FROM events WHERE kind = ?", [INTEGRITY_ERROR]
            ),
            "empty_files_removed": self._count(
                "SELECT coalesce(sum(coalesce(json_extract(detail, '$.count')::BIGINT, 1)), 0) "
                "FROM events WHERE kind = ?",
                [EMPTY_FILE_REMOVED],
            ),
            "heartbeats": {
                server_id: {"ok": ok, "failed": failed, "mean_latency_ms": mean}
                for server_id, ok, failed, mean in heartbeats
            },
            "jobs": {"by_status": by_status["jobs"]},
        }
