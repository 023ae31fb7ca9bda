"""Results as a table a data team can use: one row per face (and one per image without a face
or with an error), the same schema for the local and the Ray paths, written as Parquet.

Columns (Arrow types): ``source`` string; ``face`` int32 (index within the image, left to
right; null on a no_face or error row); ``box`` list<int32> ``[x, y, w, h]`` in the image's
pixels; ``score`` float64 (detector confidence); ``decision`` string (accept, ambiguous,
reject, no_face, error); ``reason`` string; ``emotion`` string (null unless accepted or
ambiguous); ``distribution`` struct of the 8 emotions' vote-calibrated shares; ``agreement``
float64 (predicted share of people who would pick the top emotion); ``aleatoric``,
``epistemic``, ``total``, ``shift_score`` float64; ``percentiles`` struct<aleatoric,
epistemic, total> (share of FERPlus validation faces below); ``error`` string; ``model``
string and ``model_version`` string (ferroute's version and the model files' checksum);
``source_bytes`` binary: the source's raw bytes where its name is not UTF-8 (a file name from
an old archive, say), else null, so no name is lost.

File names that are not UTF-8 reach Python as strings with lone surrogates (``os.fsdecode``).
Parquet's ``source`` shows them with ``\\xNN`` escapes (:func:`display_source`) beside the
exact bytes; CSV and JSONL files carry them losslessly (CSV: the name's own bytes, written
with ``surrogateescape``; JSONL: ``\\udcNN`` escapes), and ``--resume`` reads them back.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Iterable

from ..labels import EMOTIONS

SCORES = ("aleatoric", "epistemic", "total")
#: the columns of :func:`schema`, in order
COLUMNS = ("source", "face", "box", "score", "decision", "reason", "emotion", "distribution", "agreement", *SCORES, "shift_score",
           "percentiles", "error", "model", "model_version", "source_bytes")
#: the columns of :func:`text_rows` (a console table or CSV), in order
TEXT_COLUMNS = ("source", "time", "track", "face", "box", "score", "decision", "emotion", "agreement", "aleatoric", "epistemic", "reason")


def schema(labels: tuple[str, ...] = EMOTIONS) -> Any:
    """The Arrow schema of result rows."""
    import pyarrow as pa

    f64 = pa.float64()
    types = {"face": pa.int32(), "box": pa.list_(pa.int32()), "score": f64, "distribution": pa.struct([(e, f64) for e in labels]),
             **dict.fromkeys((*SCORES, "shift_score", "agreement"), f64), "percentiles": pa.struct([(s, f64) for s in SCORES]),
             "source_bytes": pa.binary()}
    return pa.schema([(c, types.get(c, pa.string())) for c in COLUMNS])


def display_source(source: str) -> str:
    """``source`` as valid UTF-8 text: bytes of a file name that are not UTF-8 as ``\\xNN``."""
    return os.fsencode(source).decode("utf-8", "backslashreplace") if isinstance(source, str) else str(source)


def raw_source(source: str) -> bytes | None:
    """The raw bytes of a file name that is not UTF-8 (``None`` for every other source)."""
    try:
        source.encode("utf-8")
        return None
    except UnicodeEncodeError:
        return os.fsencode(source)


def result_rows(item: dict[str, Any], model: str, model_version: str) -> list[dict[str, Any]]:
    """The rows of one routed item (``{'source', 'faces'}`` or ``{'source', 'error'}``);
    ``source`` as text (:func:`display_source`), ``source_bytes`` where that loses bytes."""
    base: dict[str, Any] = dict.fromkeys(COLUMNS)
    base.update(source=display_source(item["source"]), source_bytes=raw_source(item["source"]), model=model,
                model_version=model_version)
    if "error" in item:
        return [{**base, "decision": "error", "reason": item["error"], "error": item["error"]}]
    rows = []
    for k, f in enumerate(item.get("faces", [])):
        row = {**base, "decision": f["decision"], "reason": f.get("reason"), "emotion": f.get("emotion"),
               "distribution": f.get("distribution"), "agreement": f.get("agreement"), "percentiles": f.get("percentiles"),
               **{s: f.get(s) for s in (*SCORES, "shift_score")}}
        if f.get("box"):  # a detected face; a crop given as a face has no box
            row.update(face=k, box=[int(v) for v in f["box"]], score=f.get("score"))
        rows.append(row)
    return rows


def text_rows(item: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of one routed item as a console table or CSV shows them: :data:`TEXT_COLUMNS`
    of :func:`result_rows`, plus a video frame's ``time`` and ``track``; the box as
    ``"x y w h"``, empty cells as ``""``."""
    faces = [] if "error" in item else item.get("faces", [])
    out = []
    for k, row in enumerate(result_rows(item, "", "")):
        row["source"] = item["source"]  # text files carry the name's own bytes (surrogateescape)
        extra = {"time": item.get("time", ""), "track": faces[k].get("track", "") if faces else ""}
        cells = {c: extra[c] if c in extra else row[c] for c in TEXT_COLUMNS}
        cells["box"] = " ".join(map(str, row["box"])) if row["box"] else None
        out.append({c: "" if v is None else v for c, v in cells.items()})
    return out


def model_identity(router: Any) -> tuple[str, str]:
    """(model name, version): the model folder's name, and ferroute's version with the first
    12 hex characters of the SHA-256 of the folder's config and weights."""
    from .. import __version__
    from ..engine.cache import named_files_digest

    d = Path(router.model_dir) if router.model_dir else None
    if d is None:
        return "unknown", __version__
    digest = named_files_digest(sorted(d.glob("*.json")) + sorted(d.glob("*.safetensors")))
    return d.name, f"ferroute {__version__}; {digest[:12]}"


def done_sources(folder: Path) -> set[str]:
    """Sources already in a Parquet result folder (for ``--resume``), as the file system names
    them (``source_bytes`` where present); unreadable parts are ignored."""
    import pyarrow.parquet as pq

    done: set[str] = set()
    if folder.is_dir():
        for part in sorted(folder.glob("*.parquet")):
            try:
                cols = [c for c in ("source", "source_bytes") if c in pq.read_schema(part).names]
                table = pq.read_table(part, columns=cols).to_pydict()
            except Exception:  # a part cut short by an interruption: its inputs are routed again
                continue
            raw = table.get("source_bytes") or [None] * len(table["source"])
            done.update(os.fsdecode(b) if b is not None else s for s, b in zip(table["source"], raw))
    return done


class ParquetParts:
    """Writes result rows to a folder of Parquet parts (``part-<run>-<k>.parquet``), one part
    per ``rows_per_part`` rows, each written whole under a temporary name and renamed, so an
    interrupted run leaves only complete parts and a resumed run adds its own."""

    def __init__(self, folder: Path, labels: tuple[str, ...] = EMOTIONS, rows_per_part: int = 5000):
        self.folder, self.labels, self.rows_per_part = Path(folder), labels, rows_per_part
        self.folder.mkdir(parents=True, exist_ok=True)
        self.run = uuid.uuid4().hex[:8]
        self.rows: list[dict[str, Any]] = []
        self.parts = 0
        self.written = 0

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        self.rows.extend(rows)
        if len(self.rows) >= self.rows_per_part:
            self.flush()

    def flush(self) -> None:
        import os

        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.rows:
            return
        table = pa.Table.from_pylist(self.rows, schema=schema(self.labels))
        final = self.folder / f"part-{self.run}-{self.parts:05d}.parquet"
        tmp = self.folder / f".{final.name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, final)
        self.parts += 1
        self.written += len(self.rows)
        self.rows = []
