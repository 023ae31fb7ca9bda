"""Write ``tests/fixtures/cbar_reference.npz``: ImageNet-C-bar's reference ``transform`` on the
four fixture faces (``tests/fixtures/corruption_inputs.png``), for parameters drawn by
:mod:`ferroute.evaluate.heldout`'s samplers at every severity, so the test can pin our port to it.

    python scripts/make_reference_cbar.py PATH/TO/augmentation-corruption/imagenet_c_bar

Run once, beside a checkout of facebookresearch/augmentation-corruption (MIT; its
``imagenet_c_bar`` folder needs numpy, scipy, scikit-image and Pillow). Nothing of that
code is kept here: only its outputs and the parameters they were made with.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from ferroute.evaluate import heldout

ROOT = Path(__file__).resolve().parents[1]
INPUTS = ROOT / "tests" / "fixtures" / "corruption_inputs.png"
OUT = ROOT / "tests" / "fixtures" / "cbar_reference.npz"
CLASSES = {"single_frequency_greyscale": "SingleFrequencyGreyscale", "cocentric_sine_waves": "CocentricSineWaves",
           "plasma_noise": "PlasmaNoise", "checkerboard_cutout": "CheckerBoardCutOut", "inverse_sparkles": "InverseSparkles",
           "brownish_noise": "BrownishNoise"}


def jsonable(d: dict) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in d.items()}


def main(ref_dir: str) -> None:
    sys.path.insert(0, ref_dir)
    import corrupt as ref  # the reference's module

    faces = np.asarray(Image.open(INPUTS).convert("L"))
    faces = np.stack(np.split(faces, faces.shape[1] // 48, axis=1))  # (4, 48, 48)
    rng = np.random.default_rng(2026)
    outputs, params = {}, {}
    for name, cls in CLASSES.items():
        sample, _ = heldout.CBAR[name]
        for s, level in enumerate(heldout.CBAR_SEVERITY[name], 1):
            t = getattr(ref, cls)(level, 48)
            for k, face in enumerate(faces):
                p = sample(rng, level, 48)
                img = np.repeat(face[..., None], 3, axis=2)
                outputs[f"{name}/{s}/{k}"] = t.transform(img, **p)
                params[f"{name}/{s}/{k}"] = jsonable(p)
    np.savez_compressed(OUT, params=json.dumps(params), **{k.replace("/", "__"): v for k, v in outputs.items()})
    print(f"wrote {OUT} ({len(outputs)} reference outputs)")


if __name__ == "__main__":
    main(sys.argv[1])
