"""The held-out shift family: six ImageNet-C-bar shifts pinned to the reference's outputs,
three photographic shifts that grow with severity, all seeded and disjoint from the test's 15."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferroute.evaluate import heldout
from ferroute.evaluate.corruptions import CORRUPTIONS, HELD_OUT, corrupt

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def reference():
    data = np.load(FIX / "cbar_reference.npz")
    return json.loads(str(data["params"])), data


@pytest.mark.parametrize("name", list(heldout.CBAR_SEVERITY))
def test_cbar_port_matches_the_reference_transform(name, reference):
    params, data = reference
    faces = np.asarray(Image.open(FIX / "corruption_inputs.png").convert("L"))
    faces = np.stack(np.split(faces, faces.shape[1] // 48, axis=1))
    _, apply = heldout.CBAR[name]
    for s in range(1, 6):
        for k, face in enumerate(faces):
            p = {key: (np.asarray(v) if isinstance(v, list) and key != "intensity" else v) for key, v in params[f"{name}/{s}/{k}"].items()}
            got = apply(np.repeat(face[..., None], 3, axis=2), 48, **p)
            ref = data[f"{name}__{s}__{k}"]
            diff = np.abs(got.astype(int) - ref.astype(int))
            assert diff.max() <= 1 and diff.mean() < 0.01, (name, s, k, diff.max(), diff.mean())


def test_the_family_is_disjoint_from_the_test_corruptions_and_seeded():
    assert not set(HELD_OUT) & set(CORRUPTIONS) and "saturate" not in HELD_OUT
    faces = np.random.default_rng(0).integers(0, 256, (6, 48, 48), dtype=np.uint8)
    for name in HELD_OUT:
        a, b = corrupt(faces, name, 3, seed=1), corrupt(faces, name, 3, seed=1)
        assert (a == b).all() and a.shape == faces.shape and a.dtype == np.uint8, name


@pytest.mark.parametrize("name", list(heldout.SHIFTS))
def test_every_new_shift_changes_a_gray_face_more_with_severity(name):
    y, x = np.mgrid[0:48, 0:48]
    face = (128 + 60 * np.sin(x / 3.0) * np.cos(y / 4.0)).astype(np.uint8)  # a gray, textured pattern
    faces = np.repeat(face[None], 32, axis=0)
    change = [np.abs(corrupt(faces, name, s, seed=0).astype(float) - faces).mean() for s in (1, 3, 5)]
    assert change[0] > 0.5 and change[2] > change[0], (name, change)
