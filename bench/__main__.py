"""facenet_ray's benchmarks in one place, each number printed next to a peer from the same run.

    python -m bench all --dataset DIR [--out bench/results/results.json] [--people N] [--quick]
    python -m bench index|search|accuracy|scale|encode [--dataset DIR] [...]

DIR is a labelled gallery, `<person>/<photo>` (LFW layout). It is read, never copied into the
project: the parts that need files see hard links (or copies) of its photos in a temporary
folder. Without `--dataset` (or when DIR is missing) the parts that need one say so and are
skipped; the command still exits 0.

Parts:
- index: photos/s to index the gallery through the real service (a local Ray with every CPU,
  loadDirs + startAutoDistrib, until every shard has encoded everything) against the plain
  face_recognition loop in one process and in a pool of os.cpu_count() processes;
- search: the time to answer the probes over HTTP (createTask + poll), against the
  face_recognition command line (which re-encodes the known people on every run) and against
  DeepFace.find(model_name="Dlib", detector_backend="dlib");
- accuracy: bench.accuracy (rank-1, false accepts, no-face; product rule vs plain 0.6);
- scale: bench.scale's functions (fake encoder: placement moves, search at 10k/100k/1M faces
  over 1 and 2 shards vs a numpy scan, distribution files/s and getLag during it);
- encode: bench.encode_bench (large-photo encoding vs plain face_recognition).

Split of the dataset (seed `--seed`): every person with >= 2 photos gives one probe photo;
`--holdout` of those persons are held out entirely (their probe must come back not found);
the gallery is every other photo of the other persons, one-photo persons included. Of the
probes, `--probes` are used, held-out ones in the same proportion.

Outputs: the JSON at `--out`, and beside it `<stem>.png` (plot) and `<stem>.md` (the table).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import peers, report

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "results.json"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
PARTS = ("index", "search", "accuracy", "scale", "encode")


# -- the dataset and its split ------------------------------------------------------------------


@dataclass
class Probe:
    person: str
    path: Path
    enrolled: bool  # False: the person is held out, the right answer is "not found"


@dataclass
class Split:
    dataset: Path
    persons: int
    gallery: list[tuple[str, Path]]
    probes: list[Probe]

    def describe(self) -> dict:
        return {
            "dataset": str(self.dataset),
            "persons_used": self.persons,
            "gallery_persons": len({p for p, _ in self.gallery}),
            "gallery_photos": len(self.gallery),
            "probes": len(self.probes),
            "enrolled_probes": sum(p.enrolled for p in self.probes),
            "held_out_probes": sum(not p.enrolled for p in self.probes),
        }


def list_photos(dataset: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for person_dir in sorted(p for p in dataset.iterdir() if p.is_dir()):
        photos = sorted(
            p for p in person_dir.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p.stat().st_size > 0
        )
        if photos:
            out[person_dir.name] = photos
    return out


def make_split(dataset: Path, people: int | None, probes: int, holdout: float,
               seed: int) -> Split:
    rng = np.random.default_rng(seed)
    photos = list_photos(dataset)
    names = sorted(photos)
    if people and people < len(names):
        names = sorted(rng.choice(names, size=people, replace=False).tolist())
    multi = [p for p in names if len(photos[p]) >= 2]
    n_held = round(holdout * len(multi))
    held = set(rng.choice(multi, size=n_held, replace=False).tolist()) if n_held else set()
    probe_of = {p: photos[p][int(rng.integers(len(photos[p])))] for p in multi}
    enrolled = [Probe(p, probe_of[p], True) for p in multi if p not in held]
    held_out = [Probe(p, probe_of[p], False) for p in multi if p in held]
    total = len(enrolled) + len(held_out)
    if probes < total:  # keep the held-out share
        k_held = min(len(held_out), round(probes * len(held_out) / total))
        k_enrolled = min(len(enrolled), probes - k_held)
        enrolled = [enrolled[i] for i in sorted(rng.choice(len(enrolled), k_enrolled, False))]
        held_out = [held_out[i] for i in sorted(rng.choice(len(held_out), k_held, False))]
    gallery = [
        (p, path) for p in names if p not in held for path in photos[p] if path != probe_of.get(p)
    ]
    return Split(dataset, len(names), gallery, enrolled + held_out)


def link(src: Path, dst: Path) -> None:
    """Hard-link (same disk) or copy a photo into the benchmark's temporary folder."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


