"""The report's interactive figures (plotly): effects, parallel coordinates, curves, confusion.

Figures stay light with thousands of runs: at most MAX_POINTS runs are drawn as points or lines
(the best ones plus a fixed random sample of the rest) and curves are the best runs plus the
median of all runs, never one trace per run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from hpcdl.report.data import SEED, SweepData, fmt
from hpcdl.report.tables import ranked

MAX_POINTS = 2000  # runs drawn as points (scatter, boxes) or lines (parallel coordinates)
BEST_KEPT = 200  # of those, the best runs always drawn; the rest a random sample
MAX_CATEGORIES = 12  # a numeric setting with more values gets a continuous axis
PER_ROW = 3  # effect panels per row
BLUE = "#1f64c8"
HOVER = "%{text}<br>%{customdata}<br>%{y:.4f}<extra></extra>"
EPOCH_HOVER = "epoch %{x}: %{y:.4f}<extra></extra>"


def layout(fig: go.Figure, height: int, **extra) -> go.Figure:
    """The common look: white, tight margins, width from the page."""
    settings = {
        "template": "plotly_white",
        "height": height,
        "margin": {"l": 60, "r": 20, "t": 40, "b": 40},
        "hoverlabel": {"namelength": -1},
    }
    fig.update_layout(**(settings | extra))
    return fig


def drawn(s: SweepData) -> pd.DataFrame:
    """The finished runs that figures draw: all of them, or the best and a sample when many."""
    done = ranked(s)
    if len(done) <= MAX_POINTS:
        return done
    rest = done.iloc[BEST_KEPT:].sample(MAX_POINTS - BEST_KEPT, random_state=0)
    return pd.concat([done.iloc[:BEST_KEPT], rest])


def drawn_note(s: SweepData) -> str:
    total = len(s.finished)
    if total <= MAX_POINTS:
        return ""
    return (
        f"{MAX_POINTS:,} of {total:,} finished runs drawn: the {BEST_KEPT} best and a random "
        "sample of the rest (the tables use all)."
    )


def is_continuous(s: SweepData, group: list[str]) -> bool:
    """A single numeric setting with several values (a seed only when it has many)."""
    values = s.summary[group[0]]
    if len(group) > 1 or not pd.api.types.is_numeric_dtype(values):
        return False
    many = values.nunique()
    return many > MAX_CATEGORIES or (group[0] != SEED and many >= 3)


def group_values(rows: pd.DataFrame, group: list[str]) -> pd.Series:
    """The group's value per row as one text (`adam / 0.001` for a zip group)."""
    parts = [rows[c].map(fmt) for c in group]
    return parts[0].str.cat(parts[1:], sep=" / ") if len(parts) > 1 else parts[0]


def categories(rows: pd.DataFrame, group: list[str]) -> tuple[list, list[str]]:
    """The distinct values of the group's first setting, sorted, and the group's text for each."""
    values = rows[group[0]]
    order = sorted(values.dropna().unique(), key=lambda v: (str(type(v)), v))
    texts = group_values(rows, group)
    return order, [texts[values == v].iloc[0] for v in order]


