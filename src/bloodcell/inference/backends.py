"""Inference engines behind one interface: ``run(batch) -> (logits, features)`` on numpy arrays.

``features`` are the penultimate activations (the classifier layer's input, spatially pooled
when 4D); the out-of-distribution guard scores them. The same wrapper is exported to ONNX so
both engines return identical outputs.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import nn

from bloodcell.models.heads import classifier_layer


class Backend(Protocol):
    """What the predictor needs from an engine."""

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits (N, C) and penultimate features (N, D) for a float32 NCHW batch."""


class LogitsAndFeatures(nn.Module):
    """Wraps a classifier so that ``forward`` returns ``(logits, penultimate features)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self._head = classifier_layer(model)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured: list[torch.Tensor] = []
        handle = self._head.register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0]))
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        features = captured[-1]
        if features.ndim == 4:
            features = features.mean(dim=(2, 3))
        return logits, features.flatten(1)


class TorchBackend:
    """Runs a PyTorch model in inference mode on the device its parameters are on."""

    def __init__(self, model: nn.Module):
        self.model = model.eval()
        self._wrapped = LogitsAndFeatures(self.model).eval()

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parameter = next(self.model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        with torch.inference_mode():
            inputs = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
            logits, features = self._wrapped(inputs)
        return logits.float().cpu().numpy(), features.float().cpu().numpy()