@dataclass
class Workspace:
    """Temporary views of the split: the gallery, the probes, the CLI's flat known folder."""

    root: Path
    gallery: Path
    probes: list[Path]  # same order as split.probes
    known: Path
    deepface_db: Path

    @classmethod
    def build(cls, split: Split, root: Path) -> Workspace:
        gallery, probes_dir, known = root / "gallery", root / "probes", root / "known"
        for person, path in split.gallery:
            link(path, gallery / person / path.name)
            flat = known / f"{person}{path.suffix.lower()}"
            if not flat.exists():  # the CLI knows a person by one photo, named after them
                link(path, flat)
        probes = []
        for i, probe in enumerate(split.probes):
            target = probes_dir / f"probe{i:04d}{probe.path.suffix.lower()}"
            link(probe.path, target)
            probes.append(target)
        db = root / "deepface-db"  # DeepFace.find writes its .pkl into db_path: its own copy
        for person, path in split.gallery:
            link(path, db / person / path.name)
        return cls(root, gallery, probes, known, db)


def score(probes: list[Probe], answers: list[dict]) -> dict:
    """answers[i]: {"found": bool, "person": str|None, "no_face": bool} for probes[i]."""
    enrolled = [(p, a) for p, a in zip(probes, answers, strict=True) if p.enrolled]
    held = [(p, a) for p, a in zip(probes, answers, strict=True) if not p.enrolled]
    return {
        "enrolled": len(enrolled),
        "held_out": len(held),
        "rank1": sum(a["found"] and a["person"] == p.person for p, a in enrolled)
        / max(1, len(enrolled)),
        "wrong_person": sum(a["found"] and a["person"] != p.person for p, a in enrolled)
        / max(1, len(enrolled)),
        "false_accept": sum(a["found"] for _, a in held) / max(1, len(held)),
        "no_face": sum(a["no_face"] for _, a in enrolled + held) / max(1, len(probes)),
    }


# -- machine-wide CPU use, to tell "not parallel" from "machine busy" ------------------------


class CpuMeter:
    """Busy fraction of all CPUs between start() and stop(), from /proc/stat (None elsewhere)."""

    @staticmethod
    def _read() -> tuple[int, int] | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except OSError:
            return None
        values = [int(v) for v in fields]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values), idle

    def __enter__(self) -> CpuMeter:
        self.start = self._read()
        self.busy: float | None = None
        return self

    def __exit__(self, *exc) -> None:
        end = self._read()
        if self.start and end and end[0] > self.start[0]:
            self.busy = 1 - (end[1] - self.start[1]) / (end[0] - self.start[0])


# -- the service ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ray(cpus: int) -> None:
    """A new local Ray (never someone else's running cluster) with `cpus` CPUs."""
    import ray

    from facenet_ray.config import NAMESPACE

    os.environ.pop("RAY_ADDRESS", None)
    ray.init(address="local", num_cpus=cpus, namespace=NAMESPACE, include_dashboard=False,
             log_to_driver=False, configure_logging=False)


def stop_ray() -> None:
    import ray
    from ray import serve

    if ray.is_initialized():
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()


