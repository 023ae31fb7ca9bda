import json

import numpy as np
import pytest

from ferroute.evaluate.protocol import evaluate


def test_evaluate_end_to_end_on_tiny_model(fake_ferplus, tmp_path):
    from ferroute.evaluate.ferplus import load_split
    from tests.test_ensemble import tiny_ensemble

    va, te = load_split("valid", fake_ferplus), load_split("test", fake_ferplus)
    from ferroute.evaluate.ferplus import LabelledFaces
    from ferroute.decide.labelshift import PriorAdapter

    ck = LabelledFaces(te.images[:30], np.arange(30) % 8, np.arange(30) // 3)
    ens = tiny_ensemble(3)
    priors = PriorAdapter(min_faces=10).fit(ens.predict_proba(va.images), va.distributions)
    rep = evaluate(ens, va, te, tmp_path / "rep", ldl=tiny_ensemble(1), corruptions=["fog", "contrast"], severities=(1, 5),
                   progress=False, n_boot=50, ckplus=ck, priors=priors)
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
    assert 0 <= g["ckplus_accuracy_adapted"] <= 1 and 0 <= g["ferplus_test_accuracy_adapted"] <= 1
    assert sum(g["ckplus_mix_estimated"]) == pytest.approx(1.0, abs=1e-3) and sum(g["ckplus_shares_adapted"].values()) == pytest.approx(1.0)
    assert set(saved["ldl"]) >= {"spearman", "auroc", "kept_ratio"}
    for png in ("aleatoric_vs_disagreement.png", "auroc_vs_severity.png", "kept_ambiguous_vs_rejection.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 1000
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Spearman" in md and "Adapted to each set" in md
    assert "2 of the 15 corruptions (fog, contrast)" in md and "over the 15 corruptions" not in md  # says what was run
    assert rep["n_test"] == len(te)


def test_both_models_on_onnxruntime(fake_ferplus, tmp_path):
    """`ferroute evaluate` on a CPU without bf16 or int8 runs the model and its LDL baseline as graphs."""
    from ferroute.evaluate.ferplus import load_split
    from ferroute.train.export import to_onnx_backend
    from tests.test_ensemble import tiny_ensemble

    va, te = load_split("valid", fake_ferplus), load_split("test", fake_ferplus)
    ens, ldl = to_onnx_backend(tiny_ensemble(2), tmp_path / "g"), to_onnx_backend(tiny_ensemble(1), tmp_path / "g")
    rep = evaluate(ens, va, te, tmp_path / "rep", ldl=ldl, corruptions=["fog"], severities=(5,), progress=False, n_boot=20)
    assert rep["model"]["backend"] == rep["ldl"]["backend"] == "OnnxEnsemble"
    assert 0 <= rep["ldl"]["accuracy"] <= 1
    ldl.tta = "hflip"  # a graph whose views differ from the model's is refused, not silently run
    with pytest.raises(ValueError, match="tta"):
        evaluate(ens, va, te, tmp_path / "rep2", ldl=ldl, corruptions=["fog"], severities=(5,), progress=False, n_boot=20)


def test_an_int8_ensemble_with_a_baseline_that_cannot_run_int8(fake_ferplus, tmp_path):
    from ferroute.train.backbones import create_backbone
    from ferroute.evaluate.ferplus import load_split
    from ferroute.train.ensemble import Ensemble
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
    from ferroute.train import backbones
    from ferroute.train import runtime
    from ferroute.evaluate.ferplus import load_split
    from tests.test_ensemble import tiny_ensemble

    va, te = load_split("valid", fake_ferplus), load_split("test", fake_ferplus)
    ens = tiny_ensemble(2).quantize(va.images)
    monkeypatch.setattr(backbones, "int8_supported", lambda: False)
    monkeypatch.setattr(runtime, "int8_supported", lambda: False)
    rep = evaluate(ens, va, te, tmp_path / "rep", ldl=tiny_ensemble(1), corruptions=["fog"], severities=(5,), progress=False, n_boot=20)
    assert rep["model"]["precision"] == rep["ldl"]["precision"] != "int8"


def test_a_baseline_keeps_int8_scales_fitted_on_the_same_views(fake_ferplus, tmp_path, monkeypatch):
    """A shipped int8 baseline runs as stored; scales fitted on other views are refitted."""
    from ferroute.train.backbones import int8_supported
    from ferroute.evaluate.ferplus import load_split
    from ferroute.train.ensemble import Ensemble
    from tests.test_ensemble import tiny_ensemble

    if not int8_supported():
        pytest.skip("no x86 quantized engine on this CPU")
    va, te = load_split("valid", fake_ferplus), load_split("test", fake_ferplus)
    ldl = tiny_ensemble(1)
    ldl.configure(tta="hflip")
    ldl.quantize(va.images)
    assert ldl.int8_tta == "hflip"
    refits = []
    quantize = Ensemble.quantize
    monkeypatch.setattr(Ensemble, "quantize", lambda self, faces, **kw: refits.append(self) or quantize(self, faces, **kw))
    ens = tiny_ensemble(2)
    ens.configure(tta="hflip")
    ens.quantize(va.images)
    run = dict(corruptions=["fog"], severities=(5,), progress=False, n_boot=20)
    evaluate(ens, va, te, tmp_path / "a", ldl=ldl, **run)
    assert refits == [ens]  # the baseline's stored scales were used
    ens.configure(tta="none")
    ens.quantize(va.images)
    rep = evaluate(ens, va, te, tmp_path / "b", ldl=ldl, **run)
    assert refits[-1] is ldl and ldl.int8_tta == "none" and rep["ldl"]["precision"] == "int8"
