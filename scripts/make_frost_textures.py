"""Regenerate ferroute's frost textures from ImageNet-C's six frost photos.

The photos ship in the `corrupt-tta` package (pip install corrupt-tta). They are stored
here in gray, scaled by 48/224 so a 48x48 crop covers what a 224 crop covers on ImageNet.
Usage: python scripts/make_frost_textures.py
"""

from importlib import resources
from pathlib import Path

from PIL import Image

OUT = Path(__file__).resolve().parents[1] / "src" / "ferroute" / "assets"


def main() -> None:
    base = resources.files("corrupt_tta") / "assets" / "frost"
    OUT.mkdir(parents=True, exist_ok=True)
    for i in range(1, 7):
        name = f"frost{i}.png" if i <= 3 else f"frost{i}.jpg"
        with resources.as_file(base / name) as p, Image.open(p) as im:
            im = im.convert("RGB").convert("L")
            size = (max(48, round(im.width * 48 / 224)), max(48, round(im.height * 48 / 224)))
            im.resize(size, Image.BILINEAR).save(OUT / f"frost{i}.png", optimize=True)
        print(OUT / f"frost{i}.png", size)


if __name__ == "__main__":
    main()
