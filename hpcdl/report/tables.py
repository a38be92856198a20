"""The report's tables: which settings won, by how much, at what cost, and what failed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hpcdl import rundir
from hpcdl.files import tail_lines
from hpcdl.report.data import SEED, SweepData

TOP = 10
OTHER_METRICS = (
    "test_accuracy",
    "test_mae",
    "average_accuracy",
    "kappa",
    "test_loss",
    "epochs_done",
    "ranks",
    "train_seconds",
)
# Class names where the data set has them (Indian Pines' ground truth classes 1..16, in order).
CLASS_NAMES = {
    "indian_pines": [
        "Alfalfa",
        "Corn-notill",
        "Corn-mintill",
        "Corn",
        "Grass-pasture",
        "Grass-trees",
        "Grass-pasture-mowed",
        "Hay-windrowed",
        "Oats",
        "Soybean-notill",
        "Soybean-mintill",
        "Soybean-clean",
        "Wheat",
        "Woods",
        "Buildings-Grass-Trees-Drives",
        "Stone-Steel-Towers",
    ],
    "mnist": [str(d) for d in range(10)],
}


def overview(sweeps: list[SweepData]) -> pd.DataFrame:
    rows = []
    for s in sweeps:
        states = s.summary["state"].value_counts()
        metric = s.metric
        column = s.finished[metric] if metric and len(s.finished) else pd.Series(dtype=float)
        best = column.min() if s.ascending else column.max()
        fine = ("FINISHED", "PRUNED", "RUNNING", "PENDING", "MISSING")
        active = sum(int(states.get(k, 0)) for k in fine)
        rows.append(
            {
                "sweep": s.name,
                "points": len(s.summary),
                "finished": int(states.get("FINISHED", 0)),
                "failed": len(s.summary) - active,
                "pruned": int(states.get("PRUNED", 0)),
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


def ranked(s: SweepData, n: int | None = None) -> pd.DataFrame:
    """Finished runs, best first by the ranking metric (the first n, or all)."""
    if s.metric is None or s.finished.empty:
        return pd.DataFrame()
    done = s.finished.sort_values(s.metric, ascending=s.ascending, kind="stable")
    return done if n is None else done.head(n)


def best_runs(s: SweepData, n: int | None = TOP) -> pd.DataFrame:
    """The best runs: each named by its varying settings, the ranking metric, then the others."""
    done = ranked(s, n)
    if done.empty:
        return done
    table = pd.DataFrame({"run": s.labels.loc[done["point"]].to_numpy()})
    for col in (s.metric, *(c for c in OTHER_METRICS if c != s.metric)):
        if col in done:
            table[col] = done[col].to_numpy()
    table["id"] = done["point"].to_numpy()
    return table


def over_seeds(s: SweepData, n: int = 2 * TOP) -> pd.DataFrame:
    """Each setting (every varied value but the seed) averaged over its seeds, best mean first.

    Empty unless the seed varies: then this, not one lucky run, says which setting won.
    """
    metric, done = s.metric, s.finished
    if metric is None or SEED not in done or done[SEED].nunique() < 2:
        return pd.DataFrame()
    keys = [c for c in s.varying if c != SEED]
    reported = ("test_accuracy", "average_accuracy", "kappa")  # the chosen setting's test figures
    extras = [c for c in reported if c != metric and c in done and done[c].notna().any()]
    grouped = done.groupby(keys, dropna=False) if keys else done.groupby(lambda _i: "all")
    table = grouped[metric].agg(["count", "mean", "std", "min", "max"])
    table.columns = ["seeds", f"{metric} mean", "std", "min", "max"]
    for extra in extras:
        table[f"{extra} mean"] = grouped[extra].mean()
    table = table.sort_values(f"{metric} mean", ascending=s.ascending).head(n).reset_index()
    return table.rename(columns={c: s.short[c] for c in keys} | {"index": "setting"})


def effects(s: SweepData) -> dict[str, pd.DataFrame]:
    """Per group of settings that vary together: the metric's count, mean, spread and range.

    Settings of a `zip` share one table; settings that never vary have none.
    """
    metric, done = s.metric, s.finished
    if metric is None or done.empty:
        return {}
    out = {}
    for group in s.groups:
        table = done.groupby(group)[metric].agg(["count", "mean", "std", "min", "max"])
        out[s.group_name(group)] = table.reset_index().rename(columns=s.short)
    return out


def failures(s: SweepData, n: int = 50) -> pd.DataFrame:
    bad = s.summary[~s.summary["state"].isin(["FINISHED", "PRUNED", "RUNNING", "PENDING"])]
    rows = []
    for _, row in bad.head(n).iterrows():
        rows.append(
            {
                "run": s.labels.get(row["point"], row["point"]),
                "state": row["state"],
                "reason": row.get("reason") if isinstance(row.get("reason"), str) else "",
                "nodes": row.get("nodes") if isinstance(row.get("nodes"), str) else "",
                "log tail": log_tail(s.folder / row["point"] / "job.out"),
                "id": row["point"],
            }
        )
    return pd.DataFrame(rows)


def log_tail(path: Path, lines: int = 5) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(tail_lines(path, 8192)[-lines:]) or "(empty log)"


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


def class_names(result: dict, count: int) -> list[str]:
    """The data set's class names, else numbers (Indian Pines numbers its classes from 1)."""
    data = result.get("data")
    names = CLASS_NAMES.get(data, [])
    if len(names) == count:
        return names
    first = 1 if data == "indian_pines" else 0
    return [str(i) for i in range(first, first + count)]


def read_result(s: SweepData, point: str) -> dict:
    """A run's result.json ({} when unreadable or absent)."""
    try:
        return rundir.read_json(s.folder / point / rundir.RESULT)
    except (OSError, ValueError):
        return {}


def best_result(s: SweepData) -> tuple[str, dict]:
    """The best run's id and result."""
    best = ranked(s, 1)
    if best.empty:
        return "", {}
    point = best["point"].iloc[0]
    return point, read_result(s, point)


def confusion(result: dict) -> tuple[np.ndarray, list[str]] | None:
    """The confusion matrix (rows: true class) and the class names, if the result has one."""
    matrix = np.array(result.get("confusion_matrix", []))
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or not matrix.size:
        return None
    return matrix, class_names(result, len(matrix))


def per_class(result: dict) -> pd.DataFrame:
    """Per-class test samples and accuracy of one run (empty when there is no matrix)."""
    found = confusion(result)
    if found is None or "per_class_accuracy" not in result:
        return pd.DataFrame()
    matrix, names = found
    return pd.DataFrame(
        {
            "class": names,
            "test_samples": matrix.sum(axis=1).astype(int),
            "accuracy": result["per_class_accuracy"],
        }
    )


def scene_pixels(s: SweepData, point: str) -> dict[str, np.ndarray] | None:
    """A run's predictions.npz (every labelled pixel of its scene), None when it has none."""
    try:
        with np.load(s.folder / point / rundir.PREDICTIONS) as found:
            pixels = {key: found[key] for key in ("coords", "truth", "predicted", "split", "shape")}
    except (OSError, ValueError, KeyError):
        return None
    return pixels
