"""Per-epoch metrics from Keras' own `fit` progress output, for scripts that use nothing of hpcdl.

Keras 2 (tf_keras) and Keras 3 print, per epoch, a header and progress lines:

    Epoch 3/20
    469/469 [==========] - 12s 25ms/step - loss: 0.1234 - accuracy: 0.9612 - val_loss: ...
    469/469 - 12s - loss: 0.1234 - accuracy: 0.9612 - val_loss: 0.0811 - ...   (verbose=2)
    469/469 ━━━━━━━━━━ 12s 25ms/step - accuracy: 0.9612 - loss: 0.1234 - ...   (Keras 3)

with carriage returns and backspaces between the updates of one epoch and colour codes in
Keras 3. An epoch's record comes from its first finished progress line (step count reached, no
ETA), plus the val_* values of a later one where Keras printed them separately; lines of
`evaluate`/`predict` after the last epoch are not taken. Unfinished epochs give no record. An
epoch printed again (a restarted script) replaces that epoch and all later ones, as
hpcdl.session does in metrics.jsonl. Names follow metrics.jsonl: acc -> accuracy,
learning_rate -> lr; the epoch is Keras' number (from 1).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

KERAS_NAMES = {"acc": "accuracy", "val_acc": "val_accuracy", "learning_rate": "lr"}

_SEGMENTS = re.compile(r"[\r\n\x08]+")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_HEADER = re.compile(r"\s*Epoch\s+(\d+)/(\d+)\s*")
_PROGRESS = re.compile(r"\s*(\d+)/(\d+|Unknown)(?=\s)(.*)")
_METRIC = re.compile(
    r"(?:^|\s)([A-Za-z_]\w*):\s+([-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|nan|inf))(?=\s|$)"
)


def keras_metric_name(name: str) -> str:
    """A Keras log name in metrics.jsonl's words (acc -> accuracy, learning_rate -> lr)."""
    return KERAS_NAMES.get(name, name)


def _progress(segment: str) -> tuple[bool | None, dict[str, float]] | None:
    """(finished: True/False, None when the total is unknown; metrics) of a progress line."""
    match = _PROGRESS.fullmatch(segment)
    if not match:
        return None
    done, total, rest = match.groups()
    metrics = {
        keras_metric_name(name): float(value)
        for name, value in _METRIC.findall(rest)
        if name != "ETA"
    }
    if not metrics:
        return None
    finished = None if total == "Unknown" else int(done) == int(total) and "ETA" not in rest
    return finished, metrics


def _epoch_record(lines: list[tuple[bool | None, dict[str, float]]]) -> dict[str, float] | None:
    """The metrics of one epoch from its progress lines, or None if it did not finish."""
    if not lines:
        return None
    if lines[0][0] is None:  # unknown step count (first epoch of a dataset): the last update
        unknown = [metrics for finished, metrics in lines if finished is None]
        return unknown[-1]
    finals = [metrics for finished, metrics in lines if finished]
    if not finals:
        return None
    record = dict(finals[0])
    if not any(name.startswith("val_") for name in record):
        later = [m for m in finals[1:] if any(name.startswith("val_") for name in m)]
        if later:
            record.update({k: v for k, v in later[0].items() if k.startswith("val_")})
    return record


def parse(text: str) -> list[dict[str, Any]]:
    """Per-epoch records ({"epoch": 3, "loss": ..., "val_accuracy": ...}) found in Keras
    output; [] when there are none. Never raises on odd text."""
    records: list[dict[str, Any]] = []
    epoch: int | None = None
    lines: list[tuple[bool | None, dict[str, float]]] = []

    def close_epoch() -> None:
        nonlocal records
        record = _epoch_record(lines) if epoch is not None else None
        if record is not None:
            records = [r for r in records if r["epoch"] < epoch]
            records.append({"epoch": epoch, **record})

    for segment in _SEGMENTS.split(_ANSI.sub("", text)):
        header = _HEADER.fullmatch(segment)
        if header:
            close_epoch()
            epoch, lines = int(header.group(1)), []
        elif epoch is not None:
            progress = _progress(segment)
            if progress:
                lines.append(progress)
    close_epoch()
    return records


def parse_file(path: str | Path) -> list[dict[str, Any]]:
    """parse() on a log file (job.out); [] when it cannot be read."""
    try:
        return parse(Path(path).read_text(errors="replace"))
    except OSError:
        return []
