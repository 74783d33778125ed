"""PhotoStore on real files: names, containment, atomic writes, checksums, empty files."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from facenet_ray.errors import BadRequest, Conflict, InvalidName, NotFound
from facenet_ray.store import PhotoInfo, PhotoStore, sha256_bytes, sha256_file

UNICODE_NAMES = ["Barack Obama", "Иван Петров", "王小明", "😀 emoji", "a" * 255]
BAD_NAMES = ["", ".", "..", "../..", "/etc", "a/b", "a\\b", "a\x00b", "\n", "a" * 256, ".hidden"]


def snapshot(top: Path) -> list[tuple[str, str, str]]:
    """Every entry under `top` with its kind and content, to prove nothing changed."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames:
            entries.append((os.path.relpath(os.path.join(dirpath, name), top), "dir", ""))
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                entries.append((str(path.relative_to(top)), "link", os.readlink(path)))
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                entries.append((str(path.relative_to(top)), "file", digest))
    return sorted(entries)


@pytest.fixture
def store(tmp_path: Path) -> PhotoStore:
    return PhotoStore(tmp_path / "store")


def test_init_creates_root(tmp_path: Path) -> None:
    store = PhotoStore(tmp_path / "a" / "b")
    assert store.root.is_dir()
    assert store.list_dirs() == []


@pytest.mark.parametrize("person_id", UNICODE_NAMES)
def test_unicode_round_trip(store: PhotoStore, person_id: str) -> None:
    photo = f"{person_id[:200]} фото 1.jpg"
    data = b"\xff\xd8 jpeg bytes " + person_id.encode()
    info = store.add_photo(person_id, photo, data)
    assert info == PhotoInfo(photo, len(data), sha256_bytes(data))
    assert store.has_dir(person_id)
    assert store.list_dirs() == [person_id]
    assert store.list_photos(person_id) == [PhotoInfo(photo, len(data), None)]
    assert store.count_photos(person_id) == 1
    assert store.photo_path(person_id, photo).read_bytes() == data
    assert store.check_photo(person_id, photo, checksum=True).sha256 == sha256_bytes(data)


def test_create_dir_reports_whether_it_created(store: PhotoStore) -> None:
    assert store.create_dir("Иван Петров") is True
    assert store.create_dir("Иван Петров") is False
    assert store.has_dir("Иван Петров")
    assert store.count_photos("Иван Петров") == 0


def test_create_dir_over_a_file_is_a_conflict(store: PhotoStore) -> None:
    (store.root / "person").write_bytes(b"x")
    with pytest.raises(Conflict):
        store.create_dir("person")


def test_listings_are_sorted_and_skip_temp_hidden_and_subfolders(store: PhotoStore) -> None:
    for photo in ["b.jpg", "a.jpg", "c d.jpg"]:
        store.add_photo("p", photo, b"x" * 3)
    store.create_dir("z")
    store.create_dir("m")
    (store.root / "p" / ".tmp-0123abcd").write_bytes(b"partial")
    (store.root / "p" / ".DS_Store").write_bytes(b"junk")
    (store.root / "p" / "sub").mkdir()
    (store.root / ".tmp-folder").mkdir()
    (store.root / "loose-file.jpg").write_bytes(b"x")
    assert store.list_dirs() == ["m", "p", "z"]
    assert [p.name for p in store.list_photos("p")] == ["a.jpg", "b.jpg", "c d.jpg"]
    assert store.count_photos("p") == 3


