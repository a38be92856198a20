"""What the report says, in order, as sections that the HTML and Markdown writers both render."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

from hpcdl.registry import Registry
from hpcdl.report import figures, search, tables
from hpcdl.report.data import SweepData

MAX_ROWS = 1000  # runs listed in the HTML's sortable table (the Markdown lists tables.TOP)
CONFUSION_RUNS = 5  # best runs whose confusion matrices the heat map's menu offers


@dataclass
class Section:
    title: str
    level: int = 2
    text: str | None = None
    table: pd.DataFrame | None = None  # in both outputs
    html_table: pd.DataFrame | None = None  # the HTML's (longer) version of `table`
    figure: go.Figure | None = None  # HTML only
    warning: bool = False


def comparison(sweeps: list[SweepData]) -> list[Section]:
    rows = []
    for s in sweeps:
        best = tables.best_runs(s, 1)
        if not best.empty:
            rows.append({"sweep": s.name, **best.iloc[0].to_dict()})
    return [
        Section("Best run of each sweep", table=pd.DataFrame(rows)),
        Section(
            "Learning curves of each sweep's best runs",
            figure=figures.curves_figure(sweeps, 3),
        ),
    ]


def confusion(s: SweepData, prefix: str) -> list[Section]:
    """The best run's per-class accuracy and confusion matrix (menu: the next best runs)."""
    point, result = tables.best_result(s)
    found = tables.confusion(result)
    if found is None:
        return []
    matrix, names = found
    runs = [(s.labels.get(point, point), matrix)]
    for other in tables.ranked(s, CONFUSION_RUNS)["point"].iloc[1:]:
        other_found = tables.confusion(tables.read_result(s, other))
        if other_found is not None and other_found[0].shape == matrix.shape:
            runs.append((s.labels.get(other, other), other_found[0]))
    name = s.labels.get(point, point)
    text = (
        f"best run {name if name == point else f'{name} ({point})'}: overall accuracy "
        f"{result.get('overall_accuracy', float('nan')):.4f}, average accuracy "
        f"{result.get('average_accuracy', float('nan')):.4f}, kappa "
        f"{result.get('kappa', float('nan')):.4f}"
    )
    how = "rows: true class, colour: share of the row"
    if len(runs) > 1:
        how += f"; the menu shows the {len(runs)} best runs"
    return [
        Section(
            f"{prefix}Per-class accuracy of the best run", text=text, table=tables.per_class(result)
        ),
        Section(
            f"{prefix}Confusion matrix of the best run",
            level=3,
            text=how,
            figure=figures.confusion_figure(runs, names),
        ),
    ]


def scene_map(s: SweepData, prefix: str) -> list[Section]:
    """For a scene (Indian Pines): the best run's classification map beside the ground truth."""
    point, result = tables.best_result(s)
    pixels = tables.scene_pixels(s, point) if point else None
    if pixels is None:
        return []
    count = len(result.get("confusion_matrix") or []) or int(pixels["truth"].max()) + 1
    test = pixels["split"] == 2
    right = float((pixels["predicted"][test] == pixels["truth"][test]).mean()) if test.any() else 0
    name = s.labels.get(point, point)
    text = (
        f"best run {name}: every labelled pixel predicted ({int(test.sum())} test pixels, "
        f"{right:.1%} right); x marks the {int((pixels['split'] == 0).sum())} training pixels"
    )
    return [
        Section(
            f"{prefix}Classification map of the best run",
            level=3,
            text=text,
            figure=figures.scene_map_figure(pixels, tables.class_names(result, count)),
        )
    ]


def search_summary(s: SweepData, prefix: str) -> list[Section]:
    """For a random or Optuna search: progress, what mattered, pruned trials, the choice."""
    if not search.is_search(s) or s.metric is None:
        return []
    table = search.trials(s)
    states = s.summary["state"].value_counts()
    text = (
        f"{s.search.get('method')} search of {len(s.summary)} trials on {s.metric} "
        f"({s.search.get('direction', 'maximize')}): {int(states.get('FINISHED', 0))} finished, "
        f"{int(states.get('PRUNED', 0))} pruned"
    )
    best = tables.best_runs(s, 1)
    if not best.empty:
        chosen = best.iloc[0]
        test = f", test accuracy {chosen['test_accuracy']:.4f}" if "test_accuracy" in best else ""
        text += f"; chosen: {chosen['run']} ({s.metric} {chosen[s.metric]:.4f}{test})"
    parts = [
        Section(
            f"{prefix}Search",
            text=text,
            figure=figures.search_progress_figure(table, s.metric, s.labels),
        )
    ]
    weights = search.importance(s)
    if not weights.empty:
        parts.append(
            Section(
                f"{prefix}Which settings mattered",
                level=3,
                text="importance of each searched setting for the metric (Optuna's fANOVA, "
                "over the finished trials; they add up to 1)",
                table=weights,
            )
        )
    stopped = search.pruned(s)
    if not stopped.empty:
        parts.append(Section(f"{prefix}Pruned trials ({len(stopped)})", level=3, table=stopped))
    return parts


