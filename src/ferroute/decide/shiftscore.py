"""The reject (shift) score a router compares with its threshold: which parts it has, what
each part reads, and how a union of parts joins them (the larger of their percentiles among
validation faces). A mixin of :class:`ferroute.decide.routing.UncertaintyRouter`, which holds
the state (``self._state``) and the learned score (``self.learned``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .conformal import _as_decomposition, percentile_in
from .uncertainty import Decomposition

_LOG_EPS = 1e-6


def _fit_bins(d: dict[str, np.ndarray], n_bins: int) -> dict[str, list[float]]:
    """The conditional z's reference: mean and spread of log epistemic per aleatoric bin."""
    a = d["aleatoric"]
    le = np.log(d["epistemic"] + _LOG_EPS)
    edges = np.quantile(a, np.linspace(0, 1, n_bins + 1))
    which = np.clip(np.searchsorted(edges, a, side="right") - 1, 0, n_bins - 1)
    centers, mus, sds = [], [], []
    for b in range(n_bins):
        sel = which == b
        centers.append(float(np.median(a[sel])))
        mus.append(float(np.mean(le[sel])))
        sds.append(float(max(np.std(le[sel]), 1e-3)))
    return {"centers": centers, "mu": mus, "sd": sds}


class ShiftScoring:
    """The shift score's parts and their values ``(B,)``; higher = less like validation faces."""

    shift: str
    n_bins: int
    learned: Any
    _state: dict[str, Any] | None

    SHIFT_SCORES = ("epistemic", "conditional", "pixels", "face", "epistemic+pixels", "conditional+pixels", "epistemic+face",
                    "epistemic+pixels+face", "conditional+pixels+face", "learned", "learned+face")
    #: signals a shift score needs besides the decomposition, computed upstream from the crop
    SIGNALS = ("pixels", "face", "stats")
    #: the signals each part needs (a part not named here needs only the decomposition)
    PART_NEEDS = {"pixels": ("pixels",), "face": ("face",), "learned": ("face", "stats")}

    def _require(self) -> dict[str, Any]:  # the router's: its state, or NotCalibratedError
        raise NotImplementedError

    def percentile(self, name: str, values: np.ndarray) -> np.ndarray:  # the router's
        raise NotImplementedError

    @property
    def parts(self) -> tuple[str, ...]:
        """The shift score's parts: ``('epistemic', 'pixels')`` for ``epistemic+pixels``."""
        return tuple(self.shift.split("+"))

    @property
    def needs(self) -> tuple[str, ...]:
        """Signals this router needs in its input besides the decomposition (e.g. ``('pixels',)``)."""
        return tuple(dict.fromkeys(n for p in self.parts for n in self.PART_NEEDS.get(p, ())))

    def _signals(self, probs: np.ndarray | Decomposition) -> dict[str, np.ndarray]:
        d = _as_decomposition(probs)
        missing = [k for k in self.needs if k not in d]
        if missing:
            raise ValueError(f"shift score {self.shift!r} needs the signal(s) {missing} beside the decomposition: pass "
                             "decompose(probs) | {'pixels': PixelStats.score(faces), ...} (ferroute.decide.shift), as FERRouter does")
        return d  # type: ignore[return-value]

    def _fit_shift_parts(self, learn_on: dict[str, np.ndarray]) -> None:
        """Learn what the parts learn from clean validation signals: the conditional z's bins,
        a union's per-part reference (its percentiles)."""
        if "conditional" in self.parts:
            self._state.update(_fit_bins(learn_on, self.n_bins))
        if len(self.parts) > 1:
            self._state["union_reference"] = {p: np.sort(self._part(p, learn_on)).tolist() for p in self.parts}

    def _part(self, name: str, d: Any) -> np.ndarray:
        """One part of the shift score, higher = less like the validation faces."""
        if name == "learned":
            return self.learned.score(d)
        if name == "conditional":
            st = self._require()
            a = np.asarray(d["aleatoric"], float)
            le = np.log(np.asarray(d["epistemic"], float) + _LOG_EPS)
            return (le - np.interp(a, st["centers"], st["mu"])) / np.interp(a, st["centers"], st["sd"])
        return np.asarray(d[name], float)

    def _part_percentiles(self, d: Any) -> dict[str, np.ndarray]:
        """Each part's percentile (0-1) among the validation faces it was learned on, ``(B,)``
        each: what a union compares. ``{part: percentile of the score}`` for a single part."""
        st = self._require()
        if len(self.parts) == 1:
            return {self.parts[0]: self.percentile("z", self._part(self.parts[0], d)) / 100}
        return {p: percentile_in(st["union_reference"][p], self._part(p, d)) for p in self.parts}

    def shift_score(self, probs: np.ndarray | Decomposition) -> np.ndarray:
        """Shift score ``(B,)``, higher = less like training faces: one part's value, or for a
        union the largest of its parts' percentiles (0-1) among validation faces."""
        self._require()
        d = self._signals(probs)
        if len(self.parts) == 1:
            return self._part(self.parts[0], d)
        return np.max(list(self._part_percentiles(d).values()), axis=0)
