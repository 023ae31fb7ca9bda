"""The embedded models: load offline, route the shipped examples as documented."""

import json
from pathlib import Path

import numpy as np
import pytest

import ferroute
from ferroute.train.ensemble import ModelError
from ferroute.router import (
    EMBEDDED_MODELS,
    default_ldl_dir,
    default_model_dir,
    resolve_model_dir,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def router():
    return ferroute.load()


@pytest.fixture(scope="module")
def fast_router():
    return ferroute.load("fast")


@pytest.mark.parametrize("name", list(EMBEDDED_MODELS))
def test_embedded_models_are_complete_with_their_own_ldl_baseline(name):
    d = resolve_model_dir(name)
    for f in ("config.json", "router.json", "MODEL_CARD.md", "train_log.json"):
        assert (d / f).is_file(), f
    assert len(list(d.glob("member_*.safetensors"))) == 5
    assert sum(p.stat().st_size for p in d.parent.rglob("*.safetensors")) < 25 * 2**20
    ldl = default_ldl_dir(d)
    assert (ldl / "member_0.safetensors").is_file() and (ldl / "MODEL_CARD.md").is_file()
    cfg = json.loads((d / "config.json").read_text())["backbone"]
    assert json.loads((ldl / "config.json").read_text())["backbone"] == cfg  # trained like its ensemble
    assert resolve_model_dir() == default_model_dir() and default_ldl_dir() == default_ldl_dir(default_model_dir())


def test_model_names_resolve_but_an_existing_path_wins(tmp_path, monkeypatch):
    assert resolve_model_dir("fast").parent == default_model_dir().parent
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fast").mkdir()
    assert resolve_model_dir("fast") == Path("fast")
    with pytest.raises(ModelError, match="embedded models: default, fast"):
        ferroute.load("no-such-model")


@pytest.mark.parametrize("name", ["clear_face.png", "ambiguous_face.png", "no_face_coffee.jpg"])
def test_fast_model_reads_the_clean_examples_like_the_default(fast_router, router, name):
    """The two embedded ensembles see the same emotion (or no face); their thresholds differ,
    so the decision may not (fast accepts the ambiguous example, aleatoric just under its line)."""
    fast, default = fast_router.route(EXAMPLES / name), router.route(EXAMPLES / name)
    assert [f.get("emotion") for f in fast] == [f.get("emotion") for f in default]
    assert (fast[0]["decision"] == "no_face") == (default[0]["decision"] == "no_face")


def _documented_decisions() -> dict[str, list[str]]:
    """The decisions and reasons the README's "What the first command prints" table shows, per example."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## What the first command prints", 1)[1].split("```", 2)[1]
    at = next(line for line in block.splitlines() if line.startswith("source")).index("reason")
    out: dict[str, list[tuple[str, str]]] = {}
    for line in block.splitlines():
        if line.startswith("examples/"):
            words = line.split()
            decision = next(w for w in words if w in {"accept", "ambiguous", "reject", "no_face"})
            out.setdefault(words[0].removeprefix("examples/"), []).append((decision, line[at:].strip()))
    return out


def test_examples_route_as_the_readme_shows(router):
    """The examples are picked by rules blind to the model (scripts/make_examples.py); the
    README shows what the model says about them, reasons included, and must stay true."""
    documented = _documented_decisions()
    assert set(documented) == {p.name for p in EXAMPLES.iterdir()}
    for name, shown in documented.items():
        assert [(f["decision"], f["reason"]) for f in router.route(EXAMPLES / name)] == shown, name


def test_corruption_makes_the_same_face_less_familiar(router):
    """corrupted_face.png is clear_face.png under glass blur: whatever the decision, the
    shift score must rise."""
    clear, corrupted = (router.route(EXAMPLES / n)[0] for n in ("clear_face.png", "corrupted_face.png"))
    assert corrupted["shift_score"] > clear["shift_score"]


def test_real_photo_face_is_found(router):
    faces = router.route(EXAMPLES / "astronaut_photo.jpg")
    assert len(faces) == 1 and faces[0]["decision"] != "no_face"
    x, y, w, h = faces[0]["box"]
    assert 150 < x + w / 2 < 300 and 50 < y + h / 2 < 200  # her face, upper middle of the photo


@pytest.mark.data
@pytest.mark.parametrize("which", ["router", "fast_router"])
def test_embedded_models_on_real_ferplus_test(which, ferplus_dir, request):
    from ferroute.evaluate.ferplus import load_split

    router = request.getfixturevalue(which)
    te = load_split("test", ferplus_dir).subset(slice(0, 600))
    probs = router.ensemble.predict_proba(te.images)
    lab = te.labels >= 0
    acc = np.mean(probs.mean(1)[lab].argmax(-1) == te.labels[lab])
    assert acc > 0.8
    reps = router.route_faces(te.images)
    assert np.mean([r["decision"] == "reject" for r in reps]) < 0.15  # clean faces are mostly kept


@pytest.mark.data
def test_bf16_and_fp32_route_real_faces_alike(ferplus_dir):
    """The embedded model may run in bf16 (AMX CPUs); its decisions must not hinge on that."""
    from ferroute.evaluate.ferplus import load_split

    te = load_split("valid", ferplus_dir).subset(slice(0, 400))
    out = {}
    for precision in ("fp32", "bf16"):
        r = ferroute.load(backend="torch")
        r.ensemble.configure(precision=precision)
        out[precision] = (r.ensemble.predict_proba(te.images), [f["decision"] for f in r.route_faces(te.images)])
    diff = np.abs(out["fp32"][0] - out["bf16"][0])
    assert diff.mean() < 0.005 and diff.max() < 0.1
    agree = np.mean([a == b for a, b in zip(out["fp32"][1], out["bf16"][1])])
    assert agree >= 0.97, agree


@pytest.mark.data
def test_fast_model_in_int8_routes_real_faces_like_fp32(ferplus_dir):
    """`fast` ships in int8 (scales stored in its config); its decisions must not hinge on that."""
    from ferroute.train.backbones import int8_supported
    from ferroute.evaluate.ferplus import load_split

    if not int8_supported():
        pytest.skip("no x86 quantized engine in this PyTorch build: int8 falls back to auto here")
    te = load_split("valid", ferplus_dir).subset(slice(0, 400))
    out = {}
    for precision in ("fp32", "int8"):
        r = ferroute.load("fast", backend="torch")
        assert r.ensemble.precision == "int8" and r.ensemble.is_quantized  # as shipped
        r.ensemble.configure(precision=precision)
        assert r.ensemble.runtime.uses_int8() == (precision == "int8")
        out[precision] = (r.ensemble.predict_proba(te.images), [f["decision"] for f in r.route_faces(te.images)])
    diff = np.abs(out["fp32"][0] - out["int8"][0])
    assert 0 < diff.mean() < 0.01 and diff.max() < 0.2
    agree = np.mean([a == b for a, b in zip(out["fp32"][1], out["int8"][1])])
    assert agree >= 0.95, agree


def test_the_default_router_turns_away_crops_that_are_no_face(router):
    """The shipped reject score weighs the face detector's view and the crop's statistics; a
    flat crop and a page of text are turned away, whatever the members say about their
    emotion, and the reason names the signal that moved the score."""
    from ferroute.evaluate.nonface import nonface_crops

    crops, kinds = nonface_crops(60)
    flat_and_text = np.concatenate([np.full((1, 48, 48), 128, np.uint8), crops[[k == "text" for k in kinds]]])
    faces = router.route_faces(flat_and_text)
    assert all(f["decision"] == "reject" for f in faces), [f["reason"] for f in faces]
    assert all("face detector" in f["reason"] or "image itself" in f["reason"] for f in faces)
