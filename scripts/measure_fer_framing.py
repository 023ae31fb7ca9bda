"""Measure how FER2013 framed its faces, so photos can be cropped the same way.

    FERPLUS_DIR=../shared/data/ferplus python scripts/measure_fer_framing.py

Runs the shipped YuNet detector on FERPlus training faces upscaled 4x (YuNet needs faces
larger than 48 px), keeps the most confident detection of each face, and writes the median
box and five landmarks in 48x48 crop coordinates to ``src/ferroute/assets/fer2013_framing.json``.
``ferroute.vision.crops`` maps each detected face onto those five points, so a photo's crop has the
framing the ensemble was trained on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from ferroute.evaluate.ferplus import load_split
from ferroute.vision.faces import yunet_path

UPSCALE = 4
N_FACES = 6000
OUT = Path(__file__).resolve().parents[1] / "src" / "ferroute" / "assets" / "fer2013_framing.json"


def main() -> None:
    tr = load_split("train", os.environ.get("FERPLUS_DIR"))
    idx = np.linspace(0, len(tr.images) - 1, min(N_FACES, len(tr.images))).astype(int)  # evenly spaced, no model involved
    side = 48 * UPSCALE
    det = cv2.FaceDetectorYN.create(str(yunet_path()), "", (side, side), 0.5, 0.3, 50)
    rows = []
    for i in idx:
        big = cv2.resize(tr.images[i], (side, side), interpolation=cv2.INTER_CUBIC)
        _, faces = det.detect(cv2.cvtColor(big, cv2.COLOR_GRAY2BGR))
        if faces is not None and len(faces):
            rows.append(faces[np.argmax(faces[:, 14])][:14] / UPSCALE)
    r = np.array(rows)
    med = np.median(r, axis=0)
    eye_dist = np.hypot(r[:, 6] - r[:, 4], r[:, 7] - r[:, 5])
    out = {
        "what": "median YuNet box and landmarks of FERPlus training faces, in 48x48 crop pixels",
        "command": "FERPLUS_DIR=... python scripts/measure_fer_framing.py",
        "faces_measured": int(len(idx)),
        "faces_detected": int(len(r)),
        "upscale": UPSCALE,
        "box_xywh": [round(float(v), 2) for v in med[:4]],
        "landmarks": [[round(float(med[4 + 2 * k]), 2), round(float(med[5 + 2 * k]), 2)] for k in range(5)],
        "landmark_names": ["right_eye", "left_eye", "nose_tip", "mouth_right", "mouth_left"],
        "eye_distance_iqr": [round(float(v), 2) for v in np.percentile(eye_dist, [25, 50, 75])],
    }
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
