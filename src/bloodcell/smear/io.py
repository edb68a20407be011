"""The counts.json form of a counting document."""

from __future__ import annotations

from typing import Any


def serialisable(doc: dict[str, Any]) -> dict[str, Any]:
    """The counts.json document: ``annotated`` images dropped."""
    images = [{k: v for k, v in e.items() if k != "annotated"} for e in doc["images"]]
    return {**doc, "images": images}

