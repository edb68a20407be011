"""Rendering of evaluation results: PNG figures, Markdown and self-contained HTML."""

from bloodcell.report.html import render_html
from bloodcell.report.markdown import render_markdown
from bloodcell.report.plots import comparison_chart, evaluation_figures

__all__ = ["comparison_chart", "evaluation_figures", "render_html", "render_markdown"]
