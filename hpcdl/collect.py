"""Collect a sweep into tables: one row per point, and the per-epoch curves.

    <sweep>/summary.csv, summary.parquet   one row per point (settings, metrics, state, cost)
    <sweep>/curves.csv, curves.parquet     one row per point and epoch

Reads only files (run directories, the manifest) plus ONE scheduler accounting query, so it runs
from a login node, as the dependent job after the arrays, or on any machine that sees the folder.
Damaged runs (truncated metrics, missing result.json, NaN losses) get a state and a reason and a
warning; no row is ever dropped.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from hpcdl import logparse, rundir
from hpcdl.manifest import Manifest, load_manifest, now
from hpcdl.search.slots import point_overrides, pruned_epoch, read_trial
from hpcdl.spec import Resources
from hpcdl.states import ACTIVE_STATES, DONE_STATES
from hpcdl.sweep.status import statuses

SUMMARY = "summary"
CURVES = "curves"


NOT_METRICS = {"epoch", "time", "steps", "ranks"}  # metrics.jsonl keys that are not measurements
RESULT_OVERRIDES = {"train_seconds"}  # result.json's own figure wins over the sum of epochs


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def point_row(
    entry, status, resources: Resources
) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """The summary row, the curve rows and the warnings of one point."""
    run_dir = Path(entry.run_dir)
    record = status.record
    problems: list[str] = []
    row: dict[str, Any] = {
        "point": entry.id,
        "state": status.state,
        "reason": status.reason,
        "job": status.job,
    }
    overrides = point_overrides(entry)  # a search's trial slot: the settings it was given
    row.update({f"hp.{k}": v if not isinstance(v, list) else str(v) for k, v in overrides.items()})
    trial = read_trial(run_dir)
    if trial is not None:
        row["trial"] = trial["number"]
        row["pruned_at_epoch"] = pruned_epoch(run_dir)
    records, bad_lines = rundir.read_metrics(run_dir)
    problems += bad_lines
    if not records and not bad_lines:  # a script that logs nothing itself: Keras' fit output
        records = logparse.parse_file(run_dir / "job.out")
    curves = [
        {"point": entry.id, **{k: v for k, v in r.items() if not isinstance(v, list)}}
        for r in records
    ]
    row["epochs_done"] = max((r.get("epoch", 0) for r in records), default=0)
    if records:
        last = records[-1]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "samples_per_second"):
            row[f"final_{key}"] = _finite(last.get(key))
        for key, value in last.items():  # every other number the run logs, e.g. a user's metric
            if key not in NOT_METRICS and _is_number(value):
                row[f"final_{key}"] = _finite(value)
        vals = [_finite(r.get("val_accuracy")) for r in records]
        vals = [v for v in vals if v is not None]
        row["best_val_accuracy"] = max(vals) if vals else None
        row["val_accuracy"] = None  # the tested model's (set below from result.json's kept epoch)
        row["train_seconds"] = sum(_finite(r.get("epoch_seconds")) or 0.0 for r in records)
        if any("loss" in r and _finite(r["loss"]) is None for r in records):  # logged, not finite
            problems.append(f"{run_dir}: NaN or infinite loss")
            ended = row["state"] not in (*DONE_STATES, *ACTIVE_STATES)
            if ended and "nan" not in str(row["reason"]).lower():
                row["state"] = "FAILED"
                row["reason"] = "; ".join(x for x in (row["reason"], "loss became NaN") if x)
    result_path = run_dir / rundir.RESULT
    if result_path.exists():
        try:
            result = rundir.read_json(result_path)
        except ValueError:
            result = {}
            problems.append(f"{result_path}: unreadable")
            row["state"], row["reason"] = "FAILED", "result.json unreadable"
        for key, value in result.items():  # every scalar the run reports; lists stay in the file
            if key not in row or key in RESULT_OVERRIDES:
                if isinstance(value, (str, bool)) or _is_number(value):
                    row[key] = value
        for key in ("val_accuracy", "val_mae"):  # what a sweep is ranked on (classes / regression)
            if any(key in r for r in records):
                row[key] = tested_value(records, result.get("kept_epoch"), key)
    elif status.state == "FINISHED":
        problems.append(f"{run_dir}: no result.json")
    if record is not None:
        # the scheduler's allocation where it reports one, else what the spec asked for (local)
        cpus = record.cpus if record.cpus is not None else resources.ranks * resources.cpus_per_task
        gpus = record.gpus if record.gpus is not None else resources.nodes * resources.gpus_per_node
        row["scheduler_state"] = record.raw_state or record.state
        row["exit_code"] = record.exit_code
        row["start"], row["end"] = record.start, record.end
        row["elapsed_seconds"] = record.elapsed_seconds
        row["alloc_cpus"], row["alloc_gpus"] = cpus, gpus
        row["max_rss"] = record.max_rss
        row["nodes"] = record.node  # where it ran (sacct's NodeList, PBS exec_host, local host)
        hours = (record.elapsed_seconds or 0) / 3600
        row["cpu_hours"] = hours * cpus
        row["gpu_hours"] = hours * gpus
    return row, curves, problems


def tested_value(records: list[dict[str, Any]], kept_epoch: Any, key: str) -> float | None:
    """A validation metric of the model that was tested: the kept epoch's (keep: best), else
    the last epoch's. What sweeps rank on, so that the test set selects nothing."""
    chosen = [r for r in records if r.get("epoch") == kept_epoch] or records[-1:]
    return _finite(chosen[-1].get(key)) if chosen else None


def collect(sweep: str | Path, out: Callable[[str], None] = print) -> pd.DataFrame:
    """Build and write the sweep's summary and curves tables; returns the summary."""
    manifest: Manifest = load_manifest(sweep)
    states = {s.id: s for s in statuses(manifest)}  # the one scheduler query
    resources = Resources.model_validate(manifest.spec["resources"])
    rows, curves, problems = [], [], []
    for entry in manifest.points:
        row, point_curves, point_problems = point_row(entry, states[entry.id], resources)
        rows.append(row)
        curves += point_curves
        problems += point_problems
    summary = pd.DataFrame(rows)
    running = int(summary["state"].isin(ACTIVE_STATES).sum())
    sweep_dir = Path(manifest.sweep_dir)
    write_table(summary, sweep_dir / SUMMARY)
    write_table(pd.DataFrame(curves), sweep_dir / CURVES)
    rundir.write_json_atomic(
        sweep_dir / "collect.json",
        {
            "collected_at": now(),
            "points": len(summary),
            "partial": running > 0,
            "states": summary["state"].value_counts().to_dict(),
            "warnings": problems[:1000],
        },
    )
    for problem in problems:
        warnings.warn(problem, stacklevel=2)
    note = f" (partial: {running} point(s) still pending or running)" if running else ""
    out(f"collected {len(summary)} point(s) into {sweep_dir / SUMMARY}.csv{note}")
    return summary


def write_table(df: pd.DataFrame, stem: Path) -> None:
    """Write <stem>.csv and <stem>.parquet atomically (a reader never sees half a table)."""
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    rundir.write_text_atomic(stem.with_suffix(".csv"), buf.getvalue())
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return
    tmp = stem.with_name(f".{stem.name}.parquet.tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(stem.with_suffix(".parquet"))
