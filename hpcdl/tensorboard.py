"""TensorBoard event files for a run directory, written without TensorFlow.

    <run_dir>/tb/events.out.tfevents.*             the run's settings (HParams dashboard)
    <run_dir>/tb/train/events.out.tfevents.*       epoch_loss, epoch_accuracy, epoch_lr, ...
    <run_dir>/tb/validation/events.out.tfevents.*  epoch_loss, epoch_accuracy (from val_*)

The layout and tag names are those of Keras' own TensorBoard callback, so training and
validation curves share a chart; the step is hpcdl's epoch number (from 1).
`tensorboard --logdir results/<sweep>` shows one run per point, named by its folder.

How it is written: tensorboard's protobuf messages and its RecordWriter, one event file per
process and folder, flushed after every epoch. `tensorboard.summary.Writer` (and the
EventFileWriter behind it, also used by PyTorch) was not chosen: it reaches the file system
through `tensorboard.compat.tf`, which imports TensorFlow whenever it is installed (seconds,
and a framework inside a script that may use another one), and it writes from a background
thread that flushes every 120 s, so a killed job loses its last epochs. The hyperparameters use
`tensorboard.plugins.hparams.summary_v2.hparams_pb`, which needs no TensorFlow either.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.summary.writer.record_writer import RecordWriter

TB_DIR = "tb"
GROUPS = ("train", "validation")
NOT_SCALARS = {"epoch", "time", "ranks", "steps"}  # bookkeeping in metrics.jsonl, not curves

_file_numbers = itertools.count()
_runs: dict[Path, RunWriter] = {}


class EventFile:
    """One new event file in `folder`, named the way TensorFlow names them."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        name = (
            f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
            f"{os.getpid()}.{next(_file_numbers)}"
        )
        self._records = RecordWriter(open(folder / name, "ab"))  # open for the process
        self.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def write(self, event: event_pb2.Event) -> None:
        self._records.write(event.SerializeToString())

    def flush(self) -> None:
        self._records.flush()


def flat_hparams(settings: dict[str, Any], prefix: str = "") -> dict[str, bool | float | str]:
    """Nested settings as dotted names with values the HParams dashboard takes."""
    flat: dict[str, bool | float | str] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_hparams(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        elif value is not None:
            flat[name] = str(value)
    return flat


class RunWriter:
    """Scalars per epoch for one run directory (rank 0 only)."""

    def __init__(self, run_dir: Path, hparams: dict[str, Any]) -> None:
        self.folder = Path(run_dir) / TB_DIR
        self._files: dict[str, EventFile] = {}
        self.last_epoch: int | None = None
        if hparams:
            root = EventFile(self.folder)
            summary = hparams_summary.hparams_pb(flat_hparams(hparams))
            root.write(event_pb2.Event(wall_time=time.time(), summary=summary))
            root.flush()

    def log_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        """Write the numeric metrics of one epoch: val_* under validation/, the rest under
        train/. A process's first epoch, and an epoch logged again, first mark a restart at
        that step in every folder, which makes TensorBoard's readers drop the points an
        earlier attempt left from that step on (as metrics.jsonl does)."""
        events: dict[str, event_pb2.Event] = {}
        for name, value in metrics.items():
            if name in NOT_SCALARS or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            group, tag = ("validation", name[4:]) if name.startswith("val_") else ("train", name)
            tag = tag if tag.startswith("epoch_") else f"epoch_{tag}"
            event = events.setdefault(group, event_pb2.Event(wall_time=time.time(), step=epoch))
            event.summary.value.add(tag=tag, simple_value=float(value))
        restart = self.last_epoch is None or epoch <= self.last_epoch
        groups = set(events)
        if restart:
            groups.update(g for g in GROUPS if (self.folder / g).is_dir())
        for group in sorted(groups):
            if group not in self._files:
                self._files[group] = EventFile(self.folder / group)
            file = self._files[group]
            if restart:
                start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
                file.write(event_pb2.Event(wall_time=time.time(), step=epoch, session_log=start))
            if group in events:
                file.write(events[group])
            file.flush()
        self.last_epoch = epoch


def log_epoch(
    run_dir: Path, record: dict[str, Any], hparams: Callable[[], dict[str, Any]] = dict
) -> None:
    """Add one metrics.jsonl record to the run's TensorBoard files; the first call in a process
    opens them and writes `hparams()` for the HParams dashboard."""
    run_dir = Path(run_dir)
    if run_dir not in _runs:
        _runs[run_dir] = RunWriter(run_dir, hparams())
    _runs[run_dir].log_epoch(int(record["epoch"]), record)
