"""White-cell differential of a sample: percentages, adult reference intervals, flags, report.md.

A percentage counted on few cells is imprecise: with n cells the 95 % interval of a proportion is the
exact binomial (Clopper-Pearson) interval, the one Rümke's tables give for differential counts
(Rümke CL, "Variability of results in differential cell counts on blood smears", Triangle 1960;4:154-158;
reproduced in CLSI H20-A2, "Reference leukocyte (WBC) differential count (proportional)", 2007). A type is
flagged low or high only when that whole interval lies outside the reference interval; otherwise the
differential says how many cells would be needed to tell, were the proportion to stay the same
(:func:`cells_needed`). With 2 white cells nothing is flagged; 0 eosinophils among 100 is no flag either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import betaincinv

from bloodcell.smear.referral import review_targets
from bloodcell.writing import write_text

#: Adult reference intervals of the differential, in percent of white cells.
REFERENCE_INTERVALS = {"neutrophil": (50, 70), "lymphocyte": (20, 45), "monocyte": (2, 10),
                       "eosinophil": (1, 5), "basophil": (0, 1)}
#: Adult reference intervals of the absolute counts, 10^9/L (Dacie and Lewis Practical Haematology, 12th ed., 2017,
#: "Reference ranges and normal values", adults).
ABSOLUTE_INTERVALS = {"neutrophil": (2.0, 7.0), "lymphocyte": (1.0, 3.0), "monocyte": (0.2, 1.0),
                      "eosinophil": (0.02, 0.5), "basophil": (0.02, 0.1)}
#: Where the intervals and the flag rule come from (printed under the sample report).
SOURCES = (
    "Percent reference intervals: bloodcell's adult defaults (smear/differential.py); they are not a validated "
    "source: a laboratory's own intervals take precedence.",
    "Absolute reference intervals (adults): Bain BJ, Bates I, Laffan MA (eds.), Dacie and Lewis Practical "
    "Haematology, 12th ed., Elsevier 2017, chapter 'Reference ranges and normal values'.",
    "Flags: the exact binomial 95% interval of a proportion (Clopper CJ, Pearson ES, Biometrika 1934;26:404-413), as "
    "tabulated for differential counts by Rümke CL, Triangle 1960;4:154-158, and in CLSI H20-A2 (2007).",
)
#: Confidence of the interval of a counted percentage a flag needs (Rümke's tables give 95 %).
FLAG_CONFIDENCE = 0.95
#: Beyond this many white cells :func:`cells_needed` stops looking (a manual differential counts 100 to 400).
MAX_CELLS_NEEDED = 10_000
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
    flags, unsupported = {}, {}
    for name, (low, high) in REFERENCE_INTERVALS.items():
        value = percent.get(name, 0.0)
        direction = "low" if total and value < low else "high" if total and value > high else None
        if direction is None:
            continue
        interval = percent_interval(white.get(name, 0), total)
        if interval[1] < low or interval[0] > high:
            flags[name] = direction
        else:
            unsupported[name] = {"direction": direction, "interval": interval,
                                 "needed": cells_needed(value / 100, low, high, direction, more_than=total)}
    warnings = []
    if total < MANUAL_DIFFERENTIAL:
        warnings.append(f"only {total} white cells classified (a manual differential counts {MANUAL_DIFFERENTIAL}): "
                        "percentages are imprecise")
    notable = {k: wbc_types[k] for k in NOTABLE if wbc_types.get(k)}
    not_white = {k: wbc_types[k] for k in NOT_WHITE_CELLS if wbc_types.get(k)}
    return {"classified": total, "percent": percent, "flags": flags, "unsupported": unsupported,
            "notable": notable, "not_white_cells": not_white, "warnings": warnings}


def percent_interval(count: int, total: int, confidence: float = FLAG_CONFIDENCE) -> tuple[float, float]:
    """The exact binomial (Clopper-Pearson) interval, in percent, of ``count`` cells of one type among ``total``."""
    if total <= 0:
        return 0.0, 100.0
    tail = (1 - confidence) / 2
    low = 0.0 if count == 0 else float(betaincinv(count, total - count + 1, tail))
    high = 1.0 if count == total else float(betaincinv(count + 1, total - count, 1 - tail))
    return 100 * low, 100 * high


def cells_needed(fraction: float, low: float, high: float, direction: str, confidence: float = FLAG_CONFIDENCE,
                 more_than: int = 0) -> int | None:
    """The fewest white cells (more than ``more_than``) at which a type seen at ``fraction`` would have its whole
    interval below ``low`` (``direction`` "low") or above ``high`` (percent); None beyond :data:`MAX_CELLS_NEEDED`."""
    n = np.arange(more_than + 1, MAX_CELLS_NEEDED + 1)
    if not n.size:
        return None
    k = np.clip(np.round(fraction * n), 0, n)
    tail = (1 - confidence) / 2
    if direction == "low":
        upper = np.where(k >= n, 1.0, betaincinv(k + 1, np.maximum(n - k, 1), 1 - tail))
        ok = 100 * upper < low
    else:
        lower = np.where(k <= 0, 0.0, betaincinv(np.maximum(k, 1), n - k + 1, tail))
        ok = 100 * lower > high
    return int(n[np.argmax(ok)]) if ok.any() else None


#: What to do about an unmeasured classifier, for a command-line user (report.md) and for a person at the web page.
ADAPT_WITH_COMMAND = "adapt it to your lab with a few labelled cells (`bloodcell adapt DIR`)."
ADAPT_ON_THE_PAGE = ("review every white cell on this page and correct the calls; your reviewed cells let a supervisor "
                     "adapt the classifier to your lab later.")


def trust_note(typing: dict[str, Any], next_step: str = ADAPT_WITH_COMMAND) -> str:
    """One paragraph on the typing accuracy behind the percentages (from counts.json's ``wbc_typing``), with
    ``next_step`` when the accuracy was not measured, and the types an adapted classifier may miss."""
    return _accuracy_note(typing, next_step) + _at_risk_note(typing)


def _accuracy_note(typing: dict[str, Any], next_step: str) -> str:
    """:func:`trust_note`'s sentences on the typing accuracy."""
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
                "(another microscope and stain) correctly, so do not use these percentages without review; "
                + next_step)
    who = "the cell classifier" + (f" adapted to {typing['adapted_to']}" if typing.get("adapted_to") else "")
    fitted = f" ({typing['fitted_on']})" if typing.get("fitted_on") else ""
    return (f"White cells were typed by {who}{fitted}, which named the main white cell of {accuracy:.0%} of "
            f"{typing.get('held_out_smears')} held-out smears correctly, so roughly one cell in "
            f"{max(2, round(1 / max(1e-9, 1 - accuracy)))} is mistyped. Use the percentages as a screening estimate: "
            "review flagged types and referred cells by eye, and confirm any abnormal differential with a manual count.")


