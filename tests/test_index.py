"""FaceIndex, merge_candidates, decide and EncodingCache: real portraits and 100k random faces."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_faces import OBAMA, PORTRAITS, encoded_portraits

from facenet_ray import index as index_module
from facenet_ray.config import Settings
from facenet_ray.decision import decide
from facenet_ray.index import CacheEntry, Candidate, EncodingCache, FaceIndex, merge_candidates

SETTINGS = Settings()


def person_of(name: str) -> str:
    return name.split("/")[0]


def photo_of(name: str) -> str:
    return name.split("/")[1]


@pytest.fixture(scope="module")
def encodings() -> dict[str, np.ndarray]:
    """Each portrait's faces (n, 128), encoded once per session (shared with test_faces)."""
    return {
        name: np.stack([face.encoding for face in detection.faces])
        for name, detection in encoded_portraits().items()
    }


def brute_force(
    vectors: np.ndarray, persons: np.ndarray, probe: np.ndarray, top_k: int
) -> list[tuple[str, float]]:
    """The reference answer: every face's distance, the best one per person, nearest first."""
    distances = np.linalg.norm(vectors.astype(np.float64) - probe, axis=1)
    names, person_of_face = np.unique(persons, return_inverse=True)
    best = np.full(len(names), np.inf)
    np.minimum.at(best, person_of_face, distances)
    order = np.lexsort((names, best))[:top_k]
    return list(zip(names[order].tolist(), best[order].tolist(), strict=True))


def brute_force_evidence(
    vectors: np.ndarray, persons: np.ndarray, probe: np.ndarray, person: str
) -> tuple[float | None, float | None]:
    """The reference (second, spread) of one person: its second-nearest face to the probe and
    the mean distance over all pairs of its faces; None, None for a person with one face."""
    own = vectors[persons == person].astype(np.float64)
    if len(own) < 2:
        return None, None
    second = float(np.sort(np.linalg.norm(own - probe, axis=1))[1])
    pairs = np.linalg.norm(own[:, None, :] - own[None, :, :], axis=2)
    return second, float(pairs[np.triu_indices(len(own), 1)].mean())


def assert_evidence(candidates, vectors, persons, probe) -> None:
    for c in candidates:
        second, spread = brute_force_evidence(vectors, persons, probe, c.person_id)
        if second is None:
            assert c.second is None and c.spread is None, c
        else:
            assert c.second == pytest.approx(second, abs=1e-5), c
            assert c.spread == pytest.approx(spread, abs=1e-5), c
            assert c.distance <= c.second


def assert_chains(index: FaceIndex) -> None:
    """Each person's chain of rows is exactly its rows in the matrix, and linked both ways."""
    codes = index._person_codes[: len(index)]
    for person, code in index._person_code.items():
        walked, row, previous = [], int(index._head[code]), -1
        while row != -1:
            assert index._prev[row] == previous
            walked.append(row)
            previous, row = row, int(index._next[row])
        np.testing.assert_array_equal(sorted(walked), np.flatnonzero(codes == code))
        assert index._count[code] == len(walked) == index._person_faces.get(person, 0)


