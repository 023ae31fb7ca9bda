"""The ``ferroute`` command line: train, evaluate, route, serve."""

from __future__ import annotations

import json
import shlex
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Facial expression recognition that knows why it is unsure.")

EXIT_OK, EXIT_FAILED_ITEMS, EXIT_USAGE = 0, 1, 2


def _choices(name: str, *values: str) -> type[Enum]:
    """A str Enum of an option's allowed values: Typer lists them in --help and refuses others."""
    return Enum(name, {v.replace("-", "_").replace("+", "_and_"): v for v in values}, type=str)  # type: ignore[return-value]


Format = _choices("Format", "table", "jsonl", "csv", "parquet")
Backend = _choices("Backend", "torch", "onnx")
EvalBackend = _choices("EvalBackend", "auto", "torch", "onnx")
Engine = _choices("Engine", "local", "ray")
Tta = _choices("Tta", "none", "hflip", "hflip-shift")
Precision = _choices("Precision", "auto", "bf16", "fp32", "int8")
Shift = _choices("Shift", "epistemic+pixels", "epistemic", "conditional", "pixels", "conditional+pixels")
Target = _choices("Target", "soft", "majority")
Compile = _choices("Compile", "auto", "on", "off")
ExportFormat = _choices("ExportFormat", "onnx")


def _v(x: Optional[Enum]) -> Optional[str]:
    """An option's plain string (Enum members print as 'Class.member' in f-strings)."""
    return None if x is None else str(x.value)
MODEL_HELP = "Model directory, or an embedded model: default, fast (default: default)."
DEVICE_HELP = "Where the ensemble runs: cpu, cuda or cuda:N (torch backend)."


def _version(value: bool) -> None:
    if value:
        from . import __version__

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

    lacking = [m for m in modules if importlib.util.find_spec(m) is None]
    if lacking:
        _fail(f"this needs {', '.join(lacking)}: pip install 'ferroute[{extra}]'")


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


@app.command()
def train(
    ctx: typer.Context,
    data: Optional[Path] = typer.Option(None, help="FERPlus folder (default: $FERPLUS_DIR)."),
    out: Path = typer.Option(..., help="Model directory to write (resumes if it has members)."),
    backbone: str = typer.Option("cnn", help="Backbone name: cnn, efficientnet_lite0, dinov2_s14."),
    backbone_arg: list[str] = typer.Option([], "--backbone-arg", help="Backbone option KEY=VALUE, repeatable (e.g. width=16)."),
    members: int = typer.Option(5, min=1, help="Ensemble members (they differ only by seed)."),
    epochs: int = typer.Option(12, min=1, help="Passes over the training faces, per member."),
    batch_size: int = typer.Option(128, min=1, help="Faces per training step."),
    lr: float = typer.Option(3e-3, help="Peak learning rate (AdamW, one-cycle schedule)."),
    target: Target = typer.Option(Target.soft, help="soft: vote distributions; majority: FERPlus majority labels."),
    seed: int = typer.Option(0, help="Seed of the first member; member k uses seed+k."),
    ldl: bool = typer.Option(False, "--ldl", help="Train the single label-distribution-learning baseline instead."),
    no_augment: bool = typer.Option(False, "--no-augment", help="Train on the faces as they are (no flips, crops or photometric changes)."),
    no_pretrained: bool = typer.Option(False, "--no-pretrained", help="Random init even where weights exist."),
    limit: Optional[int] = typer.Option(None, help="Use only the first N training faces (smoke runs)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    precision: Precision = typer.Option(Precision.auto, help="auto (bf16 autocast on CUDA and on CPUs with AMX or AVX512-BF16), bf16 or fp32 (int8 is an inference mode)."),
    distill_from: Optional[Path] = typer.Option(None, help="Trained model to distil: member k starts from its member k and learns that member's output averaged over its test-time views, so the result needs none (architecture taken from it)."),
) -> None:
    """Train a Deep Ensemble (or, with --ldl, the single LDL baseline) on FERPlus."""
    target, precision = _v(target), _v(precision)  # type: ignore[assignment]
    if backbone != "cnn":
        _need("train", "timm")
    from .backbones import use_bf16
    from .data import DataError, load_split
    from .training import TrainConfig, train_ensemble

    try:
        use_bf16(precision, "cpu")  # validates the choice before any data is read
    except ValueError as exc:
        _fail(f"--precision: {exc}")
    if precision == "int8":
        _fail("--precision int8 is an inference mode: train in auto, bf16 or fp32, then `ferroute calibrate --precision int8`")
    if ldl:
        members, target = 1, "soft"
    if distill_from is not None:  # checked here, before the data is read
        from .ensemble import ModelError
        from .pipeline import resolve_model_dir
        from .training import load_teacher

        distill_from = resolve_model_dir(distill_from)
        try:
            load_teacher(distill_from, members, backbone, _parse_kv(backbone_arg))
        except (ModelError, ValueError) as exc:
            _fail(f"--distill-from: {exc}")
    try:
        tr = load_split("train", data)
        va = load_split("valid", data)
    except DataError as exc:
        _fail(str(exc))
    if limit:
        tr = tr.subset(slice(0, limit))
    tc = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, target=target, augment=not no_augment, seed=seed, pretrained=not no_pretrained, threads=threads, device=device, precision=precision,
                     distill_from=None if distill_from is None else str(distill_from))
    command = _command_line(ctx)
    path = train_ensemble(tr, va, out, backbone=backbone, backbone_kwargs=_parse_kv(backbone_arg), members=members, tc=tc, command=command)
    typer.echo(f"wrote {path}")