PHOTO_OPS: dict[str, Callable[[PhotoStore, str, str], object]] = {
    "add_photo": lambda s, d, p: s.add_photo(d, p, b"data"),
    "check_photo": lambda s, d, p: s.check_photo(d, p, checksum=True),
    "remove_photo": lambda s, d, p: s.remove_photo(d, p),
    "photo_path": lambda s, d, p: s.photo_path(d, p),
}
DIR_OPS: dict[str, Callable[[PhotoStore, str], object]] = {
    "has_dir": lambda s, d: s.has_dir(d),
    "create_dir": lambda s, d: s.create_dir(d),
    "list_photos": lambda s, d: s.list_photos(d),
    "count_photos": lambda s, d: s.count_photos(d),
    "remove_dir": lambda s, d: s.remove_dir(d),
}


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_bad_names_are_rejected_and_nothing_is_written(
    tmp_path: Path, store: PhotoStore, bad: str
) -> None:
    store.add_photo("victim", "keep.jpg", b"keep")
    (tmp_path / "outside.jpg").write_bytes(b"outside")
    before = snapshot(tmp_path)
    for op in DIR_OPS.values():
        with pytest.raises(InvalidName):
            op(store, bad)
    for op in PHOTO_OPS.values():
        with pytest.raises(InvalidName):
            op(store, bad, "x.jpg")
        with pytest.raises(InvalidName):
            op(store, "victim", bad)
    assert snapshot(tmp_path) == before


def test_empty_data_is_a_bad_request(store: PhotoStore) -> None:
    with pytest.raises(BadRequest):
        store.add_photo("p", "empty.jpg", b"")
    assert store.list_dirs() == []


def test_sha_mismatch_is_a_conflict_and_writes_nothing(tmp_path: Path, store: PhotoStore) -> None:
    store.add_photo("p", "old.jpg", b"old")
    before = snapshot(tmp_path)
    with pytest.raises(Conflict):
        store.add_photo("p", "old.jpg", b"new", sha256=sha256_bytes(b"other"))
    with pytest.raises(Conflict):
        store.add_photo("new person", "x.jpg", b"new", sha256="0" * 64)
    assert snapshot(tmp_path) == before


def test_matching_sha_is_accepted_in_any_case(store: PhotoStore) -> None:
    digest = sha256_bytes(b"data")
    assert store.add_photo("p", "x.jpg", b"data", sha256=digest.upper()).sha256 == digest


def test_add_photo_replaces_whole_and_leaves_no_temp_files(store: PhotoStore) -> None:
    store.add_photo("p", "x.jpg", b"first version, longer")
    store.add_photo("p", "x.jpg", b"second")
    assert store.photo_path("p", "x.jpg").read_bytes() == b"second"
    assert os.listdir(store.root / "p") == ["x.jpg"]
    assert os.listdir(store.root) == ["p"]


def test_failed_write_leaves_no_temp_file(store: PhotoStore) -> None:
    (store.root / "p" / "x.jpg").mkdir(parents=True)
    with pytest.raises(Conflict):
        store.add_photo("p", "x.jpg", b"data")
    assert os.listdir(store.root / "p") == ["x.jpg"]


