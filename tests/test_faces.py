"""faces.py on real portraits: same/different person, decoding errors, EXIF, large photos, fakes.

dlib is slow on a shared CPU, so each portrait is encoded once per session
(`encoded_portraits`, also used by test_index.py) and derived images are kept small.
"""

from __future__ import annotations

import functools
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from facenet_ray.config import Settings
from facenet_ray.errors import NotAnImage, TooLarge, Undecodable
from facenet_ray.faces import (
    Detection,
    Encoder,
    FakeEncoder,
    decode_image,
    face_distance,
    make_encoder,
)

FACES = Path(__file__).parent / "data" / "faces"
OBAMA = ["Barack_Obama/obama.jpg", "Barack_Obama/obama2.jpg", "Barack_Obama/obama3.jpg"]
BIDEN = ["Joseph_Biden/biden.jpg"]
PORTRAITS = OBAMA + BIDEN
TOLERANCE = 0.6
MAX_PIXELS = Settings().max_pixels


@functools.cache
def shared_encoder() -> Encoder:
    return Encoder(Settings())


@functools.cache
def encoded_portraits() -> dict[str, Detection]:
    """Each portrait's detection by its path under tests/data/faces ("Person/photo.jpg")."""
    encoder = shared_encoder()
    return {name: encoder.encode_file(FACES / name) for name in PORTRAITS}


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    return shared_encoder()


@pytest.fixture(scope="session")
def portraits() -> dict[str, Detection]:
    return encoded_portraits()


def jpeg_bytes(image: Image.Image, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95, **params)
    return out.getvalue()