def random_faces(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.standard_normal((n, 128)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True) * 0.6


# --- 1:N search with real portraits -------------------------------------------------------


def test_each_portrait_finds_its_person_among_the_others(encodings):
    for probe_name in PORTRAITS:
        index = FaceIndex()
        for name in PORTRAITS:
            if name != probe_name:
                index.add(person_of(name), photo_of(name), encodings[name])
        candidates = index.search(encodings[probe_name][0], top_k=5)
        decision = decide(candidates, SETTINGS)
        if probe_name in OBAMA:
            assert decision.found and decision.person_id == "Barack_Obama", probe_name
            assert candidates[0].photo != photo_of(probe_name)
        else:  # Biden's only photo is the probe: he is not in this gallery
            assert not decision.found and decision.reason == "too_far"
            assert candidates[0].person_id == "Barack_Obama"


def test_several_photos_of_one_person_are_one_candidate_at_its_best(encodings):
    index = FaceIndex()
    for name in PORTRAITS:
        index.add(person_of(name), photo_of(name), encodings[name])
    probe = encodings[OBAMA[1]][0]
    candidates = index.search(probe, top_k=5)
    assert [c.person_id for c in candidates] == ["Barack_Obama", "Joseph_Biden"]
    assert candidates[0].photo == photo_of(OBAMA[1])
    assert candidates[0].distance == pytest.approx(0.0, abs=1e-5)
    assert candidates[1].distance > SETTINGS.tolerance
    assert index.persons() == {"Barack_Obama", "Joseph_Biden"}


# --- add / remove ---------------------------------------------------------------------------


def test_add_replaces_a_photo_and_removal_moves_rows_without_rebuilding():
    rng = np.random.default_rng(1)
    index = FaceIndex()
    index.add("ann", "a.jpg", random_faces(rng, 2))
    index.add("ann", "a.jpg", random_faces(rng, 3))  # the same photo again: replaced
    index.add("ann", "b.jpg", random_faces(rng, 1))
    index.add("bob", "a.jpg", random_faces(rng, 2))  # same photo name, another person
    index.add("cat", "none.jpg", np.empty((0, 128), np.float32))  # no face: nothing indexed
    assert len(index) == 6 and index.persons() == {"ann", "bob"}

    matrix = index._vectors
    assert index.remove_photo("ann", "a.jpg") == 3
    assert index.remove_photo("ann", "a.jpg") == 0
    assert len(index) == 3 and index.persons() == {"ann", "bob"}
    assert index.remove_person("bob") == 2
    assert index.remove_person("bob") == 0
    assert len(index) == 1 and index.persons() == {"ann"}
    assert index._vectors is matrix, "removal must not rebuild the matrix"
    assert index.remove_photo("ann", "b.jpg") == 1
    assert len(index) == 0 and index.persons() == set() and index.search(matrix[0], 3) == []


def test_search_stays_exact_through_random_adds_and_removes():
    rng = np.random.default_rng(2)
    index = FaceIndex()
    truth: dict[tuple[str, str], np.ndarray] = {}
    for step in range(3000):
        person, photo = f"p{rng.integers(60)}", f"{rng.integers(4)}.jpg"
        if step % 4 == 3:
            index.remove_photo(person, photo)
            truth.pop((person, photo), None)
        elif step % 97 == 0:
            index.remove_person(person)
            truth = {key: value for key, value in truth.items() if key[0] != person}
        else:
            faces = random_faces(rng, int(rng.integers(0, 3)))
            index.add(person, photo, faces)
            truth[(person, photo)] = faces
    vectors = np.concatenate([faces for faces in truth.values()])
    persons = np.concatenate([[key[0]] * len(faces) for key, faces in truth.items()])
    assert len(index) == len(vectors)
    assert index.persons() == set(persons.tolist())
    for probe in random_faces(rng, 20):
        got = [(c.person_id, c.distance) for c in index.search(probe, top_k=7)]
        expected = brute_force(vectors, persons, probe, top_k=7)
        assert [p for p, _ in got] == [p for p, _ in expected]
        np.testing.assert_allclose([d for _, d in got], [d for _, d in expected], atol=1e-5)


@pytest.mark.parametrize("walk_vs_scan", [0, 10**9], ids=["walk", "scan"])
def test_second_and_spread_stay_exact_through_adds_and_removes(monkeypatch, walk_vs_scan):
    """Each person's second-best face and the spread of its faces, against brute force, while
    photos of 0-3 faces come and go and whole persons leave (rows move into the holes); a
    person's rows found by walking its chain, or by a scan (the index's choice for persons
    with very many faces)."""
    monkeypatch.setattr(index_module, "_WALK_VS_SCAN", walk_vs_scan)
    rng = np.random.default_rng(12)
    index = FaceIndex()
    truth: dict[tuple[str, str], np.ndarray] = {}
    centres = random_faces(rng, 40)
    checked = 0
    for step in range(2500):
        who = int(rng.integers(40))
        person, photo = f"p{who}", f"{rng.integers(5)}.jpg"
        if step % 3 == 2:
            index.remove_photo(person, photo)
            truth.pop((person, photo), None)
        elif step % 89 == 0:
            index.remove_person(person)
            truth = {key: value for key, value in truth.items() if key[0] != person}
        else:  # faces near the person's centre, so that persons have a real spread
            count = int(rng.integers(0, 4))
            faces = centres[who] + 0.5 * random_faces(rng, count)
            index.add(person, photo, faces)
            truth[(person, photo)] = faces
        if step % 250 == 249:
            assert_chains(index)
            vectors = np.concatenate([faces for faces in truth.values()])
            persons = np.concatenate([[key[0]] * len(faces) for key, faces in truth.items()])
            for probe in np.concatenate([random_faces(rng, 3), centres[rng.integers(40, size=3)]]):
                candidates = index.search(probe, top_k=8)
                expected = brute_force(vectors, persons, probe, top_k=8)
                assert [c.person_id for c in candidates] == [p for p, _ in expected]
                assert_evidence(candidates, vectors, persons, probe)
                checked += sum(c.second is not None for c in candidates)
    assert checked > 100  # most persons had several faces
    for person in list(index.persons()):
        index.remove_person(person)
    assert len(index) == 0 and index.nbytes == len(index._person_ids) * 16


def test_second_beyond_the_nearest_faces_is_still_exact():
    # Alice's best face is the nearest of all, her second is far behind a crowd of others:
    # the search's candidate list never reaches it, the person's own rows give it.
    rng = np.random.default_rng(13)
    probe = random_faces(rng, 1)[0]
    index = FaceIndex()
    others = probe + 0.05 * random_faces(rng, 300)
    for i, face in enumerate(others):
        index.add(f"other {i}", "1.jpg", face[None, :])
    alice = np.stack([probe + 0.01 * random_faces(rng, 1)[0], -probe])
    index.add("alice", "near.jpg", alice[:1])
    index.add("alice", "far.jpg", alice[1:])
    vectors = np.concatenate([others, alice])
    persons = np.array([f"other {i}" for i in range(len(others))] + ["alice", "alice"])
    candidates = index.search(probe, top_k=3)
    assert candidates[0].person_id == "alice"
    assert candidates[0].second == pytest.approx(1.2, abs=1e-5)
    assert candidates[0].spread == pytest.approx(float(np.linalg.norm(alice[0] - alice[1])))
    assert_evidence(candidates, vectors, persons, probe)
    index.remove_photo("alice", "far.jpg")
    alone = index.search(probe, top_k=1)[0]
    assert (alone.person_id, alone.second, alone.spread) == ("alice", None, None)


def test_adding_is_amortised_and_a_face_costs_under_600_bytes():
    rng = np.random.default_rng(3)
    index = FaceIndex()
    faces = random_faces(rng, 20_000)
    reallocations, matrix = 0, None
    for i, face in enumerate(faces):
        index.add(f"person {i // 4}", f"{i % 4}.jpg", face[None, :])
        if index._vectors is not matrix:
            reallocations, matrix = reallocations + 1, index._vectors
    assert reallocations <= 6  # 1024, 2048, ... 32768: doubling
    assert index.nbytes / len(index) <= 600


# --- exactness at scale ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def large_index() -> tuple[FaceIndex, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    n, per_person = 100_000, 5
    vectors = random_faces(rng, n)
    persons = np.array([f"person {i // per_person}" for i in range(n)])
    index = FaceIndex()
    for start in range(0, n, per_person):
        index.add(persons[start], "photo.jpg", vectors[start : start + per_person])
    return index, vectors, persons


def test_search_at_100k_faces_equals_brute_force(large_index):
    index, vectors, persons = large_index
    rng = np.random.default_rng(5)
    near = vectors[rng.integers(len(vectors), size=5)] + 0.01 * random_faces(rng, 5)
    for probe in np.concatenate([random_faces(rng, 5), near, vectors[:2]]):
        reference = brute_force(vectors, persons, probe, top_k=20)
        for top_k in (1, 5, 20):
            candidates = index.search(probe, top_k)
            got = [(c.person_id, c.distance) for c in candidates]
            expected = reference[:top_k]
            assert [p for p, _ in got] == [p for p, _ in expected]
            np.testing.assert_allclose([d for _, d in got], [d for _, d in expected], atol=1e-5)
        assert_evidence(candidates, vectors, persons, probe)


def test_search_widens_when_one_person_owns_all_the_nearest_faces():
    rng = np.random.default_rng(6)
    probe = random_faces(rng, 1)[0]
    crowd = probe + 0.001 * random_faces(rng, 500)  # 500 faces of one person, all nearest
    others = random_faces(rng, 5000)
    index = FaceIndex()
    index.add("crowd", "many.jpg", crowd)
    for i, face in enumerate(others):
        index.add(f"other {i}", "1.jpg", face[None, :])
    vectors = np.concatenate([crowd, others])
    persons = np.array(["crowd"] * len(crowd) + [f"other {i}" for i in range(len(others))])
    candidates = index.search(probe, top_k=10)
    got = [(c.person_id, c.distance) for c in candidates]
    expected = brute_force(vectors, persons, probe, top_k=10)
    assert [p for p, _ in got] == [p for p, _ in expected]
    np.testing.assert_allclose([d for _, d in got], [d for _, d in expected], atol=1e-5)
    assert_evidence(candidates[:1], vectors, persons, probe)  # the crowd: 500 faces


# --- merging shards and deciding ------------------------------------------------------------


def test_merge_candidates_keeps_each_person_at_its_best():
    shard_a = [Candidate("ann", 0.30, "1.jpg"), Candidate("bob", 0.50, "1.jpg")]
    shard_b = [Candidate("ann", 0.20, "2.jpg"), Candidate("cat", 0.40, "1.jpg")]
    merged = merge_candidates([shard_a, shard_b, []], top_k=2)
    assert merged == [Candidate("ann", 0.20, "2.jpg"), Candidate("cat", 0.40, "1.jpg")]
    assert merge_candidates([], top_k=3) == []


def test_merge_keeps_second_and_spread_of_each_shards_persons():
    rng = np.random.default_rng(14)
    probe = random_faces(rng, 1)[0]
    shards, single = [FaceIndex(), FaceIndex(), FaceIndex()], FaceIndex()
    for i in range(60):  # a person lives on one shard; 1-4 photos each
        centre = probe + random_faces(rng, 1)[0] * rng.uniform(0.3, 1.2)
        for j in range(1 + i % 4):
            face = centre + 0.4 * random_faces(rng, 1)
            shards[i % 3].add(f"person {i}", f"{j}.jpg", face)
            single.add(f"person {i}", f"{j}.jpg", face)
    merged = merge_candidates([shard.search(probe, 10) for shard in shards], 10)
    expected = single.search(probe, 10)
    assert [c.person_id for c in merged] == [c.person_id for c in expected]
    for got, want in zip(merged, expected, strict=True):
        assert got.distance == pytest.approx(want.distance, abs=1e-6)
        assert (got.second is None) == (want.second is None)
        if want.second is not None:
            assert got.second == pytest.approx(want.second, abs=1e-6)
            assert got.spread == pytest.approx(want.spread, abs=1e-9)
    assert any(c.second is not None for c in merged) and any(c.second is None for c in merged)


def test_decide_plain_rule():
    plain = SETTINGS.model_copy(update={"decision_rule": "nearest"})
    near = [Candidate("ann", 0.3, "1.jpg"), Candidate("bob", 0.7, "1.jpg")]
    found = decide(near, plain)
    assert (found.found, found.person_id, found.reason) == (True, "ann", None)
    assert 0.5 < found.confidence <= 1
    assert found.candidates == near

    far = decide([Candidate("bob", 0.9, "1.jpg")], plain)
    assert (far.found, far.person_id, far.distance, far.reason) == (False, None, 0.9, "too_far")
    assert 0 <= far.confidence < 0.5
    assert decide([Candidate("x", 5.0, "1.jpg")], plain).confidence < 1e-6

    empty = decide([], plain)
    assert (empty.found, empty.reason, empty.confidence) == (False, "empty_gallery", 0.0)


# --- the encodings cache --------------------------------------------------------------------


def sample_entries(rng: np.random.Generator) -> dict[tuple[str, str], CacheEntry]:
    return {
        ("Barack Obama", "official portrait.jpg"): CacheEntry(
            1234, 1_700_000_000_123_456_789, "ab" * 32, random_faces(rng, 2)
        ),
        ("Иван Петров", "фото 1.png"): CacheEntry(99, 5, "cd" * 32, random_faces(rng, 1)),
        ("王小明", "no face.jpg"): CacheEntry(7, 6, "ef" * 32, np.empty((0, 128), np.float32)),
    }


def assert_same_entries(got, expected) -> None:
    assert got.keys() == expected.keys()
    for key, entry in expected.items():
        loaded = got[key]
        assert (loaded.size, loaded.mtime_ns, loaded.sha256) == (
            entry.size,
            entry.mtime_ns,
            entry.sha256,
        )
        assert (
            loaded.encodings.dtype == np.float32 and loaded.encodings.shape == entry.encodings.shape
        )
        np.testing.assert_array_equal(loaded.encodings, entry.encodings)


def test_cache_round_trip(tmp_path: Path):
    entries = sample_entries(np.random.default_rng(7))
    cache = EncodingCache(tmp_path / "shard" / "encodings.parquet")
    assert cache.load("dlib-small-j1") == {}
    cache.save(entries, "dlib-small-j1")
    assert_same_entries(cache.load("dlib-small-j1"), entries)
    assert os.listdir(tmp_path / "shard") == ["encodings.parquet"], "no temp file left"
    schema = pq.read_schema(cache.path)
    assert schema.field("encodings").type.value_type == pa.float32()
    assert b"pickle" not in cache.path.read_bytes()


def test_cache_drops_rows_of_another_model(tmp_path: Path):
    rng = np.random.default_rng(8)
    old, new = sample_entries(rng), sample_entries(rng)
    cache = EncodingCache(tmp_path / "encodings.parquet")
    cache.save(old, "dlib-large-j1")
    assert cache.load("dlib-small-j1") == {}
    # One file holding rows of two models: only the asked model's rows come back.
    old_rows = pq.read_table(cache.path)
    cache.save(new, "dlib-small-j1")
    pq.write_table(pa.concat_tables([old_rows, pq.read_table(cache.path)]), cache.path)
    assert_same_entries(cache.load("dlib-small-j1"), new)
    assert_same_entries(cache.load("dlib-large-j1"), old)


def test_cache_save_is_atomic(tmp_path: Path, monkeypatch):
    rng = np.random.default_rng(9)
    cache = EncodingCache(tmp_path / "encodings.parquet")
    first = sample_entries(rng)
    cache.save(first, "k")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        cache.save(sample_entries(rng), "k")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["encodings.parquet"]
    assert_same_entries(cache.load("k"), first)


def test_an_unreadable_cache_loads_empty(tmp_path: Path):
    path = tmp_path / "encodings.parquet"
    path.write_bytes(b"not parquet at all")
    assert EncodingCache(path).load("k") == {}
