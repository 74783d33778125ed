"""The answer to a search: which person a probe shows, or that it shows nobody in the gallery.

`decide()` gets the merged candidates of a probe (one per person, at that person's best photo
distance, nearest first, `Settings.top_k` of them) and accepts the nearest person when its
distance is under a threshold. The rules differ in that threshold (`Settings.decision_rule`):

- ``"nearest"``: ``tolerance`` (plain face_recognition; kept for comparison).
- ``"margin"``: ratio test, ``min(tolerance, margin_ratio * second)``.
- ``"cohort"``: a tolerance set by the probe's own cohort, the persons that come after the
  best one: ``min(tolerance, cohort_offset + cohort_weight * mean(cohort), second - min_gap)``.
- ``"cohort2"``: the cohort rule on *person* distances, loosened for persons whose own photos
  vary. A person's distance is the mean of its two best faces (``Candidate.second`` from the
  index; a person with one face: its face + ``single_face_penalty``), persons are ranked by it,
  and the limit is ``min(tolerance, cohort2_offset + cohort_weight * mean(cohort) +
  spread_weight * spread, second - min_gap)`` where ``spread`` is the mean distance between the
  best person's own faces (``Candidate.spread``; ``typical_spread`` for a one-face person).

Why the cohort: in a big gallery a stranger is always near *someone* (on lfw-dev with 100k
extra persons, two strangers in three have a person within 0.5), but then the next persons are
about as near too, while a true match stands out from them. Measured on lfw-dev
(bench/accuracy.py), the plain tolerance's false accepts grow with the gallery, the ratio
test's are too many at a few hundred persons and shrink as it grows, and the cohort rule's stay
at 2-3% from 220 to 100k persons. In a gallery of fewer than ``cohort_size + 1`` persons the
missing cohort members count as ``cohort_prior``, the typical distance between two different
people, so a tiny gallery gets about the plain tolerance; when ``top_k`` itself is too small to
show the cohort, the missing ones count as the last one shown. ``min_gap`` rejects near-ties
between two persons (say the same person enrolled twice) however near both are.

Why cohort2: two photos agreeing is stronger evidence than one lucky photo (a stranger's best
match is often one odd photo of someone), and a person whose enrolled photos differ a lot
(age, light, pose) will match a new photo of theirs less closely than a person photographed
alike, so the bar moves with that person's own variation. Measured on lfw-dev (bench/accuracy.py,
30 seeds, each rule's threshold calibrated on 30 other seeds for false accepts <= 3%): rank-1
97.4% against cohort's 95.4% with large landmarks (96.7% against 94.4% with small ones); as
configured, with 100k synthetic one-photo distractor persons added, 90.9% against 83.5% at
false accepts ~2% for both. Candidates without ``second``/``spread`` (None) count as one-face
persons.

Not found comes with a reason: ``"empty_gallery"`` (no candidate), ``"too_far"`` (the nearest
person is farther than the rule would accept even with nobody else near) or ``"ambiguous"``
(near enough, but other persons are about as near). ``"no_face"`` is the caller's, before any
search. ``confidence`` is ``1 / (1 + exp((distance - threshold) / confidence_scale))``: in
[0, 1], 0.5 at the threshold (at or above it exactly when found), lower as the distance grows.
For "cohort2" the distance compared (and in the confidence) is the person distance, while
``Decision.distance`` stays the nearest face's and ``Decision.candidates`` come in the rule's
order (person distance).
"""

from __future__ import annotations

import math

from facenet_ray.config import Settings
from facenet_ray.index import Candidate, Decision

RULES = ("nearest", "margin", "cohort", "cohort2")


def decide(candidates: list[Candidate], settings: Settings) -> Decision:
    """Found when the nearest person is within the rule's threshold (see the module doc).

    `candidates` are one per person, nearest first (as `FaceIndex.search` and
    `merge_candidates` return them); they are sorted and de-duplicated here anyway.
    """
    ranked = _in_rule_order(_ranked(candidates), settings)
    if not ranked:
        return Decision(False, None, None, 0.0, "empty_gallery", [])
    best = ranked[0]
    value = _rule_distance(best, settings)
    limit, alone = thresholds(ranked, settings)
    confidence = _confidence(value, limit, settings.confidence_scale)
    if value <= limit:
        return Decision(True, best.person_id, best.distance, confidence, None, ranked)
    reason = "too_far" if value > alone else "ambiguous"
    return Decision(False, None, best.distance, confidence, reason, ranked)


