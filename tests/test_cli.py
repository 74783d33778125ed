"""`facenet-ray` as a user runs it: real subprocesses against a real running service, checking
exit codes, what is printed, and that every error is one clear line without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from conftest import BIDEN, FACES, OBAMA, wait_job

pytestmark = pytest.mark.ray

PORTRAITS = [(photo, photo.parent.name) for photo in sorted(FACES.glob("*/*.jpg"))]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180):
    """Run `python -m facenet_ray ARGS` with none of the caller's FACENET_* or RAY_ADDRESS."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("FACENET_") and k != "RAY_ADDRESS"}
    return subprocess.run(
        [sys.executable, "-m", "facenet_ray", *args], env={**clean, **(env or {})},
        capture_output=True, text=True, timeout=timeout,
    )


def assert_clear_error(done: subprocess.CompletedProcess, *words: str) -> None:
    """Non-zero exit, one line on stderr naming the problem, no traceback."""
    assert done.returncode != 0, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facenet-ray: "), done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def cli(service):
    """`facenet-ray` with the service's URL and an admin key, as flags."""

    def run(*args: str, key: str | None = None, timeout: float = 180):
        return run_cli(*args, "--url", service.url, "--api-key", key or service.admin_key,
                       timeout=timeout)

    return run


@pytest.fixture(scope="module")
def loaded(cli):
    """The sample gallery loaded and distributed through the CLI, as a user starts."""
    load = cli("load")
    assert load.returncode == 0, load.stderr
    distribute = cli("distribute")
    assert distribute.returncode == 0, distribute.stderr
    return load, distribute


def test_help_lists_every_command():
    done = run_cli("--help")
    assert done.returncode == 0
    for command in ("up", "down", "status", "search", "load", "distribute", "redistribute",
                    "check", "keys"):
        assert command in done.stdout


def test_up_with_a_missing_gallery_is_refused_before_starting_anything(tmp_path):
    done = run_cli("up", "--gallery", str(tmp_path / "nonexistent"),
                   "--data-dir", str(tmp_path / "data"))
    assert_clear_error(done, "nonexistent", "not a folder")
    assert not (tmp_path / "data").exists()


def test_load_and_distribute_report_what_they_did(loaded):
    load, distribute = loaded
    assert load.stdout.startswith("loaded 2 folders (4 new photos, 0 changed, 0 removed;")
    assert distribute.stdout == "distributed 2 folders over 1 server(s); 0 failed\n"
    assert "Traceback" not in load.stderr + distribute.stderr


def test_distribute_returns_once_the_photos_are_searchable(service, loaded):
    stats = httpx.get(f"{service.url}/stats", headers=service.headers()).json()
    (shard,) = stats["shards"].values()
    assert shard["pending"] == 0 and shard["photos"] == 4


def test_status_lists_the_server_and_the_folders(service, cli, loaded):
    servers = httpx.get(f"{service.url}/serversList", headers=service.headers()).json()
    done = cli("status")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split()[:4] == ["server", "status", "cpus", "dirs"]
    (server,) = servers
    row = next(line for line in rows if line.startswith(server["id"]))
    assert row.split()[1:4] == ["active", str(server["cpu_count"]), "2"]
    assert "folders: 2/2 distributed" in done.stdout


@pytest.mark.parametrize(("photo", "person"), PORTRAITS, ids=lambda v: getattr(v, "name", v))
def test_search_names_the_person(cli, loaded, photo, person):
    done = cli("search", str(photo))
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert line.startswith(f"{photo}: {person} (distance ")
    assert "candidates: " + person in line


def test_search_of_several_photos_answers_each_on_its_own_line(cli, loaded):
    done = cli("search", *(str(photo) for photo, _ in PORTRAITS[2:]))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(": ")[1].split()[0] for line in lines] == ["Barack_Obama", "Joseph_Biden"]


def test_search_of_a_missing_file_is_one_clear_line(cli, loaded, tmp_path):
    done = cli("search", str(tmp_path / "no such photo.jpg"))
    assert_clear_error(done, "cannot read", "no such photo.jpg")


