import numpy as np
import pytest
from typer.testing import CliRunner

from ferroute.cli import app
from ferroute.ensemble import Ensemble

pytest.importorskip("onnxruntime")


def test_onnx_export_parity(tiny_model_dir, tmp_path):
    from ferroute.export import OnnxEnsemble

    out = tmp_path / "m.onnx"
    res = CliRunner().invoke(app, ["export", "--format", "onnx", str(tiny_model_dir), str(out)])
    assert res.exit_code == 0, res.output
    onnx_ens = OnnxEnsemble(out, threads=1)
    faces = np.random.default_rng(0).integers(0, 256, (37, 48, 48), dtype=np.uint8)
    ref = Ensemble.load(tiny_model_dir).predict_proba(faces)
    got = onnx_ens.predict_proba(faces, batch_size=16)
    assert got.shape == ref.shape == (37, 3, 8)
    assert np.abs(got - ref).max() <= 1e-4
