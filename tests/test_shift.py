"""Shift signals: density scores fitted on training faces, stored as plain numbers."""

import numpy as np
import pytest
from scipy.special import logsumexp

from ferroute.evaluate.corruptions import corrupt
from ferroute.evaluate.nonface import nonface_crops
from ferroute.decide.shift import (
    FaceLikeness,
    FeatureDensity,
    NotFittedError,
    PixelStats,
    energy,
    fit_signals,
    load_signals,
    pixel_stats,
    save_signals,
    training_subset,
)


def _faces(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :48]
    out = []
    for _ in range(n):
        cy, cx, r = rng.uniform(18, 30), rng.uniform(18, 30), rng.uniform(12, 20)
        face = 90 + rng.uniform(40, 90) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)) + rng.normal(0, 3, (48, 48))
        out.append(np.clip(face, 0, 255))
    return np.stack(out).astype(np.uint8)


def test_pixel_stats_flag_noise_blur_and_exposure_not_clean_faces():
    train, clean = _faces(400, 0), _faces(200, 1)
    ps = PixelStats().fit(train)
    base = np.quantile(ps.score(clean), 0.95)
    for name, sev in (("gaussian_noise", 3), ("brightness", 5), ("contrast", 5)):
        assert np.mean(ps.score(corrupt(clean, name, sev)) > base) > 0.8, name


def test_pixel_stats_shape_and_round_trip(tmp_path):
    faces = _faces(50)
    assert pixel_stats(faces).shape == (50, 6)
    ps = PixelStats().fit(_faces(300))
    save_signals(tmp_path, {"pixels": ps}, note="test")
    again = load_signals(tmp_path)["pixels"]
    np.testing.assert_allclose(again.score(faces), ps.score(faces))
    assert load_signals(tmp_path / "nowhere") == {}
    (tmp_path / "shift.json").write_text('{"pixels": {"mean": [1, 2]}}')
    with pytest.raises(ValueError, match=r"shift.json: damaged shift signals"):
        load_signals(tmp_path)
    with pytest.raises(NotFittedError):
        PixelStats().score(faces)


def test_feature_density_is_low_far_from_the_classes():
    rng = np.random.default_rng(0)
    means = rng.normal(0, 3, (4, 16))
    y = rng.integers(0, 4, 2000)
    f = means[y][:, None, :] + rng.normal(0, 1, (2000, 2, 16))  # (N, M=2, D)
    fd = FeatureDensity().fit(f, y)
    near = means[rng.integers(0, 4, 100)][:, None, :] + rng.normal(0, 1, (100, 2, 16))
    far = near + 8 * rng.normal(size=(100, 1, 16))
    assert np.mean(fd.score(far) > fd.score(near)) > 0.95
    again = FeatureDensity.from_arrays(fd.to_arrays())
    np.testing.assert_allclose(again.score(near), fd.score(near))


def test_energy_is_minus_logsumexp_averaged_over_members():
    lg = np.random.default_rng(1).normal(size=(7, 3, 8))
    np.testing.assert_allclose(energy(lg), -logsumexp(lg, axis=-1).mean(1))


def test_signals_are_fitted_on_a_fixed_training_subset():
    labels = np.r_[np.full(50, -1), np.arange(500) % 8]
    idx = training_subset(labels, n=100)
    assert len(idx) == 100 and np.all(labels[idx] >= 0) and np.array_equal(idx, training_subset(labels, n=100))
    sig = fit_signals(("pixels",), _faces(550), labels)
    assert set(sig) == {"pixels"}
    with pytest.raises(ValueError, match="unknown input signal"):
        fit_signals(("density",), _faces(10), np.zeros(10))
    assert set(fit_signals(("face",))) == {"face"}  # needs no training faces
    with pytest.raises(ValueError, match="fitted on training faces"):
        fit_signals(("pixels",))


def test_nonface_crops_are_deterministic_and_varied():
    a, kinds = nonface_crops(120, seed=3)
    b, _ = nonface_crops(120, seed=3)
    assert a.shape == (120, 48, 48) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert {k: kinds.count(k) for k in set(kinds)} == {"photo": 60, "drawing": 20, "text": 20, "noise": 20}
    assert len({x.tobytes() for x in a}) == 120 and a.std(axis=(1, 2)).min() >= 0


def _astronaut_face() -> np.ndarray:
    """A real face (scikit-image's astronaut, Eileen Collins), cropped and gray at 48x48."""
    from PIL import Image
    from skimage.data import astronaut

    return np.asarray(Image.fromarray(astronaut()[20:210, 140:330]).convert("L").resize((48, 48), Image.BILINEAR))