def _device(device: str, backend: str = "torch"):
    """The torch device asked for; a usage error where it is missing or the backend cannot use it."""
    from .backbones import check_device

    try:
        return check_device(device, backend)
    except ValueError as exc:
        _fail(f"--device: {exc}")
        raise  # unreachable


def _load_model(model: Optional[Path], device: str = "cpu", backend: str = "torch"):
    from .ensemble import Ensemble, ModelError
    from .pipeline import resolve_model_dir

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


@app.command("pack-data")
def pack_data(
    out: Path = typer.Argument(..., help="Folder to write train.npz, valid.npz, test.npz into."),
    data: Optional[Path] = typer.Option(None, help="FERPlus folder (default: $FERPLUS_DIR)."),
) -> None:
    """Pack the decoded FERPlus splits as compressed arrays; --data OUT then reads them."""
    from .data import DataError, pack_splits

    try:
        path = pack_splits(out, data)
    except DataError as exc:
        _fail(str(exc))
    typer.echo(f"wrote {', '.join(p.name for p in sorted(path.glob('*.npz')))} to {path}")


@app.command()
def calibrate(
    model: Path = typer.Option(..., help="Model directory to calibrate (writes router.json; for a single model, e.g. an LDL baseline, only --tta/--precision), or an embedded model's name."),
    data: Optional[Path] = typer.Option(None, help="FERPlus folder (default: $FERPLUS_DIR)."),
    reject_rate: float = typer.Option(0.05, help="Share of clean validation faces the router may reject."),
    tta: Optional[Tta] = typer.Option(None, help="Set test-time augmentation first: none, hflip or hflip-shift (stored in config.json)."),
    shift: Shift = typer.Option(Shift.epistemic_and_pixels, help="Reject score: 'epistemic' (the paper's), its ambiguity-'conditional' z, 'pixels' (how unusual the crop's image statistics are, fitted on training faces), or a union that rejects when either part is unusual (the default, chosen on held-out corruptions: docs/shift_score_selection.txt)."),
    precision: Optional[Precision] = typer.Option(None, help="Set inference arithmetic first: fp32, bf16, auto (bf16 on CUDA and AMX/AVX512-BF16 CPUs) or int8 (CNN ensembles on the CPU; activation scales fitted on the validation faces); stored in config.json."),
    device: str = typer.Option("cpu", help=DEVICE_HELP),
) -> None:
    """Fit the UAR thresholds on FERPlus validation faces and store them with the model."""
    tta, shift, precision = _v(tta), _v(shift), _v(precision)  # type: ignore[assignment]
    from .data import DataError, load_split
    from .ensemble import write_config
    from .routing import UncertaintyRouter

    ens, d = _load_model(model, device)
    try:
        if tta is not None:
            ens.set_tta(tta)
        if precision is not None:
            ens.set_precision(precision)
    except ValueError as exc:
        _fail(str(exc))
    if ens.precision == "int8" and ens.device.type != "cpu":
        _fail("this model runs in int8, a CPU arithmetic: calibrate it with --device cpu, so the thresholds "
              "are fitted on the outputs users get (or pick --precision auto to calibrate on the GPU)")
    single = ens.num_members == 1  # a single model (an LDL baseline): its epistemic part is always 0
    if single and tta is None and precision is None:
        _fail(f"{d} holds a single model: it has no epistemic uncertainty, so there are no routing "
              "thresholds to fit (UAR needs an ensemble of 2+ members); --tta and --precision still apply")
    try:
        va = load_split("valid", data)
    except DataError as exc:
        _fail(str(exc))
    if ens.precision == "int8" and (precision is not None or tta is not None or not ens.is_quantized):
        _quantize(ens, va.images)  # the thresholds below are then fitted on int8 outputs
    if tta is not None or precision is not None:
        write_config(d, ens.config, ens.num_members, ens.meta)
    if single:
        typer.echo(f"stored tta {ens.tta}, precision {ens.precision} in {d / 'config.json'}; a single model gets no routing thresholds")
        return
    from .shift import fit_signals, load_signals, save_signals
    from .uncertainty import decompose

    router = UncertaintyRouter(reject_rate=reject_rate, shift=shift)
    try:
        signals = load_signals(d)
    except ValueError as exc:
        _fail(str(exc))
    if any(k not in signals for k in router.needs):
        tr = load_split("train", data)
        signals = fit_signals(router.needs, tr.images, tr.labels)
        save_signals(d, signals, note="fitted on 12000 FERPlus training faces (ferroute.shift.training_subset)")
    sig = {k: signals[k].score(va.images) for k in router.needs}
    router.fit({**decompose(ens.predict_proba(va.images, progress=True)), **sig}, va.disagreement)
    (d / "router.json").write_text(json.dumps(router.to_dict()) + "\n")
    typer.echo(f"calibrated on {len(va)} validation faces: {router.thresholds} -> {d / 'router.json'}")


