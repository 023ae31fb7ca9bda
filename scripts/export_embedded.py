"""Regenerate the ONNX graphs of the embedded models (``src/ferroute/models/*/ensemble.onnx``)
from their safetensors weights: ``python scripts/export_embedded.py``. Needs ``ferroute[train]``.

``tests/test_embedded_graphs.py`` checks that each shipped graph matches a fresh export
(largest |dp| <= 1e-4), so a change of weights without this step fails CI.
"""

from __future__ import annotations

import sys

from ferroute.train.export import write_graph
from ferroute.router import EMBEDDED_MODELS, resolve_model_dir


def main(names: list[str]) -> None:
    for name in names or list(EMBEDDED_MODELS):
        path = write_graph(resolve_model_dir(name))
        print(f"{name}: wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main(sys.argv[1:])
