"""Model folders are data, never code: every broken folder is a clear error (exit 2), none runs code."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from ferroute.train.backbones import check_config_kwargs
from ferroute.cli import app
from ferroute.train.ensemble import Ensemble, ModelError

runner = CliRunner()


def edit_config(d, fn):
    cfg = json.loads((d / "config.json").read_text())
    fn(cfg)
    (d / "config.json").write_text(json.dumps(cfg))


def break_truncated(d):
    p = d / "member_1.safetensors"
    p.write_bytes(p.read_bytes()[:300])


def break_shapes(d):
    edit_config(d, lambda c: c["backbone"]["kwargs"].update(width=6))


def break_missing_key(d):
    p = d / "member_0.safetensors"
    state = load_file(p)
    state.pop(sorted(state)[0])
    save_file(state, str(p))


def break_zeroed(d):
    for p in d.glob("member_*.safetensors"):
        save_file({k: torch.zeros_like(v) for k, v in load_file(p).items()}, str(p))


CASES = {
    "no config": (lambda d: (d / "config.json").unlink(), "no config.json"),
    "invalid JSON": (lambda d: (d / "config.json").write_text("{nope"), "invalid JSON"),
    "not an object": (lambda d: (d / "config.json").write_text("[1, 2]"), "format"),
    "missing key": (lambda d: edit_config(d, lambda c: c.pop("members")), "KeyError"),
    "unknown option": (lambda d: edit_config(d, lambda c: c["backbone"]["kwargs"].update(colour=3)), "'colour' is not allowed"),
    "path-like option": (lambda d: edit_config(d, lambda c: c["backbone"]["kwargs"].update(checkpoint_path="/tmp/evil.pth")), "'checkpoint_path' is not allowed"),
    "string where a number goes": (lambda d: edit_config(d, lambda c: c["backbone"]["kwargs"].update(width="4")), "must be a number"),
    "unknown backbone": (lambda d: edit_config(d, lambda c: c["backbone"].update(name="resnet9000")), "unknown backbone"),
    "truncated weights": (break_truncated, "damaged weights file"),
    "missing member": (lambda d: (d / "member_2.safetensors").unlink(), "member weights missing"),
    "wrong shapes": (break_shapes, "do not fit the architecture"),
    "missing tensor": (break_missing_key, "do not fit the architecture"),
    "zeroed weights": (break_zeroed, "zeroed"),
    "label mismatch": (lambda d: edit_config(d, lambda c: c["backbone"].update(labels=["a", "b"])), "2 labels"),
    "damaged router": (lambda d: (d / "router.json").write_text('{"reject_rate": 0.05}'), "damaged router"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_broken_model_folder_is_a_usage_error_naming_the_problem(case, tiny_model_dir, tmp_path):
    d = tmp_path / "model"
    shutil.copytree(tiny_model_dir, d)
    breaker, expected = CASES[case]
    breaker(d)
    face = tmp_path / "face.png"
    from PIL import Image

    Image.new("L", (48, 48), 128).save(face)
    res = runner.invoke(app, ["route", str(face), "--model", str(d)])
    assert res.exit_code == 2, (res.exit_code, res.output)
    assert expected in res.output and "Traceback" not in res.output, res.output
    if case != "damaged router":
        with pytest.raises(ModelError, match=expected.replace("(", r"\(")):
            Ensemble.load(d)


def test_the_allow_list_keeps_plain_numbers():
    assert check_config_kwargs("cnn", {"width": 8.0, "stage_convs": [1, 2]}) == {"width": 8, "stage_convs": [1, 2]}
    for bad in ({"width": True}, {"width": 2.5}, {"stage_convs": ["1"]}, {"weights": "x.safetensors"}):
        with pytest.raises(ValueError):
            check_config_kwargs("cnn", bad)
    with pytest.raises(ValueError, match="weights"):
        check_config_kwargs("dinov2_s14", {"weights": "/etc/passwd", "depth": 1})