class Service:
    """facenet_ray on a fresh local Ray: catalog, distributor, coordinator, shards, gateway."""

    def __init__(self, gallery: Path, data_dir: Path, cpus: int) -> None:
        self.gallery, self.data_dir, self.cpus = gallery, data_dir, cpus

    def __enter__(self) -> Service:
        import httpx

        from facenet_ray.config import Settings
        from facenet_ray.gateway import deploy
        from facenet_ray.runtime import start_service

        t0 = time.perf_counter()
        start_ray(self.cpus)
        self.settings = Settings(data_dir=self.data_dir, gallery_dir=self.gallery,
                                 port=free_port())
        start_service(self.settings)
        self.url = deploy(self.settings)
        key = (self.data_dir / "admin.key").read_text().strip()
        self.http = httpx.Client(headers={"X-API-Key": key}, timeout=120)
        self.startup_s = time.perf_counter() - t0
        return self

    def __exit__(self, *exc) -> None:
        from facenet_ray.runtime import stop_service

        with contextlib.suppress(Exception):
            self.http.close()
        with contextlib.suppress(Exception):
            stop_service()
        stop_ray()

    def get(self, path: str, **params):
        response = self.http.get(f"{self.url}{path}", params=params or None)
        response.raise_for_status()
        return response.json()

    def job(self, route: str, timeout_s: float = 3600) -> dict:
        job_id = self.get(route)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.get(f"/jobs/{job_id}")
            if job["status"] in ("done", "failed"):
                if job["status"] == "failed":
                    raise RuntimeError(f"{route} failed: {job.get('error')}")
                return job
            time.sleep(0.1)
        raise TimeoutError(f"{route} did not finish in {timeout_s} s")

    def servers(self) -> list[str]:
        return [s for s in self.get("/distribution/getServersList").split(",") if s]

    def wait_encoded(self, timeout_s: float = 3600) -> list[dict]:
        """Block until no shard has a photo waiting to be encoded; their pings after that."""
        import ray

        from facenet_ray.runtime import actor, shard_name

        deadline = time.monotonic() + timeout_s
        shards = [actor(shard_name(s)) for s in self.servers()]
        for shard in shards:
            while not ray.get(shard.wait_idle.remote(60.0)):
                if time.monotonic() > deadline:
                    raise TimeoutError("shards still encoding")
        return ray.get([s.ping.remote() for s in shards])

    def index(self) -> dict:
        """loadDirs + startAutoDistrib, then until every shard's `pending` is 0."""
        import ray

        low = [float(self.cpus)]
        stop = threading.Event()

        def sample() -> None:  # the fewest CPUs Ray had free: how many encoders ran at once
            while not stop.is_set():
                with contextlib.suppress(Exception):
                    low[0] = min(low[0], ray.available_resources().get("CPU", 0.0))
                stop.wait(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        with CpuMeter() as meter:
            start = time.perf_counter()
            sampler.start()
            self.job("/distribution/loadDirs")
            loaded = time.perf_counter()
            self.job("/distribution/startAutoDistrib")
            distributed = time.perf_counter()
            pings = self.wait_encoded()
            end = time.perf_counter()
            stop.set()
            sampler.join()
        photos = sum(p["photos"] for p in pings)
        return {
            "photos": photos,
            "faces": sum(p["faces"] for p in pings),
            "persons": sum(p["persons"] for p in pings),
            "servers": len(pings),
            "ray_cpus": self.cpus,
            "seconds": end - start,
            "photos_per_s": photos / (end - start),
            "load_s": loaded - start,
            "distribute_s": distributed - loaded,
            "encode_tail_s": end - distributed,
            "peak_cpus_reserved": self.cpus - low[0],
            "machine_cpu_busy": meter.busy,
            "service_startup_s": self.startup_s,
        }

    def _submit(self, path: Path) -> str:
        with path.open("rb") as f:
            response = self.http.post(
                f"{self.url}/createTask", files={"filedata": (path.name, f, "image/jpeg")}
            )
        response.raise_for_status()
        return response.json()

    def _wait_task(self, task_id: str, timeout_s: float = 300) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            task = self.get(f"/tasks/{task_id}")
            if task["status"] in ("done", "failed"):
                return task
            time.sleep(0.01)
        raise TimeoutError(f"task {task_id} not done in {timeout_s} s")

    def search(self, probes: list[Path], warmup: Path) -> dict:
        """One request at a time (latency), then all submitted at once (throughput)."""
        self._wait_task(self._submit(warmup))
        latencies, tasks = [], []
        start = time.perf_counter()
        for path in probes:
            t = time.perf_counter()
            tasks.append(self._wait_task(self._submit(path)))
            latencies.append(time.perf_counter() - t)
        sequential = time.perf_counter() - start
        start = time.perf_counter()
        ids = [self._submit(path) for path in probes]
        concurrent = [self._wait_task(i) for i in ids]
        concurrent_s = time.perf_counter() - start
        encode = [t["timings"].get("encode_ms") for t in tasks if t["timings"].get("encode_ms")]
        search = [
            v for t in tasks for ms in t["timings"].get("search_ms", [])
            for v in (ms.values() if isinstance(ms, dict) else [ms])
        ]
        return {
            "probes": len(probes),
            "sequential_seconds": sequential,
            "latency_p50_ms": 1000 * float(np.percentile(latencies, 50)),
            "latency_p95_ms": 1000 * float(np.percentile(latencies, 95)),
            "encode_p50_ms": float(np.percentile(encode, 50)) if encode else None,
            "shard_search_p50_ms": float(np.percentile(search, 50)) if search else None,
            "concurrent_seconds": concurrent_s,
            "concurrent_failed": sum(t["status"] != "done" for t in concurrent),
            "failed": sum(t["status"] != "done" for t in tasks),
            "answers": [
                {"found": bool(t.get("found")), "person": t.get("faceId"),
                 "distance": t.get("distance"), "no_face": t.get("reason") == "no_face",
                 "reason": t.get("reason")}
                for t in tasks
            ],
        }


# -- the parts ------------------------------------------------------------------------------------


def dataset_parts(args, results: dict, save) -> None:
    """index and/or search: they share one split, one workspace and one running service."""
    want = {p for p in ("index", "search") if p in args.parts}
    if not want:
        return
    if not args.dataset or not args.dataset.is_dir():
        why = "no --dataset given" if not args.dataset else f"dataset {args.dataset} not found"
        for part in sorted(want):
            results[part] = {"skipped": why}
            print(f"{part}: skipped ({why})")
        return
    split = make_split(args.dataset, args.people, args.probes, args.holdout, args.seed)
    results["split"] = split.describe()
    print(f"split: {json.dumps(results['split'])}")
    if not split.gallery:
        results.update({p: {"skipped": "empty gallery"} for p in want})
        return
    cpus = args.cpus or os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="facenet-bench-", dir=args.work_dir))
    try:
        ws = Workspace.build(split, work)
        paths = [ws.gallery / person / path.name for person, path in split.gallery]
        if "index" in want:
            index = results["index"] = {}
            print(f"index: plain face_recognition, 1 process, {len(paths)} photos ...")
            with CpuMeter() as meter:
                index["face_recognition_1_process"] = peers.plain_index(paths)
            index["face_recognition_1_process"]["machine_cpu_busy"] = meter.busy
            report.show_progress("  ", index["face_recognition_1_process"])
            if "pool" not in args.skip:
                print(f"index: plain face_recognition, pool of {cpus} processes ...")
                with CpuMeter() as meter:
                    index["face_recognition_pool"] = peers.pool_index(paths, cpus)
                index["face_recognition_pool"]["machine_cpu_busy"] = meter.busy
                report.show_progress("  ", index["face_recognition_pool"])
            save()
        print(f"index: facenet_ray service, local Ray with {cpus} CPUs ...")
        with Service(ws.gallery, work / "data", cpus) as service:
            ours = service.index()
            report.show_progress("  ", ours)
            if "index" in want:
                results["index"]["facenet_ray"] = ours
                results["index"]["ratios"] = report.index_ratios(results["index"])
                save()
            if "search" in want and split.probes:
                print(f"search: facenet_ray, {len(split.probes)} probes over HTTP ...")
                ours_search = service.search(ws.probes, warmup=paths[0])
                ours_search["score"] = score(split.probes, ours_search["answers"])
                results["search"] = {"facenet_ray": ours_search}
                report.show_progress("  ", ours_search)
        save()
        if "search" in want and split.probes:
            search_peers(args, split, ws, results["search"], cpus)
            results["search"]["ratios"] = report.search_ratios(results["search"])
            save()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"workspace kept at {work}")


