import numpy as np
import pytest
from typer.testing import CliRunner

from ferroute.cli import app
from ferroute.train.ensemble import Ensemble

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("tta", ["none", "hflip", "hflip-shift"])
def test_onnx_export_parity(tiny_model_dir, tmp_path, tta):
    import shutil

    from ferroute.train.export import OnnxEnsemble

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    ens = Ensemble.load(model)
    ens.configure(tta=tta)
    ens.save(model)
    out = tmp_path / "m.onnx"
    res = CliRunner().invoke(app, ["export", "--format", "onnx", str(model), str(out)])
    assert res.exit_code == 0, res.output
    onnx_ens = OnnxEnsemble(out, threads=1)
    assert onnx_ens.tta == tta
    faces = np.random.default_rng(0).integers(0, 256, (37, 48, 48), dtype=np.uint8)
    ref = Ensemble.load(model).predict_proba(faces)
    got = onnx_ens.predict_proba(faces, batch_size=16)
    assert got.shape == ref.shape == (37, 3, 8)
    assert np.abs(got - ref).max() <= 1e-4


def test_api_and_cli_onnx_backend_match_torch(tiny_model_dir, tmp_path):
    from PIL import Image

    import ferroute

    face = np.random.default_rng(4).integers(0, 256, (48, 48), dtype=np.uint8)
    a = ferroute.load(tiny_model_dir)
    b = ferroute.load(tiny_model_dir, backend="onnx")
    ra, rb = a.route(face)[0], b.route(face)[0]
    assert ra["decision"] == rb["decision"]
    assert abs(ra["aleatoric"] - rb["aleatoric"]) < 1e-3
    Image.fromarray(face).save(tmp_path / "f.png")
    res = CliRunner().invoke(app, ["route", str(tmp_path / "f.png"), "--model", str(tiny_model_dir), "--backend", "onnx", "--format", "jsonl"])
    assert res.exit_code == 0 and ra["decision"] in res.stdout


def test_export_of_a_bf16_model_is_a_float32_graph(tiny_model_dir, tmp_path):
    from ferroute.train.export import OnnxEnsemble, export_onnx

    ens = Ensemble.load(tiny_model_dir)
    faces = np.random.default_rng(5).integers(0, 256, (9, 48, 48), dtype=np.uint8)
    ref = ens.predict_proba(faces)
    ens.configure(precision="bf16")
    export_onnx(ens, tmp_path / "m.onnx")
    assert ens.precision == "bf16"  # restored after export
    got = OnnxEnsemble(tmp_path / "m.onnx", threads=1).predict_proba(faces)
    assert np.abs(got - ref).max() <= 1e-4


def test_onnx_export_parity_for_a_stride_two_stem(tmp_path):
    from ferroute.train.backbones import create_backbone
    from ferroute.train.export import OnnxEnsemble, export_onnx

    members = [create_backbone("cnn", width=4, depth=2, stem_stride=2) for _ in range(2)]
    ens = Ensemble([m for m, _ in members], members[0][1])
    ens.configure(tta="hflip")
    export_onnx(ens, tmp_path / "m.onnx")
    faces = np.random.default_rng(1).integers(0, 256, (9, 48, 48), dtype=np.uint8)
    got = OnnxEnsemble(tmp_path / "m.onnx", threads=1).predict_proba(faces)
    assert np.abs(got - ens.predict_proba(faces)).max() <= 1e-4


def test_vit_ensembles_export_their_inference_graph_with_parity(tmp_path):
    from ferroute.train.export import OnnxEnsemble, export_onnx
    from tests.test_ensemble import tiny_vit_ensemble

    ens = tiny_vit_ensemble(2)  # evaluation runs the graph, patch embedding as one GEMM
    onnx_ens = OnnxEnsemble(export_onnx(ens, tmp_path / "vit.onnx"), threads=1)
    faces = np.random.default_rng(1).integers(0, 256, (11, 48, 48), dtype=np.uint8)
    got, ref = onnx_ens.predict_proba(faces, batch_size=4), ens.predict_proba(faces)  # batches of 4 and 3
    assert got.shape == ref.shape == (11, 2, 8)
    assert np.abs(got - ref).max() <= 1e-4


def test_half_stored_weights_halve_the_files_and_keep_the_answers(tmp_path):
    import torch

    from ferroute.engine.onnxrun import GRAPH_FILE, load_graph
    from ferroute.train.backbones import create_backbone
    from ferroute.train.export import halve_weights, stored_half, write_graph

    members = [create_backbone("cnn", width=16, depth=2)[0] for _ in range(2)]
    ens = Ensemble(members, create_backbone("cnn", width=16, depth=2)[1]).configure(precision="fp32")
    faces = np.random.default_rng(3).integers(0, 256, (16, 48, 48), dtype=np.uint8)
    full = ens.predict_proba(faces)
    d = ens.save(tmp_path / "m")
    write_graph(d)
    sizes = [(d / f).stat().st_size for f in ("member_0.safetensors", GRAPH_FILE)]
    assert not stored_half(d)
    res = CliRunner().invoke(app, ["export", str(d), "--half"])
    assert res.exit_code == 0 and "float16" in res.output, res.output
    assert stored_half(d)
    assert halve_weights(d) == 0  # already half: nothing more to save
    write_graph(d)  # a half model's graph stores half weights too
    assert (d / "member_0.safetensors").stat().st_size < 0.6 * sizes[0]
    assert (d / GRAPH_FILE).stat().st_size < 0.6 * sizes[1]
    back = Ensemble.load(d).configure(precision="fp32")
    assert all(p.dtype == torch.float32 for p in back.parameters())  # loading casts back
    graph = load_graph(d, threads=1).predict_proba(faces)
    assert np.abs(back.predict_proba(faces) - full).max() < 5e-3  # float16 rounding of the weights only
    assert np.abs(graph - back.predict_proba(faces)).max() < 1e-3