def test_sha256_helpers_agree_with_hashlib(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # spans several 1 MiB chunks
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_bytes(data) == expected
    assert sha256_file(path) == expected


def test_check_photo_with_and_without_checksum(store: PhotoStore) -> None:
    store.add_photo("p", "x.jpg", b"12345")
    assert store.check_photo("p", "x.jpg") == PhotoInfo("x.jpg", 5, None)
    assert store.check_photo("p", "x.jpg", checksum=True) == PhotoInfo(
        "x.jpg", 5, sha256_bytes(b"12345")
    )


def test_not_found_cases(store: PhotoStore) -> None:
    store.add_photo("p", "x.jpg", b"x")
    (store.root / "p" / "sub").mkdir()
    assert store.has_dir("missing") is False
    with pytest.raises(NotFound):
        store.list_photos("missing")
    with pytest.raises(NotFound):
        store.count_photos("missing")
    with pytest.raises(NotFound):
        store.remove_dir("missing")
    with pytest.raises(NotFound):
        store.check_photo("missing", "x.jpg")
    with pytest.raises(NotFound):
        store.check_photo("p", "missing.jpg")
    with pytest.raises(NotFound):
        store.check_photo("p", "sub")
    with pytest.raises(NotFound):
        store.remove_photo("p", "missing.jpg")


def test_remove_photo_and_dir(store: PhotoStore) -> None:
    store.add_photo("p", "a.jpg", b"a")
    store.add_photo("p", "b.jpg", b"b")
    store.remove_photo("p", "a.jpg")
    assert [p.name for p in store.list_photos("p")] == ["b.jpg"]
    assert store.remove_dir("p") == 1
    assert not store.has_dir("p")
    assert store.list_dirs() == []


def test_remove_all(store: PhotoStore) -> None:
    for person_id in ["a", "Иван Петров", "王小明"]:
        store.add_photo(person_id, "x.jpg", b"x")
    store.create_dir("empty")
    assert store.remove_all() == 4
    assert store.list_dirs() == []
    assert store.root.is_dir()
    assert store.remove_all() == 0


def test_purge_empty_everywhere_under_root(store: PhotoStore) -> None:
    store.add_photo("p", "keep.jpg", b"k")
    (store.root / "p" / "empty 1.jpg").touch()
    (store.root / "Иван Петров").mkdir()
    (store.root / "Иван Петров" / "пусто.jpg").touch()
    (store.root / "p" / "sub").mkdir()
    (store.root / "p" / "sub" / "deep.jpg").touch()
    (store.root / "loose.jpg").touch()
    (store.root / "p" / ".tmp-inflight").touch()  # a write in progress: not ours to delete
    assert store.purge_empty() == [
        ("", "loose.jpg"),
        ("p", "empty 1.jpg"),
        ("p", "sub/deep.jpg"),
        ("Иван Петров", "пусто.jpg"),
    ]
    assert sorted(os.listdir(store.root / "p")) == [".tmp-inflight", "keep.jpg", "sub"]
    assert os.listdir(store.root / "Иван Петров") == []
    assert not (store.root / "loose.jpg").exists()
    assert store.purge_empty() == []


def test_inventory_purges_empty_files_first(store: PhotoStore) -> None:
    store.add_photo("a", "1.jpg", b"one")
    store.add_photo("a", "2.jpg", b"two!")
    store.create_dir("b")
    (store.root / "b" / "empty.jpg").touch()
    assert store.inventory() == {
        "a": {"1.jpg": PhotoInfo("1.jpg", 3, None), "2.jpg": PhotoInfo("2.jpg", 4, None)},
        "b": {},
    }
    assert not (store.root / "b" / "empty.jpg").exists()
    assert store.inventory(checksum=True)["a"]["2.jpg"].sha256 == sha256_bytes(b"two!")


def test_symlinks_escaping_root_are_refused(tmp_path: Path, store: PhotoStore) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"secret")
    (outside / "empty.jpg").touch()
    (store.root / "evil").symlink_to(outside, target_is_directory=True)
    store.add_photo("p", "ok.jpg", b"ok")
    (store.root / "p" / "link.jpg").symlink_to(outside / "secret.jpg")
    (store.root / "p" / "empty-link.jpg").symlink_to(outside / "empty.jpg")
    before = snapshot(tmp_path)

    assert store.list_dirs() == ["p"]
    assert [p.name for p in store.list_photos("p")] == ["ok.jpg"]
    for op in DIR_OPS.values():
        with pytest.raises(InvalidName):
            op(store, "evil")
    for op in PHOTO_OPS.values():
        with pytest.raises(InvalidName):
            op(store, "evil", "secret.jpg")
        with pytest.raises(InvalidName):
            op(store, "p", "link.jpg")
    assert store.purge_empty() == []
    assert snapshot(tmp_path) == before

    assert store.remove_all() == 1
    assert (outside / "secret.jpg").read_bytes() == b"secret"
    assert (outside / "empty.jpg").exists()


def test_symlink_inside_root_is_followed(store: PhotoStore) -> None:
    store.add_photo("real", "x.jpg", b"x")
    (store.root / "alias").symlink_to(store.root / "real", target_is_directory=True)
    assert store.list_dirs() == ["alias", "real"]
    assert store.count_photos("alias") == 1
    assert store.remove_dir("alias") == 1
    assert store.list_dirs() == ["real"]
    assert store.count_photos("real") == 1


def test_root_reached_through_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "disk").mkdir()
    (tmp_path / "data").symlink_to(tmp_path / "disk", target_is_directory=True)
    store = PhotoStore(tmp_path / "data")
    store.add_photo("p", "x.jpg", b"x")
    assert (tmp_path / "disk" / "p" / "x.jpg").read_bytes() == b"x"
