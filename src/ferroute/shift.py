"""Shift signals beyond the decomposition: how unlike the training faces an input is.

The decomposition's epistemic part sees shift only through member disagreement, which
also rises on ambiguous faces. These signals look at the input itself, not at what the
members say about its emotion, so they do not punish ambiguity:

* :class:`FeatureDensity` (DDU, Mukhoti et al., 2023): class-conditional Gaussians with
  one covariance shared by the classes, fitted on each member's penultimate features of
  training faces; the score is the negative log density, averaged over members.
* :class:`PixelStats`: a Gaussian over a few image statistics of the 48x48 crop (level,
  contrast, edge and fine-detail energy, clipped pixels); the score is the squared
  Mahalanobis distance. It sees noise, blur, fog and exposure without any model.

Each is fitted once (on training faces, never on validation or test). A model folder keeps
the signals its router needs in ``shift.json`` (:func:`save_signals`, :func:`load_signals`;
plain numbers, no pickle). Higher scores mean less familiar.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

SIGNALS_FILE = "shift.json"
_RIDGE = 1e-3  # added to covariance diagonals, relative to their mean variance


class NotFittedError(RuntimeError):
    """A shift signal was scored before ``fit``."""


class FeatureDensity:
    """DDU-style feature density: one Gaussian per class and member, a shared covariance."""

    def __init__(self) -> None:
        self.means: np.ndarray | None = None  # (M, C, D)
        self.precision_chol: np.ndarray | None = None  # (M, D, D): L with Sigma^-1 = L L^T
        self.log_prior: np.ndarray | None = None  # (C,)

    def fit(self, features: np.ndarray, labels: np.ndarray) -> "FeatureDensity":
        """Training faces' features ``(N, M, D)`` and their labels ``(N,)`` (``-1``: skipped)."""
        f = np.asarray(features, np.float64)
        y = np.asarray(labels)
        keep = y >= 0
        f, y = f[keep], y[keep]
        classes = int(y.max()) + 1
        n, m, d = f.shape
        means = np.stack([np.stack([f[y == c, j].mean(0) if np.any(y == c) else np.zeros(d) for c in range(classes)]) for j in range(m)])
        chols = []
        for j in range(m):
            r = f[:, j] - means[j, y]
            cov = r.T @ r / n
            cov += _RIDGE * np.trace(cov) / d * np.eye(d)
            chols.append(np.linalg.cholesky(np.linalg.inv(cov)))
        counts = np.bincount(y, minlength=classes).astype(float)
        self.means, self.precision_chol = means, np.stack(chols)
        self.log_prior = np.log(np.maximum(counts, 1) / counts.sum())
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        """Negative log density ``(N,)`` (up to a constant), averaged over members."""
        if self.means is None or self.precision_chol is None or self.log_prior is None:
            raise NotFittedError("FeatureDensity is not fitted: call fit(train_features, train_labels) first")
        f = np.asarray(features, np.float64)
        out = np.zeros(len(f))
        for j in range(f.shape[1]):
            z = (f[:, None, j] - self.means[j][None]) @ self.precision_chol[j]  # (N, C, D)
            logp = -0.5 * (z * z).sum(-1) + self.log_prior  # (N, C)
            top = logp.max(1)
            out -= top + np.log(np.exp(logp - top[:, None]).sum(1))
        return out / f.shape[1]

    def to_arrays(self) -> dict[str, np.ndarray]:
        if self.means is None:
            raise NotFittedError("FeatureDensity is not fitted")
        return {"means": self.means, "precision_chol": self.precision_chol, "log_prior": self.log_prior}  # type: ignore[dict-item]

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> "FeatureDensity":
        out = cls()
        out.means, out.precision_chol, out.log_prior = (np.asarray(a[k], np.float64) for k in ("means", "precision_chol", "log_prior"))
        return out


def pixel_stats(faces: np.ndarray) -> np.ndarray:
    """Image statistics of gray crops ``(N, H, W)`` uint8 -> ``(N, 6)``: mean level, contrast,
    log edge energy, log fine-detail energy (what a 3x3 box blur removes), log ratio of the
    two, and the share of clipped (near-black or near-white) pixels."""
    x = np.asarray(faces, np.float64) / 255.0
    mean = x.mean((1, 2))
    std = x.std((1, 2))
    gy, gx = np.diff(x, axis=1), np.diff(x, axis=2)
    edge = np.log(1e-4 + 0.5 * ((gy**2).mean((1, 2)) + (gx**2).mean((1, 2))))
    pad = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
    box = sum(pad[:, i : i + x.shape[1], j : j + x.shape[2]] for i in range(3) for j in range(3)) / 9
    fine = np.log(1e-5 + ((x - box) ** 2).mean((1, 2)))
    clipped = ((x <= 2 / 255) | (x >= 253 / 255)).mean((1, 2))
    return np.stack([mean, std, edge, fine, fine - edge, clipped], axis=1)


