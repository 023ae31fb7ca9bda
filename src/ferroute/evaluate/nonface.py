"""A deterministic probe set of 48x48 gray crops that are not faces.

A 48x48 input skips face detection (it is taken as a face crop), so the router alone must
turn away a texture, an object or noise given at that size. This set measures how often
it does (``generalization.nonface_rejected`` in the evaluation report). Nothing is chosen
on it. Built by code from scikit-image's bundled sample images (objects, animals,
scenery, micrographs, text pages; the two with human faces left out) and from drawings,
rendered text and noise made here; never from FERPlus.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: scikit-image sample images without human faces
PHOTOS = ("brick", "coffee", "chelsea", "rocket", "horse", "clock", "coins", "moon", "hubble_deep_field", "grass", "gravel",
          "immunohistochemistry", "retina", "cell", "colorwheel", "checkerboard", "shepp_logan_phantom", "page", "text")
WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "42", "ferroute", "STOP", "EXIT", "A-7", "ok?", "#1")


def _gray(im: np.ndarray) -> np.ndarray:
    if im.ndim == 3:
        im = np.asarray(Image.fromarray(np.asarray(im[..., :3], np.uint8)).convert("L"))
    if im.dtype != np.uint8:
        im = np.clip(np.asarray(im, float) / max(float(np.max(im)), 1e-9) * 255, 0, 255).astype(np.uint8)
    return im


def _photo_crops(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    import skimage.data

    images = [_gray(getattr(skimage.data, name)()) for name in PHOTOS]
    out = []
    for i in range(n):
        im = images[i % len(images)]
        h, w = im.shape
        side = int(rng.integers(48, max(49, min(h, w) // 2 + 1)))
        r, c = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(im[r : r + side, c : c + side]).resize((48, 48), Image.BILINEAR)
        out.append(np.asarray(crop))
    return out


def _drawing(rng: np.random.Generator) -> np.ndarray:
    im = Image.new("L", (96, 96), int(rng.integers(0, 256)))
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(2, 9))):
        pts = [tuple(int(v) for v in rng.integers(0, 96, 2)) for _ in range(int(rng.integers(2, 6)))]
        fill = int(rng.integers(0, 256))
        kind = rng.integers(3)
        if kind == 0:
            d.line(pts, fill=fill, width=int(rng.integers(1, 6)))
        elif kind == 1 and len(pts) >= 3:
            d.polygon(pts, fill=fill)
        else:
            x0, y0 = pts[0]
            rad = int(rng.integers(4, 30))
            d.ellipse([x0 - rad, y0 - rad, x0 + rad, y0 + rad], outline=fill, width=int(rng.integers(1, 4)))
    return np.asarray(im.resize((48, 48), Image.BILINEAR))


def _text(rng: np.random.Generator) -> np.ndarray:
    bg = int(rng.integers(0, 256))
    im = Image.new("L", (96, 96), bg)
    d = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=int(rng.integers(10, 30)))
    ink = (bg + 128 + int(rng.integers(-40, 40))) % 256
    y = int(rng.integers(-5, 20))
    while y < 96:
        line = " ".join(str(rng.choice(WORDS)) for _ in range(3))
        d.text((int(rng.integers(-20, 10)), y), line, fill=ink, font=font)
        y += int(rng.integers(12, 34))
    return np.asarray(im.resize((48, 48), Image.BILINEAR))


def _noise(rng: np.random.Generator) -> np.ndarray:
    kind = rng.integers(4)
    yy, xx = np.mgrid[0:48, 0:48] / 48.0
    if kind == 0:  # white noise around a random level
        x = rng.normal(rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.3), (48, 48))
    elif kind == 1:  # 1/f^beta noise
        spec = np.fft.fftfreq(48)
        f = np.sqrt(spec[:, None] ** 2 + spec[None, :] ** 2)
        f[0, 0] = 1
        z = np.fft.ifft2(np.fft.fft2(rng.normal(size=(48, 48))) / f ** rng.uniform(0.5, 2)).real
        x = 0.5 + 0.2 * z / (z.std() + 1e-9)
    elif kind == 2:  # stripes or checks
        a, fr = rng.uniform(0, np.pi), rng.uniform(2, 12)
        x = 0.5 + 0.4 * np.sign(np.sin(2 * np.pi * fr * (np.cos(a) * xx + np.sin(a) * yy)))
        if rng.random() < 0.5:
            x = x * (0.5 + 0.5 * np.sign(np.sin(2 * np.pi * fr * (np.cos(a + 1.57) * xx + np.sin(a + 1.57) * yy))))
    else:  # smooth gradient, maybe flat
        x = rng.uniform(0, 1) + rng.uniform(-0.5, 0.5) * xx + rng.uniform(-0.5, 0.5) * yy
    return np.clip(x * 255, 0, 255).astype(np.uint8)


def nonface_crops(n: int = 600, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """``n`` crops ``(n, 48, 48)`` uint8 and the kind of each: half photo crops (objects,
    animals, scenery, micrographs, text pages), a sixth each of drawings, rendered text and
    noise or patterns. The same ``seed`` gives the same crops."""
    rng = np.random.default_rng(seed)
    n_photo = n // 2
    n_each = (n - n_photo) // 3
    counts = {"photo": n_photo, "drawing": n_each, "text": n_each, "noise": n - n_photo - 2 * n_each}
    crops = _photo_crops(counts["photo"], rng)
    crops += [_drawing(rng) for _ in range(counts["drawing"])]
    crops += [_text(rng) for _ in range(counts["text"])]
    crops += [_noise(rng) for _ in range(counts["noise"])]
    kinds = [k for k, c in counts.items() for _ in range(c)]
    return np.stack(crops).astype(np.uint8), kinds


def tiled_faces(faces: np.ndarray, grid: int = 3, seed: int = 0) -> np.ndarray:
    """Faces ``(N, H, W)`` uint8 made into non-faces: cut into a ``grid`` x ``grid`` of tiles,
    shuffled and each turned by a multiple of 90 degrees (seeded; never every tile in place
    and unturned). Same shape. They keep a face's brightness, contrast and texture and lose
    its structure: a kind of validation non-face that pixel statistics alone cannot tell from
    a face (``scripts/select_shift_score.py``). Not part of the probe set above."""
    x = np.asarray(faces, np.uint8)
    if x.ndim != 3 or x.shape[1] % grid or x.shape[2] % grid or x.shape[1] != x.shape[2]:
        raise ValueError(f"tiled_faces needs square crops (N, H, H) with H divisible by {grid}, got {x.shape}")
    t = x.shape[1] // grid
    rng = np.random.default_rng(seed)
    out = np.empty_like(x)
    for i, face in enumerate(x):
        tiles = [face[r * t : (r + 1) * t, c * t : (c + 1) * t] for r in range(grid) for c in range(grid)]
        while True:
            order, turns = rng.permutation(len(tiles)), rng.integers(0, 4, len(tiles))
            if np.any(order != np.arange(len(tiles))) or np.any(turns):
                break
        for k, (j, q) in enumerate(zip(order, turns)):
            r, c = divmod(k, grid)
            out[i, r * t : (r + 1) * t, c * t : (c + 1) * t] = np.rot90(tiles[j], q)
    return out
