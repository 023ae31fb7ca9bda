import numpy as np
import pytest

from ferroute.decide.routing import NotCalibratedError, SingleScoreRouter, UncertaintyRouter
from ferroute.decide.uncertainty import decompose

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


def test_conformal_threshold_promise_holds_on_fresh_in_distribution_faces():
    """Split-conformal: over many calibration draws, a fresh exchangeable face is rejected at
    most reject_rate of the time, and the 95 % bound covers the realised rate in >= 95 % of draws."""
    from ferroute.decide.routing import conformal_rank

    rng = np.random.default_rng(0)
    alpha, n = 0.05, 400
    realised, covered = [], 0
    for _ in range(300):
        cal = rng.normal(size=n)
        k = conformal_rank(n, alpha)
        t = np.sort(cal)[k - 1]
        rate = float(np.mean(rng.normal(size=20000) > t))
        realised.append(rate)
        from ferroute.decide.routing import beta_ppf

        covered += rate <= beta_ppf(0.95, n + 1 - k, k)
    assert np.mean(realised) <= alpha + 0.002
    assert covered / 300 >= 0.93


def test_beta_ppf_matches_scipy():
    from scipy.stats import beta

    from ferroute.decide.routing import beta_ppf

    for q, a, b in [(0.95, 180, 3400), (0.5, 3, 7), (0.05, 1, 1), (0.99, 20, 400)]:
        assert abs(beta_ppf(q, a, b) - beta.ppf(q, a, b)) < 1e-9


def test_router_states_its_guarantee():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(8), size=(600, 5))
    r = UncertaintyRouter(shift="epistemic").fit(p, rng.random(600))
    g = r.guarantee()
    assert g["kind"] == "split-conformal" and g["n_calibration"] == 600
    assert g["reject_rate_expected"] <= 0.05 < g["reject_rate_upper_95"] < 0.08
    assert np.mean(r.decide(p) == "reject") <= 0.05
    assert UncertaintyRouter.from_dict(r.to_dict()).guarantee() == g
    # a learned score (the conditional z) learns on one half and sets its threshold on the other
    assert UncertaintyRouter(shift="conditional").fit(p, rng.random(600)).guarantee()["n_calibration"] == 300


def test_union_rejects_when_either_part_is_unusual():
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(8) * 3, size=(800, 5))
    d = {**decompose(p), "pixels": rng.normal(size=800)}
    r = UncertaintyRouter(shift="epistemic+pixels").fit(d, rng.random(800))
    assert r.needs == ("pixels",)
    with pytest.raises(ValueError, match="pixels"):
        r.decide(p)  # the pixel signal is missing
    base = r.shift_score(d)
    assert np.all((base >= 0) & (base <= 1))
    odd = dict(d, pixels=d["pixels"] + np.where(np.arange(800) < 10, 50.0, 0.0))  # ten crops with strange pixels
    assert np.all(r.decide(odd)[:10] == "reject")
    reps = r.route(p[:10], [f"c{i}" for i in range(8)], signals={"pixels": odd["pixels"][:10]})
    assert all(x["decision"] == "reject" and "image itself is unlike" in x["reason"] for x in reps)
    assert 0.0 < np.mean(r.decide(d) == "reject") <= 0.08
    r2 = UncertaintyRouter.from_dict(r.to_dict())
    np.testing.assert_array_equal(r2.decide(odd), r.decide(odd))


