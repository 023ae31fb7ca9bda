import numpy as np
import pytest

from ferroute.corruptions import CORRUPTIONS, corrupt, corrupted_set


@pytest.fixture(scope="module")
def faces():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    base = (128 + 60 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.uint8)
    return np.stack([np.clip(base.astype(int) + rng.integers(-20, 20, (48, 48)), 0, 255).astype(np.uint8) for _ in range(6)])


def test_fifteen_imagenet_c_corruptions():
    assert len(CORRUPTIONS) == 15


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_is_deterministic_and_changes_the_face(faces, name):
    for sev in (1, 5):
        a = corrupt(faces, name, sev, seed=3)
        assert a.shape == faces.shape and a.dtype == np.uint8
        np.testing.assert_array_equal(a, corrupt(faces, name, sev, seed=3))
        assert np.abs(a.astype(int) - faces).mean() > 0.5


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "contrast", "brightness", "pixelate", "jpeg_compression", "zoom_blur"])
def test_severity_increases_damage(faces, name):
    err = [np.abs(corrupt(faces, name, s).astype(float) - faces).mean() for s in (1, 3, 5)]
    assert err[0] < err[1] < err[2]


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(np.zeros((1, 48, 48), np.uint8), "rain", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(np.zeros((1, 48, 48), np.uint8), "fog", 6)


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
