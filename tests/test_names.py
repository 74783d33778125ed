"""names.check_name: what a person or photo name may be."""

from __future__ import annotations

import pytest

from facenet_ray.errors import InvalidName
from facenet_ray.names import check_name

VALID = [
    "Barack_Obama",
    "photo 1.jpg",
    "Иван Петров",
    "王小明",
    "😀 smile.png",
    "a" * 255,
    "Ж" * 127,  # 254 UTF-8 bytes
    ".hidden",
]

INVALID = [
    "",
    ".",
    "..",
    "/x",
    "a/b",
    "a\\b",
    "a\x00b",
    "\n",
    "tab\there",
    "a" * 256,
    "Ж" * 128,  # 256 UTF-8 bytes
    "\ud800",  # lone surrogate: not encodable
]


@pytest.mark.parametrize("name", VALID)
def test_valid_names_are_returned_unchanged(name: str) -> None:
    assert check_name(name, "dirName") == name


@pytest.mark.parametrize("name", INVALID)
def test_invalid_names_raise(name: str) -> None:
    with pytest.raises(InvalidName):
        check_name(name, "dirName")


@pytest.mark.parametrize("name", [None, 5, b"bytes"])
def test_non_strings_raise(name: object) -> None:
    with pytest.raises(InvalidName):
        check_name(name)


def test_error_names_the_parameter() -> None:
    with pytest.raises(InvalidName, match="photo"):
        check_name("a/b", "photo")