def test_search_of_a_file_that_is_not_a_photo_is_one_clear_line(cli, loaded, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo\n" * 20)
    done = cli("search", str(text))
    assert_clear_error(done, "(415)")


def test_wrong_api_key_is_refused(cli):
    done = cli("status", key="fnr_not-a-real-key-at-all")
    assert_clear_error(done, "unknown or revoked API key", "(401)")


def test_no_api_key_at_all_says_how_to_give_one(service, tmp_path):
    done = run_cli("status", "--url", service.url, "--data-dir", str(tmp_path))
    assert_clear_error(done, "FACENET_API_KEY")


def test_url_and_key_come_from_the_environment(service, loaded):
    done = run_cli("search", str(BIDEN / "biden.jpg"),
                   env={"FACENET_URL": service.url, "FACENET_API_KEY": service.search_key})
    assert done.returncode == 0, done.stderr
    assert ": Joseph_Biden (distance " in done.stdout


def test_unreachable_service_is_one_clear_line(service):
    done = run_cli("status", "--url", "http://127.0.0.1:9", "--api-key", service.admin_key)
    assert_clear_error(done, "cannot reach http://127.0.0.1:9")


def test_search_key_may_not_run_admin_commands(service, cli):
    done = cli("load", key=service.search_key)
    assert_clear_error(done, "(403)")


def test_check_finds_no_errors(cli, loaded):
    for flags in ((), ("--full",)):
        done = cli("check", *flags)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[0] == "errors: 0  fixed: 0  empty files removed: 0"


def test_check_reports_a_damaged_folder_and_fix_repairs_it(service, cli, loaded):
    servers = httpx.get(f"{service.url}/serversList", headers=service.headers()).json()
    photo = service.settings.shard_root(servers[0]["id"]) / "photos" / "Joseph_Biden" / "biden.jpg"
    original = photo.read_bytes()
    photo.write_bytes(original[:-10] + b"0123456789")  # same size: only --full sees it

    assert cli("check").returncode == 0
    damaged = cli("check", "--full")
    assert damaged.returncode != 0
    assert damaged.stdout.splitlines()[0].startswith("errors: 1  fixed: 0")
    assert "Joseph_Biden: wrong checksum: biden.jpg" in damaged.stdout
    assert damaged.stderr.strip().splitlines()[-1] == "facenet-ray: 1 folder(s) still have errors"

    fixed = cli("check", "--full", "--fix")
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.splitlines()[0].startswith("errors: 1  fixed: 1")
    assert photo.read_bytes() == original


def test_check_with_a_server_that_did_not_answer_is_not_clean():
    from facenet_ray.cli import check_report

    result = {"errors": 0, "fixed": 0, "emptyFilesRemoved": 0, "folders": [],
              "missingServers": ["a1b2c3d4e5f6"]}
    lines, problem = check_report(result)
    assert lines[-1] == "  not checked (did not answer): a1b2c3d4e5f6"
    assert problem == "1 server(s) could not be checked"
    assert check_report({**result, "missingServers": []}) == (lines[:1], None)


def test_redistribute_spreads_the_gallery_again_and_it_stays_searchable(cli, loaded):
    done = cli("redistribute")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "removed 2 folders, distributed 2 over 1 server(s); 0 failed\n"
    searched = cli("search", str(BIDEN / "biden.jpg"))
    assert ": Joseph_Biden (distance " in searched.stdout


def test_keys_create_prints_a_search_key_that_works(cli, loaded):
    created = cli("keys", "create", "--role", "search")
    assert created.returncode == 0, created.stderr
    (key,) = created.stdout.split()
    searched = cli("search", str(OBAMA / "obama.jpg"), key=key)
    assert searched.returncode == 0, searched.stderr
    assert ": Barack_Obama (distance " in searched.stdout
    refused = cli("keys", "create", "--role", "admin", key=key)
    assert_clear_error(refused, "(403)")


def test_keys_create_refuses_an_unknown_role():
    done = run_cli("keys", "create", "--role", "root")
    assert done.returncode == 2 and "invalid choice: 'root'" in done.stderr


def test_down_after_the_head_died_cleans_up_at_once(tmp_path):
    """A head that `up` started but that is gone (killed, machine rebooted): `down` must not
    wait minutes for it, and the stale record of it goes."""
    import json
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    mark = data_dir / "ray-started-by-facenet"
    mark.write_text(json.dumps({"address": f"127.0.0.1:{port}", "temp_dir": str(tmp_path / "ray"),
                                "auth": "disabled"}))

    done = run_cli("down", "--data-dir", str(data_dir), timeout=60)

    assert_clear_error(done, "no facenet_ray service was started with data dir")
    assert not mark.exists()


def test_up_detach_joins_the_running_cluster_and_down_stops_the_service(
    ray_cluster, service, loaded
):
    """Last in this module: `up` re-deploys the gateway and `down` stops every actor; the
    next module's `service` fixture starts a fresh service again."""
    where = ["--data-dir", str(service.data_dir), "--address", ray_cluster.address]
    up = run_cli("up", "--detach", "--gallery", str(service.gallery),
                 "--port", str(service.settings.port), "--servers", "1", *where,
                 "--try", str(BIDEN / "biden.jpg"))
    assert up.returncode == 0, up.stderr
    assert f"facenet_ray is serving at {service.url}" in up.stdout
    assert f"admin API key: {(service.data_dir / 'admin.key').resolve()}" in up.stdout
    assert "loaded 2 folders (0 new photos, 0 changed, 0 removed;" in up.stdout
    assert "distributed 0 folders over 0 server(s); 0 failed" in up.stdout
    assert "biden.jpg: Joseph_Biden (distance " in up.stdout
    with httpx.Client(base_url=service.url, headers=service.headers(), timeout=60) as client:
        check = client.get("/distribution/checkNetworkIntegrity", params={"fullCheck": 1})
        assert wait_job(client, service, check.json())["result"]["errors"] == 0

    down = run_cli("down", *where)
    assert down.returncode == 0, down.stderr
    assert "facenet_ray stopped" in down.stderr
    with pytest.raises(httpx.HTTPError):
        httpx.get(service.url, timeout=5).raise_for_status()
