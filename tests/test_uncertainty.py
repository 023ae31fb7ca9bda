import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ferroute.decide.uncertainty import decompose, entropy

probs = st.tuples(st.integers(1, 6), st.integers(1, 5), st.integers(2, 8)).flatmap(
    lambda s: arrays(np.float64, s, elements=st.floats(0, 1, allow_nan=False)).map(lambda a: a + 1e-9)
)


@given(probs)
@settings(max_examples=200, deadline=None)
def test_scores_are_nonnegative_bounded_and_add_up(p):
    d = decompose(p)
    c = p.shape[-1]
    for k in ("total", "aleatoric", "epistemic"):
        assert d[k].shape == (p.shape[0],)
        assert np.all(d[k] >= 0)
    assert np.all(d["total"] <= np.log(c) + 1e-9)
    np.testing.assert_allclose(d["aleatoric"] + d["epistemic"], d["total"], atol=1e-12)


@given(arrays(np.float64, (4, 7), elements=st.floats(0.001, 1)), st.integers(1, 6))
@settings(max_examples=100, deadline=None)
def test_epistemic_is_zero_when_members_agree(row, m):
    p = np.repeat(row[:, None, :], m, axis=1)
    assert np.allclose(decompose(p)["epistemic"], 0.0, atol=1e-12)


def test_disagreeing_confident_members_are_pure_epistemic():
    p = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    d = decompose(p)
    assert d["aleatoric"][0] == pytest.approx(0.0, abs=1e-9)
    assert d["epistemic"][0] == pytest.approx(np.log(2))


def test_uniform_members_are_pure_aleatoric():
    d = decompose(np.full((1, 5, 8), 1 / 8))
    assert d["aleatoric"][0] == pytest.approx(np.log(8))
    assert d["epistemic"][0] == pytest.approx(0.0, abs=1e-12)


def test_entropy_in_nats_and_shape_errors():
    assert entropy(np.array([0.5, 0.5])) == pytest.approx(np.log(2))
    with pytest.raises(ValueError, match=r"\(B, M, C\)"):
        decompose(np.ones((3, 4)))
