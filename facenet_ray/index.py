"""Nearest-person search over one shard's face encodings, and their Parquet cache on disk.

`FaceIndex` keeps every face of the shard in one float32 matrix (512 bytes a face) with the
face's person and photo as int32 codes, so a search is one matrix-vector product however
many photos there are. Each person's faces are also chained (two int32 links a face), and each
person keeps the sum of the distances between its own faces, so a search can say, exactly and
at the cost of a few rows, how near a person's second-best face is and how spread out that
person's faces are (`Candidate.second`, `Candidate.spread`: the "cohort2" rule's evidence).
`EncodingCache` keeps the encodings of each photo on disk, keyed by the file's fingerprint and
the model that made them, so a restart re-encodes nothing.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray

from facenet_ray.faces import ENCODING_SIZE, Encoding

log = logging.getLogger(__name__)

_MIN_CAPACITY = 1024
# A search first looks at this many nearest faces per wanted person, widening when they
# belong to fewer than top_k persons.
_FACES_PER_PERSON = 4
# A step of a walk along a person's chain (Python) costs about this many rows of a scan (numpy).
_WALK_VS_SCAN = 500


@dataclass(frozen=True)
class Candidate:
    person_id: str
    distance: float  # best distance over that person's photos
    photo: str  # the photo that gave it
    # Person-level evidence, over the person's indexed faces (one a photo for a portrait); both
    # None for a person with a single face (and from anything that does not compute them).
    second: float | None = None  # the second-best face's distance
    spread: float | None = None  # mean distance between two of the person's own faces


@dataclass(frozen=True)
class Decision:
    found: bool
    person_id: str | None
    distance: float | None
    confidence: float  # in [0, 1]
    reason: str | None  # None when found; "no_face", "too_far", "ambiguous", "empty_gallery"
    candidates: list[Candidate]


class FaceIndex:
    """The faces of a set of photos, searchable by nearest person.

    Rows are packed: adding appends (the matrix doubles when full, so adding is amortised
    O(1)); removing moves the last rows into the holes. Nothing is ever rebuilt. A person's
    rows form a doubly linked chain (`_next`, `_prev`, from `_head`), relinked when rows move,
    so the rows of one person cost their own number to find, not a scan of the shard; adding or
    removing faces updates the person's sum of pairwise distances by the pairs it adds or
    removes (O(faces of the person) each, the persons have few).
    """

    def __init__(self) -> None:
        self._n = 0
        self._vectors = np.empty((0, ENCODING_SIZE), dtype=np.float32)
        self._sq_norms = np.empty(0, dtype=np.float32)  # |v|², so a search needs one pass
        self._person_codes = np.empty(0, dtype=np.int32)
        self._photo_codes = np.empty(0, dtype=np.int32)
        self._next = np.empty(0, dtype=np.int32)  # next row of the same person, -1 at the end
        self._prev = np.empty(0, dtype=np.int32)  # previous row of the same person, -1 at head
        # By person code: first row of its chain (-1: none), faces, sum of pairwise distances.
        self._head = np.empty(0, dtype=np.int32)
        self._count = np.empty(0, dtype=np.int32)
        self._pair_sum = np.empty(0, dtype=np.float64)
        self._person_ids: list[str] = []  # code -> person_id
        self._person_code: dict[str, int] = {}
        self._person_faces: dict[str, int] = {}  # person_id -> faces in the index
        self._photo_keys: list[tuple[str, str] | None] = []  # code -> (person_id, photo)
        self._photo_code: dict[tuple[str, str], int] = {}

    def add(self, person_id: str, photo: str, encodings: NDArray[np.float32]) -> None:
        """Index the faces (n, 128) of one photo, replacing what that photo had; n may be 0."""
        vectors = np.asarray(encodings, dtype=np.float32).reshape(-1, ENCODING_SIZE)
        if not np.isfinite(vectors).all():
            raise ValueError("encodings must be finite")
        self.remove_photo(person_id, photo)
        count = len(vectors)
        if count == 0:
            return
        self._reserve(self._n + count)
        if person_id not in self._person_code:
            code = len(self._person_ids)
            self._reserve_persons(code + 1)
            self._head[code], self._count[code], self._pair_sum[code] = -1, 0, 0.0
            self._person_code[person_id] = code
            self._person_ids.append(person_id)
        person_code = self._person_code[person_id]
        head = int(self._head[person_code])
        added = _within_sum(vectors)
        if head != -1:
            added += _cross_sum(vectors, self._vectors[self._rows_of(person_code, ordered=False)])
        self._pair_sum[person_code] += added
        photo_code = len(self._photo_keys)
        self._photo_keys.append((person_id, photo))
        self._photo_code[(person_id, photo)] = photo_code
        rows = slice(self._n, self._n + count)
        self._vectors[rows] = vectors
        self._sq_norms[rows] = np.einsum("ij,ij->i", vectors, vectors)
        self._person_codes[rows] = person_code
        self._photo_codes[rows] = photo_code
        # The new rows go first in the person's chain: new[0] -> ... -> new[-1] -> old head.
        first, last = self._n, self._n + count - 1
        if count > 1:
            self._next[first:last] = np.arange(first + 1, last + 1, dtype=np.int32)
            self._prev[first + 1 : last + 1] = np.arange(first, last, dtype=np.int32)
        self._next[last] = head
        self._prev[first] = -1
        if head != -1:
            self._prev[head] = last
        self._head[person_code] = first
        self._count[person_code] += count
        self._n += count
        self._person_faces[person_id] = self._person_faces.get(person_id, 0) + count

    def remove_photo(self, person_id: str, photo: str) -> int:
        """Drop one photo's faces; returns how many there were (0 if it was not indexed)."""
        code = self._photo_code.pop((person_id, photo), None)
        if code is None:
            return 0
        self._photo_keys[code] = None
        person_code = self._person_code[person_id]
        rows = self._rows_of(person_code)
        removed = self._remove_person_rows(person_code, rows, self._photo_codes[rows] == code)
        self._forget_faces(person_id, removed)
        return removed

    def remove_person(self, person_id: str) -> int:
        """Drop every face of one person; returns how many there were."""
        code = self._person_code.get(person_id)
        if code is None:
            return 0
        rows = self._rows_of(code)
        for photo_code in np.unique(self._photo_codes[rows]).tolist():
            key = self._photo_keys[photo_code]
            self._photo_keys[photo_code] = None
            del self._photo_code[key]
        removed = self._remove_person_rows(code, rows, np.ones(len(rows), dtype=bool))
        self._forget_faces(person_id, removed)
        return removed

    def search(self, probe: Encoding, top_k: int) -> list[Candidate]:
        """The `top_k` persons nearest to `probe`, one Candidate each at its best distance,
        nearest first. Exact: the same answer as comparing the probe with every face.

        Each Candidate also has the person's second-best face distance (`second`) and the mean
        distance between two of its faces (`spread`), None for a person with one face."""
        n = self._n
        if n == 0 or top_k < 1:
            return []
        probe = np.asarray(probe, dtype=np.float32).reshape(ENCODING_SIZE)
        vectors = self._vectors[:n]
        # |v - p|² = |v|² - 2 v·p + |p|²; |p|² is the same for every row, so it is left out.
        scores = self._sq_norms[:n] - 2.0 * (vectors @ probe)
        want = min(n, top_k * _FACES_PER_PERSON)
        while True:
            nearest = np.argpartition(scores, want - 1)[:want] if want < n else np.arange(n)
            # Exact distances for the few selected rows (the expansion above loses precision).
            distances = np.linalg.norm(vectors[nearest] - probe, axis=1)
            order = np.argsort(distances, kind="stable")
            nearest, distances = nearest[order], distances[order]
            # The first time a person appears in the sorted list is that person's best face.
            _, first = np.unique(self._person_codes[nearest], return_index=True)
            if len(first) >= top_k or want == n:
                break
            want = min(n, want * 2)
        codes = self._person_codes[nearest]
        # A person's second appearance in the sorted list is its second-best face.
        rest = np.ones(len(nearest), dtype=bool)
        rest[first] = False
        again, second_at = np.unique(codes[rest], return_index=True)
        second_of = dict(
            zip(again.tolist(), distances[np.flatnonzero(rest)[second_at]].tolist(), strict=True)
        )
        first = np.sort(first)[:top_k]
        out = []
        for i, row in zip(first.tolist(), nearest[first].tolist(), strict=True):
            code = int(codes[i])
            faces = int(self._count[code])
            second = spread = None
            if faces >= 2:
                second = second_of.get(code)
                if second is None:  # its other faces are all farther than the list reached
                    own = np.linalg.norm(vectors[self._rows_of(code)] - probe, axis=1)
                    second = float(np.partition(own, 1)[1])
                spread = max(0.0, float(self._pair_sum[code])) / (faces * (faces - 1) / 2)
            out.append(
                Candidate(
                    person_id=self._person_ids[code],
                    distance=float(distances[i]),
                    photo=self._photo_keys[self._photo_codes[row]][1],
                    second=second,
                    spread=spread,
                )
            )
        return out

    def __len__(self) -> int:
        return self._n

    def persons(self) -> set[str]:
        return set(self._person_faces)

    @property
    def nbytes(self) -> int:
        """Bytes of the rows in use: 532 a face (vector, |v|², person and photo codes, two
        chain links), plus 16 a person (chain head, face count, sum of pairwise distances).

        Not counted: spare capacity left by doubling (pages never written are not backed by
        memory) and the person and photo name tables (their cost is per photo, not per face).
        """
        row = ENCODING_SIZE * 4 + 4 + 4 + 4 + 4 + 4
        return self._n * row + len(self._person_ids) * (4 + 4 + 8)

    def _reserve(self, size: int) -> None:
        capacity = len(self._vectors)
        if size <= capacity:
            return
        capacity = max(size, 2 * capacity, _MIN_CAPACITY)
        n = self._n
        for name in ("_vectors", "_sq_norms", "_person_codes", "_photo_codes", "_next", "_prev"):
            old = getattr(self, name)
            new = np.empty((capacity, *old.shape[1:]), dtype=old.dtype)
            new[:n] = old[:n]
            setattr(self, name, new)

    def _reserve_persons(self, size: int) -> None:
        capacity = len(self._head)
        if size <= capacity:
            return
        capacity = max(size, 2 * capacity, _MIN_CAPACITY)
        used = len(self._person_ids)
        for name in ("_head", "_count", "_pair_sum"):
            old = getattr(self, name)
            new = np.empty(capacity, dtype=old.dtype)
            new[:used] = old[:used]
            setattr(self, name, new)

    def _rows_of(self, code: int, ordered: bool = True) -> NDArray[np.intp]:
        """The rows of one person (sorted unless not `ordered`), by walking its chain; for a
        person with very many faces a scan of the codes is cheaper than a walk in Python."""
        if int(self._count[code]) * _WALK_VS_SCAN > self._n:
            return np.flatnonzero(self._person_codes[: self._n] == code)
        rows = []
        row = int(self._head[code])
        following = self._next
        while row != -1:
            rows.append(row)
            row = int(following[row])
        found = np.array(rows, dtype=np.intp)
        return np.sort(found) if ordered else found

    def _remove_person_rows(
        self, code: int, rows: NDArray[np.intp], drop: NDArray[np.bool_]
    ) -> int:
        """Remove `rows[drop]` of person `code` (`rows` all its rows, sorted): its pairwise sum
        loses the pairs that had a removed face, its chain keeps the others, then the rows go."""
        gone, kept = rows[drop], rows[~drop]
        if len(gone) == 0:
            return 0
        if len(kept) < 2:
            self._pair_sum[code] = 0.0
        else:
            vectors = self._vectors[gone]
            self._pair_sum[code] -= _within_sum(vectors) + _cross_sum(vectors, self._vectors[kept])
        if len(kept):
            self._next[kept[:-1]] = kept[1:]
            self._next[kept[-1]] = -1
            self._prev[kept[1:]] = kept[:-1]
            self._prev[kept[0]] = -1
        self._head[code] = kept[0] if len(kept) else -1
        self._count[code] = len(kept)
        return self._remove_rows(gone)

    def _remove_rows(self, rows: NDArray[np.intp]) -> int:
        """Remove rows (sorted, unique) by moving the last kept rows into the holes."""
        removed = len(rows)
        if removed == 0:
            return 0
        end = self._n - removed
        holes = rows[rows < end]
        keep = np.ones(self._n - end, dtype=bool)
        keep[rows[rows >= end] - end] = False
        sources = end + np.flatnonzero(keep)
        arrays = (
            self._vectors,
            self._sq_norms,
            self._person_codes,
            self._photo_codes,
            self._next,
            self._prev,
        )
        for array in arrays:
            array[holes] = array[sources]
        # The removed rows are in no chain; the moved ones' neighbours now point at the holes
        # (a neighbour that moved too is followed to its own hole).
        moved = dict(zip(sources.tolist(), holes.tolist(), strict=True))
        following, preceding = self._next, self._prev
        for hole in holes.tolist():
            before = int(preceding[hole])
            before = moved.get(before, before)
            preceding[hole] = before
            if before == -1:
                self._head[self._person_codes[hole]] = hole
            else:
                following[before] = hole
            after = int(following[hole])
            after = moved.get(after, after)
            following[hole] = after
            if after != -1:
                preceding[after] = hole
        self._n = end
        return removed

    def _forget_faces(self, person_id: str, removed: int) -> None:
        left = self._person_faces.get(person_id, 0) - removed
        if left > 0:
            self._person_faces[person_id] = left
        else:
            self._person_faces.pop(person_id, None)


