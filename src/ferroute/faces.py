"""Face front end: decode any image safely, find every face, crop it the way FERPlus frames faces.

Decoding is defensive (size limits, EXIF orientation, 16-bit, CMYK, palette, alpha,
animation) and every failure is an :class:`ImageError` naming the input and what to do.
Detection uses OpenCV's frontal-face Haar cascade, which ships inside the
``opencv-python-headless`` wheel, so nothing is downloaded at run time.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageInput = Union[str, Path, bytes, Image.Image, np.ndarray]
MAX_PIXELS = 50_000_000
FACE_SIZE = 48
CROPPED_MAX_SIDE = 128  # square images up to this size are taken as already-cropped faces


class ImageError(ValueError):
    """An input image cannot be used; the message says which input, why, and what to do."""

    def __init__(self, source: str, problem: str, hint: str = ""):
        self.source, self.problem, self.hint = source, problem, hint
        super().__init__(f"{source}: {problem}" + (f" ({hint})" if hint else ""))


def _name(src: ImageInput, name: str | None) -> str:
    if name:
        return name
    if isinstance(src, (str, Path)):
        return str(src)
    return f"<{type(src).__name__}>"


def load_image(src: ImageInput, name: str | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode ``src`` (path, bytes, PIL image or array) to an upright RGB array ``(H, W, 3)`` uint8."""
    label = _name(src, name)
    if isinstance(src, np.ndarray):
        return _array_to_rgb(src, label, max_pixels)
    if isinstance(src, Image.Image):
        return _pil_to_rgb(src, label, max_pixels)
    if isinstance(src, (str, Path)):
        path = Path(src)
        if not path.is_file():
            raise ImageError(label, "file not found", "check the path")
        data = path.read_bytes()
    elif isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
    else:
        raise ImageError(label, f"unsupported input type {type(src).__name__}", "pass a path, bytes, a PIL image or a numpy array")
    if not data:
        raise ImageError(label, "empty file (0 bytes)", "re-export or re-download the image")
    try:
        # the pixel count is checked from the header, before any pixel is decoded
        with Image.open(io.BytesIO(data)) as im:
            return _pil_to_rgb(im, label, max_pixels)
    except Image.DecompressionBombError:
        raise ImageError(label, f"image has more than {max_pixels:,} pixels", "downscale it first or raise the pixel limit") from None
    except UnidentifiedImageError:
        raise ImageError(label, "not a readable image (unknown or corrupt format)", "use a JPEG, PNG, GIF, BMP, TIFF or WebP file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(label, f"image data is damaged or truncated ({exc})", "re-export or re-download the image") from None


def _pil_to_rgb(im: Image.Image, label: str, max_pixels: int) -> np.ndarray:
    if im.width * im.height > max_pixels:
        raise ImageError(label, f"image has {im.width * im.height:,} pixels, over the limit of {max_pixels:,}", "downscale it first")
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)  # animated: the first frame is used
    im.load()
    im = ImageOps.exif_transpose(im) or im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo) * 255.0
        return np.repeat(a.astype(np.uint8)[..., None], 3, axis=2)
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
        raise ImageError(label, f"image has {a.shape[0] * a.shape[1]:,} pixels, over the limit of {max_pixels:,}", "downscale it first")
    if a.dtype != np.uint8:
        f = a.astype(np.float64)
        f = f * 255.0 if f.max() <= 1.0 else f / (65535.0 if f.max() > 255 else 1.0) * (255.0 if f.max() > 255 else 1.0)
        a = np.clip(np.rint(f), 0, 255).astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a[..., :3])


@dataclass(frozen=True)
class Face:
    """A face found in an image: its box ``(x, y, w, h)`` in image pixels and its 48x48 gray crop."""

    box: tuple[int, int, int, int]
    crop: np.ndarray


class FaceDetector:
    """OpenCV Haar-cascade face detector with FERPlus-style square crops.

    Small square images (at most 128 px a side) are taken as already-cropped faces, as in
    FERPlus itself; larger images are searched for every frontal face.
    """

    def __init__(self, margin: float = 0.1, min_face: float = 0.06, min_neighbors: int = 6, detect_side: int = 1024):
        import cv2

        self._cv2 = cv2
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise RuntimeError(f"{path}: OpenCV face model missing; reinstall opencv-python-headless<5")
        self.margin, self.min_face, self.min_neighbors, self.detect_side = margin, min_face, min_neighbors, detect_side
        self._lock = threading.Lock()  # one cascade object shared by server threads

    def boxes(self, gray: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Face boxes ``(x, y, w, h)`` in a gray image ``(H, W)``, largest first."""
        h, w = gray.shape
        if max(h, w) <= CROPPED_MAX_SIDE and 0.8 <= w / h <= 1.25 and min(h, w) >= 24:
            return [(0, 0, w, h)]
        if min(h, w) < 24:
            return []
        scale = min(1.0, self.detect_side / max(h, w))
        small = self._cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=self._cv2.INTER_AREA) if scale < 1 else gray
        small = self._cv2.equalizeHist(small)
        mn = max(24, int(self.min_face * min(small.shape)))
        with self._lock:
            found = self.cascade.detectMultiScale(small, scaleFactor=1.1, minNeighbors=self.min_neighbors, minSize=(mn, mn))
        out = [tuple(int(round(v / scale)) for v in b) for b in (found if len(found) else [])]
        return sorted(out, key=lambda b: -b[2] * b[3])  # type: ignore[return-value]

    def crop(self, gray: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """Square crop around ``box`` enlarged by the margin, edge-padded, resized to 48x48."""
        x, y, w, h = box
        if (x, y, w, h) == (0, 0, gray.shape[1], gray.shape[0]):
            sq = gray
        else:
            side = int(round(max(w, h) * (1 + 2 * self.margin)))
            cx, cy = x + w / 2, y + h / 2
            x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
            pad = max(0, -x0, -y0, x0 + side - gray.shape[1], y0 + side - gray.shape[0])
            g = np.pad(gray, pad, mode="edge") if pad else gray
            sq = g[y0 + pad : y0 + pad + side, x0 + pad : x0 + pad + side]
        interp = self._cv2.INTER_AREA if sq.shape[0] > FACE_SIZE else self._cv2.INTER_LINEAR
        return self._cv2.resize(sq, (FACE_SIZE, FACE_SIZE), interpolation=interp)

    def __call__(self, rgb: np.ndarray) -> list[Face]:
        """Every face in an RGB image ``(H, W, 3)``."""
        gray = self._cv2.cvtColor(rgb, self._cv2.COLOR_RGB2GRAY)
        return [Face(b, self.crop(gray, b)) for b in self.boxes(gray)]
