"""Reports: which settings won, by how much, at what cost, and what failed and why.

`hpcdl report SWEEP [SWEEP ...]` writes one self-contained HTML file (interactive tables and
plots, scripts embedded, opens offline) and a Markdown summary. It reads the collector's tables
(running `collect` first), so it stays fast with thousands of runs: tables list at most
MAX_ROWS runs and figures draw at most figures.MAX_POINTS.

    data      the sweep's tables, the ranking metric, names of settings and runs
    tables    best runs, averages over seeds, effects, failures, scaling, per-class results
    figures   plotly figures
    sections  what the report says: registries of sections (REPORT_SECTIONS, SWEEP_SECTIONS)
              in registration order; register your own Section-returning function there
    page      the HTML writer;  markdown  the Markdown writer
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hpcdl import rundir
from hpcdl.files import utc_now
from hpcdl.report.data import RANK_METRICS, SweepData, load
from hpcdl.report.markdown import markdown_page
from hpcdl.report.page import html_page
from hpcdl.report.sections import MAX_ROWS, REPORT_SECTIONS, SWEEP_SECTIONS, Section, sections

__all__ = [
    "MAX_ROWS",
    "RANK_METRICS",
    "REPORT_SECTIONS",
    "SWEEP_SECTIONS",
    "Section",
    "SweepData",
    "build",
    "load",
    "report",
]


def build(sweeps: list[SweepData]) -> tuple[str, str]:
    """(html, markdown) of the report."""
    when = utc_now()
    title = "hpcdl report: " + ", ".join(s.name for s in sweeps)
    parts = sections(sweeps)
    return html_page(title, when, parts), markdown_page(title, when, parts)


def report(
    folders: list[str | Path],
    out_dir: str | Path | None = None,
    refresh: bool = True,
    out: Callable[[str], None] = print,
) -> tuple[Path, Path]:
    """Write report.html and report.md for the sweeps (into the sweep's folder, or out_dir)."""
    sweeps = [load(f, refresh, out) for f in folders]
    if out_dir:
        target = Path(out_dir)
    elif len(sweeps) == 1:
        target = sweeps[0].folder
    else:
        name = ("compare-" + "-".join(s.name for s in sweeps))[:120]
        target = sweeps[0].folder.parent / name
    target.mkdir(parents=True, exist_ok=True)
    page, summary = build(sweeps)
    rundir.write_text_atomic(target / "report.html", page)
    rundir.write_text_atomic(target / "report.md", summary)
    out(f"report: {target / 'report.html'} and report.md")
    return target / "report.html", target / "report.md"
