"""Write the smiling probe face every model is checked with at load (``ferroute.engine.sense``).

    python scripts/make_probe_face.py [--out src/ferroute/assets/probe_smile.png]

The face is NASA's astronaut portrait (``examples/astronaut_photo.jpg``, from scikit-image's
data: public domain), found by the shipped YuNet and cropped as every photo is (48x48 gray,
FER2013 framing). She smiles broadly; a model that is confident it sees another emotion there
has its labels out of order.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from ferroute.vision.faces import FaceDetector, find_faces

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "src" / "ferroute" / "assets" / "probe_smile.png")
    args = ap.parse_args()
    prep = find_faces([ROOT / "examples" / "astronaut_photo.jpg"], FaceDetector(), raise_errors=True)
    if len(prep.crops) != 1:
        raise SystemExit(f"expected one face in the astronaut photo, found {len(prep.crops)}")
    Image.fromarray(prep.crops[0]).save(args.out, optimize=True)
    print(args.out)


if __name__ == "__main__":
    main()
