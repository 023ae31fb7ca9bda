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


def test_fit_calibration_recovers_the_biases_that_made_the_votes():
    rng = np.random.default_rng(2)
    truth = _probs(rng, 4000, sharp=0.5)
    votes = np.stack([rng.multinomial(200, p) for p in truth]) / 200
    bias = np.r_[0.0, rng.normal(0, 0.5, 7)]
    # a model that under-reads each emotion by exp(-bias) and is too sharp by 1.5
    model = agr.calibrate(truth, 1 / 1.5, -1.5 * bias)  # so softmax(log(model) / 1.5 + bias) = truth
    t, b = agr.fit_calibration(model, votes)
    assert t == pytest.approx(1.5, rel=0.05)
    assert np.allclose(b, bias, atol=0.08)
    assert agr.vote_nll(agr.calibrate(model, t, b), votes) <= agr.vote_nll(agr.calibrate(model, agr.fit_temperature(model, votes)), votes)


@given(st.floats(0.3, 3.0), st.lists(st.floats(-2, 2), min_size=8, max_size=8), st.integers(0, 10_000))
@settings(max_examples=30, deadline=None)
def test_calibration_with_biases_is_a_distribution(t, bias, seed):
    c = agr.calibrate(_probs(np.random.default_rng(seed), 20), t, np.array(bias))
    assert np.allclose(c.sum(1), 1) and (c >= 0).all()


def test_the_default_level_is_stated_in_words():
    assert agr.DEFAULT_LEVEL == 0.6
    assert agr.level_words(0.6) == "fewer than 3 in 5 people would pick the top emotion"
    assert agr.level_words(0.5) == "fewer than half of people would pick the top emotion"
    assert agr.level_words(0.7) == "fewer than 7 in 10 people would pick the top emotion"
    assert agr.level_words(0.65) == "fewer than 65% of people would pick the top emotion"


def test_fit_agreement_sets_the_stated_level_and_the_reason_says_it():
    from ferroute.decide.routing import UncertaintyRouter, keep_reason

    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(8), (600, 5))
    votes = rng.dirichlet(np.ones(8), 600)
    r = UncertaintyRouter().fit(probs, rng.random(600)).fit_agreement(probs, votes)
    assert r.ambiguous_below == 0.6 and len(r.to_dict()["state"]["vote_bias"]) == 8
    reason = keep_reason("ambiguous", [("happiness", 0.55), ("surprise", 0.4)], 0.6)
    assert "no clear majority (fewer than 3 in 5 people would pick the top emotion)" in reason
    assert "fewer than 7 in 10 people" in keep_reason("ambiguous", [("happiness", 0.65), ("surprise", 0.3)], 0.7)


def test_flag_quality_counts():
    q = agr.flag_quality(np.array([0.3, 0.5, 0.9, 0.2]), np.array([0.4, 0.8, 0.5, 0.9]), 0.6)
    assert q == {"level": 0.6, "flagged_share": 0.75, "actual_share": 0.5, "precision": 1 / 3, "recall": 0.5}
