"""The ``ferroute`` command line: train, calibrate, evaluate and export a model (:mod:`.build`);
route images and videos, and serve them over HTTP (:mod:`.run`). Shared pieces: :mod:`.common`."""

from __future__ import annotations

from . import build, run  # noqa: F401  (each registers its commands on the app)
from .common import _command_line, app

__all__ = ["app", "main", "_command_line"]


def main() -> None:
    app()
