"""Label shift: adapt the ensemble to the emotion mix of a batch of faces.

FERPlus faces are 32 % neutral and under 2 % disgust or contempt; a posed-expression set
may hold no neutral face and 18 % disgust. A model trained on one mix carries it as a prior,
and on a set with another mix it errs towards its training mix (``docs/records/studies/ckplus_confusion.txt``).
When faces come as a batch from one source, the batch itself says what its mix is: the
maximum-likelihood estimate of the new class priors by EM (Saerens, Latinne and Decaestecker,
2002) on probabilities made calibrated first (bias-corrected temperature scaling; Alexandari,
Kundaje and Shrikumar, 2020, found this pair hard to beat), then Bayes' rule reweights each
member's probabilities by ``new prior / validation prior``.

The EM estimate is pulled towards the validation mix by ``pull`` pseudo-faces (a Dirichlet
prior): plain EM on a batch of 100 ordinary FERPlus faces moves its estimate far enough to
cost 2.4 points of accuracy, the pulled one 0.2. ``pull`` = 100 and ``min_faces`` = 100 were
chosen on validation faces resampled to random emotion mixes
(``docs/records/studies/label_shift.py``); CK+ is reported there, never used to choose.

Fit -> estimate -> reweight, each loud when out of order: :meth:`PriorAdapter.fit` on
validation member probabilities and vote distributions (``ferroute calibrate`` stores the
result as ``priors.json``), :meth:`PriorAdapter.estimate` on a batch, :meth:`PriorAdapter.reweight`
with that estimate. Hand-written (about 40 lines; numpy, and scipy to fit) rather than a
quantification library such as QuaPy, which would pull scikit-learn into the core install.
Shapes: member probabilities ``(N, M, C)``, mixes ``(C,)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .agreement import calibrate, softmax
from .shift import NotFittedError

PRIORS_FILE = "priors.json"


class PriorAdapter:
    """Estimate a batch's emotion mix and reweight member probabilities to it."""

    def __init__(self, pull: float = 100.0, min_faces: int = 100) -> None:
        if pull < 0 or min_faces < 1:
            raise ValueError(f"PriorAdapter needs pull >= 0 and min_faces >= 1, got {pull}, {min_faces}")
        self.pull, self.min_faces = float(pull), int(min_faces)
        self.temperature: float | None = None
        self.bias: np.ndarray | None = None  # (C,)
        self.source_mix: np.ndarray | None = None  # (C,) the calibrated validation faces' mean

    def fit(self, member_probs: np.ndarray, distributions: np.ndarray) -> PriorAdapter:
        """Fit the calibration (one temperature, a bias per class but the first) of the members'
        mean to validation vote distributions ``(N, C)``, and the validation mix it implies
        (fitting needs scipy's L-BFGS: the ``train`` extra; using a fitted adapter does not)."""
        from scipy.optimize import minimize

        logp = np.log(np.clip(np.asarray(member_probs, np.float64), 1e-8, None))
        target = np.asarray(distributions, np.float64)
        if logp.ndim != 3 or target.shape != (logp.shape[0], logp.shape[2]):
            raise ValueError(f"fit needs member probabilities (N, M, C) and distributions (N, C), got {tuple(logp.shape)} "
                             f"and {tuple(target.shape)}")
        n, m, _ = logp.shape

        def nll(x: np.ndarray) -> tuple[float, np.ndarray]:
            """The votes' cross-entropy and its gradient in ``x``: log T, then the biases of classes 1..C-1."""
            q = softmax(logp * np.exp(-x[0]) + np.r_[0.0, x[1:]])  # (N, M, C)
            mean = np.clip(q.mean(1), 1e-12, None)
            g = -(target / mean)[:, None, :] / (n * m)  # d loss / d q
            dz = q * (g - (q * g).sum(-1, keepdims=True))  # through the softmax
            grad = np.r_[-(dz * logp).sum() * np.exp(-x[0]), dz.sum((0, 1))[1:]]
            return float(-(target * np.log(mean)).sum(1).mean()), grad

        x = minimize(nll, np.zeros(logp.shape[2]), jac=True, method="L-BFGS-B", options={"maxiter": 500}).x
        self.temperature, self.bias = float(np.exp(x[0])), np.r_[0.0, x[1:]]
        self.source_mix = softmax(logp / self.temperature + self.bias).mean((0, 1))
        return self

    def _require(self) -> None:
        if self.source_mix is None:
            raise NotFittedError("PriorAdapter is not fitted: call fit(valid_member_probs, valid_distributions) first "
                                 "(ferroute calibrate stores it as priors.json)")

    def calibrate(self, member_probs: np.ndarray) -> np.ndarray:
        """Calibrated member probabilities ``(N, M, C)``."""
        self._require()
        return calibrate(member_probs, self.temperature, self.bias)

    def estimate(self, member_probs: np.ndarray, max_iter: int = 1000, tol: float = 1e-8) -> np.ndarray:
        """The batch's emotion mix ``(C,)``: MAP-EM on its calibrated ensemble means."""
        self._require()
        if len(member_probs) < self.min_faces:
            raise ValueError(f"estimating a batch's emotion mix needs at least {self.min_faces} faces, got "
                             f"{len(member_probs)}: route more faces together, or route without adapting")
        p, src = self.calibrate(member_probs).mean(1), self.source_mix
        q = src.copy()
        for _ in range(max_iter):
            w = p * (q / src)
            w /= w.sum(1, keepdims=True)
            new = (w.sum(0) + self.pull * src) / (len(p) + self.pull)
            done = np.abs(new - q).max() < tol
            q = new
            if done:
                break
        return q

    def reweight(self, member_probs: np.ndarray, mix: np.ndarray) -> np.ndarray:
        """Member probabilities ``(N, M, C)`` calibrated and moved from the validation mix to ``mix``."""
        self._require()
        mix = np.asarray(mix, np.float64)
        if mix.shape != self.source_mix.shape or np.any(mix < 0) or not np.isclose(mix.sum(), 1):
            raise ValueError(f"mix must be {self.source_mix.shape[0]} non-negative shares summing to 1, got {mix}")
        w = self.calibrate(member_probs) * (mix / self.source_mix)
        return (w / w.sum(-1, keepdims=True)).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        self._require()
        return {"pull": self.pull, "min_faces": self.min_faces, "temperature": self.temperature,
                "bias": [float(b) for b in self.bias], "source_mix": [float(s) for s in self.source_mix]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PriorAdapter:
        out = cls(d["pull"], d["min_faces"])
        out.temperature, out.bias, out.source_mix = float(d["temperature"]), np.asarray(d["bias"]), np.asarray(d["source_mix"])
        return out

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / PRIORS_FILE
        path.write_text(json.dumps(self.to_dict()) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> PriorAdapter | None:
        """The model's adapter, or None when it was calibrated before adapters existed."""
        path = Path(directory) / PRIORS_FILE
        if not path.is_file():
            return None
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: unreadable ({exc}); run `ferroute calibrate` again for this model") from None
