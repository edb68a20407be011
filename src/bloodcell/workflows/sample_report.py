"""``bloodcell samples report``: a kept sample's printable report as PDF (WeasyPrint) or HTML."""

from __future__ import annotations

from pathlib import Path

from bloodcell.outputs import check_output_file
from bloodcell.report.sample_report import render_html, write_pdf
from bloodcell.store.database import open_store
from bloodcell.store.report import report_data
from bloodcell.store.samples import find
from bloodcell.writing import write_text

SUFFIXES = (".pdf", ".html", ".htm")


def sample_report_html(store_spec: str | None, sample_id: str, wbc_per_nl: float | None = None) -> str:
    """The report of sample ``sample_id`` of the store ``store_spec`` as one HTML page."""
    store = open_store(store_spec, create=False)
    try:
        with store.session() as session:
            return render_html(report_data(session, find(session, sample_id), store.photos, wbc_per_nl))
    finally:
        store.close()


def write_sample_report(store_spec: str | None, sample_id: str, output: str | Path,
                        wbc_per_nl: float | None = None, *, overwrite: bool = False) -> Path:
    """Write the report to ``output``: PDF when it ends in .pdf, else HTML; whole or not at all; an existing
    ``output`` is refused unless ``overwrite``."""
    path = check_output_file(output, SUFFIXES, "report", replace=overwrite)
    html = sample_report_html(store_spec, sample_id, wbc_per_nl)
    return write_pdf(html, path) if path.suffix.lower() == ".pdf" else write_text(path, html)
