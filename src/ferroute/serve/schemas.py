"""Typed shapes of the HTTP API's answers (pydantic), so ``/openapi.json`` documents them.

The pipeline keeps producing plain JSON-able dicts; these models describe (and validate)
the same fields for the service.
"""

from __future__ import annotations

from enum import Enum
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from ..labels import EMOTIONS


class Decision(str, Enum):
    accept = "accept"
    ambiguous = "ambiguous"
    reject = "reject"
    no_face = "no_face"


Emotion = Enum("Emotion", {e: e for e in EMOTIONS}, type=str)  # type: ignore[misc]


class Scores(BaseModel):
    aleatoric: float = Field(description="share of FERPlus validation faces with a lower score, in %")
    epistemic: float
    total: float


class FaceReport(BaseModel):
    """One face: the decision, why, and the numbers behind it."""

    model_config = ConfigDict(extra="allow")
    decision: Decision
    reason: str = Field(description="one sentence a person can act on")
    emotion: Optional[Emotion] = Field(None, description="the most likely emotion; null when rejected or no face")  # type: ignore[valid-type]
    distribution: Optional[dict[Emotion, float]] = Field(None, description="predicted share of people who would pick each of the 8 FERPlus emotions (calibrated to annotator votes)")  # type: ignore[valid-type]
    agreement: Optional[float] = Field(None, description="predicted share of people who would pick the top emotion; below the model's level (GET /v1/model: thresholds.ambiguous_below) the face is ambiguous")
    aleatoric: Optional[float] = Field(None, description="expected entropy of the members (nats): ambiguity")
    epistemic: Optional[float] = Field(None, description="mutual information (nats): disagreement between members")
    total: Optional[float] = Field(None, description="entropy of the mean distribution (nats)")
    shift_score: Optional[float] = Field(None, description="the reject score the model's router ships (GET /v1/model: reject_score); "
                                         "higher = less like the validation faces; reject above its threshold")
    percentiles: Optional[Scores] = None
    box: Optional[list[int]] = Field(None, description="[x, y, w, h] in the image's pixels; null when no face")
    score: Optional[float] = Field(None, description="face detector confidence; null for a 48x48 crop taken as it is")
    landmarks: Optional[list[list[float]]] = Field(None, description="right eye, left eye, nose tip, right and left mouth corner")


class ImageResult(BaseModel):
    """One uploaded image: its faces (left to right), or why it could not be used."""

    source: str
    faces: Optional[list[FaceReport]] = None
    size: Optional[list[int]] = Field(None, description="[width, height] of the image")
    error: Optional[str] = None


class RouteResponse(BaseModel):
    results: list[ImageResult]


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable, e.g. unauthorized, too_large, bad_image, busy, not_found")
    message: str = Field(description="what went wrong and what to do")
    request_id: Optional[str] = Field(None, description="also in the X-Request-ID header and the server's log")


class ErrorResponse(BaseModel):
    """The one error envelope of every status."""

    error: ErrorDetail


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())
    version: str
    members: int
    labels: list[str]
    thresholds: dict[str, float]
    reject_rate: float
    reject_score: str = Field(description="what the router rejects on, e.g. 'face' (how little the crop looks like a face "
                              "to the face detector), 'epistemic', or a union such as 'epistemic+pixels'")
    guarantee: dict[str, object]
    inference: dict[str, object]
    model_card: Optional[str] = None
    limits: dict[str, float]


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in ((401, "missing or wrong bearer token"), (408, "the body did not arrive in time"),
                       (413, "body, image or decoding budget over its limit"), (422, "no images, or none of them usable"),
                       (503, "busy: try again after Retry-After seconds"), (500, "the server failed; see request_id in its log"))
}
