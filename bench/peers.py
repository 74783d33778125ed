"""The peers facenet_ray is measured against, each run the way its own users run it.

- `plain_index`: the plain `face_recognition` loop (`load_image_file` + `face_encodings`, its
  defaults: HOG, upsample 1, 1 jitter) in this one process;
- `pool_index`: the same loop in a `multiprocessing` pool of `processes` workers;
- `cli_search`: the real `face_recognition` command line (`face_recognition KNOWN UNKNOWN`),
  which encodes every known person again on every run;
- `deepface_search`: `DeepFace.find(img_path, db_path, model_name="Dlib",
  detector_backend="dlib")`, run in a child process (`python -m bench.peers deepface ...`) so
  that a missing or broken deepface install costs one message, not the whole benchmark.

Every function returns a plain dict (JSON-ready); none of them writes inside the project.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from multiprocessing import get_context
from pathlib import Path

DEEPFACE_WEIGHTS = (
    "dlib_face_recognition_resnet_model_v1.dat",
    "shape_predictor_5_face_landmarks.dat",
)


# -- indexing: the plain face_recognition loop ----------------------------------------------


def _encode_plain(path: str) -> int:
    """The loop body every face_recognition tutorial has: load, encode; returns faces found."""
    import face_recognition

    image = face_recognition.load_image_file(path)
    return len(face_recognition.face_encodings(image))


def _warm_worker() -> None:
    import face_recognition  # noqa: F401  (loads dlib's models once per process)


def _nap(_: int) -> None:
    time.sleep(0.2)


def _summary(n: int, seconds: float, faces: list[int]) -> dict:
    return {
        "photos": n,
        "seconds": seconds,
        "photos_per_s": n / seconds if seconds else float("nan"),
        "no_face": sum(1 for f in faces if f == 0),
    }


def plain_index(paths: list[Path]) -> dict:
    """Encode every photo in this process, models already loaded (import time not counted)."""
    _warm_worker()
    start = time.perf_counter()
    faces = [_encode_plain(str(p)) for p in paths]
    return {**_summary(len(paths), time.perf_counter() - start, faces), "processes": 1}


def pool_index(paths: list[Path], processes: int) -> dict:
    """The same loop over a pool of `processes` (spawned) workers.

    `seconds` counts from a warm pool (every worker has imported face_recognition and loaded
    its models); `seconds_with_startup` adds starting the pool and loading the models.
    """
    ctx = get_context("spawn")
    cold = time.perf_counter()
    with ctx.Pool(processes, initializer=_warm_worker) as pool:
        pool.map(_nap, range(processes), chunksize=1)  # each worker up and warm
        start = time.perf_counter()
        faces = pool.map(_encode_plain, [str(p) for p in paths], chunksize=4)
        end = time.perf_counter()
    out = _summary(len(paths), end - start, faces)
    out.update(processes=processes, seconds_with_startup=end - cold,
               photos_per_s_with_startup=len(paths) / (end - cold))
    return out


# -- repeated search: the face_recognition command line -------------------------------------


def cli_path() -> Path | None:
    """The venv's `face_recognition` script (next to this interpreter), else the one on PATH."""
    here = Path(sys.executable).parent / "face_recognition"
    if here.exists():
        return here
    found = shutil.which("face_recognition")
    return Path(found) if found else None


def parse_cli_output(text: str) -> dict[str, dict]:
    """`path,name,distance` lines (`--show-distance true`) -> path: {answer, distance, ...}.

    The CLI prints every known person within tolerance (in folder order, not nearest first),
    `unknown_person` when none is, and `no_persons_found` when the probe has no face; the
    answer here is the nearest person it printed.
    """
    out: dict[str, dict] = {}
    for line in text.splitlines():
        if line.startswith("WARNING") or "," not in line:
            continue
        path, rest = line.split(",", 1)  # the probe paths are ours: no commas in them
        name, _, distance = rest.rpartition(",")
        entry = out.setdefault(path, {"answer": None, "distance": None, "matches": 0,
                                      "no_face": False})
        if name == "no_persons_found":
            entry["no_face"] = True
        elif name != "unknown_person":
            entry["matches"] += 1
            d = float(distance) if distance not in ("", "None") else None
            if entry["answer"] is None or (d is not None and d < (entry["distance"] or 9.0)):
                entry["answer"], entry["distance"] = name, d
    return out