@app.command()
def evaluate(
    data: Optional[Path] = typer.Option(None, help="FERPlus folder (default: $FERPLUS_DIR)."),
    out: Path = typer.Option(Path("reports/latest"), help="Report folder (report.json, report.md, plots)."),
    model: Optional[Path] = typer.Option(None, help=MODEL_HELP),
    ldl: Optional[Path] = typer.Option(None, help="LDL baseline directory (default: the embedded one trained like --model)."),
    corruptions: Optional[str] = typer.Option(None, help="Comma-separated subset of corruptions (default: all 15)."),
    limit: Optional[int] = typer.Option(None, help="Evaluate only the first N test faces (smoke runs)."),
    workers: Optional[int] = typer.Option(None, help="Processes for corruption generation (default: all cores)."),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples for the confidence intervals."),
    backend: EvalBackend = typer.Option(EvalBackend.auto, help="Inference backend: torch, onnx (onnxruntime, CPU), or auto: torch when the model runs in bf16 or int8 here, else onnx when installed (faster in float32)."),
    compile: Compile = typer.Option(Compile.auto, "--compile", help="torch backend: run the ensemble through torch.compile (auto: for calls of 2048+ faces, i.e. every corrupted set; on; off)."),
    precision: Optional[Precision] = typer.Option(None, help="Run in this arithmetic instead of the model's own (fp32, bf16, auto, int8); the router's thresholds are then refitted on the validation faces, and int8 scales fitted there too."),
    device: str = typer.Option("cpu", help=DEVICE_HELP),
    ckplus: Optional[Path] = typer.Option(None, help="CK+ 48x48 folder for the generalization section (default: ckplus48 beside the FERPlus folder, when there)."),
) -> None:
    """Run the dual-validation protocol on FERPlus test and write the report."""
    backend, compile, precision = _v(backend), _v(compile), _v(precision)  # type: ignore[assignment]
    _need("train", "scipy", "matplotlib")
    from .corruptions import CORRUPTIONS
    from .data import DataError, load_split
    from .ensemble import Ensemble, ModelError
    from .evaluation import evaluate as run
    from .pipeline import default_ldl_dir, load_router

    try:
        va = load_split("valid", data)
        te = load_split("test", data)
    except DataError as exc:
        _fail(str(exc))
    ens, model_dir = _load_model(model, device, backend)
    dev = ens.device
    router = load_router(model_dir) if (model_dir / "router.json").is_file() else None
    if precision is not None and precision != ens.precision:
        try:
            ens.set_precision(precision)
        except ValueError as exc:
            _fail(f"--precision: {exc}")
        if precision == "int8":
            _quantize(ens, va.images)
        if router is not None:  # thresholds fitted under other arithmetic: refit them, same settings
            from .routing import UncertaintyRouter

            chosen = router.selection
            router = UncertaintyRouter(reject_rate=router.reject_rate, n_bins=router.n_bins, shift=router.shift)
            router.selection = chosen  # the same score, refitted: its record still holds
    ldl_dir = ldl or default_ldl_dir(model_dir)
    try:
        ldl_model = Ensemble.load(ldl_dir).to(dev) if (ldl_dir / "config.json").is_file() else None
    except ModelError as exc:
        _fail(str(exc))
    if ldl_model is None:
        typer.secho(f"no LDL baseline at {ldl_dir}; the ldl section is left out", fg=typer.colors.YELLOW, err=True)
    names = [c.strip() for c in corruptions.split(",")] if corruptions else list(CORRUPTIONS)
    bad = [c for c in names if c not in CORRUPTIONS]
    if bad:
        _fail(f"unknown corruption(s) {bad}; choose from {', '.join(CORRUPTIONS)}")
    if limit:
        te = te.subset(slice(0, limit))
    for m in (ens, ldl_model):
        try:
            if m is not None:
                m.set_compile(compile)
        except ValueError as exc:
            _fail(f"--compile {compile}: {exc}")
    if backend == "auto":
        import importlib.util

        ok = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime"))
        backend = "onnx" if ok and dev.type == "cpu" and not ens.uses_bf16(dev) and not ens.uses_int8(dev) else "torch"
    from .export import with_backend

    if ldl_model is not None:
        ldl_model.set_tta(ens.tta)  # before any export: the graph bakes the TTA in
        ldl_model = with_backend(ldl_model, backend)
    ens = with_backend(ens, backend)
    from .shift import load_signals

    try:
        signals = load_signals(model_dir)
    except ValueError as exc:
        _fail(str(exc))
    if router is not None and any(k not in signals for k in router.needs):
        _fail(f"{model_dir}: the router rejects on {router.shift!r} but shift.json lacks {list(router.needs)}; run `ferroute calibrate --model {model_dir}`")
    from .data import load_ckplus, resolve_data_dir

    ck_dir = ckplus or resolve_data_dir(data).parent / "ckplus48"
    try:
        ck = load_ckplus(ck_dir) if ckplus is not None or (ck_dir / "labels.csv").is_file() else None
    except DataError as exc:
        _fail(str(exc))
    if ck is None:
        typer.secho(f"no CK+ at {ck_dir}; the generalization section holds the non-face crops only", fg=typer.colors.YELLOW, err=True)
    rep = run(ens, va, te, out, ldl=ldl_model, router=router, corruptions=names, workers=workers, n_boot=bootstrap, signals=signals, ckplus=ck)
    typer.echo(
        f"accuracy {rep['accuracy']:.3f} | Spearman {rep['ambiguity']['spearman_aleatoric']:.3f} "
        f"| epistemic AUROC sev5 {rep['shift']['auroc_epistemic']['5']:.3f} | shipped AUROC sev5 {rep['shift']['auroc_shipped']['5']:.3f} "
        f"| deployed: clean rejected {rep['routing']['deployed']['clean_rejected']:.3f}, OOD rejected {rep['routing']['deployed']['ood_rejected']:.3f} "
        f"| kept ratio r=0.9 {rep['routing']['kept_ratio']['0.9'] or float('nan'):.2f} | {rep['timings']['total_s']:.0f} s -> {out}/report.md"
    )


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def expand_inputs(paths: list[str]) -> tuple[list[str], set[str]]:
    """Files from paths, folders (recursive: images and videos), globs and list files (``.txt``:
    one path or URI a line), in argument order, with
    each path that matches nothing, or that a folder scan cannot use (a dangling link, a folder
    named like an image), kept at its place; also the set of those paths."""
    import glob

    from .video import VIDEO_SUFFIXES

    suffixes = IMAGE_SUFFIXES | VIDEO_SUFFIXES
    entries: list[str] = []
    missing: set[str] = set()
    for p in paths:
        path = Path(p)
        if path.suffix.lower() in (".txt", ".lst") and path.is_file():  # a list of paths or URIs, one per line
            listed = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
            entries += listed
            missing.update(x for x in listed if "://" not in x and not Path(x).is_file())
            continue
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.suffix.lower() not in suffixes:
                    continue
                entries.append(str(f))
                if not f.is_file():  # reported, not skipped
                    missing.add(str(f))
        elif path.exists():
            entries.append(str(path))
        elif any(c in p for c in "*?[") and (hits := sorted(h for h in glob.glob(p, recursive=True) if Path(h).is_file())):
            entries += hits
        else:
            entries.append(p)
            missing.add(p)
    return entries, missing


