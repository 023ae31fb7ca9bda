"""``ferroute`` commands that use a model: route (images, videos, folders; locally or on Ray) and serve."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from .common import (
    AMBIGUOUS_HELP,
    BACKEND_HELP,
    DEVICE_HELP,
    EXIT_FAILED_ITEMS,
    EXIT_OK,
    EXIT_OUTPUT,
    MODEL_HELP,
    Backend,
    Engine,
    Format,
    _device,
    _fail,
    _load_router,
    _need,
    _v,
    app,
)

from .inputs import expand_inputs, input_key, problem

if TYPE_CHECKING:
    from concurrent.futures import Future

def _adapted(loading: Future, photos: list[str]) -> Future:
    """The loaded router moved to the emotion mix of ``photos``' faces (a first pass over them)."""
    from concurrent.futures import Future

    from ..engine.config import ModelError

    router = loading.result()
    typer.echo(f"estimating the emotion mix of the faces in {len(photos)} photos (a first pass) ...", err=True)
    try:
        adapted = router.adapt_to(photos)
    except (ModelError, ValueError) as exc:
        _fail(f"--adapt: {exc}")
    mix = ", ".join(f"{lab} {100 * q:.0f} %" for lab, q in zip(router.labels, adapted.mix))
    typer.echo(f"emotion mix of these faces: {mix}", err=True)
    done: Future = Future()
    done.set_result(adapted)
    return done


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
    backend: Backend = typer.Option(Backend.auto, help=BACKEND_HELP),
    device: str = typer.Option("cpu", help=DEVICE_HELP),
    resume: bool = typer.Option(False, "--resume", help="Skip the inputs already in --out (jsonl, csv or parquet) and add the rest."),
    engine: Engine = typer.Option(Engine.local, help="local: this process; ray: a Ray Data job (pip install 'ferroute[ray]'), results to --out as Parquet."),
    address: Optional[str] = typer.Option(None, help="--engine ray: join the Ray cluster at this address (default: start a local Ray for this command)."),
    ambiguous_below: Optional[float] = typer.Option(None, "--ambiguous-below", min=0.01, max=0.99, help=AMBIGUOUS_HELP),
    adapt: bool = typer.Option(False, "--adapt", help="The photos come from one source whose emotion mix may differ from FERPlus's (e.g. posed expressions): estimate that mix from their faces first (a first pass; 100+ faces) and move every output to it."),
) -> None:
    """Route every face in the given photos and videos: accept, ambiguous, reject or no_face.

    Faces are listed left to right with their box. With --out and jsonl or csv, each input's
    rows are written (and flushed) as soon as it is routed, so an interrupted run keeps what
    it did and --resume continues it. Exit codes: 0 every input was routed; 1 some inputs
    could not be read (each is reported on its own line, the rest are still routed); 2 usage
    error (bad option, no inputs, bad model); 3 the output (--out, --annotate) could not be
    written (one line says where and why; what was written is whole, and --resume continues
    it); 130 interrupted.
    """
    import csv
    import io
    from concurrent.futures import ThreadPoolExecutor

    import cv2
    from tqdm.auto import tqdm

    from ..vision.faces import FaceDetector
    from ..output.results import TEXT_COLUMNS, text_rows
    from ..stream import route_stream
    from ..vision.video import is_video

    fmt, engine, backend = _v(fmt), _v(engine), _v(backend)  # type: ignore[assignment]
    fmt = fmt or ("parquet" if engine == "ray" or (out is not None and out.suffix == ".parquet") else "table")
    if resume and (out is None or fmt == "table"):
        _fail("--resume needs --out with --format jsonl, csv or parquet")
    if fmt == "parquet" and out is None:
        _fail("--format parquet needs --out FOLDER")
    if engine == "ray" and fmt != "parquet":
        _fail("--engine ray writes Parquet: give --out FOLDER (e.g. results.parquet)")
    if engine == "ray" and adapt:
        _fail("--adapt needs every face in one process: use --engine local")
    if engine == "ray":
        _need("ray", "ray", "pyarrow")
    elif fmt == "parquet":
        _need("parquet", "pyarrow")
    _check_output(out, fmt, annotate)
    entries, missing = expand_inputs(paths)
    if not entries:
        _fail("no image files found in the given paths")
    if engine == "ray":
        _route_on_ray(entries, missing, out, model, address, workers, resume)
        return
    if fmt == "parquet":
        from ..output.results import done_sources

        done = done_sources(out) if resume else set()
    else:
        done = _done_sources(out, fmt) if resume and out is not None and out.is_file() else set()
    if done:  # matched by resolved path: the same folder spelled relative or absolute is the same input
        done_keys = {input_key(d) for d in done}
        entries = [e for e in entries if input_key(e) not in done_keys]
        typer.echo(f"resuming: {len(done)} inputs already in {out}, {len(entries)} to go", err=True)
    # the model (torch and all) loads in a thread while the first photos are decoded and searched
    loading = ThreadPoolExecutor(max_workers=1).submit(_load_router, model, backend, device, ambiguous_below)
    cv2.setNumThreads(1)  # the face threads are the parallelism; OpenCV's own pool would oversubscribe
    detector = FaceDetector()
    if adapt:
        loading = _adapted(loading, [e for e in entries if e not in missing and not is_video(e)])
    appending = bool(done) or (resume and out is not None and out.is_file() and out.stat().st_size > 0)
    parts = None
    try:
        if fmt == "parquet":
            from ..output.results import ParquetParts

            parts = ParquetParts(out)
            sink = io.StringIO()
        else:
            # names that are not UTF-8 are written as their own bytes, never an error (surrogateescape)
            sink = out.open("a" if appending else "w", newline="", encoding="utf-8", errors="surrogateescape") if out else sys.stdout
            if sink is sys.stdout and hasattr(sys.stdout, "reconfigure"):
                sys.stdout.reconfigure(errors="surrogateescape")
        writer = csv.DictWriter(sink, fieldnames=TEXT_COLUMNS) if fmt == "csv" else None
        if writer and not appending:
            writer.writeheader()
    except OSError as exc:
        _cannot_write(out, exc)
    table_rows: list[dict] = []
    n_rows, failed = 0, False
    identity: tuple[str, str] | None = None  # Parquet's model and model_version columns, once the model is loaded

    def emit(item: dict) -> None:
        nonlocal n_rows, failed, identity
        failed |= "error" in item
        rows = text_rows(item)
        n_rows += len(rows)
        try:
            if parts is not None:
                from ..output.results import model_identity, result_rows

                identity = identity or model_identity(loading.result())
                if "time" in item:  # a video frame: its time goes into the source
                    item = {**item, "source": f"{item['source']}#t={item['time']}"}
                parts.add(result_rows(item, *identity))
            elif fmt == "jsonl":
                sink.write(json.dumps(item) + "\n")
            elif fmt == "csv":  # one write per input, so an interruption never splits an input's rows
                buf = io.StringIO()
                csv.DictWriter(buf, fieldnames=TEXT_COLUMNS).writerows(rows)
                sink.write(buf.getvalue())
            else:
                table_rows.extend(rows)
            if fmt in ("jsonl", "csv"):
                sink.flush()  # an interrupted run keeps what it routed
        except OSError as exc:  # a full disk, a file system gone read-only
            raise _OutputFailed(out, exc) from None
        if annotate is not None and "faces" in item and "time" not in item:
            _write_annotated(item, annotate)

    photos = [e for e in entries if not is_video(e) or e in missing]
    bar = tqdm(total=len(photos), desc="routing", unit="img", disable=len(photos) <= 1, file=sys.stderr)
    usage_error = False
    try:
        it_photos = route_stream(loading, (e for e in photos if e not in missing), batch_size=batch_size, workers=workers, detector=detector)
        for e in entries:
            if e in missing:
                emit({"source": e, "error": problem(e)})
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
    except _OutputFailed as exc:
        usage_error = True  # nothing more is written; what is there is whole
        bar.close()  # the progress bar's line ends before the error's
        _cannot_write(exc.path, exc.error, close=sink if out else None)
    except KeyboardInterrupt:
        typer.secho(f"interrupted after {n_rows} rows" + (f"; `--resume` continues into {out}" if out and fmt != "table" else ""), fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(130) from None
    finally:
        bar.close()
        if fmt == "table" and not usage_error:
            _print_table(table_rows, sink)
        try:
            if parts is not None and not usage_error:
                parts.flush()  # what was routed so far, also when interrupted
            if out:
                sink.close()
        except OSError as exc:
            _cannot_write(out, exc)
        if out and not usage_error:
            typer.echo(f"wrote {n_rows} rows to {out}", err=True)
    raise typer.Exit(EXIT_FAILED_ITEMS if failed else EXIT_OK)


class _OutputFailed(Exception):
    """Writing a result failed (``OSError``): the run stops with :data:`EXIT_OUTPUT`."""

    def __init__(self, path: Optional[Path], error: OSError) -> None:
        super().__init__(str(error))
        self.path, self.error = path, error


def _cannot_write(path: Optional[Path], exc: OSError, close: object = None) -> None:
    """One line on stderr, then exit 3: where, why, and what to do."""
    if close is not None:
        try:
            close.close()  # type: ignore[attr-defined]
        except OSError:
            pass
    why = exc.strerror or str(exc)
    typer.echo(f"error: cannot write {path}: {why}; choose a writable --out (the rows already written are whole: "
               "`--resume` continues them)", err=True)
    raise typer.Exit(EXIT_OUTPUT)


def _check_output(out: Optional[Path], fmt: str, annotate: Optional[Path]) -> None:
    """Refuse (exit 3, one line) an output that cannot be written, before anything is routed."""
    def no(path: Path, why: str) -> None:
        typer.echo(f"error: cannot write {path}: {why}", err=True)
        raise typer.Exit(EXIT_OUTPUT)

    if out is not None:
        if fmt != "parquet" and out.is_dir():
            no(out, "it is a folder; give a file name (e.g. results.csv), or --format parquet for a folder of parts")
        if fmt == "parquet" and out.exists() and not out.is_dir():
            no(out, "--format parquet writes a folder of parts, and this is a file")
        parent = out.parent
        if not parent.is_dir():
            no(out, f"the folder {parent} does not exist; create it first")
        if not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
            no(out, "permission denied (a read-only location); choose a writable --out")
    if annotate is not None:
        try:
            annotate.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            no(annotate, f"{exc.strerror or exc} (--annotate needs a folder it can create and write)")
        if not os.access(annotate, os.W_OK | os.X_OK):
            no(annotate, "permission denied (--annotate needs a writable folder)")


def _route_on_ray(entries: list[str], missing: set[str], out: Path, model: Optional[Path], address: Optional[str], workers: int, resume: bool) -> None:
    from ..output.scale import (
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
    text = raw.decode("utf-8", errors="surrogateescape")  # file names that are not UTF-8 come back as written
    if fmt == "jsonl":
        done = set()
        for line in text.splitlines():
            try:
                done.add(json.loads(line)["source"])
            except (ValueError, KeyError, TypeError):
                continue
        return done
    return {r["source"] for r in csv.DictReader(text.splitlines()) if r.get("source")}


def _write_annotated(item: dict, folder: Path) -> None:
    from ..vision.draw import annotate
    from ..vision.images import ImageError

    folder.mkdir(parents=True, exist_ok=True)
    src = Path(item["source"])
    try:
        annotate(src, item["faces"]).save(folder / f"{src.stem}.annotated.png")
    except (ImageError, OSError) as exc:
        typer.secho(f"warning: {src}: could not write the annotated picture ({exc})", fg=typer.colors.YELLOW, err=True)


def _route_video(router, path: str, fps: float, annotate: Optional[Path], emit) -> None:
    from tqdm.auto import tqdm

    from ..vision.images import ImageError
    from ..vision.video import frame_count, plot_tracks, route_video

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


#: how the console table colours each decision (a terminal only)
DECISION_STYLE = {"accept": "green", "ambiguous": "yellow", "reject": "red", "no_face": "dim", "error": "bold red"}


def _print_table(rows: list[dict], sink) -> None:
    """The rows as a console table (``rich``): wrapped to the terminal and coloured by
    decision on a terminal; one line per row, uncoloured, when piped or written to a file."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from ..output.results import TEXT_COLUMNS, display_source

    rows = [{**r, "source": display_source(r["source"])} for r in rows]  # a table shows names as text
    tty = sink.isatty() if hasattr(sink, "isatty") else False
    console = Console(file=sink, color_system="auto" if tty else None, force_terminal=tty)
    cols = [c for c in TEXT_COLUMNS if c not in ("time", "track", "score") or any(r[c] != "" for r in rows)]
    if tty and console.width < 140:  # a narrow terminal: the reason matters more than the box
        cols = [c for c in cols if c not in ("box", "score")]
    cells = [[f"{r[c]:.3f}" if isinstance(r[c], float) and c != "time" else str(r[c]) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1))
    for c, w in zip(cols, widths):
        if not tty:
            table.add_column(c, no_wrap=True, overflow="ignore")
        elif c in ("source", "reason"):  # on a terminal these two wrap; the short columns keep their width
            table.add_column(c, overflow="fold", ratio=2 if c == "reason" else 1, min_width=10)
        else:
            table.add_column(c, no_wrap=True, min_width=w)
    for r, row in zip(rows, cells):
        table.add_row(*row, style=DECISION_STYLE.get(r["decision"]) if tty else None)
    if not tty:  # piped or to a file: as wide as the longest row, so no row wraps
        console.width = sum(widths) + 3 * len(cols)
    console.print(table)



@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to bind (use 0.0.0.0 to expose it)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    model: Optional[Path] = typer.Option(None, help=MODEL_HELP),
    workers: int = typer.Option(1, min=1, help="Worker processes, each with its own model copy."),
    backend: Backend = typer.Option(Backend.auto, help=BACKEND_HELP),
    device: str = typer.Option("cpu", help=DEVICE_HELP),
    max_active: Optional[int] = typer.Option(None, min=1, help="Routing requests worked on at once, per worker [default: 4, or $FERROUTE_MAX_ACTIVE]."),
    max_queued: Optional[int] = typer.Option(None, min=0, help="Routing requests waiting for a slot; past that: 503 with Retry-After [default: 32, or $FERROUTE_MAX_QUEUED]."),
    queue_timeout: Optional[float] = typer.Option(None, min=0.1, help="Seconds a request may wait for a slot, then 503 [default: 20, or $FERROUTE_QUEUE_TIMEOUT_S]."),
    body_timeout: Optional[float] = typer.Option(None, min=0.1, help="Seconds a client has to send its request body, then 408 [default: 30, or $FERROUTE_BODY_TIMEOUT_S]."),
    max_body_mb: Optional[float] = typer.Option(None, min=0.01, help="Largest request body in MB, refused while reading (413) [default: 25, or $FERROUTE_MAX_BODY_BYTES]."),
    max_upload_mb: Optional[float] = typer.Option(None, min=0.01, help="Largest single image in MB: that image's error [default: 10, or $FERROUTE_MAX_UPLOAD_BYTES]."),
    ambiguous_below: Optional[float] = typer.Option(None, "--ambiguous-below", min=0.01, max=0.99, help=AMBIGUOUS_HELP + " Also $FERROUTE_AMBIGUOUS_BELOW."),
    max_decode_mb: Optional[float] = typer.Option(None, min=1, help="Memory concurrent image decodes may hold, MB per worker [default: 1024, or $FERROUTE_MAX_DECODE_BYTES]."),
) -> None:
    """Serve the web page at /, the HTTP API (POST /v1/route, GET /v1/model, GET /healthz) and its docs at /docs.

    Set FERROUTE_API_TOKEN to require 'Authorization: Bearer <token>' on /v1/ endpoints.
    The limits' defaults are safe for a 2-core, 24 GB machine (docs/records/bench_soak.txt).
    """
    import os

    backend = _v(backend)  # type: ignore[assignment]
    _need("serve", "fastapi", "fastapi_offline", "uvicorn", "multipart")
    from ..serve.app import serve as run

    _device(device, backend)  # a usage error now, not a traceback in each worker
    given = {"FERROUTE_MAX_ACTIVE": max_active, "FERROUTE_MAX_QUEUED": max_queued, "FERROUTE_QUEUE_TIMEOUT_S": queue_timeout,
             "FERROUTE_BODY_TIMEOUT_S": body_timeout, "FERROUTE_MAX_BODY_BYTES": None if max_body_mb is None else int(max_body_mb * 2**20),
             "FERROUTE_MAX_UPLOAD_BYTES": None if max_upload_mb is None else int(max_upload_mb * 2**20),
             "FERROUTE_MAX_DECODE_BYTES": None if max_decode_mb is None else int(max_decode_mb * 2**20),
             "FERROUTE_AMBIGUOUS_BELOW": ambiguous_below}
    os.environ.update({k: str(v) for k, v in given.items() if v is not None})  # worker processes read them too
    run(host=host, port=port, model_dir=model, workers=workers, backend=backend, device=device)

