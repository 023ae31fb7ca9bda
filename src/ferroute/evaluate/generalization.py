"""Beyond FERPlus, for the evaluation report: what the router does with 48x48 non-face crops
(:mod:`ferroute.evaluate.nonface`) and with CK+ faces (accuracy per image and per subject, on
CK+'s own labels, decision shares, and after the emotion-mix adapter)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..decide.labelshift import PriorAdapter
from .ferplus import LabelledFaces

__all__ = ["generalization", "per_subject", "shares"]


def per_subject(right: np.ndarray, groups: np.ndarray) -> float:
    """Accuracy per subject, averaged over subjects (each subject counts once, however many faces)."""
    return float(np.mean([right[groups == g].mean() for g in np.unique(groups)]))


def shares(decisions: np.ndarray) -> dict[str, float]:
    return {k: float(np.mean(decisions == k)) for k in ("accept", "ambiguous", "reject")}


def generalization(probs_of: Any, decide: Any, ckplus: LabelledFaces | None, priors: PriorAdapter | None = None,
                    ck: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Beyond FERPlus: what the router does with 48x48 non-face crops, and, with CK+, accuracy
    (per image and per subject, averaged over subjects) and decision shares. ``probs_of(faces)``
    runs the ensemble ``(N, M, C)``; ``decide(probs, faces)`` the router; ``ck``: CK+'s
    probabilities and decisions when the caller has them already."""
    from .nonface import nonface_crops

    crops, kinds = nonface_crops()
    dec = decide(probs_of(crops), crops)
    kinds_arr = np.asarray(kinds)
    out: dict[str, Any] = {
        "nonface_rejected": float(np.mean(dec == "reject")),
        "nonface_shares": shares(dec),
        "nonface_rejected_by_kind": {k: float(np.mean(dec[kinds_arr == k] == "reject")) for k in dict.fromkeys(kinds)},
        "n_nonface": len(crops),
    }
    if ckplus is not None:
        probs, dec = ck if ck is not None else (probs_of(ckplus.images), None)  # once: for the accuracy and the decisions
        right = probs.mean(1).argmax(-1) == ckplus.labels
        dec = decide(probs, ckplus.images) if dec is None else dec
        kept = dec != "reject"
        own = np.unique(ckplus.labels)  # the emotions this set has (CK+: seven, no neutral)
        mean = probs.mean(1)
        right_own = own[mean[:, own].argmax(-1)] == ckplus.labels
        out.update({
            "ckplus_accuracy": float(right.mean()),
            "ckplus_accuracy_own_labels": float(right_own.mean()),
            "ckplus_own_labels": [int(k) for k in own],
            "ckplus_accuracy_per_subject": per_subject(right, ckplus.groups),
            "ckplus_accuracy_not_rejected": float(right[kept].mean()) if kept.any() else None,
            "ckplus_shares": shares(dec),
            "n_ckplus": int(len(right)),
            "n_ckplus_subjects": int(len(np.unique(ckplus.groups))),
        })
        if priors is not None and len(probs) >= priors.min_faces:  # moved to CK+'s own emotion mix, estimated from its unlabelled faces
            mix = priors.estimate(probs)
            adapted = priors.reweight(probs, mix)
            right = adapted.mean(1).argmax(-1) == ckplus.labels
            out.update({
                "ckplus_accuracy_adapted": float(right.mean()),
                "ckplus_accuracy_adapted_per_subject": per_subject(right, ckplus.groups),
                "ckplus_shares_adapted": shares(decide(adapted, ckplus.images)),
                "ckplus_mix_estimated": [round(float(q), 4) for q in mix],
            })
    return out
