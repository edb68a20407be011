"""The reproductions page: one self-contained HTML file a researcher can read (rendering only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape

from bloodcell.report.html import STYLE, data_uri, html_table


@dataclass(frozen=True)
class PaperSection:
    """What the page shows of one reproduction: its title, paragraphs (the protocol, what could not be
    reproduced and why) and figures (caption -> PNG bytes)."""

    title: str
    paragraphs: Sequence[str]
    figures: Mapping[str, bytes] = field(default_factory=dict)


def render_reproduction_page(header: Sequence[str], rows: Sequence[Sequence[str]], intro: Sequence[str],
                             sections: Sequence[PaperSection]) -> str:
    """The table of every reproduction, then one section per paper with its figures."""
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>Reproductions</title><style>{STYLE}.wide{{overflow-x:auto}}"
             ".figs{display:flex;flex-wrap:wrap;gap:1em}.figs figure{margin:0;max-width:520px}"
             ".figs img{width:100%}</style></head><body>",
             "<h1>The papers, reproduced: each paper's protocol beside an honest one</h1>",
             *(f"<p>{escape(text)}</p>" for text in intro),
             f"<div class='wide'>{html_table(rows, header)}</div>"]
    for section in sections:
        parts.append(f"<h2 id='{escape(section.title)}'>{escape(section.title)}</h2>")
        parts += [f"<p>{escape(text)}</p>" for text in section.paragraphs]
        if section.figures:
            parts.append("<div class='figs'>")
            parts += [f"<figure><img src='{data_uri(png)}' alt='{escape(caption)}'>"
                      f"<figcaption>{escape(caption)}</figcaption></figure>" for caption, png in section.figures.items()]
            parts.append("</div>")
    parts.append("</body></html>")
    return "".join(parts)
