"""A sample's printable report: one HTML page with a print stylesheet (A4), rendered from plain data.

:class:`SampleReportData` holds everything the page shows, already worked out by the caller
(:mod:`bloodcell.store.report` builds it from a kept sample); :func:`render_html` only lays it out, and
:func:`write_pdf` prints it with WeasyPrint (Debian's Pango underneath).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from bloodcell.errors import ConfigError
from bloodcell.report.html import data_uri
from bloodcell.wording import counted
from bloodcell.writing import write_bytes

RESEARCH_USE = "For research use only: not validated for diagnosis."
CELL_NAMES = {"RBC": "Red cells", "WBC": "White cells", "Platelets": "Platelets"}


@dataclass(frozen=True)
class DifferentialLine:
    """One white-cell type: count, percent and its 95 % interval, reference interval, absolute count, flag.

    ``flag`` is "low", "high" or ""; ``needed`` is the number of white cells a flag would need when the percentage
    lies outside its reference interval but the count cannot support a flag (None otherwise)."""

    type: str
    count: int
    percent: float
    interval: tuple[float, float]
    reference: str = ""
    absolute: float | None = None
    absolute_reference: str = ""
    flag: str = ""
    needed: int | None = None
    outside: str = ""
    absolute_flag: str = ""


@dataclass(frozen=True)
class Thumbnail:
    """An annotated photo of the sample, as PNG or JPEG bytes, with its caption."""

    caption: str
    image: bytes


@dataclass(frozen=True)
class SampleReportData:
    """What a sample's report shows, in the words and numbers it shows them."""

    sample_id: str
    status: str
    counted_at: str
    photos: int
    counts: dict[str, int]
    white_cells_typed: int
    lines: list[DifferentialLine]
    classifier: tuple[str | None, str | None]
    detector: tuple[str | None, str | None]
    lab: str = ""
    wbc_per_nl: float | None = None
    notes: list[str] = field(default_factory=list)
    typing_unavailable: str | None = None
    #: The lab check's warning when the sample's white cells look unlike every lab the classifier learned from.
    lab_warning: str | None = None
    reviewers: list[str] = field(default_factory=list)
    decisions: int = 0
    review_finished: str | None = None
    signed: str | None = None
    reopened: list[str] = field(default_factory=list)
    referred: int = 0
    thumbnails: list[Thumbnail] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    generated_at: str = ""


STYLE = """
@page { size: A4; margin: 14mm 13mm 16mm 13mm;
  @bottom-left { content: "bloodcell: for research use only, not validated for diagnosis"; font-size: 7.5pt;
                 color: #555; font-family: "DejaVu Sans", sans-serif; }
  @bottom-right { content: "page " counter(page) " of " counter(pages); font-size: 7.5pt; color: #555;
                  font-family: "DejaVu Sans", sans-serif; } }
* { box-sizing: border-box; }
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; font-size: 9.5pt; color: #111; margin: 0;
       line-height: 1.35; }
main { max-width: 190mm; margin: 0 auto; }
header { display: flex; justify-content: space-between; align-items: flex-end; border-bottom: 2px solid #111;
         padding-bottom: 4px; }
h1 { font-size: 15pt; margin: 0; }
header > :first-child { min-width: 0; } header > .meta { flex-shrink: 0; }
h1, #sample-id, #lab, dl.facts dd { overflow-wrap: anywhere; } /* a long sample id or lab name wraps, never widens the page */
h2 { font-size: 11pt; margin: 12px 0 4px; border-bottom: 1px solid #bbb; padding-bottom: 2px;
     break-after: avoid; }
.meta { text-align: right; font-size: 8.5pt; }
.ruo { border: 2px solid #b00020; color: #b00020; font-weight: bold; padding: 4px 8px; margin: 8px 0;
       text-align: center; }
table { border-collapse: collapse; width: 100%; margin: 4px 0; break-inside: avoid; }
th, td { border: 1px solid #999; padding: 2px 5px; text-align: left; vertical-align: top; }
th { background: #eee; font-weight: bold; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.high td, tr.low td { font-weight: bold; }
td.flag-high, td.flag-low { color: #b00020; }
td.flag-none { color: #444; font-size: 7.5pt; font-weight: normal; }
table.differential th:last-child { width: 44mm; }
.counts { width: auto; min-width: 45%; }
.small { font-size: 8pt; color: #333; }
ul.notes { margin: 2px 0 0 0; padding-left: 16px; }
dl.facts { display: grid; grid-template-columns: 34mm 1fr; margin: 2px 0; gap: 1px 6px; break-inside: avoid; }
dl.facts dt { font-weight: bold; }
dl.facts dd { margin: 0; }
code { font-family: "DejaVu Sans Mono", monospace; font-size: 7.5pt; word-break: break-all; }
.photos { display: flex; flex-wrap: wrap; gap: 5px; }
.photos figure { margin: 0; width: 59mm; break-inside: avoid; }
.photos img { width: 59mm; height: auto; border: 1px solid #999; display: block; }
.photos figcaption { font-size: 7.5pt; overflow-wrap: anywhere; }
@media screen { body { background: #f4f4f4; } main { background: #fff; padding: 12mm; margin: 8px auto;
                box-shadow: 0 0 4px #aaa; } }
/* a phone (390 px): no sheet margins, the header stacked, the differential's columns as narrow as their numbers
   allow (they wrap at a dash); never wider than the screen (the table scrolls in its box if it must) */
@media screen and (max-width: 600px) {
  main { padding: 3mm; margin: 0; box-shadow: none; }
  header { flex-wrap: wrap; gap: 2px 8px; } header > .meta { text-align: left; flex-shrink: 1; }
  h1 { overflow-wrap: normal; }
  table.differential { font-size: 7.5pt; } table.differential th:last-child { width: auto; }
  th, td { padding: 2px 3px; }
  td.num, th.num { white-space: normal; }
  .wide { overflow-x: auto; }
}
"""


