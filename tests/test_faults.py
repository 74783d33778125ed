"""Faults injected into a real multi-node Ray: a node killed (not drained) in the middle of a
distribution job, of an integrity check and of a burst of searches; the catalog and the
coordinator actors killed under HTTP traffic.

After each fault heals: every folder is where the catalog says and nowhere else, every copy
has the source's sha256, no task or job is left unfinished, and a search that could not
reach a server says so (`missingServers`) instead of answering from part of the gallery."""

from __future__ import annotations

import hashlib
import io
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import ray
from PIL import Image

from conftest import start_fresh_service
from facenet_ray.runtime import actor, server_id_of, shard_name

pytestmark = [pytest.mark.ray, pytest.mark.slow]

FOLDERS = 240
PAD = 48 * 1024  # bytes after each JPEG's end: copies and checksums take a little time
WORKERS = ("w1", "w2", "w3")  # one node is killed per scenario


def photo(i: int, j: int) -> bytes:
    """A small valid JPEG, different for every (folder, photo), padded after its end marker
    (decoders ignore the padding; the fake encoder's vector depends on every byte)."""
    buf = io.BytesIO()
    Image.new("RGB", (32 + j, 32), (i * 37 % 256, i * 91 % 256, (i + 85 * j) % 256)).save(
        buf, "JPEG"
    )
    return buf.getvalue() + random.Random(i * 10 + j).randbytes(PAD)


