"""Uncertainty-Aware Routing (UAR) and the single-score baseline, with the fit -> route order enforced.

UAR asks two questions in order:

1. *Is the input out of distribution?* Its epistemic uncertainty is compared with that of
   in-distribution faces **of similar ambiguity**: ambiguous faces carry more epistemic
   uncertainty even when familiar, so a single epistemic threshold would reject them as
   shifted. The shift score is the standardised residual
   ``z = (log eps - mu(a)) / sd(a)``, where ``mu`` and ``sd`` are the mean and spread of
   ``log eps`` among validation faces of aleatoric level ``a`` (quantile bins, linearly
   interpolated). ``z`` above its threshold -> ``reject``.
2. *Would people disagree about it?* Its ``agreement``, the vote-calibrated predicted share
   of people who would pick its top emotion (:mod:`ferroute.decide.agreement`), below the
   ambiguity level (default 0.6: no clear majority) -> ``ambiguous``. Otherwise -> ``accept``. (A router calibrated before
   agreement existed flags aleatoric above its threshold instead.)

The reject (shift) score is one of :data:`UncertaintyRouter.SHIFT_SCORES`: ``epistemic``
(the paper's), ``conditional`` (the z above), ``pixels`` (how unusual the crop's image
statistics are, :class:`ferroute.decide.shift.PixelStats`; the pipeline passes it in as the
signal ``pixels``), ``face`` (how little the crop looks like a face to the face detector,
:class:`ferroute.decide.shift.FaceLikeness`), or a union such as ``epistemic+pixels+face``: reject
when *any* part is unusual, i.e. on the larger of the parts' percentiles among validation faces. Which one
ships is chosen on validation faces under held-out corruptions
(``scripts/select_shift_score.py``).

Calibration rule (on clean FERPlus validation faces, which are in distribution):
the reject threshold is the split-conformal quantile of the shift score: the
``ceil((n + 1)(1 - reject_rate))``-th smallest of the ``n`` validation scores. For a new face
exchangeable with them (drawn like the validation faces), the chance that it is rejected
is then at most ``reject_rate`` (default 5 %), averaged over calibration draws; and with 95 %
confidence over the draw of the validation faces, this router's own false-reject rate is at
most ``guarantee()["reject_rate_upper_95"]`` (the Beta(n + 1 - k, k) law of a conformal
quantile; about 5.6 % for FERPlus's 3,579 validation faces). The vote calibration (a
temperature and a bias per emotion) is fitted on the same faces' vote distributions
(:mod:`ferroute.decide.agreement`); the ambiguity level is stated in words, not fitted: no clear
majority, fewer than 3 in 5 people would pick the top emotion (0.6). Users may set their own
level (``ambiguous_below``). The aleatoric threshold (the value that best
separates the faces whose annotator disagreement is in the top third) is kept for reference.

The single-score baseline routes on total entropy alone: reject above the same conformal
quantile of validation total entropy, accept otherwise.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import agreement as agr
from .agreement import AgreementReading
from .conformal import (  # noqa: F401  (SingleScoreRouter, beta_ppf: re-exported for older imports)
    NotCalibratedError,
    SingleScoreRouter,
    _as_decomposition,
    beta_ppf,
    conformal_guarantee,
    conformal_rank,
    percentile_in,
)
from .shiftscore import ShiftScoring
from .reasons import face_reports, keep_reason, reject_reason  # noqa: F401  (the reasons: re-exported)
from .uncertainty import Decomposition, decompose  # noqa: F401  (decompose: re-exported)

class UncertaintyRouter(ShiftScoring, AgreementReading):
    """UAR: reject on a shift score, then flag ambiguity, else accept."""

    kind = "uar"

    def __init__(self, reject_rate: float = 0.05, n_bins: int = 10, shift: str = "conditional"):
        if not 0 < reject_rate < 1:
            raise ValueError(f"reject_rate must be in (0, 1), got {reject_rate}")
        if shift not in self.SHIFT_SCORES:
            raise ValueError(f"shift must be one of {self.SHIFT_SCORES}, got {shift!r}")
        self.reject_rate = reject_rate
        self.n_bins = n_bins
        self.shift = shift
        self._state: dict[str, Any] | None = None
        self._level: float | None = None  # the user's ambiguity level (ambiguous_below)
        #: the learned reject score (``shift='learned'``), fitted outside the router on shifted data
        self.learned: Any = None
        #: how the shift score was chosen (written by scripts/select_shift_score.py), or None
        self.selection: dict[str, Any] | None = None

    @property
    def is_fitted(self) -> bool:
        return self._state is not None

    def _require(self) -> dict[str, Any]:
        if self._state is None:
            raise NotCalibratedError(
                "router is not calibrated: call router.fit(valid_probs, valid_disagreement) "
                "on in-distribution validation faces before routing"
            )
        return self._state

    def fit(self, probs: np.ndarray | Decomposition, disagreement: np.ndarray, votes: np.ndarray | None = None,
            reference: Decomposition | None = None) -> "UncertaintyRouter":
        """Calibrate on clean validation faces: member probabilities ``(N, M, C)`` (or their
        decomposition, with any signal the shift score needs, e.g. ``pixels``) and the
        annotators' disagreement ``(N,)`` (vote entropy); with ``votes``, their vote
        distributions ``(N, C)`` and member probabilities, also the agreement
        (:meth:`fit_agreement`).

        A shift score learned from data (the conditional z's bins, a union's percentiles)
        learns on one half of the faces (a seeded split) and the conformal threshold is set on
        the other, so the threshold's promise holds exactly; plain epistemic or pixels use all.
        With ``reference`` (the same signals of *other* clean validation faces, none of them
        among these), the learned parts learn on it and every face here sets the threshold:
        twice the calibration faces, so a tighter promise."""
        d = self._signals(probs)
        a = np.asarray(d["aleatoric"], float)
        dis = np.asarray(disagreement, float)
        if len(a) != len(dis):
            raise ValueError(f"{len(a)} faces but {len(dis)} disagreement values")
        if len(a) < 4 * self.n_bins:
            raise ValueError(f"need at least {4 * self.n_bins} validation faces to calibrate, got {len(a)}")
        if "learned" in self.parts and self.learned is None:
            raise NotCalibratedError("shift 'learned' needs its LearnedScore (ferroute.decide.shift) set on router.learned before fit: "
                                     "it is fitted on shifted faces, which fit does not see (scripts/select_shift_score.py does both)")
        learned = "conditional" in self.parts or len(self.parts) > 1
        order = np.random.default_rng(0).permutation(len(a))
        learn, held = (order[: len(a) // 2], order[len(a) // 2 :]) if learned and reference is None else (order, order)

        def pick(idx: np.ndarray) -> dict[str, np.ndarray]:
            return {k: np.asarray(v, float)[idx] for k, v in d.items()}

        learn_on = pick(learn) if reference is None else {k: np.asarray(v, float) for k, v in self._signals(reference).items()}

        self._state = {}
        self._fit_shift_parts(learn_on)
        z = self.shift_score(pick(held))
        k = conformal_rank(len(z), self.reject_rate)
        self._state["z_threshold"] = float(np.sort(z)[k - 1]) if k <= len(z) else float("inf")
        self._state["conformal"] = {"n": len(z), "rank": k}
        z_all = self.shift_score(d)
        self._state["epistemic_reference"] = np.sort(np.asarray(d["epistemic"], float)).tolist()
        self._state["aleatoric_reference"] = np.sort(a).tolist()
        self._state["total_reference"] = np.sort(np.asarray(d["total"], float)).tolist()
        self._state["z_reference"] = np.sort(z_all).tolist()
        for p in self.needs:
            if np.ndim(d[p]) == 1:  # a per-face signal; the image statistics are inputs of the learned score
                self._state[f"{p}_reference"] = np.sort(np.asarray(d[p], float)).tolist()
        top = dis >= np.quantile(dis, 2 / 3)
        cand = np.unique(np.quantile(a, np.linspace(0.05, 0.95, 181)))
        bal = [0.5 * (np.mean(a[top] > t) + np.mean(a[~top] <= t)) for t in cand]
        self._state["aleatoric_threshold"] = float(cand[int(np.argmax(bal))])
        if votes is not None:
            self.fit_agreement(probs, votes)  # type: ignore[arg-type]
        return self

    @property
    def thresholds(self) -> dict[str, float]:
        st = self._require()
        out = {"shift_z": st["z_threshold"], "aleatoric": st["aleatoric_threshold"]}
        if self.has_agreement:
            out["ambiguous_below"] = self.ambiguous_below
        return out

    def guarantee(self) -> dict[str, Any]:
        """What the reject threshold promises for in-distribution faces (JSON-able)."""
        st = self._require()
        if st.get("site_promise"):  # re-made on a site's own photos (ferroute calibrate-site)
            return dict(st["site_promise"])
        c = st.get("conformal")
        if c is None:  # calibrated before conformal thresholds (a plain quantile)
            return {"reject_rate": self.reject_rate, "kind": "empirical quantile", "n": len(st["z_reference"])}
        return conformal_guarantee(c["n"], c["rank"], self.reject_rate)

    def percentile(self, name: str, values: np.ndarray) -> np.ndarray:
        """Percentile (0-100) of ``values`` among validation faces for score ``name``."""
        return 100.0 * percentile_in(self._require()[f"{name}_reference"], values)

    def decide(self, probs: np.ndarray | Decomposition, score: np.ndarray | None = None, agree: np.ndarray | None = None) -> np.ndarray:
        """Decisions ``(B,)`` of ``'accept' | 'ambiguous' | 'reject'``; ``score``: the
        :meth:`shift_score` of the same inputs when the caller has it already; ``agree``: their
        agreement ``(B,)`` (needed, with a vote-calibrated router, when ``probs`` is a decomposition)."""
        st = self._require()
        d = self._signals(probs)
        z = self.shift_score(d) if score is None else score
        if self.has_agreement:
            if agree is None and isinstance(probs, dict):
                if "agreement" not in probs:
                    raise ValueError("this router reads ambiguity from agreement: pass agree=, a decomposition with "
                                     "'agreement', or member probabilities")
                agree = probs["agreement"]
            elif agree is None:
                agree = agr.agreement(self.calibrated(np.asarray(probs)))
            # on the agreement as reported (4 decimals), so the decision never contradicts the number shown
            out = np.where(np.round(np.asarray(agree, float), 4) < self.ambiguous_below, "ambiguous", "accept").astype(object)
        else:
            out = np.where(np.asarray(d["aleatoric"]) > st["aleatoric_threshold"], "ambiguous", "accept").astype(object)
        out[z > st["z_threshold"]] = "reject"
        return out

    def route(self, probs: np.ndarray, labels: tuple[str, ...] | list[str], signals: dict[str, np.ndarray] | None = None) -> list[dict[str, Any]]:
        """Full JSON-able reports for member probabilities ``(B, M, C)``, one dict per input;
        ``signals``: what the shift score needs beside them (``{'pixels': (B,)}``)
        (:func:`ferroute.decide.reasons.face_reports`)."""
        return face_reports(self, probs, labels, signals)

    def use_site_threshold(self, site: dict[str, Any]) -> None:
        """Reject on a site's own conformal threshold (``ferroute calibrate-site``) instead of the
        one set on FERPlus validation faces; the promise is then the site's."""
        st = self._require()
        st["z_threshold"] = float(site["z_threshold"])
        st["conformal"] = {"n": int(site["n_faces"]), "rank": int(site["rank"])}
        st["site_promise"] = site.get("promise")
        self.reject_rate = float(site["reject_rate"])

    def to_dict(self) -> dict[str, Any]:
        st = self._require()
        if self.learned is not None:
            st = {**st, "learned": self.learned.to_dict()}
        d = {"kind": self.kind, "reject_rate": self.reject_rate, "n_bins": self.n_bins, "shift": self.shift, "state": st}
        return d if self.selection is None else {**d, "selection": self.selection}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UncertaintyRouter":
        """A router from its stored form, checked for sense: every threshold a finite number
        (``ValueError`` naming the key and the value otherwise)."""
        if not isinstance(d, dict) or not isinstance(d.get("state"), dict):
            raise ValueError(f"a router is an object with a 'state' object, got {type(d).__name__}"
                             + ("" if not isinstance(d, dict) else f" with state {type(d.get('state')).__name__}"))
        r = cls(reject_rate=_number(d, "reject_rate"), n_bins=int(_number(d, "n_bins")), shift=str(d.get("shift", "conditional")))
        st = _checked_state(d["state"])
        if "learned" in st:
            from .shift import LearnedScore

            r.learned = LearnedScore.from_dict(st.pop("learned"))
        elif "learned" in r.parts:
            raise ValueError(f"shift {r.shift!r} but no learned score in the state")
        r._state = st
        r.selection = d.get("selection")
        return r


def _number(d: dict[str, Any], key: str, allow_inf: bool = False) -> float:
    """``d[key]`` as a float, refused unless it is a real number (not a string, null, bool or NaN)."""
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{key} must be a finite number, got {v!r}")
    return float(v)


def _checked_state(state: dict[str, Any]) -> dict[str, Any]:
    """A copy of a stored router state whose thresholds are finite numbers and whose vote
    calibration makes sense (``ValueError`` naming the key and the value otherwise)."""
    st = dict(state)
    for key in ("z_threshold", "aleatoric_threshold"):
        _number(st, key, allow_inf=key == "z_threshold")
    if st.get("vote_temperature") is not None or st.get("ambiguous_below") is not None:
        if _number(st, "vote_temperature") <= 0:
            raise ValueError(f"vote_temperature must be positive, got {st['vote_temperature']!r}")
        if not 0 < _number(st, "ambiguous_below") < 1:
            raise ValueError(f"ambiguous_below must be between 0 and 1, got {st['ambiguous_below']!r}")
        bias = st.get("vote_bias")
        if bias is not None and (not isinstance(bias, list) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in bias)):
            raise ValueError(f"vote_bias must be a list of finite numbers, one per emotion, got {bias!r}")
    return st
