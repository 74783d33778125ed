"""Catalog over real DuckDB files: every method group, errors, durability, odd ids, stats."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from facenet_ray.catalog import (
    EMPTY_FILE_REMOVED,
    HEARTBEAT_RETENTION_S,
    INTEGRITY_ERROR,
    SCHEMA_VERSION,
    Catalog,
)
from facenet_ray.errors import BadRequest, Conflict, NotFound

REPO_ROOT = Path(__file__).resolve().parents[1]

ODD_IDS = [
    "x'); DROP TABLE persons; --",
    "Robert'); DELETE FROM files WHERE ('1'='1",
    'O\'Brien "quoted" $1 ? %s',
    "Иван Петров",
    "王小明 😀",
]


class Clock:
    """A settable clock, so timestamps in tests are exact."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def catalog(tmp_path: Path, clock: Clock):
    cat = Catalog(tmp_path / "catalog.duckdb", clock=clock)
    yield cat
    cat.close()


def add_server(catalog: Catalog, server_id: str, cpu_count: int = 4) -> None:
    catalog.upsert_server(
        server_id, node_id=f"node-{server_id}", ip="10.0.0.1", port=8000,
        cpu_count=cpu_count, status="active",
    )  # fmt: skip


# -- persons -------------------------------------------------------------------------------


def test_person_round_trip(catalog: Catalog) -> None:
    catalog.put_person("alice", {"name": "Alice", "tags": [1, 2], "nested": {"a": None}})
    assert catalog.get_person("alice") == {"name": "Alice", "tags": [1, 2], "nested": {"a": None}}
    catalog.put_person("alice", {"name": "Alice B."})
    assert catalog.get_person("alice") == {"name": "Alice B."}
    catalog.delete_person("alice")
    with pytest.raises(NotFound):
        catalog.get_person("alice")
    with pytest.raises(NotFound):
        catalog.delete_person("alice")


# -- folders and files ---------------------------------------------------------------------


def test_sync_folder_detects_added_changed_removed(catalog: Catalog) -> None:
    first = [("a.jpg", 10, "aa"), ("b.jpg", 20, "bb"), ("c.jpg", 30, "cc")]
    assert catalog.sync_folder("p1", first) == {"added": 3, "changed": 0, "removed": 0}
    assert catalog.sync_folder("p1", first) == {"added": 0, "changed": 0, "removed": 0}

    second = [("a.jpg", 10, "aa"), ("b.jpg", 20, "b2"), ("c.jpg", 31, "cc"), ("d e.jpg", 5, "dd")]
    assert catalog.sync_folder("p1", second) == {"added": 1, "changed": 2, "removed": 0}
    assert catalog.sync_folder("p1", second[1:]) == {"added": 0, "changed": 0, "removed": 1}
    assert catalog.folder_files("p1") == [
        {"name": "b.jpg", "size": 20, "sha256": "b2"},
        {"name": "c.jpg", "size": 31, "sha256": "cc"},
        {"name": "d e.jpg", "size": 5, "sha256": "dd"},
    ]
    assert catalog.sync_folder("p1", []) == {"added": 0, "changed": 0, "removed": 3}
    assert catalog.folder_files("p1") == []
    assert catalog.list_folders() == ["p1"]


def test_sync_folders_in_one_batch_counts_each_folder_and_touches_only_changed_ones(
    catalog: Catalog,
) -> None:
    catalog.sync_folders([("same", [("a.jpg", 1, "a")]), ("moved on", [("a.jpg", 1, "a")])])
    catalog.set_assignments([("same", "s1", "distributed"), ("moved on", "s1", "distributed")])

    totals = catalog.sync_folders([
        ("same", [("a.jpg", 1, "a")]),
        ("moved on", [("b.jpg", 2, "b")]),  # a.jpg removed, b.jpg added
        ("новый", [("x y.jpg", 3, "x"), ("z.jpg", 4, "z")]),
    ])

    assert totals == {"added": 3, "changed": 0, "removed": 1}
    assert catalog.list_folders() == sorted(["same", "moved on", "новый"])
    assert catalog.folder_files("moved on") == [{"name": "b.jpg", "size": 2, "sha256": "b"}]
    assert [f["name"] for f in catalog.folder_files("новый")] == ["x y.jpg", "z.jpg"]
    states = {d: a["state"] for d, a in catalog.get_assignments().items()}
    assert states == {"same": "distributed", "moved on": "assigned"}
    assert catalog.sync_folders([]) == {"added": 0, "changed": 0, "removed": 0}


