"""What a model folder says about its backbone, readable without torch: the config that
travels with the weights (and in an ONNX graph's metadata), and the error for a bad folder."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..labels import EMOTIONS


class ModelError(ValueError):
    """A model directory is missing, incomplete or inconsistent."""


@dataclass
class BackboneConfig:
    """What a backbone needs to be rebuilt and fed: architecture, input and labels."""

    name: str
    input_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    labels: tuple[str, ...] = EMOTIONS
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"], d["labels"] = list(self.mean), list(self.std), list(self.labels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BackboneConfig":
        """The config stored in ``d``, with its sizes bounded before anything is allocated
        (``ValueError`` naming the key otherwise)."""
        if not isinstance(d, dict):
            raise ValueError(f"the backbone config must be an object, got {type(d).__name__}")
        cfg = cls._read(d)
        if not 8 <= cfg.input_size <= 1024:
            raise ValueError(f"input_size is {cfg.input_size}, outside 8..1024")
        if cfg.in_chans not in (1, 3) or len(cfg.mean) != cfg.in_chans or len(cfg.std) != cfg.in_chans:
            raise ValueError(f"in_chans must be 1 or 3 with as many mean and std values, got {cfg.in_chans}, {cfg.mean}, {cfg.std}")
        if not 2 <= len(cfg.labels) <= 64 or len(set(cfg.labels)) != len(cfg.labels):
            raise ValueError(f"labels must be 2 to 64 distinct names, got {list(cfg.labels)[:10]}")
        return cfg

    @classmethod
    def _read(cls, d: dict[str, Any]) -> "BackboneConfig":
        return cls(
            name=str(d["name"]),
            input_size=int(d["input_size"]),
            in_chans=int(d["in_chans"]),
            mean=tuple(float(x) for x in d["mean"]),
            std=tuple(float(x) for x in d["std"]),
            labels=tuple(str(x) for x in d.get("labels", EMOTIONS)),
            kwargs=dict(d.get("kwargs", {})),
        )
