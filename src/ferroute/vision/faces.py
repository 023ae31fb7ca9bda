"""Find faces: YuNet (OpenCV Zoo, MIT, shipped in the package) through ``cv2.FaceDetectorYN``.

Each face gets its box, its detection score and five landmarks (right eye, left eye, nose
tip, right and left mouth corner, as seen from the subject), in original image pixels, and
its 48x48 crop framed the way FER2013 framed its faces (:mod:`ferroute.vision.crops`).

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
from typing import Any, Iterable

import numpy as np

from .crops import FACE_SIZE, align_crop, square_crop
from .images import MAX_PIXELS, ImageError, ImageInput, MemoryBudget, decode_image

YUNET_FILE = "face_detection_yunet_2026may.onnx"
YUNET_SHA256 = "ebafce4e3c118d6554634be5c27ab333b4c047a9a8c3faf1d7cf93101c22f0f0"
_PATCH = 96  # side of the views of one face that the upright check compares
_SIDEWAYS_SCORE = 0.8  # a turned view must score this before it is compared with the upright one
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


class ThreadYuNet:
    """One ``cv2.FaceDetectorYN`` per thread (it keeps per-call state), with fixed thresholds.

    Changing a YuNet's input size rebuilds its network (about 4 ms), so ``get`` resizes only
    when the size changes; callers that alternate sizes keep one ``ThreadYuNet`` per size.
    Shared by :class:`FaceDetector` and :class:`ferroute.decide.shift.FaceLikeness`.
    """

    def __init__(self, score_threshold: float, nms_threshold: float = 0.3, top_k: int = 5000) -> None:
        import cv2

        quiet_opencv(cv2)
        self._cv2, self.model = cv2, str(yunet_path())
        self.score_threshold, self.nms_threshold, self.top_k = score_threshold, nms_threshold, top_k
        self._local = threading.local()

    def get(self, w: int, h: int) -> Any:
        """This thread's detector, set to inputs of ``w`` x ``h``."""
        det = getattr(self._local, "det", None)
        if det is None:
            det = self._local.det = self._cv2.FaceDetectorYN.create(
                self.model, "", (w, h), self.score_threshold, self.nms_threshold, self.top_k)
            self._local.size = (w, h)
        elif self._local.size != (w, h):
            det.setInputSize((w, h))
            self._local.size = (w, h)
        return det


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

    ``score_threshold`` 0.7: every ``photos_dev`` photo keeps its face (at 0.9, 7 % lose it)
    while face-free images stay under 1 false face per 100 (``benchmarks/bench_photos.py``).
    Each face's landmarks come from its upright view (``upright_check``). Images are detected at ``detect_side``
    pixels on the long side at most (larger photos are downscaled for detection only), and
    small ones are upscaled to ``min_side`` (YuNet misses faces under about 20 px). An image of
    exactly 48x48 is taken as a FER2013 crop as it is, the format the ensemble was trained on.
    """

    def __init__(self, score_threshold: float = 0.7, nms_threshold: float = 0.3, detect_side: int = 512, min_side: int = 192,
                 min_face: int = 12, fallback_side: int = 256, try_sideways: bool = True, sideways_score: float = 0.85,
                 upright_check: bool = True):
        import cv2

        quiet_opencv(cv2)
        self._cv2 = cv2
        self.score_threshold, self.nms_threshold = score_threshold, nms_threshold
        self.detect_side, self.min_side, self.min_face = detect_side, min_side, min_face
        self.fallback_side, self.try_sideways, self.upright_check = fallback_side, try_sideways, upright_check
        self.sideways_score = sideways_score
        # one detector for the upright check's fixed-size views, one that follows the photos' size
        self._patch = ThreadYuNet(score_threshold, nms_threshold)
        self._photo = ThreadYuNet(score_threshold, nms_threshold)

    def _yunet(self, w: int, h: int) -> Any:
        """This thread's YuNet for inputs of ``w`` x ``h``."""
        return (self._patch if (w, h) == (_PATCH, _PATCH) else self._photo).get(w, h)

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        """YuNet's rows ``(N, 15)`` for an RGB image ``(H, W, 3)``: box, 5 landmarks, score, in
        image pixels, left to right; empty for an image too small or too thin to hold a face.

        Where nothing is found, two retries: at ``fallback_side`` (YuNet misses a face that
        fills a large frame), then turned by 90 degrees each way (a photo taken sideways), where
        a face must score ``sideways_score`` (0.85: two more looks at a face-free image
        found cat faces and textures at 0.70-0.84; ``benchmarks/bench_photos.py``)."""
        cv2 = self._cv2
        h, w = rgb.shape[:2]
        long, short = max(h, w), min(h, w)
        if short < 8 or long / short > 20:
            return np.zeros((0, 15))
        s = self.detect_side / long if long > self.detect_side else self.min_side / long if long < self.min_side else 1.0
        img = self._resized(rgb, s)
        rows = self._run(img)
        if not len(rows) and long * s > self.fallback_side:
            s = self.fallback_side / long
            img = self._resized(rgb, s)
            rows = self._run(img)
        if not len(rows) and self.try_sideways:
            for turn in (cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_90_COUNTERCLOCKWISE):
                rows = self._run(cv2.rotate(img, turn))
                rows = _unturn(rows[rows[:, 14] >= self.sideways_score], turn, img.shape[1], img.shape[0])
                if len(rows):
                    break
        rows[:, :14] /= s
        return rows[np.argsort(rows[:, 0] + rows[:, 2] / 2)]

    def _upright_landmarks(self, rgb: np.ndarray, row: np.ndarray) -> np.ndarray:
        """The face's landmarks ``(5, 2)``, from the one of three views of it (as found, turned
        by +90 and -90 degrees) where YuNet is most confident. YuNet finds a sideways face
        but places its landmarks as if it were upright; in the turned view that suits it,
        the landmarks are right, so the crop comes out upright."""
        cv2 = self._cv2
        x, y, w, h = row[:4]
        c, side, p = (float(x + w / 2), float(y + h / 2)), float(max(w, h)) * 1.6, _PATCH
        views: dict[int, tuple[float, np.ndarray, np.ndarray]] = {}
        for turn in (90, -90, 0):
            if turn == 0 and max((v[0] for v in views.values()), default=0.0) < _SIDEWAYS_SCORE:
                return row[4:14].reshape(5, 2)  # neither turned view looks like an upright face
            m = cv2.getRotationMatrix2D(c, turn, p / side)
            m[:, 2] += (p / 2 - c[0], p / 2 - c[1])
            found = self._run(cv2.warpAffine(rgb, m, (p, p), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE))
            if len(found):
                k = int(np.argmax(found[:, 14]))
                views[turn] = (float(found[k, 14]) - (0.02 if turn else 0.0), found[k, 4:14].reshape(5, 2), m)
        turn = max(views, key=lambda t: views[t][0])
        if turn == 0:
            return row[4:14].reshape(5, 2)
        _, pts, m = views[turn]
        inv = cv2.invertAffineTransform(m)
        return pts @ inv[:, :2].T + inv[:, 2]

    def _resized(self, rgb: np.ndarray, s: float) -> np.ndarray:
        if s == 1.0:
            return rgb
        size = (max(1, round(rgb.shape[1] * s)), max(1, round(rgb.shape[0] * s)))
        return self._cv2.resize(rgb, size, interpolation=self._cv2.INTER_AREA if s < 1 else self._cv2.INTER_CUBIC)

    def _run(self, img: np.ndarray) -> np.ndarray:
        """YuNet on one RGB image at its own size: rows ``(N, 15)`` in its pixels."""
        _, found = self._yunet(img.shape[1], img.shape[0]).detect(np.ascontiguousarray(img[..., ::-1]))
        if found is None or not len(found):
            return np.zeros((0, 15))
        rows = found.astype(np.float64)
        return rows[np.minimum(rows[:, 2], rows[:, 3]) >= self.min_face]

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
            pts = self._upright_landmarks(rgb, r) if self.upright_check and _squeezed(r) else r[4:14].reshape(5, 2)
            crop = align_crop(gray, pts) if np.hypot(*(pts[1] - pts[0])) >= 1.0 else square_crop(gray, r[:4])
            x0, y0 = max(0.0, r[0]), max(0.0, r[1])
            x1, y1 = min(float(w), r[0] + r[2]), min(float(h), r[1] + r[3])
            box = tuple(int(round(v * scale)) for v in (x0, y0, x1 - x0, y1 - y0))
            faces.append(Face(box, crop, round(float(r[14]), 4), tuple((round(float(x * scale), 1), round(float(y * scale), 1)) for x, y in pts)))  # type: ignore[arg-type]
        return faces


