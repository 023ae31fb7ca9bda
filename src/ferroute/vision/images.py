"""Decode any image safely: the first step of image -> face -> crop.

Decoding is defensive (pixel limit read from the header before any pixel is decoded, EXIF
orientation, 16-bit, CMYK, palette, alpha on white, first frame of animations) and every
failure is an :class:`ImageError` naming the input, the problem and what to do; no other
exception leaves :func:`decode_image`.
"""

from __future__ import annotations

import io
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageInput = Union[str, Path, bytes, Image.Image, np.ndarray]
MAX_PIXELS = 50_000_000


class ImageError(ValueError):
    """An input image cannot be used; the message says which input, why, and what to do.

    ``kind``: ``bad_image`` (unreadable), ``too_large`` (over a size or memory limit) or
    ``busy`` (a server's decoding budget stayed full; try again)."""

    def __init__(self, source: str, problem: str, hint: str = "", kind: str = "bad_image"):
        self.source, self.problem, self.hint, self.kind = source, problem, hint, kind
        super().__init__(f"{source}: {problem}" + (f" ({hint})" if hint else ""))


#: bytes a decoded pixel takes inside Pillow, by mode (RGB and friends are stored in 32 bits)
_PIL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}


class MemoryBudget:
    """How many bytes concurrent decodes may hold at once (a server's bound on decoding memory).

    Each decode reserves its estimated peak (pixels x bytes per pixel, read from the header
    before any pixel is decoded) and waits while the budget is full; an image that alone
    exceeds the budget is refused (``too_large``), one that waits over ``wait_s`` too (``busy``).
    """

    def __init__(self, total_bytes: int, wait_s: float = 30.0):
        import threading

        self.total, self.free, self.wait_s = int(total_bytes), int(total_bytes), wait_s
        self._cond = threading.Condition()

    @contextmanager
    def reserve(self, nbytes: int, label: str) -> Iterator[None]:
        mb = lambda n: f"{n / 2**20:,.0f} MB"  # noqa: E731
        if nbytes > self.total:
            raise ImageError(label, f"decoding it needs about {mb(nbytes)}, over the decoding budget of {mb(self.total)}", "downscale it first", kind="too_large")
        with self._cond:
            if not self._cond.wait_for(lambda: self.free >= nbytes, timeout=self.wait_s):
                raise ImageError(label, "the server is busy decoding other large images", "try again in a few seconds", kind="busy")
            self.free -= nbytes
        try:
            yield
        finally:
            with self._cond:
                self.free += nbytes
                self._cond.notify_all()


def source_name(src: ImageInput, name: str | None = None) -> str:
    """How an input is named in reports and errors."""
    if name:
        return name
    if isinstance(src, (str, Path)):
        return str(src)
    return f"<{type(src).__name__}>"


@dataclass(frozen=True)
class Decoded:
    """An upright RGB image ``(H, W, 3)`` uint8 and the size ``(width, height)`` of the original.

    JPEGs may be decoded at a reduced scale (``min_side``); ``scale`` maps its pixels back to
    the original's, so boxes are always reported in original pixels.
    """

    rgb: np.ndarray
    size: tuple[int, int]

    @property
    def scale(self) -> float:
        return self.size[0] / self.rgb.shape[1]


