"""Response models of the HTTP API (they also document it in the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorResponse(BaseModel):
    """Every refused request: a short machine-readable code and one clear sentence."""

    error: str = Field(description="Short code, e.g. unsupported_media_type, image_too_large, busy, timeout.")
    message: str = Field(description="One sentence saying what was wrong.")
    request_id: str | None = None


class ClassProbability(BaseModel):
    label: str
    probability: float


class CellResult(BaseModel):
    """One uploaded cell image. A file that could not be used has ``error`` set and no label."""

    filename: str
    label: str | None = None
    confidence: float | None = Field(None, description="Calibrated probability of the label.")
    referred: bool | None = Field(None, description="True when the result should be checked by a person.")
    reason: str | None = Field(None, description="Why the result was referred.")
    top_k: list[ClassProbability] = Field(default_factory=list)
    error: str | None = None
    gradcam_png: str | None = Field(None, description="Base64 PNG Grad-CAM overlay (only with explain=true).")


class ClassifyResponse(BaseModel):
    model: str
    results: list[CellResult]


class SmearImageResult(BaseModel):
    """One smear photo: counts by cell type, white-cell differential, boxes, annotated image."""

    filename: str
    counts: dict[str, int] = Field(default_factory=dict)
    wbc_types: dict[str, Any] = Field(default_factory=dict)
    boxes: list[dict[str, Any]] = Field(default_factory=list)
    error: str | None = None
    annotated_png: str | None = Field(None, description="Base64 PNG of the photo with the detections drawn.")


class CountResponse(BaseModel):
    images: list[SmearImageResult]
    sample: dict[str, Any] = Field(default_factory=dict, description="Totals and differential over all photos.")


class ModelInfo(BaseModel):
    name: str
    engine: str
    class_names: list[str]
    input_size: int
    temperature: float
    ood_guard: bool
    gradcam: bool


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class HealthResponse(BaseModel):
    status: str
    version: str
    model: str