def quiet_opencv(cv2: Any) -> None:
    """OpenCV 5's DNN engine warns on every detector it builds that it ignores the (default)
    target; show OpenCV's errors only, unless the user set OPENCV_LOG_LEVEL."""
    import os

    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is not None and "OPENCV_LOG_LEVEL" not in os.environ:
        logging.setLogLevel(logging.LOG_LEVEL_ERROR)


def _squeezed(row: np.ndarray) -> bool:
    """Whether a face's landmarks are drawn together as YuNet draws them on a sideways face:
    eye distance plus eye-to-mouth distance under 0.88 box widths. On photos_dev this holds
    for 8 % of upright faces and 86-99 % of faces turned by 90 degrees, so the upright check
    runs where it is needed (``benchmarks/bench_photos.py`` has the rotation figures)."""
    p = row[4:14].reshape(5, 2)
    eyes = float(np.hypot(*(p[1] - p[0])))
    mouth = float(np.hypot(*((p[3] + p[4]) / 2 - (p[0] + p[1]) / 2)))
    return (eyes + mouth) / max(float(row[2]), 1e-6) < 0.88


def _unturn(rows: np.ndarray, turn: int, w: int, h: int) -> np.ndarray:
    """YuNet rows found in an image turned by ``cv2.rotate(img, turn)`` mapped back to the
    unturned image ``(h, w)``: boxes and landmarks (the subject's eyes keep their labels)."""
    import cv2

    if not len(rows):
        return rows
    out = rows.copy()
    xs, ys = rows[:, 4:14:2], rows[:, 5:14:2]
    if turn == cv2.ROTATE_90_CLOCKWISE:  # (x, y) -> (h - y, x)
        out[:, 4:14:2], out[:, 5:14:2] = ys, h - xs
        out[:, 0], out[:, 1] = rows[:, 1], h - (rows[:, 0] + rows[:, 2])
    else:  # ROTATE_90_COUNTERCLOCKWISE: (x, y) -> (y, w - x)
        out[:, 4:14:2], out[:, 5:14:2] = w - ys, xs
        out[:, 0], out[:, 1] = w - (rows[:, 1] + rows[:, 3]), rows[:, 0]
    out[:, 2], out[:, 3] = rows[:, 3], rows[:, 2]
    return out


