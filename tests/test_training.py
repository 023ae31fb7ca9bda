import json

import numpy as np
import pytest
import torch

from ferroute.evaluate.ferplus import load_split
from ferroute.train.ensemble import Ensemble
from ferroute.train.fit import (
    TrainConfig,
    augment_batch,
    soft_cross_entropy,
    train_ensemble,
)


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


def test_a_run_in_progress_loads_its_finished_members_with_partial(fake_ferplus, tmp_path):
    from ferroute.train.backbones import ModelError

    tr, va = load_split("train", fake_ferplus), load_split("valid", fake_ferplus)
    tc = TrainConfig(epochs=1, batch_size=16, pretrained=False)
    out = train_ensemble(tr, va, tmp_path / "m", backbone_kwargs={"width": 4, "depth": 2}, members=3, tc=tc, progress=False, max_new=2)
    assert not (out / "config.json").exists()
    with pytest.raises(ModelError, match="no config.json"):
        Ensemble.load(out)
    ens = Ensemble.load(out, partial=True)
    assert ens.num_members == 2 and ens.predict_proba(tr.images[:3]).shape == (3, 2, 8)
    log = json.loads((out / "train_log.json").read_text())
    (out / "train_log.json").write_text(json.dumps({**log, "backbone_kwargs": {"width": 4, "checkpoint_path": "/x"}}))
    with pytest.raises(ModelError, match="checkpoint_path"):  # the log obeys config.json's allow-list
        Ensemble.load(out, partial=True)


def test_an_interrupted_member_continues_from_its_last_epoch_to_the_same_weights(fake_ferplus, tmp_path, monkeypatch):
    import ferroute.train.fit as training
    from ferroute.train.fit import train_member

    tr, va = load_split("train", fake_ferplus), load_split("valid", fake_ferplus)
    tc = TrainConfig(epochs=3, batch_size=16, pretrained=False, threads=1)
    kw = {"width": 4, "depth": 2}
    whole, _, log_whole = train_member(tr, va, "cnn", kw, tc, seed=3, progress=False)
    ckpt = tmp_path / "member_0.partial.pt"
    real, calls = training._valid_accuracy, []

    def dies_in_epoch_2(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run is killed during epoch 2
        return real(*a, **k)

    monkeypatch.setattr(training, "_valid_accuracy", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_member(tr, va, "cnn", kw, tc, seed=3, progress=False, checkpoint=ckpt)
    monkeypatch.setattr(training, "_valid_accuracy", real)
    assert ckpt.is_file()
    resumed, _, log = train_member(tr, va, "cnn", kw, tc, seed=3, progress=False, checkpoint=ckpt)
    assert [e["epoch"] for e in log["epochs"]] == [1, 2, 3]
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    # a checkpoint of another seed is not used
    other, _, log_other = train_member(tr, va, "cnn", kw, tc, seed=4, progress=False, checkpoint=ckpt)
    assert [e["epoch"] for e in log_other["epochs"]] == [1, 2, 3]


def test_majority_target_uses_labelled_faces_only(fake_ferplus, tmp_path):
    tr = load_split("train", fake_ferplus)
    tc = TrainConfig(epochs=1, batch_size=16, target="majority", pretrained=False)
    out = train_ensemble(tr, None, tmp_path / "m", backbone_kwargs={"width": 4, "depth": 2}, members=1, tc=tc, progress=False)
    assert json.loads((out / "config.json").read_text())["meta"]["train"]["target"] == "majority"


def test_precision_choice_resolves_and_rejects_typos():
    from ferroute.train.backbones import use_bf16

    assert use_bf16("bf16", "cpu") and not use_bf16("fp32", "cpu")
    with pytest.raises(ValueError, match="precision"):
        use_bf16("half", "cpu")


def _teacher(fake_ferplus, path, tta="hflip", members=2):
    tr, va = load_split("train", fake_ferplus), load_split("valid", fake_ferplus)
    tc = TrainConfig(epochs=1, batch_size=16, pretrained=False)
    out = train_ensemble(tr, va, path, backbone_kwargs={"width": 4, "depth": 2}, members=members, tc=tc, progress=False)
    cfg = json.loads((out / "config.json").read_text())
    cfg["meta"]["inference"] = {"tta": tta}
    (out / "config.json").write_text(json.dumps(cfg))
    return out, tr, va


def test_teacher_targets_are_the_members_mean_over_its_views():
    from ferroute.train.backbones import create_backbone
    from ferroute.train.ensemble import TTA_VIEWS
    from ferroute.train.fit import Teacher

    model, _ = create_backbone("cnn", width=4, depth=2)
    t = Teacher(model.eval(), TTA_VIEWS["hflip"])
    x = torch.rand(6, 1, 48, 48)
    y = t.targets(x, bf16=False)
    with torch.no_grad():
        want = (model(x).softmax(-1) + model(x.flip(-1)).softmax(-1)) / 2
    torch.testing.assert_close(y, want)
    torch.testing.assert_close(t.targets(x.flip(-1), bf16=False), y)  # the mirror image has the same target


def test_distilled_model_starts_from_its_teacher_and_needs_no_views(fake_ferplus, tmp_path):
    teacher, tr, va = _teacher(fake_ferplus, tmp_path / "t")
    tc = TrainConfig(epochs=1, batch_size=16, lr=1e-9, distill_from=str(teacher))
    out = train_ensemble(tr, va, tmp_path / "s", members=2, tc=tc, progress=False)
    student, t = Ensemble.load(out), Ensemble.load(teacher)
    assert student.tta == "none" and student.config == t.config
    assert json.loads((out / "config.json").read_text())["meta"]["distilled_from"]["tta"] == "hflip"
    t.configure(tta="none")
    # a negligible learning rate: each member is still its teacher's copy (BatchNorm statistics aside)
    s_w = student.members[1].state_dict()
    for k, v in t.members[1].state_dict().items():
        if "running" not in k and "num_batches" not in k:
            torch.testing.assert_close(s_w[k], v, atol=1e-6, rtol=0)


def test_distillation_refuses_what_it_cannot_do(fake_ferplus, tmp_path):
    teacher, tr, va = _teacher(fake_ferplus, tmp_path / "t", tta="none")
    with pytest.raises(ValueError, match="nothing to distil"):
        train_ensemble(tr, va, tmp_path / "s", members=1, tc=TrainConfig(epochs=1, distill_from=str(teacher)), progress=False)
    cfg = json.loads((teacher / "config.json").read_text())
    cfg["meta"]["inference"] = {"tta": "hflip"}
    (teacher / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="has 2 member"):
        train_ensemble(tr, va, tmp_path / "s", members=3, tc=TrainConfig(epochs=1, distill_from=str(teacher)), progress=False)
    with pytest.raises(ValueError, match="teacher's architecture"):
        train_ensemble(tr, va, tmp_path / "s", backbone_kwargs={"width": 8}, members=1,
                       tc=TrainConfig(epochs=1, distill_from=str(teacher)), progress=False)


def test_deploy_augmentations_are_seeded_bounded_and_vary_by_face():
    import torch

    from ferroute.train.fit import deploy_augment_batch

    x = torch.rand(32, 1, 48, 48)
    a = deploy_augment_batch(x, torch.Generator().manual_seed(3))
    b = deploy_augment_batch(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b)  # reproducible from the generator
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    changed = (a - x).abs().flatten(1).mean(1) > 1e-3
    assert int(changed.sum()) >= 16  # each face meets each degradation with its own chance: most meet one