def test_sync_folder_change_sends_distributed_folder_back_to_assigned(catalog: Catalog) -> None:
    catalog.sync_folder("p1", [("a.jpg", 10, "aa")])
    catalog.sync_folder("p2", [("a.jpg", 10, "aa")])
    catalog.set_assignments([("p1", "s1", "distributed"), ("p2", "s1", "distributed")])

    catalog.sync_folder("p1", [("a.jpg", 10, "aa")])  # unchanged
    assert catalog.get_assignments()["p1"]["state"] == "distributed"

    catalog.sync_folder("p1", [("a.jpg", 11, "a2")])
    assert catalog.get_assignments() == {
        "p1": {"server_id": "s1", "state": "assigned"},
        "p2": {"server_id": "s1", "state": "distributed"},
    }
    assert catalog.count_folders(distributed=True) == 1


def test_remove_folder_drops_its_files_and_assignment(catalog: Catalog) -> None:
    catalog.sync_folder("p1", [("a.jpg", 10, "aa")])
    catalog.sync_folder("p2", [("a.jpg", 10, "aa")])
    catalog.set_assignments([("p1", "s1", "distributed"), ("p2", "s1", "distributed")])
    catalog.remove_folder("p1")
    assert catalog.list_folders() == ["p2"]
    assert catalog.get_assignments() == {"p2": {"server_id": "s1", "state": "distributed"}}
    with pytest.raises(NotFound):
        catalog.folder_files("p1")
    with pytest.raises(NotFound):
        catalog.remove_folder("p1")
    catalog.sync_folder("p1", [])  # a folder that comes back starts with no files
    assert catalog.folder_files("p1") == []


def test_folder_listing_sizes_and_single_files(catalog: Catalog) -> None:
    catalog.sync_folder("Zed", [("a.jpg", 10, "aa"), ("b.jpg", 5, "bb")])
    catalog.sync_folder("alice", [])
    catalog.add_file("Émile", "x.jpg", 7, "xx")  # creates the folder
    assert catalog.list_folders() == sorted(["Zed", "alice", "Émile"])
    assert catalog.dirs_count() == 3

    catalog.add_file("Zed", "a.jpg", 12, "a2")  # upsert
    catalog.add_file("Zed", "c d.jpg", 1, "cd")
    assert catalog.folder_sizes() == {
        "Zed": {"files": 3, "bytes": 18},
        "alice": {"files": 0, "bytes": 0},
        "Émile": {"files": 1, "bytes": 7},
    }
    catalog.remove_file("Zed", "a.jpg")
    assert [f["name"] for f in catalog.folder_files("Zed")] == ["b.jpg", "c d.jpg"]
    with pytest.raises(NotFound):
        catalog.remove_file("Zed", "a.jpg")
    with pytest.raises(NotFound):
        catalog.folder_files("nobody")


# -- assignments ---------------------------------------------------------------------------


