"""What a valid person (folder) or photo name is: one rule for every entry point."""

from __future__ import annotations

import unicodedata

from facenet_ray.errors import InvalidName

MAX_NAME_BYTES = 255
# HTTP decoders (uvicorn, Starlette) turn bytes that are not UTF-8 into U+FFFD instead of
# failing: a name holding it is not the name the client sent.
REPLACEMENT_CHARACTER = "\ufffd"


def check_name(name: object, what: str = "name") -> str:
    """Return `name` unchanged if it is a safe single path component, else raise InvalidName.

    Spaces and any Unicode letters (Cyrillic, CJK, emoji, ...) are valid. Rejected: empty,
    `.`, `..`, `/`, `\\`, NUL and other control characters, U+FFFD (left by invalid UTF-8),
    more than 255 UTF-8 bytes.
    `what` names the parameter in the error ("dirName", "photo", ...).
    """
    if not isinstance(name, str) or name == "":
        raise InvalidName(f"{what} must be a non-empty string")
    if name in (".", ".."):
        raise InvalidName(f"{what} must not be '.' or '..'")
    if "/" in name or "\\" in name:
        raise InvalidName(f"{what} must not contain '/' or '\\'")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in name):
        raise InvalidName(f"{what} must not contain NUL or control characters")
    if REPLACEMENT_CHARACTER in name:  # what a decoder leaves of invalid or overlong UTF-8
        raise InvalidName(f"{what} is not valid UTF-8")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidName(f"{what} is not valid Unicode") from exc
    if size > MAX_NAME_BYTES:
        raise InvalidName(f"{what} is {size} bytes long; at most {MAX_NAME_BYTES} are allowed")
    return name