class PixelStats:
    """A Gaussian over :func:`pixel_stats` of training faces; score: squared Mahalanobis distance."""

    def __init__(self) -> None:
        self.mean: np.ndarray | None = None
        self.precision_chol: np.ndarray | None = None

    def fit(self, faces: np.ndarray) -> "PixelStats":
        s = pixel_stats(faces)
        cov = np.cov(s, rowvar=False)
        cov += _RIDGE * np.trace(cov) / len(cov) * np.eye(len(cov))
        self.mean, self.precision_chol = s.mean(0), np.linalg.cholesky(np.linalg.inv(cov))
        return self

    def score(self, faces: np.ndarray) -> np.ndarray:
        if self.mean is None or self.precision_chol is None:
            raise NotFittedError("PixelStats is not fitted: call fit(train_faces) first")
        z = (pixel_stats(faces) - self.mean) @ self.precision_chol
        return (z * z).sum(1)

    def to_arrays(self) -> dict[str, np.ndarray]:
        if self.mean is None:
            raise NotFittedError("PixelStats is not fitted")
        return {"mean": self.mean, "precision_chol": self.precision_chol}  # type: ignore[dict-item]

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> "PixelStats":
        out = cls()
        out.mean, out.precision_chol = np.asarray(a["mean"], np.float64), np.asarray(a["precision_chol"], np.float64)
        return out


def energy(logits: np.ndarray) -> np.ndarray:
    """Energy score ``(N,)`` from member logits ``(N, M, C)``: ``-logsumexp`` over classes,
    averaged over members (Liu et al., 2020); higher = less familiar."""
    lg = np.asarray(logits, np.float64)
    top = lg.max(-1)
    return -(top + np.log(np.exp(lg - top[..., None]).sum(-1))).mean(1)


def training_subset(labels: np.ndarray, n: int = 12000, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` training faces with a majority label, by a seeded permutation: the
    faces every input signal is fitted on (the same ones whoever fits them)."""
    return np.random.default_rng(seed).permutation(np.flatnonzero(np.asarray(labels) >= 0))[:n]


def fit_signals(names: tuple[str, ...] | list[str], train_images: np.ndarray, train_labels: np.ndarray) -> dict[str, PixelStats]:
    """Fit the named input signals (``'pixels'``) on FERPlus training faces."""
    idx = training_subset(train_labels)
    out: dict[str, PixelStats] = {}
    for name in names:
        if name != "pixels":
            raise ValueError(f"unknown input signal {name!r}; known: pixels")
        out[name] = PixelStats().fit(np.asarray(train_images)[idx])
    return out


def save_signals(directory: str | Path, signals: dict[str, PixelStats], note: str = "") -> Path:
    """Write the fitted input signals (``{'pixels': PixelStats}``) to ``directory/shift.json``."""
    out: dict[str, Any] = {"note": note}
    for name, sig in signals.items():
        out[name] = {k: np.asarray(v).tolist() for k, v in sig.to_arrays().items()}
    path = Path(directory) / SIGNALS_FILE
    path.write_text(json.dumps(out) + "\n")
    return path


def load_signals(directory: str | Path) -> dict[str, PixelStats]:
    """The input signals stored in ``directory/shift.json`` (``{}`` when there is none).
    Raises ``ValueError`` naming the file when it is damaged."""
    path = Path(directory) / SIGNALS_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        out = {"pixels": PixelStats.from_arrays(raw["pixels"])} if "pixels" in raw else {}
        for sig in out.values():
            if sig.mean is None or sig.precision_chol is None or sig.precision_chol.shape != (len(sig.mean), len(sig.mean)):
                raise ValueError("arrays of the wrong shape")
        return out
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: damaged shift signals ({type(exc).__name__}: {exc}); refit them with "
                         "`ferroute calibrate --shift ...` or scripts/select_shift_score.py --write") from None
