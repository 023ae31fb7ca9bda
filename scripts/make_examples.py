"""Pick the example images in examples/ (rerunnable; the choice is made by rules, not by hand).

    pip install scikit-image && FERPLUS_DIR=... python scripts/make_examples.py

* clear_face.png: the FERPlus test face with the most unanimous happiness votes that the
  default model accepts;
* ambiguous_face.png: among test faces whose votes split between two emotions (each at least
  35 %, together at least 80 %) and whose two most likely emotions under the model are the
  same two, the one the model reports as ambiguous with the highest aleatoric score;
* corrupted_face.png: a clear test face under ImageNet-C glass blur at severity 5, the first
  one the model rejects;
* no_face_coffee.jpg: scikit-image's `coffee` photo (CC0, Rachel Michetti): no face;
* astronaut_photo.jpg: scikit-image's `astronaut` (NASA, public domain): a real photo with a face.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

import ferroute
from ferroute.corruptions import corrupt
from ferroute.data import load_split

OUT = Path(__file__).resolve().parents[1] / "examples"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    router = ferroute.load()
    te = load_split("test")
    reps = router.route_faces(te.images)
    dec = np.array([r["decision"] for r in reps])
    alea = np.array([r["aleatoric"] for r in reps])
    share = te.votes / te.votes.sum(1, keepdims=True)

    happy = np.flatnonzero((share[:, 1] == 1.0) & (dec == "accept"))
    clear = happy[np.argmin(alea[happy])]
    Image.fromarray(te.images[clear]).save(OUT / "clear_face.png")

    top2 = np.sort(share, 1)[:, -2:].sum(1)
    mean = np.array([[r["distribution"][e] for e in router.labels] for r in reps])
    same_pair = np.array([set(np.argsort(-m)[:2]) == set(np.argsort(-v)[:2]) for m, v in zip(mean, share)])
    split = np.flatnonzero((np.sort(share, 1)[:, -2] >= 0.35) & (top2 >= 0.8) & (dec == "ambiguous") & same_pair)
    amb = split[np.argmax(alea[split])]
    Image.fromarray(te.images[amb]).save(OUT / "ambiguous_face.png")

    clean_ok = np.flatnonzero(dec == "accept")[:200]
    blurred = corrupt(te.images[clean_ok], "glass_blur", 5)
    rej = [i for i, r in enumerate(router.route_faces(blurred)) if r["decision"] == "reject"]
    Image.fromarray(blurred[rej[0]]).save(OUT / "corrupted_face.png")

    from skimage import data

    Image.fromarray(data.coffee()).save(OUT / "no_face_coffee.jpg", quality=85)
    Image.fromarray(data.astronaut()).save(OUT / "astronaut_photo.jpg", quality=85)
    print(f"clear: {te.files[clear]} votes {te.votes[clear].tolist()}")
    print(f"ambiguous: {te.files[amb]} votes {te.votes[amb].tolist()}")
    print(f"corrupted: glass_blur-5 of {te.files[clean_ok[rej[0]]]}")


if __name__ == "__main__":
    main()