def run_cli(known: Path, unknown: Path, cpus: int = 1, tolerance: float = 0.6) -> dict:
    exe = cli_path()
    if exe is None:
        raise FileNotFoundError("the face_recognition command is not installed")
    cmd = [str(exe), "--cpus", str(cpus), "--tolerance", str(tolerance),
           "--show-distance", "true", str(known), str(unknown)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"face_recognition exited {done.returncode}: {done.stderr[-500:]}")
    return {"seconds": seconds, "results": parse_cli_output(done.stdout)}


def cli_search(known: Path, probes: list[Path], single_runs: int, cpus: int) -> dict:
    """The CLI flow over `probes`: one batch run with every probe in UNKNOWN_DIR (its best
    case, `--cpus cpus`), and `single_runs` runs of one probe each (`--cpus 1`), the way a
    service built on the CLI answers requests one at a time; that per-run time times the
    number of probes is the CLI's time for repeated search.
    """
    batch = run_cli(known, probes[0].parent, cpus=cpus)
    singles = [run_cli(known, p)["seconds"] for p in probes[:max(1, single_runs)]]
    per_run = sum(singles) / len(singles)
    return {
        "mode": f"real CLI ({cli_path()})",
        "known_photos": sum(1 for _ in known.iterdir()),
        "batch_seconds": batch["seconds"],
        "batch_cpus": cpus,
        "single_run_seconds": singles,
        "per_probe_run_seconds": per_run,
        "repeated_seconds_extrapolated": per_run * len(probes),
        "results": batch["results"],
    }


# -- repeated search: deepface ----------------------------------------------------------------


def prepare_deepface_weights() -> Path:
    """Put face_recognition_models' dlib files where deepface looks, so it never downloads."""
    import face_recognition_models

    models = Path(face_recognition_models.__file__).parent / "models"
    home = Path(os.environ.get("DEEPFACE_HOME", Path.home())) / ".deepface" / "weights"
    home.mkdir(parents=True, exist_ok=True)
    for name in DEEPFACE_WEIGHTS:
        target = home / name
        if not target.exists() or target.stat().st_size != (models / name).stat().st_size:
            shutil.copyfile(models / name, target)
    return home


def deepface_search(db: Path, probes: list[Path], timeout_s: float = 1800) -> dict:
    """DeepFace.find for every probe, in a child process; {"error": why} when it cannot run."""
    with_probes = db.parent / "deepface-probes.json"
    result = db.parent / "deepface-result.json"
    with_probes.write_text(json.dumps([str(p) for p in probes]))
    cmd = [sys.executable, "-m", "bench.peers", "deepface", "--db", str(db),
           "--probes", str(with_probes), "--out", str(result)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env,
                              cwd=Path(__file__).resolve().parents[1], check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"DeepFace.find did not finish in {timeout_s:.0f} s"}
    if done.returncode != 0 or not result.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail) or f"exit {done.returncode}"}
    return json.loads(result.read_text())


def _deepface_child(db: Path, probes: list[str], out: Path) -> None:
    started = time.perf_counter()
    prepare_deepface_weights()
    import deepface
    from deepface import DeepFace

    import_s = time.perf_counter() - started
    calls = []
    for probe in probes:
        start = time.perf_counter()
        try:
            frames = DeepFace.find(img_path=probe, db_path=str(db), model_name="Dlib",
                                   detector_backend="dlib", silent=True)
            error = None
        except ValueError as exc:  # "Face could not be detected": deepface's no-face answer
            frames, error = [], str(exc).splitlines()[0]
        seconds = time.perf_counter() - start
        answer = distance = None
        for frame in frames[:1]:  # the first face found in the probe
            if len(frame):
                answer = Path(str(frame.iloc[0]["identity"])).parent.name
                distance = float(frame.iloc[0]["distance"])
        calls.append({"probe": probe, "seconds": seconds, "answer": answer,
                      "distance": distance, "no_face": error is not None, "error": error})
    times = [c["seconds"] for c in calls]
    rest = times[1:]
    out.write_text(json.dumps({
        "version": deepface.__version__,
        "call": 'DeepFace.find(img_path, db_path, model_name="Dlib", detector_backend="dlib")',
        "import_seconds": import_s,
        "first_call_seconds": times[0],
        "per_probe_seconds_after_first": sum(rest) / len(rest) if rest else None,
        "total_seconds": sum(times),
        "calls": calls,
    }))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="peer runners (the deepface child process)")
    sub = parser.add_subparsers(dest="what", required=True)
    df = sub.add_parser("deepface")
    df.add_argument("--db", type=Path, required=True)
    df.add_argument("--probes", type=Path, required=True, help="JSON list of probe paths")
    df.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    _deepface_child(args.db, json.loads(args.probes.read_text()), args.out)


if __name__ == "__main__":
    main()
