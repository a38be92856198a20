"""The report as one self-contained HTML file: opens offline, fits a 1366 px wide screen.

Tables are DataTables through itables (sort by any column, search box, a filter per column);
figures are plotly. Both libraries' JavaScript is embedded once, in the head.
"""

from __future__ import annotations

import html
import re

import pandas as pd
import plotly.offline
from itables import options as itables_options
from itables import to_html_datatable
from itables.javascript import generate_init_offline_itables_html

from hpcdl.report.data import fmt
from hpcdl.report.sections import Section

CSS = """*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1300px;padding:0 16px 40px;
color:#222;font-size:14px}
h1{font-size:24px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:1.8em}
nav{font-size:13px;line-height:1.7}nav a{margin-right:1em;white-space:nowrap}
.wide{max-width:100%;overflow-x:auto}.note{color:#a60}.plot{width:100%}
table.dataTable{font-size:13px}table.dataTable td{vertical-align:top}
pre{margin:0;font-size:11px;white-space:pre-wrap;word-break:break-word;max-width:48em}"""
TABLE_OPTIONS = {
    "connected": False,  # DataTables comes from the page's head, not from the internet
    "allow_html": True,  # cells are escaped here (cell_html)
    "maxBytes": 0,  # no down-sampling: the rows given are the rows shown
    "showIndex": False,
    "classes": "display compact",
    "columnControl": ["order", ["search"]],
    "ordering": {"indicators": False, "handler": False},
    "order": [],
    "pageLength": 10,
    "lengthMenu": [10, 25, 100, 1000],
    "style": "width:auto;margin:0",
}
PLOT_CONFIG = {"responsive": True, "displaylogo": False}


def cell_html(value) -> str:
    text = html.escape(fmt(value))
    return f"<pre>{text}</pre>" if "\n" in text else text


def table_html(df: pd.DataFrame) -> str:
    """A sortable, filterable table; a run's id shows when hovering over its name."""
    if df.empty:
        return "<p>(none)</p>"
    shown = df.map(cell_html)
    if "run" in df and "id" in df:
        shown["run"] = [
            f'<span title="{html.escape(i)}">{html.escape(r)}</span>'
            for r, i in zip(df["run"], df["id"], strict=True)
        ]
        shown = shown.drop(columns="id")
    shown.columns = [html.escape(str(c)) for c in shown.columns]
    options = dict(TABLE_OPTIONS)
    if len(shown) <= 25:  # short tables: no pages; very short ones: no search box either
        options["paging"] = False
        options["layout"] = {"topStart": None, "bottomStart": None}
        if len(shown) <= 10:
            options["layout"]["topEnd"] = None
    return f"<div class='wide'>{to_html_datatable(shown, **options)}</div>"


def anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def html_page(title: str, when: str, sections: list[Section]) -> str:
    """The whole page: head with the scripts and style, a contents line, then each section."""
    shown = [
        s
        for s in sections
        if s.warning or not (s.table is None and s.text is None and s.figure is None)
    ]
    links = " ".join(
        f"<a href='#{anchor(s.title)}'>{html.escape(s.title)}</a>"
        for s in shown
        if s.level == 2 and not s.warning
    )
    body = [
        f"<h1>{html.escape(title)}</h1><p>generated {when}</p><nav>{links}</nav>",
        generate_init_offline_itables_html(itables_options.dt_bundle),
    ]
    for sec in shown:
        if sec.warning:
            body.append(f"<p class='note'>{html.escape(sec.title)}</p>")
            continue
        body.append(
            f"<h{sec.level} id='{anchor(sec.title)}'>{html.escape(sec.title)}</h{sec.level}>"
        )
        if sec.text:
            body.append(f"<p>{html.escape(sec.text)}</p>")
        table = sec.html_table if sec.html_table is not None else sec.table
        if table is not None:
            body.append(table_html(table))
        if sec.figure is not None:
            body.append(
                sec.figure.to_html(
                    full_html=False,
                    include_plotlyjs=False,
                    config=PLOT_CONFIG,
                    default_width="100%",
                )
            )
    head = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{CSS}</style>"
        f"<script>{plotly.offline.get_plotlyjs()}</script></head><body>"
    )
    return head + "\n".join(body) + "</body></html>"