def test_assignment_round_trip(catalog: Catalog) -> None:
    for name in ("p1", "p2", "p3"):
        catalog.sync_folder(name, [])
    catalog.set_assignment("p1", "s1", "assigned")
    catalog.set_assignment("p2", "s1", "copying")
    catalog.set_assignment("p3", "s2", "failed")
    catalog.set_assignment("p1", "s2", "distributed")  # upsert moves it
    assert catalog.get_assignments() == {
        "p1": {"server_id": "s2", "state": "distributed"},
        "p2": {"server_id": "s1", "state": "copying"},
        "p3": {"server_id": "s2", "state": "failed"},
    }
    assert catalog.assignments_of("s2") == ["p1", "p3"]
    assert catalog.assignments_of("nobody") == []
    with pytest.raises(BadRequest):
        catalog.set_assignment("p1", "s1", "lost")
    assert catalog.clear_assignments("s2") == 2
    assert catalog.get_assignments() == {"p2": {"server_id": "s1", "state": "copying"}}
    assert catalog.clear_assignments() == 1
    assert catalog.get_assignments() == {}


def test_count_folders_includes_unassigned_in_not_distributed(catalog: Catalog) -> None:
    for name in ("p1", "p2", "p3", "p4", "p5"):
        catalog.sync_folder(name, [])
    catalog.set_assignments(
        [("p1", "s1", "distributed"), ("p2", "s2", "distributed"), ("p3", "s1", "copying")]
    )
    assert catalog.count_folders(distributed=True) == 2
    assert catalog.count_folders(distributed=False) == 3
    assert catalog.dirs_count() == 5


def test_bulk_set_assignments_of_10k_rows(catalog: Catalog) -> None:
    dirs = [f"person {i:05d}" for i in range(10_000)]
    for name in dirs[:100]:
        catalog.sync_folder(name, [])
    catalog.set_assignments([(name, f"s{i % 3}", "assigned") for i, name in enumerate(dirs)])
    catalog.set_assignments([(name, "s9", "distributed") for name in dirs])
    assignments = catalog.get_assignments()
    assert len(assignments) == 10_000
    assert set(a["server_id"] for a in assignments.values()) == {"s9"}
    assert len(catalog.assignments_of("s9")) == 10_000
    assert catalog.count_folders(distributed=True) == 100  # only catalog folders count


def test_bulk_set_assignments_later_row_wins_and_bad_state_writes_nothing(
    catalog: Catalog,
) -> None:
    catalog.set_assignments([("p1", "s1", "assigned"), ("p1", "s2", "copying")])
    assert catalog.get_assignments() == {"p1": {"server_id": "s2", "state": "copying"}}
    with pytest.raises(BadRequest):
        catalog.set_assignments([("p2", "s1", "assigned"), ("p3", "s1", "bogus")])
    assert list(catalog.get_assignments()) == ["p1"]
    catalog.set_assignments([])


# -- servers and heartbeats ----------------------------------------------------------------


def test_server_round_trip(catalog: Catalog, clock: Clock) -> None:
    add_server(catalog, "s1", cpu_count=8)
    catalog.upsert_server(
        "s2", node_id=None, ip="10.0.0.2", port=9000, cpu_count=2, status="pending", grp="rack-a"
    )
    catalog.set_assignments([("p1", "s1", "assigned"), ("p2", "s1", "distributed")])
    s1 = catalog.get_server("s1")
    assert s1 == {
        "server_id": "s1", "node_id": "node-s1", "ip": "10.0.0.1", "port": 8000,
        "cpu_count": 8, "status": "active", "grp": None, "last_seen": None,
        "latency_ms": None, "registered_at": clock.now, "dirs_count": 2,
    }  # fmt: skip
    servers = catalog.list_servers()
    assert [s["server_id"] for s in servers] == ["s1", "s2"]
    assert servers[1]["grp"] == "rack-a" and servers[1]["dirs_count"] == 0

    clock.now += 60
    catalog.upsert_server(
        "s2", node_id="n2", ip="10.0.0.2", port=9000, cpu_count=4, status="active"
    )
    s2 = catalog.get_server("s2")
    assert (s2["node_id"], s2["cpu_count"], s2["status"]) == ("n2", 4, "active")
    assert s2["registered_at"] == clock.now - 60

    catalog.set_server_status("s2", "down")
    assert catalog.get_server("s2")["status"] == "down"
    with pytest.raises(BadRequest):
        catalog.set_server_status("s2", "sleeping")
    with pytest.raises(NotFound):
        catalog.set_server_status("nobody", "down")
    with pytest.raises(NotFound):
        catalog.get_server("nobody")


