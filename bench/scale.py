"""Scale benchmark with the fake encoder: placement moves, search over 100k/1M faces, distribution.

    python -m bench.scale [--faces 100000 1000000] [--folders 10000 --files 5] [--out FILE]

Each number is printed next to a peer measured in the same run:
- placement: folders moved when a third server joins, against the ideal 1/3;
- search: facenet_ray's scatter/gather over 2 shard actors, against one numpy brute-force
  `face_recognition.face_distance`-style scan of the same matrix in this process;
- distribution: files/s through the real service (loadDirs + startAutoDistrib, checksums
  confirmed by the servers), against a plain `shutil.copytree` of the same gallery, with the
  gateway's `/getLag` sampled every 50 ms throughout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def bench_placement(folders: int = 10_000) -> dict:
    from facenet_ray.placement import moved, plan

    names = [f"person {i}" for i in range(folders)]
    two = plan(names, {"a": 4, "b": 4})
    three = plan(names, {"a": 4, "b": 4, "c": 4})
    n = moved(two, three)
    weighted = plan(names, {"a": 1, "b": 2, "c": 4})
    shares = {s: sum(1 for v in weighted.values() if v == s) / folders for s in "abc"}
    return {
        "folders": folders, "moved_when_third_joins": n, "moved_fraction": n / folders,
        "ideal_fraction": 1 / 3, "ratio_to_ideal": (n / folders) / (1 / 3),
        "shares_for_weights_1_2_4": shares,
    }


def bench_search(total_faces: int, shards: int = 2, probes: int = 50) -> dict:
    import ray

    from facenet_ray.index import FaceIndex, merge_candidates

    @ray.remote(num_cpus=0)
    class IndexShard:
        """A shard's index alone, filled with random faces (no photos needed for this)."""

        def __init__(self, n: int, seed: int) -> None:
            rng = np.random.default_rng(seed)
            self.index = FaceIndex()
            per_person = 5
            for start in range(0, n, 10_000):
                block = rng.normal(0, 0.1, (min(10_000, n - start), 128)).astype(np.float32)
                for j in range(0, len(block), per_person):
                    self.index.add(f"p{seed}-{start + j}", "x.jpg", block[j:j + per_person])

        def search(self, probe, k):
            return self.index.search(probe, k)

        def size(self):
            return len(self.index), self.index.nbytes

    per_shard = total_faces // shards
    actors = [IndexShard.remote(per_shard, seed) for seed in range(shards)]
    sizes = ray.get([a.size.remote() for a in actors])
    rng = np.random.default_rng(99)
    queries = rng.normal(0, 0.1, (probes, 128)).astype(np.float32)
    ray.get([a.search.remote(queries[0], 5) for a in actors])  # warm up
    ours = []
    for q in queries:
        start = time.perf_counter()
        merge_candidates(ray.get([a.search.remote(q, 5) for a in actors]), 5)
        ours.append((time.perf_counter() - start) * 1000)
    for a in actors:
        ray.kill(a)

    # Peer: the whole matrix in one process, scanned with face_recognition's formula.
    matrix = np.random.default_rng(0).normal(0, 0.1, (total_faces, 128)).astype(np.float32)
    peer = []
    for q in queries[:10]:
        start = time.perf_counter()
        d = np.linalg.norm(matrix - q, axis=1)
        np.argpartition(d, 5)[:5]
        peer.append((time.perf_counter() - start) * 1000)
    del matrix
    faces = sum(s[0] for s in sizes)
    return {
        "faces": faces, "shards": shards,
        "p50_ms": percentile(ours, 50), "p99_ms": percentile(ours, 99),
        "peer_numpy_scan_p50_ms": percentile(peer, 50),
        "speedup_vs_peer": percentile(peer, 50) / percentile(ours, 50),
        "index_bytes_per_face": sum(s[1] for s in sizes) / faces,
    }


def bench_distribution(folders: int, files: int, port: int) -> dict:
    import httpx
    import ray

    from facenet_ray import auth
    from facenet_ray.config import Settings
    from facenet_ray.gateway import deploy
    from facenet_ray.runtime import actor, start_service, stop_service

    root = Path(tempfile.mkdtemp(prefix="facenet-scale-"))
    gallery = root / "gallery"
    for i in range(folders):
        folder = gallery / f"person {i:05d}"
        folder.mkdir(parents=True)
        for j in range(files):
            (folder / f"photo {j}.jpg").write_bytes(os.urandom(2048))
    total_files = folders * files

    start = time.perf_counter()
    shutil.copytree(gallery, root / "peer-copy")
    peer_s = time.perf_counter() - start

    settings = Settings(data_dir=root / "data", gallery_dir=gallery, encoder="fake", port=port)
    start_service(settings)
    url = deploy(settings)
    key = auth.generate_key()
    ray.get(actor("catalog").add_key.remote("bench", auth.hash_key(key), "admin"))
    client = httpx.Client(headers={"X-API-Key": key}, timeout=30)
    lags: list[float] = []
    running = threading.Event()
    running.set()

    def sample() -> None:
        while running.is_set():
            lags.append(float(client.get(f"{url}/getLag").json()))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    timings = {}
    for kind, path in (("load", "loadDirs"), ("distribute", "startAutoDistrib")):
        start = time.perf_counter()
        job_id = client.get(f"{url}/distribution/{path}").json()
        while client.get(f"{url}/jobs/{job_id}").json()["status"] not in ("done", "failed"):
            time.sleep(0.2)
        timings[kind] = time.perf_counter() - start
    running.clear()
    sampler.join()
    distributed = client.get(f"{url}/distribution/count", params={"distributed": 1}).json()
    stop_service()
    shutil.rmtree(root, ignore_errors=True)
    return {
        "folders": folders, "files": total_files, "distributed_folders": distributed,
        "load_s": timings["load"], "distribute_s": timings["distribute"],
        "files_per_s": total_files / timings["distribute"],
        "peer_copytree_files_per_s": total_files / peer_s,
        "getLag_p50_ms": percentile(lags, 50), "getLag_p99_ms": percentile(lags, 99),
        "getLag_samples": len(lags),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--faces", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--folders", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=5)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import ray
    from ray import serve

    os.environ.setdefault("RAY_enable_worker_prestart", "0")
    ray.init(namespace="facenet", include_dashboard=False, log_to_driver=False)
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": args.port})
    results: dict = {"placement": bench_placement()}
    p = results["placement"]
    print(f"placement: third server takes {p['moved_fraction']:.3f} of folders "
          f"(ideal 0.333, ratio {p['ratio_to_ideal']:.2f})")
    results["search"] = []
    for n in args.faces:
        r = bench_search(n)
        results["search"].append(r)
        print(f"search {r['faces']:>9,} faces / {r['shards']} shards: p50 {r['p50_ms']:.1f} ms, "
              f"p99 {r['p99_ms']:.1f} ms; numpy scan peer {r['peer_numpy_scan_p50_ms']:.1f} ms "
              f"({r['speedup_vs_peer']:.1f}x); {r['index_bytes_per_face']:.0f} B/face")
    if args.folders:
        d = bench_distribution(args.folders, args.files, args.port)
        results["distribution"] = d
        print(f"distribution {d['folders']} folders / {d['files']} files: "
              f"{d['files_per_s']:.0f} files/s (copytree peer {d['peer_copytree_files_per_s']:.0f}"
              f" files/s); load {d['load_s']:.1f} s; getLag p50 {d['getLag_p50_ms']:.1f} ms, "
              f"p99 {d['getLag_p99_ms']:.1f} ms over {d['getLag_samples']} samples")
    results["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    serve.shutdown()
    ray.shutdown()
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
