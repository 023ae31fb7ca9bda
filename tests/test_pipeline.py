import json

import numpy as np
import pytest
from PIL import Image

import ferroute
from ferroute.routing import NotCalibratedError


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
