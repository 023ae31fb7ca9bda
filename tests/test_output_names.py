"""Output never loses rows: file names that are not UTF-8 are written in every format and found
again by --resume; an output location that cannot be written is one line and exit 3."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ferroute.cli import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
runner = CliRunner()
pytestmark = pytest.mark.core


@pytest.fixture
def folder(tmp_path):
    """Three faces, the middle one under a name that is not UTF-8 (byte 0xff)."""
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(EXAMPLES / "clear_face.png", d / "a.png")
    shutil.copy(EXAMPLES / "ambiguous_face.png", os.fsdecode(os.fsencode(str(d)) + b"/b\xff.png"))
    shutil.copy(EXAMPLES / "clear_face.png", d / "c.png")
    return d


def _sources(out: Path, fmt: str) -> list[str]:
    if fmt == "jsonl":
        return [json.loads(line)["source"] for line in out.read_text().splitlines()]
    if fmt == "csv":
        import csv

        return [r["source"] for r in csv.DictReader(out.read_bytes().decode("utf-8", "surrogateescape").splitlines())]
    from ferroute.output.results import done_sources

    return sorted(done_sources(out))


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_name_that_is_not_utf8_is_written_and_resumed(folder, tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / f"out.{fmt}"
    res = runner.invoke(app, ["route", str(folder), "--format", fmt, "--out", str(out)])
    assert res.exit_code == 0, res.output
    odd = os.fsdecode(os.fsencode(str(folder)) + b"/b\xff.png")
    assert sorted(_sources(out, fmt)) == sorted([str(folder / "a.png"), odd, str(folder / "c.png")])
    if fmt != "parquet":  # cut the last row, as an interruption would, and let --resume finish
        raw = out.read_bytes()
        out.write_bytes(raw[: raw.rstrip(b"\n").rfind(b"\n") + 1])
    res = runner.invoke(app, ["route", str(folder), "--format", fmt, "--out", str(out), "--resume"])
    assert res.exit_code == 0, res.output
    assert sorted(_sources(out, fmt)) == sorted([str(folder / "a.png"), odd, str(folder / "c.png")])


def test_parquet_keeps_the_exact_bytes_beside_a_readable_name(folder, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "out.parquet"
    assert runner.invoke(app, ["route", str(folder), "--out", str(out)]).exit_code == 0
    t = pq.read_table(out).to_pydict()
    odd = [(s, b) for s, b in zip(t["source"], t["source_bytes"]) if b is not None]
    assert odd == [(str(folder) + "/b\\xff.png", os.fsencode(str(folder)) + b"/b\xff.png")]


@pytest.mark.parametrize("where", ["/proc/x", "missing/sub/out.csv", "a_folder", "/dev/full"])
def test_an_output_that_cannot_be_written_is_one_line_and_exit_3(tmp_path, where, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_folder").mkdir()
    res = runner.invoke(app, ["route", str(EXAMPLES), "--format", "jsonl", "--out", where])
    assert res.exit_code == 3, res.output
    lines = [line for line in res.output.splitlines() if "error:" in line]
    assert len(lines) == 1 and where in lines[0] and "Traceback" not in res.output, res.output


def test_an_annotate_folder_that_cannot_be_made_is_exit_3(tmp_path):
    res = runner.invoke(app, ["route", str(EXAMPLES / "clear_face.png"), "--annotate", "/proc/annotated"])
    assert res.exit_code == 3 and "Traceback" not in res.output and "--annotate" in res.output, res.output
