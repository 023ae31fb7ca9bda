import json

import numpy as np
import pytest

from ferroute.evaluation import evaluate, kept_at_rate, kept_ratio_ci, routing_table, spearman_ci


def test_kept_at_rate_matches_rate_exactly():
    rng = np.random.default_rng(0)
    ood = rng.normal(2, 1, 10_000)
    for r in (0.5, 0.9, 0.95):
        # in-distribution copy of the OOD scores: keeps exactly 1 - r of them
        assert kept_at_rate(ood, ood, r) == pytest.approx(1 - r, abs=2e-3)


def test_kept_at_rate_splits_ties():
    ood = np.r_[np.zeros(50), np.ones(50)]
    assert kept_at_rate(np.array([1.0]), ood, 0.25) == pytest.approx(0.5)
    assert kept_at_rate(np.array([0.6]), ood, 0.5) == pytest.approx(0.0)
    assert kept_at_rate(np.array([0.4]), ood, 0.5) == pytest.approx(1.0)


def test_routing_table_and_ratio_ci():
    rng = np.random.default_rng(1)
    n = 300
    amb = np.arange(n) < 100
    a_clean = rng.normal(0, 1, n)
    b_clean = a_clean + amb * 2.0  # method b scores ambiguous faces higher: rejects them
    ood = rng.normal(2, 1, (3, n))
    t = routing_table({"a": (a_clean, ood.ravel()), "b": (b_clean, ood.ravel())}, amb, rates=(0.9,))
    assert t["kept_ambiguous_a"]["0.9"] > t["kept_ambiguous_b"]["0.9"]
    lo, hi = kept_ratio_ci(a_clean, ood, b_clean, ood, amb, 0.9, n_boot=100)
    ratio = t["kept_ambiguous_a"]["0.9"] / t["kept_ambiguous_b"]["0.9"]
    assert lo < ratio < hi


def test_spearman_ci_brackets_estimate():
    rng = np.random.default_rng(2)
    x = rng.normal(size=400)
    rho, (lo, hi) = spearman_ci(x, x + rng.normal(size=400), n_boot=200)
    assert lo < rho < hi and 0.5 < rho < 0.9


def test_evaluate_end_to_end_on_tiny_model(fake_ferplus, tmp_path):
    from ferroute.data import load_split
    from tests.test_ensemble import tiny_ensemble

    va, te = load_split("valid", fake_ferplus), load_split("test", fake_ferplus)
    rep = evaluate(tiny_ensemble(3), va, te, tmp_path / "rep", ldl=tiny_ensemble(1), corruptions=["fog", "contrast"], severities=(1, 5), progress=False, n_boot=50)
    saved = json.loads((tmp_path / "rep" / "report.json").read_text())
    for key in ("accuracy", "n_test"):
        assert key in saved
    assert set(saved["ambiguity"]) >= {"spearman_aleatoric", "spearman_aleatoric_ci95", "spearman_total", "spearman_epistemic"}
    assert set(saved["shift"]["auroc_epistemic"]) == {"1", "5"}
    assert set(saved["shift"]["per_corruption"]["epistemic"]["5"]) == {"fog", "contrast"}
    assert set(saved["routing"]["kept_ratio"]) == {"0.5", "0.7", "0.9", "0.95"}
    assert "0.9" in saved["routing"]["kept_ratio_ci95"]
    assert set(saved["ldl"]) >= {"spearman", "auroc", "kept_ratio"}
    for png in ("aleatoric_vs_disagreement.png", "auroc_vs_severity.png", "kept_ambiguous_vs_rejection.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 1000
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Spearman" in md
    assert "2 of the 15 corruptions (fog, contrast)" in md and "over the 15 corruptions" not in md  # says what was run
    assert rep["n_test"] == len(te)


def test_an_int8_ensemble_with_a_baseline_that_cannot_run_int8(fake_ferplus, tmp_path):
    from ferroute.backbones import create_backbone
    from ferroute.data import load_split
    from ferroute.ensemble import Ensemble
    from tests.test_ensemble import tiny_ensemble

    va, te = load_split("valid", fake_ferplus), load_split("test", fake_ferplus)
    ens = tiny_ensemble(2).quantize(va.images)
    net, cfg = create_backbone("efficientnet_lite0", pretrained=False)
    ldl = Ensemble([net], cfg)
    rep = evaluate(ens, va, te, tmp_path / "rep", ldl=ldl, corruptions=["fog"], severities=(5,), progress=False, n_boot=20)
    assert rep["model"]["precision"] == "int8"
    assert rep["ldl"]["precision"] in ("bf16", "fp32")  # 'auto' for the baseline: it ran, in float


def test_an_int8_model_evaluates_where_int8_falls_back(fake_ferplus, tmp_path, monkeypatch):
    """`fast` ships in int8; on a CPU without the x86 engine it runs in `auto`, and so must its baseline."""
    from ferroute import backbones, ensemble
    from ferroute.data import load_split
    from tests.test_ensemble import tiny_ensemble

    va, te = load_split("valid", fake_ferplus), load_split("test", fake_ferplus)
    ens = tiny_ensemble(2).quantize(va.images)
    monkeypatch.setattr(backbones, "int8_supported", lambda: False)
    monkeypatch.setattr(ensemble, "int8_supported", lambda: False)
    rep = evaluate(ens, va, te, tmp_path / "rep", ldl=tiny_ensemble(1), corruptions=["fog"], severities=(5,), progress=False, n_boot=20)
    assert rep["model"]["precision"] == rep["ldl"]["precision"] != "int8"
