"""Ray Data: the same decisions as the local path, error rows for bad files, --resume, one schema."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from ferroute.cli import app

ray = pytest.importorskip("ray", reason="pip install 'ferroute[ray]' to test the Ray engine")
pq = pytest.importorskip("pyarrow.dataset")
runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture
def inputs(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for p in EXAMPLES.iterdir():
        shutil.copy(p, d / p.name)
    rng = np.random.default_rng(0)
    for k in range(6):
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(d / f"face{k}.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    return d


def table(folder: Path):
    return pq.dataset(str(folder)).to_table()


def decisions(t) -> dict:
    return {(r["source"].split("/")[-1], r["face"]): (r["decision"], r["emotion"]) for r in t.select(["source", "face", "decision", "emotion"]).to_pylist()}


def test_ray_and_local_give_the_same_rows(local_ray, inputs, tiny_model_dir, tmp_path):
    res = runner.invoke(app, ["route", str(inputs), "--model", str(tiny_model_dir), "--out", str(tmp_path / "local.parquet")])
    assert res.exit_code == 1, res.output  # broken.jpg
    res = runner.invoke(app, ["route", str(inputs), "--model", str(tiny_model_dir), "--engine", "ray", "--out", str(tmp_path / "ray.parquet")])
    assert res.exit_code == 0, res.output
    local, remote = table(tmp_path / "local.parquet"), table(tmp_path / "ray.parquet")
    assert local.schema == remote.schema
    assert decisions(local) == decisions(remote)
    rows = remote.to_pylist()
    assert {r["source"].split("/")[-1] for r in rows} == {p.name for p in inputs.iterdir()}  # a row for every input
    broken = [r for r in rows if r["source"].endswith("broken.jpg")]
    assert len(broken) == 1 and broken[0]["decision"] == "error" and "broken.jpg" in broken[0]["error"]
    coffee = [r for r in rows if r["source"].endswith("no_face_coffee.jpg")]
    assert coffee[0]["decision"] == "no_face" and coffee[0]["face"] is None


def test_ray_resume_routes_only_what_is_new(local_ray, inputs, tiny_model_dir, tmp_path):
    out = tmp_path / "r.parquet"
    assert runner.invoke(app, ["route", str(inputs), "--model", str(tiny_model_dir), "--engine", "ray", "--out", str(out)]).exit_code == 0
    n = table(out).num_rows
    Image.new("L", (48, 48), 90).save(inputs / "new.png")
    res = runner.invoke(app, ["route", str(inputs), "--model", str(tiny_model_dir), "--engine", "ray", "--out", str(out), "--resume"])
    assert res.exit_code == 0 and "routed 1 inputs" in res.output, res.output
    t = table(out)
    assert t.num_rows == n + 1 and len(set(t.column("source").to_pylist())) == len(list(inputs.iterdir()))


def test_route_dataset_composes_with_user_datasets(local_ray, tiny_model_dir):
    from ferroute.output.scale import route_dataset

    ds = ray.data.from_items([{"path": str(EXAMPLES / "clear_face.png")}, {"path": "/nope/missing.png"}])
    rows = {r["source"]: r for r in route_dataset(ds, model=str(tiny_model_dir)).take_all()}
    assert rows["/nope/missing.png"]["decision"] == "error", rows
    assert rows[str(EXAMPLES / "clear_face.png")]["decision"] in {"accept", "ambiguous", "reject"}, rows