def test_record_heartbeats_updates_answering_servers_and_keeps_one_day(
    catalog: Catalog, clock: Clock
) -> None:
    add_server(catalog, "s1")
    add_server(catalog, "s2")
    catalog.record_heartbeats([("s1", True, 1.5), ("s2", False, None), ("ghost", True, 3.0)])
    assert catalog.get_server("s1")["last_seen"] == clock.now
    assert catalog.get_server("s1")["latency_ms"] == 1.5
    assert catalog.get_server("s2")["last_seen"] is None
    assert [s["server_id"] for s in catalog.list_servers()] == ["s1", "s2"]

    clock.now += 10
    catalog.record_heartbeats([("s1", True, 2.5), ("s2", True, 4.0)])
    assert catalog.get_server("s2")["last_seen"] == clock.now
    assert catalog.stats()["heartbeats"] == {
        "s1": {"ok": 2, "failed": 0, "mean_latency_ms": 2.0},
        "s2": {"ok": 1, "failed": 1, "mean_latency_ms": 4.0},
        "ghost": {"ok": 1, "failed": 0, "mean_latency_ms": 3.0},
    }

    clock.now += HEARTBEAT_RETENTION_S - 5  # the first round (15 s earlier) is over a day old
    catalog.record_heartbeats([("s1", False, None)])
    assert catalog.stats()["heartbeats"] == {
        "s1": {"ok": 1, "failed": 1, "mean_latency_ms": 2.5},
        "s2": {"ok": 1, "failed": 0, "mean_latency_ms": 4.0},
    }
    catalog.record_heartbeats([])


# -- tasks ---------------------------------------------------------------------------------


def test_task_lifecycle(catalog: Catalog, clock: Clock) -> None:
    catalog.create_task("t1", ["s1", "s2"])
    task = catalog.get_task("t1")
    assert task == {
        "task_id": "t1", "kind": "search", "status": "queued", "created_at": clock.now,
        "finished_at": None, "servers": ["s1", "s2"], "result": None, "timings": None,
        "error": None, "worker_results": [],
    }  # fmt: skip
    with pytest.raises(Conflict):
        catalog.create_task("t1", [])

    catalog.update_task("t1", status="running", timings={"encode_ms": 12.0})
    clock.now += 0.25
    catalog.record_worker_result("t1", False, None)
    catalog.record_worker_result("t1", True, "alice")
    catalog.update_task("t1", status="done", result={"found": True, "faceId": "alice"})
    task = catalog.get_task("t1")
    assert task["status"] == "done"
    assert task["finished_at"] == clock.now
    assert task["result"] == {"found": True, "faceId": "alice"}
    assert task["timings"] == {"encode_ms": 12.0}  # kept when not given again
    assert [(r["found"], r["face_id"]) for r in task["worker_results"]] == [
        (False, None),
        (True, "alice"),
    ]

    with pytest.raises(BadRequest):
        catalog.update_task("t1", status="finished")
    with pytest.raises(NotFound):
        catalog.get_task("nope")
    with pytest.raises(NotFound):
        catalog.update_task("nope", status="done")
    with pytest.raises(NotFound):
        catalog.record_worker_result("nope", True, "alice")


def test_fail_unfinished_tasks_and_jobs(catalog: Catalog) -> None:
    for task_id, status in (("q", "queued"), ("r", "running"), ("d", "done"), ("f", "failed")):
        catalog.create_task(task_id, ["s1"])
        catalog.update_task(task_id, status=status)
    catalog.create_job("j1", "load", {})
    catalog.create_job("j2", "distribute", {})
    catalog.update_job("j2", status="done")

    assert catalog.fail_unfinished_tasks("restarted") == 2
    assert catalog.get_task("q")["status"] == "failed"
    assert catalog.get_task("r")["error"] == "restarted"
    assert catalog.get_task("d")["error"] is None
    assert catalog.fail_unfinished_tasks("again") == 0

    assert catalog.fail_unfinished_jobs("restarted") == 1
    assert catalog.get_job("j1")["status"] == "failed"
    assert catalog.get_job("j1")["error"] == "restarted"
    assert catalog.get_job("j2")["status"] == "done"


