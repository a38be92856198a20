"""What a sweep is doing, for people and scripts: a live display (or plain lines), a table of
failed points, and the statuses as JSON.

Works on any list of point statuses with the fields id, state, reason, job, run_dir, label and
record (hpcdl.states.PointStatus; record: a JobRecord or None). A running point's epochs come from
its run directory, read cheaply and only for RUNNING points: the last lines of metrics.jsonl
("epoch": epochs finished, numbered from 1; "epoch_seconds" or "time") and train.epochs of
config.yaml. Either file may be missing (users' own scripts): what is not known is not shown.
"""

from __future__ import annotations

import io
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import yaml
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from hpcdl.states import DONE_STATES

FINISHED = "FINISHED"
ACTIVE = ("RUNNING", "PENDING")
# display order; failures after the live states, states not listed here after these
STATE_ORDER = (
    FINISHED,
    "RUNNING",
    "PENDING",
    "FAILED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "CANCELLED",
    "PREEMPTED",
    "LOST",
    "UNKNOWN",
    "UNCONFIRMED",
    "MISSING",
)
STYLES = {FINISHED: "green", "RUNNING": "cyan", "PENDING": "yellow", "MISSING": "dim"}
TAIL_BYTES = 65536  # at most this much of metrics.jsonl is read to find its last records
PLAIN_RUNNING_SHOWN = 3  # running points named in a plain line; the rest are counted


@dataclass(frozen=True)
class Epochs:
    """What a running point's files tell of its epochs; None: not known."""

    done: int | None = None  # epochs finished
    total: int | None = None  # epochs in all
    seconds: float | None = None  # how long the latest one took

    def text(self) -> str:
        """'3/10', '3' without a total, '' when nothing is known."""
        if self.done is None:
            return ""
        return f"{self.done}/{self.total}" if self.total else str(self.done)


# ---------------------------------------------------------------- reading run directories
def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def last_records(run_dir: str | Path, n: int = 2) -> list[dict[str, Any]]:
    """The last `n` complete records of <run_dir>/metrics.jsonl that have a whole "epoch",
    oldest first, from at most TAIL_BYTES read at its end."""
    try:
        with open(Path(run_dir) / "metrics.jsonl", "rb") as f:
            start = max(0, f.seek(0, os.SEEK_END) - TAIL_BYTES)
            f.seek(start)
            lines = f.read().splitlines()
    except OSError:
        return []
    found: list[dict[str, Any]] = []
    for line in reversed(lines[1:] if start > 0 else lines):  # the first may be cut
        try:
            record = json.loads(line)
        except ValueError:
            continue  # blank, or a line still being written
        if isinstance(record, dict) and _whole(record.get("epoch")):
            found.insert(0, record)
            if len(found) == n:
                break
    return found


def epoch_seconds(records: list[dict[str, Any]]) -> float | None:
    """How long the last epoch of `records` took: its epoch_seconds (hpcdl's loop), else the
    time between the last two records per epoch (hpcdl.session stamps each with its time)."""
    if not records:
        return None
    if _number(records[-1].get("epoch_seconds")):
        return float(records[-1]["epoch_seconds"])
    if len(records) < 2 or records[-1]["epoch"] <= records[-2]["epoch"]:
        return None
    try:
        ends = [datetime.fromisoformat(str(r.get("time"))) for r in records[-2:]]
        seconds = (ends[1] - ends[0]).total_seconds()
    except (TypeError, ValueError):
        return None
    return seconds / (records[-1]["epoch"] - records[-2]["epoch"]) if seconds >= 0 else None


def total_epochs(run_dir: str | Path) -> int | None:
    """train.epochs of <run_dir>/config.yaml, when it has one."""
    try:
        config = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    train = config.get("train") if isinstance(config, dict) else None
    epochs = train.get("epochs") if isinstance(train, dict) else None
    return epochs if _whole(epochs) and epochs > 0 else None


def read_epochs(run_dir: str | Path) -> Epochs:
    """A run's epochs from its files. With a total but no epoch logged yet, 0 are done."""
    records = last_records(run_dir)
    total = total_epochs(run_dir)
    done = records[-1]["epoch"] if records else (0 if total else None)
    return Epochs(done, total, epoch_seconds(records))


