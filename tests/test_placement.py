"""placement: weighted rendezvous hashing of folders onto servers."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from facenet_ray.errors import Unavailable
from facenet_ray.placement import assign, moved, plan

FOLDERS = [f"person-{i:05d}" for i in range(20_000)]


def test_deterministic_and_plan_matches_assign() -> None:
    weights = {"srv-a": 2, "srv-b": 3, "srv-c": 1}
    first = plan(FOLDERS[:500], weights)
    assert plan(FOLDERS[:500], dict(reversed(weights.items()))) == first
    assert all(assign(folder, weights) == server for folder, server in first.items())
    # Pinned answers: a salted or changed hash would reshuffle every deployed gallery.
    assert plan(["Иван Петров", "Barack_Obama", "王小明", "😀"], {"a": 1, "b": 1, "c": 1}) == {
        "Иван Петров": "b",
        "Barack_Obama": "c",
        "王小明": "c",
        "😀": "a",
    }


def test_shares_are_proportional_to_weights() -> None:
    weights = {"one": 1, "two": 2, "four": 4}
    counts = Counter(plan(FOLDERS, weights).values())
    total = sum(weights.values())
    for server, weight in weights.items():
        assert counts[server] / len(FOLDERS) == pytest.approx(weight / total, abs=0.02)


def test_adding_an_equal_server_moves_a_third_only_to_it() -> None:
    before = plan(FOLDERS, {"a": 4, "b": 4})
    after = plan(FOLDERS, {"a": 4, "b": 4, "c": 4})
    n_moved = moved(before, after)
    ideal = len(FOLDERS) / 3
    assert abs(n_moved - ideal) < 0.1 * ideal
    assert all(after[f] == "c" for f in FOLDERS if before[f] != after[f])


def test_removing_a_server_moves_only_its_folders() -> None:
    before = plan(FOLDERS, {"a": 2, "b": 4, "c": 8})
    after = plan(FOLDERS, {"a": 2, "c": 8})
    held_by_b = [f for f in FOLDERS if before[f] == "b"]
    assert moved(before, after) == len(held_by_b)
    assert all(before[f] == after[f] for f in FOLDERS if before[f] != "b")


def test_raising_a_weight_moves_folders_only_to_that_server() -> None:
    before = plan(FOLDERS[:5000], {"a": 2, "b": 2})
    after = plan(FOLDERS[:5000], {"a": 2, "b": 6})
    assert moved(before, after) > 0
    assert all(after[f] == "b" for f in before if before[f] != after[f])


def test_non_positive_weights_take_nothing() -> None:
    weights = {"a": 1, "zero": 0, "neg": -3, "nan": math.nan, "inf": math.inf}
    assert set(plan(FOLDERS[:1000], weights).values()) == {"a"}


@pytest.mark.parametrize("weights", [{}, {"a": 0}, {"a": -1, "b": 0.0}])
def test_no_usable_server_is_unavailable(weights: dict[str, float]) -> None:
    with pytest.raises(Unavailable):
        assign("p", weights)
    with pytest.raises(Unavailable):
        plan(["p"], weights)


def test_moved_counts_only_folders_in_both_plans() -> None:
    before = {"x": "a", "y": "a", "gone": "b"}
    after = {"x": "a", "y": "b", "new": "c"}
    assert moved(before, after) == 1
    assert moved({}, after) == 0
