"""Reports: which settings won, by how much, at what cost, and what failed and why.

`hpcdl report SWEEP [SWEEP ...]` writes one self-contained HTML file (plots embedded, opens
offline) and a Markdown summary. It reads the collector's tables (running `collect` first), so
it stays fast with thousands of runs: tables are capped, plots draw at most a few thousand lines.
"""

from __future__ import annotations

import base64
import html
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from hpcdl import rundir
from hpcdl.errors import HpcdlError

METRICS = ("test_accuracy", "best_val_accuracy", "final_accuracy")
MAX_LINES = 2000  # parallel-coordinates lines drawn
TOP = 10


@dataclass
class SweepData:
    name: str
    folder: Path
    summary: pd.DataFrame
    curves: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    @property
    def hp_columns(self) -> list[str]:
        return [c for c in self.summary.columns if c.startswith("hp.")]

    @property
    def metric(self) -> str | None:
        for name in METRICS:
            if name in self.summary and self.summary[name].notna().any():
                return name
        return None

    @property
    def finished(self) -> pd.DataFrame:
        return self.summary[self.summary["state"] == "FINISHED"]


def load(folder: str | Path, refresh: bool = True, out: Callable[[str], None] = print) -> SweepData:
    """The sweep's tables, collected afresh when possible (else the last collected ones)."""
    from hpcdl.collect import collect
    from hpcdl.manifest import load_manifest

    folder = Path(folder).resolve()
    manifest = load_manifest(folder)
    notes = []
    if refresh:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                collect(folder, out=out)
            notes += [str(w.message) for w in caught]
        except HpcdlError as err:
            if not (folder / "summary.csv").exists():
                raise
            notes.append(f"using the last collected tables: {err}")
    summary = pd.read_csv(folder / "summary.csv")
    curves_path = folder / "curves.csv"
    try:
        curves = pd.read_csv(curves_path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        curves = pd.DataFrame()
    return SweepData(manifest.name, folder, summary, curves, notes)


# ---------------------------------------------------------------- tables
def overview(sweeps: list[SweepData]) -> pd.DataFrame:
    rows = []
    for s in sweeps:
        states = s.summary["state"].value_counts()
        metric = s.metric
        best = s.finished[metric].max() if metric and len(s.finished) else np.nan
        rows.append(
            {
                "sweep": s.name,
                "points": len(s.summary),
                "finished": int(states.get("FINISHED", 0)),
                "failed": int(
                    len(s.summary)
                    - states.get("FINISHED", 0)
                    - states.get("RUNNING", 0)
                    - states.get("PENDING", 0)
                    - states.get("MISSING", 0)
                ),
                "running": int(states.get("RUNNING", 0)),
                "pending": int(states.get("PENDING", 0)),
                "gpu_hours": float(s.summary.get("gpu_hours", pd.Series(dtype=float)).sum()),
                "cpu_hours": float(s.summary.get("cpu_hours", pd.Series(dtype=float)).sum()),
                "train_hours": float(s.summary.get("train_seconds", pd.Series(dtype=float)).sum())
                / 3600,
                "metric": metric or "-",
                "best": best,
            }
        )
    return pd.DataFrame(rows)


def best_runs(s: SweepData, n: int = TOP) -> pd.DataFrame:
    metric = s.metric
    if metric is None or s.finished.empty:
        return pd.DataFrame()
    cols = ["point", *s.hp_columns, metric]
    cols += [
        c
        for c in ("average_accuracy", "kappa", "test_loss", "epochs_done", "ranks", "train_seconds")
        if c in s.summary and c != metric
    ]
    return s.finished.sort_values(metric, ascending=False).head(n)[cols]


SEED = "hp.train.seed"


def over_seeds(s: SweepData, n: int = 2 * TOP) -> pd.DataFrame:
    """Each setting (every varied value but the seed) averaged over its seeds, best mean first.

    Empty unless the seed varies: then this, not one lucky run, says which setting won.
    """
    metric, done = s.metric, s.finished
    if metric is None or SEED not in done or done[SEED].nunique() < 2:
        return pd.DataFrame()
    keys = [c for c in s.hp_columns if c != SEED and done[c].nunique() >= 2]
    values = [metric] + [
        c for c in ("average_accuracy", "kappa") if c in done and done[c].notna().any()
    ]
    grouped = done.groupby(keys, dropna=False) if keys else done.groupby(lambda _i: "all")
    table = grouped[metric].agg(["count", "mean", "std", "min", "max"])
    table.columns = ["seeds", f"{metric} mean", "std", "min", "max"]
    for extra in values[1:]:
        table[f"{extra} mean"] = grouped[extra].mean()
    table = table.sort_values(f"{metric} mean", ascending=False).head(n).reset_index()
    return table.rename(columns={c: c.removeprefix("hp.") for c in keys} | {"index": "setting"})


def effects(s: SweepData) -> dict[str, pd.DataFrame]:
    """Per hyperparameter with at least two values: the metric's mean, spread and best per value."""
    metric = s.metric
    out = {}
    if metric is None:
        return out
    done = s.finished
    for col in s.hp_columns:
        if done[col].nunique() < 2:
            continue
        table = done.groupby(col)[metric].agg(["count", "mean", "std", "min", "max"])
        out[col] = table.reset_index().rename(columns={col: col.removeprefix("hp.")})
    return out


def failures(s: SweepData, n: int = 50) -> pd.DataFrame:
    bad = s.summary[~s.summary["state"].isin(["FINISHED", "RUNNING", "PENDING"])]
    rows = []
    for _, row in bad.head(n).iterrows():
        rows.append(
            {
                "point": row["point"],
                "state": row["state"],
                "reason": row.get("reason") if isinstance(row.get("reason"), str) else "",
                "log tail": log_tail(s.folder / row["point"] / "job.out"),
            }
        )
    return pd.DataFrame(rows)


def log_tail(path: Path, lines: int = 5) -> str:
    if not path.exists():
        return "(no log)"
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 8192))
        text = f.read().decode(errors="replace").splitlines()
    return "\n".join(text[-lines:]) or "(empty log)"


