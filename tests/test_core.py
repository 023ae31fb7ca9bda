"""The core install: everything a user runs without training works with no torch.

Each test runs ferroute in a child process where importing torch fails (a meta-path blocker,
so the test means the same in the full environment); CI also runs these tests in a second,
core-only environment (`pip install .`) where torch is not installed at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.core

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

#: Makes `import torch` (and its friends) fail as in an install without them.
BLOCKER = textwrap.dedent('''
    import sys
    class _NoTorch:
        BLOCKED = ("torch", "torchvision", "timm", "safetensors", "onnx")
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, _NoTorch())
''')


def run_core(tmp_path: Path, code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``code`` (Python) in a child process that cannot import torch."""
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "FERROUTE_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return run_core(tmp_path, "import sys; from ferroute.cli import main; sys.argv = ['ferroute', *sys.argv[1:]]; main()", *args)


def test_the_blocker_blocks(tmp_path):
    res = run_core(tmp_path, "import torch")
    assert res.returncode != 0 and "No module named 'torch'" in res.stderr


def test_api_routes_annotates_and_serves_without_torch(tmp_path):
    code = textwrap.dedent(f'''
        import json, sys
        import numpy as np
        import ferroute
        from fastapi.testclient import TestClient
        from ferroute.serve.app import create_app
        ex = {str(EXAMPLES)!r}
        out = {{}}
        for name in ("default", "fast"):
            r = ferroute.load(name)
            out[name] = {{n: [f["decision"] for f in r.route(ex + "/" + n)] for n in ("clear_face.png", "corrupted_face.png", "no_face_coffee.jpg")}}
            out[name + "_info"] = r.ensemble.run_info()
        r = ferroute.load()
        many = r.route_many([ex + "/clear_face.png", ex + "/missing.png"])
        out["many"] = ["faces" in many[0], "error" in many[1]]
        img = ferroute.annotate(ex + "/astronaut_photo.jpg", r.route(ex + "/astronaut_photo.jpg"))
        out["annotated"] = list(img.size)
        client = TestClient(create_app(r))
        with open(ex + "/clear_face.png", "rb") as f:
            resp = client.post("/v1/route", files={{"files": ("clear_face.png", f, "image/png")}})
        out["http"] = [resp.status_code, resp.json()["results"][0]["faces"][0]["decision"]]
        out["page"] = client.get("/").status_code
        out["model"] = client.get("/v1/model").json()["inference"]["backend"]
        out["torch_loaded"] = "torch" in sys.modules
        print(json.dumps(out))
    ''')
    res = run_core(tmp_path, code)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["torch_loaded"] is False
    for name in ("default", "fast"):
        assert out[name]["clear_face.png"] == ["accept"]
        assert out[name]["no_face_coffee.jpg"] == ["no_face"]
        assert out[name + "_info"]["backend"] == "OnnxEnsemble"
    assert out["default"]["corrupted_face.png"] == ["reject"]
    assert out["many"] == [True, True]
    assert out["annotated"][0] > 0
    assert out["http"] == [200, "accept"]
    assert out["page"] == 200 and out["model"] == "OnnxEnsemble"


def test_cli_routes_photos_folders_and_video_without_torch(tmp_path):
    import cv2
    import numpy as np
    from PIL import Image

    clip = tmp_path / "clip.avi"
    a = np.asarray(Image.open(EXAMPLES / "astronaut_photo.jpg"))[..., ::-1]
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (512, 512))
    for i in range(20):
        w.write(cv2.warpAffine(a, np.float32([[1, 0, 2 * i], [0, 1, 0]]), (512, 512), borderMode=cv2.BORDER_REPLICATE))
    w.release()
    res = cli(tmp_path, "route", str(EXAMPLES), str(clip), "--format", "jsonl", "--annotate", str(tmp_path / "ann"))
    assert res.returncode == 0, res.stderr[-3000:]
    items = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    by = {Path(i["source"]).name: i for i in items if "time" not in i}
    assert {f["decision"] for f in by["clear_face.png"]["faces"]} == {"accept"}
    assert sum("time" in i for i in items) >= 3  # video frames at 2 fps
    assert any((tmp_path / "ann").iterdir())
    res = cli(tmp_path, "route", str(EXAMPLES / "clear_face.png"), "--backend", "torch")
    assert res.returncode == 2 and 'pip install "ferroute[train]"' in res.stderr


@pytest.mark.parametrize("command", [["train", "--out", "x"], ["calibrate", "--model", "default"], ["evaluate"], ["export", "default"]])
def test_training_commands_name_the_extra_in_a_core_install(tmp_path, command):
    res = cli(tmp_path, *command)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and 'pip install "ferroute[train]"' in lines[0], res.stderr


def test_version_is_the_changelogs_first(tmp_path):
    import re

    res = cli(tmp_path, "--version")
    first = re.search(r"^## \[?(\d+\.\d+\.\d+)", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert res.returncode == 0 and first and res.stdout.strip() == f"ferroute {first.group(1)}"


def test_onnx_graph_errors_name_the_file(tmp_path):
    from ferroute.engine.config import ModelError
    from ferroute.engine.onnxrun import load_graph

    with pytest.raises(ModelError, match="no ONNX graph"):
        load_graph(tmp_path)
    (tmp_path / "ensemble.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelError, match="ensemble.onnx: not a readable ONNX graph"):
        load_graph(tmp_path)


def test_a_graph_from_other_weights_is_refused(tmp_path):
    import shutil

    from ferroute.engine.config import ModelError
    from ferroute.engine.onnxrun import load_graph
    from ferroute.router import resolve_model_dir

    d = tmp_path / "m"
    shutil.copytree(resolve_model_dir("default"), d)
    load_graph(d)  # as shipped: the graph is the weights'
    member = d / "member_0.safetensors"
    member.write_bytes(member.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ModelError, match="exported from other weights"):
        load_graph(d)
