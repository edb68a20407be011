"""How the white cells of a smear were typed and how well that classifier types other labs' cells."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bloodcell.checkpoint import read_checkpoint_meta


def typing_summary(classifier) -> dict[str, Any]:
    """What typed the white cells and, from its checkpoint's ``smear_typing`` metadata (written by the
    typing-records job), how well it typed held-out smears of another lab; plus an adaptation, if any."""
    source = getattr(classifier, "source", None)
    summary: dict[str, Any] = {"typer": Path(source).name if source else None}
    if source and Path(source).suffix == ".safetensors":
        meta = read_checkpoint_meta(source)
        recorded = meta.get("smear_typing") if isinstance(meta.get("smear_typing"), dict) else {}
        summary.update({k: recorded.get(k) for k in ("fitted_on", "held_out_smears", "held_out_accuracy")
                        if k in recorded})
        if isinstance(meta.get("adaptation"), dict):
            summary["adapted_to"] = meta["adaptation"].get("lab")
    return summary
