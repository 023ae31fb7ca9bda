"""Many corrupted versions of a set at once: the same faces as one by one, computed in parallel, cached."""

import numpy as np
import pytest

from ferroute.evaluate.corrupted_sets import corrupted_set
from ferroute.evaluate.corruptions import corrupt


@pytest.fixture(scope="module")
def faces():
    return np.random.default_rng(0).integers(0, 256, (6, 48, 48), dtype=np.uint8)


def test_parallel_cached_set(faces, tmp_path, monkeypatch):
    monkeypatch.setenv("FERROUTE_CACHE", str(tmp_path))
    sets = corrupted_set(faces, ["fog", "gaussian_noise"], (1, 2), workers=2, progress=False)
    assert len(sets) == 4
    np.testing.assert_array_equal(sets[("fog", 2)], corrupt(faces, "fog", 2))
    files = sorted(p.name for p in tmp_path.rglob("*.npy"))
    assert len(files) == 4
    mtimes = [p.stat().st_mtime_ns for p in sorted(tmp_path.rglob("*.npy"))]
    corrupted_set(faces, ["fog", "gaussian_noise"], (1, 2), workers=1, progress=False)
    assert mtimes == [p.stat().st_mtime_ns for p in sorted(tmp_path.rglob("*.npy"))]  # served from cache
