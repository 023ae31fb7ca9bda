"""Calibrate to a site (ferroute calibrate-site): the promise re-made on a user's photos, the
overlay folder working wherever a model folder does, and its refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import ferroute
from ferroute.cli import app

pytest.importorskip("skimage")  # the non-face probe (train extra)
runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "photos_dev" / "images"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("base") / "model"
    from ferroute.router import resolve_model_dir

    shutil.copytree(resolve_model_dir("default"), d)
    return d


@pytest.fixture(scope="module")
def site(base, tmp_path_factory) -> Path:
    if not PHOTOS.is_dir():
        pytest.skip("needs ../shared/data/photos_dev")
    out = tmp_path_factory.mktemp("site") / "site"
    photos = [str(p) for p in sorted(PHOTOS.glob("*.jpg"))[:130]]
    res = runner.invoke(app, ["calibrate-site", *photos, "--out", str(out), "--model", str(base), "--no-corruptions"])
    assert res.exit_code == 0, res.output
    return out


def test_the_site_folder_states_its_promise_and_names_its_base_by_digest(site, base):
    doc = json.loads((site / "site.json").read_text())
    assert doc["base_model"] == str(base.resolve()) and len(doc["base_digest"]) == 16
    assert doc["n_faces"] >= 100 and doc["promise"]["reject_rate_upper_95"] < 0.08
    assert not list(site.glob("*.safetensors")) and not list(site.glob("*.onnx"))  # nothing copied
    report = (site / "site_report.md").read_text()
    assert "non-face probe" in report and "promise" in report and (site / "site_rejected.png").is_file()


def test_route_serve_and_the_api_take_the_site_folder(site):
    from fastapi.testclient import TestClient

    from ferroute.serve.app import create_app

    r = ferroute.load(site)
    assert r.site is not None and "this site's photos" in r.router.guarantee()["statement"]
    assert r.router.thresholds["shift_z"] == json.loads((site / "site.json").read_text())["z_threshold"]
    photo = sorted(PHOTOS.glob("*.jpg"))[500]
    assert r.route(photo)[0]["decision"] in ("accept", "ambiguous", "reject")
    res = runner.invoke(app, ["route", str(photo), "--model", str(site)])
    assert res.exit_code == 0, res.output
    client = TestClient(create_app(r, token=""))
    got = client.post("/v1/route", files=[("files", (photo.name, photo.read_bytes(), "image/jpeg"))])
    assert got.status_code == 200 and got.json()["results"][0]["faces"]


def test_a_site_whose_base_model_changed_is_exit_2(site, base):
    router = base / "router.json"
    before = router.read_text()
    try:
        router.write_text(before.replace('"reject_rate": 0.05', '"reject_rate": 0.06'))
        res = runner.invoke(app, ["route", str(ROOT / "examples" / "clear_face.png"), "--model", str(site)])
        assert res.exit_code == 2 and "has changed" in res.output, res.output
    finally:
        router.write_text(before)


def test_too_few_faces_is_refused_naming_how_many_are_needed(tmp_path):
    res = runner.invoke(app, ["calibrate-site", str(ROOT / "examples"), "--out", str(tmp_path / "s"), "--no-corruptions"])
    assert res.exit_code == 2 and "needs at least" in res.output and not (tmp_path / "s" / "site.json").exists(), res.output


def test_a_site_of_non_faces_is_refused_by_the_non_face_guard(tmp_path):
    """Noise crops given as the site's "faces" would loosen the threshold until non-faces pass."""
    rng = np.random.default_rng(0)
    d = tmp_path / "noise"
    d.mkdir()
    for k in range(130):
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(d / f"{k:03d}.png")
    res = runner.invoke(app, ["calibrate-site", str(d), "--out", str(tmp_path / "s"), "--no-corruptions"])
    assert res.exit_code == 2 and "non-face probe" in res.output and not (tmp_path / "s" / "site.json").exists(), res.output
