"""The worker of one trial slot: `hpcdl trial RUN_DIR -- COMMAND...` (the job script runs it).

It asks the study for a trial (or reattaches to the one the slot's trial.json names, after a
requeue), writes the point's config (base + fixed + sampled settings; a program's params and
command), starts COMMAND as its child and follows metrics.jsonl: after every epoch it reports
the metric to the study and, when the pruner says so, stops the child with SIGTERM (it saves a
checkpoint and exits), writes pruned.json and tells the study PRUNED. At the end it tells the
final value (result.json's metric, else the last epoch's), or FAIL for a failed child. A child
stopped by the scheduler's signal (exit 75) leaves the trial RUNNING and the worker, not the
child, requeues the job (the child must not requeue when the pruner stops it): the requeued
job reattaches to the trial; a dead job's trial is failed by `hpcdl status`/`resume`
(hpcdl.search.study.settle).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from hpcdl import rundir
from hpcdl.errors import HpcdlError
from hpcdl.files import utc_now
from hpcdl.preempt import EXIT_STOPPED, requeue_blocker, requeue_self
from hpcdl.search import slots

POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 120  # how long a pruned child may take to checkpoint and exit
FORWARDED = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)


def say(message: str) -> None:
    print(f"hpcdl trial: {message}", flush=True)


def run_trial(run_dir: Path, command: list[str]) -> int:
    """Run one slot's trial with `command` as the training child; returns the exit code."""
    from hpcdl.manifest import load_manifest
    from hpcdl.sweep.plan import spec_of

    if not command:
        raise HpcdlError("hpcdl trial: give the training command after --")
    run_dir = Path(run_dir).resolve()
    manifest = load_manifest(run_dir.parent)
    spec = spec_of(manifest)
    forward = Forwarder()
    study, trial, params = attach(spec, run_dir)
    if trial is None:
        return 0
    try:
        write_point(spec, manifest.base, run_dir, params)
    except HpcdlError as err:
        return give_up(study, trial, run_dir, str(err), 2)
    if forward.pending is not None:  # stopped before it started: leave the trial for later
        return EXIT_STOPPED
    return follow(study, trial, spec, run_dir, command, params, forward)


