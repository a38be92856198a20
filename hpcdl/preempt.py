"""Stop requests (time-limit warning, preemption, Ctrl-C) and requeueing.

SLURM sends SIGUSR1 ahead of the time limit (``--signal=B:USR1@N`` in hpcdl's job scripts) and
SIGTERM when it preempts or cancels; the local backend sends SIGTERM at its time limit and on
Ctrl-C. The handlers only set a flag: the training loop checks it at step boundaries that all
ranks agree on, writes a checkpoint, and then asks the scheduler to requeue the job.
"""

from __future__ import annotations

import os
import signal
import subprocess

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
EXIT_STOPPED = 75  # EX_TEMPFAIL: stopped on request with a checkpoint; resume continues
# scontrol's answer when SLURM itself requeued the job first (after a node failure)
ALREADY_REQUEUED = "Job is pending execution"


_early_signum: int | None = None  # a stop signal that came before any StopRequest was installed


def catch_early() -> None:
    """Take stop signals as requests from a process's first line on (`python -m hpcdl train`,
    before its imports): SLURM sends the time-limit warning at its next 30-second check once it
    is due within that period, so with short limits it can come while Python is still
    starting, and SIGUSR1's default would end the job (exit 138, not requeued). The first
    StopRequest installed takes the signal over."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _remember_early)


def _remember_early(signum: int, _frame) -> None:
    global _early_signum
    if _early_signum is None:
        _early_signum = signum


class StopRequest:
    """Remembers the first stop signal received (also one caught by catch_early before)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.ignored: set[int] = set()

    def install(self) -> StopRequest:
        global _early_signum
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)
        if self.signum is None and _early_signum is not None:
            self.signum, _early_signum = _early_signum, None
        return self

    def _handle(self, signum: int, _frame) -> None:
        if self.signum is None and signum not in self.ignored:
            self.signum = signum

    def ignore(self, signum: int) -> None:
        """Forget a request of this kind and take no more of them."""
        self.ignored.add(signum)
        if self.signum == signum:
            self.signum = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


class Stopped(Exception):  # noqa: N818 (an outcome, not an error)
    """Training stopped on request after writing a checkpoint."""


def slurm_job_id() -> str | None:
    """This job's id as scontrol names it (array tasks as ARRAYID_INDEX)."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def requeue_blocker() -> str | None:
    """Why this job cannot requeue itself, or None when it can (SLURM, HPCDL_REQUEUE_MAX >
    restarts so far). PBS lets only managers requeue (qrerun): there `hpcdl resume` does it."""
    limit = int(os.environ.get("HPCDL_REQUEUE_MAX", "0") or 0)
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    if not slurm_job_id() or limit <= 0:
        return "this job does not requeue itself"
    if restarts >= limit:
        return f"already requeued {restarts} time(s), the limit"
    return None


def requeue_self() -> str:
    """Requeue this SLURM job when allowed; returns what happened, for the log."""
    blocker = requeue_blocker()
    if blocker:
        return f"not requeued: {blocker} (run `hpcdl resume` to continue)"
    limit = int(os.environ["HPCDL_REQUEUE_MAX"])
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    job = slurm_job_id()
    proc = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if proc.returncode != 0 and ALREADY_REQUEUED in proc.stderr:  # SLURM did (a node failed)
        return f"SLURM has requeued job {job} already; it continues from this checkpoint"
    if proc.returncode != 0:
        return f"requeue failed ({proc.stderr.strip()}); run `hpcdl resume` to continue"
    return f"requeued job {job} ({restarts + 1}/{limit})"
