import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from ferroute.cli import app

runner = CliRunner()


@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(d / "a.png")
    Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(d / "sub" / "b.jpg")
    Image.new("RGB", (300, 200), (30, 90, 200)).save(d / "sky.jpg")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    return d


def test_route_folder_table_with_a_bad_file(tiny_model_dir, photos):
    res = runner.invoke(app, ["route", str(photos), "--model", str(tiny_model_dir)])
    assert res.exit_code == 1, res.output  # one input failed, the rest routed
    assert "broken.png" in res.output and "error" in res.output
    assert "no_face" in res.output and "sky.jpg" in res.output
    assert "b.jpg" in res.output  # recursive


def test_route_jsonl_and_csv_to_file(tiny_model_dir, photos, tmp_path):
    res = runner.invoke(app, ["route", str(photos / "a.png"), str(photos / "sky.jpg"), "--model", str(tiny_model_dir), "--format", "jsonl"])
    assert res.exit_code == 0
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.strip()]
    assert [len(x["faces"]) for x in lines] == [1, 1] and lines[1]["faces"][0]["decision"] == "no_face"
    out = tmp_path / "r.csv"
    res = runner.invoke(app, ["route", str(photos / "*.png"), "--model", str(tiny_model_dir), "--format", "csv", "--out", str(out)])
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert {r["source"].split("/")[-1] for r in rows} == {"a.png", "broken.png"}


def test_route_reports_in_argument_order(tiny_model_dir, photos):
    args = [str(photos / "sky.jpg"), str(photos / "gone.png"), str(photos / "broken.png"), str(photos / "sub"), str(photos / "a.png")]
    res = runner.invoke(app, ["route", *args, "--model", str(tiny_model_dir), "--format", "jsonl"])
    assert res.exit_code == 1, res.output
    items = [json.loads(x) for x in res.stdout.splitlines() if x.strip()]
    assert [Path(it["source"]).name for it in items] == ["sky.jpg", "gone.png", "broken.png", "b.jpg", "a.png"]
    assert ["error" in it for it in items] == [False, True, True, False, False]
    assert "file not found" in items[1]["error"] and "not found" not in items[2]["error"]


def test_route_usage_errors(tiny_model_dir, tmp_path):
    assert runner.invoke(app, ["route", str(tmp_path), "--model", str(tiny_model_dir)]).exit_code == 2
    assert runner.invoke(app, ["route", "x.png", "--format", "xml"]).exit_code == 2
    res = runner.invoke(app, ["route", str(tmp_path / "missing.png"), "--model", str(tiny_model_dir)])
    assert res.exit_code == 1 and "file not found" in res.output
    res = runner.invoke(app, ["route", "x.png", "--model", str(tmp_path)])
    assert res.exit_code == 2 and "config.json" in res.output


def test_missing_data_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("FERPLUS_DIR", raising=False)
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "m"), "--precision", "int8"])
    assert res.exit_code == 2 and "inference mode" in res.output
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "FERPLUS_DIR" in res.output
    res = runner.invoke(app, ["evaluate", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "nowhere" in res.output


def test_distill_from_usage_errors_before_reading_data(tmp_path, monkeypatch):
    monkeypatch.delenv("FERPLUS_DIR", raising=False)
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "m"), "--distill-from", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "nowhere" in res.output and "config.json" in res.output
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "m"), "--distill-from", "fast", "--backbone-arg", "width=8"])
    assert res.exit_code == 2 and "teacher's architecture" in res.output
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "m"), "--distill-from", "fast", "--members", "6"])
    assert res.exit_code == 2 and "at most" in res.output
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "m"), "--distill-from", "fast"])
    assert res.exit_code == 2 and "FERPLUS_DIR" in res.output  # the options were fine: only then the data


