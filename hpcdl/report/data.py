"""The sweep's tables as the report reads them, and the names it gives settings and runs."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from hpcdl.errors import HpcdlError

# The metric that ranks runs: the first of these that the sweep has. Change it here only.
# Validation first: hyperparameters are chosen on validation data, the test set is reported for
# the chosen setting; a sweep without validation data is ranked on test and the report says so.
RANK_METRICS = ("val_accuracy", "val_mae", "test_accuracy", "test_mae", "final_accuracy")
SELECTS_ON_TEST = {"test_accuracy", "test_mae"}
LOWER_IS_BETTER = {"val_mae", "test_mae"}  # regression's errors
SEED = "hp.train.seed"


@dataclass
class SweepData:
    name: str
    folder: Path
    summary: pd.DataFrame
    curves: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    search: dict = field(default_factory=dict)  # the spec's search section ({} for old sweeps)

    @property
    def hp_columns(self) -> list[str]:
        return [c for c in self.summary.columns if c.startswith("hp.")]

    @cached_property
    def metric(self) -> str | None:
        """The ranking column: a search's own metric (its tested model's value), else the first
        of RANK_METRICS that the sweep has."""
        wanted = self.search.get("metric")
        if wanted and wanted != "val_accuracy":  # val_accuracy: the RANK_METRICS default
            column = wanted if wanted in self.summary else f"final_{wanted}"
            if column in self.summary and self.summary[column].notna().any():
                return column
        for name in RANK_METRICS:
            if name in self.summary and self.summary[name].notna().any():
                return name
        return None

    @property
    def ascending(self) -> bool:
        """Whether smaller is better for the ranking metric (a search that minimises it)."""
        if self.metric in RANK_METRICS:
            return self.metric in LOWER_IS_BETTER
        return self.search.get("direction") == "minimize"

    @property
    def finished(self) -> pd.DataFrame:
        return self.summary[self.summary["state"] == "FINISHED"]

    @cached_property
    def varying(self) -> list[str]:
        """The settings that take at least two values in this sweep."""
        return [c for c in self.hp_columns if self.summary[c].nunique(dropna=False) >= 2]

    @cached_property
    def groups(self) -> list[list[str]]:
        """Varying settings grouped by whether they vary together (a `zip`), in column order."""
        return setting_groups(self.summary, self.varying)

    @cached_property
    def short(self) -> dict[str, str]:
        """Each setting's display name: its last dotted part unless two settings share it."""
        return short_names(self.hp_columns)

    @cached_property
    def labels(self) -> pd.Series:
        """Each point named by its varying settings (`lr=0.001 window=9 seed=2`), by point id."""
        return point_labels(self.summary, self.varying, self.short)

    def group_name(self, group: list[str]) -> str:
        return " / ".join(self.short[c] for c in group)


def short_names(columns: list[str]) -> dict[str, str]:
    last = [c.rsplit(".", 1)[-1] for c in columns]
    return {
        c: name if last.count(name) == 1 else c.removeprefix("hp.")
        for c, name in zip(columns, last, strict=True)
    }


def setting_groups(table: pd.DataFrame, columns: list[str]) -> list[list[str]]:
    """Columns whose values determine each other one to one across the rows share a group."""
    codes = {c: pd.factorize(table[c].astype(str))[0] for c in columns}
    groups: list[list[str]] = []
    for col in columns:
        for group in groups:
            head = group[0]
            pairs = len(set(zip(codes[head], codes[col], strict=True)))
            if pairs == codes[head].max() + 1 == codes[col].max() + 1:
                group.append(col)
                break
        else:
            groups.append([col])
    return groups


def fmt(value) -> str:
    """A value as a short text: floats to 4 significant digits, NaN as empty."""
    if isinstance(value, float | np.floating):
        return "" if np.isnan(value) else f"{value:.4g}"
    return str(value)


def point_labels(table: pd.DataFrame, columns: list[str], short: dict[str, str]) -> pd.Series:
    if not columns:
        return pd.Series(table["point"].to_numpy(), index=table["point"])
    parts = [short[c] + "=" + table[c].map(fmt) for c in columns]
    label = parts[0].str.cat(parts[1:], sep=" ") if len(parts) > 1 else parts[0]
    return pd.Series(label.to_numpy(), index=table["point"])


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
    try:
        curves = pd.read_csv(folder / "curves.csv")
    except (FileNotFoundError, pd.errors.EmptyDataError):
        curves = pd.DataFrame()
    search = (manifest.spec or {}).get("search") or {}
    data = SweepData(manifest.name, folder, summary, curves, notes, search)
    if data.metric in SELECTS_ON_TEST:
        data.notes.append(
            f"runs are ranked by {data.metric}: they have no validation metric, so this selects "
            "on the test set and overstates the result (give the data a validation split, e.g. "
            "data.validation_split)"
        )
    return data
