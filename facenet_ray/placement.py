"""CPU-weighted, deterministic, minimal-move assignment of person folders to servers (pure).

Weighted rendezvous (highest-random-weight) hashing: every (server, folder) pair gets a stable
pseudo-random u in (0, 1) and the score -weight / ln(u); the folder goes to the highest score.
Properties, all without any shared state or coordination:

- Deterministic: the same folder and weights give the same server in every process and run.
- Proportional: in expectation a server receives weight / sum(weights) of the folders.
- Minimal move: when a server joins, the only folders that move are those that move to it;
  when a server leaves, the only folders that move are the ones it held. Changing one server's
  weight moves folders only to it (weight up) or only from it (weight down).

Shares are of folders; they approximate shares of photos when folder sizes are unrelated to
folder names, which hashing makes so.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping

from facenet_ray.errors import Unavailable

_MANTISSA_BITS = 53  # a float holds 53 bits exactly, so u below is never rounded to 0 or 1


def _unit(server: str, folder: str) -> float:
    # blake2b, not hash(): Python's str hash is salted per process and would reshuffle everything.
    digest = hashlib.blake2b(f"{server}\x00{folder}".encode(), digest_size=8).digest()
    bits = int.from_bytes(digest, "big") >> (64 - _MANTISSA_BITS)
    return (bits + 0.5) / (1 << _MANTISSA_BITS)


def _score(server: str, folder: str, weight: float) -> float:
    return -weight / math.log(_unit(server, folder))


def _eligible(weights: Mapping[str, float]) -> dict[str, float]:
    servers = {s: float(w) for s, w in weights.items() if math.isfinite(w) and w > 0}
    if not servers:
        raise Unavailable("no server with a positive CPU weight to place folders on")
    return servers


def _pick(folder: str, servers: Mapping[str, float]) -> str:
    # Ties (practically impossible) go to the larger server id, so the answer stays deterministic.
    return max(servers, key=lambda s: (_score(s, folder, servers[s]), s))


def assign(folder: str, weights: Mapping[str, float]) -> str:
    """The server that holds `folder`, given each server's weight (its CPU count).

    Servers with a zero, negative or non-finite weight take no folders; if none is left,
    raises Unavailable.
    """
    return _pick(folder, _eligible(weights))


def plan(folders: Iterable[str], weights: Mapping[str, float]) -> dict[str, str]:
    """Folder -> server for every folder: `assign` for each, with the weights checked once."""
    servers = _eligible(weights)
    return {folder: _pick(folder, servers) for folder in folders}


def moved(before: Mapping[str, str], after: Mapping[str, str]) -> int:
    """Folders present in both plans whose server differs; new or dropped folders don't count."""
    return sum(1 for folder, server in after.items() if before.get(folder, server) != server)
