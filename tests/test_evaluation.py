import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import rankdata, spearmanr
from sklearn.metrics import roc_auc_score

from ferroute.evaluation import (
    _resampled_ranks,
    auroc,
    evaluate,
    kept_at_rate,
    kept_ratio_ci,
    routing_table,
    spearman_ci,
)


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


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=2, max_size=40), st.integers(1, 5), st.integers(0, 2**31))
def test_resampled_ranks_are_scipys_average_ranks(values, b, seed):
    v = np.asarray(values, float) / 3  # few distinct values: many ties
    i = np.random.default_rng(seed).integers(0, len(v), (b, len(v)))
    code = np.unique(v, return_inverse=True)[1]
    np.testing.assert_allclose(_resampled_ranks(code, i), rankdata(v[i], axis=1), rtol=0, atol=1e-12)


def test_spearman_ci_matches_spearmanr_on_each_resample():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 9, 300).astype(float)  # ties on both sides
    y = x + rng.integers(0, 5, 300)
    rho, ci = spearman_ci(x, y, n_boot=150, seed=7)
    draws = np.random.default_rng(7)
    boots = [spearmanr(x[i], y[i]).statistic for i in (draws.integers(0, 300, 300) for _ in range(150))]
    assert rho == pytest.approx(spearmanr(x, y).statistic)
    np.testing.assert_allclose(ci, np.percentile(boots, [2.5, 97.5]), rtol=0, atol=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=30), st.lists(st.integers(0, 5), min_size=1, max_size=30))
def test_auroc_is_sklearns(clean, shifted):
    c, s = np.asarray(clean, float) / 7, np.asarray(shifted, float) / 7  # ties within and across the sets
    expected = roc_auc_score(np.r_[np.zeros(len(c)), np.ones(len(s))], np.r_[c, s])
    assert auroc(c, s) == pytest.approx(expected, abs=1e-12)


def test_spearman_ci_brackets_estimate():
    rng = np.random.default_rng(2)
    x = rng.normal(size=400)
    rho, (lo, hi) = spearman_ci(x, x + rng.normal(size=400), n_boot=200)
    assert lo < rho < hi and 0.5 < rho < 0.9


def test_evaluate_end_to_end_on_tiny_model(fake_ferplus, tmp_path):
    from ferroute.data import load_split
    from tests.test_ensemble import tiny_ensemble

    va, te = load_split("valid", fake_ferplus), load_split("test", fake_ferplus)
    from ferroute.data import LabelledFaces

    ck = LabelledFaces(te.images[:30], np.arange(30) % 8, np.arange(30) // 3)
    rep = evaluate(tiny_ensemble(3), va, te, tmp_path / "rep", ldl=tiny_ensemble(1), corruptions=["fog", "contrast"], severities=(1, 5),
                   progress=False, n_boot=50, ckplus=ck)
    saved = json.loads((tmp_path / "rep" / "report.json").read_text())
    for key in ("accuracy", "n_test"):
        assert key in saved
    assert set(saved["ambiguity"]) >= {"spearman_aleatoric", "spearman_aleatoric_ci95", "spearman_total", "spearman_epistemic"}
    assert set(saved["shift"]["auroc_epistemic"]) == {"1", "5"}
    assert set(saved["shift"]["per_corruption"]["epistemic"]["5"]) == {"fog", "contrast"}
    assert set(saved["routing"]["kept_ratio"]) == {"0.5", "0.7", "0.9", "0.95"}
    assert "0.9" in saved["routing"]["kept_ratio_ci95"]
    ro = saved["routing"]
    assert set(saved["shift"]["auroc_shipped"]) == {"1", "5"} and saved["shift"]["shipped_score"] == "conditional"
    assert set(ro["paper"]) >= {"kept_ratio", "kept_ratio_ci95", "kept_ambiguous_uar", "kept_clean"}
    for r in ("0.5", "0.7", "0.9", "0.95"):  # dominance is exactly the clean-faces comparison
        assert ro["dominates"][r] == (ro["kept_clean"]["uar"][r] >= ro["kept_clean"]["single"][r])
    de = ro["deployed"]
    assert set(de["ood_rejected_per_corruption"]) == {"fog", "contrast"}
    assert de["ood_rejected"] == pytest.approx(np.mean(list(de["ood_rejected_per_corruption"].values())))
    assert sum(de["clean_shares"].values()) == pytest.approx(1.0) and de["clean_shares"]["reject"] == de["clean_rejected"]
    assert de["guarantee"]["kind"] == "split-conformal"
    g = saved["generalization"]
    assert g["n_nonface"] == 600 and sum(g["nonface_shares"].values()) == pytest.approx(1.0)
    assert g["n_ckplus"] == 30 and g["n_ckplus_subjects"] == 10 and 0 <= g["ckplus_accuracy"] <= 1
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


def test_a_baseline_keeps_int8_scales_fitted_on_the_same_views(fake_ferplus, tmp_path, monkeypatch):
    """A shipped int8 baseline runs as stored; scales fitted on other views are refitted."""
    from ferroute.backbones import int8_supported
    from ferroute.data import load_split
    from ferroute.ensemble import Ensemble
    from tests.test_ensemble import tiny_ensemble

    if not int8_supported():
        pytest.skip("no x86 quantized engine on this CPU")
    va, te = load_split("valid", fake_ferplus), load_split("test", fake_ferplus)
    ldl = tiny_ensemble(1)
    ldl.set_tta("hflip")
    ldl.quantize(va.images)
    assert ldl.int8_tta == "hflip"
    refits = []
    quantize = Ensemble.quantize
    monkeypatch.setattr(Ensemble, "quantize", lambda self, faces, **kw: refits.append(self) or quantize(self, faces, **kw))
    ens = tiny_ensemble(2)
    ens.set_tta("hflip")
    ens.quantize(va.images)
    run = dict(corruptions=["fog"], severities=(5,), progress=False, n_boot=20)
    evaluate(ens, va, te, tmp_path / "a", ldl=ldl, **run)
    assert refits == [ens]  # the baseline's stored scales were used
    ens.set_tta("none")
    ens.quantize(va.images)
    rep = evaluate(ens, va, te, tmp_path / "b", ldl=ldl, **run)
    assert refits[-1] is ldl and ldl.int8_tta == "none" and rep["ldl"]["precision"] == "int8"
