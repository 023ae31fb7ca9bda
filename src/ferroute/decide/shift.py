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
* :class:`FaceLikeness`: whether the crop looks like a face at all, to the shipped YuNet
  face detector (1 - its best face score on the crop, enlarged and framed by its own edge
  pixels). A crop given as a face skips detection; this puts the detector's question
  back to it, so a brick wall or a page of text is unfamiliar whatever the members say.

Each is fitted once (on training faces, never on validation or test). A model folder keeps
the signals its router needs in ``shift.json`` (:func:`save_signals`, :func:`load_signals`;
plain numbers, no pickle). Higher scores mean less familiar.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np

SIGNALS_FILE = "shift.json"
_RIDGE = 1e-3  # added to covariance diagonals, relative to their mean variance


class NotFittedError(RuntimeError):
    """A shift signal was scored before ``fit``."""


class Signal(Protocol):
    """An input signal: gray crops ``(N, H, W)`` uint8 -> scores ``(N,)``, higher = less familiar."""

    def score(self, faces: np.ndarray) -> np.ndarray: ...

    def to_arrays(self) -> dict[str, np.ndarray]: ...


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


class FaceLikeness:
    """How little a crop looks like a face to YuNet: ``1 - `` its best face score ``(N,)``.

    Each crop is enlarged to ``size`` pixels and framed by ``pad`` of that on every side
    with its own edge pixels (YuNet finds faces with some context around them, and a tight
    48x48 crop has none). Nothing to fit: the router calibrates its percentile on clean
    validation faces like any other part. At 64 px in a 128 px frame a crop costs about
    0.6 ms on the 2-core test machine (``scripts/select_shift_score.py`` times it).
    """

    def __init__(self, size: int = 64, pad: float = 0.5) -> None:
        if size < 16 or not 0 <= pad <= 2:
            raise ValueError(f"FaceLikeness needs size >= 16 and 0 <= pad <= 2, got {size}, {pad}")
        self.size, self.pad = int(size), float(pad)
        self._yunet: Any = None  # built on first use: a model that never scores a crop never loads it

    def _detector(self) -> Any:
        if self._yunet is None:
            from ..vision.faces import ThreadYuNet

            self._yunet = ThreadYuNet(score_threshold=0.01, top_k=20)
        side = self.size + 2 * int(self.size * self.pad)
        return self._yunet.get(side, side)

    def score(self, faces: np.ndarray) -> np.ndarray:
        import cv2

        det, p = self._detector(), int(self.size * self.pad)
        out = np.ones(len(faces))
        for i, face in enumerate(np.asarray(faces, np.uint8)):
            big = cv2.resize(face, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
            framed = cv2.cvtColor(cv2.copyMakeBorder(big, p, p, p, p, cv2.BORDER_REPLICATE), cv2.COLOR_GRAY2BGR)
            found = det.detect(framed)[1]
            if found is not None and len(found):
                out[i] = 1.0 - float(found[:, -1].max())
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"size": np.asarray(self.size), "pad": np.asarray(self.pad)}

    @classmethod
    def from_arrays(cls, a: dict[str, Any]) -> "FaceLikeness":
        return cls(int(np.asarray(a["size"])), float(np.asarray(a["pad"])))


def blockiness(faces: np.ndarray, periods: range = range(4, 17)) -> np.ndarray:
    """How strongly a gray crop ``(N, H, W)`` uint8 shows a block grid, ``(N,)``: for each
    period from 4 to 16 pixels, the mean gradient on the grid's best-placed lines against the
    mean gradient everywhere (log ratio, columns and rows averaged), the largest over periods.

    Block compression (JPEG's 8x8 DCT, video codecs' 4x4 to 16x16 blocks) leaves steps on a
    regular grid and smooth blocks between them; a face's own edges fall on no grid. Built
    generic over periods and placements (a crop cut from a compressed photo has any phase)."""
    x = np.asarray(faces, np.float64) / 255.0
    gx = np.abs(np.diff(x, axis=2)).mean(1)  # (N, W-1): mean step between columns c and c+1
    gy = np.abs(np.diff(x, axis=1)).mean(2)  # (N, H-1)
    out = np.full(len(x), -np.inf)
    for p in periods:
        both = np.zeros(len(x))
        for g in (gx, gy):
            pos = np.arange(g.shape[1]) % p
            base = g.mean(1) + 1e-4
            both += np.log(np.max([g[:, pos == ph].mean(1) for ph in range(min(p, g.shape[1]))], axis=0) / base + 1e-9)
        out = np.maximum(out, both / 2)
    return out


