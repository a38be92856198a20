"""What a search's report adds (random and Optuna searches): how fast it found its best, which
settings mattered, which trials were pruned and when, and the setting it chose."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from hpcdl.report.data import SweepData

ENDED = ("FINISHED", "PRUNED")


def is_search(s: SweepData) -> bool:
    return s.search.get("method", "grid") != "grid"


def trials(s: SweepData) -> pd.DataFrame:
    """The trials in the order they ran (trial number, else point order) with the epochs spent
    so far and the best metric so far (finished trials only: a pruned one's value is partial)."""
    table = s.summary.copy()
    if "trial" in table and table["trial"].notna().any():
        table = table.sort_values("trial", kind="stable")
    metric = s.metric
    table["epochs_spent"] = table["epochs_done"].fillna(0).cumsum()
    if metric is None:
        table["best_so_far"] = np.nan
        return table
    value = table[metric].where(table["state"] == "FINISHED")
    best = value.cummin() if s.ascending else value.cummax()
    table["best_so_far"] = best.ffill()  # a pruned or failed trial keeps the best before it
    return table


def importance(s: SweepData) -> pd.DataFrame:
    """Each searched setting's importance for the metric (Optuna's fANOVA evaluator), computed
    from the finished trials; empty when there are too few to say."""
    import optuna

    space, metric = s.search.get("space") or {}, s.metric
    done = s.finished
    if metric is None or len(done) < 3 or not space:
        return pd.DataFrame()
    distributions = {key: _distribution(optuna, entry) for key, entry in space.items()}
    study = optuna.create_study(direction="minimize" if s.ascending else "maximize")
    for _, row in done.iterrows():
        params = {key: _param(row.get(f"hp.{key}"), entry) for key, entry in space.items()}
        if any(v is None for v in params.values()) or pd.isna(row[metric]):
            continue
        study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions=distributions, value=float(row[metric])
            )
        )
    try:
        found = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):
        return pd.DataFrame()
    return pd.DataFrame({"setting": list(found), "importance": list(found.values())})


def _distribution(optuna: Any, entry: dict[str, list[Any]]) -> Any:
    ((kind, values),) = entry.items()
    if kind == "choice":
        return optuna.distributions.CategoricalDistribution([_plain(v) for v in values])
    if kind == "int":
        return optuna.distributions.IntDistribution(values[0], values[1])
    return optuna.distributions.FloatDistribution(
        float(values[0]), float(values[1]), log=kind == "loguniform"
    )


def _plain(value: Any) -> Any:
    """A choice as Optuna can hold it (lists and mappings as JSON text, as the summary has)."""
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


def _param(value: Any, entry: dict[str, list[Any]]) -> Any:
    """A summary cell back as the value of its distribution (None when missing)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    ((kind, values),) = entry.items()
    if kind == "choice":
        for choice in values:
            if _plain(choice) == value or str(_plain(choice)) == str(value):
                return _plain(choice)
        try:
            return _plain(json.loads(str(value)))
        except ValueError:
            return None
    return int(value) if kind == "int" else float(value)


def pruned(s: SweepData) -> pd.DataFrame:
    """The pruned trials: where they stopped and what they had reached."""
    table = s.summary[s.summary["state"] == "PRUNED"]
    if table.empty:
        return pd.DataFrame()
    out = pd.DataFrame({"run": s.labels.loc[table["point"]].to_numpy()})
    if "trial" in table:
        out.insert(0, "trial", table["trial"].to_numpy())
    stopped = table["pruned_at_epoch"] if "pruned_at_epoch" in table else table["epochs_done"]
    out["pruned after epoch"] = stopped.to_numpy()
    reached = f"final_{s.search.get('metric', 'val_accuracy')}"  # its last epoch's value
    if reached in table:
        out[reached] = table[reached].to_numpy()
    out["reason"] = table["reason"].fillna("").to_numpy()
    return out
