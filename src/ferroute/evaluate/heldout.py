"""The held-out shift family every choice is made under, disjoint from the 15 test corruptions.

ImageNet-C's own held-out four (speckle noise, gaussian blur, spatter, saturate) are a weak
family for gray faces: saturate is nearly the identity on them. This module adds shifts that
change a gray face, each at severities 1-5, seeded per (shift, severity, seed) like
:mod:`ferroute.evaluate.corruptions`:

* six of ImageNet-C-bar's ten (Mintun et al., 2021, built to be perceptually dissimilar from
  ImageNet-C): ``single_frequency_greyscale``, ``cocentric_sine_waves``, ``plasma_noise``,
  ``checkerboard_cutout``, ``inverse_sparkles``, ``brownish_noise``, with the reference's
  severities (``imagenet_c_bar.csv``) and its image size set to the face's 48 px (as its
  CIFAR-10-C-bar sets 32). A gray face is the reference's RGB image with three equal channels;
  its result is turned back to gray by luma, as for ImageNet-C. ``tests/test_heldout.py``
  pins each to the reference's ``transform`` outputs for the same parameters
  (``scripts/make_reference_cbar.py``, run once beside facebookresearch/augmentation-corruption);
* three photographic ones: ``resolution_loss`` (bicubic down- and up-scaling, from 1.5x to
  6x), ``exposure_noise`` (under- or over-exposure with sensor read and shot noise) and
  ``occlusion`` (a flat or textured patch over 10-45 % of the face);
* haze and blocking, written apart from the test's fog and JPEG (2026-12-07): ``haze``
  (atmospheric scattering, ``I = J t + A (1 - t)`` with transmission ``t = exp(-beta d)`` over a
  depth ramp in a random direction, airlight ``A`` gray or bright) and ``block_quantize``
  (16x16 block-DCT coefficients quantised with a step that grows with frequency, where JPEG uses
  8x8 blocks and its own tables). ``tests/test_heldout.py`` checks that neither reproduces its
  test cousin: the pixel changes they make to the same faces correlate below 0.5 with fog's and
  JPEG's.

The other four of ImageNet-C-bar (blue-noise sample, caustic refraction, Perlin noise,
sparkles) are not ported: their per-pixel reference code is the slowest to vectorise, and the
nine above already change a gray face in nine different ways.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: ImageNet-C-bar's severities (its ``imagenet_c_bar.csv``: a 0-10 scale per shift).
CBAR_SEVERITY = {
    "single_frequency_greyscale": (1.0, 1.5, 2.0, 4.5, 5.0),
    "cocentric_sine_waves": (3.0, 5.0, 8.0, 9.0, 10.0),
    "plasma_noise": (4.75, 7.0, 8.5, 9.25, 10.0),
    "checkerboard_cutout": (2.0, 3.0, 4.0, 5.0, 6.0),
    "inverse_sparkles": (1.0, 2.0, 4.0, 9.0, 10.0),
    "brownish_noise": (1.0, 2.0, 3.0, 4.0, 5.0),
}
_LUMA = np.array([0.299, 0.587, 0.114])


def _fp(level: float, maxval: float) -> float:
    return float(level) * maxval / 10.0


# --------------------------------------------------------------------------- ImageNet-C-bar, as the reference: one RGB image
# Each ``*_params(rng, level, size)`` draws what the reference's ``sample_parameters`` draws;
# each ``*_apply(img, size, **params)`` is its ``transform`` on an (H, W, 3) uint8 image.


def single_frequency_greyscale_params(rng: np.random.Generator, level: float, size: int) -> dict:
    mag = rng.uniform(-np.pi, np.pi)
    freq = np.array([mag, rng.uniform(-abs(mag), abs(mag))])[rng.permutation(2)]
    return {"freq": freq, "phase": rng.uniform(0, 2 * np.pi), "intensity": _fp(level, 196)}


def single_frequency_greyscale_apply(img: np.ndarray, size: int, freq, phase, intensity) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    noise = np.sin(x * freq[0] + y * freq[1] + phase)[..., None]
    return np.clip(img + intensity * noise, 0, 255).astype(np.uint8)


def cocentric_sine_waves_params(rng: np.random.Generator, level: float, size: int) -> dict:
    return {"offset": rng.uniform(0, size, 2), "freq": rng.uniform(0, 10), "amplitude": rng.uniform(0, size / 10),
            "ring_width": rng.uniform(0, size / 10), "intensity": [_fp(level, 128)] * 3}


def cocentric_sine_waves_apply(img: np.ndarray, size: int, offset, freq, amplitude, ring_width, intensity) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    angle = np.arctan2(x - offset[0], y - offset[1]) * freq
    d = ((np.sqrt((x - offset[0]) ** 2 + (y - offset[1]) ** 2) + np.sin(angle) * amplitude) % ring_width) / ring_width - 0.5
    noise = np.stack([intensity[0] * d, intensity[1] * d, intensity[2] * d], axis=2)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def plasma_noise_params(rng: np.random.Generator, level: float, size: int) -> dict:
    return {"time": rng.uniform(0, 6 * np.pi), "iterations": int(rng.integers(4, 7)), "sharpness": rng.uniform(0.5, 1.0),
            "scale": rng.uniform(0.075, 0.2) * size, "intensity": _fp(level, 64)}


def plasma_noise_apply(img: np.ndarray, size: int, time, iterations, sharpness, scale, intensity) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    x, y = x / scale, y / scale
    i = np.array([1.0, 1.0, 1.0, 0.0])
    for _ in range(int(iterations)):
        r0 = np.cos(y * i[0] - i[3] + time / i[1]) / i[2]
        r1 = np.sin(x * i[0] - i[3] + time / i[1]) / i[2]
        r0, r1 = r0 - r1 * 0.3, r1 + r0 * 0.3
        x, y = x + r0, y + r1
        i = i * np.array([1.93, 1.15, (2.25 - sharpness), time * i[1]])
    noise = np.stack([np.sin(x - time), np.sin((x + y + np.sin(time)) * 0.5), np.sin(y + time)], axis=2)
    return np.clip((1 - intensity / 255) * img + intensity * noise, 0, 255).astype(np.uint8)


def checkerboard_cutout_params(rng: np.random.Generator, level: float, size: int) -> dict:
    angle = rng.uniform(0, 2 * np.pi)
    s = max(rng.uniform(0.1, 0.25) * size, 1)
    return {"angle": angle, "scales": (s, s), "fraction": _fp(level, 1.0), "seed": int(rng.integers(0, 2**32))}


def checkerboard_cutout_apply(img: np.ndarray, size: int, scales, angle, fraction, seed) -> np.ndarray:
    grid = np.random.RandomState(seed=seed).uniform(size=(int(4 * size // scales[0]), int(4 * size // scales[1]))) < fraction
    py, px = np.mgrid[0:size, 0:size].astype(np.float64)
    nx = (np.cos(angle) * py + np.sin(angle) * px) / scales[0]
    ny = (-np.sin(angle) * py + np.cos(angle) * px) / scales[1]
    differ = np.trunc(nx % 2).astype(int) != np.trunc(ny % 2).astype(int)
    keep = differ | ~grid[np.trunc(nx).astype(int), np.trunc(ny).astype(int)]  # negative indices wrap, as in the reference
    return np.where(keep[..., None], img, 128).astype(np.uint8)


def inverse_sparkles_params(rng: np.random.Generator, level: float, size: int) -> dict:
    return {"center": rng.uniform(0.25, 0.75, 2) * size, "radius": 0.25 * size, "color": np.array([255, 255, 255]),
            "randomness": 25, "seed": int(rng.integers(0, 2**32)), "rays": int(rng.integers(50, 200)), "amount": 100 - _fp(level, 65)}


def inverse_sparkles_apply(img: np.ndarray, size: int, center, radius, rays, amount, color, randomness, seed) -> np.ndarray:
    rs = np.random.RandomState(seed=seed)
    lengths = np.array([radius + randomness / 100.0 * radius * rs.randn() for _ in range(rays)])
    py, px = np.mgrid[0:size, 0:size].astype(np.float64)
    d0, d1 = py - center[0], px - center[1]
    dist = np.sqrt(d0**2 + d1**2)
    d = (np.arctan2(d1, d0) + np.pi) / (2 * np.pi) * rays
    i = np.trunc(d).astype(int)
    f = d - i
    if radius != 0:
        length = lengths[i % rays] + f * (lengths[(i + 1) % rays] - lengths[i % rays])
        g = (length**2 / (dist**2 + 1e-4)) ** ((100 - amount) / 50.0)
        f = (1 - (f - 0.5) ** 2) * g
    f = np.clip(f, 0, 1)[..., None]
    color = np.asarray(color, np.float64)
    return np.clip(color + f * (img.astype(np.float32) - color), 0, 255).astype(np.uint8)


def brownish_noise_params(rng: np.random.Generator, level: float, size: int) -> dict:
    return {"seed": int(rng.integers(0, 2**32)), "intensity": _fp(level, 64)}


def _brownish(rs: np.random.RandomState, size: int) -> np.ndarray:
    c = size / 2
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    power = 1 / ((x - c) ** 2 + (y - c) ** 2 + 1)
    phases = rs.uniform(low=0, high=2 * np.pi, size=(size, size // 2))
    if size % 2 == 0:
        phases = np.concatenate((phases, phases[::-1, ::-1]), axis=1)
    else:
        mid = rs.uniform(low=0, high=2 * np.pi, size=(size // 2, 1))
        mid = np.concatenate((mid, np.array([[0.0]]), mid[::-1, :]), axis=0)
        phases = np.concatenate((phases, mid, phases[::-1, ::-1]), axis=1)
    f = power * (np.cos(phases) + np.sin(phases) * 1j)
    f = np.roll(np.roll(f, size // 2, axis=0), size // 2, axis=1)
    noise = np.real(np.fft.ifft2(f))
    return noise / np.std(noise)


def brownish_noise_apply(img: np.ndarray, size: int, seed, intensity) -> np.ndarray:
    rs = np.random.RandomState(seed=seed)
    noise = np.stack([_brownish(rs, size) for _ in range(3)], axis=2)
    return np.clip(img + intensity * noise, 0, 255).astype(np.uint8)


CBAR: dict[str, tuple[Callable[..., dict], Callable[..., np.ndarray]]] = {
    name: (globals()[f"{name}_params"], globals()[f"{name}_apply"]) for name in CBAR_SEVERITY
}


def _cbar(name: str) -> Callable[[np.ndarray, int, np.random.Generator], np.ndarray]:
    params, apply = CBAR[name]

    def shift(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
        level = CBAR_SEVERITY[name][s - 1]
        out = np.empty_like(x)
        for k in range(len(x)):
            size = x.shape[1]
            img = np.repeat(np.floor(x[k] * 255.0 + 1e-6)[..., None], 3, axis=2)  # the gray face as RGB uint8 values
            rgb = apply(img, size, **params(rng, level, size)).astype(np.float64)
            out[k] = (rgb @ _LUMA) / 255.0
        return out

    shift.__name__ = name
    return shift


# --------------------------------------------------------------------------- photographic shifts


def resolution_loss(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """Bicubic downscaling by 1.5-6x and back: a small or distant face."""
    from PIL import Image

    factor = (1.5, 2.0, 3.0, 4.0, 6.0)[s - 1]
    n, h, w = x.shape
    small = (max(2, round(w / factor)), max(2, round(h / factor)))
    out = np.empty_like(x)
    for k in range(n):
        im = Image.fromarray(x[k].astype(np.float32), mode="F")
        out[k] = np.asarray(im.resize(small, Image.BICUBIC).resize((w, h), Image.BICUBIC))
    return np.clip(out, 0, 1)


def exposure_noise(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """Under- or over-exposure (each half the faces) with sensor noise: an underexposed frame is
    brightened back, so its read and shot noise are amplified; an overexposed one clips."""
    gain_under = (0.5, 0.35, 0.25, 0.15, 0.1)[s - 1]
    gain_over = (1.6, 2.0, 2.6, 3.3, 4.2)[s - 1]
    read = (0.004, 0.006, 0.008, 0.010, 0.012)[s - 1]
    n = len(x)
    under = rng.random(n) < 0.5
    g = np.where(under, gain_under, gain_over)[:, None, None]
    signal = np.clip(x * g, 0, 1)
    photons = 400.0  # full-well scale: shot noise std sqrt(signal / photons)
    noisy = signal + rng.normal(size=x.shape) * np.sqrt(signal / photons + read**2)
    noisy = np.clip(noisy, 0, 1)
    return np.where(under[:, None, None], np.clip(noisy / g, 0, 1), noisy)


def occlusion(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """A patch over 10-45 % of the face (a hand, a mask, a scarf, a microphone): flat or
    textured, at a random place, of a random gray."""
    area = (0.10, 0.18, 0.26, 0.35, 0.45)[s - 1]
    n, h, w = x.shape
    out = x.copy()
    for k in range(n):
        aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
        ph = int(np.clip(round(np.sqrt(area * h * w / aspect)), 1, h))
        pw = int(np.clip(round(area * h * w / ph), 1, w))
        top, left = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        patch = np.full((ph, pw), rng.uniform(0.05, 0.95))
        if rng.random() < 0.5:  # a textured patch (cloth, skin of a hand)
            patch = np.clip(patch + rng.normal(0, 0.08, (ph, pw)), 0, 1)
        out[k, top : top + ph, left : left + pw] = patch
    return out


def haze(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """Atmospheric scattering over a depth ramp: ``x t + A (1 - t)``, ``t = exp(-beta d)``, the
    depth ``d`` rising 0 -> 1 across the face in a random direction (a face further into haze on
    one side), airlight ``A`` from mid gray to white."""
    beta = (0.5, 0.9, 1.4, 2.0, 2.8)[s - 1]
    n, h, w = x.shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h - 1, 1)
    out = np.empty_like(x)
    for k in range(n):
        a = rng.uniform(0, 2 * np.pi)
        d = np.cos(a) * xx + np.sin(a) * yy
        d = (d - d.min()) / (np.ptp(d) + 1e-9)
        t = np.exp(-beta * (0.3 + 0.7 * d))
        out[k] = x[k] * t + rng.uniform(0.55, 1.0) * (1 - t)
    return np.clip(out, 0, 1)


def block_quantize(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """16x16 block-DCT compression: each block's coefficients quantised with a step rising with
    frequency (``q (1 + (u + v) / 4)``, ``q`` by severity), the DC term kept finer."""
    from scipy.fft import dctn, idctn

    q = (0.03, 0.06, 0.10, 0.16, 0.24)[s - 1]
    b = 16
    n, h, w = x.shape
    uu, vv = np.mgrid[0:b, 0:b]
    step = q * (1 + (uu + vv) / 4.0)
    step[0, 0] = q / 2
    out = x.copy()
    for r in range(0, h - h % b, b):
        for c in range(0, w - w % b, b):
            blk = dctn(x[:, r : r + b, c : c + b] - 0.5, axes=(1, 2), norm="ortho")
            blk = np.round(blk / (step * b / 8)) * (step * b / 8)
            out[:, r : r + b, c : c + b] = idctn(blk, axes=(1, 2), norm="ortho") + 0.5
    return np.clip(out, 0, 1)


#: The shifts this module adds to the held-out family.
SHIFTS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    **{name: _cbar(name) for name in CBAR_SEVERITY},
    "resolution_loss": resolution_loss,
    "exposure_noise": exposure_noise,
    "occlusion": occlusion,
    "haze": haze,
    "block_quantize": block_quantize,
}
