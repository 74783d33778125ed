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

RULES = ["nearest", "margin", "cohort", "cohort2"]
COHORT = Settings(decision_rule="cohort")
COHORT2 = Settings(decision_rule="cohort2")


def cands(*distances: float, names: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ") -> list[Candidate]:
    return [Candidate(names[i], d, f"{names[i]}.jpg") for i, d in enumerate(distances)]


def person(
    name: str, best: float, second: float | None = None, spread: float | None = None
) -> Candidate:
    """A candidate with the index's person-level evidence (None: a one-face person)."""
    return Candidate(name, best, f"{name}.jpg", second, spread)


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


@pytest.mark.parametrize("rule", ["margin", "cohort", "cohort2"])
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


@pytest.mark.parametrize("rule", ["cohort", "cohort2"])
def test_crowded_cohort_is_ambiguous(rule):
    # Within the plain tolerance, but the next four persons are about as near: a stranger's
    # typical picture in a big gallery.
    candidates = cands(0.50, 0.53, 0.54, 0.55, 0.56)
    assert decide(candidates, Settings(decision_rule="nearest")).found
    decision = decide(candidates, Settings(decision_rule=rule))
    assert not decision.found
    assert decision.reason == "ambiguous"


@pytest.mark.parametrize("rule", ["cohort", "cohort2"])
def test_same_distance_accepted_or_not_by_its_cohort(rule):
    settings = Settings(decision_rule=rule)
    assert decide(far_cohort(0.50), settings).found
    assert not decide(cands(0.50, 0.58, 0.60, 0.61, 0.62), settings).found


def test_empty_gallery():
    for rule in RULES:
        decision = decide([], Settings(decision_rule=rule))
        assert decision == decision.__class__(False, None, None, 0.0, "empty_gallery", [])


def test_default_rule_is_cohort2():
    # bench/accuracy.py: at false accepts ~3% on lfw-dev, rank-1 96.7% against cohort's 94.4%
    # (small landmarks) and 97.4% against 95.4% (large, the default landmark model).
    assert Settings().decision_rule == "cohort2"
    assert Settings().landmarks == "large"
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


@pytest.mark.parametrize("rule", ["cohort", "cohort2"])
def test_threshold_does_not_depend_on_the_best_distance(rule):
    settings = Settings(decision_rule=rule)
    limits = {thresholds(cands(b, 0.7, 0.72, 0.75, 0.8), settings) for b in (0.1, 0.4, 0.64)}
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
    settings = COHORT
    alone = min(settings.tolerance, settings.cohort_offset + 0.5 * settings.cohort_prior)
    assert thresholds(cands(0.4), settings) == (pytest.approx(alone), pytest.approx(alone))
    assert decide(cands(0.5), settings).found
    far = decide(cands(alone + 0.01), settings)
    assert not far.found and far.reason == "too_far"


@pytest.mark.parametrize("rule", ["cohort", "cohort2"])
def test_top_k_smaller_than_the_cohort_counts_the_hidden_ones_as_near(rule):
    settings = Settings(decision_rule=rule, top_k=2)
    assert decide(cands(0.35, 0.8), settings).found
    # Cut at top_k: the cohort is at least 0.52 away, not the prior's 0.8.
    assert not decide(cands(0.50, 0.52), settings).found
    # A gallery of two persons (fewer than top_k = 5): the prior stands in.
    assert decide(cands(0.50, 0.62), Settings(decision_rule=rule)).found


def test_cohort_settings_move_the_threshold():
    strict = Settings(decision_rule="cohort", cohort_offset=0.05)
    loose = Settings(decision_rule="cohort", cohort_offset=0.30)
    candidates = cands(0.45, 0.70, 0.72, 0.74, 0.76)
    assert not decide(candidates, strict).found
    assert decide(candidates, loose).found
    assert not decide(cands(0.40, 0.44, 0.8), COHORT.model_copy(update={"min_gap": 0.05})).found


# -- cohort2: person distances (two best faces) and the person's own spread ------------------


def test_cohort2_clear_match_of_a_multi_photo_person():
    candidates = [
        person("A", 0.34, 0.38, 0.40),
        person("B", 0.74, 0.80, 0.45),
        person("C", 0.78),
        person("D", 0.80, 0.83, 0.41),
        person("E", 0.82),
    ]
    decision = decide(candidates, COHORT2)
    assert decision.found and decision.person_id == "A" and decision.reason is None
    assert decision.distance == pytest.approx(0.34)  # the nearest face, not the mean of two
    assert decision.confidence > 0.9
    # In the rule's order: D's two faces (0.815 on average) come before C's one (0.78 + 0.05).
    assert [c.person_id for c in decision.candidates] == list("ABDCE")


def test_cohort2_one_lucky_photo_among_a_near_crowd_is_not_enough():
    # A stranger's typical picture: one photo of A happens to be near, A's other photos are
    # not, and several persons are almost as near. The nearest-face rules accept A.
    candidates = [
        person("A", 0.45, 0.66, 0.35),
        person("B", 0.52, 0.56, 0.40),
        person("C", 0.54),
        person("D", 0.55, 0.60, 0.42),
        person("E", 0.56),
    ]
    assert decide(candidates, COHORT).found
    decision = decide(candidates, COHORT2)
    assert not decision.found and decision.reason == "ambiguous"
    # The same best photo backed by a second one: found.
    backed = [person("A", 0.45, 0.47, 0.35), *candidates[1:]]
    assert decide(backed, COHORT2).person_id == "A"


def test_cohort2_stranger_near_several_people_is_ambiguous():
    candidates = [
        person(name, d, d + 0.03, 0.42)
        for name, d in zip("ABCDE", (0.47, 0.49, 0.5, 0.5, 0.51), strict=True)
    ]
    assert decide(candidates, Settings(decision_rule="nearest")).found
    decision = decide(candidates, COHORT2)
    assert not decision.found and decision.reason == "ambiguous"
    assert decision.person_id is None and decision.confidence < 0.5


def test_cohort2_near_tie_between_person_distances_is_ambiguous():
    # A's nearest face is nearer, but B's two faces agree: their person distances tie.
    candidates = [
        person("A", 0.30, 0.40, 0.40),
        person("B", 0.345, 0.355, 0.40),
        *far_cohort(0.5)[1:],
    ]
    decision = decide(candidates, COHORT2)
    assert not decision.found and decision.reason == "ambiguous"
    assert {c.person_id for c in decision.candidates[:2]} == {"A", "B"}


def test_cohort2_multi_photo_person_outranks_a_one_photo_person():
    # B's nearest face is a little farther than A's only photo, but two of B's photos agree.
    candidates = [person("A", 0.40), person("B", 0.42, 0.44, 0.40), *far_cohort(0.5)[1:]]
    decision = decide(candidates, COHORT2)
    assert decision.found and decision.person_id == "B"
    assert decision.distance == pytest.approx(0.42)
    assert [c.person_id for c in decision.candidates][:2] == ["B", "A"]
    assert decide(candidates, COHORT).person_id == "A"  # the nearest face's rule
    # A second face that is far does not help: the one-photo person stays first.
    worse = [person("A", 0.40), person("B", 0.42, 0.60, 0.40), *far_cohort(0.5)[1:]]
    assert decide(worse, COHORT2).person_id == "A"


def test_cohort2_one_face_person_distance_and_unknown_evidence():
    settings = COHORT2
    one = decide([person("A", 0.30), *far_cohort(0.5)[1:]], settings)
    two = decide(
        [person("A", 0.30, 0.30 + 2 * settings.single_face_penalty, None), *far_cohort(0.5)[1:]],
        settings,
    )
    assert one.confidence == pytest.approx(two.confidence)
    # A one-face person gets the typical spread.
    typical = thresholds(
        [person("A", 0.3, 0.4, settings.typical_spread), *far_cohort(0.5)[1:]], settings
    )
    assert thresholds([person("A", 0.3, 0.4), *far_cohort(0.5)[1:]], settings) == typical


def test_cohort2_a_person_whose_photos_vary_gets_a_looser_bar():
    settings = COHORT2
    cohort = [person("B", 0.70), person("C", 0.72), person("D", 0.74), person("E", 0.76)]
    steady = [person("A", 0.56, 0.60, 0.25), *cohort]
    varied = [person("A", 0.56, 0.60, 0.45), *cohort]
    assert not decide(steady, settings).found
    assert decide(varied, settings).found
    (steady_limit, _), (varied_limit, _) = (
        thresholds(steady, settings),
        thresholds(varied, settings),
    )
    assert varied_limit - steady_limit == pytest.approx(settings.spread_weight * 0.20)


def test_cohort2_thresholds_take_candidates_in_any_order():
    candidates = [person("A", 0.40), person("B", 0.42, 0.44, 0.40), *far_cohort(0.5)[1:]]
    assert thresholds(candidates, COHORT2) == thresholds(candidates[::-1], COHORT2)


def test_cohort2_small_gallery_uses_the_prior_cohort():
    s = COHORT2
    alone = min(
        s.tolerance, s.cohort2_offset + s.spread_weight * s.typical_spread + 0.5 * s.cohort_prior
    )
    assert thresholds([person("A", 0.4)], s) == (pytest.approx(alone), pytest.approx(alone))
    assert decide([person("A", alone - s.single_face_penalty - 0.01)], s).found
    far = decide([person("A", alone - s.single_face_penalty + 0.01)], s)
    assert not far.found and far.reason == "too_far"


def test_cohort2_confidence_falls_as_both_faces_move_away():
    rng = random.Random(5)
    for _ in range(100):
        others = [person(n, rng.uniform(0.4, 1.0), None, None) for n in "BCDE"]
        gap, spread = rng.uniform(0.0, 0.2), rng.uniform(0.2, 0.6)
        # A stays the nearest person: its person distance b + gap / 2 stays below the others'.
        top = min(c.distance for c in others) + COHORT2.single_face_penalty - gap / 2
        confidences = [
            decide([person("A", float(b), float(b) + gap, spread), *others], COHORT2).confidence
            for b in np.linspace(0.0, top - 1e-9, 30)
        ]
        assert all(a >= b for a, b in itertools.pairwise(confidences))


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
    blurred = faces.photo(carol)[None, :]
    shard_a.add("alice", "blurred.jpg", blurred)
    single.add("alice", "blurred.jpg", blurred)
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


@pytest.mark.parametrize("rule", ["cohort", "cohort2"])
def test_growing_gallery_neither_flips_a_match_nor_accepts_a_stranger(rule):
    faces = Faces(7)
    enrolled, strangers = faces.people(50), faces.people(30)
    index = FaceIndex()
    for i, centre in enumerate(enrolled):  # 1, 2 or 3 photos a person
        for j in range(1 + i % 3):
            index.add(f"person-{i}", f"{j}.jpg", faces.photo(centre)[None, :])
    probes = [faces.photo(c) for c in enrolled]
    stranger_probes = [faces.photo(c) for c in strangers]
    cohort, plain = Settings(decision_rule=rule), Settings(decision_rule="nearest")
    added = 0
    plain_accepts = {}
    for size in (0, 1_000, 10_000):
        for j, centre in enumerate(faces.people(size - added)):  # one or two photos each
            for k in range(1 + j % 2):
                index.add(f"distractor-{added + j}", f"{k}.jpg", faces.photo(centre)[None, :])
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
