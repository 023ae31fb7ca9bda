"""Bad and unusual inputs: every case is defined, tested and reported clearly."""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ferroute.crops import square_crop
from ferroute.faces import FaceDetector
from ferroute.images import ImageError, load_image


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