def effects_figure(s: SweepData) -> go.Figure | None:
    """The metric against each setting: a scatter per continuous setting, else boxes per value."""
    metric, rows = s.metric, drawn(s)
    if metric is None or rows.empty or not s.groups:
        return None
    n = len(s.groups)
    ncols = min(n, PER_ROW)
    nrows = -(-n // ncols)
    fig = make_subplots(
        rows=nrows,
        cols=ncols,
        subplot_titles=[s.group_name(g) for g in s.groups],
        horizontal_spacing=0.08,
        vertical_spacing=0.5 / nrows,
    )
    text = s.labels.loc[rows["point"]].to_numpy()
    common = {"y": rows[metric], "text": text, "customdata": rows["point"], "showlegend": False}
    for i, group in enumerate(s.groups):
        row, col = i // ncols + 1, i % ncols + 1
        if is_continuous(s, group):
            x = rows[group[0]]
            trace = go.Scatter(
                x=x, mode="markers", marker={"color": BLUE, "size": 6, "opacity": 0.6}, **common
            )
            positive = (x > 0).all()
            if positive and x.max() / x.min() >= 100:
                fig.update_xaxes(type="log", row=row, col=col)
        else:
            trace = go.Box(
                x=group_values(rows, group),
                boxpoints="all" if len(rows) <= 300 else False,
                jitter=0.4,
                pointpos=0,
                marker={"color": BLUE, "size": 5, "opacity": 0.6},
                line={"color": BLUE},
                hoveron="points" if len(rows) <= 300 else "boxes",
                **common,
            )
            ticks = categories(rows, group)[1]
            fig.update_xaxes(
                type="category", categoryorder="array", categoryarray=ticks, row=row, col=col
            )
        trace.hovertemplate = HOVER
        fig.add_trace(trace, row=row, col=col)
    fig.update_yaxes(title_text=metric, col=1)
    return layout(fig, 300 * nrows + 40)


def parallel_figure(s: SweepData) -> go.Figure | None:
    """Parallel coordinates: one axis per (zip group of) setting, categories by name; brushable."""
    metric, rows = s.metric, drawn(s)
    if metric is None or len(rows) < 2 or not s.groups:
        return None
    dims = []
    for group in s.groups:
        col = group[0]
        values = rows[col]
        label = s.group_name(group)
        if is_continuous(s, group) and values.nunique() > MAX_CATEGORIES:
            dims.append({"label": label, "values": values})
            continue
        order, ticks = categories(rows, group)
        codes = values.map({v: i for i, v in enumerate(order)})
        dims.append(
            {
                "label": label,
                "values": codes,
                "tickvals": list(range(len(order))),
                "ticktext": ticks,
                "range": [-0.2, len(order) - 0.8],
            }
        )
    dims.append({"label": metric, "values": rows[metric]})
    line = {
        "color": rows[metric],
        "colorscale": "Viridis",
        "showscale": True,
        "colorbar": {"title": {"text": metric, "side": "right"}, "thickness": 12},
    }
    fig = go.Figure(go.Parcoords(line=line, dimensions=dims, labelangle=0, labelside="top"))
    return layout(fig, 420, margin={"l": 90, "r": 90, "t": 70, "b": 30})


def accuracy_column(curves: pd.DataFrame) -> str:
    has_val = "val_accuracy" in curves and curves["val_accuracy"].notna().any()
    return "val_accuracy" if has_val else "accuracy"


def curves_figure(sweeps: list[SweepData], per_sweep: int = 5) -> go.Figure | None:
    """Training loss and accuracy per epoch of the best runs, with the median of all runs."""
    acc = accuracy_column(pd.concat([s.curves for s in sweeps if not s.curves.empty] or [None]))
    fig = make_subplots(rows=1, cols=2, subplot_titles=["training loss", acc])
    colours = iter(
        ["#1f64c8", "#e4572e", "#17a398", "#f3a712", "#8e44ad", "#6b8e23", "#c71585", "#555"] * 9
    )
    drawn_any = False
    for s in sweeps:
        best = ranked(s, per_sweep)
        if best.empty or s.curves.empty or acc not in s.curves:
            continue
        prefix = f"{s.name}: " if len(sweeps) > 1 else ""
        by_point = s.curves.groupby("point")
        for point in best["point"]:
            if point not in by_point.groups:
                continue
            c = by_point.get_group(point).sort_values("epoch")
            name = prefix + s.labels.get(point, point)
            style = {"color": next(colours), "width": 2}
            for col, key in ((1, "loss"), (2, acc)):
                fig.add_trace(
                    go.Scatter(
                        x=c["epoch"],
                        y=c[key],
                        name=name,
                        legendgroup=prefix + point,
                        showlegend=col == 1,
                        mode="lines+markers" if len(c) < 30 else "lines",
                        line=style,
                        marker={"size": 4},
                        hovertemplate=f"{name}<br>{point}<br>{EPOCH_HOVER}",
                    ),
                    row=1,
                    col=col,
                )
            drawn_any = True
        if s.curves["point"].nunique() > per_sweep:
            median = s.curves.groupby("epoch")[["loss", acc]].median().reset_index()
            name = f"{prefix}median of all {s.curves['point'].nunique():,} runs"
            for col, key in ((1, "loss"), (2, acc)):
                fig.add_trace(
                    go.Scatter(
                        x=median["epoch"],
                        y=median[key],
                        name=name,
                        legendgroup=name,
                        showlegend=col == 1,
                        line={"color": "#999", "dash": "dash", "width": 2},
                        hovertemplate=f"{name}<br>{EPOCH_HOVER}",
                    ),
                    row=1,
                    col=col,
                )
    if not drawn_any:
        return None
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_xaxes(title_text="epoch")
    legend_rows = len(fig.data) // 2
    return layout(
        fig,
        380 + 22 * legend_rows,
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -0.18, "yanchor": "top"},
        margin={"l": 60, "r": 20, "t": 40, "b": 60 + 22 * legend_rows},
    )


def confusion_figure(runs: list[tuple[str, np.ndarray]], names: list[str]) -> go.Figure:
    """Heat map of confusion matrices (rows: true class; colour: share of the row), one shown at
    a time; a menu switches between the runs given (label, matrix), the first shown first."""

    def shares(matrix: np.ndarray) -> np.ndarray:
        totals = matrix.sum(axis=1, keepdims=True)
        return np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)

    label, matrix = runs[0]
    fig = go.Figure(
        go.Heatmap(
            z=shares(matrix),
            text=matrix,
            x=names,
            y=names,
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1,
            colorbar={"title": {"text": "share of true class"}, "thickness": 12},
            hovertemplate="true %{y}<br>predicted %{x}<br>%{text} pixels (%{z:.1%})<extra></extra>",
            xgap=1,
            ygap=1,
        )
    )
    if len(runs) > 1:
        buttons = [
            {"label": name, "method": "restyle", "args": [{"z": [shares(m)], "text": [m]}]}
            for name, m in runs
        ]
        fig.update_layout(
            updatemenus=[
                {"buttons": buttons, "x": 0, "xanchor": "left", "y": 1.12, "yanchor": "bottom"}
            ]
        )
    fig.update_yaxes(
        autorange="reversed", title_text="true class", automargin=True, type="category"
    )
    fig.update_xaxes(title_text="predicted class", tickangle=-40, automargin=True, type="category")
    size = 260 + 28 * len(names)
    return layout(fig, size, margin={"l": 60, "r": 20, "t": 80 if len(runs) > 1 else 30, "b": 40})


