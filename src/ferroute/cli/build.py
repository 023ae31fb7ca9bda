"""``ferroute`` commands that make and measure a model: train, pack-data, calibrate, evaluate, export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .common import (
    DEVICE_HELP,
    MODEL_HELP,
    Compile,
    EvalBackend,
    ExportFormat,
    Precision,
    Shift,
    Target,
    Tta,
    _command_line,
    _fail,
    _load_model,
    _need,
    _parse_kv,
    _quantize,
    _v,
    app,
)


@app.command()
def train(
    ctx: typer.Context,
    data: Optional[Path] = typer.Option(None, help="FERPlus folder (default: $FERPLUS_DIR)."),
    out: Path = typer.Option(..., help="Model directory to write (resumes if it has members)."),
    backbone: str = typer.Option("cnn", help="Backbone name: cnn, efficientnet_lite0, dinov2_s14."),
    backbone_arg: list[str] = typer.Option([], "--backbone-arg", help="Backbone option KEY=VALUE, repeatable (e.g. width=16)."),
    members: int = typer.Option(5, min=1, help="Ensemble members (they differ only by seed)."),
    max_new: Optional[int] = typer.Option(None, "--max-new", min=1, help="Train at most this many members not yet on disk, then stop (one member per run: run again to continue; config.json is written once all members exist)."),
    epochs: int = typer.Option(12, min=1, help="Passes over the training faces, per member."),
    batch_size: int = typer.Option(128, min=1, help="Faces per training step."),
    lr: float = typer.Option(3e-3, help="Peak learning rate (AdamW, one-cycle schedule)."),
    target: Target = typer.Option(Target.soft, help="soft: vote distributions; majority: FERPlus majority labels."),
    seed: int = typer.Option(0, help="Seed of the first member; member k uses seed+k."),
    ldl: bool = typer.Option(False, "--ldl", help="Train the single label-distribution-learning baseline instead."),
    no_augment: bool = typer.Option(False, "--no-augment", help="Train on the faces as they are (no flips, crops or photometric changes)."),
    deploy_augment: bool = typer.Option(False, "--deploy-augment", help="Also degrade training faces as deployed faces are degraded: resolution loss, blur, contrast, gamma, sensor noise."),
    no_pretrained: bool = typer.Option(False, "--no-pretrained", help="Random init even where weights exist."),
    limit: Optional[int] = typer.Option(None, help="Use only the first N training faces (smoke runs)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    precision: Precision = typer.Option(Precision.auto, help="auto (bf16 autocast on CUDA and on CPUs with AMX or AVX512-BF16), bf16 or fp32 (int8 is an inference mode)."),
    distill_from: Optional[Path] = typer.Option(None, help="Trained model to distil: member k starts from its member k and learns that member's output averaged over its test-time views, so the result needs none (architecture taken from it)."),
) -> None:
    """Train a Deep Ensemble (or, with --ldl, the single LDL baseline) on FERPlus."""
    _need("train", "torch", "safetensors")
    target, precision = _v(target), _v(precision)  # type: ignore[assignment]
    if backbone != "cnn":
        _need("train", "timm")
    from ..train.backbones import use_bf16
    from ..evaluate.ferplus import DataError, load_split
    from ..train.fit import TrainConfig, train_ensemble

    try:
        use_bf16(precision, "cpu")  # validates the choice before any data is read
    except ValueError as exc:
        _fail(f"--precision: {exc}")
    if precision == "int8":
        _fail("--precision int8 is an inference mode: train in auto, bf16 or fp32, then `ferroute calibrate --precision int8`")
    if ldl:
        members, target = 1, "soft"
    if distill_from is not None:  # checked here, before the data is read
        from ..engine.config import ModelError
        from ..router import resolve_model_dir
        from ..train.fit import load_teacher

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
    tc = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, target=target, augment=not no_augment, deploy_augment=deploy_augment, seed=seed, pretrained=not no_pretrained, threads=threads, device=device, precision=precision,
                     distill_from=None if distill_from is None else str(distill_from))
    command = _command_line(ctx)
    path = train_ensemble(tr, va, out, backbone=backbone, backbone_kwargs=_parse_kv(backbone_arg), members=members, tc=tc, command=command, max_new=max_new)
    typer.echo(f"wrote {path}")


@app.command("pack-data")
def pack_data(
    out: Path = typer.Argument(..., help="Folder to write train.npz, valid.npz, test.npz into."),
    data: Optional[Path] = typer.Option(None, help="FERPlus folder (default: $FERPLUS_DIR)."),
) -> None:
    """Pack the decoded FERPlus splits as compressed arrays; --data OUT then reads them."""
    from ..evaluate.ferplus import DataError, pack_splits

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
    shift: Optional[Shift] = typer.Option(None, help="Reject score [default: the model's own, else face]: 'learned' (fitted on shifted validation faces and validation non-faces by scripts/select_shift_score.py --write, which also calibrates it; 'learned+face' adds face-likeness as a floor, fitted the same way), 'face' (how little the crop looks like a face to the face detector; the default, chosen on validation faces under held-out corruptions and validation non-face crops: docs/records/shift_score_selection.txt), 'epistemic' (the paper's), its ambiguity-'conditional' z, 'pixels' (how unusual the crop's image statistics are, fitted on training faces), or a union that rejects when any part is unusual."),
    precision: Optional[Precision] = typer.Option(None, help="Set inference arithmetic first: fp32, bf16, auto (bf16 on CUDA and AMX/AVX512-BF16 CPUs) or int8 (CNN ensembles on the CPU; activation scales fitted on the validation faces); stored in config.json."),
    device: str = typer.Option("cpu", help=DEVICE_HELP),
) -> None:
    """Fit the UAR thresholds on FERPlus validation faces and store them with the model (and write
    the model's ONNX graph, ensemble.onnx, which the core runs)."""
    _need("train", "torch", "safetensors")
    tta, shift, precision = _v(tta), _v(shift), _v(precision)  # type: ignore[assignment]
    from ..evaluate.ferplus import DataError, load_split
    from ..train.ensemble import write_config
    from ..router import resolve_model_dir

    if shift is None:  # keep the model's own score
        stored = resolve_model_dir(model) / "router.json"
        shift = json.loads(stored.read_text()).get("shift", "face") if stored.is_file() else "face"
    if "learned" in str(shift).split("+"):
        _fail(f"the {shift} reject score is fitted on shifted validation faces, which calibrate does not make: run "
              f"`python scripts/select_shift_score.py {model} --write` (it fits, chooses and calibrates), or pick --shift face")
    from ..decide.routing import UncertaintyRouter

    ens, d = _load_model(model, device)
    try:
        if tta is not None:
            ens.configure(tta=tta)
        if precision is not None:
            ens.configure(precision=precision)
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
    from ..decide.labelshift import PriorAdapter
    from ..decide.shift import fit_signals, load_signals, save_signals
    from ..decide.uncertainty import decompose

    router = UncertaintyRouter(reject_rate=reject_rate, shift=shift)
    try:
        signals = load_signals(d)
    except ValueError as exc:
        _fail(str(exc))
    missing = [k for k in router.needs if k not in signals]
    if missing:  # only the image statistics are fitted (on training faces); the face signal needs nothing
        tr = load_split("train", data) if "pixels" in missing else None
        signals |= fit_signals(missing, *((tr.images, tr.labels) if tr else ()))
        save_signals(d, signals, note="pixels fitted on 12000 FERPlus training faces (ferroute.decide.shift.training_subset)")
    sig = {k: signals[k].score(va.images) for k in router.needs}
    probs = ens.predict_proba(va.images, progress=True)
    router.fit({**decompose(probs), **sig}, va.disagreement)
    router.fit_agreement(probs, va.distributions)  # the vote temperature and the default ambiguity level
    router.selection = _kept_selection(d, shift)
    (d / "router.json").write_text(json.dumps(router.to_dict()) + "\n")
    typer.echo(f"calibrated on {len(va)} validation faces: {router.thresholds}, vote temperature "
               f"{router._require()['vote_temperature']:.3f} -> {d / 'router.json'}")
    priors = PriorAdapter().fit(probs, va.distributions).save(d)
    typer.echo(f"fitted the emotion-mix adapter (route --adapt) on the same faces -> {priors}")
    _write_graph(d)


def _write_graph(d: Path) -> None:
    """Write ``d/ensemble.onnx`` (the core's graph), or say why not."""
    from ..train.export import write_graph

    try:
        typer.echo(f"wrote the ONNX graph the core runs -> {write_graph(d)}")
    except ImportError:
        typer.secho(f"no ONNX graph written (the onnx package is missing: pip install \"ferroute[train]\"); "
                    f"the core cannot run {d} until `ferroute export {d}`", fg=typer.colors.YELLOW, err=True)


def _kept_selection(d: Path, shift: str) -> dict | None:
    """The record of how ``shift`` was chosen (``scripts/select_shift_score.py --write``), kept
    across a recalibration that keeps that score; a new score drops it."""
    from ..engine.config import ModelError
    from ..router import load_router
    from ..decide.routing import NotCalibratedError

    try:
        old = load_router(d)
    except (ModelError, NotCalibratedError):  # none yet, or damaged: nothing to keep
        return None
    return old.selection if old.shift == shift else None


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
    _need("train", "torch", "safetensors", "scipy", "matplotlib")
    from ..evaluate.corruptions import CORRUPTIONS
    from ..evaluate.ferplus import DataError, load_split
    from ..train.ensemble import Ensemble, ModelError
    from ..evaluate.protocol import evaluate as run
    from ..router import default_ldl_dir, load_router

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
            ens.configure(precision=precision)
        except ValueError as exc:
            _fail(f"--precision: {exc}")
        if precision == "int8":
            _quantize(ens, va.images)
        if router is not None:  # thresholds fitted under other arithmetic: refit them, same settings
            from ..decide.routing import UncertaintyRouter

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
                m.configure(compile=compile)
        except ValueError as exc:
            _fail(f"--compile {compile}: {exc}")
    if backend == "auto":
        import importlib.util

        ok = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime"))
        backend = "onnx" if ok and dev.type == "cpu" and not ens.runtime.uses_bf16(dev) and not ens.runtime.uses_int8(dev) else "torch"
    from ..train.export import with_backend

    if ldl_model is not None:
        ldl_model.configure(tta=ens.tta)  # before any export: the graph bakes the TTA in
        ldl_model = with_backend(ldl_model, backend)
    ens = with_backend(ens, backend)
    from ..decide.labelshift import PriorAdapter
    from ..decide.shift import load_signals

    try:
        signals, priors = load_signals(model_dir), PriorAdapter.load(model_dir)
    except ValueError as exc:
        _fail(str(exc))
    if router is not None and any(k not in signals for k in router.needs):
        _fail(f"{model_dir}: the router rejects on {router.shift!r} but shift.json lacks {list(router.needs)}; run `ferroute calibrate --model {model_dir}`")
    from ..evaluate.ferplus import load_ckplus, resolve_data_dir

    ck_dir = ckplus or resolve_data_dir(data).parent / "ckplus48"
    try:
        ck = load_ckplus(ck_dir) if ckplus is not None or (ck_dir / "labels.csv").is_file() else None
    except DataError as exc:
        _fail(str(exc))
    if ck is None:
        typer.secho(f"no CK+ at {ck_dir}; the generalization section holds the non-face crops only", fg=typer.colors.YELLOW, err=True)
    rep = run(ens, va, te, out, ldl=ldl_model, router=router, corruptions=names, workers=workers, n_boot=bootstrap, signals=signals, ckplus=ck, priors=priors)
    typer.echo(
        f"accuracy {rep['accuracy']:.3f} | Spearman {rep['ambiguity']['spearman_aleatoric']:.3f} "
        f"| epistemic AUROC sev5 {rep['shift']['auroc_epistemic']['5']:.3f} | shipped AUROC sev5 {rep['shift']['auroc_shipped']['5']:.3f} "
        f"| deployed: clean rejected {rep['routing']['deployed']['clean_rejected']:.3f}, OOD rejected {rep['routing']['deployed']['ood_rejected']:.3f} "
        f"| kept ratio r=0.9 {rep['routing']['kept_ratio']['0.9'] or float('nan'):.2f} | {rep['timings']['total_s']:.0f} s -> {out}/report.md"
    )




@app.command()
def export(
    model_dir: Path = typer.Argument(..., help="Model directory to export, or an embedded model: default, fast."),
    out: Optional[Path] = typer.Argument(None, help="Output file (.onnx) [default: MODEL_DIR/ensemble.onnx, the graph the core runs]."),
    fmt: ExportFormat = typer.Option(ExportFormat.onnx, "--format", help="Export format (onnx)."),
    half: bool = typer.Option(False, "--half", help="First rewrite the members' large weights in float16 (half the files; "
                              "loading casts back to float32): for models with large weights. Calibrate and evaluate afterwards."),
) -> None:
    """Export all members as one ONNX graph: gray crops (B, 48, 48) uint8 in, (B, M, C) probabilities out."""
    _need("train", "torch", "safetensors", "onnx")
    from ..train.export import export_onnx, halve_weights, stored_half
    from ..engine.onnxrun import GRAPH_FILE, weights_digest

    if half:
        _, d = _load_model(model_dir)
        typer.echo(f"stored the member weights of {d} in float16 ({halve_weights(d) / 1e6:.1f} MB saved)")
    ens, d = _load_model(model_dir)
    path = export_onnx(ens, out or d / GRAPH_FILE, weights_digest=weights_digest(d), half=stored_half(d))
    typer.echo(f"wrote {path} ({ens.num_members} members, input {ens.config.in_chans}x{ens.config.input_size}x{ens.config.input_size})")


@app.command("calibrate-site")
def calibrate_site(
    paths: list[str] = typer.Argument(..., help="Ordinary photos of the site, unlabelled: files, folders (recursive), globs or .txt lists."),
    out: Path = typer.Option(..., help="The site folder to write: site.json, site_report.md and .json, two contact sheets."),
    model: Optional[Path] = typer.Option(None, help=MODEL_HELP),
    reject_rate: float = typer.Option(0.05, "--reject-rate", min=0.001, max=0.49, help="Share of the site's ordinary faces the threshold may reject."),
    corruptions: bool = typer.Option(True, "--corruptions/--no-corruptions", help="Also measure what the site threshold lets through of FERPlus test faces under the 15 corruptions (needs FERPLUS_DIR)."),
) -> None:
    """Re-make the model's reject promise on a site's own photos (no labels needed).

    Every face in PATHS is scored; the reject threshold is set split-conformally on them at
    --reject-rate, with its finite-sample bound stated. The site folder names its base model by
    digest (nothing is copied) and works wherever a model folder does: route --model SITE_DIR,
    serve --model SITE_DIR, ferroute.load(SITE_DIR). Refused (exit 2) with too few faces, or
    when the site threshold would let through more than 5 points more of the non-face probe
    than the base model's. Manual: "Calibrate to your site".
    """
    _need("train", "scipy", "skimage")
    from ..engine.config import ModelError
    from ..evaluate.site import calibrate_site as run
    from .inputs import expand_inputs

    entries, missing = expand_inputs(paths)
    for m in sorted(missing):
        typer.echo(f"warning: {m}: cannot be read; not used", err=True)
    photos = [e for e in entries if e not in missing]
    if not photos:
        _fail("no photos found in the given paths")
    typer.echo(f"finding and scoring the faces of {len(photos)} photos ...", err=True)
    try:
        r = run(photos, out, model=model, reject_rate=reject_rate, corruptions=corruptions)
    except (ModelError, ValueError) as exc:
        _fail(str(exc))
    nf = r["nonface_rejected"]
    typer.echo(f"{r['faces']} faces from {r['photos']} photos ({len(r['no_face'])} without a face, {len(r['failed'])} failed): "
               f"site threshold {r['z_threshold']:.4f} ({r['direction']} than the base model's {r['base_z_threshold']:.4f}); "
               f"non-face probe rejected {nf['site']:.1%} (base {nf['base']:.1%})")
    typer.echo(r["promise"]["statement"])
    typer.echo(f"wrote {out}/site.json and {out}/site_report.md")
