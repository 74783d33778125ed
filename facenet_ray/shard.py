"""The shard actor: one per Ray node, owning that node's photo folders and their face index."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from facenet_ray.config import Settings
from facenet_ray.errors import FacenetError
from facenet_ray.faces import make_encoder
from facenet_ray.index import CacheEntry, Candidate, EncodingCache, FaceIndex
from facenet_ray.store import PhotoInfo, PhotoStore, sha256_file

log = logging.getLogger(__name__)

ENCODE_BATCH = 8  # photos per encoding task: amortises task overhead, keeps progress fine-grained
CACHE_SAVE_EVERY_S = 5.0

BACKGROUND_NICE = 10  # encoding yields the CPU to searches, heartbeats and the gateway

_encoders: dict[str, object] = {}


def background_priority(niceness: int = BACKGROUND_NICE) -> None:
    """Lower this process's CPU priority to `niceness` (never raise it)."""
    current = os.nice(0)
    if current < niceness:
        os.nice(niceness - current)


def _encoder(settings: Settings):
    """One encoder per worker process and model setting: loading dlib's models takes a second."""
    key = settings.model_dump_json()
    if key not in _encoders:
        _encoders[key] = make_encoder(settings)
    return _encoders[key]


def encode_paths(
    items: list[tuple[str, str, str]], settings: Settings
) -> list[tuple[str, str, CacheEntry | None]]:
    """Encode photos from local paths: (person_id, photo, path) -> (person_id, photo, entry).

    A gallery photo stands for its folder's person by its largest face only: the others are
    bystanders, and indexing them under that person would let a stranger match them (the
    accuracy benchmark measures this rule). An entry is None when the file vanished or cannot
    be decoded; a photo without a face gets an entry with zero encodings so that it is not
    encoded again.
    """
    encoder = _encoder(settings)
    out: list[tuple[str, str, CacheEntry | None]] = []
    for person_id, photo, path in items:
        p = Path(path)
        try:
            stat = p.stat()
            digest = sha256_file(p)
            detection = encoder.encode_file(p, max_faces=1)
        except Exception as exc:  # a bad photo must not fail its batch
            log.warning("cannot encode %s/%s: %s", person_id, photo, exc)
            out.append((person_id, photo, None))
            continue
        encodings = np.stack([f.encoding for f in detection.faces]).astype(np.float32) if (
            detection.faces
        ) else np.zeros((0, 128), np.float32)
        out.append(
            (person_id, photo, CacheEntry(stat.st_size, stat.st_mtime_ns, digest, encodings))
        )
    return out


def _encode_in_background(
    items: list[tuple[str, str, str]], settings: Settings
) -> list[tuple[str, str, CacheEntry | None]]:
    background_priority()
    return encode_paths(items, settings)


_encode_task = ray.remote(num_cpus=1, max_retries=2)(_encode_in_background)