# -- jobs ----------------------------------------------------------------------------------


def test_job_lifecycle(catalog: Catalog, clock: Clock) -> None:
    catalog.create_job("j1", "check", {"fixErrors": True, "fullCheck": False})
    assert catalog.get_job("j1") == {
        "job_id": "j1", "kind": "check", "status": "queued",
        "params": {"fixErrors": True, "fullCheck": False}, "progress": {"done": 0, "total": 0},
        "result": None, "error": None, "created_at": clock.now, "updated_at": clock.now,
    }  # fmt: skip
    with pytest.raises(Conflict):
        catalog.create_job("j1", "check", {})

    clock.now += 5
    catalog.update_job("j1", status="running", total=40)
    catalog.update_job("j1", done=10)
    job = catalog.get_job("j1")
    assert (job["status"], job["progress"], job["updated_at"]) == (
        "running",
        {"done": 10, "total": 40},
        clock.now,
    )
    catalog.update_job("j1", status="done", done=40, result={"errors": 0, "folders": []})
    job = catalog.get_job("j1")
    assert job["result"] == {"errors": 0, "folders": []}
    assert job["progress"] == {"done": 40, "total": 40}

    with pytest.raises(BadRequest):
        catalog.update_job("j1", status="paused")
    with pytest.raises(NotFound):
        catalog.get_job("nope")
    with pytest.raises(NotFound):
        catalog.update_job("nope", done=1)


def test_list_jobs_newest_first_with_limit(catalog: Catalog, clock: Clock) -> None:
    for i in range(5):
        clock.now += 1
        catalog.create_job(f"j{i}", "load", {"i": i})
    assert [j["job_id"] for j in catalog.list_jobs()] == ["j4", "j3", "j2", "j1", "j0"]
    assert [j["job_id"] for j in catalog.list_jobs(limit=2)] == ["j4", "j3"]
    assert catalog.list_jobs()[0]["params"] == {"i": 4}


# -- API keys ------------------------------------------------------------------------------


def test_keys(catalog: Catalog) -> None:
    assert catalog.count_keys() == 0
    catalog.add_key("k-admin", "hash-a", "admin")
    catalog.add_key("k-search", "hash-s", "search")
    assert catalog.find_key("hash-a") == {"key_id": "k-admin", "role": "admin"}
    assert catalog.find_key("hash-unknown") is None
    with pytest.raises(Conflict):
        catalog.add_key("k-admin", "hash-other", "admin")
    with pytest.raises(Conflict):
        catalog.add_key("k-other", "hash-a", "admin")

    catalog.revoke_key("k-search")
    assert catalog.find_key("hash-s") is None
    catalog.revoke_key("k-search")  # again: no error
    assert catalog.count_keys() == 1
    keys = catalog.list_keys()
    assert [k["key_id"] for k in keys] == ["k-admin", "k-search"]
    assert all("key_hash" not in k and "hash-a" not in k.values() for k in keys)
    assert keys[0]["revoked_at"] is None and keys[1]["revoked_at"] is not None
    with pytest.raises(NotFound):
        catalog.revoke_key("nope")


# -- events and statistics -----------------------------------------------------------------


def test_events_newest_first_filtered_by_kind(catalog: Catalog, clock: Clock) -> None:
    catalog.add_event("server_down", {"why": "timeout"}, server_id="s1")
    catalog.add_event(EMPTY_FILE_REMOVED, {"count": 2}, server_id="s2", dir="p1")
    catalog.add_event("server_down", server_id="s2")
    events = catalog.events()
    assert [(e["kind"], e["server_id"]) for e in events] == [
        ("server_down", "s2"),
        (EMPTY_FILE_REMOVED, "s2"),
        ("server_down", "s1"),
    ]
    assert events[1]["detail"] == {"count": 2} and events[1]["dir"] == "p1"
    assert events[1]["ts"] == clock.now
    assert events[0]["detail"] is None
    assert [e["server_id"] for e in catalog.events("server_down")] == ["s2", "s1"]
    assert len(catalog.events(limit=1)) == 1
    assert catalog.events("nothing") == []


