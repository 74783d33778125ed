"""The Ray runtime on one node: load, distribute, search, integrity faults and repairs."""

from __future__ import annotations

import time

import pytest
import ray

from conftest import BIDEN, OBAMA, run_job, search_task, start_fresh_service
from facenet_ray.runtime import actor, shard_name


@pytest.fixture(scope="module")
def svc(ray_cluster, http_port, tmp_path_factory):
    svc = start_fresh_service(tmp_path_factory.mktemp("runtime"), http_port, gateway=False)
    loaded = run_job("loadDirs")
    assert loaded["folders"] == 2 and loaded["files"]["added"] == 4
    distributed = run_job("startAutoDistrib")
    assert distributed["distributed"] == 2 and not distributed["failed"]
    (server_id,) = ray.get(actor("coordinator").participating_servers.remote())
    assert ray.get(actor(shard_name(server_id)).wait_idle.remote(120))
    svc.server_id = server_id
    return svc


def shard_folder(svc, person_id: str):
    return svc.settings.shard_root(svc.server_id) / "photos" / person_id


def test_every_folder_distributed_and_counted(svc):
    catalog = actor("catalog")
    assert ray.get(catalog.dirs_count.remote()) == 2
    assert ray.get(catalog.count_folders.remote(True)) == 2
    assert ray.get(catalog.count_folders.remote(False)) == 0
    check = ray.get(actor("distributor").check_distribution.remote())
    assert check["expected"] == check["present"] == 2
    assert check["missing"] == [] and check["unexpected"] == []
    servers = ray.get(actor("coordinator").servers_list.remote())
    assert {"id", "url", "port", "cpu_count", "dirsCount"} <= set(servers[0])
    assert servers[0]["dirsCount"] == 2


@pytest.mark.parametrize("photo, person", [
    (OBAMA / "obama.jpg", "Barack_Obama"),
    (OBAMA / "obama2.jpg", "Barack_Obama"),
    (OBAMA / "obama3.jpg", "Barack_Obama"),
    (BIDEN / "biden.jpg", "Joseph_Biden"),
])
def test_search_finds_each_portrait(svc, photo, person):
    task = search_task(photo.read_bytes())
    assert task["status"] == "done", task
    assert task["found"] is True and task["faceId"] == person
    assert task["missingServers"] == []
    assert task["candidates"][0]["faceId"] == person
    assert "encode_ms" in task["timings"] and "total_ms" in task["timings"]


def test_photo_without_face_is_no_face(svc, tmp_path):
    from PIL import Image

    path = tmp_path / "blank.png"
    Image.new("RGB", (300, 300), (120, 160, 200)).save(path)
    task = search_task(path.read_bytes())
    assert task["status"] == "done", task
    assert task["found"] is False and task["reason"] == "no_face"


def test_integrity_clean_then_faults_found_and_fixed(svc):
    clean = run_job("checkNetworkIntegrity", {"fullCheck": True})
    assert clean["errors"] == 0 and clean["folders"] == []

    obama = shard_folder(svc, "Barack_Obama")
    biden = shard_folder(svc, "Joseph_Biden")
    source = (svc.gallery / "Barack_Obama" / "obama2.jpg").read_bytes()
    data = bytearray((obama / "obama2.jpg").read_bytes())
    data[1000] ^= 0xFF  # same size, different content: only a full check sees it
    (obama / "obama2.jpg").write_bytes(bytes(data))
    (obama / "obama3.jpg").unlink()
    (biden / "empty one.jpg").write_bytes(b"")

    quick = run_job("checkNetworkIntegrity", {"fullCheck": False})
    assert quick["errors"] == 1  # one folder, however many bad files in it
    assert quick["emptyFilesRemoved"] == 1
    assert not (biden / "empty one.jpg").exists()
    full = run_job("checkNetworkIntegrity", {"fullCheck": True})
    assert full["errors"] == 1
    (problem,) = full["folders"]
    assert problem["dir"] == "Barack_Obama"
    assert any("obama2.jpg" in p for p in problem["problems"])
    assert any("obama3.jpg" in p for p in problem["problems"])

    fixed = run_job("checkNetworkIntegrity", {"fullCheck": True, "fixErrors": True})
    assert fixed["errors"] == 1 and fixed["fixed"] == 1
    assert (obama / "obama2.jpg").read_bytes() == source
    assert (svc.gallery / "Barack_Obama" / "obama2.jpg").read_bytes() == source
    assert run_job("checkNetworkIntegrity", {"fullCheck": True})["errors"] == 0


def test_deleted_folder_and_unknown_folder_are_errors(svc):
    import shutil

    shutil.rmtree(shard_folder(svc, "Joseph_Biden"))
    stray = shard_folder(svc, "Nobody Known")
    stray.mkdir()
    (stray / "x.jpg").write_bytes(b"not empty")
    check = ray.get(actor("distributor").check_distribution.remote())
    assert check["missing"] == [{"server": svc.server_id, "dir": "Joseph_Biden"}]
    assert check["unexpected"] == [{"server": svc.server_id, "dir": "Nobody Known"}]
    result = run_job("checkNetworkIntegrity", {"fixErrors": True})
    assert result["errors"] == 2 and result["fixed"] == 2
    assert not stray.exists()
    assert sorted(p.name for p in shard_folder(svc, "Joseph_Biden").iterdir()) == ["biden.jpg"]
    ray.get(actor(shard_name(svc.server_id)).wait_idle.remote(60))
    assert search_task((BIDEN / "biden.jpg").read_bytes())["faceId"] == "Joseph_Biden"


def test_cache_survives_shard_restart_without_reencoding(svc):
    shard = actor(shard_name(svc.server_id))
    before = ray.get(shard.ping.remote())
    ray.kill(shard, no_restart=False)
    deadline = time.monotonic() + 60
    while True:
        try:
            after = ray.get(actor(shard_name(svc.server_id)).ping.remote(), timeout=10)
            break
        except Exception:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    assert after["faces"] == before["faces"] and after["pending"] == 0
    # The restart may have cost heartbeats; the next answered ping brings the server back.
    while svc.server_id not in ray.get(actor("coordinator").participating_servers.remote()):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    task = search_task((OBAMA / "obama.jpg").read_bytes())
    assert task["faceId"] == "Barack_Obama", repr(task)


def test_redistribution_removes_then_copies_everything(svc):
    result = run_job("runReDistribution")
    assert result["distributed"] == 2 and not result["failed"]
    ray.get(actor(shard_name(svc.server_id)).wait_idle.remote(120))
    assert search_task((OBAMA / "obama3.jpg").read_bytes())["faceId"] == "Barack_Obama"