@ray.remote(concurrency_groups={"search": 8, "ingest": 4, "admin": 2})
class ShardActor:
    """A worker server: its photo store, its encodings cache and index, and the worker API.

    Searches, ingest and admin calls run in separate concurrency groups so that a long copy or
    an integrity scan never blocks a search. Encoding happens in Ray tasks pinned to this node
    (each takes one CPU), so a node encodes with as many processes as it has CPUs.
    """

    def __init__(self, server_id: str, settings: Settings) -> None:
        self.server_id = server_id
        self.settings = settings
        self.node_id = ray.get_runtime_context().get_node_id()
        root = settings.shard_root(server_id)
        self.store = PhotoStore(root / "photos")
        self.cache_file = EncodingCache(root / "encodings.parquet")
        self.index = FaceIndex()
        self.lock = threading.RLock()  # guards index, entries and the pending queue
        self.entries: dict[tuple[str, str], CacheEntry] = {}
        self.pending: deque[tuple[str, str]] = deque()
        self.encoding = 0
        self.searches = 0
        self.dirty = False
        self.last_save = time.monotonic()
        self.wake = threading.Event()
        self._reload()
        threading.Thread(target=self._encode_loop, name="encoder", daemon=True).start()

    # -- start-up -------------------------------------------------------------------------

    def _reload(self) -> None:
        """Rebuild the index from the Parquet cache; queue only new or changed photos."""
        cached = self.cache_file.load(self.settings.model_key)
        self.store.purge_empty()
        for person_id, photos in self.store.inventory(checksum=False).items():
            for photo, info in photos.items():
                entry = cached.get((person_id, photo))
                path = self.store.photo_path(person_id, photo)
                if entry is not None and entry.size == info.size and (
                    entry.mtime_ns == path.stat().st_mtime_ns
                ):
                    self.entries[(person_id, photo)] = entry
                    if len(entry.encodings):
                        self.index.add(person_id, photo, entry.encodings)
                else:
                    self.pending.append((person_id, photo))
        self.dirty = len(self.entries) != len(cached)
        log.info(
            "shard %s: %d photos from cache, %d to encode",
            self.server_id, len(self.entries), len(self.pending),
        )

    # -- encoding -------------------------------------------------------------------------

    def _encode_loop(self) -> None:
        """Drain the pending queue in batches, as many batches in flight as the node has CPUs."""
        in_flight: dict[ray.ObjectRef, list[tuple[str, str]]] = {}
        # One batch more than the node has CPUs: a CPU that frees finds the next batch waiting.
        max_in_flight = self._node_cpus() + 1
        while True:
            batches = []
            with self.lock:  # taken off the queue here, submitted without the lock
                while self.pending and len(in_flight) + len(batches) < max_in_flight:
                    batch = [self.pending.popleft() for _ in range(min(ENCODE_BATCH,
                                                                       len(self.pending)))]
                    self.encoding += len(batch)
                    batches.append(batch)
            for batch in batches:
                in_flight[self._submit(batch)] = batch
            if not in_flight:
                self._maybe_save(force=self.dirty)
                self.wake.wait(timeout=1.0)
                self.wake.clear()
                continue
            done, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            for ref in done:
                batch = in_flight.pop(ref)
                try:
                    results = ray.get(ref)
                except Exception as exc:
                    log.warning("encoding batch failed on %s: %s", self.server_id, exc)
                    results = [(p, f, None) for p, f in batch]
                with self.lock:
                    self.encoding -= len(batch)
                    for person_id, photo, entry in results:
                        self._apply(person_id, photo, entry)
            self._maybe_save()

    def _node_cpus(self) -> int:
        for node in ray.nodes():
            if node["NodeID"] == self.node_id:
                return max(1, int(node["Resources"].get("CPU", 1)))
        return 1

    def _submit(self, batch: list[tuple[str, str]]) -> ray.ObjectRef:
        items = [(p, f, str(self.store.photo_path(p, f))) for p, f in batch]
        if self.settings.encoder == "fake":  # no model: cheaper inline than a task
            return ray.put(encode_paths(items, self.settings))
        return _encode_task.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(self.node_id, soft=False)
        ).remote(items, self.settings)

    def _apply(self, person_id: str, photo: str, entry: CacheEntry | None) -> None:
        self.index.remove_photo(person_id, photo)
        self.entries.pop((person_id, photo), None)
        if entry is not None and self.store.has_dir(person_id):
            self.entries[(person_id, photo)] = entry
            if len(entry.encodings):
                self.index.add(person_id, photo, entry.encodings)
        self.dirty = True

    def _maybe_save(self, force: bool = False) -> None:
        if not self.dirty or (not force and time.monotonic() - self.last_save < CACHE_SAVE_EVERY_S):
            return
        with self.lock:
            entries = dict(self.entries)
            self.dirty = False
        self.cache_file.save(entries, self.settings.model_key)
        self.last_save = time.monotonic()

    def _queue(self, person_id: str, photo: str) -> None:
        with self.lock:
            self.index.remove_photo(person_id, photo)
            self.entries.pop((person_id, photo), None)
            self.pending.append((person_id, photo))
        self.wake.set()

    def _forget_dir(self, person_id: str) -> None:
        with self.lock:
            self.index.remove_person(person_id)
            for key in [k for k in self.entries if k[0] == person_id]:
                del self.entries[key]
            self.pending = deque(k for k in self.pending if k[0] != person_id)
            self.dirty = True

    # -- worker API (SPEC 3.2) --------------------------------------------------------------

    @ray.method(concurrency_group="admin")
    def ping(self) -> dict:
        with self.lock:
            return {
                "server_id": self.server_id,
                "faces": len(self.index),
                "photos": len(self.entries),
                "persons": len(self.index.persons()),
                "pending": len(self.pending) + self.encoding,
                "searches": self.searches,
                "index_bytes": self.index.nbytes,
            }

    @ray.method(concurrency_group="admin")
    def tasks_count(self) -> int:
        with self.lock:
            return self.searches

    @ray.method(concurrency_group="ingest")
    def create_dir(self, person_id: str) -> bool:
        return self.store.create_dir(person_id)

    @ray.method(concurrency_group="ingest")
    def add_photo(self, person_id: str, photo: str, data: bytes, sha256: str | None = None,
                  wait: bool = True) -> PhotoInfo:
        """Write a photo atomically and encode it; with `wait`, return once it is searchable."""
        info = self.store.add_photo(person_id, photo, data, sha256)
        if not wait:
            self._queue(person_id, photo)
            return info
        item = [(person_id, photo, str(self.store.photo_path(person_id, photo)))]
        if self.settings.encoder == "fake":
            results = encode_paths(item, self.settings)
        else:
            results = ray.get(_encode_task.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(self.node_id, soft=False)
            ).remote(item, self.settings))
        with self.lock:
            for p, f, entry in results:
                self._apply(p, f, entry)
        return info

    @ray.method(concurrency_group="ingest")
    def put_folder(self, person_id: str, files: list[tuple[str, bytes, str]],
                   durable: bool = True) -> list[PhotoInfo]:
        """Make the folder hold exactly `files` (name, data, sha256); return what was written.

        Every write is verified against its sha256 (Conflict otherwise); photos not in `files`
        are removed, so a repaired folder ends up identical to the source.
        """
        self.store.create_dir(person_id, durable)
        wanted = {name for name, _, _ in files}
        for old in self.store.list_photos(person_id):
            if old.name not in wanted:
                self.store.remove_photo(person_id, old.name)
                with self.lock:
                    self.index.remove_photo(person_id, old.name)
                    self.entries.pop((person_id, old.name), None)
                    self.dirty = True
        written = []
        for name, data, digest in files:
            current = self._existing(person_id, name, len(data), digest)
            if current is None:
                current = self.store.add_photo(person_id, name, data, digest, durable=False)
                self._queue(person_id, name)
            written.append(current)
        if durable:
            self.store.sync()
        return written

    @ray.method(concurrency_group="ingest")
    def put_folders(
        self, batch: list[tuple[str, list[tuple[str, bytes, str]]]]
    ) -> dict[str, list[PhotoInfo] | str]:
        """put_folder for many folders; a folder that fails reports its error as a string."""
        out: dict[str, list[PhotoInfo] | str] = {}
        for person_id, files in batch:
            try:
                out[person_id] = self.put_folder(person_id, files, durable=False)
            except FacenetError as exc:
                out[person_id] = exc.detail
            except OSError as exc:
                out[person_id] = f"write failed: {exc}"
        self.store.sync()  # nothing is confirmed before it is on disk
        return out

    def _existing(self, person_id: str, photo: str, size: int, digest: str) -> PhotoInfo | None:
        """The photo's info if it is already on disk with that content (skip the rewrite)."""
        try:
            info = self.store.check_photo(person_id, photo, checksum=True)
        except Exception:
            return None
        if info.size == size and info.sha256 == digest:
            if (person_id, photo) not in self.entries:
                self._queue(person_id, photo)
            return info
        return None

    @ray.method(concurrency_group="admin")
    def check_dir(self, person_id: str) -> int:
        return self.store.count_photos(person_id)

    @ray.method(concurrency_group="admin")
    def check_photo(self, person_id: str, photo: str, checksum: bool) -> PhotoInfo:
        return self.store.check_photo(person_id, photo, checksum)

    @ray.method(concurrency_group="ingest")
    def remove_dir(self, person_id: str) -> int:
        removed = self.store.remove_dir(person_id)
        self._forget_dir(person_id)
        return removed

    @ray.method(concurrency_group="ingest")
    def remove_all(self) -> int:
        removed = self.store.remove_all()
        with self.lock:
            self.index = FaceIndex()
            self.entries.clear()
            self.pending.clear()
            self.dirty = True
        return removed

    @ray.method(concurrency_group="admin")
    def list_dirs(self) -> list[str]:
        return self.store.list_dirs()

    @ray.method(concurrency_group="admin")
    def inventory(self, checksum: bool) -> tuple[dict[str, dict[str, PhotoInfo]], list]:
        """Every folder's photos (with sha256 when `checksum`) and the empty files deleted."""
        empty = self.store.purge_empty()
        for person_id, photo in empty:
            with self.lock:
                self.index.remove_photo(person_id, photo)
                self.entries.pop((person_id, photo), None)
        return self.store.inventory(checksum), empty

    @ray.method(concurrency_group="admin")
    def wait_idle(self, timeout_s: float = 60.0) -> bool:
        """Block until nothing is waiting to be encoded (for jobs and tests); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if not self.pending and not self.encoding:
                    return True
            time.sleep(0.05)
        return False

    # -- search ---------------------------------------------------------------------------

    @ray.method(concurrency_group="search")
    def search(self, probe: np.ndarray, top_k: int) -> tuple[list[Candidate], int]:
        """The nearest persons, and how many photos still wait to be encoded (then an answer
        may miss a person being added: the coordinator says so in the task)."""
        with self.lock:
            self.searches += 1
        try:
            with self.lock:
                return self.index.search(probe, top_k), len(self.pending) + self.encoding
        finally:
            with self.lock:
                self.searches -= 1
