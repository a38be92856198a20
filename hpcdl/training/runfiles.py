"""The run directory's reads and writes for one run (the file contract is hpcdl.rundir).

Rank 0 alone calls them (through Ranks.root_decides, so that their errors reach every rank).
"""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from hpcdl import checkpoint, rundir, tensorboard
from hpcdl.config import TrainConfig, config_to_dict, parse_config
from hpcdl.errors import HpcdlError
from hpcdl.files import write_bytes_atomic


def _first_difference(old: Any, new: Any, path: str = "") -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            diff = _first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else key)
            if diff:
                return diff
        return None
    return None if old == new else f"{path}: {old!r} -> {new!r}"


def check_run_dir(run_dir: Path, config: TrainConfig) -> None:
    """A run directory belongs to one config: refuse to resume a different one in it."""
    stored = run_dir / rundir.CONFIG
    if not stored.exists():
        return
    import yaml

    old = yaml.safe_load(stored.read_text()) or {}
    try:  # a setting added to hpcdl since the folder was written counts with its default
        old = config_to_dict(parse_config(old, str(stored)))
    except HpcdlError:
        pass  # not a config this hpcdl reads: compared as written
    new = config_to_dict(config)
    old.pop("run_dir", None)
    new.pop("run_dir", None)
    diff = _first_difference(old, new)
    if diff:
        raise HpcdlError(
            f"{run_dir} holds a run with a different config ({diff}); "
            "use another --run-dir or delete that folder"
        )


def resolve_run_dir(config: TrainConfig, config_path: str | None, override: str | None) -> Path:
    """--run-dir, else the config's run_dir, else results/<config file stem>."""
    if override:
        return Path(override).resolve()
    if config.run_dir:
        return Path(config.run_dir).resolve()
    return (Path("results") / Path(config_path or "run").stem).resolve()


@dataclasses.dataclass
class Progress:
    """Where a run stands, as its checkpoints record it: epochs done, steps done of the next one
    and their sums over all ranks (loss, correct, data wait, seconds), the best monitored loss."""

    epoch: int = 0
    step: int = 0
    best_loss: float = math.inf
    best_epoch: int = 0
    partial_loss: float = 0.0
    partial_correct: float = 0.0
    partial_wait: float = 0.0
    partial_seconds: float = 0.0

    @property
    def partial(self) -> list[float]:
        return [self.partial_loss, self.partial_correct, self.partial_wait, self.partial_seconds]

    def within_epoch(self, step: int, partial: Any) -> Progress:
        """This progress plus `step` steps of the next epoch whose sums are `partial`."""
        loss, correct, wait, seconds = partial
        return dataclasses.replace(
            self,
            step=step,
            partial_loss=loss,
            partial_correct=correct,
            partial_wait=wait,
            partial_seconds=seconds,
        )

    def finish_epoch(self, epoch: int, monitored: float) -> bool:
        """Record `epoch` as done; True when its monitored loss is the best so far."""
        improved = monitored < self.best_loss
        if improved:
            self.best_loss, self.best_epoch = monitored, epoch
        self.epoch, self.step = epoch, 0
        self.partial_loss = self.partial_correct = self.partial_wait = self.partial_seconds = 0.0
        return improved


class RunFiles:
    """One run's directory: config check, restore, metrics, checkpoints, result (rank 0)."""

    def __init__(self, path: Path, config: TrainConfig) -> None:
        self.path, self.config = path, config
        self.checkpoints = path / rundir.CHECKPOINTS

    def finished_result(self) -> dict[str, Any] | None:
        """The result of a finished run in this directory (None if none); refuses another config."""
        check_run_dir(self.path, self.config)
        path = self.path / rundir.RESULT
        return rundir.read_json(path) if path.exists() else None

    def open(self, model: Any, optimizer: Any) -> Progress:
        """Write the config, clear an old failure, restore the last checkpoint, drop later lines."""
        self.path.mkdir(parents=True, exist_ok=True)
        rundir.write_yaml_atomic(
            self.path / rundir.CONFIG, {**config_to_dict(self.config), "run_dir": str(self.path)}
        )
        (self.path / rundir.FAILURE).unlink(missing_ok=True)
        progress = Progress()
        if (self.checkpoints / "last.h5").exists():
            attrs = checkpoint.load(self.checkpoints / "last.h5", model, optimizer)
            names = {f.name for f in dataclasses.fields(Progress)}
            progress = Progress(**{k: _plain(v) for k, v in attrs.items() if k in names})
        rundir.truncate_metrics(self.path, progress.epoch)
        return progress

    def save_checkpoint(self, name: str, model: Any, optimizer: Any, progress: Progress) -> None:
        checkpoint.save(self.checkpoints / name, model, optimizer, dataclasses.asdict(progress))

    def load_best(self, model: Any) -> None:
        checkpoint.load(self.checkpoints / "best.h5", model, None)

    def write_epoch(
        self, record: dict[str, Any], model: Any, optimizer: Any, progress: Progress, best: bool
    ) -> None:
        """The metrics line (and its TensorBoard scalars) first, then the checkpoints (resume
        trims extra lines)."""
        rundir.append_metrics(self.path, record)
        tensorboard.log_epoch(self.path, record, self.hparams)
        if best:
            self.save_checkpoint("best.h5", model, optimizer, progress)
        self.save_checkpoint("last.h5", model, optimizer, progress)

    def write_stop(self, reason: str, model: Any, optimizer: Any, progress: Progress) -> None:
        """A mid-epoch checkpoint and why the run stopped."""
        self.save_checkpoint("last.h5", model, optimizer, progress)
        rundir.write_json_atomic(self.path / rundir.FAILURE, {"reason": reason})

    def hparams(self) -> dict[str, Any]:
        """The run's settings for TensorBoard's HParams dashboard: every scalar of its config,
        by dotted key (train.lr, model.dropout, ...)."""
        flat: dict[str, Any] = {}
        for section, values in config_to_dict(self.config).items():
            for key, value in (values or {}).items() if isinstance(values, dict) else ():
                if isinstance(value, (str, int, float, bool)):
                    flat[f"{section}.{key}"] = value
        return flat

    def train_seconds(self) -> float:
        """Training time over all sessions, from the metrics lines."""
        records, _ = rundir.read_metrics(self.path)
        return float(sum(r.get("epoch_seconds", 0.0) for r in records))

    def write_predictions(self, pixels: dict[str, Any] | None) -> None:
        """predictions.npz: every labelled pixel's prediction (scenes only; see EpochLoop)."""
        if pixels is not None:
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **pixels)
            write_bytes_atomic(self.path / rundir.PREDICTIONS, buffer.getvalue())

    def write_result(self, result: dict[str, Any]) -> None:
        rundir.write_json_atomic(self.path / rundir.RESULT, result)


def _plain(value: Any) -> Any:
    """An HDF5 attribute as a Python number."""
    return value.item() if hasattr(value, "item") else value
