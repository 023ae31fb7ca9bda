import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

try:  # a core install (no torch) runs the tests marked `core`; the rest need ferroute[train]
    import torch
except ImportError:
    torch = None

# CI replays the same generated examples every run (a failure there is reproducible);
# locally hypothesis explores new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

if torch is not None:
    torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_collection_modifyitems(config, items):
    """Without torch only the `core` tests can run: the others are skipped, saying why."""
    if torch is None:
        skip = pytest.mark.skip(reason='needs PyTorch: pip install "ferroute[train]" (this is a core install)')
        for item in items:
            if "core" not in item.keywords:
                item.add_marker(skip)


def _ferplus_dir() -> Path | None:
    raw = os.environ.get("FERPLUS_DIR")
    if raw and (Path(raw) / "FER2013Test" / "label.csv").is_file():
        return Path(raw)
    return None


@pytest.fixture(scope="session")
def ferplus_dir() -> Path:
    d = _ferplus_dir()
    if d is None:
        pytest.skip("FERPlus not found: set FERPLUS_DIR to the folder holding FER2013Train/Valid/Test to run data tests")
    return d


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    # one shared cache per test session, never the user's
    root = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("FERROUTE_CACHE", str(root))


def write_fake_ferplus(root: Path, n: int = 60, seed: int = 0) -> Path:
    """A tiny FERPlus-layout folder with random faces and votes (for fast tests)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, folder in (("train", "FER2013Train"), ("valid", "FER2013Valid"), ("test", "FER2013Test")):
        d = root / folder
        d.mkdir(parents=True)
        lines = []
        for i in range(n):
            name = f"fer{split}{i:05d}.png"
            Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(d / name)
            votes = np.zeros(10, int)
            votes[rng.integers(0, 8)] += 6
            votes[rng.integers(0, 8)] += rng.integers(0, 5)
            lines.append(f'{name},"(0, 0, 48, 48)",' + ",".join(map(str, votes)))
        (d / "label.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def fake_ferplus(tmp_path) -> Path:
    return write_fake_ferplus(tmp_path / "ferplus")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random-init 3-member ensemble with a router calibrated on random faces."""
    import json

    from ferroute.train.backbones import create_backbone
    from ferroute.train.ensemble import Ensemble
    from ferroute.decide.routing import UncertaintyRouter

    d = tmp_path_factory.mktemp("tiny_model")
    members = []
    for k in range(3):
        torch.manual_seed(k)
        net, cfg = create_backbone("cnn", width=4, depth=2)
        members.append(net)
    ens = Ensemble(members, cfg)
    ens.save(d)
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (200, 48, 48), dtype=np.uint8)
    router = UncertaintyRouter().fit(ens.predict_proba(faces), rng.random(200))
    (d / "router.json").write_text(json.dumps(router.to_dict()))
    (d / "MODEL_CARD.md").write_text("# tiny test model\n")
    return d
