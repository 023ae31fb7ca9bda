"""Video: sample frames, route every face, link faces across frames into tracks, plot each track.

Any container OpenCV reads (``cv2.VideoCapture``). Frames are sampled at ``fps`` (default 2)
by decoding and skipping the frames in between; faces in consecutive sampled frames join
the same track when their boxes overlap (greedy IoU matching, the simplest tracker that
works for faces that do not jump between samples).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from .images import ImageError

if TYPE_CHECKING:
    from ..router import FERRouter

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def sample_frames(path: str | Path, fps: float = 2.0) -> Iterator[tuple[float, int, np.ndarray]]:
    """``(time_s, frame_index, rgb (H, W, 3))`` for frames ``1/fps`` seconds apart.
    Raises :class:`ImageError` when the file cannot be opened as a video."""
    import cv2

    name = str(path)
    if not Path(path).is_file():
        raise ImageError(name, "file not found", "check the path")
    if fps <= 0:
        raise ImageError(name, f"--fps must be positive, got {fps}")
    cap = cv2.VideoCapture(name)
    try:
        if not cap.isOpened():
            raise ImageError(name, "not a readable video", "use a container and codec OpenCV reads (mp4/H.264, avi/MJPEG, webm, ...)")
        native = cap.get(cv2.CAP_PROP_FPS) or 0.0
        native = native if 0 < native < 1000 else 25.0
        step = max(1.0, native / fps)
        index, next_take = 0, 0.0
        while cap.grab():
            if index >= next_take - 1e-6:
                ok, bgr = cap.retrieve()
                if ok and bgr is not None:
                    yield index / native, index, np.ascontiguousarray(bgr[..., ::-1])
                next_take += step
            index += 1
    finally:
        cap.release()


def frame_count(path: str | Path, fps: float) -> int | None:
    """How many frames :func:`sample_frames` will give, from the container's header (may be None)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        n, native = cap.get(cv2.CAP_PROP_FRAME_COUNT), cap.get(cv2.CAP_PROP_FPS)
    finally:
        cap.release()
    if not n or not native or n <= 0:
        return None
    return int(np.ceil(n / max(1.0, native / fps)))


def iou(a: list[float], b: list[float]) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


@dataclass
class IoUTracker:
    """Gives each face a track id: the live track whose last box overlaps it most (IoU >=
    ``min_iou``), else a new one. Tracks not seen for ``max_gap`` sampled frames end."""

    min_iou: float = 0.3
    max_gap: int = 2
    _tracks: dict[int, tuple[list[float], int]] = field(default_factory=dict)  # id -> (box, last frame number)
    _next: int = 0
    _frame: int = 0

    def update(self, boxes: list[list[float]]) -> list[int]:
        self._frame += 1
        live = {t: v for t, v in self._tracks.items() if self._frame - v[1] <= self.max_gap}
        pairs = sorted(((iou(b, box), i, t) for i, b in enumerate(boxes) for t, (box, _) in live.items()), reverse=True)
        ids: list[int | None] = [None] * len(boxes)
        used: set[int] = set()
        for score, i, t in pairs:
            if score < self.min_iou:
                break
            if ids[i] is None and t not in used:
                ids[i], _ = t, used.add(t)
        for i in range(len(boxes)):
            if ids[i] is None:
                ids[i], self._next = self._next, self._next + 1
        self._tracks = live
        for i, b in enumerate(boxes):
            self._tracks[ids[i]] = (b, self._frame)  # type: ignore[index]
        return ids  # type: ignore[return-value]


def route_video(router: "FERRouter", path: str | Path, fps: float = 2.0, batch_frames: int = 16, progress: Any = None) -> Iterator[dict[str, Any]]:
    """One item per sampled frame: ``{'source', 'time', 'frame', 'faces'}``; each face carries its
    ``track``. ``progress`` (a tqdm bar) is advanced by one per frame."""
    tracker = IoUTracker()
    frames = sample_frames(path, fps)
    while batch := list(itertools.islice(frames, batch_frames)):
        items = router.route_many([f[2] for f in batch], names=[str(path)] * len(batch))
        for (t, index, _), it in zip(batch, items):
            faces = it.get("faces", [])
            boxed = [f for f in faces if f.get("box")]
            for f, track in zip(boxed, tracker.update([f["box"] for f in boxed])):
                f["track"] = track
            yield {"source": str(path), "time": round(t, 3), "frame": index, **{k: v for k, v in it.items() if k != "source"}}
            if progress is not None:
                progress.update(1)


def plot_tracks(items: list[dict[str, Any]], out_dir: str | Path, labels: tuple[str, ...]) -> list[Path]:
    """One PNG per track: the emotion distribution over time (stacked), aleatoric and epistemic
    over time, each sampled decision marked. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .draw import COLORS

    tracks: dict[int, list[tuple[float, dict[str, Any]]]] = {}
    for it in items:
        for f in it.get("faces", []):
            if "track" in f:
                tracks.setdefault(f["track"], []).append((it["time"], f))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(items[0]["source"]).stem if items else "video"
    written = []
    for track, seq in sorted(tracks.items()):
        t = np.array([s[0] for s in seq])
        dist = np.array([[f["distribution"].get(e, 0.0) for e in labels] for _, f in seq])
        fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
        a1.stackplot(t, dist.T, labels=labels, step="mid" if len(t) < 3 else None, alpha=0.85)
        a1.set_ylim(0, 1)
        a1.set_ylabel("emotion distribution")
        a1.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
        a1.set_title(f"{stem}: track {track} ({len(seq)} sampled frames)")
        a2.plot(t, [f["aleatoric"] for _, f in seq], "-o", ms=3, label="aleatoric (ambiguity)", color="tab:blue")
        a2.plot(t, [f["epistemic"] for _, f in seq], "-o", ms=3, label="epistemic (unfamiliarity)", color="tab:purple")
        top = max([f["aleatoric"] for _, f in seq] + [0.1])
        half = float(np.median(np.diff(t))) / 2 if len(t) > 1 else 0.25
        for ti, (_, f) in zip(t, seq):
            rgb = COLORS.get(f["decision"], COLORS["no_face"])
            a2.axvspan(ti - half, ti + half, ymin=0.92, ymax=1.0, color=tuple(c / 255 for c in rgb))
        a2.set_ylim(0, top * 1.25)
        a2.set_xlabel("time (s); bar on top: decision (green accept, amber ambiguous, red reject)")
        a2.set_ylabel("nats")
        a2.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
        fig.tight_layout()
        path = out / f"{stem}_track{track}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
