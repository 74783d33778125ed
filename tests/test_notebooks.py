"""Both notebooks run top to bottom against a real service over HTTP, and the numbers they
tabulate and plot are the service's own; in git they carry no outputs."""

from __future__ import annotations

import base64
import io
import json
import shutil
import time
from pathlib import Path

import httpx
import nbformat
import pytest
from nbclient import NotebookClient
from PIL import Image

from conftest import BIDEN, FACES, OBAMA, wait_job, wait_task

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
NAMES = ["analysis.ipynb", "batch_search.ipynb"]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


@pytest.fixture(scope="module")
def api(service):
    with httpx.Client(base_url=service.url, headers=service.headers(), timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def searched(service, api):
    """The sample gallery loaded, distributed and encoded, each portrait searched once and a
    full integrity check run: some history for the analysis notebook to show."""
    for route in ("/distribution/loadDirs", "/distribution/startAutoDistrib"):
        job = wait_job(api, service, api.get(route).json())
        assert job["status"] == "done", job
    deadline = time.monotonic() + 120
    while not all(s and s["pending"] == 0 for s in api.get("/stats").json()["shards"].values()):
        assert time.monotonic() < deadline, "the shards did not encode the gallery in time"
        time.sleep(0.2)
    for photo in sorted(FACES.glob("*/*.jpg")):
        task_id = api.post("/createTask", files={"filedata": (photo.name, photo.read_bytes())})
        assert wait_task(api, service, task_id.json())["found"]
    check = api.get("/distribution/checkNetworkIntegrity", params={"fullCheck": 1}).json()
    assert wait_job(api, service, check)["result"]["errors"] == 0


def execute(name: str, monkeypatch, tmp_path: Path, **env: str) -> tuple[dict, list]:
    """Run a notebook in a fresh kernel; returns what it saved and its output images."""
    saved = tmp_path / f"{name}.json"
    for var in ("FACENET_URL", "FACENET_API_KEY", "FACENET_PROBES", "FACENET_GALLERY"):
        monkeypatch.delenv(var, raising=False)
    for var, value in {**env, "FACENET_SAVE_JSON": str(saved)}.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "matplotlib"))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook, timeout=120, kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    ).execute()
    images = [
        output["data"]["image/png"]
        for cell in notebook.cells if cell.cell_type == "code"
        for output in cell.outputs if "image/png" in output.get("data", {})
    ]
    return json.loads(saved.read_text()), images


def has_events_route(api) -> bool:
    return api.get("/events", params={"kind": "task_done"}).status_code == 200


@pytest.mark.ray
def test_analysis_shows_the_service_numbers(service, api, searched, monkeypatch, tmp_path):
    analysis, images = execute("analysis.ipynb", monkeypatch, tmp_path,
                               FACENET_URL=service.url, FACENET_API_KEY=service.admin_key)
    servers = api.get("/serversList").json()
    stats = api.get("/stats").json()

    assert [row["server"] for row in analysis["servers"]] == [s["id"] for s in servers]
    for row, server in zip(analysis["servers"], servers, strict=True):
        assert row["cpus"] == server["cpu_count"] and row["folders"] == server["dirsCount"] == 2
        assert row["photos"] == stats["shards"][server["id"]]["photos"] == 4
        assert row["cpu_share"] == row["photo_share"] == row["folder_share"] == 1.0

    assert analysis["integrity"]["totalErrors"] == stats["integrity_errors"]
    assert analysis["integrity"]["emptyFilesRemoved"] == stats["empty_files_removed"]
    assert analysis["tasks"]["latency"] == stats["tasks"]["latency_ms"]
    assert analysis["tasks"]["latency"]["count"] == 4
    assert analysis["tasks"]["byStatus"] == stats["tasks"]["by_status"]
    if has_events_route(api):  # the per-check and per-task history
        assert analysis["integrity"]["checks"][-1]["errors"] == 0
        assert len(analysis["tasks"]["historyMs"]) == 4
    else:
        assert analysis["integrity"]["checks"] is None
        assert analysis["tasks"]["historyMs"] is None

    for row, server in zip(analysis["heartbeats"], servers, strict=True):
        beats = stats["heartbeats"][server["id"]]
        assert row["server"] == server["id"] and 0 < row["ok"] <= beats["ok"]
        assert row["mean_ms"] > 0
    assert len(images) >= 3  # shares and folders, latency, heartbeats
    Image.open(io.BytesIO(base64.b64decode(images[0]))).verify()


@pytest.mark.ray
def test_batch_search_answers_every_probe(service, api, searched, monkeypatch, tmp_path):
    probes = tmp_path / "probes"
    (probes / "Barack_Obama").mkdir(parents=True)
    shutil.copy(OBAMA / "obama2.jpg", probes / "Barack_Obama__second.jpg")
    shutil.copy(BIDEN / "biden.jpg", probes / "Joseph_Biden__1.jpg")
    shutil.copy(OBAMA / "obama3.jpg", probes / "Barack_Obama" / "third photo.jpg")
    shutil.copy(OBAMA / "obama.jpg", probes / "unlabelled.jpg")
    Image.new("RGB", (120, 90), (40, 90, 160)).save(probes / "Nobody_Here__sky.jpg")
    (probes / "notes.txt").write_text("not a probe")

    batch, images = execute(
        "batch_search.ipynb", monkeypatch, tmp_path, FACENET_URL=service.url,
        FACENET_API_KEY=service.search_key, FACENET_PROBES=str(probes),
        FACENET_GALLERY=str(service.gallery),
    )
    rows = {row["probe"]: row for row in batch["rows"]}
    truths = {
        "Barack_Obama/third photo.jpg": "Barack_Obama", "Barack_Obama__second.jpg": "Barack_Obama",
        "Joseph_Biden__1.jpg": "Joseph_Biden", "Nobody_Here__sky.jpg": "Nobody_Here",
        "unlabelled.jpg": None,
    }
    assert {probe: row["truth"] for probe, row in rows.items()} == truths
    for probe, row in rows.items():
        task = api.get(f"/tasks/{row['taskId']}").json()
        assert task["status"] == "done"
        answer = task["faceId"] if task["found"] else None
        assert (row["answer"], row["distance"]) == (answer, task["distance"])
        assert row["candidates"].split(", ")[0] == (
            f"{task['candidates'][0]['faceId']} {task['candidates'][0]['distance']:.3f}"
            if task["candidates"] else ""
        )
        truth = truths[probe]
        if truth is None:
            assert row["verdict"] == ""
        elif truth == "Nobody_Here":  # not in FACENET_GALLERY: "nobody" is the right answer
            assert row["verdict"] == ("right (not enrolled)" if answer is None else "false match")
        else:
            assert row["verdict"] == (
                "right" if answer == truth else "missed" if answer is None else "wrong person"
            )
    assert rows["Nobody_Here__sky.jpg"]["reason"] == "no_face"
    verdicts = [row["verdict"] for row in rows.values() if row["verdict"]]
    assert batch["counts"] == {v: verdicts.count(v) for v in set(verdicts)}
    rights = sum(v.startswith("right") for v in verdicts)
    assert batch["accuracy"] == rights / 4
    assert len(images) == 1  # the probes beside their matches, in one figure
