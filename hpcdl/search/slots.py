"""A trial slot's files in its run directory (next to hpcdl.rundir's):

trial.json    the study trial this slot runs: number, settings, attempt (written by the
              worker after it asked the study; a restarted job reattaches to it)
pruned.json   the pruner stopped the trial: after which epoch, at what metric value
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from hpcdl import rundir

TRIAL = "trial.json"
PRUNED = "pruned.json"
ATTEMPTS = "failed_trials"  # <sweep>/failed_trials/<slot>.trial<N>/: a failed trial's files
KEPT = {"job.out", "local.json", ".tmp"}  # the slot's own log and scheduler record stay


def read_trial(run_dir: Path) -> dict[str, Any] | None:
    """The slot's trial record, or None before its first trial (or if unreadable)."""
    path = Path(run_dir) / TRIAL
    try:
        record = rundir.read_json(path)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "number" in record else None


def point_overrides(entry: Any) -> dict[str, Any]:
    """A point's settings: its manifest overrides, or a slot's sampled ones once it has them."""
    if entry.overrides:
        return entry.overrides
    record = read_trial(Path(entry.run_dir))
    return dict(record.get("params") or {}) if record else {}


def pruned_epoch(run_dir: Path) -> int | None:
    """The epoch after which the pruner stopped this slot's trial (None: not pruned)."""
    try:
        epoch = rundir.read_json(Path(run_dir) / PRUNED).get("epoch")
    except (OSError, ValueError):
        return None
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None


def pruned_reason(run_dir: Path) -> str | None:
    """'pruned after epoch 2 (val_accuracy 0.41)' for a pruned trial, else None."""
    path = Path(run_dir) / PRUNED
    if not path.exists():
        return None
    try:
        record = rundir.read_json(path)
    except ValueError:
        return "pruned"
    value = record.get("value")
    shown = f" ({record.get('metric')} {value:.4g})" if isinstance(value, int | float) else ""
    return f"pruned after epoch {record.get('epoch')}{shown}"


def archive_attempt(run_dir: Path, number: int) -> Path:
    """Move a failed trial's files out of its slot (into <sweep>/failed_trials/) so that the
    slot starts its next trial clean; the slot's log and scheduler record stay."""
    target = run_dir.parent / ATTEMPTS / f"{run_dir.name}.trial{number}"
    target.mkdir(parents=True, exist_ok=True)
    for item in run_dir.iterdir():
        if item.name not in KEPT:
            shutil.move(str(item), str(target / item.name))
    return target
