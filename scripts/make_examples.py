"""Pick the example images in examples/ by rules that never look at the model's answer.

    pip install scikit-image && FERPLUS_DIR=... python scripts/make_examples.py

* clear_face.png: among FERPlus test faces whose votes are all happiness, the one with the
  most votes (the first by file name on a tie);
* ambiguous_face.png: among test faces whose votes split between two emotions (each at least
  35 %, together at least 80 %), the one with the most even split, then the most votes (the
  first by file name on a tie);
* corrupted_face.png: clear_face.png under ImageNet-C glass blur at severity 5;
* no_face_coffee.jpg: scikit-image's `coffee` photo (CC0, Rachel Michetti): no face;
* astronaut_photo.jpg: scikit-image's `astronaut` (NASA, public domain): a real photo with a face.

The README shows whatever the default model says about each; the script prints it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

import ferroute
from ferroute.evaluate.corruptions import corrupt
from ferroute.evaluate.ferplus import load_split

OUT = Path(__file__).resolve().parents[1] / "examples"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    te = load_split("test")
    n_votes = te.votes[:, :8].sum(1)
    share = te.votes[:, :8] / np.maximum(n_votes, 1)[:, None]
    order = np.argsort(te.files)  # ties go to the first file name

    happy = order[share[order, 1] == 1.0]
    clear = happy[np.argmax(n_votes[happy])]
    Image.fromarray(te.images[clear]).save(OUT / "clear_face.png")

    top = np.sort(share, 1)
    split = order[(top[order, -2] >= 0.35) & (top[order, -2:].sum(1) >= 0.8)]
    evenness = top[split, -2] / top[split, -1]
    best = split[evenness == evenness.max()]
    amb = best[np.argmax(n_votes[best])]
    Image.fromarray(te.images[amb]).save(OUT / "ambiguous_face.png")

    blurred = corrupt(te.images[clear][None], "glass_blur", 5)[0]
    Image.fromarray(blurred).save(OUT / "corrupted_face.png")

    from skimage import data

    Image.fromarray(data.coffee()).save(OUT / "no_face_coffee.jpg", quality=85)
    Image.fromarray(data.astronaut()).save(OUT / "astronaut_photo.jpg", quality=85)
    print(f"clear: {te.files[clear]} votes {te.votes[clear].tolist()}")
    print(f"ambiguous: {te.files[amb]} votes {te.votes[amb].tolist()}")
    print(f"corrupted: glass_blur-5 of {te.files[clear]}")
    router = ferroute.load()  # only now: what the model says, for the README
    for name in ("clear_face.png", "ambiguous_face.png", "corrupted_face.png", "no_face_coffee.jpg", "astronaut_photo.jpg"):
        faces = router.route(OUT / name)
        print(name, [(f["decision"], f.get("emotion"), f.get("aleatoric"), f.get("shift_score")) for f in faces])


if __name__ == "__main__":
    main()
