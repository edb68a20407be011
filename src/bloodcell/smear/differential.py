"""White-cell differential of a sample: percentages, adult reference intervals, flags, report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bloodcell.smear.referral import review_targets
from bloodcell.writing import write_text

#: Adult reference intervals of the differential, in percent of white cells.
REFERENCE_INTERVALS = {"neutrophil": (50, 70), "lymphocyte": (20, 45), "monocyte": (2, 10),
                       "eosinophil": (1, 5), "basophil": (0, 1)}
NOTABLE = ("ig", "erythroblast")
#: Classifier calls on a detected white-cell box that are not white cells: reported, kept out of the percentages
#: (nucleated red cells are counted per 100 white cells, not inside the differential).
NOT_WHITE_CELLS = ("platelet", "erythroblast")
MANUAL_DIFFERENTIAL = 100


def differential(wbc_types: dict[str, int]) -> dict[str, Any]:
    """Percent per white-cell type, low/high flags against the reference intervals, notable calls, warnings.

    Calls in ``NOT_WHITE_CELLS`` are listed under ``not_white_cells`` and left out of the percentages.
    """
    white = {k: n for k, n in wbc_types.items() if k not in NOT_WHITE_CELLS}
    total = sum(white.values())
    percent = {k: 100.0 * n / total for k, n in sorted(white.items())} if total else {}
    flags = {}
    for name, (low, high) in REFERENCE_INTERVALS.items():
        value = percent.get(name, 0.0)
        if total and value < low:
            flags[name] = "low"
        elif total and value > high:
            flags[name] = "high"
    warnings = []
    if total < MANUAL_DIFFERENTIAL:
        warnings.append(f"only {total} white cells classified (a manual differential counts {MANUAL_DIFFERENTIAL}): "
                        "percentages are imprecise")
    notable = {k: wbc_types[k] for k in NOTABLE if wbc_types.get(k)}
    not_white = {k: wbc_types[k] for k in NOT_WHITE_CELLS if wbc_types.get(k)}
    return {"classified": total, "percent": percent, "flags": flags, "notable": notable,
            "not_white_cells": not_white, "warnings": warnings}


def trust_note(typing: dict[str, Any]) -> str:
    """One paragraph on the typing accuracy behind the percentages (from counts.json's ``wbc_typing``)."""
    accuracy = typing.get("held_out_accuracy")
    adapted = typing.get("adapted_cv_accuracy")
    if accuracy is None and adapted is not None:
        return (f"White cells were typed by the cell classifier adapted to {typing.get('adapted_to') or 'your lab'}"
                f" from {typing.get('adapted_cells', 'a few')} of its reviewed cells; typing was right on {adapted:.0%} of "
                "those cells in cross-validation while adapting (slightly optimistic; check it on cells you kept back "
                "with `bloodcell evaluate`). Review referred cells by eye, and confirm any abnormal differential with a "
                "manual count.")
    if accuracy is None:
        return ("How well this classifier types white cells in smear photos has not been measured. A classifier "
                "trained on PBC single-cell images alone typed only about 40% of the white cells of BCCD smears "
                "(another microscope and stain) correctly, so do not use these percentages without review; adapt "
                "it to your lab with a few labelled cells (`bloodcell adapt DIR`).")
    who = "the cell classifier" + (f" adapted to {typing['adapted_to']}" if typing.get("adapted_to") else "")
    fitted = f" ({typing['fitted_on']})" if typing.get("fitted_on") else ""
    return (f"White cells were typed by {who}{fitted}, which named the main white cell of {accuracy:.0%} of "
            f"{typing.get('held_out_smears')} held-out smears correctly, so roughly one cell in "
            f"{max(2, round(1 / max(1e-9, 1 - accuracy)))} is mistyped. Use the percentages as a screening estimate: "
            "review flagged types and referred cells by eye, and confirm any abnormal differential with a manual count.")


def reference_text(name: str) -> str:
    """The adult reference interval of a white-cell type as text ("50-70%"), or "" when there is none."""
    low_high = REFERENCE_INTERVALS.get(name)
    return f"{low_high[0]}-{low_high[1]}%" if low_high else ""


def differential_rows(wbc_types: dict[str, int], diff: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per white-cell type called or with a reference interval: type, count, percent, reference, flag."""
    diff = diff or differential(wbc_types)
    return [{"type": name, "count": wbc_types.get(name, 0), "percent": diff["percent"].get(name, 0.0),
             "reference": reference_text(name), "flag": diff["flags"].get(name, "")}
            for name in sorted(set(diff["percent"]) | set(REFERENCE_INTERVALS))]


def differential_notes(diff: dict[str, Any]) -> list[str]:
    """The differential's remarks as plain sentences (calls kept out of the percentages, notable calls, warnings)."""
    notes = [f"{n} detected white-cell box(es) classified as {name} (not counted in the percentages)."
             for name, n in diff["not_white_cells"].items()]
    notes += [f"Notable: {n} cell(s) called {name}; review the smear." for name, n in diff["notable"].items()]
    notes += [f"Warning: {warning}." for warning in diff["warnings"]]
    return notes


def _markdown_note(note: str) -> str:
    label, sep, rest = note.partition(": ")
    return f"- **{label}**: {rest}" if sep and label in ("Notable", "Warning") else f"- {note}"


def render_report(doc: dict[str, Any], sample_id: str = "sample") -> str:
    """Markdown differential report of a counts.json document (marked reviewed when ``doc["review"]`` says so)."""
    sample = doc["sample"]
    diff = differential(sample["wbc_types"])
    review = doc.get("review") or {}
    title = f"# Differential report: {sample_id}" + (" (reviewed)" if review.get("reviewed") else "")
    lines = [title, ""] + ([review["summary"], ""] if review.get("summary") else [])
    lines += [f"Images counted: {sample['images']}; skipped: {len(doc.get('errors', []))}", "",
              "| cell | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sample["counts"].items()]
    if doc.get("border_cells"):
        lines += ["", doc["border_cells"]]
    lines += ["", "## White-cell differential", ""]
    notes = differential_notes(diff)
    if sample.get("wbc_typing_unavailable"):
        lines += [f"White-cell types unavailable: {sample['wbc_typing_unavailable']}", ""]
        notes = [f"Warning: {warning}." for warning in diff["warnings"]]
    else:
        lines += ["| type | n | % | reference | flag |", "|---|---|---|---|---|"]
        lines += [f"| {r['type']} | {r['count']} | {r['percent']:.1f} | {r['reference']} | {r['flag']} |"
                  for r in differential_rows(sample["wbc_types"], diff)]
        lines.append("")
    lines += [_markdown_note(note) for note in notes]
    if sample.get("lab_check"):
        lines += ["", "## Lab check", "", ("**Warning**: " if sample["lab_check"]["unfamiliar_lab"] else "")
                  + sample["lab_check"]["message"]]
    if sample.get("wbc_typing"):
        lines += ["", "## How much to trust this differential", "", trust_note(sample["wbc_typing"])]
    referred = [(e["path"], e["boxes"][b], reason) for e in doc["images"] for b, reason in review_targets(e)]
    if referred:
        lines += ["", "## White cells referred for review", "", "| image | box | call | reason |", "|---|---|---|---|"]
        lines += [f"| {p} | {r['x1']:.0f},{r['y1']:.0f},{r['x2']:.0f},{r['y2']:.0f} | {r.get('wbc_type')} | {reason} |"
                  for p, r, reason in referred]
    if doc.get("errors"):
        lines += ["", "## Skipped files", ""] + [f"- {e['error'] if e['error'].startswith(e['path']) else e['path'] + ': ' + e['error']}"
                                                 for e in doc["errors"]]
    return "\n".join(lines) + "\n"


def write_report(doc: dict[str, Any], path: str | Path, sample_id: str = "sample") -> Path:
    return write_text(path, render_report(doc, sample_id))  # whole or not at all
