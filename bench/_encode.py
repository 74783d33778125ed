"""Encode a labelled face dataset once (face_recognition, largest face) and cache it as .npz.

Layout: `<DIR>/<Person>/<photo>.jpg`, the folder name is the identity. The cache lives under
`~/.cache/facenet_ray_bench` (or `$FACENET_BENCH_CACHE`), keyed by the dataset's resolved path,
its file list and sizes, and the model settings; it is never written inside the project.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
MODEL = {"detector": "hog", "upsample": 1, "retry_upsample": 2, "jitters": 1, "landmarks": "small"}


def cache_dir() -> Path:
    return Path(os.environ.get("FACENET_BENCH_CACHE", Path.home() / ".cache" / "facenet_ray_bench"))


def list_photos(dataset: Path) -> list[tuple[str, Path]]:
    """(person, path) for every image, sorted by person then file name."""
    out: list[tuple[str, Path]] = []
    for person_dir in sorted(p for p in dataset.iterdir() if p.is_dir()):
        for photo in sorted(person_dir.iterdir()):
            if photo.is_file() and photo.suffix.lower() in IMAGE_SUFFIXES:
                out.append((person_dir.name, photo))
    return out


def _cache_key(dataset: Path, photos: list[tuple[str, Path]]) -> str:
    h = hashlib.sha256()
    h.update(str(dataset.resolve()).encode())
    h.update(repr(sorted(MODEL.items())).encode())
    for person, path in photos:
        h.update(f"{person}/{path.name}:{path.stat().st_size}\n".encode())
    return h.hexdigest()[:20]


def _encode_one(path: str) -> tuple[np.ndarray | None, int]:
    """Largest face's encoding and the upsample that found it (-1: no face)."""
    import face_recognition

    image = face_recognition.load_image_file(path)
    for upsample in (MODEL["upsample"], MODEL["retry_upsample"]):
        boxes = face_recognition.face_locations(image, upsample, model=MODEL["detector"])
        if boxes:
            box = max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))
            enc = face_recognition.face_encodings(
                image, [box], num_jitters=MODEL["jitters"], model=MODEL["landmarks"]
            )
            return np.asarray(enc[0], dtype=np.float32), upsample
    return None, -1


def load_or_encode(dataset: Path, processes: int = 2) -> dict[str, np.ndarray]:
    """Arrays: persons (str), photos (str), encodings (n,128) float32, has_face (bool), upsample."""
    photos = list_photos(dataset)
    key = _cache_key(dataset, photos)
    path = cache_dir() / f"{dataset.resolve().name}-{key}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    print(f"encoding {len(photos)} photos with {processes} processes ...", file=sys.stderr)
    t0 = time.perf_counter()
    ctx = get_context("spawn")
    with ctx.Pool(processes) as pool:
        results = pool.map(_encode_one, [str(p) for _, p in photos], chunksize=8)
    encodings = np.zeros((len(photos), 128), dtype=np.float32)
    has_face = np.zeros(len(photos), dtype=bool)
    upsample = np.full(len(photos), -1, dtype=np.int8)
    for i, (enc, up) in enumerate(results):
        if enc is not None:
            encodings[i] = enc
            has_face[i] = True
            upsample[i] = up
    data = {
        "persons": np.array([p for p, _ in photos]),
        "photos": np.array([p.name for _, p in photos]),
        "encodings": encodings,
        "has_face": has_face,
        "upsample": upsample,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **data)
    os.replace(tmp, path)
    print(
        f"encoded in {time.perf_counter() - t0:.0f}s, {int(has_face.sum())}/{len(photos)} with a "
        f"face; cached at {path}",
        file=sys.stderr,
    )
    return data
