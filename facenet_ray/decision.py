"""The answer to a search: which person a probe shows, or that it shows nobody in the gallery."""

from __future__ import annotations

from facenet_ray.config import Settings
from facenet_ray.index import Candidate, Decision


def decide(candidates: list[Candidate], settings: Settings) -> Decision:
    """Found when the nearest person is within `settings.tolerance`.

    `candidates` are one per person, nearest first (as `FaceIndex.search` and
    `merge_candidates` return them). Confidence falls linearly from 1 at distance 0 to 0.5 at
    the tolerance and 0 at twice the tolerance.
    """
    if not candidates:
        return Decision(False, None, None, 0.0, "empty_gallery", [])
    best = min(candidates, key=lambda c: c.distance)
    confidence = min(1.0, max(0.0, 1.0 - best.distance / (2 * settings.tolerance)))
    if best.distance <= settings.tolerance:
        return Decision(True, best.person_id, best.distance, confidence, None, candidates)
    return Decision(False, None, best.distance, confidence, "too_far", candidates)
