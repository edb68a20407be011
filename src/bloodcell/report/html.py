"""Self-contained HTML report: figures and thumbnails embedded as base64 PNG data URIs."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from bloodcell.report import summary

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f2f2f2}.banner{background:#b00020;color:#fff;padding:.7em 1em;font-weight:bold;font-size:1.2em}
.test{background:#1b5e20}.figs img{max-width:100%;border:1px solid #ddd;margin:.5em 0}
.gallery{display:flex;flex-wrap:wrap;gap:.6em}.gallery figure{margin:0;width:150px;font-size:.8em}
.gallery img{width:150px;height:150px;object-fit:contain;border:1px solid #ccc}code{word-break:break-all}
"""


def data_uri(image: bytes) -> str:
    """``data:image/...;base64,...`` for PNG or JPEG bytes."""
    mime = "image/jpeg" if image[:2] == b"\xff\xd8" else "image/png"
    return f"data:{mime};base64," + base64.b64encode(image).decode("ascii")


def html_table(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def render_html(
    result: dict[str, Any],
    figures: Mapping[str, tuple[str, bytes]],
    gallery: Sequence[dict[str, Any]] = (),
) -> str:
    """The report as one HTML page.

    ``figures`` maps key -> (title, PNG bytes); each becomes ``<img id="fig-KEY" alt=TITLE>``.
    ``gallery`` items have ``path``, ``true``, ``predicted``, ``confidence`` and ``thumbnail``
    (PNG or JPEG bytes) and show the misclassified images.
    """
    m = result["metrics"]
    label = escape(result["label"])
    banner_class = "banner test" if result["is_test_result"] else "banner"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{escape(result['title'])} ({label})</title><style>{STYLE}</style></head><body>",
        f"<div class='{banner_class}'>{label}</div>",
        f"<h1>{escape(result['title'])}</h1>",
        "<h2>What was evaluated</h2>", html_table(summary.provenance_rows(result)), html_table(summary.count_rows(result)),
        f"<h2>Headline metrics <small>({label})</small></h2>", html_table(summary.headline_rows(result), ["metric", "value"]),
        "<h2>Per class</h2>", html_table(summary.per_class_table(m)[1], summary.per_class_table(m)[0]),
        "<h2>Selective prediction</h2>", html_table(summary.selective_table(m)[1], summary.selective_table(m)[0]),
        f"<p><em>{escape(m['selective']['note'])}.</em></p>",
    ]
    unmapped = summary.unmapped_rows(result)
    if unmapped:
        parts += ["<h2>Classes the model does not know (not scored)</h2>",
                  html_table(unmapped, ["dataset class", "images", "model predicted"])]
    notes = list(m["notes"]) + list(result.get("notes", []))
    if notes:
        parts += ["<h2>Notes</h2><ul>"] + [f"<li>{escape(n)}</li>" for n in notes] + ["</ul>"]
    parts.append("<h2>Figures</h2><div class='figs'>")
    for key, (title, png) in figures.items():
        parts.append(f"<h3>{escape(title)}</h3><img id='fig-{escape(key)}' alt='{escape(title)}' src='{data_uri(png)}'>")
    parts.append("</div>")
    parts.append(f"<h2 id='gallery'>Misclassified images ({len(gallery)} most confident errors)</h2><div class='gallery'>")
    for item in gallery:
        caption = f"true: {item['true']} · predicted: {item['predicted']} ({summary.pct(item['confidence'], 1)})"
        parts.append(
            f"<figure class='error'><img alt='{escape(caption)}' src='{data_uri(item['thumbnail'])}'>"
            f"<figcaption>{escape(caption)}<br><code>{escape(item['path'])}</code></figcaption></figure>"
        )
    if not gallery:
        parts.append("<p>No misclassified images.</p>")
    parts.append("</div>")
    skipped = result.get("skipped") or []
    parts.append(f"<h2>Skipped files ({len(skipped)})</h2>")
    parts.append(html_table([[s["path"], s["reason"]] for s in skipped], ["file", "reason"]) if skipped else "<p>None.</p>")
    parts.append(f"<footer><p>{label}</p></footer></body></html>")
    return "\n".join(parts)
