"""Validation non-faces that are not made of people: generated here, seeded, never drawn from the
non-face probe (:mod:`ferroute.evaluate.nonface`) or its sources, so the reject score is chosen
knowing what a drawing, a texture or an object looks like without ever seeing the probe.

Four kinds, each ``(n, 48, 48)`` uint8, drawn at 64 px and resized with Lanczos:

* ``scenes``: procedural still lifes: a gradient or two-tone ground, overlapping filled shapes
  (rectangles, rounded boxes, stars, rings) with soft shading, and now and then a word;
* ``textures``: fractal noise of a random spectral slope, wood and marble rings, tiled motifs
  (bricks, dots, weaves) under a random rotation;
* ``strokes``: line drawings made by a pen that wanders (smooth random walks and Bezier curves
  of several widths), the way a sketch or a logo is drawn;
* ``facelike``: face-like arrangements of non-face parts: an oval or box with two blobs over a
  bar (or two squares over a circle), so a score that only checks for "two eyes over a mouth"
  is caught out.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

KINDS = ("scenes", "textures", "strokes", "facelike")
_S = 64
_WORDS = ("OPEN", "EXIT", "SALE", "cafe", "No. 7", "PARK", "stop", "ferry", "2026", "ok!", "TAXI", "bar")


def _finish(im: Image.Image, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.5:
        im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2))))
    return np.asarray(im.resize((48, 48), Image.LANCZOS), dtype=np.uint8)


def _ground(rng: np.random.Generator) -> Image.Image:
    a, b = rng.uniform(0, 255, 2)
    t = np.linspace(0, 1, _S)
    g = a + (b - a) * (t[:, None] if rng.random() < 0.5 else t[None, :])
    return Image.fromarray(np.broadcast_to(g, (_S, _S)).astype(np.uint8))


def _scene(rng: np.random.Generator) -> np.ndarray:
    im = _ground(rng)
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(2, 7))):
        x0, y0 = rng.integers(-10, _S, 2)
        w, h = rng.integers(8, 40, 2)
        box = [int(x0), int(y0), int(x0 + w), int(y0 + h)]
        fill = int(rng.integers(0, 256))
        kind = int(rng.integers(4))
        if kind == 0:
            d.rectangle(box, fill=fill)
        elif kind == 1:
            d.rounded_rectangle(box, radius=int(min(w, h) // 3), fill=fill, outline=int(rng.integers(0, 256)))
        elif kind == 2:
            cx, cy, r = x0 + w / 2, y0 + h / 2, min(w, h) / 2
            pts = [(cx + (r if k % 2 == 0 else r / 2.5) * np.cos(np.pi * k / 5), cy + (r if k % 2 == 0 else r / 2.5) * np.sin(np.pi * k / 5))
                   for k in range(10)]
            d.polygon(pts, fill=fill)
        else:
            d.ellipse(box, outline=fill, width=int(rng.integers(2, 6)))
    if rng.random() < 0.35:
        font = ImageFont.load_default(size=int(rng.integers(9, 18)))
        d.text((int(rng.integers(0, 30)), int(rng.integers(0, 50))), str(rng.choice(_WORDS)), fill=int(rng.integers(0, 256)), font=font)
    return _finish(im, rng)


def _texture(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:_S, 0:_S] / _S
    kind = int(rng.integers(4))
    if kind == 0:  # fractal noise of a random spectral slope
        f = np.hypot(*np.meshgrid(np.fft.fftfreq(_S), np.fft.fftfreq(_S)))
        f[0, 0] = 1.0
        spec = (rng.normal(size=(_S, _S)) + 1j * rng.normal(size=(_S, _S))) / f ** rng.uniform(0.8, 2.5)
        z = np.fft.ifft2(spec).real
    elif kind == 1:  # wood or marble rings
        cx, cy = rng.uniform(-0.5, 1.5, 2)
        r = np.hypot(xx - cx, yy - cy) * rng.uniform(8, 30)
        z = np.sin(r + rng.uniform(1, 4) * np.sin(yy * rng.uniform(2, 9)))
    elif kind == 2:  # bricks
        bh, bw = rng.integers(5, 14), rng.integers(10, 24)
        rows = (np.arange(_S)[:, None] // bh)
        cols = (np.arange(_S)[None, :] + (rows % 2) * bw // 2) // bw
        z = ((np.arange(_S)[:, None] % bh) > 0) & (((np.arange(_S)[None, :] + (rows % 2) * bw // 2) % bw) > 0)
        z = z * (0.6 + 0.4 * ((rows * 7 + cols * 3) % 5) / 5)
    else:  # dots on a lattice
        p = rng.integers(5, 12)
        z = -np.hypot((np.arange(_S)[:, None] % p) - p / 2, (np.arange(_S)[None, :] % p) - p / 2)
    z = (z - z.min()) / (np.ptp(z) + 1e-9)
    lo, hi = sorted(rng.uniform(0, 255, 2))
    im = Image.fromarray((lo + (hi - lo + 30) * z).clip(0, 255).astype(np.uint8)).rotate(float(rng.uniform(0, 360)), resample=Image.BILINEAR, expand=False, fillcolor=int(lo))
    return _finish(im, rng)


def _strokes(rng: np.random.Generator) -> np.ndarray:
    bg = int(rng.choice([int(rng.integers(200, 256)), int(rng.integers(0, 60))]))
    ink = 255 - bg if rng.random() < 0.8 else int(rng.integers(0, 256))
    im = Image.new("L", (_S, _S), bg)
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(1, 5))):
        if rng.random() < 0.5:  # a wandering pen: a smooth random walk
            pos, ang = rng.uniform(0, _S, 2), rng.uniform(0, 2 * np.pi)
            pts = []
            for _ in range(int(rng.integers(10, 40))):
                ang += rng.normal(0, 0.5)
                pos = np.clip(pos + 2.5 * np.array([np.cos(ang), np.sin(ang)]), 0, _S - 1)
                pts.append(tuple(pos))
        else:  # a cubic Bezier
            p = rng.uniform(0, _S, (4, 2))
            t = np.linspace(0, 1, 30)[:, None]
            pts = [tuple(v) for v in ((1 - t) ** 3 * p[0] + 3 * (1 - t) ** 2 * t * p[1] + 3 * (1 - t) * t ** 2 * p[2] + t ** 3 * p[3])]
        d.line(pts, fill=ink, width=int(rng.integers(1, 5)), joint="curve")
    return _finish(im, rng)


def _facelike(rng: np.random.Generator) -> np.ndarray:
    bg, fg = int(rng.integers(0, 256)), int(rng.integers(0, 256))
    im = Image.new("L", (_S, _S), bg)
    d = ImageDraw.Draw(im)
    m = int(rng.integers(2, 10))
    (d.ellipse if rng.random() < 0.6 else d.rectangle)([m, m, _S - m, _S - m], fill=fg)
    dark = int(rng.integers(0, 256))
    ey, sep, r = rng.uniform(20, 30), rng.uniform(8, 16), rng.uniform(3, 7)
    for sx in (-1, 1):  # two blobs, or two squares
        cx = _S / 2 + sx * sep
        box = [cx - r, ey - r, cx + r, ey + r]
        (d.ellipse if rng.random() < 0.5 else d.rectangle)(box, fill=dark)
    my = rng.uniform(40, 50)
    if rng.random() < 0.5:  # a bar, or a circle, below
        d.rectangle([_S / 2 - rng.uniform(6, 14), my, _S / 2 + rng.uniform(6, 14), my + rng.uniform(2, 5)], fill=dark)
    else:
        rr = rng.uniform(3, 7)
        d.ellipse([_S / 2 - rr, my - rr, _S / 2 + rr, my + rr], fill=dark)
    return _finish(im, rng)


_MAKERS = {"scenes": _scene, "textures": _texture, "strokes": _strokes, "facelike": _facelike}


def validation_nonfaces(n_per_kind: int = 150, seed: int = 0) -> dict[str, np.ndarray]:
    """``{kind: (n_per_kind, 48, 48) uint8}`` for each of :data:`KINDS`; the same seed gives the
    same crops (a different seed for the set a score is fitted on and the one it is judged on)."""
    out = {}
    for k, kind in enumerate(KINDS):
        rng = np.random.default_rng([seed, k, 7919])
        out[kind] = np.stack([_MAKERS[kind](rng) for _ in range(n_per_kind)])
    return out
