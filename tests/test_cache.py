"""The cache: atomic, verified, rebuilt when damaged, safe for runs sharing it, keyed by content."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferroute.engine import cache
from ferroute.evaluate.corrupted_sets import corrupted_set
from ferroute.evaluate.ferplus import load_split


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FERROUTE_CACHE", str(tmp_path / "cache"))


def entries(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.rglob(pattern) if not p.name.startswith("."))


def test_store_then_find_and_a_damaged_entry_is_removed(tmp_path):
    stem = tmp_path / "x"
    path = cache.store(stem, ".npy", lambda tmp: np.save(tmp, np.arange(1000)))
    assert path is not None and cache.find(stem, ".npy") == path
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    data = path.read_bytes()
    path.write_bytes(data[:200] + b"\0" * (len(data) - 200))  # same length, zeroed: loads silently in numpy
    with pytest.warns(UserWarning, match="damaged cache entry"):
        assert cache.find(stem, ".npy") is None
    assert not path.exists()


def test_a_folder_in_an_entrys_place_is_removed_and_the_entry_cached_again(tmp_path):
    stem = tmp_path / "x"
    path = cache.store(stem, ".npy", lambda tmp: np.save(tmp, np.arange(10)))
    path.unlink()
    path.mkdir()
    (path / "inside.txt").write_text("x")
    with pytest.warns(UserWarning, match="not a regular file; removed"):
        assert cache.find(stem, ".npy") is None
    assert not path.exists()
    path.mkdir()  # a folder where the new entry goes: store replaces it
    again = cache.store(stem, ".npy", lambda tmp: np.save(tmp, np.arange(10)))
    assert again == path and again.is_file() and cache.find(stem, ".npy") == again


@pytest.mark.parametrize("damage", ["zero", "truncate"])
def test_a_damaged_split_cache_is_detected_and_rebuilt(fake_ferplus, damage):
    first = load_split("valid", fake_ferplus)
    (hit,) = entries(Path(os.environ["FERROUTE_CACHE"]), "ferplus-valid-*.npz")
    data = hit.read_bytes()
    hit.write_bytes(b"\0" * len(data) if damage == "zero" else data[: len(data) // 2])
    with pytest.warns(UserWarning, match="damaged cache entry"):
        again = load_split("valid", fake_ferplus)
    assert np.array_equal(again.images, first.images) and np.array_equal(again.votes, first.votes)
    assert len(entries(Path(os.environ["FERROUTE_CACHE"]), "ferplus-valid-*.npz")) == 1  # rebuilt


def test_a_replaced_image_is_a_new_cache_entry(fake_ferplus):
    before = load_split("test", fake_ferplus)
    name = before.files[0]
    Image.fromarray(np.full((48, 48), 7, np.uint8)).save(fake_ferplus / "FER2013Test" / name)
    after = load_split("test", fake_ferplus)
    assert (after.images[0] == 7).all() and not (before.images[0] == 7).all()


def test_damaged_corruption_sets_are_recomputed_to_the_same_values(tmp_path):
    faces = np.random.default_rng(0).integers(0, 256, (16, 48, 48), dtype=np.uint8)
    first = {k: np.array(v) for k, v in corrupted_set(faces, ["gaussian_noise", "contrast"], [1, 5], workers=1, progress=False).items()}
    victim = entries(Path(os.environ["FERROUTE_CACHE"]) / "corruptions", "contrast-5.*.npy")[0]
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.warns(UserWarning, match="damaged cache entry"):
        again = corrupted_set(faces, ["gaussian_noise", "contrast"], [1, 5], workers=1, progress=False)
    assert all(np.array_equal(first[k], again[k]) for k in first)


CONCURRENT = """
import json, sys
import numpy as np
from ferroute.evaluate.corrupted_sets import corrupted_set
from ferroute.evaluate.ferplus import load_split
s = load_split("valid", sys.argv[1])
sets = corrupted_set(s.images, ["gaussian_noise", "glass_blur", "contrast"], [1, 3, 5], workers=1, progress=False)
print(json.dumps({"faces": int(s.images.sum()), "sets": {f"{k[0]}-{k[1]}": int(np.asarray(v, np.int64).sum()) for k, v in sets.items()}}))
"""


def test_two_runs_sharing_one_empty_cache_both_finish_with_the_same_results(fake_ferplus, tmp_path):
    env = dict(os.environ, FERROUTE_CACHE=str(tmp_path / "shared-cache"))
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(fake_ferplus)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    results = [json.loads(o[0]) for o in outs]
    assert results[0] == results[1] == results[2]
    assert not [p for p in (tmp_path / "shared-cache").rglob(".*tmp*")]  # no temporary file left