def search_peers(args, split: Split, ws: Workspace, out: dict, cpus: int) -> None:
    by_path = {str(p): probe for p, probe in zip(ws.probes, split.probes, strict=True)}
    if "cli" not in args.skip:
        print("search: face_recognition CLI ...")
        try:
            cli = peers.cli_search(ws.known, ws.probes, args.cli_runs, cpus)
            answers = []
            for path in ws.probes:
                r = cli["results"].get(str(path), {})
                answers.append({"found": r.get("answer") is not None, "person": r.get("answer"),
                                "no_face": bool(r.get("no_face"))})
            cli["score"] = score(split.probes, answers)
            cli["answers"] = answers
            del cli["results"]
            out["face_recognition_cli"] = cli
            report.show_progress("  ", cli)
        except Exception as exc:  # the benchmark goes on without this peer
            out["face_recognition_cli"] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"  face_recognition CLI could not run: {exc}")
    if "deepface" not in args.skip:
        print(f"search: DeepFace.find (Dlib), {len(ws.probes)} probes ...")
        df = peers.deepface_search(ws.deepface_db, ws.probes)
        if "error" in df:
            print(f"  deepface could not run: {df['error']}")
        else:
            answers = [{"found": c["answer"] is not None, "person": c["answer"],
                        "no_face": c["no_face"]} for c in df["calls"]]
            df["score"] = score([by_path[c["probe"]] for c in df["calls"]], answers)
            report.show_progress("  ", df)
        out["deepface"] = df


