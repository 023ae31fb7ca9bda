"""Bad and unusual inputs: every case is defined, tested and reported clearly."""

import io
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ferroute.vision.crops import square_crop
from ferroute.vision.faces import FaceDetector
from ferroute.vision.images import ImageError, load_image


def png(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


GRAY = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 80), dtype=np.uint8))


def test_empty_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty.jpg: empty file"):
        load_image(p)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "nope.png")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated(fmt):
    data = png(GRAY.convert("RGB"), fmt)
    with pytest.raises(ImageError, match="damaged or truncated|not a readable image"):
        load_image(data[: len(data) // 2], name=f"cut.{fmt.lower()}")


def test_text_named_jpg(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("hello, I am not an image")
    with pytest.raises(ImageError, match="notes.jpg: not a readable image"):
        load_image(p)


def test_decompression_bomb():
    big = png(Image.new("L", (3000, 3000)))
    with pytest.raises(ImageError, match="pixels"):
        load_image(big, name="bomb.png", max_pixels=1_000_000)


def test_16bit_png():
    a = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    img = Image.new("I;16", (64, 64))
    img.frombytes(a.astype("<u2").tobytes())
    rgb = load_image(png(img), name="deep.png")
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8 and rgb.max() == 255


def test_cmyk_jpeg():
    rgb = load_image(png(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG"), name="cmyk.jpg")
    assert rgb.shape == (30, 40, 3)
    assert rgb[..., 0].mean() > 200 and rgb[..., 1].mean() < 60  # red survives the conversion


def test_palette_and_rgba_png():
    pal = GRAY.convert("P")
    assert load_image(png(pal)).shape == (64, 80, 3)
    rgba = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    out = load_image(png(rgba))
    assert (out == 255).all()  # transparent becomes white, not black


def test_animated_gif_uses_first_frame():
    frames = [Image.new("L", (30, 30), c) for c in (10, 200)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    assert load_image(buf.getvalue())[0, 0, 0] == 10


def test_one_pixel_image_has_no_face():
    det = FaceDetector()
    assert det(load_image(png(Image.new("RGB", (1, 1))))) == []


def test_exif_orientation_respected():
    img = Image.new("RGB", (40, 20))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    data = png(img, "JPEG", exif=exif.tobytes())
    assert load_image(data).shape == (40, 20, 3)


def test_huge_valid_photo_is_detected_on_a_downscaled_copy():
    det = FaceDetector()
    rgb = np.full((4000, 6000, 3), 127, np.uint8)
    assert det(rgb) == []


def test_48x48_images_are_taken_as_fer2013_crops():
    faces = FaceDetector()(np.zeros((48, 48, 3), np.uint8))
    assert len(faces) == 1 and faces[0].crop.shape == (48, 48) and faces[0].box == (0, 0, 48, 48) and faces[0].score is None


def test_other_small_images_are_searched_not_taken_as_faces():
    assert FaceDetector()(np.full((64, 64, 3), 120, np.uint8)) == []


def test_square_crop_pads_at_the_border():
    crop = square_crop(np.full((100, 100), 7, np.uint8), (80, 80, 20, 20), margin=0.5)
    assert crop.shape == (48, 48) and (crop == 7).all()


def test_arrays_of_any_dtype():
    assert load_image(np.random.default_rng(0).random((10, 12))).shape == (10, 12, 3)
    assert load_image(np.zeros((10, 12, 4), np.uint8)).shape == (10, 12, 3)
    with pytest.raises(ImageError, match="not an image"):
        load_image(np.zeros((2, 3, 4, 5)))


@given(st.binary(max_size=2048), st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM"]))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_random_bytes_never_crash(data, magic):
    try:
        rgb = load_image(magic + data, name="fuzz")
    except ImageError as exc:
        assert "fuzz" in str(exc)
    else:
        assert rgb.ndim == 3 and rgb.shape[2] == 3


@given(st.integers(0, 6), st.integers(1, 400), st.integers(1, 400), st.integers(0, 3))
@settings(max_examples=60, deadline=None)
def test_fuzz_mutated_real_images(kind, w, h, cut):
    modes = ["L", "RGB", "RGBA", "P", "CMYK", "I;16", "LA"]
    fmts = {"L": "PNG", "RGB": "JPEG", "RGBA": "PNG", "P": "GIF", "CMYK": "JPEG", "I;16": "PNG", "LA": "PNG"}
    mode = modes[kind]
    img = Image.new(mode if mode != "I;16" else "I;16", (w, h))
    data = png(img, fmts[mode])
    if cut:
        data = data[: max(1, len(data) * cut // 4)]
    try:
        rgb = load_image(data, name="mut")
        FaceDetector()(rgb)
    except ImageError:
        pass


ASTRONAUT = Path(__file__).resolve().parents[1] / "examples" / "astronaut_photo.jpg"


def test_yunet_finds_the_astronaut_with_score_and_landmarks():
    faces = FaceDetector()(load_image(ASTRONAUT))
    assert len(faces) == 1
    f = faces[0]
    x, y, w, h = f.box
    assert 150 < x < 220 and 40 < y < 100 and 70 < w < 130 and f.score > 0.8
    (rx, ry), (lx, ly) = f.landmarks[:2]
    assert x < rx < lx < x + w and y < ry < y + h  # eyes inside the box, image-left eye first


@pytest.mark.parametrize("deg", [15, 30, 45, 90])
def test_rotated_faces_are_found(deg):
    turned = FaceDetector()(np.asarray(Image.open(ASTRONAUT).rotate(deg, expand=True, fillcolor=(127, 127, 127))))
    assert len(turned) == 1 and turned[0].score > 0.7


@pytest.mark.parametrize("deg", [90, -90])
def test_a_sideways_face_gets_its_landmarks_from_the_upright_view(deg):
    """YuNet finds a sideways face but places its landmarks as if upright; the upright check
    turns them with the face, so the eye-to-eye vector turns by the same angle."""
    f = FaceDetector()(np.asarray(Image.open(ASTRONAUT).rotate(deg, expand=True)))[0]
    (rx, ry), (lx, ly) = f.landmarks[:2]
    angle = np.degrees(np.arctan2(ly - ry, lx - rx))
    assert abs(angle + deg) < 20, angle  # PIL turns counter-clockwise, image y points down
    f0 = FaceDetector(upright_check=False)(np.asarray(Image.open(ASTRONAUT).rotate(deg, expand=True)))[0]
    assert abs(np.degrees(np.arctan2(f0.landmarks[1][1] - f0.landmarks[0][1], f0.landmarks[1][0] - f0.landmarks[0][0]))) < 20  # the flaw it mends


def test_a_face_filling_a_large_frame_is_found():
    a = np.asarray(Image.open(ASTRONAUT).crop((170, 50, 280, 190)).resize((900, 1100)))
    assert len(FaceDetector()(a)) == 1


def test_a_tilted_face_is_levelled_by_its_landmarks():
    det = FaceDetector()
    rgb = load_image(ASTRONAUT)
    f = det(rgb)[0]
    gray = rgb.mean(2).astype(np.uint8)
    # turn the photo by 10 degrees about the face and move the landmarks with it: the crop stays the same
    from ferroute.vision.crops import align_crop

    cx, cy = np.mean(f.landmarks, 0)
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), 10, 1.0)
    turned = cv2.warpAffine(gray, m, gray.shape[::-1], borderMode=cv2.BORDER_REPLICATE)
    pts = np.asarray(f.landmarks) @ m[:, :2].T + m[:, 2]
    a, b = align_crop(gray, np.asarray(f.landmarks)).astype(float), align_crop(turned, pts).astype(float)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.97


def test_crop_framing_matches_fer2013_measurement():
    from ferroute.vision.crops import fer2013_landmarks, similarity_to_fer2013

    target = fer2013_landmarks()
    # a face 4x larger, turned by 20 degrees and shifted, maps back onto the target points
    a = np.radians(20)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    pts = (target - 24) @ rot.T * 4 + [300, 200]
    m = similarity_to_fer2013(pts)
    back = pts @ m[:, :2].T + m[:, 2]
    assert np.allclose(back, target, atol=0.1)  # the target eyes are level to 0.1 px
    assert abs(target[0, 1] - target[1, 1]) < 1 and 16 < target[1, 0] - target[0, 0] < 21  # measured: eyes level, ~18 px apart


def test_faces_are_listed_left_to_right():
    face = load_image(ASTRONAUT)[40:220, 140:310]
    canvas = np.full((400, 900, 3), 200, np.uint8)
    canvas[200:380, 600:770] = face
    canvas[10:190, 50:220] = face
    faces = FaceDetector()(canvas)
    assert len(faces) == 2 and faces[0].box[0] < faces[1].box[0]


@pytest.mark.parametrize("shape", [(30, 100000), (100000, 30), (1, 5000), (9, 9), (3, 3000)])
def test_extreme_shapes_never_raise(shape):
    assert FaceDetector()(np.zeros((*shape, 3), np.uint8)) == []


def test_jpeg_decoded_at_reduced_scale_reports_original_pixels():
    from ferroute.vision.images import decode_image

    big = Image.open(ASTRONAUT).resize((2048, 2048))
    data = png(big, "JPEG", quality=90)
    dec = decode_image(data, min_side=512)
    assert dec.rgb.shape[0] < 2048 and dec.size == (2048, 2048) and dec.scale == 2048 / dec.rgb.shape[1]
    f = FaceDetector()(dec.rgb, scale=dec.scale)[0]
    assert 600 < f.box[0] < 900 and 280 < f.box[2] < 520  # the astronaut's box, in 2048 px


def test_unreadable_file_is_an_image_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    p = tmp_path / "locked.png"
    p.write_bytes(png(GRAY))
    p.chmod(0)
    with pytest.raises(ImageError, match="permission denied"):
        load_image(p)


def test_a_folder_named_like_an_image_is_an_image_error(tmp_path):
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(ImageError, match="a folder"):
        load_image(tmp_path / "dir.jpg")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_survives_downscaling_a_large_image(fmt):
    from ferroute.vision.images import decode_image

    img = Image.new("RGB", (3000, 1000), (200, 30, 30))
    exif = img.getexif()
    exif[0x0112] = 6  # shown turned by 90 degrees
    data = png(img, fmt, exif=exif.tobytes())
    dec = decode_image(data, min_side=256)
    assert dec.size == (1000, 3000)  # the original's size, upright
    assert dec.rgb.shape[0] > dec.rgb.shape[1]  # the decoded copy is upright too
    assert abs(dec.scale - 1000 / dec.rgb.shape[1]) < 1e-9


_PEAK = """
import io, resource, sys
from PIL import Image
from ferroute.vision.images import decode_cost, decode_image
data = open(sys.argv[1], "rb").read()
min_side = int(sys.argv[2]) or None
hdr = Image.open(io.BytesIO(data))
est = decode_cost(hdr, 2 * min_side if min_side and max(hdr.size) > 2 * min_side else None)
del hdr
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
decode_image(data, name="x", min_side=min_side)
print(est, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base)
"""


@pytest.mark.parametrize("mode", ["RGBA", "I;16", "RGB"])
@pytest.mark.parametrize("min_side", [0, 640])
def test_the_decode_estimate_covers_the_real_peak(tmp_path, mode, min_side):
    """The decoding budget reserves decode_cost before a pixel is decoded: it must cover the
    process's real peak (ru_maxrss of a fresh process), for alpha and 16-bit images too (an
    RGBA PNG once took twice its estimate)."""
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    shape = (3000, 3000) if mode == "I;16" else (3000, 3000, len(mode))
    dtype = np.uint16 if mode == "I;16" else np.uint8
    path = tmp_path / "big.png"
    Image.fromarray(rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)).save(path, compress_level=1)
    res = subprocess.run([sys.executable, "-c", _PEAK, str(path), str(min_side)], capture_output=True, text=True, timeout=120)
    est, peak = map(int, res.stdout.split())
    assert peak <= est, f"{mode}: decoding took {peak / 2**20:.0f} MB, estimated {est / 2**20:.0f} MB"
