"""Point states: what a point's run directory and the scheduler's record say about it.

FINISHED (result.json written), PRUNED (a search's pruner stopped the trial: pruned.json),
PENDING / RUNNING (active), the states `hpcdl resume` reruns (RERUN_STATES), and UNCONFIRMED
(a submission an interrupted `hpcdl sweep` did not record).
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass
from pathlib import Path

from hpcdl import rundir
from hpcdl.backends.base import JobRecord
from hpcdl.files import tail_lines
from hpcdl.search.slots import pruned_reason

RERUN_STATES = {
    "MISSING",
    "FAILED",
    "TIMEOUT",
    "CANCELLED",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "LOST",
    "UNKNOWN",
}
ACTIVE_STATES = {"PENDING", "RUNNING"}
DONE_STATES = {"FINISHED", "PRUNED"}  # ended as planned: a pruned trial was stopped on purpose


@dataclass
class PointStatus:
    id: str
    state: str
    reason: str
    job: str | None
    run_dir: str
    label: str
    record: JobRecord | None = None  # what the scheduler said (None: nothing)


ERROR_WORDS = (
    "Error",
    "error:",
    "Killed",
    "Traceback",
    "Exception",
    "CANCELLED",
    "DUE TO TIME LIMIT",
    "oom",
    "Segmentation",
    "An error occurred in MPI_",  # Open MPI could not start (MPI_Init_thread)
    "MPI_ABORT was invoked",
    "ORTE_ERROR_LOG",
    "not enough slots",
)
# srun names each task it saw end badly; the first is the cause, the later ones it stopped itself
SRUN_TASK_ERROR = re.compile(r"^srun: error: \S+: tasks? [\d,-]+: ")
# TensorFlow's C++ log lines: absl's `E0000 00:00:...` and `2026-12-01 10:00:00.123: W ...`
TF_LOG_LINE = re.compile(
    r"^([IWE]\d{4} \d\d:\d\d:\d\d|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] )"
)


def last_error_line(run_dir: Path, name: str = "job.out") -> str:
    """The line of a log's last start (after its last `==` header) that says what went wrong:
    the first failed task srun names, else the last line that looks like an error ('' if none)."""
    lines = [x.strip() for x in tail_lines(run_dir / name) if x.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("== ")]
    lines = lines[starts[-1] + 1 :] if starts else lines
    first_task = next((line for line in lines if SRUN_TASK_ERROR.match(line)), None)
    if first_task is not None:
        return first_task[:300]
    # TensorFlow's own C++ log lines (`E0000 00:00:...`, often harmless Grappler notes) only
    # when nothing else looks like an error
    for allowed in (lambda line: not TF_LOG_LINE.match(line), lambda line: True):
        for line in reversed(lines):
            if allowed(line) and any(word in line for word in ERROR_WORDS):
                return line.lstrip("* ")[:300]
    return ""


def exit_text(code: int) -> str:
    """`exit 1`; `exit 137 (SIGKILL: out of memory, or killed)` for a signal's exit status."""
    if 128 < code < 160:
        try:
            name = signal.Signals(code - 128).name
        except ValueError:
            return f"exit {code}"
        hint = ": out of memory, or killed" if name == "SIGKILL" else ""
        return f"exit {code} ({name}{hint})"
    return f"exit {code}"


BASE_REASONS = {
    "TIMEOUT": "time limit reached",
    "OUT_OF_MEMORY": "out of memory",
    "CANCELLED": "cancelled",
    "PREEMPTED": "preempted",
    "LOST": "its process is gone (the runner or node died)",
}


def point_state(
    run_dir: Path, submitted: bool, record: JobRecord | None, unconfirmed: bool = False
) -> tuple[str, str]:
    """(state, reason) of one point: its files first, the scheduler's word second."""
    pruned = pruned_reason(run_dir)  # first: the study holds the trial as pruned, even where
    if pruned is not None:  # a script that ignored the stop wrote its result afterwards
        return "PRUNED", pruned
    if (run_dir / rundir.RESULT).exists():
        return "FINISHED", ""
    if not submitted:
        return "MISSING", "never submitted"
    if unconfirmed:
        return "UNCONFIRMED", "its submission was not recorded; `hpcdl resume` settles it"
    if record is None:
        return "UNKNOWN", "the scheduler has no record of its job"
    state = record.state
    if state == "RUNNING" and not (run_dir / "job.out").exists():
        state = "PENDING"  # PBS reports a whole array running before this index started
    if state in ACTIVE_STATES:
        return state, ""
    if state == "COMPLETED":
        state, parts = "FAILED", ["ended without result.json"]
    elif state in BASE_REASONS:
        parts = [BASE_REASONS[state]]
    else:
        parts = [exit_text(record.exit_code)] if record.exit_code not in (None, 0) else []
    failure = run_dir / rundir.FAILURE
    if failure.exists():
        try:
            parts.append(rundir.read_json(failure).get("reason", ""))
        except ValueError:
            pass
    tail = last_error_line(run_dir)
    if tail and not any(tail in p or p in tail for p in parts if p):
        parts.append(tail)
    return state, ": ".join(p for p in parts if p) or "ended without result.json"


def counts(points: list[PointStatus]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in points:
        out[p.state] = out.get(p.state, 0) + 1
    return dict(sorted(out.items()))


def count_line(points: list[PointStatus]) -> str:
    """'3 finished, 1 running, ...'"""
    return ", ".join(f"{n} {s.lower()}" for s, n in counts(points).items())