def test_face_likeness_sees_a_face_and_not_noise_text_or_flat_crops():
    face = _astronaut_face()
    nonface, kinds = nonface_crops(60)
    fl = FaceLikeness()
    s_face, s_non = fl.score(face[None])[0], fl.score(nonface)
    assert s_face < 0.5  # YuNet's own score above 0.5
    assert np.mean(s_non > s_face) > 0.9
    assert (fl.score(np.full((2, 48, 48), 128, np.uint8)) > 0.95).all()  # a flat grey crop: hardly a face
    assert fl.score(np.zeros((0, 48, 48), np.uint8)).shape == (0,)


def test_face_likeness_is_stored_and_refitted_by_name(tmp_path):
    faces = np.stack([_astronaut_face()] * 2)
    fitted = fit_signals(["face", "pixels"], _faces(60), np.zeros(60, int))
    assert isinstance(fitted["face"], FaceLikeness)
    save_signals(tmp_path, {"face": FaceLikeness(size=80, pad=0.25)})
    again = load_signals(tmp_path)["face"]
    assert (again.size, again.pad) == (80, 0.25)
    np.testing.assert_allclose(again.score(faces), FaceLikeness(80, 0.25).score(faces))
    with pytest.raises(ValueError, match="size >= 16"):
        FaceLikeness(size=4)


def test_tiled_faces_keep_the_pixels_and_lose_the_layout():
    from ferroute.evaluate.nonface import tiled_faces

    faces = np.random.default_rng(0).integers(0, 256, (40, 48, 48), dtype=np.uint8)
    t = tiled_faces(faces, seed=1)
    assert t.shape == faces.shape and t.dtype == np.uint8
    np.testing.assert_array_equal(np.sort(t.reshape(40, -1), 1), np.sort(faces.reshape(40, -1), 1))  # same pixels
    assert np.all((t != faces).reshape(40, -1).any(1))  # never the face itself
    np.testing.assert_array_equal(tiled_faces(faces, seed=1), t)  # seeded
    with pytest.raises(ValueError, match="divisible"):
        tiled_faces(faces[:, :47, :47])


def test_blockiness_finds_a_block_grid_at_any_period_and_placement():
    from ferroute.decide.shift import blockiness

    faces = _faces(60, 3)
    base = blockiness(faces)
    for b, off in ((8, 0), (8, 3), (16, 5), (6, 1)):
        x = faces.astype(float)
        blocked = x.copy()
        for r in range(-off, 48, b):
            for c in range(-off, 48, b):
                rs, cs = slice(max(r, 0), max(r + b, 0)), slice(max(c, 0), max(c + b, 0))
                blocked[:, rs, cs] = x[:, rs, cs].mean((1, 2), keepdims=True)  # each block flat: steps on the grid only
        assert np.mean(blockiness(blocked.astype(np.uint8)) > np.quantile(base, 0.95)) > 0.9, (b, off)
    assert np.all(np.isfinite(blockiness(np.zeros((2, 48, 48), np.uint8))))


def test_image_statistics_keep_six_columns_for_a_model_fitted_before_blockiness(tmp_path):
    from ferroute.decide.shift import ImageStatistics, LearnedScore

    faces = _faces(20)
    assert ImageStatistics().score(faces).shape == (20, 7)
    save_signals(tmp_path, {"stats": ImageStatistics(6)})
    old = load_signals(tmp_path)["stats"]
    assert old.score(faces).shape == (20, 6)
    (tmp_path / "shift.json").write_text('{"stats": {}}')  # written before the column count was stored
    assert load_signals(tmp_path)["stats"].columns == 6
    with pytest.raises(ValueError, match="6 or 7"):
        ImageStatistics(5)
    rng = np.random.default_rng(0)
    sig = {"epistemic": rng.uniform(0.01, 0.1, 200), "face": rng.uniform(0, 0.3, 200), "stats": rng.normal(0, 1, (200, 6))}
    shifted = {**sig, "stats": rng.normal(2, 1, (200, 6))}
    six = LearnedScore().fit(sig, shifted)
    again = LearnedScore.from_dict(six.to_dict())
    assert again.names == LearnedScore.FEATURES
    with pytest.raises(ValueError, match="disagree"):
        again.score({**sig, "stats": rng.normal(0, 1, (200, 7))})