ROW_COLUMNS = ["source", "time", "track", "face", "box", "score", "decision", "emotion", "aleatoric", "epistemic", "reason"]


def _rows(item: dict) -> list[dict]:
    """Table/CSV rows of one routed item (one per face, left to right; one for an error)."""
    base = {"source": item["source"], "time": item.get("time", ""), "track": "", "face": "", "box": "", "score": "",
            "emotion": "", "aleatoric": "", "epistemic": ""}
    if "error" in item:
        return [{**base, "decision": "error", "reason": item["error"]}]
    rows = []
    for k, f in enumerate(item["faces"]):
        rows.append({
            **base, "track": f.get("track", ""), "face": k if f.get("box") else "", "decision": f["decision"],
            "emotion": f.get("emotion") or "", "aleatoric": f.get("aleatoric", ""), "epistemic": f.get("epistemic", ""),
            "box": " ".join(map(str, f["box"])) if f.get("box") else "", "score": f.get("score") if f.get("score") is not None else "",
            "reason": f["reason"],
        })
    return rows


@app.command()
def route(
    paths: list[str] = typer.Argument(..., help="Image or video files, folders (searched recursively) or globs."),
    model: Optional[Path] = typer.Option(None, help=MODEL_HELP),
    fmt: Optional[Format] = typer.Option(None, "--format", help="table, jsonl, csv or parquet (a folder of parts; the default for --out NAME.parquet and --engine ray) [default: table]."),
    out: Optional[Path] = typer.Option(None, help="Write the results to this file (folder for parquet) instead of the screen, as they come."),
    annotate: Optional[Path] = typer.Option(None, "--annotate", help="Write each input with its faces' boxes, decisions and emotions drawn on it to this folder (videos: one plot per face track)."),
    fps: float = typer.Option(2.0, min=0.01, help="Frames per second sampled from videos."),
    batch_size: int = typer.Option(64, min=1, help="Images decoded and routed per batch."),
    workers: int = typer.Option(2, min=1, help="Threads that decode and detect faces while the ensemble runs."),
    backend: Backend = typer.Option(Backend.torch, help="Inference backend: torch or onnx (onnxruntime, CPU)."),
    device: str = typer.Option("cpu", help=DEVICE_HELP),
    resume: bool = typer.Option(False, "--resume", help="Skip the inputs already in --out (jsonl, csv or parquet) and add the rest."),
    engine: Engine = typer.Option(Engine.local, help="local: this process; ray: a Ray Data job (pip install 'ferroute[ray]'), results to --out as Parquet."),
    address: Optional[str] = typer.Option(None, help="--engine ray: join the Ray cluster at this address (default: start a local Ray for this command)."),
) -> None:
    """Route every face in the given photos and videos: accept, ambiguous, reject or no_face.

    Faces are listed left to right with their box. With --out and jsonl or csv, each input's
    rows are written (and flushed) as soon as it is routed, so an interrupted run keeps what
    it did and --resume continues it. Exit codes: 0 every input was routed; 1 some inputs
    could not be read (each is reported on its own line, the rest are still routed); 2 usage
    error (bad option, no inputs, bad model); 130 interrupted.
    """
    import csv
    import io
    from concurrent.futures import ThreadPoolExecutor

    import cv2
    from tqdm.auto import tqdm

    from .faces import FaceDetector
    from .stream import route_stream
    from .video import is_video

    fmt, engine, backend = _v(fmt), _v(engine), _v(backend)  # type: ignore[assignment]
    fmt = fmt or ("parquet" if engine == "ray" or (out is not None and out.suffix == ".parquet") else "table")
    if resume and (out is None or fmt == "table"):
        _fail("--resume needs --out with --format jsonl, csv or parquet")
    if fmt == "parquet" and out is None:
        _fail("--format parquet needs --out FOLDER")
    if engine == "ray" and fmt != "parquet":
        _fail("--engine ray writes Parquet: give --out FOLDER (e.g. results.parquet)")
    if engine == "ray":
        _need("ray", "ray", "pyarrow")
    elif fmt == "parquet":
        _need("parquet", "pyarrow")
    entries, missing = expand_inputs(paths)
    if not entries:
        _fail("no image files found in the given paths")
    if engine == "ray":
        _route_on_ray(entries, missing, out, model, address, workers, resume)
        return
    if fmt == "parquet":
        from .results import done_sources

        done = done_sources(out) if resume else set()
    else:
        done = _done_sources(out, fmt) if resume and out is not None and out.is_file() else set()
    if done:
        entries = [e for e in entries if e not in done]
        typer.echo(f"resuming: {len(done)} inputs already in {out}, {len(entries)} to go", err=True)
    # the model (torch and all) loads in a thread while the first photos are decoded and searched
    loading = ThreadPoolExecutor(max_workers=1).submit(_load_router, model, backend, device)
    cv2.setNumThreads(1)  # the face threads are the parallelism; OpenCV's own pool would oversubscribe
    detector = FaceDetector()
    appending = bool(done) or (resume and out is not None and out.is_file() and out.stat().st_size > 0)
    parts = None
    if fmt == "parquet":
        from .results import ParquetParts

        parts = ParquetParts(out)
        sink = io.StringIO()
    else:
        sink = out.open("a" if appending else "w", newline="") if out else sys.stdout
    writer = csv.DictWriter(sink, fieldnames=ROW_COLUMNS) if fmt == "csv" else None
    if writer and not appending:
        writer.writeheader()
    table_rows: list[dict] = []
    n_rows, failed = 0, False
    identity: tuple[str, str] | None = None  # Parquet's model and model_version columns, once the model is loaded

    def emit(item: dict) -> None:
        nonlocal n_rows, failed, identity
        failed |= "error" in item
        rows = _rows(item)
        n_rows += len(rows)
        if parts is not None:
            from .results import model_identity, result_rows

            identity = identity or model_identity(loading.result())
            if "time" in item:  # a video frame: its time goes into the source
                item = {**item, "source": f"{item['source']}#t={item['time']}"}
            parts.add(result_rows(item, *identity))
        elif fmt == "jsonl":
            sink.write(json.dumps(item) + "\n")
        elif fmt == "csv":  # one write per input, so an interruption never splits an input's rows
            buf = io.StringIO()
            csv.DictWriter(buf, fieldnames=ROW_COLUMNS).writerows(rows)
            sink.write(buf.getvalue())
        else:
            table_rows.extend(rows)
        if fmt in ("jsonl", "csv"):
            sink.flush()  # an interrupted run keeps what it routed
        if annotate is not None and "faces" in item and "time" not in item:
            _write_annotated(item, annotate)

    photos = [e for e in entries if not is_video(e) or e in missing]
    bar = tqdm(total=len(photos), desc="routing", unit="img", disable=len(photos) <= 1, file=sys.stderr)
    usage_error = False
    try:
        it_photos = route_stream(loading, (e for e in photos if e not in missing), batch_size=batch_size, workers=workers, detector=detector)
        for e in entries:
            if e in missing:
                emit({"source": e, "error": f"{e}: {'file not found' if not Path(e).exists() and not Path(e).is_symlink() else 'not a readable file (dangling link or a folder)'} (check the path)"})
                bar.update(1)
            elif is_video(e):
                _route_video(loading.result(), e, fps, annotate, emit)
            else:
                emit(next(it_photos))
                bar.update(1)
        loading.result()  # a broken model is a usage error even when no photo needed it
    except typer.Exit:  # the model could not be loaded: said already, nothing to write
        usage_error = True
        raise
    except KeyboardInterrupt:
        typer.secho(f"interrupted after {n_rows} rows" + (f"; `--resume` continues into {out}" if out and fmt != "table" else ""), fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(130) from None
    finally:
        bar.close()
        if fmt == "table" and not usage_error:
            sink.write(_table(table_rows))
        if parts is not None:
            parts.flush()  # what was routed so far, also when interrupted
        if out:
            sink.close()
            if not usage_error:
                typer.echo(f"wrote {n_rows} rows to {out}", err=True)
    raise typer.Exit(EXIT_FAILED_ITEMS if failed else EXIT_OK)


def _route_on_ray(entries: list[str], missing: set[str], out: Path, model: Optional[Path], address: Optional[str], workers: int, resume: bool) -> None:
    from .scale import (
        run,  # Ray itself was checked for (_need) before the inputs were expanded
    )
    # paths that match nothing are still rows (errors), as in the local path
    summary = run(entries, out, model=str(model) if model else None, address=address, workers=workers, resume=resume)
    typer.echo(f"ray: routed {summary['routed']} inputs ({summary['skipped']} already in {out}) -> {out}", err=True)
    raise typer.Exit(EXIT_FAILED_ITEMS if missing else EXIT_OK)


def _done_sources(out: Path, fmt: str) -> set[str]:
    """Sources already written to ``out`` by an earlier run; a last line cut short by an
    interruption is removed from the file first, so the rerun writes that input again."""
    import csv

    raw = out.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        out.write_bytes(raw)
    text = raw.decode("utf-8", errors="replace")
    if fmt == "jsonl":
        done = set()
        for line in text.splitlines():
            try:
                done.add(json.loads(line)["source"])
            except (ValueError, KeyError, TypeError):
                continue
        return done
    return {r["source"] for r in csv.DictReader(text.splitlines()) if r.get("source")}


def _load_router(model: Optional[Path], backend: str, device: str):
    """The router, or a usage error (exit 2) naming what is wrong with the model or options."""
    from .ensemble import ModelError
    from .pipeline import FERRouter
    from .routing import NotCalibratedError

    try:
        return FERRouter.load(model, backend=backend, device=device)
    except (ModelError, NotCalibratedError, ValueError) as exc:
        _fail(str(exc))
    except ImportError:
        _fail("--backend onnx needs onnx and onnxruntime: pip install 'ferroute[onnx]'")


def _write_annotated(item: dict, folder: Path) -> None:
    from .draw import annotate
    from .images import ImageError

    folder.mkdir(parents=True, exist_ok=True)
    src = Path(item["source"])
    try:
        annotate(src, item["faces"]).save(folder / f"{src.stem}.annotated.png")
    except (ImageError, OSError) as exc:
        typer.secho(f"warning: {src}: could not write the annotated picture ({exc})", fg=typer.colors.YELLOW, err=True)


def _route_video(router, path: str, fps: float, annotate: Optional[Path], emit) -> None:
    from tqdm.auto import tqdm

    from .images import ImageError
    from .video import frame_count, plot_tracks, route_video

    items = []
    bar = tqdm(total=frame_count(path, fps), desc=Path(path).name, unit="frame", file=sys.stderr)
    try:
        for item in route_video(router, path, fps=fps, progress=bar):
            emit(item)
            if annotate is not None:
                items.append(item)
    except ImageError as exc:
        emit({"source": path, "error": str(exc)})
    finally:
        bar.close()
    if annotate is not None and items:
        try:
            written = plot_tracks(items, annotate, router.labels)
        except ImportError:
            typer.secho("warning: the per-track plots need matplotlib: pip install 'ferroute[plots]'", fg=typer.colors.YELLOW, err=True)
            written = []
        for p in written:
            typer.echo(f"wrote {p}", err=True)


def _table(rows: list[dict]) -> str:
    cols = [c for c in ROW_COLUMNS if c not in ("time", "track", "score") or any(r[c] != "" for r in rows)]
    cols.remove("reason")

    def cell(r: dict, c: str) -> str:
        v = r[c]
        return f"{v:.3f}" if isinstance(v, float) and c != "time" else str(v)

    widths = {c: max([len(c)] + [len(cell(r, c)) for r in rows]) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols) + "  reason"]
    for r in rows:
        lines.append("  ".join(cell(r, c).ljust(widths[c]) for c in cols) + "  " + r["reason"])
    return "\n".join(lines) + "\n"


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to bind (use 0.0.0.0 to expose it)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    model: Optional[Path] = typer.Option(None, help=MODEL_HELP),
    workers: int = typer.Option(1, min=1, help="Worker processes, each with its own model copy."),
    backend: Backend = typer.Option(Backend.torch, help="Inference backend: torch or onnx (onnxruntime, CPU)."),
    device: str = typer.Option("cpu", help=DEVICE_HELP),
    max_active: Optional[int] = typer.Option(None, min=1, help="Routing requests worked on at once, per worker [default: 4, or $FERROUTE_MAX_ACTIVE]."),
    max_queued: Optional[int] = typer.Option(None, min=0, help="Routing requests waiting for a slot; past that: 503 with Retry-After [default: 32, or $FERROUTE_MAX_QUEUED]."),
    queue_timeout: Optional[float] = typer.Option(None, min=0.1, help="Seconds a request may wait for a slot, then 503 [default: 20, or $FERROUTE_QUEUE_TIMEOUT_S]."),
    body_timeout: Optional[float] = typer.Option(None, min=0.1, help="Seconds a client has to send its request body, then 408 [default: 30, or $FERROUTE_BODY_TIMEOUT_S]."),
    max_body_mb: Optional[float] = typer.Option(None, min=0.01, help="Largest request body in MB, refused while reading (413) [default: 25, or $FERROUTE_MAX_BODY_BYTES]."),
    max_upload_mb: Optional[float] = typer.Option(None, min=0.01, help="Largest single image in MB: that image's error [default: 10, or $FERROUTE_MAX_UPLOAD_BYTES]."),
    max_decode_mb: Optional[float] = typer.Option(None, min=1, help="Memory concurrent image decodes may hold, MB per worker [default: 1024, or $FERROUTE_MAX_DECODE_BYTES]."),
) -> None:
    """Serve the web page at /, the HTTP API (POST /v1/route, GET /v1/model, GET /healthz) and its docs at /docs.

    Set FERROUTE_API_TOKEN to require 'Authorization: Bearer <token>' on /v1/ endpoints.
    The limits' defaults are safe for a 2-core, 24 GB machine (docs/bench_soak.txt).
    """
    import os

    backend = _v(backend)  # type: ignore[assignment]
    _need("serve", "fastapi", "fastapi_offline", "uvicorn", "multipart")
    from .server import serve as run

    _device(device, backend)  # a usage error now, not a traceback in each worker
    given = {"FERROUTE_MAX_ACTIVE": max_active, "FERROUTE_MAX_QUEUED": max_queued, "FERROUTE_QUEUE_TIMEOUT_S": queue_timeout,
             "FERROUTE_BODY_TIMEOUT_S": body_timeout, "FERROUTE_MAX_BODY_BYTES": None if max_body_mb is None else int(max_body_mb * 2**20),
             "FERROUTE_MAX_UPLOAD_BYTES": None if max_upload_mb is None else int(max_upload_mb * 2**20),
             "FERROUTE_MAX_DECODE_BYTES": None if max_decode_mb is None else int(max_decode_mb * 2**20)}
    os.environ.update({k: str(v) for k, v in given.items() if v is not None})  # worker processes read them too
    run(host=host, port=port, model_dir=model, workers=workers, backend=backend, device=device)


@app.command()
def export(
    model_dir: Path = typer.Argument(..., help="Model directory to export, or an embedded model: default, fast."),
    out: Path = typer.Argument(..., help="Output file (.onnx)."),
    fmt: ExportFormat = typer.Option(ExportFormat.onnx, "--format", help="Export format (onnx)."),
) -> None:
    """Export all members as one ONNX graph with (B, M, C) probability output."""
    from .export import export_onnx

    ens, _ = _load_model(model_dir)
    try:
        path = export_onnx(ens, out)
    except ImportError:
        _fail("ONNX export needs the onnx package: pip install 'ferroute[onnx]'")
    typer.echo(f"wrote {path} ({ens.num_members} members, input {ens.config.in_chans}x{ens.config.input_size}x{ens.config.input_size})")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