def accuracy_part(args, results: dict) -> None:
    if not args.dataset or not args.dataset.is_dir():
        why = "no --dataset given" if not args.dataset else f"dataset {args.dataset} not found"
        results["accuracy"] = {"skipped": why}
        print(f"accuracy: skipped ({why})")
        return
    try:
        from bench import accuracy
    except ImportError as exc:
        results["accuracy"] = {"skipped": f"bench.accuracy not available ({exc})"}
        print(f"accuracy: skipped, bench.accuracy is not importable ({exc})")
        return
    argv = ["--dataset", str(args.dataset), "--processes", str(args.cpus or os.cpu_count() or 1)]
    if args.quick:
        argv += ["--seeds", "1", "--calib-seeds", "1", "--distractors"]
    argv += args.accuracy_args
    with tempfile.TemporaryDirectory(prefix="facenet-bench-acc-") as tmp:
        out = Path(tmp) / "accuracy.json"
        print(f"accuracy: python -m bench.accuracy {' '.join(argv)}")
        start = time.perf_counter()
        code = accuracy.main([*argv, "--out", str(out)])
        seconds = time.perf_counter() - start
        if not out.exists():
            results["accuracy"] = {"skipped": f"bench.accuracy wrote no results (exit {code})"}
            return
        full = json.loads(out.read_text())
    results["accuracy"] = {"argv": argv, "seconds": seconds, **report.accuracy_pair(full),
                           "full": full}


def scale_part(args, results: dict) -> None:
    from bench import scale

    faces = args.scale_faces or ([10_000] if args.quick else [10_000, 100_000, 1_000_000])
    folders = args.scale_folders if args.scale_folders is not None else (
        100 if args.quick else 10_000)
    files = args.scale_files or (2 if args.quick else 5)
    out: dict = {"faces": faces, "shards": args.scale_shards}
    results["scale"] = out
    port = free_port()
    start_ray(args.cpus or os.cpu_count() or 1)
    try:
        from ray import serve

        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        out["placement"] = scale.bench_placement()
        report.show_progress("  placement ", out["placement"])
        out["search"] = []
        for n in faces:
            for shards in args.scale_shards:
                r = scale.bench_search(n, shards=shards, probes=20 if args.quick else 50)
                out["search"].append(r)
                report.show_progress(f"  search {n:,} faces / {shards} shard(s) ", r)
        if folders:
            out["distribution"] = scale.bench_distribution(folders, files, port)
            report.show_progress("  distribution ", out["distribution"])
    finally:
        stop_ray()


ENCODE_PATTERNS = {
    "facenet_ray_photos_per_s": r"facenet_ray Encoder:\s+([\d.]+) photos/s",
    "face_recognition_photos_per_s": r"plain face_recognition:\s+([\d.]+) photos/s",
    "speedup": r"speed-up:\s+([\d.]+)x",
    "rescan_large_files_per_s": r"rescan large photos: .*?\(([\d,]+) files/s\)",
    "rescan_fake_files_per_s": r"rescan fake gallery: .*?\(([\d,]+) files/s\)",
}


def encode_part(args, results: dict) -> None:
    argv = [sys.executable, "-m", "bench.encode_bench"]
    argv += ["--size", "1200", "--rescan-files", "500"] if args.quick else []
    print(f"encode: {' '.join(argv[1:])}")
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    out: dict = {"argv": argv[1:], "seconds": time.perf_counter() - start,
                 "exit": done.returncode}
    for key, pattern in ENCODE_PATTERNS.items():
        m = re.search(pattern, done.stdout)
        out[key] = float(m.group(1).replace(",", "")) if m else None
    agree = re.search(r"same-person decisions .*?: (\d+)/(\d+) pairs agree", done.stdout)
    out["same_person_agreement"] = f"{agree.group(1)}/{agree.group(2)}" if agree else None
    m = re.search(r"(\d+) photos, longer side (\S+ px)", done.stdout)
    out["photos"], out["sizes"] = (int(m.group(1)), m.group(2)) if m else (None, None)
    out["stdout"] = done.stdout
    if done.returncode:
        out["error"] = done.stderr.strip().splitlines()[-1:] or ["failed"]
    results["encode"] = out
    report.show_progress("  ", {k: v for k, v in out.items() if k != "stdout"})


