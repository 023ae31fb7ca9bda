"""Train Deep Ensemble members (and the single LDL baseline) on FERPlus.

Members share architecture, data and schedule and differ only by their seed. Each
finished member is written at once, so an interrupted run resumes at the next member.

With ``TrainConfig.distill_from`` a trained model teaches a copy of itself: member k starts
from the teacher's member k and learns that member's output averaged over the teacher's
test-time views, so the result answers in one view what the teacher answers in several.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .backbones import (
    BackboneConfig,
    check_device,
    create_backbone,
    preprocess,
    use_bf16,
)
from ..evaluate.ferplus import FERPlusSplit
from .ensemble import Ensemble, save_member, write_config
from .graphs import TTA_VIEWS, _over_views, _softmax


@dataclass
class TrainConfig:
    """Schedule and targets shared by every member."""

    epochs: int = 12
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    target: Literal["soft", "majority"] = "soft"
    augment: bool = True
    #: also degrade faces as deployed ones are degraded: resolution loss, blur, contrast,
    #: gamma and sensor noise (:func:`deploy_augment_batch`)
    deploy_augment: bool = False
    seed: int = 0
    pretrained: bool = True
    threads: int | None = None
    device: str = "cpu"
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    #: teacher model directory: distil each of its members (see the module docstring)
    distill_from: str | None = None


def _targets(split: FERPlusSplit, target: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices used for training and their ``(N, C)`` target distributions."""
    if target == "soft":
        return np.arange(len(split)), split.distributions.astype(np.float32)
    if target == "majority":
        idx = np.flatnonzero(split.labels >= 0)
        onehot = np.eye(8, dtype=np.float32)[split.labels[idx]]
        return idx, onehot
    raise ValueError(f"target must be 'soft' or 'majority', got {target!r}")


