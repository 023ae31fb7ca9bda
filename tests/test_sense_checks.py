"""Model folders checked for sense, not just shape, and the CLI's unreadable inputs and
--resume (issue: hold a crowd and refuse only what cannot be done)."""

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ferroute.cli import app
from ferroute.router import resolve_model_dir

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
runner = CliRunner()
pytestmark = pytest.mark.core


@pytest.fixture
def model(tmp_path):
    d = tmp_path / "model"
    shutil.copytree(resolve_model_dir("default"), d)
    return d


@pytest.mark.parametrize("key,value", [("z_threshold", float("nan")), ("z_threshold", "abc"), ("aleatoric_threshold", None),
                                       ("vote_temperature", -1.0), ("ambiguous_below", 1.5)])
def test_a_threshold_that_makes_no_sense_is_exit_2_naming_the_file(model, key, value):
    doc = json.loads((model / "router.json").read_text())
    doc["state"][key] = value
    (model / "router.json").write_text(json.dumps(doc))
    res = runner.invoke(app, ["route", str(EXAMPLES / "clear_face.png"), "--model", str(model)])
    assert res.exit_code == 2, res.output
    assert "router.json" in res.output and key in res.output


@pytest.mark.parametrize("doc", [[], {"state": []}, "x", {"kind": "uar"}, {"reject_rate": 0.05, "n_bins": 10, "state": {}}])
def test_a_router_of_the_wrong_shape_is_exit_2_without_a_traceback(model, doc):
    (model / "router.json").write_text(json.dumps(doc))
    res = runner.invoke(app, ["route", str(EXAMPLES / "clear_face.png"), "--model", str(model)])
    assert res.exit_code == 2, res.output
    assert "router.json" in res.output and "Traceback" not in res.output and res.output.count("\n") <= 2, res.output


@pytest.mark.parametrize("key,value", [("width", 10**9), ("stage_convs", [1, 2, 10**6]), ("dropout", 5.0)])
def test_sizes_in_config_json_are_bounded_before_anything_is_built(model, key, value):
    pytest.importorskip("torch")
    cfg = json.loads((model / "config.json").read_text())
    cfg["backbone"]["kwargs"][key] = value
    (model / "config.json").write_text(json.dumps(cfg))
    (model / "ensemble.onnx").unlink()
    res = runner.invoke(app, ["route", str(EXAMPLES / "clear_face.png"), "--model", str(model), "--backend", "torch"])
    assert res.exit_code == 2 and key in res.output and "outside" in res.output, res.output


def test_a_zeroed_member_is_exit_2(model):
    import numpy as np

    pytest.importorskip("safetensors")
    from safetensors.numpy import load_file, save_file

    member = model / "member_0.safetensors"
    save_file({k: np.zeros_like(v) for k, v in load_file(str(member)).items()}, str(member))
    res = runner.invoke(app, ["route", str(EXAMPLES / "clear_face.png"), "--model", str(model)])
    assert res.exit_code == 2 and "ensemble.onnx" in res.output


def test_a_graph_of_zeroed_weights_is_refused_by_its_probe_faces(tmp_path, model):
    import numpy as np

    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    g = onnx.load(str(model / "ensemble.onnx"))
    for init in g.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.ndim >= 2:
            init.CopyFrom(numpy_helper.from_array(np.zeros_like(arr), init.name))
    for node in g.graph.node:  # the fused weights are Constant nodes
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    arr = numpy_helper.to_array(a.t)
                    if arr.dtype == np.float32 and arr.ndim >= 2:
                        a.t.CopyFrom(numpy_helper.from_array(np.zeros_like(arr)))
    onnx.save(g, str(model / "ensemble.onnx"))
    res = runner.invoke(app, ["route", str(EXAMPLES / "clear_face.png"), "--model", str(model)])
    assert res.exit_code == 2 and "ensemble.onnx" in res.output, res.output


def _deny(monkeypatch, *denied: Path):
    """Act as a user who may not read ``denied`` (tests run as root, who may read everything)."""
    real_access = os.access
    real_stat = Path.stat
    real_read = Path.read_text
    denied = tuple(str(d) for d in denied)

    def inside(p) -> bool:
        return any(str(p) == d or str(p).startswith(d + os.sep) for d in denied)

    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if inside(p) else real_access(p, mode, **kw))

    def stat(self, *a, **kw):
        if any(str(self).startswith(d + os.sep) for d in denied):
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *a, **kw)

    def read_text(self, *a, **kw):
        if inside(self):
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self, *a, **kw)

    monkeypatch.setattr(Path, "stat", stat)
    monkeypatch.setattr(Path, "read_text", read_text)


