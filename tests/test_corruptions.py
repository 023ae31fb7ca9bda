from pathlib import Path

import numpy as np
import pytest

from ferroute.evaluate.corruptions import (
    CORRUPTIONS,
    HELD_OUT,
    IMAGENET_C_HELD_OUT,
    corrupt,
)

# scripts/make_reference_corruptions.py: the imagecorruptions package's outputs on four 48x48
# inputs, ``<name>/<severity>`` shaped (draws, 4, 48, 48); one draw where it is deterministic
REFERENCE = Path(__file__).parent / "fixtures" / "corruptions_reference.npz"
DETERMINISTIC = {"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression", "gaussian_blur", "saturate"}


@pytest.fixture(scope="module")
def faces():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    base = (128 + 60 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.uint8)
    return np.stack([np.clip(base.astype(int) + rng.integers(-20, 20, (48, 48)), 0, 255).astype(np.uint8) for _ in range(6)])


def test_fifteen_imagenet_c_corruptions_and_four_held_out():
    assert len(CORRUPTIONS) == 15 and set(IMAGENET_C_HELD_OUT) == {"speckle_noise", "gaussian_blur", "spatter", "saturate"}
    assert not set(CORRUPTIONS) & set(HELD_OUT) and "saturate" not in HELD_OUT and len(HELD_OUT) == 14
    assert {"haze", "block_quantize"} <= set(HELD_OUT)  # the held-out cousins of fog and JPEG (2026-12-07)


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE) as z:
        return {k: z[k] for k in z.files}


def _stats(out: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """Per sample (draw x input): mean |change|, mean change, spread of the change (grey levels)."""
    d = out.astype(float).reshape(-1, 48, 48) - np.tile(inputs.astype(float), (len(out), 1, 1))
    return np.stack([np.abs(d).mean(axis=(1, 2)), d.mean(axis=(1, 2)), d.std(axis=(1, 2))], axis=1)


@pytest.mark.parametrize("name", [*CORRUPTIONS, *IMAGENET_C_HELD_OUT])
def test_corruption_matches_the_reference(reference, name):
    """Deterministic corruptions: within 0.5 grey levels per pixel on average (measured at most
    0.24: saturate's luma and the reference's per-channel truncation). Random ones, three
    statistics of the change (mean absolute, mean, spread) over 16 reference samples and 32 of
    ours: within 3 standard errors of the difference plus 1 grey level."""
    x = reference["inputs"]
    for sev in range(1, 6):
        ref = reference[f"{name}/{sev}"]
        if name in DETERMINISTIC:
            mad = np.abs(corrupt(x, name, sev).astype(float) - ref[0]).mean()
            assert mad <= 0.5, f"{name} severity {sev}: {mad:.2f} grey levels from the reference"
            continue
        ours = np.stack([corrupt(x, name, sev, seed=k) for k in range(8)])
        a, b = _stats(ref, x), _stats(ours, x)
        gap = np.abs(a.mean(0) - b.mean(0))
        tol = 3 * np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b)) + 1
        assert np.all(gap <= tol), f"{name} severity {sev}: reference {a.mean(0).round(1)}, ours {b.mean(0).round(1)}, tolerance {tol.round(1)}"


def test_elastic_damage_rises_with_severity(reference):
    x = reference["inputs"]
    dmg = [np.mean([np.abs(corrupt(x, "elastic_transform", s, seed=k).astype(float) - x).mean() for k in range(4)]) for s in range(1, 6)]
    assert all(a < b for a, b in zip(dmg, dmg[1:])), dmg


def test_saturate_on_gray_faces_is_the_identity_below_severity_4(faces):
    for s in (1, 2, 3):
        np.testing.assert_array_equal(corrupt(faces, "saturate", s), faces)
    assert corrupt(faces, "saturate", 5).mean() < corrupt(faces, "saturate", 4).mean() < faces.mean()


@pytest.mark.parametrize("name", [*CORRUPTIONS, *(n for n in IMAGENET_C_HELD_OUT if n != "saturate")])
def test_each_corruption_is_deterministic_and_changes_the_face(faces, name):
    for sev in (1, 5):
        a = corrupt(faces, name, sev, seed=3)
        assert a.shape == faces.shape and a.dtype == np.uint8
        np.testing.assert_array_equal(a, corrupt(faces, name, sev, seed=3))
        assert np.abs(a.astype(int) - faces).mean() > 0.5


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "contrast", "brightness", "pixelate", "jpeg_compression", "zoom_blur", "speckle_noise", "gaussian_blur"])
def test_severity_increases_damage(faces, name):
    err = [np.abs(corrupt(faces, name, s).astype(float) - faces).mean() for s in (1, 3, 5)]
    assert err[0] < err[1] < err[2]


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(np.zeros((1, 48, 48), np.uint8), "rain", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(np.zeros((1, 48, 48), np.uint8), "fog", 6)