def scene_map_figure(pixels: dict[str, np.ndarray], names: list[str]) -> go.Figure:
    """The scene's ground truth beside a run's predictions for every labelled pixel, one colour
    per class (unlabelled pixels blank); training pixels are marked on the predictions."""
    rows, cols = (int(v) for v in pixels["shape"])
    colours = qualitative.Alphabet
    scale = [
        [edge, colours[c % len(colours)]]
        for c in range(len(names))
        for edge in (c / len(names), (c + 1) / len(names))
    ]
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=["ground truth", "predicted"], horizontal_spacing=0.04
    )
    r, c = pixels["coords"][:, 0], pixels["coords"][:, 1]
    for col, key in ((1, "truth"), (2, "predicted")):
        z = np.full((rows, cols), np.nan)
        z[r, c] = pixels[key]
        label = np.full((rows, cols), "", dtype=object)
        label[r, c] = [names[k] if 0 <= k < len(names) else str(k) for k in pixels[key]]
        fig.add_trace(
            go.Heatmap(
                z=z,
                customdata=label,
                colorscale=scale,
                zmin=-0.5,
                zmax=len(names) - 0.5,
                showscale=False,
                hovertemplate="row %{y}, column %{x}: %{customdata}<extra></extra>",
            ),
            row=1,
            col=col,
        )
    train = pixels["split"] == 0
    fig.add_trace(
        go.Scattergl(
            x=c[train],
            y=r[train],
            mode="markers",
            marker={
                "symbol": "x-thin",
                "size": 3,
                "opacity": 0.7,
                "line": {"width": 1, "color": "black"},
            },
            name="training pixel",
            hovertemplate="training pixel (row %{y}, column %{x})<extra></extra>",
        ),
        row=1,
        col=2,
    )
    for col in (1, 2):  # both panels show the whole scene, pixels square, row 0 on top
        anchor = "x" if col == 1 else "x2"
        fig.update_xaxes(
            range=[-0.5, cols - 0.5], constrain="domain", showgrid=False, col=col, row=1
        )
        fig.update_yaxes(
            range=[rows - 0.5, -0.5],
            scaleanchor=anchor,
            constrain="domain",
            showgrid=False,
            col=col,
            row=1,
        )
    legend = {"orientation": "h", "x": 0, "xanchor": "left", "y": -0.06, "yanchor": "top"}
    return layout(fig, 520, legend=legend, margin={"l": 40, "r": 20, "t": 40, "b": 40})


def search_progress_figure(table: pd.DataFrame, metric: str, labels: pd.Series) -> go.Figure:
    """Best-so-far against trials and against epochs spent, each trial's own value beside it
    (pruned trials: their last epoch's value, hollow)."""
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=["by trial", "by epochs spent"], shared_yaxes=True
    )
    order = np.arange(1, len(table) + 1)
    for col, x in ((1, order), (2, table["epochs_spent"].to_numpy())):
        fig.add_trace(
            go.Scatter(
                x=x,
                y=table["best_so_far"],
                mode="lines",
                line={"shape": "hv", "color": "#1f77b4"},
                name="best so far",
                legendgroup="best",
                showlegend=col == 1,
            ),
            row=1,
            col=col,
        )
        for state, symbol in (("FINISHED", "circle"), ("PRUNED", "circle-open")):
            rows = table["state"] == state
            value = table[metric] if state == "FINISHED" else table.get(f"final_{metric}")
            if value is None or not rows.any():
                continue
            fig.add_trace(
                go.Scatter(
                    x=x[rows.to_numpy()],
                    y=value[rows],
                    mode="markers",
                    marker={"symbol": symbol, "size": 7, "color": "#555"},
                    name=state.lower(),
                    legendgroup=state,
                    showlegend=col == 1,
                    text=labels.reindex(table.loc[rows, "point"]).to_numpy(),
                    hovertemplate="%{text}<br>%{y:.4f}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="trial", row=1, col=1)
    fig.update_xaxes(title_text="epochs spent by all trials", row=1, col=2)
    fig.update_yaxes(title_text=metric, row=1, col=1)
    legend = {"orientation": "h", "x": 0, "xanchor": "left", "y": -0.2, "yanchor": "top"}
    return layout(fig, 380, legend=legend, margin={"l": 60, "r": 20, "t": 40, "b": 90})
