"""The report as Markdown: readable in a terminal and on GitHub (tables only, no figures)."""

from __future__ import annotations

import pandas as pd

from hpcdl.report.data import fmt
from hpcdl.report.sections import Section


def md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "(none)\n"
    cells = [
        [fmt(v).replace("\n", " / ").replace("|", "\\|") for v in row]
        for row in df.itertuples(index=False)
    ]
    head = "| " + " | ".join(map(str, df.columns)) + " |\n"
    rule = "|" + "---|" * len(df.columns) + "\n"
    return head + rule + "".join("| " + " | ".join(r) + " |\n" for r in cells)


def markdown_page(title: str, when: str, sections: list[Section]) -> str:
    md = [f"# {title}\n\ngenerated {when}\n"]
    for sec in sections:
        if sec.warning:
            md.append(f"> {sec.title}\n\n")
            continue
        if sec.table is None and sec.text is None and sec.figure is None:
            continue
        md.append(f"\n{'#' * sec.level} {sec.title}\n\n")
        if sec.text:
            md.append(sec.text + "\n\n")
        if sec.table is not None:
            md.append(md_table(sec.table))
        if sec.figure is not None:
            md.append("(interactive plot in report.html)\n")
    return "".join(md)