def _votes(p, seed=3, n_votes=10):
    """Vote shares drawn from the members' mean, like ~10 annotators per face."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.multinomial(n_votes, q / q.sum()) for q in p.mean(1)]) / n_votes


def test_agreement_router_flags_by_the_stated_share_and_says_so():
    import re

    p, amb = synthetic()
    r = UncertaintyRouter().fit(p, amb, votes=_votes(p))
    assert r.has_agreement and r.ambiguous_below == 0.6
    reps = r.route(p, LABELS)
    for rep in reps:
        if rep["decision"] == "reject":
            continue
        assert rep["agreement"] == pytest.approx(max(rep["distribution"].values()), abs=1e-3)
        assert (rep["decision"] == "ambiguous") == (rep["agreement"] < r.ambiguous_below)
        share = float(re.search(r"about ([\d.]+)% of people", rep["reason"]).group(1))
        assert rep["emotion"] in rep["reason"].lower()
        assert abs(share - 100 * rep["agreement"]) <= 0.5 + 1e-9
    r2 = UncertaintyRouter.from_dict(r.to_dict())
    np.testing.assert_array_equal(r.decide(p), r2.decide(p))
    r2.ambiguous_below = 0.95  # the user's level: more faces flagged, rejections unchanged
    d1, d2 = r.decide(p), r2.decide(p)
    assert np.sum(d2 == "ambiguous") >= np.sum(d1 == "ambiguous")
    assert ((d1 == "reject") == (d2 == "reject")).all()
    assert r2.thresholds["ambiguous_below"] == 0.95


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.2, float("nan"), "0.5"])
def test_an_ambiguity_level_outside_zero_one_is_refused(bad):
    p, amb = synthetic()
    r = UncertaintyRouter().fit(p, amb, votes=_votes(p))
    with pytest.raises(ValueError, match="between 0 and 1"):
        r.ambiguous_below = bad


def test_a_router_without_votes_keeps_the_aleatoric_rule():
    p, amb = synthetic()
    r = UncertaintyRouter().fit(p, amb)
    assert not r.has_agreement and "ambiguous_below" not in r.thresholds
    with pytest.raises(ValueError, match="calibrate"):
        r.ambiguous_below = 0.6


def test_a_learned_reject_score_routes_and_names_the_signal_that_moved_it():
    import json

    from ferroute.decide.shift import LearnedScore

    rng = np.random.default_rng(5)
    p, amb = synthetic(n=800)
    n = len(p)

    def signals(k, shift=0.0):
        stats = rng.normal(0, 1, (k, 6))
        stats[:, 2] += shift  # edge strength moves under this shift
        return {"face": rng.uniform(0, 0.3, k) + shift * 0.0, "stats": stats}

    d = decompose(p)
    clean = {**d, **signals(n)}
    shifted = {**decompose(synthetic(n=800, seed=9)[0]), **signals(n, shift=4.0)}
    learned = LearnedScore().fit(clean, shifted)
    assert learned.weights[LearnedScore.FEATURES.index("stat2")] ** 2 + learned.weights[LearnedScore.FEATURES.index("stat2_sq")] ** 2 > 0.1
    r = UncertaintyRouter(shift="learned")
    assert r.needs == ("face", "stats")
    r.learned = learned
    r.fit({**d, **signals(n)}, amb)
    reps = r.route(synthetic(n=200, seed=11)[0], LABELS, signals(200, shift=4.0))
    rejected = [x for x in reps if x["decision"] == "reject"]
    assert len(rejected) > 150 and all("image itself" in x["reason"] for x in rejected)
    r2 = UncertaintyRouter.from_dict(json.loads(json.dumps(r.to_dict())))
    s = signals(50, shift=2.0)
    np.testing.assert_allclose(r.shift_score({**decompose(p[:50]), **s}), r2.shift_score({**decompose(p[:50]), **s}))
    with pytest.raises(NotCalibratedError, match="LearnedScore"):
        UncertaintyRouter(shift="learned").fit(clean, amb)


def test_learned_with_a_face_floor_rejects_what_either_part_finds_unusual():
    """``learned+face``: a crop that looks like no face is rejected even when the learned score
    finds nothing odd, and the reason then names face-likeness."""
    import json

    from ferroute.decide.shift import LearnedScore

    rng = np.random.default_rng(6)
    p, amb = synthetic(n=800)
    n = len(p)

    def signals(k, stat_shift=0.0):
        stats = rng.normal(0, 1, (k, 6))
        stats[:, 2] += stat_shift
        return {"face": rng.uniform(0, 0.3, k), "stats": stats}

    learned = LearnedScore().fit({**decompose(p), **signals(n)}, {**decompose(synthetic(n=800, seed=9)[0]), **signals(n, 4.0)})
    r = UncertaintyRouter(shift="learned+face")
    assert r.needs == ("face", "stats")
    r.learned = learned
    r.fit({**decompose(p), **signals(n)}, amb)
    q = synthetic(n=100, seed=12)[0]
    odd = signals(100)
    odd["face"] = np.full(100, 0.99)  # nothing like a face, ordinary statistics
    reps = r.route(q, LABELS, odd)
    assert sum(x["decision"] == "reject" for x in reps) == 100
    assert all("face" in x["reason"].lower() for x in reps)
    ordinary = signals(800)
    assert np.mean(r.decide({**decompose(synthetic(n=800, seed=13)[0]), **ordinary}) == "reject") < 0.1
    r2 = UncertaintyRouter.from_dict(json.loads(json.dumps(r.to_dict())))
    np.testing.assert_allclose(r2.shift_score({**decompose(q), **odd}), r.shift_score({**decompose(q), **odd}))


def test_a_reference_set_lets_every_calibration_face_set_the_threshold():
    """With ``reference`` (other clean faces), a union learns its percentiles there and the
    conformal threshold uses all the faces passed, not half; the rejection rate on fresh faces
    stays near the promise."""
    from ferroute.decide.shift import LearnedScore

    rng = np.random.default_rng(8)

    def signals(k):
        return {"face": rng.uniform(0, 0.3, k), "stats": rng.normal(0, 1, (k, 7))}

    p, amb = synthetic(n=1200)
    ref_p = synthetic(n=1200, seed=21)[0]
    learned = LearnedScore().fit({**decompose(p), **signals(len(p))},
                                 {**decompose(synthetic(n=800, seed=9)[0]), **{**signals(800), "stats": rng.normal(3, 1, (800, 7))}})
    assert len(learned.names) == 16 and learned.to_dict()["features"][-1] == "stat6_sq"
    halves = UncertaintyRouter(shift="learned+face")
    halves.learned = learned
    halves.fit({**decompose(p), **signals(len(p))}, amb)
    full = UncertaintyRouter(shift="learned+face")
    full.learned = learned
    full.fit({**decompose(p), **signals(len(p))}, amb, reference={**decompose(ref_p), **signals(len(ref_p))})
    assert halves.to_dict()["state"]["conformal"]["n"] == len(p) // 2
    assert full.to_dict()["state"]["conformal"]["n"] == len(p)
    fresh = synthetic(n=4000, seed=22)[0]
    rate = np.mean(full.decide({**decompose(fresh), **signals(len(fresh))}) == "reject")
    assert 0.03 < rate < 0.07
