"""Selective prediction for the report: shares, accuracies and curves from per-face inputs."""

import numpy as np

from ferroute.evaluate.selective import selective, selective_inputs


def _inputs(n=400, seed=0):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(8), size=(n, 3)).astype(np.float32)  # (N, M, C)
    labels = rng.integers(-1, 8, n)  # -1: no majority label, left out
    agree = rng.uniform(0, 1, n)
    decisions = rng.choice(np.array(["accept", "ambiguous", "reject"], object), n)
    return probs, agree, decisions, labels


def test_shares_accuracies_and_curves_add_up():
    probs, agree, decisions, labels = _inputs()
    x = selective_inputs(probs, agree, decisions, labels, ldl_probs=None)
    keep = labels >= 0
    assert len(x["correct"]) == keep.sum()
    out = selective(x)
    assert abs(sum(v["share"] for v in out["decisions"].values()) - 1) < 1e-9
    assert abs(out["accuracy_all"] - x["correct"].mean()) < 1e-12
    assert out["max_prob_at_accept_coverage"]["coverage"] == round(out["decisions"]["accept"]["share"] * out["n"]) / out["n"]
    curves = out["risk_coverage"]
    assert curves["coverage"][-1] == 1.0 and all(len(v) == 20 for v in curves.values())
    assert abs(curves["uar"][-1] - (1 - x["correct"].mean())) < 1e-3  # at full coverage every scorer has the same risk
    assert "ldl_max_prob" not in out["aurc"]


def test_uar_keeps_accepted_faces_first():
    probs, agree, decisions, labels = _inputs(seed=1)
    x = selective_inputs(probs, agree, decisions, labels, ldl_probs=probs.mean(1))
    dec = x["decision"]
    assert x["uar"][dec == "accept"].min() >= x["uar"][dec == "ambiguous"].max() >= x["uar"][dec == "reject"].max()
    assert "ldl_max_prob" in selective(x)["aurc"]
