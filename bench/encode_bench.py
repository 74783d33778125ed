"""Encoding speed on large photos: facenet_ray's Encoder against plain face_recognition.

    python -m bench.encode_bench [--photos DIR] [--size 2400] [--rescan-files 5000]

Without `--photos`, the portraits of tests/data/faces are upscaled to `--size` pixels on the
longer side (phone-camera size) into a temporary gallery. Both encoders read the same files in
the same run; the report gives photos/s, the speed-up, each photo's distance between the two
encodings and whether the two agree on every same-person decision. Then it times a rescan of
the unchanged gallery through EncodingCache (a fingerprint check per file, no encoder call),
once on that gallery and once on `--rescan-files` small files with the fake encoder.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image

from facenet_ray.config import Settings
from facenet_ray.faces import Detection, Encoder, FakeEncoder
from facenet_ray.index import CacheEntry, EncodingCache

FACES = Path(__file__).resolve().parents[1] / "tests" / "data" / "faces"
SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def list_photos(gallery: Path) -> list[tuple[str, Path]]:
    """(person, path) for each photo in `<gallery>/<person>/`, or loose in `gallery` itself."""
    photos = []
    for path in sorted(gallery.rglob("*")):
        if path.is_file() and path.suffix.lower() in SUFFIXES:
            person = path.parent.name if path.parent != gallery else path.stem
            photos.append((person, path))
    return photos


def build_large_gallery(source: Path, size: int, out: Path) -> Path:
    for person, path in list_photos(source):
        image = Image.open(path).convert("RGB")
        scale = size / max(image.size)
        large = image.resize(
            (round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS
        )
        (out / person).mkdir(parents=True, exist_ok=True)
        large.save(out / person / path.name, "JPEG", quality=92)
    return out


def time_encoders(photos: list[tuple[str, Path]], encoder: Encoder) -> None:
    import face_recognition

    warm = np.zeros((64, 64, 3), np.uint8)
    encoder.detect(warm)
    face_recognition.face_locations(warm)

    start = time.perf_counter()
    ours = [encoder.encode_file(path) for _, path in photos]
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    plain = [
        face_recognition.face_encodings(face_recognition.load_image_file(path))
        for _, path in photos
    ]
    plain_s = time.perf_counter() - start

    n = len(photos)
    print(f"{n} photos, longer side {describe_sizes(photos)}")
    print(f"facenet_ray Encoder:      {n / ours_s:6.2f} photos/s  ({ours_s:.1f} s)")
    print(f"plain face_recognition:   {n / plain_s:6.2f} photos/s  ({plain_s:.1f} s)")
    print(f"speed-up:                 {plain_s / ours_s:6.2f}x")
    print(f"{'photo':40s} faces ours/plain   distance ours-plain (largest face)")
    for (person, path), detection, encodings in zip(photos, ours, plain, strict=True):
        distance = nearest_distance(detection, encodings)
        shown = "-" if distance is None else f"{distance:.3f}"
        name = f"{person}/{path.name}"
        print(f"{name:40s} {len(detection.faces):4d}/{len(encodings):<4d}        {shown}")
    tolerance = encoder.settings.tolerance
    agree, pairs = same_person_agreement(ours, plain, tolerance)
    print(f"same-person decisions (tolerance {tolerance}): {agree}/{pairs} pairs agree")


def describe_sizes(photos: list[tuple[str, Path]]) -> str:
    sides = [max(Image.open(path).size) for _, path in photos]
    return f"{min(sides)}-{max(sides)} px"


def nearest_distance(detection: Detection, plain: list[np.ndarray]) -> float | None:
    """Distance from our largest face to the nearest face plain face_recognition found."""
    if not detection.faces or not plain:
        return None
    return float(np.linalg.norm(np.asarray(plain) - detection.faces[0].encoding, axis=1).min())


def same_person_agreement(
    ours: list[Detection], plain: list[list[np.ndarray]], tolerance: float
) -> tuple[int, int]:
    """Over photo pairs where both found a face: how often both say "same person" alike."""
    vectors = [
        (d.faces[0].encoding, min(p, key=lambda e, o=d.faces[0].encoding: np.linalg.norm(e - o)))
        for d, p in zip(ours, plain, strict=True)
        if d.faces and p
    ]
    agree = pairs = 0
    for (ours_a, plain_a), (ours_b, plain_b) in combinations(vectors, 2):
        pairs += 1
        ours_same = np.linalg.norm(ours_a - ours_b) <= tolerance
        plain_same = np.linalg.norm(plain_a - plain_b) <= tolerance
        agree += bool(ours_same == plain_same)
    return agree, pairs


def scan(
    gallery: Path, cache: EncodingCache, encoder: Encoder | FakeEncoder, model_key: str
) -> int:
    """Bring the cache up to date with the gallery; returns how many photos were encoded."""
    cached = cache.load(model_key)
    entries: dict[tuple[str, str], CacheEntry] = {}
    calls = 0
    for person, path in list_photos(gallery):
        stat = path.stat()
        key = (person, path.name)
        hit = cached.get(key)
        if hit is not None and (hit.size, hit.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
            entries[key] = hit
            continue
        data = path.read_bytes()
        detection = encoder.encode_bytes(data)
        calls += 1
        encodings = np.array([face.encoding for face in detection.faces], np.float32)
        entries[key] = CacheEntry(
            size=stat.st_size,
            mtime_ns=stat.st_mtime_ns,
            sha256=hashlib.sha256(data).hexdigest(),
            encodings=encodings.reshape(-1, 128),
        )
    if calls or len(entries) != len(cached):
        cache.save(entries, model_key)
    return calls


def time_rescan(
    label: str, gallery: Path, cache: EncodingCache, encoder: Encoder | FakeEncoder, key: str
) -> None:
    first = scan(gallery, cache, encoder, key)
    start = time.perf_counter()
    again = scan(gallery, cache, encoder, key)
    seconds = time.perf_counter() - start
    files = len(list_photos(gallery))
    print(
        f"rescan {label}: {files} files in {seconds * 1000:.1f} ms "
        f"({files / seconds:,.0f} files/s); encoder calls: first scan {first}, rescan {again}"
    )


def build_small_gallery(out: Path, files: int) -> Path:
    rng = np.random.default_rng(0)
    for i in range(files):
        folder = out / f"person {i // 5:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"photo {i % 5}.jpg").write_bytes(rng.bytes(2048))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--photos", type=Path, help="folder of large photos (default: upscaled portraits)"
    )
    parser.add_argument(
        "--size", type=int, default=2400, help="longer side of the upscaled portraits"
    )
    parser.add_argument("--rescan-files", type=int, default=5000, help="files in the fake rescan")
    args = parser.parse_args()
    settings = Settings()
    with tempfile.TemporaryDirectory(prefix="encode-bench-") as tmp:
        work = Path(tmp)
        gallery = args.photos or build_large_gallery(FACES, args.size, work / "large")
        photos = list_photos(gallery)
        if not photos:
            raise SystemExit(f"no photos under {gallery}")
        encoder = Encoder(settings)
        time_encoders(photos, encoder)
        cache = EncodingCache(work / "large.parquet")
        time_rescan("large photos", gallery, cache, encoder, settings.model_key)
        small = build_small_gallery(work / "small", args.rescan_files)
        cache = EncodingCache(work / "small.parquet")
        time_rescan("fake gallery", small, cache, FakeEncoder(), "fake-v1")


if __name__ == "__main__":
    main()