def _within_sum(vectors: NDArray[np.float32]) -> float:
    """Sum of the distances between the rows of `vectors`, each pair once (float64)."""
    if len(vectors) < 2:
        return 0.0
    pairs = _distances(vectors, vectors)
    np.fill_diagonal(pairs, 0.0)  # exact zeros (the expansion leaves rounding noise)
    return float(pairs.sum()) / 2


def _cross_sum(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    """Sum of the distances between each row of `a` and each row of `b` (float64)."""
    return float(_distances(a, b).sum())


def _distances(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float64]:
    """All distances between rows of `a` and rows of `b`, in float64."""
    if len(a) * len(b) <= 1024:  # the usual few photos of a person: differences directly
        diff = a[:, None, :].astype(np.float64) - b[None, :, :]
        return np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    squared = (a64 * a64).sum(1)[:, None] + (b64 * b64).sum(1)[None, :] - 2.0 * (a64 @ b64.T)
    return np.sqrt(np.maximum(squared, 0.0))


def merge_candidates(lists: Iterable[list[Candidate]], top_k: int) -> list[Candidate]:
    """Merge per-shard answers: one Candidate per person at its best distance, nearest first.

    The Candidates are kept whole (`second`, `spread` included): a person lives on one shard,
    so its shard's Candidate already knows all of that person's faces."""
    best: dict[str, Candidate] = {}
    for candidates in lists:
        for candidate in candidates:
            known = best.get(candidate.person_id)
            if known is None or candidate.distance < known.distance:
                best[candidate.person_id] = candidate
    return sorted(best.values(), key=lambda c: (c.distance, c.person_id))[:top_k]


@dataclass(frozen=True, eq=False)
class CacheEntry:
    size: int
    mtime_ns: int
    sha256: str
    encodings: NDArray[np.float32]  # (n, 128); n may be 0 (no face)


_CACHE_SCHEMA = pa.schema(
    [
        ("person_id", pa.string()),
        ("photo", pa.string()),
        ("size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("sha256", pa.string()),
        ("model_key", pa.string()),
        ("n_faces", pa.int32()),
        ("encodings", pa.large_list(pa.float32())),  # n_faces * 128 values, row after row
    ]
)


class EncodingCache:
    """One shard's encodings on disk, a Parquet file with one row per photo (never pickle).

    A row is valid for a file whose size and mtime_ns still match and for the model it was
    made with (`Settings.model_key`); rows of another model are dropped on load.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self, model_key: str) -> dict[tuple[str, str], CacheEntry]:
        """Entries of `model_key` by (person_id, photo); {} when there is no readable file."""
        try:
            table = pq.read_table(self.path, schema=_CACHE_SCHEMA)
        except FileNotFoundError:
            return {}
        except (pa.ArrowException, OSError) as exc:
            log.warning("encoding cache %s is unreadable, starting empty: %s", self.path, exc)
            return {}
        table = table.filter(pc.equal(table["model_key"], model_key))
        columns = {name: table[name].to_pylist() for name in _CACHE_SCHEMA.names[:-1]}
        encodings = table["encodings"].combine_chunks()
        values = encodings.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        offsets = encodings.offsets.to_numpy()
        entries: dict[tuple[str, str], CacheEntry] = {}
        for i in range(table.num_rows):
            start, stop = int(offsets[i]), int(offsets[i + 1])
            n_faces = columns["n_faces"][i]
            if stop - start != n_faces * ENCODING_SIZE:
                log.warning(
                    "encoding cache %s: bad row for %s/%s, dropped",
                    self.path,
                    columns["person_id"][i],
                    columns["photo"][i],
                )
                continue
            entries[(columns["person_id"][i], columns["photo"][i])] = CacheEntry(
                size=columns["size"][i],
                mtime_ns=columns["mtime_ns"][i],
                sha256=columns["sha256"][i],
                encodings=values[start:stop].reshape(n_faces, ENCODING_SIZE),
            )
        return entries

    def save(self, entries: dict[tuple[str, str], CacheEntry], model_key: str) -> None:
        """Replace the file with `entries`, all made by `model_key`; atomic (temp + rename)."""
        keys = list(entries)
        matrices = [
            np.asarray(entries[key].encodings, dtype=np.float32).reshape(-1, ENCODING_SIZE)
            for key in keys
        ]
        n_faces = np.array([len(m) for m in matrices], dtype=np.int32)
        offsets = np.zeros(len(keys) + 1, dtype=np.int64)
        np.cumsum(n_faces.astype(np.int64) * ENCODING_SIZE, out=offsets[1:])
        values = (
            np.concatenate([m.ravel() for m in matrices])
            if matrices
            else np.empty(0, dtype=np.float32)
        )
        table = pa.table(
            {
                "person_id": [key[0] for key in keys],
                "photo": [key[1] for key in keys],
                "size": [entries[key].size for key in keys],
                "mtime_ns": [entries[key].mtime_ns for key in keys],
                "sha256": [entries[key].sha256 for key in keys],
                "model_key": [model_key] * len(keys),
                "n_faces": n_faces,
                "encodings": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values)),
            },
            schema=_CACHE_SCHEMA,
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{self.path.name}-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                pq.write_table(table, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