# -- command line ---------------------------------------------------------------------------------


def meta(args) -> dict:
    from importlib import metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True, check=False).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=ROOT, capture_output=True, text=True,
                                check=False).stdout.strip())
    return {
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "commit": commit + ("-dirty" if dirty else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {n: version(n) for n in ("ray", "face-recognition", "dlib-bin", "numpy",
                                              "deepface", "facenet-ray")},
        "loadavg_start": os.getloadavg(),
        "quick": args.quick,
        "people": args.people,
        "probes": args.probes,
    }


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dataset", type=Path, help="labelled gallery <person>/<photo>")
    common.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="results JSON (the .png and .md go beside it)")
    common.add_argument("--quick", action="store_true",
                        help="small everything: 10 probes, 1 CLI run, 1 seed, small scale")
    common.add_argument("--people", type=int, help="use this many persons of the dataset")
    common.add_argument("--probes", type=int, help="probes to search (default 100; quick 10)")
    common.add_argument("--holdout", type=float, default=0.2,
                        help="share of the >=2-photo persons held out of the gallery")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--cpus", type=int, help="CPUs for Ray and the pool (default: all)")
    common.add_argument("--cli-runs", type=int,
                        help="one-probe runs of the face_recognition CLI (default 3; quick 1)")
    common.add_argument("--skip", nargs="*", default=[],
                        choices=["pool", "cli", "deepface", *PARTS], help="parts or peers to skip")
    common.add_argument("--scale-faces", type=int, nargs="*",
                        help="gallery sizes for the scale search (default 10k 100k 1M)")
    common.add_argument("--scale-shards", type=int, nargs="*", default=[1, 2])
    common.add_argument("--scale-folders", type=int,
                        help="folders for the scale distribution (default 10000; 0 skips)")
    common.add_argument("--scale-files", type=int, help="files per folder there (default 5)")
    common.add_argument("--accuracy-args", nargs=argparse.REMAINDER, default=[],
                        help="passed on to bench.accuracy (put last)")
    common.add_argument("--work-dir", type=Path, help="where the temporary views go (/tmp)")
    common.add_argument("--keep", action="store_true", help="keep the temporary views")
    main_parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2],
    )
    sub = main_parser.add_subparsers(dest="command", required=True)
    sub.add_parser("all", parents=[common], help="every part, one table")
    sub.add_parser("index", parents=[common], help="indexing photos/s vs face_recognition")
    sub.add_parser("search", parents=[common], help="repeated search vs the CLI and deepface")
    sub.add_parser("accuracy", parents=[common], help="bench.accuracy, summarised")
    sub.add_parser("scale", parents=[common], help="bench.scale's functions (fake encoder)")
    sub.add_parser("encode", parents=[common], help="bench.encode_bench (large photos)")
    return main_parser


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    args.parts = [p for p in (PARTS if args.command == "all" else (args.command,))
                  if p not in args.skip]
    args.probes = args.probes or (10 if args.quick else 100)
    args.cli_runs = args.cli_runs or (1 if args.quick else 3)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    results: dict = {"meta": meta(args)}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        results["meta"]["loadavg_end"] = os.getloadavg()
        report.write_json(results, args.out)

    started = time.perf_counter()
    dataset_parts(args, results, save)
    if "accuracy" in args.parts:
        accuracy_part(args, results)
        save()
    if "scale" in args.parts:
        print("scale (fake encoder) ...")
        scale_part(args, results)
        save()
    if "encode" in args.parts:
        encode_part(args, results)
        save()
    results["meta"]["seconds"] = time.perf_counter() - started
    save()
    rows = report.rows(results)
    table = report.markdown_table(rows, results)
    print("\n" + table)
    args.out.with_suffix(".md").write_text(table + "\n")
    plot = report.plot(results, args.out.with_suffix(".png"))
    print(f"\nresults: {args.out}\ntable:   {args.out.with_suffix('.md')}")
    print(f"plot:    {plot}" if isinstance(plot, Path) else f"plot:    not drawn ({plot})")
    return results


if __name__ == "__main__":
    main()