def attach(spec: Any, run_dir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """(study, trial, settings): the trial this slot already runs, else a new one from the
    study; trial None when the slot's trial is already complete or pruned."""
    import numpy as np

    from hpcdl.search.study import open_study, suggest

    record = slots.read_trial(run_dir)
    attempt = record.get("attempt", 0) + 1 if record else 0
    slot_index = int(run_dir.name.rpartition("-")[2] or 0)
    seed = int(np.random.SeedSequence([spec.search.seed, slot_index, attempt]).generate_state(1)[0])
    study = open_study(spec, run_dir.parent, seed)
    if record is not None:
        keep, trial = earlier_trial(study, run_dir, record["number"])
        if keep:
            return study, trial, record["params"]
    trial = study.ask()
    trial.set_user_attr("slot", run_dir.name)
    params = suggest(trial, spec.search)
    rundir.write_json_atomic(
        run_dir / slots.TRIAL,
        {"number": trial.number, "params": params, "attempt": attempt, "started": utc_now()},
    )
    say(f"slot {run_dir.name} runs trial {trial.number}: {json.dumps(params)}")
    return study, trial, params


def earlier_trial(study: Any, run_dir: Path, number: int) -> tuple[bool, Any]:
    """(keep, trial) for the trial a slot already names: a running one is reattached (after a
    requeue), a complete or pruned one is kept with nothing left to do (trial None), a failed
    one is moved aside for a new trial (keep False)."""
    import optuna

    if number >= len(study.trials):
        raise HpcdlError(
            f"{run_dir / slots.TRIAL}: names trial {number}, which the study in "
            f"{run_dir.parent} does not hold (was study.journal replaced?)"
        )
    frozen = study.trials[number]
    if frozen.state == optuna.trial.TrialState.RUNNING:
        say(f"slot {run_dir.name} reattaches to trial {number}")
        # the study's own handle on a running trial (what ask() returns for a new one)
        return True, optuna.trial.Trial(study, frozen._trial_id)
    if frozen.state != optuna.trial.TrialState.FAIL:
        say(f"trial {number} is already {frozen.state.name.lower()}")
        return True, None
    moved = slots.archive_attempt(run_dir, number)
    say(f"trial {number} failed; its files are in {moved}")
    return False, None


def write_point(spec: Any, base: dict[str, Any], run_dir: Path, params: dict[str, Any]) -> None:
    """The trial's config (validated like any point) or a program's params and command."""
    from hpcdl.grid import validated_points
    from hpcdl.sweep.submit import write_point_files

    (point,) = validated_points(spec, base, [params], f"trial {run_dir.name}")
    write_point_files(run_dir, point)


def follow(
    study: Any,
    trial: Any,
    spec: Any,
    run_dir: Path,
    command: list[str],
    params: dict[str, Any],
    forward: Forwarder,
) -> int:
    """Run the child, report each epoch's metric, prune it when told; returns the exit code."""
    metric = spec.search.metric
    reported = set(study.trials[trial.number].intermediate_values)
    env = {**os.environ, "HPCDL_RUN_DIR": str(run_dir), "HPCDL_PARAMS": json.dumps(params)}
    env["HPCDL_REQUEUE_MAX"] = "0"  # the worker requeues (a pruned child must not: Forwarder)
    child = subprocess.Popen(command, env=env, preexec_fn=_die_with_parent)
    forward.child = child
    while True:
        code = child.poll()
        for epoch, value in new_values(run_dir, metric, reported):
            trial.report(value, epoch)
            reported.add(epoch)
            if code is None and trial.should_prune():
                pruned = prune(study, trial, run_dir, child, metric, epoch, value)
                if pruned is not None:
                    return pruned
                break  # it finished before the signal took effect: report the rest, tell it
        if code is not None:
            return finish(study, trial, spec, run_dir, code, forward.received)
        time.sleep(POLL_SECONDS)


def new_values(run_dir: Path, metric: str, reported: set[int]) -> list[tuple[int, float]]:
    """(epoch, metric) of the epochs logged since the last report, in order."""
    records, _ = rundir.read_metrics(run_dir)
    found = {}
    for record in records:
        epoch, value = record.get("epoch"), record.get(metric)
        if isinstance(epoch, int) and epoch not in reported and _number(value):
            found[epoch] = float(value)
    return sorted(found.items())


def prune(
    study: Any, trial: Any, run_dir: Path, child: Any, metric: str, epoch: int, value: float
) -> int | None:
    """Stop the child (it checkpoints and exits), record the pruning, tell the study; returns
    the exit code, or None for a child that finished (result.json) before the signal took
    effect: a complete trial, not a pruned one."""
    import optuna

    say(f"trial {trial.number}: the pruner stops it after epoch {epoch} ({metric} {value:.4g})")
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    if (run_dir / rundir.RESULT).exists():
        return None
    record = {"trial": trial.number, "epoch": epoch, "metric": metric, "value": value}
    rundir.write_json_atomic(run_dir / slots.PRUNED, {**record, "time": utc_now()})
    (run_dir / rundir.FAILURE).unlink(missing_ok=True)  # not a failure: the pruner stopped it
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    say(f"trial {trial.number} pruned after epoch {epoch}")
    return 0


def requeue(trial: Any, run_dir: Path, signum: int) -> int:
    """The child stopped on the scheduler's signal with a checkpoint: requeue the job where it
    may (it reattaches to this trial), else leave it to `hpcdl resume`."""
    what = requeue_self()
    name = signal.Signals(signum).name
    reason = f"stopped by {name}; {what}"
    rundir.write_json_atomic(run_dir / rundir.FAILURE, {"reason": reason, "time": utc_now()})
    say(f"trial {trial.number} {reason}")
    return EXIT_STOPPED


def finish(study: Any, trial: Any, spec: Any, run_dir: Path, code: int, signum: int | None) -> int:
    """Tell the study how the child ended: complete with its final metric (result.json), or
    stopped by the scheduler's signal `signum` (the job requeues: the trial stays RUNNING;
    horovodrun, stopped, exits 0), or FAIL."""
    result_path = run_dir / rundir.RESULT
    metric = spec.search.metric
    if not result_path.exists() and signum is not None:
        return requeue(trial, run_dir, signum)
    if not result_path.exists() and code == 0 and spec.program is not None:
        # a program that ended well without reporting: finished (as in a program sweep)
        rundir.write_json_atomic(result_path, {"status": "finished", "exit_code": 0})
    if not result_path.exists():
        if code == EXIT_STOPPED:
            say(f"trial {trial.number} stopped; it continues when its job runs again")
            return code
        reason = f"training exited with code {code} without result.json"
        return give_up(study, trial, run_dir, reason, code if code > 0 else 1)
    value = final_value(run_dir, metric)
    if value is None:
        return give_up(study, trial, run_dir, f"search.metric {metric!r} was never logged", 1)
    study.tell(trial, value)
    say(f"trial {trial.number} complete: {metric} {value:.4g}")
    return 0


def final_value(run_dir: Path, metric: str) -> float | None:
    """result.json's value of the metric, else the tested model's epoch's (result.json's
    kept_epoch, as with keep: best), else the last epoch's that has it."""
    try:
        result = rundir.read_json(run_dir / rundir.RESULT)
    except (OSError, ValueError):
        result = {}
    if _number(result.get(metric)):
        return float(result[metric])
    records, _ = rundir.read_metrics(run_dir)
    kept = [r for r in records if r.get("epoch") == result.get("kept_epoch")]
    values = [r[metric] for r in kept or records if _number(r.get(metric))]
    return float(values[-1]) if values else None


def give_up(study: Any, trial: Any, run_dir: Path, reason: str, code: int) -> int:
    """Tell the study the trial failed (failure.json keeps the child's own reason if any)."""
    import optuna

    if not (run_dir / rundir.FAILURE).exists():
        rundir.write_json_atomic(run_dir / rundir.FAILURE, {"reason": reason, "time": utc_now()})
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    say(f"trial {trial.number} failed: {reason}")
    return code


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _die_with_parent() -> None:
    """In the child: die with the worker (even when it is killed with kill -9), instead of
    training on unwatched (or, given time to stop, requeueing a job whose worker is gone)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Forwarder:
    """Passes the scheduler's signals (time-limit warning, cancel, Ctrl-C) on to the child;
    before it starts, remembers the first. The child may not requeue the job itself, so a
    time-limit warning in a job that can requeue reaches it as SIGTERM: it stops at the next
    step with a checkpoint, and the worker requeues."""

    def __init__(self) -> None:
        self.child: subprocess.Popen | None = None
        self.pending: int | None = None  # a signal that came before the child started
        self.received: int | None = None  # the first signal passed on to the child
        for sig in FORWARDED:
            signal.signal(sig, self._pass_on)

    def _pass_on(self, signum: int, _frame: Any) -> None:
        if self.child is not None and self.child.poll() is None:
            self.received = self.received or signum
            stop_now = signum == signal.SIGUSR1 and requeue_blocker() is None
            self.child.send_signal(signal.SIGTERM if stop_now else signum)
        elif self.pending is None:
            self.pending = signum
