"""The protocol's statistics, against scipy and scikit-learn."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import rankdata, spearmanr
from sklearn.metrics import roc_auc_score

from ferroute.evaluate.metrics import (
    _resampled_ranks,
    auroc,
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


def test_kl_and_js_against_votes():
    from ferroute.evaluate.metrics import js_divergence, kl_divergence

    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(8), 50), rng.dirichlet(np.ones(8), 50)
    assert np.allclose(kl_divergence(p, p), 0, atol=1e-9)
    assert (kl_divergence(p, q) > 0).all()
    js = js_divergence(p, q)
    assert np.allclose(js, js_divergence(q, p)) and (js <= np.log(2) + 1e-12).all()


def test_top_share_calibration_is_zero_for_a_predictor_that_is_its_own_truth():
    from ferroute.evaluate.metrics import top_share_calibration

    p = np.random.default_rng(1).dirichlet(np.ones(8), 200)
    assert top_share_calibration(p, p)["ece"] == pytest.approx(0, abs=1e-12)
    assert top_share_calibration(p, np.full_like(p, 1 / 8))["ece"] > 0.1


def test_aurc_orders_scorers():
    from ferroute.evaluate.metrics import aurc, risk_coverage

    correct = np.array([1, 1, 1, 0, 0] * 20, bool)
    perfect, reverse = correct.astype(float), -correct.astype(float)
    assert aurc(perfect, correct) < aurc(np.zeros(100), correct) < aurc(reverse, correct)
    cov, risk = risk_coverage(perfect, correct)
    assert cov[-1] == 1 and risk[-1] == pytest.approx(0.4) and risk[59] == 0


def test_vote_noise_ceiling_is_sane():
    from ferroute.evaluate.metrics import vote_noise_ceiling

    rng = np.random.default_rng(2)
    votes = np.stack([rng.multinomial(10, q) for q in rng.dirichlet(np.full(8, 0.3), 300)])
    c = vote_noise_ceiling(votes, draws=3)
    assert 0 < c["js"] < np.log(2) and 0 < c["spearman"] < 1 and c["kl"] > 0