class EpochReader:
    """Epochs of running points, read again only when metrics.jsonl or config.yaml changed
    (two stat calls per running point)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[tuple, Epochs]] = {}

    def read(self, points: Sequence[Any]) -> dict[str, Epochs]:
        """Point id -> its Epochs, for the RUNNING points only."""
        return {p.id: self._epochs(str(p.run_dir)) for p in points if p.state == "RUNNING"}

    def _epochs(self, run_dir: str) -> Epochs:
        signature = tuple(_signature(Path(run_dir) / n) for n in ("metrics.jsonl", "config.yaml"))
        cached = self._cache.get(run_dir)
        if cached is not None and cached[0] == signature:
            return cached[1]
        epochs = read_epochs(run_dir)
        self._cache[run_dir] = (signature, epochs)
        return epochs


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


# ---------------------------------------------------------------- summaries
def state_counts(points: Sequence[Any]) -> dict[str, int]:
    """Points per state, in display order (FINISHED, RUNNING, PENDING, then failures)."""
    found: dict[str, int] = {}
    for p in points:
        found[p.state] = found.get(p.state, 0) + 1
    return dict(sorted(found.items(), key=lambda item: _state_rank(item[0])))


def _state_rank(state: str) -> tuple[int, str]:
    return (STATE_ORDER.index(state) if state in STATE_ORDER else len(STATE_ORDER), state)


def counts_text(points: Sequence[Any]) -> str:
    """'3 finished, 1 running, 2 pending, 1 failed'"""
    return ", ".join(f"{n} {state.lower()}" for state, n in state_counts(points).items())


def _elapsed(point: Any) -> float | None:
    record = getattr(point, "record", None)
    seconds = getattr(record, "elapsed_seconds", None)
    return float(seconds) if _number(seconds) else None


def estimate_seconds_left(points: Sequence[Any], epochs: dict[str, Epochs]) -> float | None:
    """Seconds until no point is pending or running, or None when that cannot be told.

    A running point with e of T epochs done needs T - e more epochs as long as its latest
    (else as long as its e epochs took on average); one without, the mean duration of the
    finished points less its time so far. A pending point needs the mean duration of the
    finished points (else the projected duration of the running ones). The work is shared by
    as many points as run now; nothing running but some pending: None."""
    running = [p for p in points if p.state == "RUNNING"]
    pending = sum(1 for p in points if p.state == "PENDING")
    if not running:
        return 0.0 if not pending else None
    durations = [d for p in points if p.state == FINISHED and (d := _elapsed(p)) is not None]
    mean = statistics.fmean(durations) if durations else None
    left, projected = [], []
    for p in running:
        elapsed = _elapsed(p)
        more = _epochs_left(epochs.get(p.id), elapsed)
        if more is None and mean is not None and elapsed is not None:
            more = max(mean - elapsed, 0.0)
        if more is None:
            return None
        left.append(more)
        projected.append((elapsed or 0.0) + more)
    per_point = mean if mean is not None else statistics.fmean(projected)
    return max(max(left), (sum(left) + pending * per_point) / len(running))


def _epochs_left(epochs: Epochs | None, elapsed: float | None) -> float | None:
    """Seconds a running point needs for its remaining epochs (None: not known)."""
    if epochs is None or epochs.done is None or not epochs.total or epochs.done > epochs.total:
        return None
    if epochs.seconds is not None:
        return (epochs.total - epochs.done) * epochs.seconds
    if elapsed is not None and epochs.done > 0:
        return elapsed * (epochs.total / epochs.done - 1)
    return None


def format_seconds(seconds: float) -> str:
    """3725 -> '1:02:05'"""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _name(point: Any) -> str:
    return point.label or point.id


# ---------------------------------------------------------------- the display
class _Latest(NamedTuple):
    """What the latest update brought."""

    points: list[Any]
    epochs: dict[str, Epochs]  # of the running points
    left: float | None  # seconds left then (None: not known)
    at: float  # time.monotonic() of the update


class Progress:
    """Shows how a sweep goes: a live panel on a terminal, else one plain line whenever the
    counts or a running point's epoch change. Use as a context manager; call update() with
    every new list of statuses. Elapsed time counts from when the Progress was made."""

    def __init__(self, title: str, stream: TextIO | None = None, live: bool | None = None):
        self.title = title
        self.stream = stream if stream is not None else sys.stdout
        self.live = self._is_terminal() if live is None else live
        self.started = time.monotonic()
        self._reader = EpochReader()
        self._latest = _Latest([], {}, None, self.started)
        self._last_key: Any = None
        self._display: Live | None = None

    def _is_terminal(self) -> bool:
        try:
            return self.stream.isatty() and os.environ.get("TERM") != "dumb"
        except (AttributeError, ValueError):  # no isatty, or closed
            return False

    def __enter__(self) -> Progress:
        if self.live:
            console = Console(file=self.stream, force_terminal=True, highlight=False)
            self._display = Live(
                _View(self), console=console, refresh_per_second=2, transient=False
            )
            self._display.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._display is not None:
            self._display.stop()
            self._display = None

    def update(self, points: list[Any]) -> None:
        """Take a new list of point statuses and show it."""
        epochs = self._reader.read(points)
        left = estimate_seconds_left(points, epochs)
        self._latest = _Latest(list(points), epochs, left, time.monotonic())
        if self._display is not None:
            self._display.refresh()
        elif not self.live:
            self._plain_line(points, epochs)

    def since_update(self) -> float:
        """Seconds since the latest update."""
        return time.monotonic() - self._latest.at

    def seconds_left(self) -> float | None:
        """The latest estimate of the time left, counted down since it was made."""
        left = self._latest.left
        return None if left is None else max(0.0, left - self.since_update())

    def timing_text(self) -> str:
        """'elapsed 0:01:05, about 0:02:50 left' (no estimate: the elapsed time alone)."""
        text = f"elapsed {format_seconds(time.monotonic() - self.started)}"
        left = self.seconds_left()
        active = any(p.state in ACTIVE for p in self._latest.points)
        known = active and left is not None and left >= 1
        return text + (f", about {format_seconds(left)} left" if known else "")

    def _plain_line(self, points: list[Any], epochs: dict[str, Epochs]) -> None:
        done = tuple(sorted((pid, e.done) for pid, e in epochs.items()))
        key = (tuple(state_counts(points).items()), done)
        if key == self._last_key:
            return
        self._last_key = key
        parts = [f"{time.strftime('%H:%M:%S')} {self.title}: {counts_text(points) or 'no points'}"]
        running = [p for p in points if p.state == "RUNNING"]
        if running:
            shown = [
                f"{_name(p)}" + (f" {text} epochs" if (text := epochs[p.id].text()) else "")
                for p in running[:PLAIN_RUNNING_SHOWN]
            ]
            more = len(running) - PLAIN_RUNNING_SHOWN
            parts.append("running " + ", ".join(shown) + (f", {more} more" if more > 0 else ""))
        parts.append(self.timing_text())
        print(" | ".join(parts), file=self.stream, flush=True)


class _View:
    """The live panel, drawn again at every refresh (so the elapsed time moves on)."""

    def __init__(self, progress: Progress):
        self.progress = progress

    def __rich_console__(self, console: Console, options: Any):
        progress = self.progress
        points, epochs = progress._latest.points, progress._latest.epochs
        counts = Text(overflow="fold")
        for i, (state, n) in enumerate(state_counts(points).items()):
            counts.append(", " if i else "")
            counts.append(f"{n} {state.lower()}", STYLES.get(state, "red"))
        ended = sum(1 for p in points if p.state not in ACTIVE)
        bar = Table.grid(expand=True, padding=(0, 1))
        bar.add_column(ratio=1)
        bar.add_column(no_wrap=True, justify="right")
        bar.add_row(
            ProgressBar(total=max(len(points), 1), completed=ended), f"{ended}/{len(points)} ended"
        )
        parts: list[Any] = [counts or Text("no points yet"), bar]
        running = [p for p in points if p.state == "RUNNING"]
        if running:
            rows, since = _rows_that_fit(console), progress.since_update()
            table = _running_table(running, epochs, rows, since, bars=options.max_width >= 72)
            parts.append(table)
        parts.append(Text(progress.timing_text(), style="bold"))
        yield Panel(Group(*parts), title=progress.title, title_align="left", expand=True)


def _rows_that_fit(console: Console) -> int:
    return max(1, min(12, console.height - 9))


def _running_table(
    running: list[Any], epochs: dict[str, Epochs], rows: int, since: float, bars: bool
) -> Table:
    """One row per running point (at most `rows`, then how many more): label, epochs done
    (with a bar when `bars`), time running (`since`: seconds since the times were read)."""
    table = Table(box=None, expand=True, padding=(0, 1), show_edge=False)
    table.add_column("running", ratio=1, no_wrap=True, overflow="ellipsis")
    table.add_column("epochs done", no_wrap=True, justify="right")
    if bars:
        table.add_column("", width=12, no_wrap=True)
    table.add_column("time", no_wrap=True, justify="right")
    for p in running[:rows]:
        known, elapsed = epochs.get(p.id, Epochs()), _elapsed(p)
        cells: list[Any] = [Text(_name(p)), known.text()]
        if bars:
            bar = ProgressBar(total=known.total, completed=known.done or 0, width=12)
            cells.append(bar if known.total else "")
        cells.append(format_seconds(elapsed + since) if elapsed is not None else "")
        table.add_row(*cells)
    if len(running) > rows:
        table.add_row(Text(f"... {len(running) - rows} more running", style="dim"))
    return table


# ---------------------------------------------------------------- for `hpcdl status`
def failure_table(points: list[Any], width: int = 100, limit: int | None = 200) -> str:
    """The points that ended without a result (and those never submitted), with their reason,
    as a plain-text table no wider than `width` columns; '' when there are none. At most
    `limit` rows (None: all; rich takes about 1 ms a row), then a line saying how many more."""
    failed = sorted(
        (p for p in points if p.state not in DONE_STATES and p.state not in ACTIVE),
        key=lambda p: _state_rank(p.state),
    )
    if not failed:
        return ""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("state", no_wrap=True)
    table.add_column("point", overflow="fold", max_width=42)
    table.add_column("job", overflow="fold", max_width=14)
    table.add_column("reason", overflow="fold", min_width=20)
    shown = failed if limit is None else failed[:limit]
    for p in shown:
        point = Text(p.id)
        if p.label and p.label != p.id:
            point.append(f"\n{p.label}")
        job = Text(p.job or "-")
        node = getattr(getattr(p, "record", None), "node", None)
        if node:
            job.append(f"\n{node}")
        table.add_row(Text(p.state), point, job, Text(p.reason or ""))
    if len(failed) > len(shown):
        table.add_row("", Text(f"... {len(failed) - len(shown)} more"), "", "")
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, highlight=False, emoji=False).print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines()).strip("\n")


def status_json(points: list[Any], **about: Any) -> str:
    """The statuses as one JSON document for scripts: the `about` keys (e.g. sweep, backend),
    then keys that are always present (null when not known): total, counts (every known state,
    0 when none), estimated_seconds_left, and points, each with id, label, state, reason, job,
    run_dir, epochs_done, epochs_total and epoch_seconds (the latest epoch's; read for running
    points only), elapsed_seconds, exit_code, start, end, node."""
    epochs = EpochReader().read(points)
    counts = {state: 0 for state in STATE_ORDER} | state_counts(points)
    rows = []
    for p in points:
        record = getattr(p, "record", None)
        known = epochs.get(p.id, Epochs())
        rows.append(
            {
                "id": p.id,
                "label": p.label,
                "state": p.state,
                "reason": p.reason,
                "job": p.job,
                "run_dir": str(p.run_dir),
                "epochs_done": known.done,
                "epochs_total": known.total,
                "epoch_seconds": known.seconds,
                "elapsed_seconds": _elapsed(p),
                "exit_code": getattr(record, "exit_code", None),
                "start": getattr(record, "start", None),
                "end": getattr(record, "end", None),
                "node": getattr(record, "node", None),
            }
        )
    document = {
        **about,
        "total": len(points),
        "counts": counts,
        "estimated_seconds_left": estimate_seconds_left(points, epochs),
        "points": rows,
    }
    return json.dumps(document, indent=2)
