"""Inference defaults as plain constants, importable without torch (the CLI's options read them)."""

from __future__ import annotations

ENGINES = ("torch", "onnx")
#: The one default referral threshold of the CLI, the service, the page and the smear counter.
DEFAULT_REFER_BELOW = 0.6
