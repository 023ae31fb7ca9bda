"""ferroute: facial expression recognition that knows why it is unsure.

>>> import ferroute
>>> router = ferroute.load()                 # embedded default ensemble, calibrated
>>> router.route("photo.jpg")                # one JSON-able dict per face
"""

from .data import EMOTIONS
from .faces import ImageError
from .pipeline import FERRouter, load
from .routing import NotCalibratedError, SingleScoreRouter, UncertaintyRouter
from .uncertainty import decompose

__version__ = "0.1.0"
__all__ = [
    "EMOTIONS",
    "FERRouter",
    "ImageError",
    "NotCalibratedError",
    "SingleScoreRouter",
    "UncertaintyRouter",
    "decompose",
    "load",
    "__version__",
]
