"""A site overlay: a model's promises re-made on a user's own photos, as a small folder that
names its base model by digest instead of copying it.

``ferroute calibrate-site PHOTOS --out SITE_DIR`` (:mod:`ferroute.evaluate.site`) writes
``site.json`` (and a report beside it). Loading ``SITE_DIR`` anywhere a model folder is taken
(``route --model``, ``serve --model``, ``ferroute.load``) loads the base model, checks that it
is still the model the site was calibrated on (its digest), and swaps in the site's reject
threshold. A changed base model is refused: the site's promise was made for the old one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .cache import named_files_digest
from .config import ModelError

SITE_FILE = "site.json"
FORMAT = "ferroute-site/1"


def model_digest(model_dir: str | Path) -> str:
    """SHA-256 (first 16 hex) of everything a model folder decides with: its JSON files,
    member weights and graph, in name order (the model card aside)."""
    d = Path(model_dir)
    return named_files_digest(sorted([*d.glob("*.json"), *d.glob("*.safetensors"), *d.glob("*.onnx")]))[:16]


def is_site(path: str | Path) -> bool:
    return (Path(path) / SITE_FILE).is_file()


def read_site(site_dir: str | Path) -> dict[str, Any]:
    """``site.json`` of ``site_dir``, checked for sense (:class:`ModelError` naming what is wrong)."""
    path = Path(site_dir) / SITE_FILE
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable site file ({exc}); run `ferroute calibrate-site` again") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelError(f"{path}: not a ferroute site file (format {doc.get('format') if isinstance(doc, dict) else None!r}, "
                         f"expected {FORMAT!r})")
    z = doc.get("z_threshold")
    if isinstance(z, bool) or not isinstance(z, (int, float)) or math.isnan(z):
        raise ModelError(f"{path}: z_threshold must be a number, got {z!r}")
    for key in ("base_model", "base_digest"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise ModelError(f"{path}: {key} is missing")
    return doc


def check_base(site_dir: str | Path, doc: dict[str, Any], base_dir: Path) -> None:
    """Refuse a base model that is not the one the site was calibrated on."""
    got = model_digest(base_dir)
    if got != doc["base_digest"]:
        raise ModelError(f"{Path(site_dir) / SITE_FILE}: the base model {doc['base_model']} ({base_dir}) has changed since this "
                         f"site was calibrated (digest {got}, calibrated on {doc['base_digest']}); its promise does not hold "
                         "for the new model: run `ferroute calibrate-site` again")
