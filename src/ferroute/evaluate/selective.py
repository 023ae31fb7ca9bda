"""Selective prediction, for the evaluation report: accuracy and share of each decision,
the area under the risk-coverage curve of each scorer, and what a plain max-probability
threshold reaches at the coverage of ``accept``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..decide.uncertainty import entropy
from .metrics import aurc, risk_coverage

__all__ = ["SCORERS", "selective", "selective_inputs"]


#: Scorers of the selective-prediction section: higher = more confident, kept first.
SCORERS = ("uar", "max_prob", "neg_total_entropy", "ldl_max_prob")
_TIER = {"accept": 2.0, "ambiguous": 1.0, "reject": 0.0}


def selective_inputs(probs: np.ndarray, agree: np.ndarray, decisions: np.ndarray, labels: np.ndarray,
                      ldl_probs: np.ndarray | None) -> dict[str, np.ndarray]:
    """Per labelled face: correct top emotion, decision and each scorer's confidence. UAR's
    confidence keeps accepted faces first, then ambiguous, then rejected, each by agreement."""
    keep = np.asarray(labels) >= 0
    mean = probs.mean(1)
    out = {"correct": (mean.argmax(-1) == labels)[keep], "decision": np.asarray(decisions, object)[keep],
           "uar": (np.array([_TIER[str(d)] for d in decisions]) + np.asarray(agree))[keep],
           "max_prob": mean.max(-1)[keep], "neg_total_entropy": -entropy(mean)[keep]}
    if ldl_probs is not None:
        out["ldl_max_prob"] = ldl_probs.max(-1)[keep]
        out["ldl_correct"] = (ldl_probs.argmax(-1) == labels)[keep]
    return out


def selective(x: dict[str, np.ndarray]) -> dict[str, Any]:
    """Accuracy and share of each decision, AURC of each scorer, and what a plain max-probability
    threshold reaches at the coverage of ``accept``."""
    correct, dec = x["correct"], x["decision"]
    per = {k: {"share": float(np.mean(dec == k)), "accuracy": float(correct[dec == k].mean()) if np.any(dec == k) else None}
           for k in ("accept", "ambiguous", "reject")}
    curves = {k: x[k] for k in SCORERS if k in x}
    out: dict[str, Any] = {
        "n": int(len(correct)),
        "accuracy_all": float(correct.mean()),
        "decisions": per,
        "aurc": {k: aurc(v, x["ldl_correct"] if k == "ldl_max_prob" else correct) for k, v in curves.items()},
    }
    cov = per["accept"]["share"]
    if cov > 0:
        k = max(1, int(round(cov * len(correct))))
        order = np.argsort(-x["max_prob"], kind="stable")[:k]
        out["max_prob_at_accept_coverage"] = {"coverage": k / len(correct), "accuracy": float(correct[order].mean())}
    grid = np.linspace(0.05, 1.0, 20)
    out["risk_coverage"] = {}
    for name, conf in curves.items():
        c, r = risk_coverage(conf, x["ldl_correct"] if name == "ldl_max_prob" else correct)
        out["risk_coverage"][name] = [round(float(np.interp(g, c, r)), 4) for g in grid]
    out["risk_coverage"]["coverage"] = [round(float(g), 2) for g in grid]
    return out
