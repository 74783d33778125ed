"""The search decision (facenet_ray.decision) on constructed candidates and encodings.

No dataset: the accuracy on real faces is bench/accuracy.py's job. Here the geometry is a
synthetic one shaped like dlib's (a few dozen strong directions; two photos of one person about
0.37 apart, two people about 0.8).
"""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from pydantic import ValidationError

from facenet_ray.config import Settings
from facenet_ray.decision import decide, thresholds
from facenet_ray.index import Candidate, FaceIndex, merge_candidates

RULES = ["nearest", "margin", "cohort"]


def cands(*distances: float, names: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ") -> list[Candidate]:
    return [Candidate(names[i], d, f"{names[i]}.jpg") for i, d in enumerate(distances)]


def far_cohort(best: float) -> list[Candidate]:
    """The best person at `best`, then four others far away."""
    return cands(best, 0.78, 0.80, 0.82, 0.85)


# -- the three answers ----------------------------------------------------------------------


@pytest.mark.parametrize("rule", RULES)
def test_clear_match_is_found(rule):
    decision = decide(far_cohort(0.35), Settings(decision_rule=rule))
    assert decision.found
    assert decision.person_id == "A"
    assert decision.distance == pytest.approx(0.35)
    assert decision.reason is None
    assert decision.confidence > 0.9
    assert [c.person_id for c in decision.candidates] == list("ABCDE")


@pytest.mark.parametrize("rule", RULES)
def test_too_far(rule):
    decision = decide(cands(0.68, 0.8, 0.85, 0.9, 0.95), Settings(decision_rule=rule))
    assert not decision.found
    assert decision.person_id is None
    assert decision.reason == "too_far"
    assert decision.distance == pytest.approx(0.68)
    assert decision.confidence < 0.5


@pytest.mark.parametrize("rule", ["margin", "cohort"])
def test_near_tie_between_two_persons_is_ambiguous(rule):
    # Both persons very near (the same face enrolled twice, or twins): neither is the answer.
    decision = decide(cands(0.300, 0.305, 0.80, 0.82, 0.85), Settings(decision_rule=rule))
    assert not decision.found
    assert decision.reason == "ambiguous"
    assert decision.person_id is None
    assert decision.confidence <= 0.5


def test_plain_rule_takes_a_near_tie():
    decision = decide(cands(0.300, 0.305, 0.80), Settings(decision_rule="nearest"))
    assert decision.found and decision.person_id == "A"


def test_crowded_cohort_is_ambiguous():
    # Within the plain tolerance, but the next four persons are about as near: a stranger's
    # typical picture in a big gallery.
    candidates = cands(0.50, 0.53, 0.54, 0.55, 0.56)
    assert decide(candidates, Settings(decision_rule="nearest")).found
    decision = decide(candidates, Settings())
    assert not decision.found
    assert decision.reason == "ambiguous"


def test_same_distance_accepted_or_not_by_its_cohort():
    settings = Settings()
    assert decide(far_cohort(0.52), settings).found
    assert not decide(cands(0.52, 0.58, 0.60, 0.61, 0.62), settings).found


def test_empty_gallery():
    for rule in RULES:
        decision = decide([], Settings(decision_rule=rule))
        assert decision == decision.__class__(False, None, None, 0.0, "empty_gallery", [])


def test_default_rule_is_cohort():
    assert Settings().decision_rule == "cohort"
    with pytest.raises(ValidationError):
        Settings(decision_rule="bogus")


def test_rule_from_environment(monkeypatch):
    monkeypatch.setenv("FACENET_DECISION_RULE", "nearest")
    assert Settings().decision_rule == "nearest"


# -- the plain rule is face_recognition's ---------------------------------------------------


@pytest.mark.parametrize("tolerance", [0.4, 0.5, 0.6])
def test_nearest_is_the_plain_threshold(tolerance):
    rng = random.Random(1)
    settings = Settings(decision_rule="nearest", tolerance=tolerance)
    for _ in range(500):
        n = rng.randint(1, 6)
        distances = sorted(rng.uniform(0.1, 1.0) for _ in range(n))
        decision = decide(cands(*distances), settings)
        assert decision.found == (distances[0] <= tolerance)
        assert decision.person_id == ("A" if distances[0] <= tolerance else None)
        assert decision.reason == (None if distances[0] <= tolerance else "too_far")
    assert decide(cands(tolerance, 0.9), settings).found  # at the tolerance: a match


def test_margin_is_the_ratio_test():
    rng = random.Random(2)
    settings = Settings(decision_rule="margin", tolerance=0.6, margin_ratio=0.9)
    for _ in range(500):
        d = sorted(rng.uniform(0.1, 1.0) for _ in range(rng.randint(1, 5)))
        expected = d[0] <= 0.6 and (len(d) == 1 or d[0] <= 0.9 * d[1])
        assert decide(cands(*d), settings).found == expected


# -- confidence -----------------------------------------------------------------------------


@pytest.mark.parametrize("rule", RULES)
def test_confidence_in_unit_interval_and_agrees_with_found(rule):
    rng = random.Random(3)
    settings = Settings(decision_rule=rule)
    for _ in range(2000):
        d = [rng.uniform(0.0, 1.5) for _ in range(rng.randint(1, 8))]
        decision = decide(cands(*d), settings)
        assert 0.0 <= decision.confidence <= 1.0
        if decision.found:
            assert decision.confidence >= 0.5
        else:
            assert decision.confidence <= 0.5


@pytest.mark.parametrize("rule", RULES)
def test_confidence_falls_as_the_best_distance_grows(rule):
    settings = Settings(decision_rule=rule)
    others = [0.80, 0.82, 0.85, 0.90]
    previous, found_seen, lost = 1.0, False, False
    for best in np.linspace(0.0, 0.79, 200):
        decision = decide(cands(float(best), *others), settings)
        assert decision.confidence <= previous
        previous = decision.confidence
        found_seen |= decision.found
        lost |= not decision.found
        if lost:  # once rejected, a farther best person is never accepted again
            assert not decision.found
    assert found_seen and lost


@pytest.mark.parametrize("rule", RULES)
def test_confidence_monotone_on_random_cohorts(rule):
    rng = random.Random(4)
    settings = Settings(decision_rule=rule)
    for _ in range(200):
        others = sorted(rng.uniform(0.3, 1.2) for _ in range(rng.randint(0, 6)))
        top = others[0] if others else 1.5
        confidences = [
            decide(cands(float(b), *others), settings).confidence for b in np.linspace(0.0, top, 25)
        ]
        assert all(a >= b for a, b in itertools.pairwise(confidences))


def test_threshold_does_not_depend_on_the_best_distance():
    settings = Settings()
    limits = {thresholds(cands(b, 0.7, 0.72, 0.75, 0.8), settings) for b in (0.1, 0.4, 0.69)}
    assert len(limits) == 1


# -- inputs as the service gives them -------------------------------------------------------


@pytest.mark.parametrize("rule", RULES)
def test_order_and_duplicates_do_not_matter(rule):
    settings = Settings(decision_rule=rule)
    ranked = cands(0.35, 0.7, 0.72, 0.75, 0.8)
    shuffled = [ranked[3], ranked[0], ranked[4], ranked[1], ranked[2]]
    duplicated = [*shuffled, Candidate("B", 0.9, "other.jpg"), Candidate("A", 0.5, "x.jpg")]
    assert decide(shuffled, settings) == decide(ranked, settings)
    assert decide(duplicated, settings) == decide(ranked, settings)


def test_small_gallery_uses_the_prior_cohort():
    # One person enrolled: no cohort to compare with, the prior stands in for it.
    settings = Settings()
    alone = min(settings.tolerance, settings.cohort_offset + 0.5 * settings.cohort_prior)
    assert thresholds(cands(0.4), settings) == (pytest.approx(alone), pytest.approx(alone))
    assert decide(cands(0.5), settings).found
    far = decide(cands(alone + 0.01), settings)
    assert not far.found and far.reason == "too_far"


def test_top_k_smaller_than_the_cohort_counts_the_hidden_ones_as_near():
    settings = Settings(top_k=2)
    assert decide(cands(0.35, 0.8), settings).found
    # Cut at top_k: the cohort is at least 0.52 away, not the prior's 0.8.
    assert not decide(cands(0.50, 0.52), settings).found
    # A gallery of two persons (fewer than top_k = 5): the prior stands in.
    assert decide(cands(0.50, 0.62), Settings()).found


def test_cohort_settings_move_the_threshold():
    strict = Settings(cohort_offset=0.05)
    loose = Settings(cohort_offset=0.30)
    candidates = cands(0.45, 0.70, 0.72, 0.74, 0.76)
    assert not decide(candidates, strict).found
    assert decide(candidates, loose).found
    assert not decide(cands(0.40, 0.44, 0.8), Settings(min_gap=0.05)).found


# -- real index, constructed encodings ------------------------------------------------------


class Faces:
    """People and photos in a dlib-like geometry: person centres from a Gaussian with a
    decaying spectrum over 64 of the 128 directions, photos = centre + isotropic noise."""

    DIM = 128

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        spectrum = np.zeros(self.DIM)
        spectrum[:64] = np.arange(1, 65) ** -0.85
        self.scale = np.sqrt(spectrum * 0.265 / spectrum.sum())
        self.rotation = np.linalg.qr(self.rng.normal(size=(self.DIM, self.DIM)))[0]
        self.noise = np.sqrt(0.072 / self.DIM)

    def people(self, n: int) -> np.ndarray:
        z = self.rng.normal(size=(n, self.DIM)) * self.scale
        return (z @ self.rotation.T).astype(np.float32)

    def photo(self, centre: np.ndarray) -> np.ndarray:
        return (centre + self.rng.normal(size=self.DIM) * self.noise).astype(np.float32)


def test_multi_photo_person_best_photo_counts_and_shards_merge():
    faces = Faces(11)
    alice, bob, carol = faces.people(3)
    probe = faces.photo(alice)
    shard_a, shard_b, single = FaceIndex(), FaceIndex(), FaceIndex()
    for person, centre, photos, shard in (
        ("alice", alice, 4, shard_a),
        ("bob", bob, 3, shard_b),
        ("carol", carol, 1, shard_b),
    ):
        for i in range(photos):
            vector = faces.photo(centre)[None, :]
            shard.add(person, f"{i}.jpg", vector)
            single.add(person, f"{i}.jpg", vector)
    # One far photo of alice does not hurt: the person's best photo is her distance.
    shard_a.add("alice", "blurred.jpg", faces.photo(carol)[None, :])
    single.add("alice", "blurred.jpg", faces.photo(carol)[None, :])
    settings = Settings()
    merged = merge_candidates(
        [shard_a.search(probe, settings.top_k), shard_b.search(probe, settings.top_k)],
        settings.top_k,
    )
    assert merged == single.search(probe, settings.top_k)
    decision = decide(merged, settings)
    assert decision.found and decision.person_id == "alice"
    assert decision.distance == pytest.approx(merged[0].distance)
    assert [c.person_id for c in decision.candidates][:1] == ["alice"]


def test_growing_gallery_neither_flips_a_match_nor_accepts_a_stranger():
    faces = Faces(7)
    enrolled, strangers = faces.people(50), faces.people(30)
    index = FaceIndex()
    for i, centre in enumerate(enrolled):
        for j in range(3):
            index.add(f"person-{i}", f"{j}.jpg", faces.photo(centre)[None, :])
    probes = [faces.photo(c) for c in enrolled]
    stranger_probes = [faces.photo(c) for c in strangers]
    cohort, plain = Settings(), Settings(decision_rule="nearest")
    added = 0
    plain_accepts = {}
    for size in (0, 1_000, 10_000):
        for j, centre in enumerate(faces.people(size - added)):
            index.add(f"distractor-{added + j}", "d.jpg", faces.photo(centre)[None, :])
        added = size
        for i, probe in enumerate(probes):
            decision = decide(index.search(probe, cohort.top_k), cohort)
            assert decision.found and decision.person_id == f"person-{i}", (size, i, decision)
        for probe in stranger_probes:
            candidates = index.search(probe, cohort.top_k)
            assert not decide(candidates, cohort).found, (size, candidates)
        plain_accepts[size] = sum(
            decide(index.search(p, plain.top_k), plain).found for p in stranger_probes
        )
    # The same strangers get through the plain 0.6 tolerance, more of them as it grows.
    assert plain_accepts[0] < plain_accepts[10_000]
    assert plain_accepts[10_000] >= 20