class ImageStatistics:
    """The crop's :func:`pixel_stats` ``(N, 6)``, and since 0.3.1 its :func:`blockiness` as a
    seventh column ``(N, 7)``: the inputs of a learned reject score (:class:`LearnedScore`),
    which weighs each; nothing to fit. ``columns`` (6 or 7) is stored, so a model calibrated
    before blockiness existed reads the six it was fitted on."""

    def __init__(self, columns: int = 7) -> None:
        if columns not in (6, 7):
            raise ValueError(f"image statistics have 6 or 7 columns, not {columns}")
        self.columns = columns

    def score(self, faces: np.ndarray) -> np.ndarray:
        s = pixel_stats(faces)
        return s if self.columns == 6 else np.column_stack([s, blockiness(faces)])

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"columns": np.asarray(self.columns)}

    @classmethod
    def from_arrays(cls, a: dict[str, Any]) -> "ImageStatistics":
        return cls(int(np.asarray(a.get("columns", 6))))


#: the input signals by name, and how each is built from its stored arrays
SIGNAL_TYPES: dict[str, Any] = {"pixels": PixelStats, "face": FaceLikeness, "stats": ImageStatistics}


def _feature_names(n_stats: int) -> tuple[str, ...]:
    """A learned score's features over ``n_stats`` image statistics, in order."""
    return ("log_epistemic", "face", *(f"stat{i}" for i in range(n_stats)), *(f"stat{i}_sq" for i in range(n_stats)))


class LearnedScore:
    """A reject score learned from the signals the pipeline already has: logistic regression
    over the log epistemic uncertainty, face-likeness (:class:`FaceLikeness`) and the crop's
    image statistics (:class:`ImageStatistics`: six, or seven with blockiness) with their squares (exposure and blur shift both ways), each
    standardised on clean faces. Higher = less like a clean FERPlus face (its logit).

    Fitted on clean validation faces (0) against the same faces under the held-out shift
    family and validation non-face crops (1); clean faces, shifted faces and non-faces weigh
    1/2, 1/4 and 1/4; with an L2 penalty; stored as
    plain numbers in ``router.json``. Every input's contribution (weight x standardised value,
    relative to clean faces) says which signal moved a rejection most."""

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None, weights: np.ndarray | None = None,
                 bias: float = 0.0, l2: float = 1e-2):
        self.mean, self.std, self.weights, self.bias, self.l2 = mean, std, weights, float(bias), float(l2)

    feature_names = staticmethod(_feature_names)
    #: the features of a score over six statistics, in order (:meth:`feature_names` for any count)
    FEATURES = _feature_names(6)

    @property
    def names(self) -> tuple[str, ...]:
        """This fitted score's features, in order."""
        return self.feature_names(len(self.mean) - 2 if self.mean is not None else 6)

    @staticmethod
    def group(feature: str) -> str:
        return "epistemic" if feature == "log_epistemic" else "face" if feature == "face" else "pixels"

    @staticmethod
    def raw(d: dict[str, np.ndarray]) -> np.ndarray:
        """The unstandardised inputs ``(N, 2 + S)``: log epistemic, face, the ``S`` image statistics."""
        stats = np.asarray(d["stats"], np.float64)
        return np.column_stack([np.log(np.asarray(d["epistemic"], np.float64) + 1e-6), np.asarray(d["face"], np.float64), stats])

    def features(self, d: dict[str, np.ndarray], clean_raw: np.ndarray | None = None) -> np.ndarray:
        """Standardised features ``(N, 2 + 2 S)`` (fitting: pass the clean faces' raw inputs to set the scale)."""
        x = self.raw(d)
        if clean_raw is not None:
            self.mean, self.std = clean_raw.mean(0), clean_raw.std(0) + 1e-9
        if x.shape[1] != len(self.mean):
            raise ValueError(f"the learned score was fitted on {len(self.mean) - 2} image statistics but got {x.shape[1] - 2}: "
                             "the model's shift.json and router.json disagree; recalibrate with scripts/select_shift_score.py --write")
        z = (x - self.mean) / self.std
        return np.column_stack([z, z[:, 2:] ** 2])

    def fit(self, clean: dict[str, np.ndarray], shifted: dict[str, np.ndarray],
            nonface: dict[str, np.ndarray] | None = None) -> "LearnedScore":
        """Logistic regression of shifted faces and non-faces (1) against clean faces (0); needs
        scipy (the ``train`` extra). Clean faces weigh half; with ``nonface``, the non-faces weigh
        as much as all shifted faces together (a quarter each), as in the selection rule, so a
        few thousand non-faces are not drowned by a hundred thousand shifted faces."""
        from scipy.optimize import minimize

        xc = self.features(clean, clean_raw=self.raw(clean))
        parts = [self.features(shifted)] + ([self.features(nonface)] if nonface is not None else [])
        x = np.vstack([xc, *parts])
        y = np.r_[np.zeros(len(xc)), np.ones(sum(len(p) for p in parts))]
        share = 0.5 / len(parts)
        w = np.concatenate([np.full(len(xc), 0.5 / len(xc)), *[np.full(len(p), share / len(p)) for p in parts]])

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            z = x @ theta[:-1] + theta[-1]
            p = 1 / (1 + np.exp(-np.clip(z, -40, 40)))
            ll = -(w * (y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12))).sum() + self.l2 * (theta[:-1] ** 2).sum()
            g = x.T @ (w * (p - y)) + 2 * self.l2 * theta[:-1]
            return ll, np.r_[g, (w * (p - y)).sum()]

        res = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B")
        self.weights, self.bias = res.x[:-1], float(res.x[-1])
        return self

    def score(self, d: dict[str, np.ndarray]) -> np.ndarray:
        """The logit ``(N,)``."""
        if self.weights is None:
            raise NotFittedError("LearnedScore is not fitted: fit(clean_signals, shifted_signals) first")
        return self.features(d) @ self.weights + self.bias

    def top_group(self, d: dict[str, np.ndarray]) -> np.ndarray:
        """Per input, the signal group (``epistemic``, ``face``, ``pixels``) that raised its score most."""
        contrib = self.features(d) * self.weights  # (N, 2 + 2 S): relative to a clean face at the mean (features 0)
        groups = np.array([self.group(f) for f in self.names])
        totals = np.stack([contrib[:, groups == g].sum(1) for g in ("epistemic", "face", "pixels")], axis=1)
        return np.array(["epistemic", "face", "pixels"])[totals.argmax(1)]

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.names), "mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
                "weights": [float(v) for v in self.weights], "bias": self.bias, "l2": self.l2}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LearnedScore":
        out = cls(np.asarray(d["mean"], np.float64), np.asarray(d["std"], np.float64), np.asarray(d["weights"], np.float64),
                  float(d["bias"]), float(d.get("l2", 1e-2)))
        n = len(out.mean)
        if n not in (8, 9) or out.std.shape != (n,) or out.weights.shape != (2 * n - 2,) or not np.all(np.isfinite(out.weights)):
            raise ValueError("the learned score needs 8 (or 9) means, as many scales and 14 (or 16) finite weights")
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


