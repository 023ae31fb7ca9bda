"""Store the reference ImageNet-C corruptions' outputs as test fixtures.

``tests/test_corruptions.py`` pins each of ferroute's 19 corruptions to these outputs.
The reference is the ``imagecorruptions`` package (Michaelis et al., 2019), run on 48x48
gray inputs the way it runs on any image: stacked to three equal channels, corrupted,
truncated to uint8 (its ``np.uint8``), then turned back to gray with PIL's ITU-R 601 luma.

Two steps, in two environments (``imagecorruptions`` pins opencv-python, which clashes with
ferroute's opencv-python-headless):

1. ``python scripts/make_reference_corruptions.py --inputs`` (ferroute's environment):
   writes ``tests/fixtures/corruption_inputs.png``, four 48x48 inputs side by side: the
   face YuNet finds in ``examples/astronaut_photo.jpg`` (NASA, public domain), framed as
   ferroute frames faces, and three synthetic images (a shaded disk, stripes, a ramp).
2. ``pip install imagecorruptions`` in a scratch environment, then
   ``python scripts/make_reference_corruptions.py`` there: writes
   ``tests/fixtures/corruptions_reference.npz`` with ``inputs (4, 48, 48)`` and one array
   per corruption and severity, ``<name>/<severity>`` shaped ``(draws, 4, 48, 48)`` uint8
   (1 draw for the deterministic corruptions, 4 for the random ones).

The shims below only let the 2019 package import and run with today's scipy, scikit-image
and setuptools (renamed or removed names); they change no arithmetic.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
INPUTS = ROOT / "tests" / "fixtures" / "corruption_inputs.png"
OUT = ROOT / "tests" / "fixtures" / "corruptions_reference.npz"
DETERMINISTIC = {"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression", "gaussian_blur", "saturate"}
DRAWS = 4


def make_inputs() -> None:
    from ferroute.vision.faces import FaceDetector, find_faces

    face = find_faces([str(ROOT / "examples" / "astronaut_photo.jpg")], FaceDetector()).crops[0]
    yy, xx = np.mgrid[0:48, 0:48].astype(float)
    disk = np.clip(60 + 150 * np.exp(-((yy - 24) ** 2 + (xx - 20) ** 2) / 200) + 0.8 * yy, 0, 255)
    stripes = 128 + 90 * np.sin(xx / 2.5 + yy / 6)
    ramp = np.clip(20 + 4.5 * xx + 0.5 * yy, 0, 255)
    strip = np.concatenate([face, disk, stripes, ramp], axis=1).astype(np.uint8)
    INPUTS.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(strip).save(INPUTS)
    print(INPUTS, strip.shape)


def _shims() -> None:
    import os

    import scipy.ndimage
    import skimage.filters

    if not hasattr(np, "float_"):
        np.float_ = np.float64  # removed in NumPy 2.0
    sys.modules.setdefault("scipy.ndimage.interpolation", scipy.ndimage)  # removed in SciPy 1.14
    pkg = types.ModuleType("pkg_resources")  # gone from recent setuptools

    def resource_filename(package: str, name: str) -> str:
        return os.path.join(os.path.dirname(sys.modules[package].__file__), name)

    pkg.resource_filename = resource_filename  # type: ignore[attr-defined]
    sys.modules.setdefault("pkg_resources", pkg)
    plain = skimage.filters.gaussian

    def gaussian(image, sigma=1, multichannel=None, **kw):  # ``multichannel`` became ``channel_axis``
        if multichannel:
            kw.setdefault("channel_axis", -1)
        kw.setdefault("preserve_range", True)  # the 2019 behaviour for float input
        return plain(image, sigma=sigma, **kw)

    skimage.filters.gaussian = gaussian


def make_reference() -> None:
    _shims()
    import imagecorruptions

    inputs = np.asarray(Image.open(INPUTS).convert("L")).reshape(48, 4, 48).transpose(1, 0, 2).copy()
    out: dict[str, np.ndarray] = {"inputs": inputs}
    for name in imagecorruptions.get_corruption_names("all"):
        for sev in range(1, 6):
            draws = 1 if name in DETERMINISTIC else DRAWS
            res = np.empty((draws, len(inputs), 48, 48), np.uint8)
            for d in range(draws):
                np.random.seed(1000 * sev + d)
                for i, face in enumerate(inputs):
                    rgb = imagecorruptions.corrupt(face, severity=sev, corruption_name=name)
                    res[d, i] = np.asarray(Image.fromarray(rgb).convert("L"))
            out[f"{name}/{sev}"] = res
        print(name, flush=True)
    np.savez_compressed(OUT, **out)
    print(OUT, f"{OUT.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    make_inputs() if "--inputs" in sys.argv else make_reference()
