"""Find faces: YuNet (OpenCV Zoo, MIT, shipped in the package) through ``cv2.FaceDetectorYN``.

Each face gets its box, its detection score and five landmarks (right eye, left eye, nose
tip, right and left mouth corner, as seen from the subject), in original image pixels, and
its 48x48 crop framed the way FER2013 framed its faces (:mod:`ferroute.crops`).

YuNet replaced OpenCV's Haar cascade (removed): it finds rotated, tilted and three-quarter
faces the cascade missed, gives a confidence, and runs 5-15 ms per photo at the default
detection size (``benchmarks/bench_photos.py``).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .crops import FACE_SIZE, align_crop, square_crop

YUNET_FILE = "face_detection_yunet_2026may.onnx"
YUNET_SHA256 = "ebafce4e3c118d6554634be5c27ab333b4c047a9a8c3faf1d7cf93101c22f0f0"
#: Images of exactly this size are FER2013-framed crops already and skip detection.
CROP_SIZE = (FACE_SIZE, FACE_SIZE)


def yunet_path() -> Path:
    """The YuNet ONNX file shipped in the package (checked against its SHA-256 once)."""
    p = Path(str(resources.files("ferroute") / "assets" / "yunet" / YUNET_FILE))
    if p not in _checked:
        if not p.is_file() or hashlib.sha256(p.read_bytes()).hexdigest() != YUNET_SHA256:
            raise RuntimeError(f"{p}: the face detector's model file is missing or damaged; reinstall ferroute")
        _checked.add(p)
    return p


_checked: set[Path] = set()


@dataclass(frozen=True)
class Face:
    """A face: its box ``(x, y, w, h)`` in original image pixels, YuNet's ``score`` (None for an
    image taken as a crop), five ``landmarks`` ``(5, 2)`` (None likewise) and its 48x48 gray ``crop``."""

    box: tuple[int, int, int, int]
    crop: np.ndarray
    score: float | None = None
    landmarks: tuple[tuple[float, float], ...] | None = None


class FaceDetector:
    """YuNet faces of any photo, left to right, each with an aligned FER2013-framed crop.

    ``score_threshold`` 0.7: every ``photos_dev`` photo keeps its face and no face-free test
    image gets one (``benchmarks/bench_photos.py``). Images are detected at ``detect_side``
    pixels on the long side at most (larger photos are downscaled for detection only), and
    small ones are upscaled to ``min_side`` (YuNet misses faces under about 20 px). An image of
    exactly 48x48 is taken as a FER2013 crop as it is, the format the ensemble was trained on.
    """

    def __init__(self, score_threshold: float = 0.7, nms_threshold: float = 0.3, detect_side: int = 512, min_side: int = 192,
                 min_face: int = 12):
        import cv2

        self._cv2 = cv2
        self.model = str(yunet_path())
        self.score_threshold, self.nms_threshold = score_threshold, nms_threshold
        self.detect_side, self.min_side, self.min_face = detect_side, min_side, min_face
        self._local = threading.local()  # cv2.FaceDetectorYN keeps per-call state: one per thread

    def _yunet(self, w: int, h: int):
        det = getattr(self._local, "det", None)
        if det is None:
            det = self._local.det = self._cv2.FaceDetectorYN.create(self.model, "", (w, h), self.score_threshold, self.nms_threshold, 5000)
        det.setInputSize((w, h))
        return det

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        """YuNet's rows ``(N, 15)`` for an RGB image ``(H, W, 3)``: box, 5 landmarks, score, in
        image pixels, left to right; empty for an image too small or too thin to hold a face."""
        cv2 = self._cv2
        h, w = rgb.shape[:2]
        long, short = max(h, w), min(h, w)
        if short < 8 or long / short > 20:
            return np.zeros((0, 15), np.float32)
        s = self.detect_side / long if long > self.detect_side else self.min_side / long if long < self.min_side else 1.0
        dw, dh = max(1, round(w * s)), max(1, round(h * s))
        img = rgb if s == 1.0 else cv2.resize(rgb, (dw, dh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
        _, found = self._yunet(dw, dh).detect(np.ascontiguousarray(img[..., ::-1]))
        if found is None or not len(found):
            return np.zeros((0, 15), np.float32)
        rows = found.astype(np.float64)
        rows = rows[np.minimum(rows[:, 2], rows[:, 3]) >= self.min_face]  # in detection pixels
        rows[:, :14] /= s
        return rows[np.argsort(rows[:, 0] + rows[:, 2] / 2)]

    def __call__(self, rgb: np.ndarray, scale: float = 1.0) -> list[Face]:
        """Every face in an RGB image ``(H, W, 3)``, left to right. ``scale`` maps the image's
        pixels to the original's (a JPEG decoded at reduced size), for the reported boxes."""
        cv2 = self._cv2
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        h, w = gray.shape
        if (w, h) == CROP_SIZE:
            return [Face((0, 0, round(w * scale), round(h * scale)), gray.copy())]
        faces = []
        for r in self.detect(rgb):
            pts = r[4:14].reshape(5, 2)
            crop = align_crop(gray, pts) if np.hypot(*(pts[1] - pts[0])) >= 1.0 else square_crop(gray, r[:4])
            x0, y0 = max(0.0, r[0]), max(0.0, r[1])
            x1, y1 = min(float(w), r[0] + r[2]), min(float(h), r[1] + r[3])
            box = tuple(int(round(v * scale)) for v in (x0, y0, x1 - x0, y1 - y0))
            faces.append(Face(box, crop, round(float(r[14]), 4), tuple((round(float(x * scale), 1), round(float(y * scale), 1)) for x, y in pts)))  # type: ignore[arg-type]
        return faces
