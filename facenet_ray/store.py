"""One node's person folders on disk: validated paths, atomic writes, checksums, empty files."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from facenet_ray.errors import BadRequest, Conflict, InvalidName, NotFound
from facenet_ray.names import check_name

CHUNK_BYTES = 1024 * 1024
TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class PhotoInfo:
    """One photo of a person folder; `sha256` is None unless a checksum was asked for."""

    name: str
    size: int
    sha256: str | None


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file at `path`, read in 1 MiB chunks so big files never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    # A rename or unlink is only durable once the directory entry itself reaches the disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_listed(name: str) -> bool:
    # Dot-files are our own in-flight temp files or foreign clutter (.DS_Store); never photos.
    return not name.startswith(".")


class PhotoStore:
    """The person folders under one root, `root/<person_id>/<photo>`; nothing outside is touched.

    Names are checked by `names.check_name` and must not start with '.'; a name that fails, or
    that leads out of root through a symlink, raises InvalidName before anything is done.
    """

    def __init__(self, root: Path) -> None:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        # Resolved once so containment checks compare real paths even when root is itself a link.
        self.root: Path = root.resolve()

    def _check(self, name: str, what: str) -> str:
        check_name(name, what)
        if not _is_listed(name):
            # A dot-name would be written but never listed (and could collide with a temp file).
            raise InvalidName(f"{what} must not start with '.'")
        return name

    def _inside(self, path: Path, what: str) -> Path:
        # Defence in depth beyond check_name: a symlink planted in the store must not lead out.
        # Names are single components and root is resolved, so only a link at the folder or
        # photo level can: one lstat each, and the full resolve only when one is a link.
        step = self.root
        for part in path.relative_to(self.root).parts:
            step = step / part
            if step.is_symlink():
                if not path.resolve().is_relative_to(self.root):
                    raise InvalidName(f"{what} resolves outside the store root")
                break
        return path

    def _dir_path(self, person_id: str) -> Path:
        self._check(person_id, "dirName")
        return self._inside(self.root / person_id, "dirName")

    def _existing_dir(self, person_id: str) -> Path:
        folder = self._dir_path(person_id)
        if not folder.is_dir():
            raise NotFound(f"no folder {person_id!r}")
        return folder

    def _existing_photo(self, person_id: str, photo: str) -> Path:
        path = self.photo_path(person_id, photo)
        if not path.is_file():
            raise NotFound(f"no photo {photo!r} in folder {person_id!r}")
        return path

    def _listed(self, folder: Path, folders: bool) -> list[str]:
        """Sorted names of the sub-folders (or files) of `folder` that listings show."""
        names = []
        for entry in os.scandir(folder):
            wanted = entry.is_dir() if folders else entry.is_file()
            if not wanted or not _is_listed(entry.name):
                continue
            if entry.is_symlink() and not Path(entry.path).resolve().is_relative_to(self.root):
                continue
            names.append(entry.name)
        return sorted(names)

    def photo_path(self, person_id: str, photo: str) -> Path:
        """Path of a photo (existing or not) after validating both names; always inside root."""
        folder = self._dir_path(person_id)
        self._check(photo, "photo")
        return self._inside(folder / photo, "photo")

    def has_dir(self, person_id: str) -> bool:
        """True if the person folder exists."""
        return self._dir_path(person_id).is_dir()

    def create_dir(self, person_id: str, durable: bool = True) -> bool:
        """Create the person folder; True if created, False if it already existed.

        With `durable=False` the new entry is not yet fsynced (see `add_photo`)."""
        folder = self._dir_path(person_id)
        try:
            folder.mkdir()
        except FileExistsError:
            if folder.is_dir():
                return False
            raise Conflict(f"{person_id!r} exists and is not a folder") from None
        if durable:
            _fsync_dir(self.root)
        return True

    def list_dirs(self) -> list[str]:
        """Every person folder, sorted; temp, hidden and escaping entries are left out."""
        return self._listed(self.root, folders=True)

    def list_photos(self, person_id: str) -> list[PhotoInfo]:
        """The folder's photos, sorted by name, with sizes, no checksums; NotFound if no folder."""
        folder = self._existing_dir(person_id)
        return [
            PhotoInfo(name, (folder / name).stat().st_size, None)
            for name in self._listed(folder, folders=False)
        ]

    def count_photos(self, person_id: str) -> int:
        """Number of photos in the folder; NotFound if no folder."""
        return len(self._listed(self._existing_dir(person_id), folders=False))

    def remove_dir(self, person_id: str) -> int:
        """Remove the person folder and everything in it; returns the photos removed."""
        folder = self._existing_dir(person_id)
        removed = len(self._listed(folder, folders=False))
        if folder.is_symlink():
            # Drop the link only: its target is some other entry of the store, not this person's.
            folder.unlink()
        else:
            shutil.rmtree(folder)
        _fsync_dir(self.root)
        return removed

    def remove_all(self) -> int:
        """Remove every person folder; returns the folders removed."""
        person_ids = self.list_dirs()
        for person_id in person_ids:
            self.remove_dir(person_id)
        return len(person_ids)

    def add_photo(
        self, person_id: str, photo: str, data: bytes, sha256: str | None = None,
        durable: bool = True,
    ) -> PhotoInfo:
        """Write a photo atomically, creating the folder if needed; returns its info with sha256.

        Empty `data` raises BadRequest; a `sha256` that does not match `data` raises Conflict.
        Either way nothing is written. An existing photo of the same name is replaced whole.
        With `durable=False` the write is still atomic but not yet fsynced: a caller writing
        many photos calls `sync()` once before confirming them.
        """
        path = self.photo_path(person_id, photo)
        if not data:
            raise BadRequest(f"photo {photo!r} is empty")
        digest = sha256_bytes(data)
        if sha256 is not None and sha256.lower() != digest:
            raise Conflict(f"photo {photo!r}: sha256 {digest} does not match the expected {sha256}")
        self.create_dir(person_id, durable)
        if path.is_dir():
            raise Conflict(f"{photo!r} in folder {person_id!r} is a folder, not a photo")
        self._write_atomic(path, data, durable)
        return PhotoInfo(photo, len(data), digest)

    @staticmethod
    def sync() -> None:
        """Make every write so far durable (one sync for a batch instead of two per photo)."""
        os.sync()

    def _write_atomic(self, path: Path, data: bytes, durable: bool = True) -> None:
        # Readers see either the old photo or the whole new one, never a torn file; the temp file
        # lives in the same folder so os.replace stays a same-filesystem rename.
        temp = path.parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                if durable:
                    os.fsync(f.fileno())
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        if durable:
            _fsync_dir(path.parent)

    def check_photo(self, person_id: str, photo: str, checksum: bool = False) -> PhotoInfo:
        """Size (and sha256 when `checksum`) of an existing photo; NotFound if it is not there."""
        path = self._existing_photo(person_id, photo)
        size = path.stat().st_size
        return PhotoInfo(photo, size, sha256_file(path) if checksum else None)

    def remove_photo(self, person_id: str, photo: str) -> None:
        """Delete one photo; NotFound if it is not there."""
        path = self._existing_photo(person_id, photo)
        path.unlink()
        _fsync_dir(path.parent)

    def purge_empty(self) -> list[tuple[str, str]]:
        """Delete every zero-byte file under root; returns (person_id, photo) for each, sorted.

        Files directly under root report person_id ""; files in nested folders report the path
        below the person folder as `photo`. Temp and hidden files are left alone: a temp file is
        empty for a moment while it is written, and deleting it would fail that write.
        """
        purged = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if _is_listed(d)]
            for name in filenames:
                path = Path(dirpath) / name
                if not _is_listed(name):
                    continue
                try:
                    info = path.lstat()
                except FileNotFoundError:  # removed concurrently (a photo replaced or deleted)
                    continue
                # Never follow a link: its target is purged where it really lives, if under root.
                if stat.S_ISREG(info.st_mode) and info.st_size == 0:
                    path.unlink()
                    relative = path.relative_to(self.root).parts
                    if len(relative) == 1:
                        purged.append(("", relative[0]))
                    else:
                        purged.append((relative[0], "/".join(relative[1:])))
        return sorted(purged)

    def inventory(self, checksum: bool = False) -> dict[str, dict[str, PhotoInfo]]:
        """Every folder -> photo -> info (sha256 when `checksum`); empty files are purged first."""
        self.purge_empty()
        result: dict[str, dict[str, PhotoInfo]] = {}
        for person_id in self.list_dirs():
            folder = self.root / person_id
            photos = {}
            for name in self._listed(folder, folders=False):
                path = folder / name
                photos[name] = PhotoInfo(
                    name, path.stat().st_size, sha256_file(path) if checksum else None
                )
            result[person_id] = photos
        return result
