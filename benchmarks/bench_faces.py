"""Face detection rate and false detections of ferroute's front end.

    pip install scikit-image && FERPLUS_DIR=... python benchmarks/bench_faces.py

* real photos with a face: scikit-image's `astronaut` and `camera`;
* FERPlus test faces (n=300) and LFW faces from scikit-image's `lfw_subset` (n=100), each
  upscaled to 120-200 px and pasted at a random place into a 640x480 crop of a real
  face-free photo: real face pixels in real clutter, but composites, not photographs;
* photos without faces: the face-free scikit-image photos, whole and as 640x480 crops.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from ferroute.faces import FaceDetector, load_image


def main() -> None:
    from skimage import data

    det = FaceDetector()
    rng = np.random.default_rng(0)

    def rgb(a):
        return load_image(np.asarray(a))

    with_face = {"astronaut": data.astronaut(), "camera": data.camera()}
    no_face_names = ["coffee", "chelsea", "rocket", "coins", "horse", "hubble_deep_field", "immunohistochemistry", "moon",
                     "page", "text", "retina", "brick", "grass", "gravel", "motorcycle_left", "cell", "clock", "logo", "colorwheel"]
    no_face = {}
    for n in no_face_names:
        try:
            no_face[n] = rgb(getattr(data, n)())
        except Exception:
            pass
    print("real photos with a face:")
    for n, im in with_face.items():
        print(f"  {n}: {len(det(rgb(im)))} face(s) found")
    fp_whole = {n: len(det(im)) for n, im in no_face.items()}
    print(f"face-free photos: {sum(v > 0 for v in fp_whole.values())} of {len(fp_whole)} with a false detection "
          f"({sum(fp_whole.values())} false boxes): {[n for n, v in fp_whole.items() if v]}")

    backgrounds = []
    for im in no_face.values():
        big = Image.fromarray(im).resize((max(640, im.shape[1]), max(480, im.shape[0])))
        a = np.asarray(big)
        y, x = rng.integers(0, a.shape[0] - 480 + 1), rng.integers(0, a.shape[1] - 640 + 1)
        backgrounds.append(a[y : y + 480, x : x + 640])
    fp_crops = sum(len(det(b)) > 0 for b in backgrounds)
    print(f"640x480 face-free crops: {fp_crops} of {len(backgrounds)} with a false detection")

    def composite_rate(faces: np.ndarray, label: str) -> None:
        hits = 0
        for f in faces:
            bg = backgrounds[rng.integers(len(backgrounds))].copy()
            side = int(rng.integers(120, 201))
            face = np.asarray(Image.fromarray(f).resize((side, side), Image.BICUBIC))
            y, x = rng.integers(0, 480 - side), rng.integers(0, 640 - side)
            bg[y : y + side, x : x + side] = face[..., None]
            boxes = [b.box for b in det(bg)]
            # a hit: a box whose centre lies inside the pasted face
            hits += any(x <= bx + bw / 2 <= x + side and y <= by + bh / 2 <= y + side for bx, by, bw, bh in boxes)
        print(f"{label}: detected {hits} of {len(faces)} ({hits / len(faces):.1%})")

    lfw = data.lfw_subset()[:100]
    composite_rate((lfw * 255).astype(np.uint8), "LFW faces pasted into photos")
    if os.environ.get("FERPLUS_DIR"):
        from ferroute.data import load_split

        te = load_split("test")
        composite_rate(te.images[rng.choice(len(te), 300, replace=False)], "FERPlus test faces pasted into photos")


if __name__ == "__main__":
    main()
