"""Decoding photos and turning the faces in them into encodings (face_recognition / dlib).

The vocabulary, stated once:

- A **box** is `(top, right, bottom, left)` in pixels of the original, EXIF-rotated image.
- An **encoding** is a float32 vector of shape (128,) from dlib's ResNet face model.
- The **distance** between two encodings is their Euclidean distance; below about 0.6 the two
  faces are the same person (the model's own threshold on LFW).

`face_recognition` (and its dlib models) is imported only when an `Encoder` is built: the
import loads several model files and turns on Pillow's `LOAD_TRUNCATED_IMAGES`, which this
module turns back off, since a truncated upload must be rejected, not padded with grey.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from facenet_ray.config import Settings
from facenet_ray.errors import NotAnImage, NotFound, TooLarge, Undecodable

Box = tuple[int, int, int, int]  # (top, right, bottom, left) in pixels of the original image
Encoding = NDArray[np.float32]  # shape (128,); Euclidean distance < ~0.6 means same person

ENCODING_SIZE = 128

# Formats a photo may come in ("JPEG" covers the MPO files many phone cameras write).
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")

# The CNN detector is too slow on a CPU for anything but small images.
CNN_MAX_SIDE = 400
# An image this small and about square is taken to be an aligned face crop (LFW: 250x250).
FACE_CROP_MAX_SIDE = 400
FACE_CROP_MAX_ASPECT = 1.25
# Where the face sits in an aligned crop, as fractions of the height and width in box order:
# the median HOG box over LFW deep-funneled photos is (80, 175, 187, 67) of 250x250.
FACE_CROP_BOX = (0.32, 0.70, 0.75, 0.27)
# HOG score offset for the last-resort fallback: blanks, gradients and noise score nothing
# even at -0.8, while LFW faces the default threshold misses score between -0.8 and 0.
WEAK_THRESHOLD = -0.8

_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError)


@dataclass(frozen=True, eq=False)
class Face:
    box: Box
    encoding: Encoding


@dataclass(frozen=True)
class Detection:
    faces: list[Face]  # largest face first
    fallback: str | None  # None, "upsample", "cnn", "whole_image", "weak": which one found them


def decode_image(data: bytes, max_pixels: int) -> NDArray[np.uint8]:
    """Decode a photo into an RGB uint8 array of shape (height, width, 3), EXIF rotation applied.

    Raises NotAnImage (empty, or not one of IMAGE_FORMATS), TooLarge (more than `max_pixels`,
    checked from the header before any pixel is decoded) or Undecodable (truncated, corrupt).
    """
    if not data:
        raise NotAnImage("the file is empty")
    try:
        # Pillow refuses outright past twice its own limit, before our check below can run.
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"image has too many pixels: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise NotAnImage(
            f"not an image in a supported format ({', '.join(IMAGE_FORMATS)})"
        ) from exc
    except _DECODE_ERRORS as exc:
        raise Undecodable(f"image header is corrupt: {exc}") from exc
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise TooLarge(f"image is {width}x{height} pixels; at most {max_pixels} are allowed")
        try:
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            rgb = image.convert("RGB")
        except _DECODE_ERRORS as exc:
            raise Undecodable(f"image data is truncated or corrupt: {exc}") from exc
    return np.array(rgb, dtype=np.uint8)


def face_distance(known: NDArray[np.float32], probe: Encoding) -> NDArray[np.float32]:
    """Euclidean distance from each row of `known` (n, 128) to `probe` (128,): shape (n,)."""
    known = np.asarray(known, dtype=np.float32).reshape(-1, ENCODING_SIZE)
    return np.linalg.norm(known - np.asarray(probe, dtype=np.float32), axis=1)


def _face_recognition() -> ModuleType:
    import face_recognition

    ImageFile.LOAD_TRUNCATED_IMAGES = False  # face_recognition sets it at import; undo that
    return face_recognition


class Encoder:
    """Finds faces with dlib's HOG (or CNN) detector and encodes them with its ResNet model.

    Detection runs on a copy whose longer side is at most `settings.detect_max_side` (the
    detector's cost grows with the pixel count, and faces in a photo are large); landmarks and
    encodings use the original pixels. When nothing is found and `settings.fallback_detection`
    is on, it tries in turn: one more upsampling ("upsample"), the CNN detector on small images
    ("cnn"), and, when the HOG detector sees a face below its usual threshold, the central
    face region of a small square image (an aligned face crop, "whole_image") or else that
    weak detection's box ("weak").
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._fr = _face_recognition()

    def detect(self, image: NDArray[np.uint8], max_faces: int | None = None) -> Detection:
        """Every face in an RGB image (height, width, 3), largest first; with `max_faces`,
        only that many of the largest are encoded (an encoding costs more than detection)."""
        image = np.ascontiguousarray(image, dtype=np.uint8)
        boxes, fallback = self._find_boxes(image)
        if not boxes:
            return Detection(faces=[], fallback=None)
        boxes.sort(key=lambda b: (b[2] - b[0]) * (b[1] - b[3]), reverse=True)
        boxes = boxes[:max_faces]
        encodings = self._fr.face_encodings(
            image,
            known_face_locations=boxes,
            num_jitters=self.settings.jitters,
            model=self.settings.landmarks,
        )
        faces = [
            Face(box=box, encoding=np.asarray(enc, dtype=np.float32))
            for box, enc in zip(boxes, encodings, strict=True)
        ]
        return Detection(faces=faces, fallback=fallback)

    def encode_bytes(self, data: bytes, max_faces: int | None = None) -> Detection:
        return self.detect(decode_image(data, self.settings.max_pixels), max_faces)

    def encode_file(self, path: Path, max_faces: int | None = None) -> Detection:
        return self.encode_bytes(_read_photo(path), max_faces)

    def _find_boxes(self, image: NDArray[np.uint8]) -> tuple[list[Box], str | None]:
        s = self.settings
        height, width = image.shape[:2]
        small = _downscale(image, s.detect_max_side)

        def on_small(upsample: int) -> list[Box]:
            boxes = self._fr.face_locations(small, upsample, model=s.detector)
            return _scale_boxes(boxes, small.shape, image.shape)

        boxes = on_small(s.upsample)
        if boxes or not s.fallback_detection:
            return boxes, None
        boxes = on_small(s.upsample + 1)
        if boxes:
            return boxes, "upsample"
        if s.detector != "cnn" and max(height, width) <= CNN_MAX_SIDE:
            boxes = self._fr.face_locations(image, s.upsample, model="cnn")
            if boxes:
                return list(boxes), "cnn"
        # Last resort, only with some evidence of a face: the HOG detector below its usual
        # threshold. Without that check any small square picture (a logo, a blank) would
        # get a face and an encoding, and a stranger's probe could match it.
        weak, scores, _ = self._fr.api.face_detector.run(small, s.upsample + 1, WEAK_THRESHOLD)
        if not len(weak):
            return [], None
        if _looks_like_face_crop(height, width):
            return [_face_crop_box(height, width)], "whole_image"
        best = weak[int(np.argmax(scores))]
        box = (best.top(), best.right(), best.bottom(), best.left())
        return _scale_boxes([box], small.shape, image.shape), "weak"


class FakeEncoder:
    """The Encoder's interface without a model, for scale tests: one face per photo, whose
    encoding is a unit vector drawn from the sha256 of the photo's bytes (same bytes, same
    vector; different bytes are ~1.41 apart). Nothing is decoded: the box is the whole image
    when Pillow can read the size from the header, else (0, 0, 0, 0).
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings

    def detect(self, image: NDArray[np.uint8], max_faces: int | None = None) -> Detection:
        height, width = image.shape[:2]
        return self._one_face(np.ascontiguousarray(image).tobytes(), (0, width, height, 0))

    def encode_bytes(self, data: bytes, max_faces: int | None = None) -> Detection:
        if not data:
            raise NotAnImage("the file is empty")
        return self._one_face(data, _header_box(data))

    def encode_file(self, path: Path, max_faces: int | None = None) -> Detection:
        return self.encode_bytes(_read_photo(path), max_faces)

    @staticmethod
    def _one_face(data: bytes, box: Box) -> Detection:
        seed = int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
        vector = np.random.default_rng(seed).standard_normal(ENCODING_SIZE)
        encoding = (vector / np.linalg.norm(vector)).astype(np.float32)
        return Detection(faces=[Face(box=box, encoding=encoding)], fallback=None)


def make_encoder(settings: Settings) -> Encoder | FakeEncoder:
    """The encoder `settings.encoder` names: "dlib" (the real models) or "fake"."""
    if settings.encoder == "fake":
        return FakeEncoder(settings)
    return Encoder(settings)


def _read_photo(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise NotFound(f"no such photo: {path}") from exc


def _downscale(image: NDArray[np.uint8], max_side: int) -> NDArray[np.uint8]:
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = Image.fromarray(image).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(small)


def _scale_boxes(
    boxes: list[Box], small_shape: tuple[int, ...], shape: tuple[int, ...]
) -> list[Box]:
    """Boxes found on a resized copy (of `small_shape`) in pixels of the original (`shape`)."""
    sy, sx = shape[0] / small_shape[0], shape[1] / small_shape[1]
    height, width = shape[:2]
    return [
        (
            max(0, round(top * sy)),
            min(width, round(right * sx)),
            min(height, round(bottom * sy)),
            max(0, round(left * sx)),
        )
        for top, right, bottom, left in boxes
    ]


def _looks_like_face_crop(height: int, width: int) -> bool:
    long_side, short_side = max(height, width), min(height, width)
    return long_side <= FACE_CROP_MAX_SIDE and long_side <= FACE_CROP_MAX_ASPECT * short_side


def _face_crop_box(height: int, width: int) -> Box:
    top, right, bottom, left = FACE_CROP_BOX
    return (round(top * height), round(right * width), round(bottom * height), round(left * width))


def _header_box(data: bytes) -> Box:
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            width, height = image.size
    except (*_DECODE_ERRORS, Image.DecompressionBombError):
        return (0, 0, 0, 0)
    return (0, width, height, 0)