def test_stats_follow_the_data(catalog: Catalog, clock: Clock) -> None:
    empty = catalog.stats()
    assert empty["tasks"] == {
        "by_status": {},
        "latency_ms": {"count": 0, "p50": None, "p95": None, "p99": None},
    }
    assert empty["empty_files_removed"] == 0 and empty["integrity_errors"] == 0

    start = clock.now
    for i in range(100):  # done tasks taking 1, 2, ..., 100 ms
        clock.now = start
        catalog.create_task(f"t{i}", ["s1"])
        clock.now = start + (i + 1) / 1000
        catalog.update_task(f"t{i}", status="done")
    catalog.create_task("slow-failure", ["s1"])
    clock.now += 3600
    catalog.update_task("slow-failure", status="failed", error="timeout")
    catalog.create_task("waiting", ["s1"])

    for name in ("p1", "p2", "p3"):
        catalog.sync_folder(name, [])
    catalog.set_assignments(
        [("p1", "s1", "distributed"), ("p2", "s1", "assigned"), ("p3", "s2", "distributed")]
    )
    catalog.add_event(INTEGRITY_ERROR, {"problems": ["missing"]}, server_id="s1", dir="p1")
    catalog.add_event(INTEGRITY_ERROR, None, server_id="s1", dir="p2")
    catalog.add_event(EMPTY_FILE_REMOVED, {"count": 3})
    catalog.add_event(EMPTY_FILE_REMOVED, {"photo": "x.jpg"})  # no count: one file
    catalog.record_heartbeats([("s1", True, 2.0), ("s1", True, 4.0), ("s2", False, None)])
    catalog.create_job("j1", "load", {})
    catalog.create_job("j2", "load", {})
    catalog.update_job("j2", status="done")

    stats = catalog.stats()
    assert stats["tasks"]["by_status"] == {"done": 100, "failed": 1, "queued": 1}
    latency = stats["tasks"]["latency_ms"]
    assert latency["count"] == 100
    assert latency["p50"] == pytest.approx(50.5, abs=0.01)
    assert latency["p95"] == pytest.approx(95.05, abs=0.01)
    assert latency["p99"] == pytest.approx(99.01, abs=0.01)
    assert stats["folders"] == {"total": 3, "distributed": 2}
    assert stats["assignments"] == {"s1": 2, "s2": 1}
    assert stats["integrity_errors"] == 2
    assert stats["empty_files_removed"] == 4
    assert stats["heartbeats"] == {
        "s1": {"ok": 2, "failed": 0, "mean_latency_ms": 3.0},
        "s2": {"ok": 0, "failed": 1, "mean_latency_ms": None},
    }
    assert stats["jobs"] == {"by_status": {"queued": 1, "done": 1}}


# -- odd ids -------------------------------------------------------------------------------