@dataclass
class Prepared:
    """A batch after decoding and detection, before the model: each image's report skeleton
    (``{'source', 'faces': [], 'size'}`` or ``{'source', 'error'}``), the face crops, which
    image each crop came from, and each failed image's error (by its index in ``items``)."""

    items: list[dict[str, Any]]
    crops: list[np.ndarray]
    owners: list[tuple[int, Face]]
    errors: dict[int, ImageError]

    @staticmethod
    def concat(parts: "list[Prepared]") -> "Prepared":
        """One :class:`Prepared` from several, in order (indices shifted)."""
        out = Prepared([], [], [], {})
        for p in parts:
            base = len(out.items)
            out.items += p.items
            out.crops += p.crops
            out.owners += [(base + i, f) for i, f in p.owners]
            out.errors.update({base + i: e for i, e in p.errors.items()})
        return out


def input_name(img: ImageInput, index: int) -> str:
    """How the ``index``-th input of a batch is named in reports when no name is given."""
    return str(img) if isinstance(img, (str, Path)) else f"<input {index}>"


def find_faces(images: Iterable[ImageInput], detector: FaceDetector, names: list[str] | None = None, raise_errors: bool = False,
               max_pixels: int = MAX_PIXELS, budget: MemoryBudget | None = None) -> Prepared:
    """Decode each image and find its faces: image -> face -> crop for a batch. Any failure
    (decoding, detection, cropping) is that image's error, never the batch's."""
    out = Prepared([], [], [], {})
    for i, img in enumerate(images):
        src = names[i] if names and i < len(names) else input_name(img, i)
        try:
            dec = decode_image(img, name=src, max_pixels=max_pixels, min_side=detector.detect_side, budget=budget)
            faces = detector(dec.rgb, scale=dec.scale)
        except Exception as exc:
            err = exc if isinstance(exc, ImageError) else ImageError(src, f"face detection failed ({type(exc).__name__}: {exc})", "check that the file is a normal photo")
            if raise_errors:
                raise err from None
            out.errors[len(out.items)] = err
            out.items.append({"source": src, "error": str(err)})
            continue
        out.items.append({"source": src, "faces": [], "size": list(dec.size)})
        for f in faces:
            out.crops.append(f.crop)
            out.owners.append((len(out.items) - 1, f))
    return out
