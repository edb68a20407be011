"""How the white cells of a smear were typed and how well that classifier types other labs' cells."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bloodcell.checkpoint import read_checkpoint_meta
from bloodcell.inference.onnx import read_document


def typing_summary(classifier) -> dict[str, Any]:
    """What typed the white cells and, from its checkpoint's ``smear_typing`` metadata (written by the
    typing-records job), how well it typed held-out smears of another lab; plus an adaptation, if any."""
    source = getattr(classifier, "source", None)
    return recorded_typing(Path(source).name if source else None, _recorded_meta(classifier, source) if source else {})


def recorded_typing(typer: str | None, meta: dict[str, Any]) -> dict[str, Any]:
    """:func:`typing_summary` from a model file's name and its metadata (each figure checked before it is quoted)."""
    summary: dict[str, Any] = {"typer": typer}
    if meta:
        recorded = meta.get("smear_typing") if isinstance(meta.get("smear_typing"), dict) else {}
        summary.update({k: recorded[k] for k, fits in _RECORDED.items() if k in recorded and fits(recorded[k])})
        adaptation = meta["adaptation"] if isinstance(meta.get("adaptation"), dict) else {}
        lab, accuracy, cells = adaptation.get("lab"), adaptation.get("cv_accuracy"), adaptation.get("cells")
        if isinstance(lab, str) and 0 < len(lab) <= 255:
            summary["adapted_to"] = lab
        if _RECORDED["held_out_accuracy"](accuracy):
            summary["adapted_cv_accuracy"] = float(accuracy)
        if isinstance(cells, dict) and all(_count(n) for n in cells.values()):
            summary["adapted_cells"] = sum(cells.values())
        at_risk = _at_risk(adaptation, meta.get("class_names"))
        if at_risk:
            summary["adapted_at_risk"] = at_risk
    return summary


def _at_risk(adaptation: dict[str, Any], class_names: Any) -> list[str]:
    """The model's classes its adaptation record names at risk (a model adapted before the record named them: the
    classes given no cells that were not gated), each once, in the model's order; [] when the record is unusable."""
    recipe = adaptation.get("recipe") if isinstance(adaptation.get("recipe"), dict) else {}
    named = recipe.get("at_risk")
    if named is None and isinstance(recipe.get("unshown_restored"), dict) and isinstance(recipe.get("gated"), list):
        named = [name for name in recipe["unshown_restored"] if name not in recipe["gated"]]
    if not isinstance(named, list) or not isinstance(class_names, list):
        return []
    return [name for name in class_names if isinstance(name, str) and name in named and _class_name(name)]


def _recorded_meta(classifier, source: str) -> dict[str, Any]:
    """The metadata of the checkpoint or ONNX file the classifier was loaded from (empty for anything else)."""
    suffix = Path(source).suffix
    if suffix == ".safetensors":
        return read_checkpoint_meta(source)
    if suffix == ".onnx" and hasattr(classifier.backend, "metadata"):
        return read_document(classifier.backend, source)
    return {}


def _class_name(name: str) -> bool:
    """A class name fit to quote: printable, 1 to 64 characters."""
    return 0 < len(name) <= 64 and name.isprintable()


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


#: The recorded figures a report quotes, each with the shape it must have (read from a file: not trusted).
_RECORDED = {
    "fitted_on": lambda v: isinstance(v, str) and 0 < len(v) <= 200,
    "held_out_smears": _count,
    "held_out_accuracy": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0,
}