def scaling(s: SweepData) -> pd.DataFrame:
    """Throughput per number of ranks and efficiency against one rank, where ranks vary."""
    done = s.finished
    if "ranks" not in done or done["ranks"].nunique() < 2 or "final_samples_per_second" not in done:
        return pd.DataFrame()
    table = done.groupby("ranks")["final_samples_per_second"].median().reset_index()
    table.columns = ["ranks", "samples_per_second"]
    base = table.loc[table["ranks"] == 1, "samples_per_second"]
    if len(base):
        table["speed_up"] = table["samples_per_second"] / base.iloc[0]
        table["efficiency"] = table["speed_up"] / table["ranks"]
    return table


def per_class(s: SweepData) -> tuple[pd.DataFrame, dict]:
    """Per-class accuracy of the best run and its result (empty when there is no matrix)."""
    best = best_runs(s, 1)
    if best.empty:
        return pd.DataFrame(), {}
    try:
        result = rundir.read_json(s.folder / best["point"].iloc[0] / rundir.RESULT)
    except (OSError, ValueError):
        return pd.DataFrame(), {}
    matrix = np.array(result.get("confusion_matrix", []))
    if matrix.ndim != 2:
        return pd.DataFrame(), {}
    first = 1 if result.get("data") == "indian_pines" else 0  # Indian Pines classes are 1..16
    table = pd.DataFrame(
        {
            "class": np.arange(first, first + len(matrix)),
            "test_samples": matrix.sum(axis=1).astype(int),
            "accuracy": result["per_class_accuracy"],
        }
    )
    return table, result


# ---------------------------------------------------------------- plots
def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plot_effects(s: SweepData) -> str | None:
    import matplotlib.pyplot as plt

    metric, done = s.metric, s.finished
    cols = [c for c in s.hp_columns if done[c].nunique() >= 2]
    if not cols or metric is None:
        return None
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 3), squeeze=False)
    for ax, col in zip(axes[0], cols, strict=True):
        values = sorted(done[col].dropna().unique(), key=lambda v: (str(type(v)), v))
        groups = [done.loc[done[col] == v, metric].dropna().to_numpy() for v in values]
        ax.boxplot(groups, showfliers=False)
        for i, g in enumerate(groups, 1):
            ax.scatter(
                np.full(len(g), i) + np.random.default_rng(i).uniform(-0.15, 0.15, len(g)),
                g,
                s=8,
                alpha=0.5,
            )
        ax.set_xticks(
            range(1, len(values) + 1),
            [f"{v:g}" if isinstance(v, float) else str(v) for v in values],
            rotation=30,
        )
        ax.set_title(col.removeprefix("hp."), fontsize=9)
    axes[0][0].set_ylabel(metric)
    return _png(fig)


