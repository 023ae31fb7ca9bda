"""Regenerate ferroute's frost textures from ImageNet-C's frost photos.

The photos ship in the ``imagecorruptions`` package (Apache-2.0; pip install
imagecorruptions). The reference draws from the first five of its six photos, so ferroute
ships those five, in gray (PIL's ITU-R 601 luma, as a gray face's corrupted RGB is turned
back to gray), at their native size; :func:`ferroute.evaluate.corruptions.frost` enlarges them by
1.1 (bicubic) and crops 48x48 as the reference does for a 48x48 image.
Usage: python scripts/make_frost_textures.py
"""

from importlib import resources
from pathlib import Path

from PIL import Image

OUT = Path(__file__).resolve().parents[1] / "src" / "ferroute" / "assets" / "frost"


def main() -> None:
    base = resources.files("imagecorruptions") / "frost"
    OUT.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        name = f"frost{i}.png" if i <= 3 else f"frost{i}.jpg"
        with resources.as_file(base / name) as p, Image.open(p) as im:
            gray = im.convert("RGB").convert("L")
            gray.save(OUT / f"frost{i}.png", optimize=True)
        print(OUT / f"frost{i}.png", gray.size)


if __name__ == "__main__":
    main()