def _e(value: object) -> str:
    return escape(str(value))


def _number(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _flag_cell(line: DifferentialLine) -> str:
    if line.flag:
        return f'<td class="flag-{line.flag}">{line.flag.upper()}</td>'
    if line.outside:
        need = f"needs {line.needed} cells" if line.needed else "cannot be shown by counting"
        return f'<td class="flag-none">{line.outside}, not flagged: {need}</td>'
    return "<td></td>"


def _differential(data: SampleReportData) -> str:
    if data.typing_unavailable:
        return f"<p>White-cell types are unavailable: {_e(data.typing_unavailable)}</p>"
    absolute = data.wbc_per_nl is not None
    # soft hyphens: on a phone the long header words break, so that the table fits the screen
    head = ("<tr><th>White-cell type</th><th class='num'>n</th><th class='num'>%</th>"
            "<th class='num'>95%<br>inter&shy;val</th><th class='num'>Refer&shy;ence<br>%</th>"
            + ("<th class='num'>Abso&shy;lute<br>&times;10<sup>9</sup>/L</th>"
               "<th class='num'>Refer&shy;ence<br>&times;10<sup>9</sup>/L</th>" if absolute else "") + "<th>Flag</th></tr>")
    rows = []
    for line in data.lines:
        cells = (f"<td>{_e(line.type)}</td><td class='num'>{line.count}</td><td class='num'>{line.percent:.1f}</td>"
                 f"<td class='num'>{line.interval[0]:.1f}&ndash;{line.interval[1]:.1f}</td>"
                 f"<td class='num'>{_e(line.reference)}</td>")
        if absolute:
            mark = f" <strong>{line.absolute_flag.upper()}</strong>" if line.absolute_flag else ""
            cells += (f"<td class='num'>{_number(line.absolute, 2)}{mark}</td>"
                      f"<td class='num'>{_e(line.absolute_reference)}</td>")
        rows.append(f"<tr class='{line.flag or 'normal'}' data-type='{_e(line.type)}'>{cells}{_flag_cell(line)}</tr>")
    concentration = (f"White-cell concentration given: {data.wbc_per_nl:g} &times;10<sup>9</sup>/L (absolute count ="
                     " percent &times; concentration)." if absolute else
                     "Absolute counts need the blood's white-cell concentration from an analyser (--wbc).")
    return (f"<div class='wide'><table class='differential'>{head}{''.join(rows)}</table></div>"
            f"<p class='small'>{counted(data.white_cells_typed, 'white cell')} typed. {concentration} HIGH or LOW only "
            "when the whole exact binomial 95% interval of the percentage (Clopper&ndash;Pearson, as in R&uuml;mke's "
            "tables) lies outside the reference interval (for an absolute count: that interval times the "
            "concentration); otherwise the number of white cells a flag would need, were the proportion to stay "
            "the same, is given.</p>")


def _people(data: SampleReportData) -> str:
    calls = counted(data.decisions, "cell's call", "cells' calls")
    waiting = counted(data.referred, "referred or doubtful cell still needs", "referred or doubtful cells still need")
    facts = [("Status", data.status.replace("_", " ")),
             ("Cells decided by", ", ".join(data.reviewers) or "nobody yet"),
             ("Decisions", f"{calls} decided by a person; {waiting} a decision"),
             ("Review finished", data.review_finished or "not yet"),
             ("Signed off", data.signed or "not signed"),
             *(("Reopened", reopen) for reopen in data.reopened)]
    return "<dl class='facts'>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts) + "</dl>"


def _models(data: SampleReportData) -> str:
    def model(name: str | None, sha256: str | None) -> str:
        return f"{_e(name or 'none')}<br><code>sha256 {_e(sha256 or 'not recorded')}</code>"

    return (f"<dl class='facts'><dt>Classifier</dt><dd>{model(*data.classifier)}</dd>"
            f"<dt>Detector</dt><dd>{model(*data.detector)}</dd></dl>")


def render_html(data: SampleReportData) -> str:
    """The report as one self-contained HTML page (print stylesheet, photos embedded)."""
    counts = "".join(f"<tr><td>{_e(CELL_NAMES.get(k, k))}</td><td class='num'>{v}</td></tr>"
                     for k, v in data.counts.items())
    notes = "".join(f"<li>{_e(note)}</li>" for note in data.notes)
    photos = "".join(f"<figure><img src='{data_uri(t.image)}' alt='{_e(t.caption)}'><figcaption>{_e(t.caption)}"
                     "</figcaption></figure>" for t in data.thumbnails)
    sources = "".join(f"<li>{_e(source)}</li>" for source in data.sources)
    lab = f" &middot; <span id='lab'>{_e(data.lab)}</span>" if data.lab else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Sample {_e(data.sample_id)}: differential report</title>
<style>{STYLE}</style></head><body><main>
<header><div><h1>White-cell differential report</h1><div>Sample <strong id="sample-id">{_e(data.sample_id)}</strong>{lab}</div></div>
<div class="meta">counted {_e(data.counted_at)}<br>status: {_e(data.status.replace('_', ' '))}<br>printed {_e(data.generated_at)}</div></header>
<p class="ruo">{RESEARCH_USE}</p>
<h2>Cells counted on {data.photos} photo{'s' if data.photos != 1 else ''}</h2>
<table class="counts"><tr><th>Cell</th><th class="num">Counted</th></tr>{counts}</table>
<p class="small">Cells seen on the photos, not concentrations in the blood.</p>
<h2>White-cell differential</h2>
{f'<p class="ruo" id="lab-check">Lab check: {_e(data.lab_warning)}</p>' if data.lab_warning else ''}
{_differential(data)}
{f'<ul class="notes">{notes}</ul>' if notes else ''}
<h2>Review and sign-off</h2>
{_people(data)}
<h2>Models</h2>
{_models(data)}
<h2>Photos</h2>
<div class="photos">{photos or '<p>No photos kept.</p>'}</div>
<h2>Sources</h2>
<ul class="notes small">{sources}</ul>
</main></body></html>
"""


def write_pdf(html: str, path: str | Path) -> Path:
    """Print ``html`` to a PDF file with WeasyPrint, whole or not at all."""
    from PIL import ImageFile

    strict = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        from weasyprint import HTML
    except OSError as exc:  # WeasyPrint loads Pango when imported
        raise ConfigError(f"PDF reports need Pango (Debian: apt-get install libpango-1.0-0 libpangoft2-1.0-0): {exc}"
                          ) from None
    finally:
        # importing WeasyPrint makes Pillow accept truncated images everywhere: a cut upload must stay refused
        ImageFile.LOAD_TRUNCATED_IMAGES = strict
    return write_bytes(path, HTML(string=html).write_pdf())
