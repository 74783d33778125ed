"""`cluster.yaml` passes the checks `ray up` makes before it opens any SSH connection, and its
commands fit together with deploy/ and the CLI. No machine is contacted."""

from __future__ import annotations

import copy
import shlex
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from click import ClickException

# Private API (shared research, ray.md): `ray up` runs exactly this on the config first.
from ray.autoscaler._private.commands import _bootstrap_config

from facenet_ray.cli import parser

ROOT = Path(__file__).parent.parent
CLUSTER_YAML = ROOT / "cluster.yaml"
DEPLOY = ROOT / "deploy"


def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def bootstrap(config: dict) -> dict:
    """What `ray up` makes of the config: defaults, local-provider preparation, schema check."""
    return _bootstrap_config(copy.deepcopy(config), no_config_cache=True)


def command_line(commands: list[str], program: str) -> list[str]:
    """The arguments of the one command that runs `program`."""
    (line,) = [c for c in commands if f"/bin/{program} " in c and " stop" not in c]
    return shlex.split(line.split(f"/bin/{program} ", 1)[1].split(">")[0])


def test_ray_up_accepts_the_config():
    config = bootstrap(raw())
    assert config["provider"]["type"] == "local"
    node_type = config["available_node_types"][config["head_node_type"]]
    workers = config["provider"]["worker_ips"]
    assert node_type["min_workers"] == node_type["max_workers"] == len(workers) >= 1
    assert config["provider"]["head_ip"] not in workers


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda c: c.update(head_commands=["x"]), jsonschema.ValidationError),
        (lambda c: c["auth"].update(ssh_password="x"), jsonschema.ValidationError),
        (lambda c: c.update(worker_start_ray_commands=[1]), jsonschema.ValidationError),
        (lambda c: c["provider"].pop("head_ip"), ClickException),
        (lambda c: c.update(available_node_types={"x": {"node_config": {}, "resources": {}}}),
         ClickException),
    ],
    ids=["unknown key", "unknown auth key", "command not a string", "no head_ip", "node types"],
)
def test_a_broken_config_is_refused(change, error):
    """The validation really runs: each of these mistakes fails it."""
    config = raw()
    change(config)
    with pytest.raises(error):
        bootstrap(config)


def test_setup_installs_this_checkout_with_the_deploy_script():
    config = raw()
    (remote,) = [r for r, local in config["file_mounts"].items() if local == "."]
    (setup,) = config["setup_commands"]
    assert setup == f"bash {remote}/deploy/install.sh ~/facenet-venv"
    assert "face_recognition==1.3.0" in (DEPLOY / "install.sh").read_text()


def test_every_node_uses_ray_token_auth_with_the_same_token():
    config = raw()
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        for command in commands:
            if " start " in command or " up " in command:
                assert command.startswith("RAY_AUTH_MODE=token "), command


def test_head_starts_ray_then_the_service_over_every_machine():
    config = raw()
    head = config["head_start_ray_commands"]
    ray_start = command_line(head, "ray")
    assert ray_start[:3] == ["start", "--head", "--port=6379"]
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in ray_start  # starts the workers
    up = parser().parse_args(command_line(head, "facenet-ray"))
    assert up.command == "up" and up.detach and up.address == "auto"
    assert up.gallery is not None and up.data_dir is not None
    assert up.servers == 1 + len(config["provider"]["worker_ips"])
    assert head.index(next(c for c in head if "ray start" in c)) < len(head) - 1


def test_workers_join_the_head():
    workers = raw()["worker_start_ray_commands"]
    assert command_line(workers, "ray")[:2] == ["start", "--address=$RAY_HEAD_IP:6379"]


@pytest.mark.parametrize("script", sorted(DEPLOY.glob("*.sh")), ids=lambda p: p.name)
def test_deploy_scripts_parse_and_explain_themselves(script):
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    if script.name != "install.sh":  # that one installs: not run here
        done = subprocess.run([str(script), "--help"], capture_output=True, text=True)
        assert done.returncode == 0 and "usage: deploy/" in done.stdout


def test_deploy_readme_covers_both_ways():
    readme = (DEPLOY / "README.md").read_text()
    for step in ("ray up cluster.yaml", "deploy/start-head.sh", "deploy/start-worker.sh",
                 "facenet-ray up", "facenet-ray redistribute"):
        assert step in readme
