"""`python -m bench` runs end to end on a tiny labelled dataset and writes its results.

The 4 sample portraits are laid out as a dataset (`<person>/<photo>`); every part runs in
`--quick` mode, in a child process (it starts its own local Ray), except deepface, which is
an optional peer (the `bench` extra) and downloads nothing here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT / "tests" / "data" / "faces"

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_bench_all_quick_writes_json(tmp_path: Path) -> None:
    dataset = tmp_path / "dataset"
    for person in ("Barack_Obama", "Joseph_Biden"):
        shutil.copytree(FACES / person, dataset / person)
    out = tmp_path / "results" / "results.json"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FACENET_") and k != "RAY_ADDRESS"}
    env["FACENET_BENCH_CACHE"] = str(tmp_path / "cache")  # bench.accuracy's encodings cache
    done = subprocess.run(
        [sys.executable, "-m", "bench", "all", "--dataset", str(dataset), "--quick",
         "--skip", "deepface", "--scale-faces", "2000", "--scale-folders", "20",
         "--out", str(out), "--work-dir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())

    assert results["split"]["gallery_photos"] == 3 and results["split"]["probes"] == 1
    index = results["index"]
    assert index["facenet_ray"]["photos"] == 3  # every gallery photo reached a shard, encoded
    assert index["face_recognition_1_process"]["photos_per_s"] > 0
    assert index["face_recognition_pool"]["processes"] == os.cpu_count()
    assert index["ratios"]["facenet_ray_vs_1_process"] > 0

    search = results["search"]
    assert search["facenet_ray"]["failed"] == 0
    assert search["facenet_ray"]["score"]["rank1"] == 1.0  # the Obama probe is found
    assert "deepface" not in search
    cli = search["face_recognition_cli"]
    assert "error" not in cli, cli
    assert cli["score"]["rank1"] == 1.0

    assert results["accuracy"].get("facenet_ray") or results["accuracy"].get("skipped")
    scale = results["scale"]
    assert {r["shards"] for r in scale["search"]} == {1, 2}
    assert scale["distribution"]["distributed_folders"] == 20
    assert results["encode"]["exit"] == 0

    table = out.with_suffix(".md").read_text()
    assert "| index |" in table and "| search |" in table
    try:
        import matplotlib  # noqa: F401  (the `bench` extra)
    except ImportError:
        assert "plot:    not drawn" in done.stdout
    else:
        assert out.with_suffix(".png").stat().st_size > 10_000
    assert not list(dataset.rglob("*.pkl"))  # nothing written into the dataset


def test_bench_without_dataset_skips_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "all", "--out", str(out), "--skip", "scale", "encode"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    for part in ("index", "search", "accuracy"):
        assert "no --dataset" in results[part]["skipped"]
