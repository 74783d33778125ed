"""The service started again over an existing data dir, as after a reboot: Ray's node ids are
new, but each server keeps its id, folders and assignments; servers that do not come back are
named missing, then healed."""

from __future__ import annotations

import shutil
import time

import pytest
import ray

from conftest import FACES, HEAD_CPUS, OBAMA, search_task, start_fresh_service
from facenet_ray.catalog import Catalog
from facenet_ray.config import Settings
from facenet_ray.runtime import actor, shard_name
from facenet_ray.store import PhotoStore

pytestmark = pytest.mark.ray

DEAD_NODE = "f" * 56  # a Ray node id of an earlier Ray session


def earlier_run(tmp_path, server_id: str, ip: str, cpus: int) -> tuple:
    """A data dir and gallery as an earlier run left them: both folders distributed to
    `server_id` (of node DEAD_NODE), which holds their photos on its disk."""
    gallery = tmp_path / "gallery"
    shutil.copytree(FACES, gallery, ignore=shutil.ignore_patterns("*.md"))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    inventory = PhotoStore(gallery).inventory(checksum=True)
    catalog = Catalog(str(data_dir / "catalog.duckdb"))
    catalog.upsert_server(server_id, node_id=DEAD_NODE, ip=ip, port=8000, cpu_count=cpus,
                          status="active")
    catalog.sync_folders([(person, [(i.name, i.size, i.sha256) for i in photos.values()])
                          for person, photos in inventory.items()])
    catalog.set_assignments([(person, server_id, "distributed") for person in inventory])
    catalog.close()
    shard_photos = Settings(data_dir=data_dir).shard_root(server_id) / "photos"
    shutil.copytree(gallery, shard_photos, ignore=shutil.ignore_patterns("*.md"))
    return gallery, data_dir


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_head_keeps_its_server_id_folders_and_assignments(ray_cluster, http_port, tmp_path):
    old = "0ld5erver0aa"
    gallery, data_dir = earlier_run(tmp_path, old, ray.util.get_node_ip_address(), HEAD_CPUS)

    start_fresh_service(tmp_path, http_port, gateway=False, gallery_dir=gallery,
                        data_dir=data_dir)

    coordinator = actor("coordinator")
    assert ray.get(coordinator.participating_servers.remote()) == [old]
    assert ray.get(actor(shard_name(old)).wait_idle.remote(120))
    task = search_task((OBAMA / "obama2.jpg").read_bytes())
    assert task["found"] and task["faceId"] == "Barack_Obama", task
    assert task["missingServers"] == []
    catalog = actor("catalog")
    states = {a["state"] for a in ray.get(catalog.get_assignments.remote()).values()}
    assert states == {"distributed"}  # nothing to copy again
    assert [e["server_id"] for e in ray.get(catalog.events.remote("server_rejoined", 10))] == [old]


def test_a_server_that_does_not_come_back_is_named_missing(ray_cluster, http_port, tmp_path):
    gone = "90ne5erver00"
    gallery, data_dir = earlier_run(tmp_path, gone, "203.0.113.9", 4)

    start_fresh_service(tmp_path, http_port, gateway=False, gallery_dir=gallery,
                        data_dir=data_dir, absent_grace_s=3600)

    task = search_task((OBAMA / "obama2.jpg").read_bytes())
    assert task["status"] == "done" and not task["found"]
    assert task["missingServers"] == [gone]  # never a silently partial answer
    servers = {s["id"]: s for s in ray.get(actor("coordinator").servers_list.remote())}
    assert servers[gone]["status"] == "down" and servers[gone]["dirsCount"] == 2


def test_a_server_absent_past_the_grace_is_healed(ray_cluster, http_port, tmp_path):
    gone = "90ne5erver01"
    gallery, data_dir = earlier_run(tmp_path, gone, "203.0.113.9", 4)

    start_fresh_service(tmp_path, http_port, gateway=False, gallery_dir=gallery,
                        data_dir=data_dir, absent_grace_s=0.5)

    catalog = actor("catalog")
    (head,) = ray.get(actor("coordinator").participating_servers.remote())
    wait_for(lambda: {(a["server_id"], a["state"]) for a in ray.get(
        catalog.get_assignments.remote()).values()} == {(head, "distributed")}, 120,
        "the absent server's folders to be copied to the head")
    assert ray.get(actor(shard_name(head)).wait_idle.remote(120))
    task = search_task((OBAMA / "obama2.jpg").read_bytes())
    assert task["found"] and task["faceId"] == "Barack_Obama", task
    assert task["missingServers"] == []
    assert [e["server_id"] for e in ray.get(catalog.events.remote("server_absent", 10))] == [gone]
    source = PhotoStore(gallery).inventory(checksum=True)
    copied = PhotoStore(Settings(data_dir=data_dir).shard_root(head) / "photos").inventory(True)
    assert copied == source