@pytest.mark.data
def test_train_calibrate_evaluate_on_real_ferplus(ferplus_dir, tmp_path):
    m = tmp_path / "m"
    res = runner.invoke(app, ["train", "--data", str(ferplus_dir), "--out", str(m), "--members", "2", "--epochs", "1", "--limit", "512", "--backbone-arg", "width=4", "--backbone-arg", "depth=2"])
    assert res.exit_code == 0, res.output
    log = json.loads((m / "train_log.json").read_text())
    assert log["command"].startswith("ferroute train") and set(log["members"]) == {"0", "1"}
    res = runner.invoke(app, ["calibrate", "--model", str(m), "--data", str(ferplus_dir), "--precision", "bf16"])
    assert res.exit_code == 0, res.output
    assert (m / "router.json").is_file()
    res = runner.invoke(app, ["train", "--ldl", "--data", str(ferplus_dir), "--out", str(tmp_path / "ldl"), "--epochs", "1", "--limit", "256", "--backbone-arg", "width=4", "--backbone-arg", "depth=2"])
    assert res.exit_code == 0, res.output
    rep = tmp_path / "rep"
    res = runner.invoke(app, ["evaluate", "--data", str(ferplus_dir), "--model", str(m), "--ldl", str(tmp_path / "ldl"), "--out", str(rep), "--limit", "150", "--corruptions", "gaussian_noise,fog", "--bootstrap", "50"])
    assert res.exit_code == 0, res.output
    r = json.loads((rep / "report.json").read_text())
    assert r["n_test"] == 150 and 0 <= r["accuracy"] <= 1
    assert set(r["shift"]["auroc_epistemic"]) == {"1", "2", "3", "4", "5"}
    assert "ldl" in r
    for key in ("tta", "precision"):  # the LDL baseline runs as the ensemble does, not as stored
        assert r["ldl"][key] == r["model"][key], key
    assert r["model"]["precision"] == "bf16"
    assert r["model"]["compiled"] is False  # 150 faces per call: below the compile threshold
    res = runner.invoke(app, ["evaluate", "--data", str(ferplus_dir), "--model", str(m), "--out", str(rep), "--compile", "yes"])
    assert res.exit_code == 2 and "Invalid value for '--compile'" in res.output

    # int8: for one run (scales fitted on the validation faces, router refitted), or stored by calibrate
    args = ["evaluate", "--data", str(ferplus_dir), "--model", str(m), "--ldl", str(tmp_path / "ldl"), "--out", str(rep),
            "--limit", "150", "--corruptions", "fog", "--bootstrap", "50"]
    res = runner.invoke(app, [*args, "--precision", "int8"])
    assert res.exit_code == 0, res.output
    r = json.loads((rep / "report.json").read_text())
    assert r["model"]["precision"] == r["ldl"]["precision"] == "int8"
    stored = json.loads((m / "config.json").read_text())["meta"]["inference"]
    assert stored["precision"] == "bf16" and "int8" not in stored  # the override did not touch the model folder
    res = runner.invoke(app, ["calibrate", "--model", str(m), "--data", str(ferplus_dir), "--precision", "int8"])
    assert res.exit_code == 0, res.output
    stored = json.loads((m / "config.json").read_text())["meta"]["inference"]
    assert stored["precision"] == "int8" and stored["int8"]["faces"] > 0 and stored["int8"]["activations"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads((rep / "report.json").read_text())["model"]["precision"] == "int8"
    res = runner.invoke(app, ["evaluate", "--data", str(ferplus_dir), "--model", str(m), "--out", str(rep), "--precision", "int4"])
    assert res.exit_code == 2 and "--precision" in res.output


def test_route_in_small_chunks_with_prefetch_keeps_every_file_in_order(tiny_model_dir, photos):
    res = runner.invoke(app, ["route", str(photos), "--model", str(tiny_model_dir), "--format", "jsonl", "--batch-size", "1"])
    assert res.exit_code == 1
    sources = [json.loads(x)["source"].split("/")[-1] for x in res.stdout.splitlines() if x.strip()]
    assert sources == ["a.png", "broken.png", "sky.jpg", "b.jpg"]


def test_version():
    import ferroute

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and ferroute.__version__ in res.output


def test_python_dash_m_runs_the_same_command_line():
    out = subprocess.run([sys.executable, "-m", "ferroute", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "evaluate" in out.stdout and "route" in out.stdout


def test_embedded_models_are_chosen_by_name(tmp_path):
    face = Path(__file__).resolve().parents[1] / "examples" / "clear_face.png"
    res = runner.invoke(app, ["route", str(face), "--model", "fast", "--format", "jsonl"])
    assert res.exit_code == 0, res.output
    assert [f["decision"] for f in json.loads(res.stdout.splitlines()[-1])["faces"]] == ["accept"]
    res = runner.invoke(app, ["route", str(face), "--model", str(tmp_path / "nothing-here")])
    assert res.exit_code == 2 and "nothing-here" in res.output


def test_int8_where_the_cpu_cannot_is_a_clear_error(tiny_model_dir, fake_ferplus, tmp_path, monkeypatch):
    import shutil

    from ferroute.train import backbones

    from ferroute.train import graphs

    from ferroute.train import runtime

    monkeypatch.setattr(backbones, "int8_supported", lambda: False)  # an ARM machine, say
    monkeypatch.setattr(graphs, "int8_supported", lambda: False)
    monkeypatch.setattr(runtime, "int8_supported", lambda: False)
    m = tmp_path / "m"
    shutil.copytree(tiny_model_dir, m)
    res = runner.invoke(app, ["calibrate", "--model", str(m), "--data", str(fake_ferplus), "--precision", "int8"])
    assert res.exit_code == 2 and "x86 quantized engine" in res.output, res.output
    res = runner.invoke(app, ["evaluate", "--model", str(m), "--data", str(fake_ferplus), "--out", str(tmp_path / "r"), "--precision", "int8"])
    assert res.exit_code == 2 and "x86 quantized engine" in res.output, res.output


def test_devices_this_machine_or_backend_cannot_use_are_usage_errors(tiny_model_dir, photos, monkeypatch):
    import torch

    res = runner.invoke(app, ["route", str(photos / "a.png"), "--model", str(tiny_model_dir), "--device", "gpu0"])
    assert res.exit_code == 2 and "cpu, cuda or cuda:N" in res.output, res.output
    if not torch.cuda.is_available():
        res = runner.invoke(app, ["route", str(photos / "a.png"), "--model", str(tiny_model_dir), "--device", "cuda"])
        assert res.exit_code == 2 and "no CUDA GPU" in res.output, res.output
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine: onnxruntime still runs on the CPU
    res = runner.invoke(app, ["route", str(photos / "a.png"), "--model", str(tiny_model_dir), "--device", "cuda", "--backend", "onnx"])
    assert res.exit_code == 2 and "onnx backend runs on the CPU" in res.output, res.output
    res = runner.invoke(app, ["serve", "--model", str(tiny_model_dir), "--device", "cuda", "--backend", "onnx"])
    assert res.exit_code == 2 and "onnx backend runs on the CPU" in res.output, res.output


def test_calibrate_a_single_model_stores_its_arithmetic_but_no_router(fake_ferplus, tmp_path):
    import json

    from ferroute.train.backbones import create_backbone, int8_supported
    from ferroute.train.ensemble import Ensemble

    net, cfg = create_backbone("cnn", width=4, depth=2)
    m = tmp_path / "ldl"
    Ensemble([net], cfg).save(m)
    res = runner.invoke(app, ["calibrate", "--model", str(m), "--data", str(fake_ferplus)])
    assert res.exit_code == 2 and "single model" in res.output and "2+ members" in res.output, res.output
    precision = "int8" if int8_supported() else "fp32"
    res = runner.invoke(app, ["calibrate", "--model", str(m), "--data", str(fake_ferplus), "--tta", "hflip", "--precision", precision])
    assert res.exit_code == 0 and "no routing thresholds" in res.output, res.output
    assert not (m / "router.json").exists()
    stored = json.loads((m / "config.json").read_text())["meta"]["inference"]
    assert stored["tta"] == "hflip" and stored["precision"] == precision
    assert ("int8" in stored) == (precision == "int8")
    loaded = Ensemble.load(m)
    assert loaded.tta == "hflip" and loaded.is_quantized == (precision == "int8")


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_route_resume_skips_what_is_done_and_repairs_a_cut_line(tiny_model_dir, photos, tmp_path, fmt):
    out = tmp_path / f"rows.{fmt}"
    first = runner.invoke(app, ["route", str(photos), "--model", str(tiny_model_dir), "--format", fmt, "--out", str(out)])
    full = out.read_text()
    lines = full.splitlines(keepends=True)
    # an interrupted run: the first two inputs' lines, and half of the third's
    keep = 3 if fmt == "csv" else 2
    out.write_text("".join(lines[:keep]) + lines[keep][: len(lines[keep]) // 2])
    res = runner.invoke(app, ["route", str(photos), "--model", str(tiny_model_dir), "--format", fmt, "--out", str(out), "--resume"])
    assert first.exit_code == 1 and res.exit_code in (0, 1) and "resuming" in res.output  # broken.png was written as an error row: done
    assert sorted(out.read_text().splitlines()) == sorted(full.splitlines())


def test_resume_needs_a_file_to_append_to(tiny_model_dir, photos):
    res = runner.invoke(app, ["route", str(photos), "--model", str(tiny_model_dir), "--resume"])
    assert res.exit_code == 2 and "--resume needs --out" in res.output


def test_folder_scans_report_dangling_links_and_do_not_follow_loops(tiny_model_dir, tmp_path):
    d = tmp_path / "scan"
    (d / "a").mkdir(parents=True)
    (d / "a" / "back").symlink_to(d)  # a loop
    (d / "a" / "gone.jpg").symlink_to(tmp_path / "nothing.jpg")
    (d / "a" / "dir.png").mkdir()
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(d / "a" / "face.png")
    res = runner.invoke(app, ["route", str(d), "--model", str(tiny_model_dir), "--format", "csv"])
    assert res.exit_code == 1
    rows = {r["source"].split("/")[-1]: r for r in csv.DictReader(io.StringIO(res.stdout))}
    assert set(rows) == {"face.png", "gone.jpg", "dir.png"}
    assert rows["gone.jpg"]["decision"] == "error" and rows["dir.png"]["decision"] == "error"


def test_two_evaluate_runs_sharing_one_cache_give_identical_reports(tiny_model_dir, fake_ferplus, tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, FERROUTE_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "ferroute", "evaluate", "--model", str(tiny_model_dir), "--ldl", str(tiny_model_dir), "--data", str(fake_ferplus),
           "--corruptions", "gaussian_noise,glass_blur,contrast", "--bootstrap", "50", "--workers", "1", "--backend", "torch"]
    procs = [subprocess.Popen(cmd + ["--out", str(tmp_path / f"r{k}")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    reports = [json.loads((tmp_path / f"r{k}" / "report.json").read_text()) for k in range(2)]
    for r in reports:
        r.pop("timings", None)
        r.pop("machine", None)
    assert reports[0] == reports[1]


def test_choices_are_enums_in_help_and_the_replay_command_keeps_plain_values():
    import typer.main

    from ferroute.cli import _command_line

    res = runner.invoke(app, ["route", "--help"], env={"COLUMNS": "200"})
    assert "table" in res.output and "parquet" in res.output and "local" in res.output
    cmd = typer.main.get_command(app)
    ctx = cmd.make_context("ferroute", ["train", "--out", "x", "--target", "majority", "--precision", "fp32"])
    sub = ctx.command.get_command(ctx, "train")
    sctx = sub.make_context("train", ["--out", "x", "--target", "majority", "--precision", "fp32"], parent=ctx)
    line = _command_line(sctx)
    assert "--target majority" in line and "--precision fp32" in line and "Target." not in line


def test_the_reject_score_choices_are_the_routers():
    from ferroute.cli.common import Shift
    from ferroute.decide.routing import UncertaintyRouter

    assert sorted(s.value for s in Shift) == sorted(UncertaintyRouter.SHIFT_SCORES)


def test_route_adapt_estimates_the_mix_first_and_refuses_what_it_cannot(tiny_model_dir, tmp_path):
    import shutil

    from ferroute.train.ensemble import Ensemble
    from ferroute.decide.labelshift import PriorAdapter

    rng = np.random.default_rng(0)
    crops = tmp_path / "crops"
    crops.mkdir()
    for i in range(120):  # 48x48 images are taken as face crops as they are
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(crops / f"{i:03d}.png")
    res = runner.invoke(app, ["route", str(crops), "--model", str(tiny_model_dir), "--adapt"])
    assert res.exit_code == 2 and "priors.json" in res.output and "calibrate" in res.output
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    faces = rng.integers(0, 256, (200, 48, 48), dtype=np.uint8)
    PriorAdapter().fit(Ensemble.load(model).predict_proba(faces), rng.dirichlet(np.ones(8), 200)).save(model)
    res = runner.invoke(app, ["route", str(crops), "--model", str(model), "--adapt", "--format", "jsonl"])
    assert res.exit_code == 0, res.output
    assert "emotion mix of these faces: neutral" in res.output
    assert sum(1 for x in res.stdout.splitlines() if x.startswith("{")) == 120
    res = runner.invoke(app, ["route", *[str(p) for p in sorted(crops.iterdir())[:5]], "--model", str(model), "--adapt"])
    assert res.exit_code == 2 and "at least 100 faces, got 5" in res.output
    res = runner.invoke(app, ["route", str(crops), "--model", str(model), "--adapt", "--engine", "ray", "--out", str(tmp_path / "r.parquet")])
    assert res.exit_code == 2 and "--engine local" in res.output


@pytest.mark.parametrize("shift", ["learned", "learned+face"])
def test_calibrate_refuses_a_learned_reject_score_and_names_the_script_that_fits_it(fake_ferplus, tmp_path, shift):
    from ferroute.train.backbones import create_backbone
    from ferroute.train.ensemble import Ensemble

    net, cfg = create_backbone("cnn", width=4, depth=2)
    m = tmp_path / "m"
    Ensemble([net, create_backbone("cnn", width=4, depth=2)[0]], cfg).save(m)
    res = runner.invoke(app, ["calibrate", "--model", str(m), "--data", str(fake_ferplus), "--shift", shift])
    assert res.exit_code == 2 and "select_shift_score.py" in res.output and shift in res.output, res.output