def load_image(src: ImageInput, name: str | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode ``src`` (path, bytes, PIL image or array) to an upright RGB array ``(H, W, 3)`` uint8."""
    return decode_image(src, name, max_pixels).rgb


def decode_image(src: ImageInput, name: str | None = None, max_pixels: int = MAX_PIXELS, min_side: int | None = None,
                 budget: MemoryBudget | None = None) -> Decoded:
    """Like :func:`load_image`, for a detector that needs ``min_side`` pixels on the long side:
    a JPEG may be decoded at 1/2, 1/4 or 1/8 scale as long as its long side stays at least
    ``min_side`` (libjpeg's DCT scaling: a 1024 px photo decodes in a third of the time at
    512 px), and any other image larger than twice that is box-filtered down to it before
    its pixels are converted. ``budget`` bounds the memory that concurrent decodes hold.
    Raises only :class:`ImageError`."""
    label = source_name(src, name)
    try:
        if isinstance(src, np.ndarray):
            rgb = _array_to_rgb(src, label, max_pixels)
            return Decoded(rgb, (rgb.shape[1], rgb.shape[0]))
        if isinstance(src, Image.Image):
            return _decode_pil(src, label, max_pixels, min_side, budget)
        if isinstance(src, (str, Path)):
            data = _read(Path(src), label)
        elif isinstance(src, (bytes, bytearray, memoryview)):
            data = bytes(src)
        else:
            raise ImageError(label, f"unsupported input type {type(src).__name__}", "pass a path, bytes, a PIL image or a numpy array")
        if not data:
            raise ImageError(label, "empty file (0 bytes)", "re-export or re-download the image")
        with Image.open(io.BytesIO(data)) as im:
            return _decode_pil(im, label, max_pixels, min_side, budget)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(label, f"image has more than {max_pixels:,} pixels", "downscale it first or raise the pixel limit", kind="too_large") from None
    except UnidentifiedImageError:
        raise ImageError(label, "not a readable image (unknown or corrupt format)", "use a JPEG, PNG, GIF, BMP, TIFF or WebP file") from None
    except MemoryError:
        raise ImageError(label, "not enough memory to decode this image", "downscale it first", kind="too_large") from None
    except Exception as exc:  # Pillow raises many types on damaged files (OSError, SyntaxError, TypeError, ...)
        raise ImageError(label, f"image data is damaged or truncated ({type(exc).__name__}: {exc})", "re-export or re-download the image") from None


def _read(path: Path, label: str) -> bytes:
    try:
        if not path.is_file():
            raise ImageError(label, "a folder, not an image file" if path.is_dir() else "file not found", "check the path")
        return path.read_bytes()
    except PermissionError:
        raise ImageError(label, "permission denied", "make the file readable (chmod) or run as a user who can read it") from None
    except OSError as exc:
        raise ImageError(label, f"cannot read the file ({exc.strerror or exc})", "check the path and the disk") from None


def _decode_pil(im: Image.Image, label: str, max_pixels: int, min_side: int | None, budget: MemoryBudget | None = None) -> Decoded:
    size = (im.width, im.height)
    if im.width * im.height > max_pixels:
        raise ImageError(label, f"image has {im.width * im.height:,} pixels, over the limit of {max_pixels:,}", "downscale it first", kind="too_large")
    if im.width < 1 or im.height < 1:
        raise ImageError(label, f"image has no pixels ({im.width}x{im.height})", "re-export the image")
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)  # animated: the first frame is used
    if min_side and im.format == "JPEG" and im.mode in ("RGB", "L", "YCbCr"):
        k = max(im.width, im.height) / min_side  # draft keeps both sides >= the requested ones
        im.draft(im.mode, (max(1, int(im.width / k)), max(1, int(im.height / k))))
    target = 2 * min_side if min_side and max(im.size) > 2 * min_side else None
    with budget.reserve(decode_cost(im, target), label) if budget else nullcontext():
        im.load()
        if target:
            if im.mode in ("P", "1", "PA"):
                im = im.convert("RGBA" if "transparency" in im.info or im.mode == "PA" else "RGB")
            k = target / max(im.size)
            im = im.resize((max(1, round(im.width * k)), max(1, round(im.height * k))), Image.BOX)
        rotated = ImageOps.exif_transpose(im) or im
        if rotated.size != im.size:  # turned by 90 degrees: the original size turns with it
            size = (size[1], size[0])
        return Decoded(_pil_to_rgb(rotated), size)


def decode_cost(im: Image.Image, target: int | None = None) -> int:
    """Estimated peak bytes of decoding ``im`` (its header read, no pixel decoded yet): Pillow's
    own copy (and, where the image is box-filtered down to a ``target`` long side, the filter's
    working copy: a premultiplied one for images with alpha, a 32-bit one for 16-bit images),
    plus the copies made at the output size on the way to an RGB array (compositing alpha onto
    white takes four), with 15 % to spare. Measured against the real peak (``ru_maxrss`` of a
    fresh process) on 4 and 25 MP RGB, RGBA and 16-bit PNGs: ``tests/test_faces.py``."""
    pixels = im.width * im.height
    out = pixels if target is None else pixels * (target / max(im.size)) ** 2
    alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info)
    sixteen = im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
    per_in = _PIL_BYTES.get(im.mode, 4) + (1 + 4 * alpha + 1.5 * sixteen if target is not None else 0)
    per_out = 26 if alpha else 14 if sixteen else 12
    return int(1.15 * (pixels * per_in + out * per_out)) + (4 << 20)


def _pil_to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # stretch to 8 bits in float32, one array at a time (float64 cost 8 bytes a pixel)
        a = np.asarray(im).astype(np.float32, copy=False)
        lo, hi = float(a.min()), float(a.max())
        g = np.zeros(a.shape, np.uint8) if hi <= lo else ((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, rgba)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _array_to_rgb(a: np.ndarray, label: str, max_pixels: int) -> np.ndarray:
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ImageError(label, f"array shape {a.shape} is not an image", "pass (H, W), (H, W, 3) or (H, W, 4)")
    if a.shape[0] * a.shape[1] > max_pixels:
        raise ImageError(label, f"image has {a.shape[0] * a.shape[1]:,} pixels, over the limit of {max_pixels:,}", "downscale it first", kind="too_large")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ImageError(label, f"array shape {a.shape} has no pixels", "pass a non-empty image")
    if a.dtype != np.uint8:
        f = a.astype(np.float32)
        top = float(np.nanmax(f)) if f.size else 0.0
        f = f * 255.0 if top <= 1.0 else f * (255.0 / 65535.0) if top > 255 else f
        a = np.clip(np.rint(np.nan_to_num(f)), 0, 255).astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a[..., :3])