@pytest.mark.parametrize("odd", ODD_IDS)
def test_sql_looking_and_unicode_ids_are_stored_verbatim(catalog: Catalog, odd: str) -> None:
    catalog.put_person(odd, {"note": odd})
    assert catalog.get_person(odd) == {"note": odd}
    catalog.sync_folder(odd, [(odd, 1, odd)])
    catalog.add_file(odd, odd + ".jpg", 2, "h")
    assert catalog.list_folders() == [odd]
    assert catalog.folder_files(odd)[0] == {"name": odd, "size": 1, "sha256": odd}
    add_server(catalog, odd)
    catalog.set_assignment(odd, odd, "distributed")
    assert catalog.get_assignments() == {odd: {"server_id": odd, "state": "distributed"}}
    assert catalog.get_server(odd)["dirs_count"] == 1
    catalog.create_task(odd, [odd])
    catalog.record_worker_result(odd, True, odd)
    assert catalog.get_task(odd)["worker_results"][0]["face_id"] == odd
    catalog.create_job(odd, odd, {odd: odd})
    assert catalog.get_job(odd)["params"] == {odd: odd}
    catalog.add_key(odd, odd, "admin")
    assert catalog.find_key(odd) == {"key_id": odd, "role": "admin"}
    catalog.add_event(odd, {odd: odd}, server_id=odd, dir=odd)
    assert catalog.events(odd)[0]["detail"] == {odd: odd}

    catalog.remove_file(odd, odd + ".jpg")
    catalog.delete_person(odd)
    assert catalog.dirs_count() == 1 and catalog.count_keys() == 1  # nothing else was hit
    catalog.put_person("someone", {})
    assert catalog.get_person("someone") == {}


# -- durability ----------------------------------------------------------------------------


def test_reopen_after_close_keeps_schema_version_and_data(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "catalog.duckdb"
    with Catalog(path) as catalog:
        assert catalog.schema_version == SCHEMA_VERSION
        catalog.put_person("alice", {"age": 30})
        catalog.sync_folder("alice", [("a.jpg", 10, "aa")])
        add_server(catalog, "s1")
        catalog.set_assignment("alice", "s1", "distributed")
        catalog.create_task("t1", ["s1"])
        catalog.create_job("j1", "load", {})
        catalog.add_key("k1", "h1", "admin")
        catalog.add_event("started")

    with Catalog(path) as catalog:
        assert catalog.schema_version == SCHEMA_VERSION
        assert catalog.get_person("alice") == {"age": 30}
        assert catalog.folder_files("alice") == [{"name": "a.jpg", "size": 10, "sha256": "aa"}]
        assert catalog.get_server("s1")["dirs_count"] == 1
        assert catalog.count_folders(distributed=True) == 1
        assert catalog.get_task("t1")["servers"] == ["s1"]
        assert catalog.get_job("j1")["kind"] == "load"
        assert catalog.find_key("h1") == {"key_id": "k1", "role": "admin"}
        assert catalog.events()[0]["kind"] == "started"
        catalog.add_event("started again")  # sequences continue after a reopen
        assert [e["kind"] for e in catalog.events()] == ["started again", "started"]


def test_other_schema_version_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "catalog.duckdb"
    Catalog(path).close()
    with duckdb.connect(str(path)) as con:
        con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        con.execute("DROP TABLE persons")
    with pytest.raises(RuntimeError, match="schema 2"):
        Catalog(path)
    with duckdb.connect(str(path)) as con:  # closed again, and nothing was created
        tables = {row[0] for row in con.execute("SHOW TABLES").fetchall()}
    assert "persons" not in tables and "meta" in tables


def test_committed_data_survives_a_killed_writer(tmp_path: Path) -> None:
    path = tmp_path / "catalog.duckdb"
    writer = textwrap.dedent(
        """
        import sys, time
        from facenet_ray.catalog import Catalog

        catalog = Catalog(sys.argv[1])
        catalog.put_person("alice", {"age": 30})
        catalog.sync_folder("alice", [("a.jpg", 10, "aa"), ("b.jpg", 20, "bb")])
        catalog.set_assignments([(f"p{i}", "s1", "assigned") for i in range(1000)])
        catalog.create_task("t1", ["s1"])
        catalog.update_task("t1", status="done", result={"found": False})
        print("written", flush=True)
        time.sleep(60)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", writer, str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout.readline().strip() == "written"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    with Catalog(path) as catalog:
        assert catalog.get_person("alice") == {"age": 30}
        assert [f["name"] for f in catalog.folder_files("alice")] == ["a.jpg", "b.jpg"]
        assert len(catalog.get_assignments()) == 1000
        assert catalog.get_task("t1")["result"] == {"found": False}
