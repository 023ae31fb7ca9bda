"""Crop a detected face the way FER2013 framed its faces: eyes level, same scale and place.

The target is measured, not guessed: ``scripts/measure_fer_framing.py`` ran YuNet on 6,000
FERPlus training faces (upscaled 4x) and stored the median five landmarks in 48x48 crop
pixels (``assets/fer2013_framing.json``): eyes at y = 18.3, 18.2 px apart, nose tip at
y = 28.5, mouth at y = 36.2. A face is rotated so its eyes are level; its scale and place are
the least-squares fit of its five landmarks onto those five points (the eyes alone
over-zoom a face turned aside, whose eyes look closer together).
"""

from __future__ import annotations

import functools
import json
from importlib import resources

import cv2
import numpy as np

FACE_SIZE = 48


@functools.cache
def fer2013_landmarks() -> np.ndarray:
    """The five target landmarks ``(5, 2)`` in 48x48 crop pixels (right eye, left eye, nose
    tip, right and left mouth corner), as measured on FERPlus training faces."""
    with (resources.files("ferroute") / "assets" / "fer2013_framing.json").open() as f:
        return np.asarray(json.load(f)["landmarks"], np.float64)


def similarity_to_fer2013(points: np.ndarray) -> np.ndarray:
    """The 2x3 matrix taking image pixels to 48x48 crop pixels for a face with landmarks
    ``points`` ``(5, 2)``: rotation that levels the eyes, then least-squares scale and shift."""
    target = fer2013_landmarks()
    d = points[1] - points[0]  # right eye (image left) -> left eye (image right)
    angle = np.arctan2(d[1], d[0])
    c, s = np.cos(-angle), np.sin(-angle)
    rot = np.array([[c, -s], [s, c]])
    p = points @ rot.T
    pc, tc = p - p.mean(0), target - target.mean(0)
    scale = float((pc * tc).sum() / max((pc**2).sum(), 1e-9))
    a = scale * rot
    t = target.mean(0) - a @ points.mean(0)
    return np.hstack([a, t[:, None]])


def align_crop(gray: np.ndarray, points: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """The ``(size, size)`` uint8 crop of the face with landmarks ``points`` ``(5, 2)`` in a gray
    image ``(H, W)``; borders are replicated. Large faces are first shrunk with area averaging
    around the face alone, so the crop does not alias."""
    m = similarity_to_fer2013(points) * (size / FACE_SIZE)
    scale = float(np.hypot(m[0, 0], m[1, 0]))
    if scale < 0.5:
        # source region the crop sees, with a margin, shrunk to twice the crop's resolution
        inv = cv2.invertAffineTransform(m)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inv.T
        x0, y0 = np.floor(corners.min(0)).astype(int) - 2
        x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, gray.shape[1]), min(y1, gray.shape[0])
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            f = 2 * scale
            roi = gray[y0:y1, x0:x1]
            small = cv2.resize(roi, (max(1, round(roi.shape[1] * f)), max(1, round(roi.shape[0] * f))), interpolation=cv2.INTER_AREA)
            fx, fy = small.shape[1] / roi.shape[1], small.shape[0] / roi.shape[0]
            # crop = m @ source = m @ (small / f + offset)
            to_src = np.array([[1 / fx, 0, x0], [0, 1 / fy, y0], [0, 0, 1]])
            m = m @ to_src
            gray = small
    return cv2.warpAffine(gray, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def square_crop(gray: np.ndarray, box: np.ndarray | tuple[float, float, float, float], margin: float = 0.1, size: int = FACE_SIZE) -> np.ndarray:
    """Square crop around a box ``(x, y, w, h)`` enlarged by ``margin`` on each side, edge-padded,
    resized to ``(size, size)``: the fallback for a face without usable landmarks."""
    x, y, w, h = (float(v) for v in box)
    side = max(1, int(round(max(w, h) * (1 + 2 * margin))))
    x0, y0 = int(round(x + w / 2 - side / 2)), int(round(y + h / 2 - side / 2))
    pad = max(0, -x0, -y0, x0 + side - gray.shape[1], y0 + side - gray.shape[0])
    g = np.pad(gray, pad, mode="edge") if pad else gray
    sq = g[y0 + pad : y0 + pad + side, x0 + pad : x0 + pad + side]
    return cv2.resize(sq, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)
