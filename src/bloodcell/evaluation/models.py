"""Loading what is evaluated: a torch ``.safetensors`` checkpoint or a classical ``.skops`` one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bloodcell.errors import CheckpointError
from bloodcell.evaluation.inference import Scores, score_classical, score_torch


@dataclass
class ScoringModel:
    """A loaded model with what evaluation needs: classes, temperature and a scoring function."""

    kind: str  # "torch" | "sklearn"
    model: Any
    model_name: str
    class_names: list[str]
    temperature: float
    meta: dict[str, Any]
    data_config: Any = None
    input_size: int | None = None

    @property
    def n_parameters(self) -> int | None:
        """Trainable + frozen parameters of a torch model; None for a classical pipeline."""
        if self.kind != "torch":
            return None
        return int(sum(p.numel() for p in self.model.parameters()))

    def score(self, paths: Sequence[Path], *, tta: bool = False, batch_size: int = 32,
              description: str = "evaluating") -> Scores:
        if self.kind == "torch":
            return score_torch(self.model, self.data_config, paths, batch_size=batch_size, tta=tta,
                               description=description)
        return score_classical(self.model, paths, self.class_names, self.input_size, batch_size=batch_size,
                               description=description)


def load_scoring_model(path: str | Path) -> ScoringModel:
    """Load ``path`` by its suffix: ``.safetensors`` (torch) or ``.skops`` (scikit-learn)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        from bloodcell.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path)
        return ScoringModel("torch", ckpt.model, ckpt.meta["model_name"], ckpt.class_names, ckpt.temperature,
                            ckpt.meta, ckpt.data_config)
    if path.suffix == ".skops":
        from bloodcell.models.classical import load_classical

        pipeline, meta = load_classical(path)
        if not meta.get("class_names"):
            raise CheckpointError(f"{path}: classical checkpoint metadata lists no class names")
        name = str(meta.get("model_name", path.stem))
        return ScoringModel("sklearn", pipeline, name, [str(c) for c in meta["class_names"]],
                            float(meta.get("temperature", 1.0)), dict(meta), input_size=_input_size(meta, name))
    raise CheckpointError(f"{path}: expected a .safetensors (torch) or .skops (classical) checkpoint")


def _input_size(meta: dict[str, Any], model_name: str) -> int:
    """The square size classical images were trained at: metadata first, else the registry entry."""
    size = meta.get("input_size") or (meta.get("data_config") or {}).get("input_size") \
        or (meta.get("train_config") or {}).get("input_size")
    if size:
        return int(size)
    from bloodcell.models import get_model_entry

    return int(get_model_entry(model_name).data_config.input_size)
