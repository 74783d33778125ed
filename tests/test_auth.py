"""API keys: generation, hashing, roles, and the first admin key of a data dir."""

from __future__ import annotations

import stat

import pytest

from facenet_ray import auth
from facenet_ray.catalog import Catalog
from facenet_ray.config import Settings
from facenet_ray.errors import BadRequest, Forbidden


@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def catalog(tmp_path):
    with Catalog(tmp_path / "catalog.duckdb") as catalog:
        yield catalog


@pytest.fixture(autouse=True)
def no_env_key(monkeypatch):
    monkeypatch.delenv(auth.ADMIN_KEY_ENV, raising=False)


def test_generated_keys_are_long_random_and_prefixed():
    keys = {auth.generate_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert key.startswith(auth.KEY_PREFIX)
        assert len(key) >= len(auth.KEY_PREFIX) + 43  # 32 bytes, base64url
        assert key.isascii() and " " not in key


def test_hash_is_sha256_hex_and_stable():
    key = auth.generate_key()
    digest = auth.hash_key(key)
    assert digest == auth.hash_key(key)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert key not in digest
    assert auth.hash_key(key + "x") != digest


def test_issued_key_hides_its_secret():
    issued = auth.issue_key(auth.SEARCH)
    assert auth.hash_key(issued.key) == issued.key_hash
    assert issued.role == auth.SEARCH
    assert issued.key not in repr(issued) and issued.key not in str(issued)


def test_issue_key_rejects_unknown_role():
    with pytest.raises(BadRequest):
        auth.issue_key("root")


@pytest.mark.parametrize(
    ("needed", "have", "allowed"),
    [
        (auth.ADMIN, auth.ADMIN, True),
        (auth.SEARCH, auth.ADMIN, True),
        (auth.SEARCH, auth.SEARCH, True),
        (auth.ADMIN, auth.SEARCH, False),
        (auth.SEARCH, "revoked", False),
        (auth.ADMIN, "", False),
    ],
)
def test_require(needed, have, allowed):
    if allowed:
        auth.require(needed, have)
    else:
        with pytest.raises(Forbidden):
            auth.require(needed, have)


def test_first_start_writes_owner_only_admin_key(settings, catalog):
    path = auth.ensure_admin_key(catalog, settings)
    assert path == settings.data_dir / "admin.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text().strip()
    assert catalog.find_key(auth.hash_key(key))["role"] == auth.ADMIN
    assert catalog.count_keys() == 1
    assert catalog.find_key(key) is None  # only the hash is stored
    assert [p.name for p in settings.data_dir.iterdir()] == ["admin.key"]  # no temp file left


def test_later_starts_change_nothing(settings, catalog, monkeypatch):
    path = auth.ensure_admin_key(catalog, settings)
    first = path.read_text()
    monkeypatch.setenv(auth.ADMIN_KEY_ENV, "an-operator-key-set-later")
    assert auth.ensure_admin_key(catalog, settings) is None
    assert path.read_text() == first
    assert catalog.count_keys() == 1


def test_admin_key_from_environment(settings, catalog, monkeypatch):
    monkeypatch.setenv(auth.ADMIN_KEY_ENV, "correct-horse-battery-staple")
    assert auth.ensure_admin_key(catalog, settings) is None
    assert catalog.find_key(auth.hash_key("correct-horse-battery-staple"))["role"] == auth.ADMIN
    assert not (settings.data_dir / "admin.key").exists()


def test_short_environment_key_is_refused(settings, catalog, monkeypatch):
    monkeypatch.setenv(auth.ADMIN_KEY_ENV, "secret")
    with pytest.raises(ValueError, match=auth.ADMIN_KEY_ENV):
        auth.ensure_admin_key(catalog, settings)
    assert catalog.count_keys() == 0


def test_revoked_keys_leave_room_for_a_new_admin_key(settings, catalog):
    first = auth.ensure_admin_key(catalog, settings).read_text().strip()
    catalog.revoke_key(catalog.find_key(auth.hash_key(first))["key_id"])
    second = auth.ensure_admin_key(catalog, settings).read_text().strip()
    assert second != first
    assert catalog.find_key(auth.hash_key(first)) is None
    assert catalog.find_key(auth.hash_key(second))["role"] == auth.ADMIN


def test_existing_loose_key_file_is_replaced_owner_only(settings, catalog):
    settings.data_dir.mkdir(parents=True)
    stale = settings.data_dir / "admin.key"
    stale.write_text("old")
    stale.chmod(0o644)
    path = auth.ensure_admin_key(catalog, settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() != "old"
