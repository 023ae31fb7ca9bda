import json

import numpy as np
import pytest
import torch

from ferroute.data import load_split
from ferroute.ensemble import Ensemble
from ferroute.training import TrainConfig, augment_batch, soft_cross_entropy, train_ensemble


def test_soft_cross_entropy_is_minimised_by_the_target():
    t = torch.tensor([[0.7, 0.3]])
    good = soft_cross_entropy(torch.log(t), t)
    bad = soft_cross_entropy(torch.log(torch.tensor([[0.3, 0.7]])), t)
    assert good < bad


def test_augment_keeps_shape_and_is_seeded():
    x = torch.rand(8, 1, 48, 48)
    a = augment_batch(x, torch.Generator().manual_seed(0))
    b = augment_batch(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)


def test_train_resume_member_by_member(fake_ferplus, tmp_path):
    tr, va = load_split("train", fake_ferplus), load_split("valid", fake_ferplus)
    tc = TrainConfig(epochs=1, batch_size=16, pretrained=False)
    out = train_ensemble(tr, va, tmp_path / "m", backbone_kwargs={"width": 4, "depth": 2}, members=2, tc=tc, progress=False)
    log = json.loads((out / "train_log.json").read_text())
    assert set(log["members"]) == {"0", "1"} and log["members"]["1"]["seed"] == 1
    stamp = (out / "member_0.safetensors").stat().st_mtime_ns
    train_ensemble(tr, va, out, backbone_kwargs={"width": 4, "depth": 2}, members=3, tc=tc, progress=False)
    assert (out / "member_0.safetensors").stat().st_mtime_ns == stamp  # kept, not retrained
    ens = Ensemble.load(out)
    assert ens.num_members == 3
    p = ens.predict_proba(tr.images[:4])
    assert p.shape == (4, 3, 8)
    # members differ only by seed, so they disagree a little
    assert np.abs(p[:, 0] - p[:, 1]).max() > 0


def test_majority_target_uses_labelled_faces_only(fake_ferplus, tmp_path):
    tr = load_split("train", fake_ferplus)
    tc = TrainConfig(epochs=1, batch_size=16, target="majority", pretrained=False)
    out = train_ensemble(tr, None, tmp_path / "m", backbone_kwargs={"width": 4, "depth": 2}, members=1, tc=tc, progress=False)
    assert json.loads((out / "config.json").read_text())["meta"]["train"]["target"] == "majority"


def test_precision_choice_resolves_and_rejects_typos():
    from ferroute.backbones import use_bf16

    assert use_bf16("bf16", "cpu") and not use_bf16("fp32", "cpu")
    with pytest.raises(ValueError, match="precision"):
        use_bf16("half", "cpu")