def plot_curves(sweeps: list[SweepData], per_sweep: int = 5) -> str | None:
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.4))
    drawn = 0
    for s in sweeps:
        best = best_runs(s, per_sweep)
        if best.empty or s.curves.empty:
            continue
        for point in best["point"]:
            c = s.curves[s.curves["point"] == point].sort_values("epoch")
            label = f"{s.name}/{point}" if len(sweeps) > 1 else point
            ax_loss.plot(c["epoch"], c["loss"], label=label)
            acc = (
                "val_accuracy"
                if "val_accuracy" in c and c["val_accuracy"].notna().any()
                else "accuracy"
            )
            ax_acc.plot(c["epoch"], c[acc], label=label)
            ax_acc.set_ylabel(acc)
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    from matplotlib.ticker import MaxNLocator

    ax_loss.set_xlabel("epoch"), ax_loss.set_ylabel("training loss"), ax_loss.set_yscale("log")
    ax_acc.set_xlabel("epoch")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.legend(fontsize=7, loc="lower right")
    return _png(fig)


def plot_parallel(s: SweepData) -> str | None:
    """Parallel coordinates: every setting scaled to [0, 1], lines coloured by the metric."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    metric, done = s.metric, s.finished
    cols = [c for c in s.hp_columns if done[c].nunique() >= 2]
    if metric is None or not cols or len(done) < 2:
        return None
    done = done.sort_values(metric).tail(MAX_LINES)
    axes_values, labels = [], []
    for col in cols:
        values = sorted(done[col].dropna().unique(), key=lambda v: (str(type(v)), v))
        codes = done[col].map({v: i for i, v in enumerate(values)}).to_numpy(dtype=float)
        axes_values.append(codes / max(1, len(values) - 1))
        labels.append(col.removeprefix("hp."))
    score = done[metric].to_numpy(dtype=float)
    lo, hi = np.nanmin(score), np.nanmax(score)
    axes_values.append((score - lo) / (hi - lo) if hi > lo else np.full(len(score), 0.5))
    labels.append(metric)
    ys = np.column_stack(axes_values)
    xs = np.arange(ys.shape[1])
    segments = [np.column_stack([xs, row]) for row in ys]
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(labels)), 3.4))
    lines = LineCollection(segments, array=score, cmap="viridis", linewidths=1, alpha=0.6)
    ax.add_collection(lines)
    ax.set_xlim(-0.1, xs[-1] + 0.1), ax.set_ylim(-0.05, 1.05)
    ax.set_xticks(xs, labels, rotation=20)
    ax.set_yticks([])
    for x in xs:
        ax.axvline(x, color="grey", lw=0.5)
    fig.colorbar(lines, ax=ax, label=metric)
    return _png(fig)


# ---------------------------------------------------------------- output
CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;vertical-align:top}
th{background:#f0f0f0}td.l,th.l{text-align:left}pre{margin:0;font-size:11px;text-align:left}
h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:1.6em}.note{color:#a60}"""


def _fmt(v) -> str:
    if isinstance(v, float | np.floating):
        return "" if np.isnan(v) else f"{v:.4g}"
    return str(v)


