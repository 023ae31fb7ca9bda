import json

import numpy as np
import pytest
from PIL import Image

import ferroute
from ferroute.decide.routing import NotCalibratedError


def test_load_routes_arrays_paths_and_pil(tiny_model_dir, tmp_path):
    r = ferroute.load(tiny_model_dir)
    face = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    Image.fromarray(face).save(tmp_path / "f.png")
    for src in (face, tmp_path / "f.png", Image.fromarray(face)):
        out = r.route(src)
        assert len(out) == 1
        rep = out[0]
        assert rep["decision"] in {"accept", "ambiguous", "reject"}
        assert rep["box"] == [0, 0, 48, 48]
        assert set(rep) >= {"reason", "emotion", "distribution", "aleatoric", "epistemic", "total", "percentiles"}
        json.dumps(rep)


def test_no_face_never_gets_an_emotion(tiny_model_dir):
    r = ferroute.load(tiny_model_dir)
    out = r.route(np.full((300, 400, 3), 90, np.uint8))
    assert out == [{"decision": "no_face", "reason": "No face was found in the image, so no emotion is reported.", "emotion": None, "box": None, "score": None, "landmarks": None}]


def test_batch_reports_bad_items_and_finishes_the_rest(tiny_model_dir, tmp_path):
    r = ferroute.load(tiny_model_dir)
    (tmp_path / "bad.jpg").write_text("not an image")
    good = np.zeros((48, 48), np.uint8)
    items = r.route_many([tmp_path / "bad.jpg", good, good])
    assert "error" in items[0] and "bad.jpg" in items[0]["error"]
    assert [len(it["faces"]) for it in items[1:]] == [1, 1]


def test_uncalibrated_model_is_a_clear_error(tiny_model_dir, tmp_path):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    (d / "router.json").unlink()
    with pytest.raises(NotCalibratedError, match="ferroute calibrate"):
        ferroute.load(d)


def test_a_bad_item_never_takes_its_neighbours_down(tiny_model_dir, tmp_path):
    """Extreme shapes, a folder, a missing file and garbage beside a good face: each bad item is its own error."""
    import io

    from PIL import Image

    def enc(img, fmt="PNG"):
        buf = io.BytesIO()
        img.save(buf, fmt)
        return buf.getvalue()

    good = enc(Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)))
    (tmp_path / "folder.png").mkdir()
    bad = [enc(Image.new("L", (100000, 30))), enc(Image.new("RGB", (30, 100000))), enc(Image.new("I;16", (7, 3000))),
           str(tmp_path / "folder.png"), str(tmp_path / "missing.png"), b"GIF89a" + b"\x00" * 50]
    r = ferroute.load(tiny_model_dir)
    out = r.route_many([good, *bad, good])
    assert out[0]["faces"][0]["decision"] in {"accept", "ambiguous", "reject"}
    assert out[-1]["faces"][0]["decision"] in {"accept", "ambiguous", "reject"}
    for item in out[1:-1]:
        assert "error" in item or item["faces"][0]["decision"] == "no_face", item
    assert "a folder" in out[4]["error"] and "file not found" in out[5]["error"]


def test_route_stream_keeps_order_and_matches_route_many(tiny_model_dir):
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 256, (48, 48), dtype=np.uint8) for _ in range(23)] + [b"junk"]
    r = ferroute.load(tiny_model_dir)
    streamed = list(r.route_stream(imgs, batch_size=5, workers=2))
    assert [it["source"] for it in streamed] == [f"<input {i}>" for i in range(24)]
    assert streamed == r.route_many(imgs)


def test_import_ferroute_does_not_load_torch():
    import subprocess
    import sys

    code = "import sys, ferroute; assert 'torch' not in sys.modules; ferroute.__version__; import ferroute.cli; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_batches_are_padded_to_few_shapes():
    from ferroute.router import batch_shape

    sizes = {batch_shape(n) for n in range(1, 257)}
    assert sizes == {1, 2, 4, 8, 16, 32, 64, 96, 128, 160, 192, 224, 256}
    assert all(batch_shape(n) >= n for n in range(300)) and batch_shape(0) == 0


def test_route_many_holds_one_group_of_a_long_iterable_not_all_of_it(tiny_model_dir):
    """A generator of 200 images: route_many never holds more than a few groups of them alive
    at once (each input is dropped once its faces are found), and the rows come in order."""
    import weakref

    import numpy as np

    from ferroute.router import DECODE_GROUP, FERRouter

    router = FERRouter.load(tiny_model_dir)
    alive: list[weakref.ref] = []
    most = 0

    def images():
        nonlocal most
        rng = np.random.default_rng(0)
        for _ in range(200):
            most = max(most, sum(r() is not None for r in alive))
            img = rng.integers(0, 256, (48, 48), dtype=np.uint8)
            alive.append(weakref.ref(img))
            yield img

    out = router.route_many(images(), names=[f"i{k}" for k in range(200)])
    assert [o["source"] for o in out] == [f"i{k}" for k in range(200)]
    assert most <= DECODE_GROUP + 1
