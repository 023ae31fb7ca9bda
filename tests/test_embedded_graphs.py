"""The ONNX graphs shipped with the embedded models are their weights' (no drift), and the
core runs them like the torch path."""

import numpy as np
import pytest

from ferroute.train.ensemble import Ensemble
from ferroute.train.export import export_onnx, resize_matrix, stored_half
from ferroute.engine.onnxrun import GRAPH_FILE, OnnxEnsemble, load_graph, weights_digest
from ferroute.router import EMBEDDED_MODELS, FERRouter, resolve_model_dir

pytest.importorskip("onnx")


@pytest.mark.parametrize("name", list(EMBEDDED_MODELS))
def test_shipped_graph_matches_a_fresh_export(name, tmp_path):
    d = resolve_model_dir(name)
    shipped = load_graph(d, threads=1)
    fresh = OnnxEnsemble(export_onnx(Ensemble.load(d), tmp_path / GRAPH_FILE, weights_digest=weights_digest(d), half=stored_half(d)),
                         threads=1)
    faces = np.random.default_rng(0).integers(0, 256, (64, 48, 48), dtype=np.uint8)
    assert shipped.tta == fresh.tta == Ensemble.load(d).tta
    assert np.abs(shipped.predict_proba(faces) - fresh.predict_proba(faces)).max() <= 1e-4, \
        f"{d / GRAPH_FILE} is stale: run `python scripts/export_embedded.py`"


@pytest.mark.parametrize("size", [24, 64, 80])
def test_the_resize_in_the_graph_is_preprocess_resize(size):
    import torch
    import torch.nn.functional as F

    x = torch.rand(5, 1, 48, 48)
    ref = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    w = resize_matrix(48, size)
    assert torch.allclose(w @ x @ w.t(), ref, atol=1e-5)


def test_an_80px_member_exports_with_its_resize_inside(tmp_path):
    from ferroute.train.backbones import create_backbone

    members = [create_backbone("cnn", width=4, depth=2, input_size=80)[0] for _ in range(2)]
    cfg = create_backbone("cnn", width=4, depth=2, input_size=80)[1]
    ens = Ensemble(members, cfg)
    got = OnnxEnsemble(export_onnx(ens, tmp_path / "m.onnx"), threads=1)
    faces = np.random.default_rng(2).integers(0, 256, (7, 48, 48), dtype=np.uint8)
    assert np.abs(got.predict_proba(faces) - ens.configure(precision="fp32").predict_proba(faces)).max() <= 1e-4


@pytest.mark.data
@pytest.mark.parametrize("name", list(EMBEDDED_MODELS))
def test_core_and_torch_path_decide_alike_on_real_faces(name, ferplus_dir):
    from ferroute.evaluate.ferplus import load_split

    faces = load_split("test", ferplus_dir).images[:1024]
    a = [r["decision"] for r in FERRouter.load(name, backend="onnx").route_faces(faces)]
    b = [r["decision"] for r in FERRouter.load(name, backend="torch").route_faces(faces)]
    assert np.mean([x == y for x, y in zip(a, b)]) >= 0.99
