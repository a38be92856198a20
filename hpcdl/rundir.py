"""The run directory: the only contract between training, schedulers, the collector and reports.

    <run_dir>/config.yaml      resolved training config
    <run_dir>/metrics.jsonl    one JSON object per finished epoch (rank 0)
    <run_dir>/result.json      test metrics; its presence means "finished"
    <run_dir>/checkpoints/     last.h5 (each epoch) and best.h5
    <run_dir>/failure.json     why a run stopped early, when it knows

Every file that later steps trust is written atomically (temporary file + rename).
"""

from __future__ import annotations

import json
import math
import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from hpcdl import files
from hpcdl.errors import HpcdlError

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
RESULT = "result.json"
FAILURE = "failure.json"
PREDICTIONS = "predictions.npz"  # a scene's labelled pixels: coords, truth, predicted, split
CHECKPOINTS = "checkpoints"
TEXT_FIELDS = {FAILURE: ("reason", "error", "where", "time")}  # what readers print as they are


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` in one step: readers see the old or the new file, never half."""
    files.write_text_atomic(path, text)


fsync_dir = files.fsync_folder


class DamagedFile(HpcdlError, ValueError):
    """A run-directory file that exists but cannot be read as what it should be."""


def clean(value: Any) -> Any:
    """JSON has no NaN/inf: store them as null so every reader can parse the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def dumps(obj: Any) -> str:
    return json.dumps(clean(obj), allow_nan=False)


def json_text(obj: Any) -> str:
    """How JSON files are written: indented, NaN/inf as null, one final newline."""
    return json.dumps(clean(obj), indent=2, allow_nan=False) + "\n"


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json_text(obj))


def write_yaml_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, yaml.safe_dump(obj, sort_keys=False))


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file (result.json, failure.json, ...). A file that exists but is not one
    (truncated, not UTF-8, a list, a folder) raises DamagedFile, a ValueError and HpcdlError."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
        value = json.loads(text)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise DamagedFile(f"{path}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise DamagedFile(f"{path}: not UTF-8 text at byte {err.start}") from None
    except json.JSONDecodeError as err:
        raise DamagedFile(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from None
    except RecursionError:
        raise DamagedFile(f"{path}: nested too deeply") from None
    if not isinstance(value, dict):
        raise DamagedFile(f"{path}: expected a JSON object, got {type(value).__name__}")
    for key in TEXT_FIELDS.get(path.name, ()):
        if not isinstance(value.get(key, ""), str):
            raise DamagedFile(f"{path}: {key} is {type(value[key]).__name__}, expected text")
    return value


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one epoch's metrics as a single line (one write call, flushed)."""
    with open(Path(run_dir) / METRICS, "a") as f:
        f.write(dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(run_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The epoch records of a run and warnings about lines that could not be read."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return [], []
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        return [], [f"{path}: cannot read ({err.strerror})"]
    records, problems = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            problems.append(f"{path}:{n}: unreadable line (truncated write?)")
            continue
        if _is_epoch_record(record):
            records.append(record)
        else:
            problems.append(f"{path}:{n}: not an epoch record (a JSON object, integer epoch)")
    return records, problems


def _is_epoch_record(record: Any) -> bool:
    epoch = record.get("epoch", 0) if isinstance(record, dict) else None
    return isinstance(epoch, int) and not isinstance(epoch, bool)


def truncate_metrics(run_dir: Path, last_epoch: int) -> None:
    """Keep only records up to `last_epoch` (used on resume from that epoch's checkpoint)."""
    if not (Path(run_dir) / METRICS).exists():
        return
    records, _ = read_metrics(run_dir)
    kept = [r for r in records if r.get("epoch", 0) <= last_epoch]
    write_text_atomic(Path(run_dir) / METRICS, "".join(dumps(r) + "\n" for r in kept))


@contextmanager
def failure_recorded(run_dir: Path, enabled: bool = True) -> Iterator[None]:
    """On any error inside, write failure.json (reason, error type, where) and re-raise."""
    try:
        yield
    except BaseException as err:
        if enabled:
            last = traceback.extract_tb(err.__traceback__)[-1:] if err.__traceback__ else []
            where = f"{last[0].filename}:{last[0].lineno}" if last else ""
            lines = [x.strip() for x in str(err).splitlines() if x.strip()]
            # TensorFlow's messages open with a generic line and end with the real one
            reason = (lines[-1] if len(lines) > 1 else lines[0]) if lines else type(err).__name__
            if isinstance(err, KeyboardInterrupt):
                reason = "interrupted"
            try:
                write_json_atomic(
                    Path(run_dir) / FAILURE,
                    {
                        "reason": reason[:500],
                        "error": type(err).__name__,
                        "where": where,
                        "time": files.utc_now(),
                    },
                )
            except OSError:
                pass  # an unwritable folder must not hide the original error
        raise
