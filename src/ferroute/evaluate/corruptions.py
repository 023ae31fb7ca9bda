"""ImageNet-C's corruptions at severities 1-5, vectorised over a batch of gray faces.

Fifteen test corruptions (:data:`CORRUPTIONS`) and ImageNet-C's four held-out ones
(:data:`IMAGENET_C_HELD_OUT`: speckle noise, gaussian blur, spatter, saturate). Every choice
(shift score, thresholds, model) is made under :data:`HELD_OUT` (three of those four and the
shifts of :mod:`ferroute.evaluate.heldout`) so that the test's shift family stays unseen.

**Scaling rule (one, for all 19):** a 48x48 face is corrupted as the reference
implementation, the ``imagecorruptions`` package, corrupts a 48x48 image: its constants as
they are, whether in pixels (blur radii, snow streaks, frost crops) or relative to the image
size (elastic). Nothing is rescaled from 224-pixel ImageNet; blurs are therefore stronger
relative to a face than to a photo. The reference sees a gray face as an RGB image with
three equal channels and we turn its result back to gray with ITU-R 601 luma, so
per-channel noise is drawn for three channels and averaged by luma (a gray noise would be
1.5x stronger), colour overlays (frost, spatter) count by their luma, and saturate, which
only moves the (zero) saturation of a gray image, darkens it slightly at severities 4-5
and is otherwise the identity. Outputs are truncated to uint8 as the reference's
``np.uint8`` does. ``tests/test_corruptions.py`` pins all 19 to the reference's stored
outputs (``scripts/make_reference_corruptions.py``).

Each (corruption, severity) draws from its own seeded generator, so results are
deterministic and independent of the order or the process that computes them
(:func:`ferroute.evaluate.corrupted_sets.corrupted_set` computes many in parallel and caches them).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage

from .heldout import SHIFTS as HELDOUT_SHIFTS

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
SEVERITIES = (1, 2, 3, 4, 5)
_LUMA = np.array([0.299, 0.587, 0.114])


def _gauss(x: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> np.ndarray:
    """Per-image Gaussian blur of ``(N, H, W)`` (skimage.filters.gaussian semantics)."""
    return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma), mode=mode, truncate=truncate)


def _luma_of_channels(x: np.ndarray, noisy: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Per-channel noise on a gray image seen as three equal channels, each clipped, then
    back to gray by luma: what the reference does to a gray face."""
    rgb = np.clip(noisy(np.repeat(x[..., None], 3, axis=-1)), 0, 1)
    return rgb @ _LUMA


def gaussian_noise(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.08, 0.12, 0.18, 0.26, 0.38)[s - 1]
    return _luma_of_channels(x, lambda v: v + rng.normal(scale=c, size=v.shape))


