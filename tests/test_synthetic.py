"""Validation non-faces not made of people (ferroute.evaluate.synthetic): seeded, four kinds,
apart from the non-face probe."""

import numpy as np

from ferroute.evaluate.synthetic import KINDS, validation_nonfaces


def test_four_kinds_seeded_and_different_for_another_seed():
    a, b, c = validation_nonfaces(12, seed=11), validation_nonfaces(12, seed=11), validation_nonfaces(12, seed=12)
    assert tuple(a) == KINDS
    for k in KINDS:
        assert a[k].shape == (12, 48, 48) and a[k].dtype == np.uint8
        assert (a[k] == b[k]).all() and not (a[k] == c[k]).all()
        assert np.ptp(a[k].reshape(12, -1), axis=1).mean() > 20  # not blank crops


def test_none_is_a_probe_crop():
    import pytest

    pytest.importorskip("skimage")
    from ferroute.evaluate.nonface import nonface_crops

    probe, _ = nonface_crops()
    probe_set = {p.tobytes() for p in probe}
    assert not any(x.tobytes() in probe_set for v in validation_nonfaces(50, seed=11).values() for x in v)