def html_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p>(none)</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for _, row in df.iterrows():
        cells = []
        for v in row:
            text = html.escape(_fmt(v))
            cells.append(f"<td><pre>{text}</pre></td>" if "\n" in text else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "(none)\n"
    cells = [
        [_fmt(v).replace("\n", " / ").replace("|", "\\|") for v in row]
        for row in df.itertuples(index=False)
    ]
    head = "| " + " | ".join(map(str, df.columns)) + " |\n"
    rule = "|" + "---|" * len(df.columns) + "\n"
    return head + rule + "".join("| " + " | ".join(r) + " |\n" for r in cells)


def build(sweeps: list[SweepData]) -> tuple[str, str]:
    """(html, markdown) of the report."""
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    names = ", ".join(s.name for s in sweeps)
    h = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>hpcdl report: "
        f"{html.escape(names)}</title><style>{CSS}</style></head><body>",
        f"<h1>hpcdl report: {html.escape(names)}</h1><p>generated {when}</p>",
    ]
    md = [f"# hpcdl report: {names}\n\ngenerated {when}\n"]

    def section(
        title: str,
        df: pd.DataFrame | None = None,
        img: str | None = None,
        text: str | None = None,
        level: int = 2,
    ):
        if df is None and img is None and text is None:
            return  # nothing to show (e.g. no setting varies)
        h.append(f"<h{level}>{html.escape(title)}</h{level}>")
        md.append(f"\n{'#' * level} {title}\n\n")
        if text:
            h.append(f"<p>{html.escape(text)}</p>")
            md.append(text + "\n\n")
        if df is not None:
            h.append(html_table(df))
            md.append(md_table(df))
        if img:
            h.append(f"<img alt='{html.escape(title)}' src='data:image/png;base64,{img}'>")
            md.append("(plot in report.html)\n")

    section("Overview", overview(sweeps))
    if len(sweeps) > 1:
        rows = []
        for s in sweeps:
            best = best_runs(s, 1)
            if not best.empty:
                rows.append({"sweep": s.name, **best.iloc[0].to_dict()})
        section("Best run of each sweep", pd.DataFrame(rows))
        section("Learning curves of each sweep's best runs", img=plot_curves(sweeps, 3))
    for s in sweeps:
        prefix = f"{s.name}: " if len(sweeps) > 1 else ""
        for note in s.notes[:20]:
            h.append(f"<p class='note'>warning: {html.escape(note)}</p>")
            md.append(f"> warning: {note}\n\n")
        metric = s.metric or "no metric yet"
        section(f"{prefix}Best runs (by {metric})", best_runs(s))
        seeds = over_seeds(s)
        if not seeds.empty:
            section(
                f"{prefix}Settings averaged over seeds (by mean {metric})",
                seeds,
                text="each setting's runs over its seeds; std is the seed-to-seed spread",
            )
        for col, table in effects(s).items():
            section(f"{prefix}Effect of {col.removeprefix('hp.')} on {metric}", table, level=3)
        section(f"{prefix}Effect of each setting", img=plot_effects(s))
        section(f"{prefix}Learning curves of the best runs", img=plot_curves([s]))
        section(f"{prefix}Settings against {metric}", img=plot_parallel(s))
        pc, result = per_class(s)
        if not pc.empty:
            text = (
                f"best run {best_runs(s, 1)['point'].iloc[0]}: overall accuracy "
                f"{result['overall_accuracy']:.4f}, average accuracy "
                f"{result['average_accuracy']:.4f}, kappa {result['kappa']:.4f}"
            )
            section(f"{prefix}Per-class accuracy of the best run", pc, text=text)
        sc = scaling(s)
        if not sc.empty:
            section(
                f"{prefix}Throughput and scaling efficiency",
                sc,
                text="efficiency = throughput(n) / (n x throughput(1 rank))",
            )
        fail = failures(s)
        section(
            f"{prefix}Failures ({len(fail)})",
            fail if not fail.empty else None,
            text=None if not fail.empty else "none",
        )
    h.append("</body></html>")
    return "\n".join(h), "".join(md)


def report(
    folders: list[str | Path],
    out_dir: str | Path | None = None,
    refresh: bool = True,
    out: Callable[[str], None] = print,
) -> tuple[Path, Path]:
    """Write report.html and report.md for the sweeps (into the sweep's folder, or out_dir)."""
    sweeps = [load(f, refresh, out) for f in folders]
    target = (
        Path(out_dir)
        if out_dir
        else (
            sweeps[0].folder
            if len(sweeps) == 1
            else sweeps[0].folder.parent / ("compare-" + "-".join(s.name for s in sweeps))[:120]
        )
    )
    target.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    page, summary = build(sweeps)
    rundir.write_text_atomic(target / "report.html", page)
    rundir.write_text_atomic(target / "report.md", summary)
    out(f"report: {target / 'report.html'} and report.md")
    return target / "report.html", target / "report.md"