def shot_noise(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    c = (60, 25, 12, 5, 3)[s - 1]
    return _luma_of_channels(x, lambda v: rng.poisson(v * c) / float(c))


def impulse_noise(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.03, 0.06, 0.09, 0.17, 0.27)[s - 1]

    def salt_pepper(v: np.ndarray) -> np.ndarray:  # a fraction c of values replaced, half by 0 and half by 1
        return np.where(rng.random(v.shape) < c, (rng.random(v.shape) < 0.5).astype(v.dtype), v)

    return _luma_of_channels(x, salt_pepper)


def speckle_noise(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.15, 0.2, 0.35, 0.45, 0.6)[s - 1]
    return _luma_of_channels(x, lambda v: v + v * rng.normal(scale=c, size=v.shape))


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    half = 8 if radius <= 8 else int(radius)
    ksize = 3 if radius <= 8 else 5
    ax = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(ax, ax)
    k = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    k /= k.sum()
    # cv2.GaussianBlur(ksize, sigmaX=alias_blur) on the kernel itself
    g = np.exp(-(np.arange(ksize) - ksize // 2) ** 2 / (2 * alias_blur**2))
    g /= g.sum()
    k = ndimage.correlate1d(k, g, axis=0, mode="mirror")
    return ndimage.correlate1d(k, g, axis=1, mode="mirror")


def defocus_blur(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    radius, alias = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))[s - 1]
    k = _disk(radius, alias)
    return ndimage.correlate(x, k[None], mode="mirror")


def glass_blur(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    sigma, delta, iters = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))[s - 1]
    y = np.floor(np.clip(_gauss(x, sigma), 0, 1) * 255) / 255.0
    n, h, w = y.shape
    rows = np.arange(n)
    # ImageNet-C's sequential pixel "swaps", each vectorised across the batch. On an RGB
    # array its tuple swap of two pixel views copies one pixel onto the other and leaves the
    # other as it was; a gray face goes through the reference as RGB, so we copy likewise.
    for _ in range(iters):
        for r in range(h - delta, delta, -1):
            for c in range(w - delta, delta, -1):
                d = rng.integers(-delta, delta, size=(n, 2))
                y[:, r, c] = y[rows, r + d[:, 1], c + d[:, 0]]
    return _gauss(y, sigma)


def gaussian_blur(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    return _gauss(x, (1, 2, 3, 4, 6)[s - 1])


def _motion_blur(x: np.ndarray, radius: int, sigma: float, angles: np.ndarray) -> np.ndarray:
    """ImageMagick-style motion blur: a one-sided Gaussian-weighted streak per image angle."""
    n, h, w = x.shape
    width = 2 * radius + 1
    k = np.exp(-np.arange(width) ** 2 / (2 * sigma**2))
    k /= k.sum()
    out = np.zeros_like(x)
    rad = np.deg2rad(angles)
    iy, ix = np.arange(h), np.arange(w)
    for i in range(width):
        dy = -np.ceil(i * np.sin(rad) - 0.5).astype(int)
        dx = -np.ceil(i * np.cos(rad) - 0.5).astype(int)
        live = (np.abs(dy) < h) & (np.abs(dx) < w)  # streak past the border stops adding
        ry = np.clip(iy[None, :] - dy[:, None], 0, h - 1)  # shift with edge replication
        rx = np.clip(ix[None, :] - dx[:, None], 0, w - 1)
        shifted = x[np.arange(n)[:, None, None], ry[:, :, None], rx[:, None, :]]
        out += np.where(live[:, None, None], k[i] * shifted, 0.0)
    return out


def motion_blur(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    radius, sigma = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))[s - 1]
    return _motion_blur(x, radius, sigma, rng.uniform(-45, 45, size=len(x)))


def _zoomed_center(x: np.ndarray, z: float) -> np.ndarray:
    """The central ``1/z`` of each image enlarged by ``z``: ``(N, L, L)``, ``L`` >= the input's side."""
    h = x.shape[1]
    ch = int(np.ceil(h / z))
    top = (h - ch) // 2
    return ndimage.zoom(x[:, top : top + ch, top : top + ch], (1, z, z), order=1)


def _clipped_zoom(x: np.ndarray, z: float) -> np.ndarray:
    h = x.shape[1]
    res = _zoomed_center(x, z)
    t = (res.shape[1] - h) // 2
    return res[:, t : t + h, t : t + h]


def zoom_blur(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    zooms = (
        np.arange(1, 1.11, 0.01),
        np.arange(1, 1.16, 0.01),
        np.arange(1, 1.21, 0.02),
        np.arange(1, 1.26, 0.02),
        np.arange(1, 1.31, 0.03),
    )[s - 1]
    out = np.zeros_like(x)
    for z in zooms:
        out += _clipped_zoom(x, float(z))
    return (x + out) / (len(zooms) + 1)


def snow(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    loc, scale, zoom, thr, radius, sigma, blend = (
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    )[s - 1]
    # as the reference: the zoomed layer keeps its size (up to 50 px for 48) through the
    # streaks, then its top-left corner is cut, and it is rounded to 8 bits
    n, h, w = x.shape
    layer = _zoomed_center(rng.normal(loc=loc, scale=scale, size=x.shape), zoom)
    layer[layer < thr] = 0
    layer = _motion_blur(np.clip(layer, 0, 1), radius, sigma, rng.uniform(-135, -45, size=n))[:, :h, :w]
    layer = np.round(layer * 255) / 255
    x = blend * x + (1 - blend) * np.maximum(x, x * 1.5 + 0.5)
    return x + layer + np.rot90(layer, k=2, axes=(1, 2))


@lru_cache(maxsize=1)
def _frost_textures() -> tuple[np.ndarray, ...]:
    """The five frost photos the reference draws from, gray, enlarged by 1.1 (bicubic) as
    the reference enlarges them for any image smaller than the photo."""
    from importlib import resources

    import cv2

    base = resources.files("ferroute") / "assets" / "frost"
    out = []
    for i in range(1, 6):
        with resources.as_file(base / f"frost{i}.png") as p, Image.open(p) as im:
            g = np.asarray(im.convert("L"))
        size = (int(np.ceil(g.shape[1] * 1.1)), int(np.ceil(g.shape[0] * 1.1)))
        out.append(cv2.resize(g, size, interpolation=cv2.INTER_CUBIC).astype(np.float64) / 255.0)
    return tuple(out)


def frost(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    a, b = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))[s - 1]
    tex = _frost_textures()
    n, h, w = x.shape
    layer = np.empty_like(x)
    for i in range(n):
        t = tex[rng.integers(len(tex))]
        r0 = rng.integers(0, t.shape[0] - h)  # the reference's randint excludes the last start
        c0 = rng.integers(0, t.shape[1] - w)
        layer[i] = t[r0 : r0 + h, c0 : c0 + w]
    return a * x + b * layer


def _plasma(n: int, size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """Diamond-square plasma fractals ``(n, size, size)`` in [0, 1]."""
    m = np.zeros((n, size, size))
    step, wibble = size, 100.0

    def wmean(a: np.ndarray) -> np.ndarray:
        return a / 4 + wibble * rng.uniform(-wibble, wibble, a.shape)

    while step >= 2:
        half = step // 2
        corner = m[:, 0:size:step, 0:size:step]
        sq = corner + np.roll(corner, -1, axis=1)
        sq = sq + np.roll(sq, -1, axis=2)
        m[:, half:size:step, half:size:step] = wmean(sq)
        dr = m[:, half:size:step, half:size:step]
        ul = m[:, 0:size:step, 0:size:step]
        lt = dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=2)
        m[:, 0:size:step, half:size:step] = wmean(lt)
        tt = dr + np.roll(dr, 1, axis=2) + ul + np.roll(ul, -1, axis=1)
        m[:, half:size:step, 0:size:step] = wmean(tt)
        step //= 2
        wibble /= decay
    m -= m.min(axis=(1, 2), keepdims=True)
    return m / m.max(axis=(1, 2), keepdims=True)


def fog(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    a, decay = ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))[s - 1]
    n, h, w = x.shape
    size = 1 << (max(h, w) - 1).bit_length()
    mx = x.max(axis=(1, 2), keepdims=True)
    x = x + a * _plasma(n, size, decay, rng)[:, :h, :w]
    return x * mx / (mx + a)


def brightness(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.1, 0.2, 0.3, 0.4, 0.5)[s - 1]
    return np.clip(x + c, 0, 1)  # HSV value channel of a gray image is the gray level


def contrast(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.4, 0.3, 0.2, 0.1, 0.05)[s - 1]
    means = x.mean(axis=(1, 2), keepdims=True)
    return (x - means) * c + means


def elastic_transform(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    # imagecorruptions' size-relative form: a smoothed uniform displacement field whose
    # range and smoothing scale with the image, amplitude alpha in pixels per unit field.
    alpha = 250 * (0.05, 0.065, 0.085, 0.1, 0.12)[s - 1]
    n, h, w = x.shape
    sigma, reach = (0, h * 0.01, w * 0.01), h * 0.005
    dx = ndimage.gaussian_filter(rng.uniform(-reach, reach, size=x.shape), sigma, mode="reflect", truncate=3) * alpha
    dy = ndimage.gaussian_filter(rng.uniform(-reach, reach, size=x.shape), sigma, mode="reflect", truncate=3) * alpha
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    out = np.empty_like(x)
    for i in range(n):
        out[i] = ndimage.map_coordinates(x[i], [yy + dy[i], xx + dx[i]], order=1, mode="reflect")
    return out


def pixelate(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.6, 0.5, 0.4, 0.3, 0.25)[s - 1]
    out = np.empty_like(x)
    for i, face in enumerate(_to_uint8(x)):
        im = Image.fromarray(face)
        h, w = face.shape
        im = im.resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.BOX)
        out[i] = np.asarray(im) / 255.0
    return out


def jpeg_compression(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    q = (25, 18, 15, 10, 7)[s - 1]
    out = np.empty_like(x)
    for i, face in enumerate(_to_uint8(x)):
        buf = io.BytesIO()
        Image.fromarray(face).save(buf, "JPEG", quality=q)
        buf.seek(0)
        with Image.open(buf) as im:
            out[i] = np.asarray(im.convert("L")) / 255.0
    return out


def spatter(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    import cv2

    loc, scale, sigma, thr, strength, mud = (
        (0.65, 0.3, 4, 0.69, 0.6, 0),
        (0.65, 0.3, 3, 0.68, 0.6, 0),
        (0.65, 0.3, 2, 0.68, 0.5, 0),
        (0.65, 0.3, 1, 0.65, 1.5, 1),
        (0.67, 0.4, 1, 0.65, 1.5, 1),
    )[s - 1]
    liquid = _gauss(rng.normal(loc=loc, scale=scale, size=x.shape), sigma)
    liquid[liquid < thr] = 0
    if mud:  # mud: opaque brown blots
        m = _gauss((liquid > thr).astype(np.float64), strength)
        m[m < 0.8] = 0
        return x * (1 - m) + m * float(np.array([63, 42, 20]) / 255.0 @ _LUMA)
    water = (np.array([238, 238, 175]) / 255.0)  # pale turquoise, in the channel order the reference ends with
    ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
    out = np.empty_like(x)
    for i in range(len(x)):  # water: bright drops with shaded edges (OpenCV, as the reference)
        layer = (liquid[i] * 255).astype(np.uint8)
        dist = cv2.distanceTransform(255 - cv2.Canny(layer, 50, 150), cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
        dist = cv2.blur(cv2.filter2D(dist, cv2.CV_8U, ker), (3, 3)).astype(np.float32)
        m = layer.astype(np.float32) * dist
        m = m / m.max() * strength if m.max() > 0 else m
        out[i] = np.clip(x[i][..., None] + m[..., None] * water, 0, 1) @ _LUMA
    return out


def saturate(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    # HSV saturation * c0 + c1 on a gray image (saturation 0, hue 0): red-tinted at c1 > 0,
    # whose luma is V * (0.299 + 0.701 * (1 - c1)); the identity at c1 = 0.
    c1 = (0, 0, 0, 0.1, 0.2)[s - 1]
    return x * (_LUMA[0] + (1 - _LUMA[0]) * (1 - c1))


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "snow": snow,
    "frost": frost,
    "fog": fog,
    "brightness": brightness,
    "contrast": contrast,
    "elastic_transform": elastic_transform,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
}
#: ImageNet-C's four held-out corruptions (pinned to the reference like the 15).
IMAGENET_C_HELD_OUT: dict[str, Corruption] = {
    "speckle_noise": speckle_noise,
    "gaussian_blur": gaussian_blur,
    "spatter": spatter,
    "saturate": saturate,
}
#: The held-out shift family every choice is made under, never the 15: ImageNet-C's held-out
#: three that change a gray face (saturate nearly does not), six of ImageNet-C-bar and three
#: photographic shifts (:mod:`ferroute.evaluate.heldout`).
HELD_OUT: dict[str, Corruption] = {
    "speckle_noise": speckle_noise,
    "gaussian_blur": gaussian_blur,
    "spatter": spatter,
    **HELDOUT_SHIFTS,
}
_ALL = {**CORRUPTIONS, **IMAGENET_C_HELD_OUT, **HELD_OUT}


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] -> uint8, truncating as the reference's ``np.uint8`` does (the 1e-6 keeps an
    exact k/255 at k)."""
    return np.clip(np.floor(x * 255.0 + 1e-6), 0, 255).astype(np.uint8)


def _seed(name: str, severity: int, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{name}/{severity}/{seed}".encode()).digest()[:8], "little")


def corrupt(faces: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Corrupt gray faces ``(N, H, W)`` uint8 with ``name`` at ``severity`` -> ``(N, H, W)`` uint8."""
    if name not in _ALL:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(_ALL)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 1..5, got {severity}")
    faces = np.asarray(faces)
    if faces.ndim != 3 or faces.dtype != np.uint8:
        raise ValueError(f"faces must be (N, H, W) uint8, got {faces.shape} {faces.dtype}")
    rng = np.random.default_rng(_seed(name, severity, seed))
    x = faces.astype(np.float64) / 255.0
    return _to_uint8(np.clip(_ALL[name](x, severity, rng), 0, 1))
