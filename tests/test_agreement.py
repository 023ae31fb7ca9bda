"""The vote calibration and the ambiguity level (ferroute.decide.agreement)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferroute.decide import agreement as agr


def _probs(rng, n, c=8, sharp=1.0):
    return rng.dirichlet(np.full(c, sharp), n)


@given(st.floats(0.3, 3.0), st.integers(0, 10_000))
@settings(max_examples=30, deadline=None)
def test_calibration_keeps_the_top_emotion_and_sums_to_one(t, seed):
    p = _probs(np.random.default_rng(seed), 50)
    c = agr.calibrate(p, t)
    assert np.allclose(c.sum(1), 1)
    assert (c.argmax(1) == p.argmax(1)).all()
    assert np.allclose(agr.calibrate(p, 1.0), p, atol=1e-6)


@pytest.mark.parametrize("true_t", [0.6, 1.0, 1.8])
def test_fit_temperature_recovers_the_temperature_that_made_the_votes(true_t):
    rng = np.random.default_rng(0)
    truth = _probs(rng, 4000, sharp=0.5)
    votes = np.stack([rng.multinomial(200, p) for p in truth]) / 200
    model = agr.calibrate(truth, 1 / true_t)  # a model whose shares are truth at temperature 1/true_t
    assert agr.fit_temperature(model, votes) == pytest.approx(true_t, rel=0.05)


def test_the_level_rule_matches_flagged_and_actual_shares():
    rng = np.random.default_rng(1)
    top = rng.uniform(0.3, 1.0, 2000)
    lv = agr.choose_level(top, top)  # a perfect predictor: every level matches; ties go to the lowest
    assert lv == agr.LEVELS[0]
    lv = agr.choose_level(np.full(2000, 0.5), top)  # flags everything above 0.5 and nothing below
    q = agr.flag_quality(np.full(2000, 0.5), top, lv)
    assert abs(q["flagged_share"] - q["actual_share"]) == min(abs(np.mean(0.5 < v) - np.mean(top < v)) for v in agr.LEVELS)


def test_flag_quality_counts():
    q = agr.flag_quality(np.array([0.3, 0.5, 0.9, 0.2]), np.array([0.4, 0.8, 0.5, 0.9]), 0.6)
    assert q == {"level": 0.6, "flagged_share": 0.75, "actual_share": 0.5, "precision": 1 / 3, "recall": 0.5}
