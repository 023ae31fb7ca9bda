"""What the ``ferroute`` commands share: the Typer app, option choices, usage errors, model loading."""

from __future__ import annotations

import json
import shlex
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Facial expression recognition that knows why it is unsure.")

EXIT_OK, EXIT_FAILED_ITEMS, EXIT_USAGE, EXIT_OUTPUT = 0, 1, 2, 3


def _choices(name: str, *values: str) -> type[Enum]:
    """A str Enum of an option's allowed values: Typer lists them in --help and refuses others."""
    return Enum(name, {v.replace("-", "_").replace("+", "_and_"): v for v in values}, type=str)  # type: ignore[return-value]


Format = _choices("Format", "table", "jsonl", "csv", "parquet")
Backend = _choices("Backend", "auto", "onnx", "torch")
EvalBackend = _choices("EvalBackend", "auto", "torch", "onnx")
Engine = _choices("Engine", "local", "ray")
Tta = _choices("Tta", "none", "hflip", "hflip-shift")
Precision = _choices("Precision", "auto", "bf16", "fp32", "int8")
Shift = _choices("Shift", "face", "epistemic", "conditional", "pixels", "epistemic+pixels", "conditional+pixels", "epistemic+face",
                 "epistemic+pixels+face", "conditional+pixels+face", "learned", "learned+face")
Target = _choices("Target", "soft", "majority")
Compile = _choices("Compile", "auto", "on", "off")
ExportFormat = _choices("ExportFormat", "onnx")


def _v(x: Optional[Enum]) -> Optional[str]:
    """An option's plain string (Enum members print as 'Class.member' in f-strings)."""
    return None if x is None else str(x.value)
MODEL_HELP = "Model directory, or an embedded model: default, fast (default: default)."
DEVICE_HELP = "Where the ensemble runs: cpu, cuda or cuda:N (torch backend)."
AMBIGUOUS_HELP = ("Call a face ambiguous when fewer than this share of people would pick its top emotion (predicted, "
                  "calibrated to annotator votes), e.g. 0.6 [default: the model's level, chosen on validation faces].")
BACKEND_HELP = ("Inference backend: onnx (the model folder's graph on onnxruntime, CPU; no torch), torch (the safetensors "
                "members; pip install \"ferroute[train]\") or auto: onnx where the folder has its graph and the device is the CPU.")


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"ferroute {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit.")) -> None:
    """Facial expression recognition that knows why it is unsure."""


def _fail(msg: str, code: int = EXIT_USAGE) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _need(extra: str, *modules: str) -> None:
    """A usage error naming the extra to install where a command's optional dependency is missing."""
    import importlib.util

    def installed(m: str) -> bool:
        try:
            return importlib.util.find_spec(m) is not None
        except (ImportError, ValueError):  # a module blocked or half-removed
            return False

    lacking = [m for m in modules if not installed(m)]
    if lacking:
        _fail(f"this needs {', '.join(lacking)}, which this install does not have: pip install \"ferroute[{extra}]\"")


def _command_line(ctx: typer.Context) -> str:
    """The current command with every option spelled out, so a run can be repeated exactly."""
    parts = ["ferroute", ctx.info_name or ""]
    for p in ctx.command.params:
        v = ctx.params.get(p.name)
        v = v.value if isinstance(v, Enum) else v
        if v is None or v == [] or v is False or not p.opts:
            continue
        flag = max(p.opts, key=len)
        if p.name == "data":
            continue  # the data folder is the user's; the card names it separately
        if v is True:
            parts.append(flag)
        elif isinstance(v, (list, tuple)):
            parts += [x for item in v for x in (flag, shlex.quote(str(item)))]
        else:
            parts += [flag, shlex.quote(str(v))]
    return " ".join(parts)


def _parse_kv(items: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in items:
        if "=" not in item:
            _fail(f"--backbone-arg expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out



def _device(device: str, backend: str = "torch"):
    """The torch device asked for; a usage error where it is missing or the backend cannot use it.
    The CPU needs no torch (the onnx backend runs there); any other device does."""
    if device == "cpu" and backend != "torch":
        return "cpu"
    if backend == "onnx":
        _fail(f"--device: the onnx backend runs on the CPU; use --backend torch for device {device!r}")
    _need("train", "torch")
    from ..train.backbones import check_device

    try:
        return check_device(device, backend)
    except ValueError as exc:
        _fail(f"--device: {exc}")
        raise  # unreachable


def _load_model(model: Optional[Path], device: str = "cpu", backend: str = "torch"):
    from ..train.ensemble import Ensemble, ModelError
    from ..router import resolve_model_dir

    dev = _device(device, backend)
    d = resolve_model_dir(model)
    try:
        return Ensemble.load(d).to(dev), d
    except ModelError as exc:
        _fail(str(exc))
        raise  # unreachable


def _quantize(ens, faces) -> None:
    """Fit int8 scales on ``faces``; a usage error where this machine has no int8 engine."""
    try:
        ens.quantize(faces)
    except RuntimeError as exc:
        _fail(f"--precision int8: {exc}")


def _load_router(model: Optional[Path], backend: str, device: str, ambiguous_below: Optional[float] = None):
    """The router, or a usage error (exit 2) naming what is wrong with the model or options."""
    from ..engine.config import ModelError
    from ..router import FERRouter
    from ..decide.routing import NotCalibratedError

    try:
        return FERRouter.load(model, backend=backend, device=device, ambiguous_below=ambiguous_below)
    except (ModelError, NotCalibratedError, ValueError) as exc:
        _fail(str(exc))
    except ImportError as exc:
        _fail(f"{exc.name or exc}: not installed; pip install \"ferroute[train]\" for the torch backend and for exporting graphs")

