"""Video: frames sampled at --fps, faces linked into tracks, one plot per track."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import ferroute
from ferroute.cli import app
from ferroute.vision.video import IoUTracker, iou, sample_frames

ASTRONAUT = Path(__file__).resolve().parents[1] / "examples" / "astronaut_photo.jpg"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """4 s at 10 fps (MJPEG in AVI: every OpenCV build writes it): the astronaut drifting right."""
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    a = np.asarray(Image.open(ASTRONAUT))[..., ::-1]
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (512, 512))
    for i in range(40):
        w.write(cv2.warpAffine(a, np.float32([[1, 0, 2 * i], [0, 1, 0]]), (512, 512), borderMode=cv2.BORDER_REPLICATE))
    w.release()
    return path


def test_frames_are_sampled_at_the_asked_rate(clip):
    times = [t for t, _, _ in sample_frames(clip, fps=2)]
    assert times == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5])


def test_tracker_links_overlapping_boxes_and_starts_new_tracks():
    tr = IoUTracker()
    assert tr.update([[0, 0, 10, 10], [100, 0, 10, 10]]) == [0, 1]
    assert tr.update([[101, 1, 10, 10], [1, 1, 10, 10]]) == [1, 0]
    assert tr.update([[300, 300, 10, 10]]) == [2]
    assert iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0 and iou([0, 0, 1, 1], [5, 5, 1, 1]) == 0.0


def test_route_a_video_rows_with_time_and_track_and_plots(clip, tiny_model_dir, tmp_path):
    out = tmp_path / "rows.jsonl"
    r = CliRunner().invoke(app, ["route", str(clip), "--model", str(tiny_model_dir), "--format", "jsonl", "--out", str(out),
                                 "--annotate", str(tmp_path / "ann"), "--fps", "2"])
    assert r.exit_code == 0, r.output
    items = [json.loads(line) for line in out.read_text().splitlines()]
    assert [it["time"] for it in items] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5])
    assert all(len(it["faces"]) == 1 and it["faces"][0]["track"] == 0 for it in items)
    assert (tmp_path / "ann" / "clip_track0.png").is_file()


def test_an_unreadable_video_is_an_error_row(tiny_model_dir, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    r = CliRunner().invoke(app, ["route", str(bad), "--model", str(tiny_model_dir), "--format", "csv"])
    assert r.exit_code == 1 and "not a readable video" in r.output


def test_annotate_draws_each_decision_in_its_colour(tiny_model_dir):
    router = ferroute.load(tiny_model_dir)
    faces = router.route(ASTRONAUT)
    pic = np.asarray(ferroute.annotate(ASTRONAUT, faces))
    x, y, w, h = faces[0]["box"]
    from ferroute.vision.draw import COLORS

    edge = pic[y + h // 2, x]  # a pixel on the box's left edge
    assert tuple(edge) == COLORS[faces[0]["decision"]]
