"""The embedded backend: runs the points on this machine, `max_concurrent` at a time.

Each point runs the same rendered job script a cluster would (index as $1), under horovodrun
for several ranks. State per point goes to <run_dir>/local.json. The time limit is enforced
(SIGTERM, then SIGKILL: state TIMEOUT); Ctrl-C or a SIGTERM to the sweep (e.g. the batch job
that runs it reaching its own limit) stops every running point (state CANCELLED): each one gets
SIGTERM and checkpoints first, so `hpcdl resume` continues it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hpcdl import rundir
from hpcdl.backends.base import ArrayTask, Backend, JobRecord, ScriptJob, horovodrun
from hpcdl.errors import HpcdlError
from hpcdl.manifest import now
from hpcdl.progress import Progress
from hpcdl.spec import Resources

STATE_FILE = "local.json"
WATCH_SECONDS = 2.0  # how often a local sweep's progress display reads the points' states
GRACE_SECONDS = 20


class Local(Backend):
    """Submitting queues a job here; `run_submitted` runs the queue in the foreground: each array
    `max_concurrent` points at a time, then the collect job."""

    name = "local"
    index_expr = "${1:?usage: job.sh ARRAY_INDEX}"
    job_id_expr = "local-$$"

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.queue: list[tuple[Path, ScriptJob]] = []

    def check(self, resources: Resources) -> None:
        if resources.nodes > 1:
            raise HpcdlError("resources.nodes > 1 needs a cluster backend (slurm or pbs)")

    def submit(self, script: Path, job: ScriptJob, depend: list[str] | None = None) -> str:
        """Queue the job; its points are PENDING while this process lives (else LOST)."""
        if job.kind == "array" and job.points_file is not None:
            for run_dir in points_of(job.points_file):
                write_state(run_dir, "PENDING", runner=os.getpid())
        self.queue.append((script, job))
        return f"local-{os.getpid()}"

    def run_submitted(
        self, out: Callable[[str], None] = print, watch: Callable[[], list[Any]] | None = None
    ) -> None:
        queue, self.queue = self.queue, []
        for script, job in queue:
            if job.kind == "collect":
                subprocess.run(["bash", str(script)], check=False)
                continue
            run_dirs = points_of(job.points_file)
            concurrent = job.throttle or 1
            out(
                f"running {len(run_dirs)} point(s) here, {concurrent} at a time "
                f"({job.resources.ranks} rank(s) each); Ctrl-C stops them"
            )
            log_dir = job.log_dir or job.sweep_dir / "logs"
            with Progress(f"sweep {job.sweep}") as progress:
                tick = every(WATCH_SECONDS, lambda: progress.update(watch())) if watch else None
                self.run(
                    script, run_dirs, concurrent, job.resources.time_seconds, log_dir, out, tick
                )

    def task_records(self, tasks: dict[str, ArrayTask]) -> dict[str, JobRecord]:
        """Each point's record from its run directory (local.json): no scheduler to ask."""
        found = {point: read_state(task.run_dir) for point, task in tasks.items()}
        return {point: record for point, record in found.items() if record is not None}

    def query(self, job_ids: list[str]) -> dict[str, JobRecord]:
        return {}  # records live in the run directories (task_records)

    def find_jobs(self, names: list[str], since: str) -> dict[str, str]:
        return {}  # a local job that was never recorded never ran

    def cancel(self, job_ids: list[str]) -> None:
        raise HpcdlError("local sweeps run in the foreground: stop them with Ctrl-C")

    def launch(self, job: ScriptJob) -> str:
        n = job.resources.ranks
        if n == 1:
            return ""
        if job.launcher == "mpirun":
            return f"mpirun -np {n} --bind-to none "
        return f"{horovodrun(job)} -np {n} -H localhost:{n} --gloo "

    def run(
        self,
        script: Path,
        run_dirs: list[Path],
        max_concurrent: int,
        time_limit: int,
        log_dir: Path,
        progress: Callable[[str], None] = print,
        on_tick: Callable[[], None] | None = None,
    ) -> dict[int, str]:
        """Run every array index of `script`; return index -> final state."""
        pending = list(range(len(run_dirs)))
        running: dict[int, tuple[subprocess.Popen, float]] = {}
        states: dict[int, str] = {}
        total = len(run_dirs)
        restore = _stop_on_signals()

        def start(index: int) -> None:
            out = open(log_dir / f"local-{index}.out", "ab")  # noqa: SIM115 (child inherits it)
            proc = subprocess.Popen(
                ["bash", str(script), str(index)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            out.close()
            running[index] = (proc, time.monotonic())
            write_state(run_dirs[index], "RUNNING", pid=proc.pid)

        def stop(index: int, state: str) -> None:
            proc, _ = running[index]
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
            finish(index, state, proc.returncode)

        def finish(index: int, state: str, code: int | None) -> None:
            if code is not None and code < 0:  # killed by a signal: report it as a shell would
                code = 128 - code
            running.pop(index, None)
            states[index] = state
            write_state(run_dirs[index], state, exit_code=code, ended=True)
            done = sum(1 for s in states.values() if s == "COMPLETED")
            progress(
                f"[{len(states)}/{total}] {state.lower():9s} {run_dirs[index].name} "
                f"(exit {code}) | completed {done}, running {len(running)}, "
                f"waiting {len(pending)}"
            )

        try:
            while pending or running:
                while pending and len(running) < max_concurrent:
                    start(pending.pop(0))
                for index, (proc, started) in list(running.items()):
                    code = proc.poll()
                    if code is not None:
                        finish(index, "COMPLETED" if code == 0 else "FAILED", code)
                    elif time.monotonic() - started > time_limit:
                        stop(index, "TIMEOUT")
                if on_tick is not None:
                    on_tick()
                time.sleep(0.2)
        except KeyboardInterrupt:
            progress(f"interrupted: stopping {len(running)} running point(s)")
            for index in list(running):
                stop(index, "CANCELLED")
            for index in pending:
                states[index] = "CANCELLED"
                write_state(run_dirs[index], "CANCELLED", ended=True)
            raise
        finally:
            restore()
        return states


def _stop_on_signals() -> Callable[[], None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt (even where the shell started this process with
    SIGINT ignored, as it does for `cmd &`); returns the function that restores the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)

    return restore


def every(seconds: float, action: Callable[[], None]) -> Callable[[], None]:
    """A callable that runs `action` at most once every `seconds` (the first call runs it)."""
    last = [float("-inf")]

    def maybe() -> None:
        if time.monotonic() - last[0] >= seconds:
            last[0] = time.monotonic()
            action()

    return maybe


def points_of(points_file: Path | None) -> list[Path]:
    """The run directories of an array, one per line of its points file."""
    if points_file is None:
        return []
    return [Path(line) for line in Path(points_file).read_text().splitlines() if line]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_state(
    run_dir: Path,
    state: str,
    pid: int | None = None,
    exit_code: int | None = None,
    ended: bool = False,
    runner: int | None = None,
) -> None:
    """Record a point's state in its run directory: `pid` of its job once started, `runner` the
    sweep process it waits on while pending."""
    path = run_dir / STATE_FILE
    old = rundir.read_json(path) if path.exists() else {}
    record = {**old, "state": state, "host": socket.gethostname()}
    if runner is not None:
        record.update(runner=runner, pid=None, started=None, exit_code=None, ended=None)
    if pid is not None:
        record.update(pid=pid, started=now(), exit_code=None, ended=None)
    if ended:
        record.update(exit_code=exit_code, ended=now())
    rundir.write_json_atomic(path, record)


def read_state(run_dir: Path) -> JobRecord | None:
    """The local backend's record of a point; a RUNNING one whose process is gone, or a PENDING
    one whose runner is gone, is LOST."""
    path = Path(run_dir) / STATE_FILE
    if not path.exists():
        return None
    try:
        data = rundir.read_json(path)
    except ValueError:
        return None
    state = data.get("state", "UNKNOWN")
    pid = data.get("pid")
    if state in ("RUNNING", "PENDING") and data.get("host") == socket.gethostname():
        owner = pid if state == "RUNNING" else data.get("runner")
        if not isinstance(owner, int) or owner <= 0 or not _alive(owner):
            state = "LOST"
    elapsed = None
    if data.get("started"):
        end = (
            datetime.fromisoformat(data["ended"])
            if data.get("ended")
            else datetime.now(timezone.utc)
        )
        elapsed = (end - datetime.fromisoformat(data["started"])).total_seconds()
    return JobRecord(
        state=state,
        raw_state=data.get("state", ""),
        exit_code=data.get("exit_code"),
        start=data.get("started"),
        end=data.get("ended"),
        elapsed_seconds=elapsed,
        node=data.get("host"),
    )
