"""Markdown summary of an evaluation result."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bloodcell.report import summary

#: Misclassified images listed in the Markdown summary (the HTML gallery has its own limit).
MAX_ERRORS_LISTED = 50


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped)."""
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(result: dict[str, Any], figure_files: Mapping[str, tuple[str, str]] | None = None) -> str:
    """The report as Markdown; ``figure_files`` maps figure key -> (title, relative PNG path)."""
    m = result["metrics"]
    out = [f"# {result['title']}", ""]
    if not result["is_test_result"]:
        out += [f"> **{result['label']}**", ""]
    out += ["## What was evaluated", "", table(["", ""], summary.provenance_rows(result)), ""]
    out += [table(["", ""], summary.count_rows(result)), ""]
    out += ["## Headline metrics", "", f"*{result['label']}*", "", table(["metric", "value"], summary.headline_rows(result)), ""]
    out += ["## Per class", "", table(*summary.per_class_table(m)), ""]
    out += ["## Selective prediction (refer the least confident cells)", "", table(*summary.selective_table(m)), "",
            f"*{m['selective']['note']}.*", ""]
    unmapped = summary.unmapped_rows(result)
    if unmapped:
        out += ["## Classes the model does not know (not scored)", "",
                table(["dataset class", "images", "model predicted"], unmapped), ""]
    notes = list(m["notes"]) + list(result.get("notes", []))
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    if figure_files:
        out += ["## Figures", ""]
        out += [f"![{title}]({path})" for title, path in figure_files.values()] + [""]
    mis = result.get("misclassified") or []
    if mis:
        shown = mis[:MAX_ERRORS_LISTED]
        out += [f"## Most confident errors ({len(shown)} of {len(mis)}; all in predictions.csv)", "",
                table(["image", "true", "predicted", "confidence"],
                      [[r["path"], r["true"], r["predicted"], summary.pct(r["confidence"])] for r in shown]), ""]
    skipped = result.get("skipped") or []
    out += [f"## Skipped files ({len(skipped)})", ""]
    out += [table(["file", "reason"], [[s["path"], s["reason"]] for s in skipped]) if skipped else "None.", ""]
    return "\n".join(out)