def augment_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flip, shift, small rotation/scale and erasing on a float batch ``(B, 1, H, W)``.

    Random numbers come from the CPU generator ``gen`` (reproducible on any device).
    """
    b, dev = x.shape[0], x.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen).to(dev)

    flip = rand(b) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    angle = (rand(b) - 0.5) * (2 * math.pi * 15 / 360)
    scale = 1.0 + (rand(b) - 0.5) * 0.2
    shift = (rand(b, 2) - 0.5) * 0.2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # random erasing of one square patch on half of the faces
    h, w = x.shape[-2:]
    size = (rand(b) * 0.3 * h + 4).long()
    cy = (rand(b) * h).long()
    cx = (rand(b) * w).long()
    yy = torch.arange(h, device=dev).view(1, h, 1)
    xx = torch.arange(w, device=dev).view(1, 1, w)
    box = ((yy - cy.view(-1, 1, 1)).abs() < size.view(-1, 1, 1) // 2) & ((xx - cx.view(-1, 1, 1)).abs() < size.view(-1, 1, 1) // 2)
    box &= (rand(b) < 0.5).view(-1, 1, 1)
    return x.masked_fill(box.unsqueeze(1), 0.5)


def deploy_augment_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """What a deployed face meets, each on a random share of a float batch ``(B, 1, H, W)`` in
    [0, 1]: resolution loss (down to 16-40 px and back, 30 %), Gaussian blur (sigma 0.3-1.5,
    30 %), contrast (x0.6-1.4 about the mean, 50 %), gamma (0.7-1.5, 50 %) and sensor noise
    (sigma up to 0.03, 30 %). Random numbers from the CPU generator ``gen``."""
    b, h, w = x.shape[0], x.shape[-2], x.shape[-1]

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen).to(x.device)

    def pick(p: float) -> torch.Tensor:
        return (rand(b) < p).view(-1, 1, 1, 1)

    side = int(16 + rand(1).item() * 24)  # one size per batch: interpolate takes one
    low = F.interpolate(F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False),
                        size=(h, w), mode="bilinear", align_corners=False)
    x = torch.where(pick(0.3), low, x)
    sigma = 0.3 + rand(b) * 1.2
    r = torch.arange(-3, 4, device=x.device, dtype=x.dtype)
    k1 = torch.exp(-(r.view(1, -1) ** 2) / (2 * sigma.view(-1, 1) ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)  # (B, 7)
    k2 = (k1[:, :, None] * k1[:, None, :]).unsqueeze(1)  # (B, 1, 7, 7), one kernel per face
    blurred = F.conv2d(F.pad(x.transpose(0, 1), (3, 3, 3, 3), mode="replicate"), k2, groups=b).transpose(0, 1)
    x = torch.where(pick(0.3), blurred, x)
    mean = x.mean((-1, -2), keepdim=True)
    x = torch.where(pick(0.5), (x - mean) * (0.6 + 0.8 * rand(b)).view(-1, 1, 1, 1) + mean, x).clamp(0, 1)
    x = torch.where(pick(0.5), x.clamp_min(1e-4) ** (0.7 + 0.8 * rand(b)).view(-1, 1, 1, 1), x)
    noise = torch.randn(x.shape, generator=gen).to(x.device) * (0.03 * rand(b)).view(-1, 1, 1, 1)
    return torch.where(pick(0.3), x + noise, x).clamp(0, 1)


@dataclass
class Teacher:
    """One trained member and the test-time views whose mean output its student learns."""

    model: nn.Module
    views: tuple[tuple[bool, int, int], ...]

    def __post_init__(self) -> None:
        self.model.eval()  # once: nothing in training switches the teacher back

    @torch.no_grad()
    def targets(self, x: torch.Tensor, bf16: bool) -> torch.Tensor:
        """Preprocessed batch ``(B, C, S, S)`` -> the member's probabilities ``(B, K)``, mean over the views."""
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            return _over_views(lambda v: _softmax(self.model(v)), x, self.views)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against target distributions ``(B, C)`` (torch's, which takes
    probabilities as targets); equals KL up to a constant."""
    return F.cross_entropy(logits, target)


@torch.inference_mode()
def _valid_accuracy(model: nn.Module, split: FERPlusSplit, cfg: BackboneConfig, device: str = "cpu") -> float:
    model.eval()
    idx = np.flatnonzero(split.labels >= 0)
    correct = 0
    for s in range(0, len(idx), 512):
        j = idx[s : s + 512]
        logits = model(preprocess(split.images[j], cfg).to(device)).float().cpu()
        correct += int((logits.argmax(-1).numpy() == split.labels[j]).sum())
    return correct / max(len(idx), 1)


def train_member(
    train: FERPlusSplit,
    valid: FERPlusSplit | None,
    backbone: str,
    backbone_kwargs: dict[str, Any],
    tc: TrainConfig,
    seed: int,
    progress: bool = True,
    desc: str = "member",
    teacher: Teacher | None = None,
    checkpoint: str | Path | None = None,
) -> tuple[nn.Module, BackboneConfig, dict[str, Any]]:
    """Train one model from ``seed``; returns it, its config and a per-epoch log.

    With a ``teacher`` (same architecture) the model starts from the teacher's weights and
    its targets are the teacher's outputs on each augmented batch instead of the votes.
    With ``checkpoint`` (a file path) the state after each epoch is written there (weights,
    optimiser, schedule, random generators; read back with ``torch.load(weights_only=True)``,
    no arbitrary unpickling) and a run that finds it continues from the next epoch, giving the
    weights an uninterrupted run gives; one written for another seed or schedule is ignored."""
    if tc.precision == "int8":
        raise ValueError("precision int8 is for inference only; train in auto, bf16 or fp32")
    from tqdm.auto import tqdm

    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model, cfg = create_backbone(backbone, pretrained=tc.pretrained and teacher is None, **backbone_kwargs)
    dev = check_device(tc.device)
    if teacher is not None:
        model.load_state_dict(teacher.model.state_dict())
        teacher.model.to(dev, memory_format=torch.channels_last)
    model = model.to(dev, memory_format=torch.channels_last)
    idx, targets = _targets(train, tc.target)
    images = torch.from_numpy(train.images[idx]).to(dev)
    targets_t = torch.from_numpy(targets).to(dev)
    steps_per_epoch = math.ceil(len(idx) / tc.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tc.lr, total_steps=tc.epochs * steps_per_epoch, pct_start=0.2)
    bf16 = use_bf16(tc.precision, dev)
    log: dict[str, Any] = {"seed": seed, "precision": "bf16" if bf16 else "fp32", "epochs": []}
    key = json.dumps({"seed": seed, "schedule": asdict(tc), "backbone": backbone, "kwargs": backbone_kwargs}, sort_keys=True)
    start, done_s = 0, 0.0
    if checkpoint is not None and Path(checkpoint).is_file():
        st = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if st.get("key") == key:
            model.load_state_dict(st["model"])
            opt.load_state_dict(st["optimizer"])
            sched.load_state_dict(st["scheduler"])
            gen.set_state(st["generator"])
            torch.set_rng_state(st["torch_rng"])
            log = json.loads(st["log"])
            start, done_s = int(st["epoch"]), float(log["epochs"][-1]["seconds"]) if log["epochs"] else 0.0
            if progress:
                print(f"{desc}: continuing after epoch {start} from {checkpoint}")
        elif progress:
            print(f"{desc}: {checkpoint} was written for another seed or schedule; starting again")
    t0 = time.time() - done_s
    for epoch in range(start, tc.epochs):
        model.train()
        perm = torch.randperm(len(idx), generator=gen).to(dev)
        bar = tqdm(range(steps_per_epoch), desc=f"{desc} epoch {epoch + 1}/{tc.epochs}", disable=not progress, leave=False)
        loss_sum = correct = seen = 0.0
        for step in bar:
            j = perm[step * tc.batch_size : (step + 1) * tc.batch_size]
            x = images[j].to(torch.float32).div_(255.0).unsqueeze(1)
            if tc.augment:
                x = augment_batch(x, gen)
            if tc.deploy_augment:
                x = deploy_augment_batch(x, gen)
            x = preprocess((x.squeeze(1) * 255.0), cfg).contiguous(memory_format=torch.channels_last)
            y = targets_t[j] if teacher is None else teacher.targets(x, bf16)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
            loss = soft_cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(j)
            correct += float((logits.argmax(-1) == y.argmax(-1)).sum())
            seen += len(j)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        entry = {"epoch": epoch + 1, "loss": loss_sum / seen, "train_acc": correct / seen, "seconds": time.time() - t0}
        if valid is not None:
            entry["valid_acc"] = _valid_accuracy(model, valid, cfg, tc.device)
        log["epochs"].append(entry)
        if progress:
            tqdm.write(f"{desc} epoch {epoch + 1}: " + ", ".join(f"{k}={v:.4f}" for k, v in entry.items() if k != "epoch"))
        if checkpoint is not None and epoch + 1 < tc.epochs:
            _write_checkpoint(Path(checkpoint), {"key": key, "epoch": epoch + 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                                 "scheduler": sched.state_dict(), "generator": gen.get_state(),
                                                 "torch_rng": torch.get_rng_state(), "log": json.dumps(log)})
    log["seconds"] = time.time() - t0
    if teacher is not None:
        teacher.model.cpu()
    return model.cpu().eval(), cfg, log


def _write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a run killed while writing leaves the previous epoch's checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_teacher(model_dir: str | Path, members: int, backbone: str = "cnn", backbone_kwargs: dict[str, Any] | None = None) -> Ensemble:
    """The trained model to distil ``members`` members from, checked before any training:
    the student keeps its architecture (``backbone``/``backbone_kwargs`` must agree or be
    left at their defaults) and it must have test-time views to distil. ``ModelError`` for
    an unreadable model directory, ``ValueError`` for the rest."""
    teacher = Ensemble.load(model_dir)
    if backbone != teacher.config.name or (backbone_kwargs and backbone_kwargs != teacher.config.kwargs):
        raise ValueError(f"a distilled model keeps its teacher's architecture ({teacher.config.name} "
                         f"{json.dumps(teacher.config.kwargs)}); leave the backbone options out")
    if members > teacher.num_members:
        raise ValueError(f"the teacher {model_dir} has {teacher.num_members} member(s); ask for at most that many members")
    if teacher.tta == "none":
        raise ValueError(f"the teacher {model_dir} uses no test-time augmentation (tta none): there is nothing to distil")
    return teacher


def train_ensemble(
    train: FERPlusSplit,
    valid: FERPlusSplit | None,
    out_dir: str | Path,
    backbone: str = "cnn",
    backbone_kwargs: dict[str, Any] | None = None,
    members: int = 5,
    tc: TrainConfig | None = None,
    progress: bool = True,
    command: str | None = None,
    max_new: int | None = None,
) -> Path:
    """Train ``members`` seeds into ``out_dir``; members already on disk are kept (resume), and
    a member interrupted mid-way continues from its last finished epoch (``member_K.partial.pt``).
    ``max_new`` caps the members trained in this call (one per run keeps each run short);
    ``config.json`` is written only once all ``members`` are on disk.

    With ``tc.distill_from`` the architecture is the teacher's (``backbone`` and
    ``backbone_kwargs`` must agree with it or be left at their defaults) and the result
    needs no test-time augmentation."""
    tc = tc or TrainConfig()
    backbone_kwargs = dict(backbone_kwargs or {})
    teacher = None
    if tc.distill_from:
        teacher = load_teacher(tc.distill_from, members, backbone, backbone_kwargs)
        backbone_kwargs = dict(teacher.config.kwargs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "train_log.json"
    log: dict[str, Any] = json.loads(log_path.read_text()) if log_path.is_file() else {}
    log.update({"backbone": backbone, "backbone_kwargs": backbone_kwargs, "train": asdict(tc), "command": command})
    log.setdefault("members", {})
    cfg = None
    trained = 0
    for k in range(members):
        path = out / f"member_{k}.safetensors"
        if path.is_file() and str(k) in log["members"]:
            if progress:
                print(f"member {k}: already trained, skipping ({path})")
            continue
        if max_new is not None and trained >= max_new:
            log_path.write_text(json.dumps(log, indent=2) + "\n")
            if progress:
                print(f"stopped after {trained} new member(s): {k} of {members} on disk; run the same command again to continue")
            return out
        trained += 1
        teach = None if teacher is None else Teacher(teacher.members[k].float(), TTA_VIEWS[teacher.tta])
        partial = out / f"member_{k}.partial.pt"  # the member's state after its last finished epoch
        model, cfg, mlog = train_member(train, valid, backbone, backbone_kwargs, tc, seed=tc.seed + k, progress=progress,
                                        desc=f"member {k + 1}/{members}", teacher=teach, checkpoint=partial)
        save_member(model, path)
        partial.unlink(missing_ok=True)
        log["members"][str(k)] = mlog
        log_path.write_text(json.dumps(log, indent=2) + "\n")
    if cfg is None:
        _, cfg = create_backbone(backbone, pretrained=False, **backbone_kwargs)
    meta = {"train": asdict(tc), "command": command, "train_size": len(train)}
    if teacher is not None:
        meta["distilled_from"] = {"model": str(tc.distill_from), "tta": teacher.tta, "command": teacher.meta.get("command")}
    write_config(out, cfg, members, meta)
    log_path.write_text(json.dumps(log, indent=2) + "\n")
    return out
