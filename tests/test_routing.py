import numpy as np
import pytest

from ferroute.routing import NotCalibratedError, SingleScoreRouter, UncertaintyRouter
from ferroute.uncertainty import decompose

LABELS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")


def synthetic(n=600, m=5, seed=0, spread=0.3):
    """Faces whose ambiguity varies; members add noise proportional to ``spread``."""
    rng = np.random.default_rng(seed)
    amb = rng.random(n)
    logits = rng.normal(size=(n, 1, 8)) * (4 * (1 - amb))[:, None, None]
    logits = logits + rng.normal(size=(n, m, 8)) * spread
    p = np.exp(logits)
    p /= p.sum(-1, keepdims=True)
    return p, amb


def test_route_before_fit_is_a_loud_error():
    r = UncertaintyRouter()
    with pytest.raises(NotCalibratedError, match="fit"):
        r.decide(np.full((1, 2, 8), 1 / 8))
    with pytest.raises(NotCalibratedError):
        SingleScoreRouter().decide(np.full((1, 2, 8), 1 / 8))


def test_calibrated_reject_rate_on_validation():
    p, amb = synthetic()
    r = UncertaintyRouter(reject_rate=0.1).fit(p, amb)
    rate = np.mean(r.decide(p) == "reject")
    assert rate == pytest.approx(0.1, abs=0.01)


def test_shifted_inputs_are_rejected_and_ambiguous_kept():
    p, amb = synthetic(seed=0)
    r = UncertaintyRouter().fit(p, amb)
    shifted, _ = synthetic(seed=1, spread=3.0)  # members disagree far more than in validation
    assert np.mean(r.decide(shifted) == "reject") > 0.8
    clean, amb2 = synthetic(seed=2)
    dec = r.decide(clean)
    assert np.mean(dec[amb2 > 0.8] == "ambiguous") > 0.5
    assert np.mean(dec[amb2 < 0.2] == "accept") > 0.5


def test_reports_are_json_able_and_explain():
    import json

    p, amb = synthetic()
    r = UncertaintyRouter().fit(p, amb)
    reps = r.route(p[:20], LABELS)
    json.dumps(reps)
    for rep in reps:
        assert rep["decision"] in {"accept", "ambiguous", "reject"}
        assert rep["reason"].endswith(".") and len(rep["reason"]) > 20
        assert set(rep["distribution"]) == set(LABELS)
        assert 0 <= rep["percentiles"]["aleatoric"] <= 100
        assert (rep["emotion"] is None) == (rep["decision"] == "reject")


def test_serialisation_roundtrip():
    p, amb = synthetic()
    r = UncertaintyRouter().fit(p, amb)
    r2 = UncertaintyRouter.from_dict(r.to_dict())
    np.testing.assert_array_equal(r.decide(p), r2.decide(p))
    np.testing.assert_allclose(r.shift_score(p), r2.shift_score(p))


def test_shift_score_is_conditioned_on_ambiguity():
    # in validation, epistemic grows with aleatoric; the z score removes that trend
    p, amb = synthetic(n=2000)
    r = UncertaintyRouter().fit(p, amb)
    d = decompose(p)
    z = r.shift_score(d)
    hi = d["aleatoric"] > np.quantile(d["aleatoric"], 0.8)
    lo = d["aleatoric"] < np.quantile(d["aleatoric"], 0.2)
    assert abs(np.mean(z[hi] > r.thresholds["shift_z"]) - np.mean(z[lo] > r.thresholds["shift_z"])) < 0.06


def test_plain_epistemic_shift_score():
    p, amb = synthetic()
    r = UncertaintyRouter(shift="epistemic", reject_rate=0.1).fit(p, amb)
    np.testing.assert_allclose(r.shift_score(p), decompose(p)["epistemic"])
    assert np.mean(r.decide(p) == "reject") == pytest.approx(0.1, abs=0.01)
    assert UncertaintyRouter.from_dict(r.to_dict()).shift == "epistemic"
    with pytest.raises(ValueError, match="shift"):
        UncertaintyRouter(shift="magic")