def person_distance(candidate: Candidate, settings: Settings) -> float:
    """The "cohort2" rule's distance of a person: the mean of its two best faces, or its one
    face's distance + `single_face_penalty` (also when `second` is unknown)."""
    if candidate.second is None:
        return candidate.distance + settings.single_face_penalty
    return (candidate.distance + candidate.second) / 2


def thresholds(ranked: list[Candidate], settings: Settings) -> tuple[float, float]:
    """(limit, alone): the nearest person is accepted at a distance <= `limit`; `alone` is
    the limit it would have if no other person were near (beyond it the reason is too_far).

    `ranked` is nearest first, one per person, non-empty. Neither value depends on the best
    distance itself, so a nearer best person is never less accepted. For "cohort2" the
    distances are person distances (`person_distance`) and "nearest first" is by them (the
    order is re-established here).
    """
    rule = settings.decision_rule
    tolerance = settings.tolerance
    others = [c.distance for c in ranked[1:]]
    if rule == "nearest":
        return tolerance, tolerance
    if rule == "margin":
        limit = tolerance if not others else min(tolerance, settings.margin_ratio * others[0])
        return limit, tolerance
    if rule == "cohort":
        size, prior = settings.cohort_size, settings.cohort_prior
        offset, weight = settings.cohort_offset, settings.cohort_weight
        # Missing cohort members: a gallery this small has none, the prior stands in; a list
        # cut at top_k hides some, each at least as far as the last one shown.
        fill = prior if len(ranked) < settings.top_k or not others else others[-1]
        cohort = others[:size] + [fill] * max(0, size - len(others))
        limit = min(tolerance, offset + weight * (sum(cohort) / size))
        alone = min(tolerance, offset + weight * prior)
        if others:
            limit = min(limit, others[0] - settings.min_gap)
        return limit, alone
    if rule == "cohort2":
        ranked = _in_rule_order(ranked, settings)
        others = [person_distance(c, settings) for c in ranked[1:]]
        spread = ranked[0].spread if ranked[0].spread is not None else settings.typical_spread
        size, prior = settings.cohort_size, settings.cohort_prior
        offset = settings.cohort2_offset + settings.spread_weight * spread
        fill = prior if len(ranked) < settings.top_k or not others else others[-1]
        cohort = others[:size] + [fill] * max(0, size - len(others))
        limit = min(tolerance, offset + settings.cohort_weight * (sum(cohort) / size))
        alone = min(tolerance, offset + settings.cohort_weight * prior)
        if others:
            limit = min(limit, others[0] - settings.min_gap)
        return limit, alone
    raise ValueError(f"unknown decision rule {rule!r}; expected one of {RULES}")


def _ranked(candidates: list[Candidate]) -> list[Candidate]:
    """Nearest first, one per person (its best), ties broken by person id."""
    best: dict[str, Candidate] = {}
    for candidate in candidates:
        known = best.get(candidate.person_id)
        if known is None or candidate.distance < known.distance:
            best[candidate.person_id] = candidate
    return sorted(best.values(), key=lambda c: (c.distance, c.person_id))


def _in_rule_order(ranked: list[Candidate], settings: Settings) -> list[Candidate]:
    """`ranked` (nearest face first) in the order the rule ranks persons by."""
    if settings.decision_rule != "cohort2":
        return ranked
    return sorted(ranked, key=lambda c: (person_distance(c, settings), c.person_id))


def _rule_distance(candidate: Candidate, settings: Settings) -> float:
    if settings.decision_rule == "cohort2":
        return person_distance(candidate, settings)
    return candidate.distance


def _confidence(distance: float, limit: float, scale: float) -> float:
    """Logistic in (limit - distance): 0.5 at the limit, towards 1 nearer, towards 0 farther."""
    z = (limit - distance) / scale
    if z >= 0:
        value = 1.0 / (1.0 + math.exp(-z))
    else:
        e = math.exp(z)
        value = e / (1.0 + e)
    return min(1.0, max(0.0, value))