def fit_signals(names: tuple[str, ...] | list[str], train_images: np.ndarray | None = None,
                train_labels: np.ndarray | None = None, n: int = 12000) -> dict[str, Signal]:
    """The named input signals (``'pixels'``, ``'face'``): ``pixels`` fitted on ``n`` FERPlus
    training faces (:func:`training_subset`, so the training data is needed only for it);
    ``face`` needs no fitting."""
    out: dict[str, Signal] = {}
    for name in names:
        if name not in SIGNAL_TYPES:
            raise ValueError(f"unknown input signal {name!r}; known: {', '.join(SIGNAL_TYPES)}")
        if name == "face":
            out[name] = FaceLikeness()
            continue
        if name == "stats":
            out[name] = ImageStatistics()
            continue
        if train_images is None or train_labels is None:
            raise ValueError("the pixels signal is fitted on training faces: pass train_images and train_labels")
        out[name] = PixelStats().fit(np.asarray(train_images)[training_subset(train_labels, n)])
    return out


def save_signals(directory: str | Path, signals: dict[str, Signal], note: str = "") -> Path:
    """Write the fitted input signals (``{'pixels': PixelStats, ...}``) to ``directory/shift.json``."""
    out: dict[str, Any] = {"note": note}
    for name, sig in signals.items():
        out[name] = {k: np.asarray(v).tolist() for k, v in sig.to_arrays().items()}
    path = Path(directory) / SIGNALS_FILE
    path.write_text(json.dumps(out) + "\n")
    return path


def load_signals(directory: str | Path) -> dict[str, Signal]:
    """The input signals stored in ``directory/shift.json`` (``{}`` when there is none).
    Raises ``ValueError`` naming the file when it is damaged."""
    path = Path(directory) / SIGNALS_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        out: dict[str, Signal] = {k: t.from_arrays(raw[k]) for k, t in SIGNAL_TYPES.items() if k in raw}
        pix = out.get("pixels")
        if isinstance(pix, PixelStats) and (pix.mean is None or pix.precision_chol is None
                                            or pix.precision_chol.shape != (len(pix.mean), len(pix.mean))):
            raise ValueError("arrays of the wrong shape")
        return out
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: damaged shift signals ({type(exc).__name__}: {exc}); refit them with "
                         "`ferroute calibrate --shift ...` or scripts/select_shift_score.py --write") from None
