"""Label shift: the adapter's math on a synthetic source whose true mixes are known, its
errors out of order, its file, and the pipeline's use of it on real FERPlus faces."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ferroute.decide.labelshift import PRIORS_FILE, PriorAdapter
from ferroute.decide.shift import NotFittedError

C = 4


def _faces(mix: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Member probabilities ``(n, 3, C)`` of a model whose posteriors are exact for ``mix``'s
    source (class-conditional Gaussians of known means), and the true labels."""
    rng = np.random.default_rng(seed)
    y = rng.choice(C, n, p=mix)
    x = rng.normal(np.eye(C)[y] * 1.5, 1.0)
    loglik = -0.5 * ((x[:, None, :] - np.eye(C)[None] * 1.5) ** 2).sum(-1)
    members = []
    for m in range(3):  # members differ a little, as an ensemble's do
        z = loglik + np.log(SOURCE) + rng.normal(0, 0.05, loglik.shape)
        p = np.exp(z - z.max(1, keepdims=True))
        members.append(p / p.sum(1, keepdims=True))
    return np.stack(members, 1), y


SOURCE = np.array([0.4, 0.3, 0.2, 0.1])


@pytest.fixture(scope="module")
def adapter() -> PriorAdapter:
    probs, y = _faces(SOURCE, 4000, 0)
    return PriorAdapter(pull=0.0).fit(probs, np.eye(C)[y])


def test_fit_finds_a_calibrated_model_calibrated(adapter):
    assert adapter.temperature == pytest.approx(1.0, abs=0.1)
    assert np.abs(adapter.bias).max() < 0.15
    assert adapter.source_mix == pytest.approx(SOURCE, abs=0.03)


def test_estimate_recovers_a_new_mix_and_reweighting_pays(adapter):
    target = np.array([0.05, 0.15, 0.3, 0.5])
    probs, y = _faces(target, 3000, 1)
    mix = adapter.estimate(probs)
    assert mix.sum() == pytest.approx(1.0)
    assert mix == pytest.approx(target, abs=0.05)
    adapted = adapter.reweight(probs, mix)
    assert adapted.shape == probs.shape and np.allclose(adapted.sum(-1), 1, atol=1e-5)
    assert np.mean(adapted.mean(1).argmax(1) == y) > np.mean(probs.mean(1).argmax(1) == y) + 0.03


def test_the_pull_keeps_a_small_batch_near_the_source_mix(adapter):
    probs, _ = _faces(np.array([0.05, 0.15, 0.3, 0.5]), 120, 2)
    free, pulled = adapter.estimate(probs), PriorAdapter.from_dict({**adapter.to_dict(), "pull": 1000.0}).estimate(probs)
    assert np.abs(pulled - adapter.source_mix).sum() < np.abs(free - adapter.source_mix).sum()


def test_reweighting_to_the_source_mix_only_calibrates(adapter):
    probs, _ = _faces(SOURCE, 200, 3)
    assert np.allclose(adapter.reweight(probs, adapter.source_mix), adapter.calibrate(probs), atol=1e-6)


def test_out_of_order_and_bad_inputs_are_loud(adapter):
    probs, y = _faces(SOURCE, 200, 4)
    with pytest.raises(NotFittedError, match="fit"):
        PriorAdapter().estimate(probs)
    with pytest.raises(NotFittedError, match="fit"):
        PriorAdapter().reweight(probs, SOURCE)
    with pytest.raises(ValueError, match="at least 100 faces, got 99"):
        PriorAdapter.from_dict({**adapter.to_dict(), "min_faces": 100}).estimate(probs[:99])
    with pytest.raises(ValueError, match="summing to 1"):
        adapter.reweight(probs, np.array([0.5, 0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match=r"\(N, M, C\)"):
        PriorAdapter().fit(probs.mean(1), np.eye(C)[y])
    with pytest.raises(ValueError, match="pull"):
        PriorAdapter(pull=-1)


def test_file_round_trip_and_a_damaged_file_names_itself(adapter, tmp_path):
    assert PriorAdapter.load(tmp_path) is None  # calibrated before adapters existed
    adapter.save(tmp_path)
    back = PriorAdapter.load(tmp_path)
    probs, _ = _faces(SOURCE, 150, 5)
    assert np.array_equal(back.estimate(probs), adapter.estimate(probs))
    (tmp_path / PRIORS_FILE).write_text(json.dumps({"pull": 1}))
    with pytest.raises(ValueError, match=f"{PRIORS_FILE}.*calibrate"):
        PriorAdapter.load(tmp_path)


# ---------------------------------------------------------------- the pipeline, real faces


@pytest.fixture(scope="module")
def router_and_valid(ferplus_dir):
    from ferroute.evaluate.ferplus import load_split
    from ferroute.router import FERRouter

    return FERRouter.load(), load_split("valid", ferplus_dir)


def test_embedded_models_ship_their_adapter():
    from ferroute.router import EMBEDDED_MODELS, resolve_model_dir

    for name in EMBEDDED_MODELS:
        adapter = PriorAdapter.load(resolve_model_dir(name))
        assert adapter is not None and adapter.source_mix.shape == (8,)


def test_adapt_to_a_set_without_neutral_faces(router_and_valid):
    """Validation faces with every neutral one left out: the estimated mix drops neutral,
    accuracy on them rises, and the router it came from is untouched."""
    router, va = router_and_valid
    keep = np.flatnonzero((va.labels >= 1))[:600]
    faces, labels = va.images[keep], va.labels[keep]
    adapted = router.adapt_to(faces)
    assert router.mix is None and adapted.mix is not None
    neutral = adapted.labels.index("neutral")
    assert adapted.mix[neutral] < 0.5 * router.priors.source_mix[neutral]

    def acc(r):
        reps = r.route_faces(faces)
        return np.mean([rep["emotion"] == r.labels[y] for rep, y in zip(reps, labels) if rep["decision"] != "reject"])

    assert acc(adapted) > acc(router)


def test_adapt_to_refuses_a_small_batch_and_a_model_without_priors(router_and_valid):
    import copy

    from ferroute.train.ensemble import ModelError

    router, va = router_and_valid
    with pytest.raises(ValueError, match="at least 100 faces"):
        router.adapt_to(va.images[:20])
    with pytest.raises(ValueError, match=r"\(N, 48, 48\) or a list of images"):
        router.adapt_to(np.zeros((120, 160, 3), np.uint8))  # one photo as an array, not a batch of crops
    bare = copy.copy(router)
    bare.priors = None
    with pytest.raises(ModelError, match="priors.json"):
        bare.adapt_to(va.images[:200])