def test_unreadable_files_folders_and_lists_are_error_rows_and_the_rest_is_routed(tmp_path, monkeypatch):
    good = tmp_path / "good"
    good.mkdir()
    shutil.copy(EXAMPLES / "clear_face.png", good / "a.png")
    locked = tmp_path / "locked"
    locked.mkdir()
    shutil.copy(EXAMPLES / "clear_face.png", locked / "b.png")
    lst = tmp_path / "list.txt"
    lst.write_text(str(good / "a.png") + "\n")
    _deny(monkeypatch, locked, lst)
    res = runner.invoke(app, ["route", str(good), str(locked / "b.png"), str(lst), "--format", "jsonl"])
    items = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert res.exit_code == 1, res.output
    assert [("faces" in it) for it in items] == [True, False, False]
    assert "permission denied" in items[1]["error"].lower() and "list.txt" in items[2]["error"]


def test_resume_matches_inputs_by_resolved_path(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(3):
        shutil.copy(EXAMPLES / "clear_face.png", photos / f"{k}.png")
    out = tmp_path / "out.jsonl"
    assert runner.invoke(app, ["route", str(photos), "--format", "jsonl", "--out", str(out)]).exit_code == 0
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["route", "photos", "--format", "jsonl", "--out", str(out), "--resume"])
    assert res.exit_code == 0
    assert len(out.read_text().splitlines()) == 3


def test_a_cache_entry_that_is_not_a_regular_file_is_removed(tmp_path):
    from ferroute.engine import cache

    stem = tmp_path / "x"
    os.mkfifo(tmp_path / ("x." + "0" * cache.DIGEST_CHARS + ".onnx"))
    (tmp_path / ("x." + "1" * cache.DIGEST_CHARS + ".onnx")).symlink_to("/dev/zero")
    with pytest.warns(UserWarning, match="not a regular file"):
        assert cache.find(stem, ".onnx") is None
    assert not list(tmp_path.iterdir())


def test_one_zeroed_member_is_exit_2_on_backend_torch(model):
    """One member zeroed, four intact: the torch members are refused, naming the member."""
    import numpy as np

    pytest.importorskip("torch")
    from safetensors.numpy import load_file, save_file

    member = model / "member_2.safetensors"
    save_file({k: np.zeros_like(v) for k, v in load_file(str(member)).items()}, str(member))
    (model / "ensemble.onnx").unlink()
    res = runner.invoke(app, ["route", str(EXAMPLES / "clear_face.png"), "--model", str(model), "--backend", "torch"])
    assert res.exit_code == 2, res.output
    assert "member 2" in res.output and "zeroed" in res.output


def test_the_probe_check_names_a_still_member_whichever_backend_answers():
    """The check both backends run (a graph through onnxruntime, members through torch)."""
    import numpy as np

    from ferroute.engine.config import ModelError
    from ferroute.engine.sense import check_model, probe_inputs
    from ferroute.labels import EMOTIONS

    faces = probe_inputs()  # (7, 3, 8): members 0 and 2 vary with the face, member 1 does not
    x = faces.reshape(len(faces), -1).mean(1, keepdims=True) / 255.0
    p = np.concatenate([0.5 * x, 0.5 * (1 - x), np.full((len(faces), 6), 0.5 / 6)], 1)
    out = np.stack([p, np.full_like(p, 1 / 8), p], 1)
    with pytest.raises(ModelError, match="member 1 gives every probe face the same output"):
        check_model(out, "m", 3, EMOTIONS)
    check_model(out[:, [0, 2]], "m", 2, EMOTIONS)  # no member is still, no one is sure of the smile


def test_labels_out_of_order_are_exit_2_on_every_backend(model):
    """The labels in config.json reversed: on the core the graph no longer matches its folder;
    on torch the smiling probe face reads as another emotion with near certainty. Both exit 2."""
    cfg = json.loads((model / "config.json").read_text())
    cfg["backbone"]["labels"] = cfg["backbone"]["labels"][::-1]
    (model / "config.json").write_text(json.dumps(cfg))
    backends = ["onnx", "torch"] if __import__("importlib").util.find_spec("torch") else ["onnx"]
    for backend in backends:
        args = ["route", str(EXAMPLES / "clear_face.png"), "--model", str(model), "--backend", backend]
        if backend == "torch":
            (model / "ensemble.onnx").unlink(missing_ok=True)
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (backend, res.output)
        if backend == "onnx":  # config.json is part of the digest the graph was exported from
            assert "exported from other weights" in res.output, res.output
        else:
            assert "smiling face" in res.output and "order" in res.output, res.output
