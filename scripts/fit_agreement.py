"""Add the vote calibration (a temperature and a bias per emotion) and the default ambiguity level
(0.6, stated in words: ``ferroute.decide.agreement``) to the embedded models' routers, keeping every other calibrated value as it is:

    FERPLUS_DIR=../shared/data/ferplus python scripts/fit_agreement.py [default fast]

Fitted on FERPlus validation faces (their vote distributions), with the member probabilities
the core computes (the model's ONNX graph); ``ferroute calibrate`` does the same for a new model.
"""

from __future__ import annotations

import json
import sys

from ferroute.evaluate.ferplus import load_split
from ferroute.router import EMBEDDED_MODELS, FERRouter, resolve_model_dir


def main(names: list[str]) -> None:
    va = load_split("valid")
    for name in names or list(EMBEDDED_MODELS):
        d = resolve_model_dir(name)
        r = FERRouter.load(d, backend="onnx")
        r.router.fit_agreement(r.ensemble.predict_proba(va.images), va.distributions)
        doc = json.loads((d / "router.json").read_text())
        doc["state"] = r.router.to_dict()["state"]
        (d / "router.json").write_text(json.dumps(doc) + "\n")
        st = doc["state"]
        print(f"{name}: vote temperature {st['vote_temperature']:.4f}, ambiguous below {st['ambiguous_below']:.2f} -> {d / 'router.json'}")


if __name__ == "__main__":
    main(sys.argv[1:])
