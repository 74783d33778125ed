"""API keys: making and storing them, the two roles and what each may do, the first admin key."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from facenet_ray.config import Settings
from facenet_ray.errors import BadRequest, Forbidden

log = logging.getLogger(__name__)

KEY_PREFIX = "fnr_"  # lets secret scanners and people recognise a facenet_ray key
ADMIN_KEY_ENV = "FACENET_ADMIN_KEY"
ADMIN_KEY_FILE = "admin.key"
MIN_KEY_CHARS = 16  # an operator-chosen FACENET_ADMIN_KEY must be at least this long

ADMIN = "admin"
SEARCH = "search"
ROLES = (ADMIN, SEARCH)

# role a caller has -> roles a route may require of it. `search` may only search and read
# results; `admin` may do everything.
ROLE_ALLOWS: dict[str, frozenset[str]] = {
    ADMIN: frozenset({ADMIN, SEARCH}),
    SEARCH: frozenset({SEARCH}),
}


class KeyStore(Protocol):
    """What auth needs of the catalog (the Catalog class, or a sync wrapper over its actor)."""

    def count_keys(self) -> int: ...

    def add_key(self, key_id: str, key_hash: str, role: str) -> None: ...

    def find_key(self, key_hash: str) -> dict | None: ...


@dataclass(frozen=True)
class IssuedKey:
    """A freshly made key. `key` is shown to its owner once; only `key_hash` is stored."""

    key_id: str  # public handle, used to revoke the key
    key: str
    key_hash: str
    role: str

    def __repr__(self) -> str:  # never put the secret in logs or tracebacks
        return f"IssuedKey(key_id={self.key_id!r}, role={self.role!r})"


def generate_key() -> str:
    """A new random API key: the prefix and 256 bits from the OS's CSPRNG, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(6)


def hash_key(key: str) -> str:
    """The stored form of a key: sha256 hex of its UTF-8 bytes.

    A fast hash is enough here: generated keys carry 256 random bits, so guessing one from its
    hash is infeasible whatever the hash speed. Slow password hashes (bcrypt, argon2) protect
    low-entropy human passwords, and would cost tens of milliseconds on every request; keys
    that operators choose themselves are held to a minimum length instead.
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_role(role: object) -> str:
    """`role` if it is a known role, else BadRequest."""
    if role not in ROLE_ALLOWS:
        raise BadRequest(f"role must be one of {', '.join(ROLES)}")
    return role  # type: ignore[return-value]


def require(role_needed: str, role_have: str) -> None:
    """Raise Forbidden unless a caller with `role_have` may use a route needing `role_needed`."""
    if role_needed not in ROLE_ALLOWS.get(role_have, frozenset()):
        raise Forbidden(f"this route needs the {role_needed} role")


def issue_key(role: str) -> IssuedKey:
    """Make a new key for `role` (not yet stored: the caller stores key_id, key_hash, role)."""
    role = check_role(role)
    key = generate_key()
    return IssuedKey(key_id=new_key_id(), key=key, key_hash=hash_key(key), role=role)


def ensure_admin_key(catalog: KeyStore, settings: Settings) -> Path | None:
    """Give a data dir its first admin key; returns the key file's path when one was written.

    Runs at every start and does nothing once the catalog holds any key. Otherwise the key is
    `FACENET_ADMIN_KEY` when set (for automation; nothing is written to disk), else a new random
    key written owner-only to `<data_dir>/admin.key`. Only the key's hash enters the catalog.
    """
    if catalog.count_keys() > 0:
        return None
    from_env = os.environ.get(ADMIN_KEY_ENV, "")
    if from_env:
        if len(from_env) < MIN_KEY_CHARS:
            raise ValueError(f"{ADMIN_KEY_ENV} must be at least {MIN_KEY_CHARS} characters long")
        catalog.add_key(new_key_id(), hash_key(from_env), ADMIN)
        log.info("admin key taken from %s", ADMIN_KEY_ENV)
        return None
    issued = issue_key(ADMIN)
    path = settings.data_dir / ADMIN_KEY_FILE
    # The file is written before the hash is stored: a failed write then leaves no key that
    # nobody can use.
    _write_owner_only(path, issued.key + "\n")
    catalog.add_key(issued.key_id, issued.key_hash, issued.role)
    log.info("admin key written to %s", path)
    return path


def _write_owner_only(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 0600 from the first byte on, replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