def _at_risk_note(typing: dict[str, Any]) -> str:
    """A sentence (with a leading space) on the types an adapted classifier may miss, or ""."""
    names = " or ".join(typing.get("adapted_at_risk") or [])
    return (f" It was adapted without any {names} cells, and before adapting it mistook some of the lab's other cells "
            f"for {names}, so it may miss {names} cells where the lab has them: look for them by eye.") if names else ""


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
    notes += [unsupported_note(name, entry, diff["classified"]) for name, entry in diff.get("unsupported", {}).items()]
    notes += [f"Warning: {warning}." for warning in diff["warnings"]]
    return notes


def unsupported_note(name: str, entry: dict[str, Any], total: int) -> str:
    """Why a type outside its reference interval is not flagged: the interval of its percentage, and the cells needed."""
    low, high = entry["interval"]
    needed = (f"about {entry['needed']} white cells would be needed to flag it, were the proportion to stay the same"
              if entry["needed"] else f"no count up to {MAX_CELLS_NEEDED} white cells could flag it")
    return (f"Not flagged: {name} is {'below' if entry['direction'] == 'low' else 'above'} its reference interval, "
            f"but with {total} white cell{'s' if total != 1 else ''} its 95% interval is {low:.1f}-{high:.1f}%, "
            f"which reaches the reference interval; {needed}.")


def _markdown_note(note: str) -> str:
    label, sep, rest = note.partition(": ")
    return f"- **{label}**: {rest}" if sep and label in ("Notable", "Warning", "Not flagged") else f"- {note}"


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