@pytest.fixture(scope="module")
def faults(ray_cluster, http_port, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    gallery = root / "gallery"
    for i in range(FOLDERS):
        folder = gallery / f"person {i:03d} Ёж"
        folder.mkdir(parents=True)
        for j in range(2):
            (folder / f"photo {j}.jpg").write_bytes(photo(i, j))
    # The gateway replica is placed before any worker joins, so it lives on the head. The
    # fake encoder gives a person's two photos unrelated vectors: the plain "nearest" rule
    # calls an exact match found whatever the other photo is.
    svc = start_fresh_service(
        root, http_port, encoder="fake", gallery_dir=gallery, copy_concurrency=1,
        heartbeat_interval_s=0.5, heartbeat_misses=2, search_timeout_s=5.0,
        decision_rule="nearest",
    )
    nodes = {
        name: ray_cluster.add_node(num_cpus=1, object_store_memory=80 * 1024 * 1024)
        for name in WORKERS
    }
    ray_cluster.wait_for_nodes()
    svc.nodes = {name: server_id_of(node.node_id) for name, node in nodes.items()}
    svc.ray_nodes = nodes
    coordinator = actor("coordinator")
    wait_for(lambda: len(ray.get(coordinator.participating_servers.remote())) == 4, 60,
             "the three workers did not join")
    yield ray_cluster, svc
    for node in nodes.values():
        if node in ray_cluster.worker_nodes:
            ray_cluster.remove_node(node)
    gone = {node.node_id for node in nodes.values()}
    wait_for(lambda: not any(n["Alive"] and n["NodeID"] in gone for n in ray.nodes()), 60,
             "removed nodes still alive")


# -- helpers -----------------------------------------------------------------------------


def wait_for(condition, timeout_s: float, what: str, every_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} (after {timeout_s}s)"
        time.sleep(every_s)


def start_job(kind: str, params: dict | None = None) -> str:
    return ray.get(actor("distributor").start_job.remote(kind, params or {}))


def job(job_id: str) -> dict:
    return ray.get(actor("catalog").get_job.remote(job_id))


def finished_job(job_id: str, timeout_s: float = 120) -> dict:
    return wait_for(lambda: (j := job(job_id))["status"] in ("done", "failed") and j,
                    timeout_s, f"job {job_id} did not finish")


def kill(ray_cluster, svc, name: str) -> str:
    """Kill a worker node the hard way (its raylet and workers get SIGKILL)."""
    ray_cluster.remove_node(svc.ray_nodes[name], allow_graceful=False)
    return svc.nodes[name]


def healed(dead: str, timeout_s: float = 120) -> dict:
    """Wait until no folder is assigned to `dead` and every folder is distributed."""
    catalog = actor("catalog")

    def done():
        assignments = ray.get(catalog.get_assignments.remote())
        return len(assignments) == FOLDERS and all(
            a["server_id"] != dead and a["state"] == "distributed" for a in assignments.values()
        ) and assignments

    return wait_for(done, timeout_s, f"the folders of {dead} were not healed", every_s=0.5)


def settled() -> None:
    """No job queued or running, every live shard done encoding."""
    catalog = actor("catalog")
    wait_for(lambda: not any(j["status"] in ("queued", "running")
                             for j in ray.get(catalog.list_jobs.remote(500))),
             120, "jobs left unfinished")
    for server_id in ray.get(actor("coordinator").participating_servers.remote()):
        assert ray.get(actor(shard_name(server_id)).wait_idle.remote(60), timeout=90)


def assert_consistent(svc) -> None:
    """Every folder is on its assigned (live) server only, and every file there has the
    source gallery's sha256; checkDistribution agrees."""
    settled()
    assignments = ray.get(actor("catalog").get_assignments.remote())
    live = set(ray.get(actor("coordinator").participating_servers.remote()))
    assert len(assignments) == FOLDERS
    for person_id, a in assignments.items():
        assert a["state"] == "distributed" and a["server_id"] in live, (person_id, a)
        source = svc.gallery / person_id
        copy = svc.settings.shard_root(a["server_id"]) / "photos" / person_id
        names = sorted(p.name for p in source.iterdir())
        assert sorted(p.name for p in copy.iterdir()) == names, person_id
        for name in names:
            assert sha256(copy / name) == sha256(source / name), (person_id, name)
    for server_id in live:  # nothing where the catalog does not expect it
        photos = svc.settings.shard_root(server_id) / "photos"
        held = {p.name for p in photos.iterdir()} if photos.exists() else set()
        assert held == {f for f, a in assignments.items() if a["server_id"] == server_id}
    check = ray.get(actor("distributor").check_distribution.remote())
    assert check["missing"] == [] and check["unexpected"] == [], check
    assert check["expected"] == check["present"] == FOLDERS


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def holder(assignments: dict) -> dict[str, list[str]]:
    by_server: dict[str, list[str]] = {}
    for person_id, a in sorted(assignments.items()):
        by_server.setdefault(a["server_id"], []).append(person_id)
    return by_server


# -- node loss ---------------------------------------------------------------------------


def test_node_killed_in_the_middle_of_a_distribution(faults):
    ray_cluster, svc = faults
    loaded = finished_job(start_job("loadDirs"))
    assert loaded["status"] == "done" and loaded["result"]["folders"] == FOLDERS
    job_id = start_job("startAutoDistrib")
    catalog = actor("catalog")

    def first_batch_confirmed():  # some folders are confirmed, the others still copying
        states = [a["state"] for a in ray.get(catalog.get_assignments.remote()).values()]
        return states.count("distributed") > 0 and states.count("copying") > 0

    wait_for(first_batch_confirmed, 60, "the distribution never got going", every_s=0.02)
    # The victim: the worker with the most folders not yet confirmed.
    copying = {s: 0 for s in svc.nodes.values()}
    for a in ray.get(catalog.get_assignments.remote()).values():
        if a["state"] == "copying" and a["server_id"] in copying:
            copying[a["server_id"]] += 1
    victim = max(WORKERS, key=lambda name: copying[svc.nodes[name]])
    dead = kill(ray_cluster, svc, victim)
    at_kill = job(job_id)
    assert at_kill["status"] == "running", at_kill
    assert copying[dead] > 0  # it died with folders on their way to it

    ended = finished_job(job_id)
    assert ended["status"] in ("done", "failed"), ended
    if ended["status"] == "failed":
        assert ended["error"]
    else:  # every folder it could not confirm is reported, and only the dead server's
        assert {f["server"] for f in ended["result"]["failed"]} <= {dead}
    healed(dead)
    assert_consistent(svc)
    heals = [j for j in ray.get(catalog.list_jobs.remote(500)) if j["kind"] == "heal"]
    assert heals and all(j["status"] == "done" for j in heals), heals
    print(f"\ndistribution: killed with {copying[dead]} folders on their way to the node; job "
          f"{ended['status']}, {len((ended['result'] or {}).get('failed', []))} reported failed; "
          f"heal moved {sum(j['result']['moved'] for j in heals)}")
    assert ray.get(catalog.get_server.remote(dead))["status"] == "down"


def test_node_killed_in_the_middle_of_an_integrity_check(faults):
    ray_cluster, svc = faults
    servers = ray.get(actor("coordinator").participating_servers.remote())
    # The victim is the last alive worker the check reaches, so it dies while the check runs.
    victim = max((n for n in WORKERS if svc.nodes[n] in servers),
                 key=lambda n: servers.index(svc.nodes[n]))
    job_id = start_job("checkNetworkIntegrity", {"fullCheck": True})
    wait_for(lambda: job(job_id)["status"] != "queued", 30, "the check did not start",
             every_s=0.01)
    dead = kill(ray_cluster, svc, victim)
    at_kill = job(job_id)

    ended = finished_job(job_id)
    assert ended["status"] == "done", ended
    result = ended["result"]
    assert result["errors"] == 0, result  # the folders it could check are all sound
    assert ended["progress"]["done"] == ended["progress"]["total"] == len(servers)
    if dead in result["missingServers"]:
        path = "the check could not reach the killed server and says so"
    else:
        path = "the killed server answered the check before it died"
    print(f"\nintegrity check: job {at_kill['status']} at the kill; {path}")
    assert set(result["missingServers"]) <= {dead}

    healed(dead)
    assert_consistent(svc)
    after = finished_job(start_job("checkNetworkIntegrity", {"fullCheck": True}))
    assert after["status"] == "done" and after["result"]["errors"] == 0, after
    assert after["result"]["missingServers"] == []


def test_node_killed_during_a_burst_of_searches(faults):
    ray_cluster, svc = faults
    by_server = holder(ray.get(actor("catalog").get_assignments.remote()))
    alive = [n for n in WORKERS if svc.ray_nodes[n] in ray_cluster.worker_nodes]
    victim = max(alive, key=lambda n: len(by_server.get(svc.nodes[n], [])))
    target = svc.nodes[victim]
    assert len(by_server[target]) >= 16, by_server.keys()
    # Half the probes are of people the victim holds, half of people elsewhere.
    theirs = by_server[target][:16]
    others = [f for s, fs in by_server.items() if s != target for f in fs][:16]
    probes = [(person, (svc.gallery / person / "photo 1.jpg").read_bytes())
              for pair in zip(theirs, others, strict=True) for person in pair]
    search_key = {"X-API-Key": svc.search_key}
    killed = threading.Event()

    def submit(item):
        person, data = item
        with httpx.Client(base_url=svc.url, timeout=30) as client:
            r = client.post("/createTask", headers=search_key,
                            files={"filedata": ("probe.jpg", data, "image/jpeg")})
        return person, r.status_code, r.json(), killed.is_set()

    with ThreadPoolExecutor(8) as pool:
        first = [pool.submit(submit, item) for item in probes[:12]]
        time.sleep(0.3)
        dead = kill(ray_cluster, svc, victim)
        killed.set()
        rest = [pool.submit(submit, item) for item in probes[12:]]
        submitted = [f.result(timeout=60) for f in first + rest]

    assert all(status == 200 for _, status, _, _ in submitted), submitted
    outcomes = {"found": 0, "missing named": 0}
    with httpx.Client(base_url=svc.url, timeout=30) as client:
        for person, _, task_id, _ in submitted:
            task = wait_for(
                lambda task_id=task_id: (t := client.get(f"/tasks/{task_id}",
                                                          headers=search_key).json())["status"]
                in ("done", "failed") and t, 60, f"task {task_id} never finished")
            assert task["status"] == "done", task
            if task["found"] and task["faceId"] == person:
                outcomes["found"] += 1
            else:  # never a silently partial answer: the server that held them is named
                assert dead in task["missingServers"], (person, task)
                outcomes["missing named"] += 1
    print(f"\nsearch burst across the kill: {outcomes}")

    healed(dead)
    assert_consistent(svc)
    with httpx.Client(base_url=svc.url, timeout=30) as client:
        for person, data in probes:
            r = client.post("/createTask", headers=search_key,
                            files={"filedata": ("probe.jpg", data, "image/jpeg")})
            task = wait_for(
                lambda r=r: (t := client.get(f"/tasks/{r.json()}", headers=search_key).json())[
                    "status"] in ("done", "failed") and t, 60, "search after heal")
            assert task["found"] and task["faceId"] == person, task
            assert task["missingServers"] == []


# -- actors killed under HTTP traffic ----------------------------------------------------


def hammer(svc, task_id: str, until: threading.Event, answers: list) -> None:
    """GET requests through the gateway until told to stop: (route, status, seconds, body).
    Every request needs the catalog (for its key); /tasks needs the coordinator and
    checkDistribution the distributor. None of them asks the coordinator or the distributor
    to start: a restarted one must get going on its own."""
    routes = [("/distribution/dirsCount", svc.headers()), ("/getLag", svc.headers("search")),
              (f"/tasks/{task_id}", svc.headers()), ("/jobs/nothing", svc.headers()),
              ("/distribution/checkDistribution", svc.headers())]
    with httpx.Client(base_url=svc.url, timeout=60) as client:
        while not until.is_set():
            for route, headers in routes:
                started = time.monotonic()
                r = client.get(route, headers=headers)
                answers.append((route, r.status_code, time.monotonic() - started, r.json()))
                time.sleep(0.02)


def search_task(client, headers: dict, data: bytes) -> httpx.Response:
    return client.post("/createTask", headers=headers,
                       files={"filedata": ("p.jpg", data, "image/jpeg")})


@pytest.mark.parametrize("name", ["catalog", "coordinator", "distributor"])
def test_actor_killed_under_traffic_answers_503_then_recovers(faults, name):
    _, svc = faults
    admin = svc.headers()
    catalog = actor("catalog")
    with httpx.Client(base_url=svc.url, timeout=60) as client:
        # Committed before the kill: a person, a key, a finished search, the assignments.
        info = {"name": f"kept across a {name} restart", "n": 1}
        assert client.put("/persons/person 000 Ёж", json=info, headers=admin).status_code == 200
        made = client.post("/keys", params={"role": "search"}, headers=admin).json()
        probe = (svc.gallery / "person 001 Ёж" / "photo 0.jpg").read_bytes()
        task_id = search_task(client, admin, probe).json()
        task = wait_for(lambda: (t := client.get(f"/tasks/{task_id}", headers=admin).json())[
            "status"] == "done" and t, 60, "search before the kill")
        assignments = ray.get(catalog.get_assignments.remote())

        answers: list = []
        stop = threading.Event()
        traffic = threading.Thread(target=hammer, args=(svc, task_id, stop, answers))
        traffic.start()
        time.sleep(1.0)
        # Work in flight when the actor dies: searches, and for the distributor a long job.
        busy = start_job("runReDistribution") if name == "distributor" else None
        with ThreadPoolExecutor(4) as pool:
            searches = [pool.submit(search_task, client, admin, probe) for _ in range(8)]
            time.sleep(0.05)
            killed_at = len(answers)
            ray.kill(actor(name), no_restart=False)  # max_restarts=-1: Ray starts it again
            in_flight = [f.result(timeout=90) for f in searches]
        try:
            # Back when eight answers in a row after the kill are what they were before.
            wait_for(lambda: len(answers) > killed_at + 8 and all(
                a[1] in (200, 404) for a in answers[-8:]), 90, f"the {name} did not come back")
        finally:
            stop.set()
            traffic.join(timeout=90)
        after_kill = answers[killed_at:]
        unexpected = [a for a in after_kill if a[1] not in (200, 404, 503)]
        assert not unexpected, unexpected
        assert all(a[1] == 404 for a in after_kill if a[0] == "/jobs/nothing" and a[1] != 503)
        for _, status, _, body in after_kill:
            if status == 503:  # the actor named is the one called, or the one it called
                assert body["error"] == "unavailable" and "try again" in body["detail"], body
        slowest = max(a[2] for a in after_kill)
        assert slowest < 20, f"a request took {slowest:.1f}s while the {name} restarted"
        refused = [r for r in in_flight if r.status_code != 200]
        assert all(r.status_code == 503 and r.json()["error"] == "unavailable" for r in refused)
        print(f"\n{name} killed: {len(after_kill)} requests meanwhile, "
              f"{sum(a[1] == 503 for a in after_kill)} answered 503, slowest {slowest:.2f}s; "
              f"{len(in_flight) - len(refused)}/{len(in_flight)} searches in flight accepted")

        # Nothing committed is lost.
        assert client.get("/persons/person 000 Ёж", headers=admin).json() == info
        assert client.get(f"/tasks/{task_id}", headers=admin).json() == task
        assert client.get("/getLag", headers={"X-API-Key": made["key"]}).status_code == 200
        # Every search accepted around the kill ends; a failed one says why.
        for r in in_flight:
            if r.status_code == 200:
                late = wait_for(
                    lambda r=r: (t := client.get(f"/tasks/{r.json()}", headers=admin).json())[
                        "status"] in ("done", "failed") and t, 60, "a task was left running")
                assert late["status"] == "done" or late["error"], late
        # Heartbeats run again: every live server is seen anew after the restart.
        restarted = time.time()
        wait_for(lambda: all(s["last_seen"] and s["last_seen"] > restarted
                             for s in ray.get(catalog.list_servers.remote())
                             if s["status"] == "active"), 30, "heartbeats did not resume")
    if busy is None:
        assert ray.get(catalog.get_assignments.remote()) == assignments
    else:  # the interrupted job failed with its reason; distributing again completes it
        interrupted = finished_job(busy, 60)
        assert interrupted["status"] == "failed" and interrupted["error"], interrupted
        print(f"interrupted job: {interrupted['error']!r}, progress {interrupted['progress']}")
        assert finished_job(start_job("startAutoDistrib"))["status"] == "done"
    assert_consistent(svc)


def test_truncated_photo_and_renamed_folder_are_found_and_repaired(faults):
    """The disk faults tests/test_runtime.py leaves out: a photo cut short and a folder renamed
    on a server. One error per folder; the repair re-copies from the source gallery, which it
    never changes."""
    _, svc = faults
    gallery = {str(p): sha256(p) for p in sorted(svc.gallery.rglob("*")) if p.is_file()}
    by_server = holder(ray.get(actor("catalog").get_assignments.remote()))
    server_id, (cut, renamed, *_) = next(iter(by_server.items()))
    photos = svc.settings.shard_root(server_id) / "photos"
    victim = photos / cut / "photo 0.jpg"
    victim.write_bytes(victim.read_bytes()[: PAD // 2])
    (photos / renamed).rename(photos / f"{renamed} (copy)")

    found = finished_job(start_job("checkNetworkIntegrity", {"fullCheck": False}))["result"]
    problems = {(f["server"], f["dir"]): f["problems"] for f in found["folders"]}
    assert found["errors"] == 3, problems
    assert problems[(server_id, cut)] == ["wrong size: photo 0.jpg"]
    assert problems[(server_id, renamed)] == ["folder missing"]
    assert problems[(server_id, f"{renamed} (copy)")] == ["unexpected folder"]

    fixed = finished_job(start_job("checkNetworkIntegrity", {"fixErrors": True}))["result"]
    assert fixed["errors"] == fixed["fixed"] == 3, fixed
    assert_consistent(svc)
    assert {str(p): sha256(p) for p in sorted(svc.gallery.rglob("*")) if p.is_file()} == gallery