def png_bytes(image: Image.Image, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG", **params)
    return out.getvalue()


def largest(detection: Detection) -> np.ndarray:
    assert detection.faces, "no face found"
    return detection.faces[0].encoding


# --- the model on real portraits ----------------------------------------------------------


def test_every_portrait_has_a_face_with_a_float32_encoding(portraits):
    for name, detection in portraits.items():
        height, width = decode_image((FACES / name).read_bytes(), MAX_PIXELS).shape[:2]
        assert detection.faces and detection.fallback is None, name
        for face in detection.faces:
            assert face.encoding.dtype == np.float32 and face.encoding.shape == (128,)
            top, right, bottom, left = face.box
            assert 0 <= top < bottom <= height and 0 <= left < right <= width
        areas = [(f.box[2] - f.box[0]) * (f.box[1] - f.box[3]) for f in detection.faces]
        assert areas == sorted(areas, reverse=True), "largest face first"


def test_photos_of_one_person_are_near_and_of_another_far(portraits):
    obama = [largest(portraits[name]) for name in OBAMA]
    biden = largest(portraits[BIDEN[0]])
    for i, probe in enumerate(obama):
        others = np.stack(obama[:i] + obama[i + 1 :])
        assert (face_distance(others, probe) < TOLERANCE).all()
        assert face_distance(biden[None, :], probe)[0] > TOLERANCE


def test_face_distance_is_euclidean():
    rng = np.random.default_rng(0)
    known = rng.standard_normal((5, 128)).astype(np.float32)
    probe = rng.standard_normal(128).astype(np.float32)
    expected = np.sqrt(((known - probe) ** 2).sum(axis=1))
    np.testing.assert_allclose(face_distance(known, probe), expected, rtol=1e-6)
    assert face_distance(np.empty((0, 128), np.float32), probe).shape == (0,)


def test_an_image_without_a_face_gives_no_faces(encoder):
    ramp = np.linspace(0, 255, 640, dtype=np.uint8)
    gradient = np.stack([np.tile(ramp, (480, 1))] * 3, axis=-1)
    detection = encoder.encode_bytes(png_bytes(Image.fromarray(gradient)))
    assert detection == Detection(faces=[], fallback=None)


# --- decoding: what is rejected, and how --------------------------------------------------


def test_truncated_jpeg_is_undecodable(encoder):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False, "face_recognition's import must be undone"
    data = (FACES / OBAMA[0]).read_bytes()
    with pytest.raises(Undecodable):
        decode_image(data[: len(data) // 2], MAX_PIXELS)
    with pytest.raises(Undecodable):
        encoder.encode_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, I am a text file\n" * 10, b"\x89PNG", b"%PDF-1.4\n" + bytes(200)],
    ids=["empty", "text", "png-magic-only", "pdf"],
)
def test_non_images_are_rejected(data):
    with pytest.raises(NotAnImage):
        decode_image(data, MAX_PIXELS)


def test_a_decompression_bomb_is_too_large():
    bomb = png_bytes(Image.new("1", (30000, 30000)), compress_level=1)
    assert len(bomb) < 2_000_000  # small on the wire, 2.7 GB as RGB pixels
    with pytest.raises(TooLarge):
        decode_image(bomb, MAX_PIXELS)


def test_pixel_limit_is_checked_from_the_header_before_decoding(monkeypatch):
    big = png_bytes(Image.new("1", (8000, 6000)))  # 48 Mpx: under Pillow's own limit

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(TooLarge):
        decode_image(big, 40_000_000)


def test_other_modes_decode_to_rgb():
    rgba = Image.new("RGBA", (30, 20), (10, 20, 30, 0))
    grey = Image.new("L", (30, 20), 7)
    for data in (png_bytes(rgba), png_bytes(grey), jpeg_bytes(grey)):
        pixels = decode_image(data, MAX_PIXELS)
        assert pixels.shape == (20, 30, 3) and pixels.dtype == np.uint8


def test_exif_orientation_is_applied(encoder, portraits):
    upright = Image.open(FACES / OBAMA[1]).convert("RGB")
    sideways = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # the viewer must turn it 90° clockwise: undoes ROTATE_90
    data = jpeg_bytes(sideways, exif=exif)

    pixels = decode_image(data, MAX_PIXELS)
    assert pixels.shape == (upright.height, upright.width, 3)
    detection = encoder.detect(pixels)
    distance = face_distance(largest(portraits[OBAMA[1]])[None, :], largest(detection))[0]
    assert distance < 0.1


# --- detection on a downscaled copy, and the fallbacks ------------------------------------


def test_large_photo_is_detected_on_a_downscaled_copy(encoder, portraits, monkeypatch):
    original = Image.open(FACES / OBAMA[1]).convert("RGB")
    scale = 2400 / max(original.size)
    large = original.resize(
        (round(original.width * scale), round(original.height * scale)), Image.Resampling.LANCZOS
    )
    data = jpeg_bytes(large)

    seen: list[tuple[int, ...]] = []
    locate = encoder._fr.face_locations

    def spy(image, *args, **kwargs):
        seen.append(image.shape)
        return locate(image, *args, **kwargs)

    monkeypatch.setattr(encoder._fr, "face_locations", spy)
    detection = encoder.encode_bytes(data)

    assert seen and all(max(shape[:2]) <= encoder.settings.detect_max_side for shape in seen)
    assert detection.fallback is None
    top, right, bottom, left = detection.faces[0].box
    small_box = portraits[OBAMA[1]].faces[0].box
    assert (bottom - top) == pytest.approx((small_box[2] - small_box[0]) * scale, rel=0.15)
    distance = face_distance(largest(portraits[OBAMA[1]])[None, :], largest(detection))[0]
    assert distance < 0.1


@pytest.fixture(scope="module")
def face_crop(portraits) -> np.ndarray:
    """obama.jpg cut and scaled like an LFW photo: 250x250 with the face in the middle."""
    top, right, bottom, left = portraits[OBAMA[0]].faces[0].box
    image = Image.open(FACES / OBAMA[0]).convert("RGB")
    scale = (right - left) / 108  # a HOG box in LFW is about 108 px wide
    centre_x, centre_y = (left + right) / 2, (top + bottom) / 2 - 8 * scale
    half = 125 * scale
    box = (centre_x - half, centre_y - half, centre_x + half, centre_y + half)
    crop = image.crop(tuple(round(v) for v in box))  # black where it runs past the photo
    return np.asarray(crop.resize((250, 250), Image.Resampling.LANCZOS))


def hide_faces_from(encoder, monkeypatch, detectors: set[str], below_upsample: int = 99):
    """Make face_locations find nothing with `detectors` at an upsample below `below_upsample`."""
    locate = encoder._fr.face_locations

    def blind(image, upsample=1, model="hog"):
        if model in detectors and upsample < below_upsample:
            return []
        return locate(image, upsample, model=model)

    monkeypatch.setattr(encoder._fr, "face_locations", blind)


def test_fallback_upsample(encoder, face_crop, monkeypatch):
    hide_faces_from(encoder, monkeypatch, {"hog"}, below_upsample=encoder.settings.upsample + 1)
    assert encoder.detect(face_crop).fallback == "upsample"


def test_fallback_cnn_on_a_small_image(encoder, face_crop, portraits, monkeypatch):
    hide_faces_from(encoder, monkeypatch, {"hog"})
    detection = encoder.detect(face_crop)
    assert detection.fallback == "cnn"
    assert face_distance(largest(portraits[OBAMA[0]])[None, :], largest(detection))[0] < 0.2


def test_fallback_whole_image_on_an_aligned_crop(encoder, face_crop, portraits, monkeypatch):
    hide_faces_from(encoder, monkeypatch, {"hog", "cnn"})
    detection = encoder.detect(face_crop)
    assert detection.fallback == "whole_image"
    assert face_distance(largest(portraits[OBAMA[0]])[None, :], largest(detection))[0] < 0.2


def test_no_fallback_when_turned_off(face_crop, monkeypatch):
    strict = Encoder(Settings(fallback_detection=False))
    hide_faces_from(strict, monkeypatch, {"hog", "cnn"})
    assert strict.detect(face_crop) == Detection(faces=[], fallback=None)


# --- the fake encoder, the factory, the import ------------------------------------------


def test_fake_encoder_is_deterministic_and_fast():
    fake = make_encoder(Settings(encoder="fake"))
    assert isinstance(fake, FakeEncoder)
    photo = png_bytes(Image.new("RGB", (64, 48), (200, 100, 50)))
    first, again = fake.encode_bytes(photo), fake.encode_bytes(photo)
    assert len(first.faces) == 1 and first.fallback is None
    assert first.faces[0].box == (0, 64, 48, 0)
    np.testing.assert_array_equal(first.faces[0].encoding, again.faces[0].encoding)
    encoding = first.faces[0].encoding
    assert encoding.dtype == np.float32 and encoding.shape == (128,)
    assert np.linalg.norm(encoding) == pytest.approx(1.0, abs=1e-5)
    other = fake.encode_bytes(photo + b"\0").faces[0].encoding
    assert np.linalg.norm(encoding - other) > 1.0

    not_an_image = fake.encode_bytes(b"\x01\x02" * 64)  # no decoding at all: still one face
    assert len(not_an_image.faces) == 1 and not_an_image.faces[0].box == (0, 0, 0, 0)
    with pytest.raises(NotAnImage):
        fake.encode_bytes(b"")


def test_make_encoder_gives_the_real_model_by_default():
    assert isinstance(make_encoder(Settings(encoder="dlib")), Encoder)


def test_importing_faces_loads_no_model():
    code = (
        "import sys, facenet_ray.faces; "
        "assert 'face_recognition' not in sys.modules and 'dlib' not in sys.modules"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_a_gallery_photo_is_indexed_by_its_largest_face_only(tmp_path, portraits):
    """A group photo in Obama's folder: the bystander (Biden, smaller) is not indexed as Obama."""
    from facenet_ray.shard import encode_paths

    obama = Image.open(FACES / OBAMA[0]).convert("RGB")
    biden = Image.open(FACES / BIDEN[0]).convert("RGB")
    biden = biden.resize((biden.width * obama.height // (2 * biden.height), obama.height // 2))
    group = Image.new("RGB", (obama.width + biden.width, obama.height), (128, 128, 128))
    group.paste(obama, (0, 0))
    group.paste(biden, (obama.width, obama.height // 4))
    path = tmp_path / "group photo.jpg"
    path.write_bytes(jpeg_bytes(group))
    assert len(shared_encoder().encode_file(path).faces) == 2  # both faces are there

    [(person, photo, entry)] = encode_paths([("Barack_Obama", path.name, str(path))], Settings())

    assert (person, photo) == ("Barack_Obama", "group photo.jpg")
    assert entry.encodings.shape == (1, 128)
    obama_alone = largest(portraits["Barack_Obama/obama.jpg"])
    biden_alone = largest(portraits["Joseph_Biden/biden.jpg"])
    assert np.linalg.norm(entry.encodings[0] - obama_alone) < 0.3
    assert np.linalg.norm(entry.encodings[0] - biden_alone) > 0.6