def warnings(s: SweepData, prefix: str) -> list[Section]:
    return [Section(f"warning: {note}", level=0, warning=True) for note in s.notes[:20]]


def best_runs(s: SweepData, prefix: str) -> list[Section]:
    return [
        Section(
            f"{prefix}Best runs (by {s.metric or 'no metric yet'})",
            text="best first; report.html lists every finished run: sort by any column, filter "
            "with the search box or a column's menu, hover a run for its id"
            if len(s.finished) > 1
            else None,
            table=tables.best_runs(s),
            html_table=tables.best_runs(s, MAX_ROWS),
        )
    ]


def over_seeds(s: SweepData, prefix: str) -> list[Section]:
    seeds = tables.over_seeds(s)
    if seeds.empty:
        return []
    return [
        Section(
            f"{prefix}Settings averaged over seeds (by mean {s.metric or 'no metric yet'})",
            text="each setting's runs over its seeds; std is the seed-to-seed spread",
            table=seeds,
        )
    ]


def effects(s: SweepData, prefix: str) -> list[Section]:
    metric = s.metric or "no metric yet"
    out = [
        Section(f"{prefix}Effect of {group} on {metric}", level=3, table=table)
        for group, table in tables.effects(s).items()
    ]
    note = figures.drawn_note(s)
    out += [
        Section(f"{prefix}Effect of each setting", text=note or None, figure=fig)
        for fig in [figures.effects_figure(s)]
        if fig is not None
    ]
    return out + [
        Section(
            f"{prefix}Settings against {metric}",
            text="drag along an axis to select a range, drag an axis to move it"
            + ("; " + note if note else ""),
            figure=fig,
        )
        for fig in [figures.parallel_figure(s)]
        if fig is not None
    ]


def curves(s: SweepData, prefix: str) -> list[Section]:
    return [
        Section(f"{prefix}Learning curves of the best runs", figure=fig)
        for fig in [figures.curves_figure([s])]
        if fig is not None
    ]


def scaling(s: SweepData, prefix: str) -> list[Section]:
    sc = tables.scaling(s)
    if sc.empty:
        return []
    return [
        Section(
            f"{prefix}Throughput and scaling efficiency",
            text="efficiency = throughput(n) / (n x throughput(1 rank))",
            table=sc,
        )
    ]


def failures(s: SweepData, prefix: str) -> list[Section]:
    fail = tables.failures(s)
    return [
        Section(
            f"{prefix}Failures ({len(fail)})",
            table=fail if not fail.empty else None,
            text=None if not fail.empty else "none",
        )
    ]


def overview(sweeps: list[SweepData]) -> list[Section]:
    return [Section("Overview", table=tables.overview(sweeps))]


def compare(sweeps: list[SweepData]) -> list[Section]:
    return comparison(sweeps) if len(sweeps) > 1 else []


# The report is these sections in registration order: first those about all sweeps together,
# then, for each sweep, those about one sweep. Register yours the same way (it goes last):
#     SWEEP_SECTIONS.register("my_table", lambda s, prefix: [Section(f"{prefix}Mine", ...)])
REPORT_SECTIONS: Registry[Callable[[list[SweepData]], list[Section]]] = Registry("report section")
SWEEP_SECTIONS: Registry[Callable[[SweepData, str], list[Section]]] = Registry("report section")
for _name, _section in [("overview", overview), ("comparison", compare)]:
    REPORT_SECTIONS.register(_name, _section)
for _name, _section in [
    ("warnings", warnings),
    ("best_runs", best_runs),
    ("search", search_summary),
    ("over_seeds", over_seeds),
    ("effects", effects),
    ("curves", curves),
    ("confusion", confusion),
    ("scene_map", scene_map),
    ("scaling", scaling),
    ("failures", failures),
]:
    SWEEP_SECTIONS.register(_name, _section)


def sweep_sections(s: SweepData, prefix: str) -> list[Section]:
    """One sweep's sections, in registration order."""
    return [part for section in SWEEP_SECTIONS.in_order() for part in section(s, prefix)]


def sections(sweeps: list[SweepData]) -> list[Section]:
    """Every section of the report of these sweeps, in order."""
    out = [part for section in REPORT_SECTIONS.in_order() for part in section(sweeps)]
    for s in sweeps:
        out += sweep_sections(s, f"{s.name}: " if len(sweeps) > 1 else "")
    return out
