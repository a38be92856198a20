"""Reporting API for your own training script, in any framework: ``from hpcdl import session``.

    for epoch in range(start, epochs + 1):
        ...                                       # train one epoch
        session.log(epoch=epoch, loss=loss, accuracy=acc, val_loss=vl, val_accuracy=va)
        save_checkpoint(session.checkpoint_dir())
        if session.should_stop():                 # time-limit warning or preemption arrived
            session.requeue()                     # exits with code 75; resume continues
    session.result(test_accuracy=test_acc)

It writes the run directory the built-in loop writes (see hpcdl.rundir): one metrics.jsonl line
per epoch, result.json at the end (its presence means "finished"), failure.json when stopped,
and TensorBoard scalars under tb/. The run directory is $HPCDL_RUN_DIR, else the current
directory. Only rank 0 writes; the rank comes from the launcher's environment (mpirun, srun,
horovodrun, ...), so a multi-rank script calls the same functions on every rank. This module
imports no ML framework and no MPI.
"""

from __future__ import annotations

import json
import operator
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import yaml

from hpcdl import rundir
from hpcdl.errors import HpcdlError
from hpcdl.files import utc_now
from hpcdl.preempt import EXIT_STOPPED, StopRequest, requeue_blocker, requeue_self

PARAMS_FILE = "params.yaml"

# (rank, size) variables of each launcher, most specific first: inside an sbatch script every
# process inherits SLURM_PROCID=0, so an mpirun there must be recognised by its own variables.
LAUNCHER_VARIABLES = (
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),  # Open MPI mpirun, horovodrun (MPI)
    ("HOROVOD_RANK", "HOROVOD_SIZE"),  # horovodrun (Gloo)
    ("PMIX_RANK", "SLURM_STEP_NUM_TASKS"),  # srun --mpi=pmix
    ("PMI_RANK", "PMI_SIZE"),  # MPICH / Intel MPI hydra, srun --mpi=pmi2
    ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE"),  # MVAPICH2
    ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS"),  # srun
)

_stopper: StopRequest | None = None
_last_logged: dict[Path, int | None] = {}  # per run directory: the epoch this process logged last


def run_dir() -> Path:
    """The run directory: $HPCDL_RUN_DIR, else the current directory."""
    return Path(os.environ.get("HPCDL_RUN_DIR") or ".").absolute()


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise HpcdlError(f"{name}={value!r} in the environment is not a whole number") from None


def rank() -> int:
    """This process's rank among the run's processes (0 when started without a launcher)."""
    for rank_var, _ in LAUNCHER_VARIABLES:
        found = _env_int(rank_var)
        if found is not None:
            return found
    return 0


def size() -> int | None:
    """How many processes the launcher started (None when it does not say)."""
    for rank_var, size_var in LAUNCHER_VARIABLES:
        if _env_int(rank_var) is not None:
            return _env_int(size_var)
    return None


def is_root() -> bool:
    """True on rank 0, the one process that writes."""
    return rank() == 0


def _plain(value: Any, key: str) -> Any:
    """A JSON-ready copy of a metric: numbers of any framework (numpy, torch, TensorFlow) become
    Python numbers; anything else that is not text, a list or a mapping is an error."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, key) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors
        return _plain(value.tolist(), key)
    try:
        return float(value)  # TensorFlow scalars, decimals, ...
    except (TypeError, ValueError):
        raise HpcdlError(
            f"session: {key}={value!r:.80} is not a number, text, list or mapping"
        ) from None


def _epoch_number(epoch: Any) -> int:
    try:
        if isinstance(epoch, bool):
            raise TypeError
        number = operator.index(epoch)
    except TypeError:
        raise HpcdlError(f"session.log: epoch={epoch!r:.80} is not a whole number") from None
    if number < 0:
        raise HpcdlError(f"session.log: epoch={number} is negative")
    return number


def log(epoch: int, **metrics: Any) -> None:
    """Record one finished epoch (numbered from 1, as hpcdl and Keras' "Epoch 1/N" do) with its
    metrics, in the built-in loop's names where they apply: loss, accuracy, val_loss,
    val_accuracy, lr, epoch_seconds, samples_per_second. Adds the time and the number of ranks.

    One call per epoch. Logging an epoch that metrics.jsonl already holds (a restarted script
    that resumes from an older checkpoint) first drops the lines of that epoch and all later
    ones, so every epoch appears once, from the last attempt. Rank 0 only; other ranks return.
    """
    record = {"epoch": _epoch_number(epoch)}
    record.update({name: _plain(value, name) for name, value in metrics.items()})
    record.setdefault("time", utc_now())
    if size() is not None:
        record.setdefault("ranks", size())
    if not is_root():
        return
    run = run_dir()
    run.mkdir(parents=True, exist_ok=True)
    if run not in _last_logged:  # this process's first line: look at what earlier attempts left
        records, _ = rundir.read_metrics(run)
        epochs = [r["epoch"] for r in records if isinstance(r.get("epoch"), int)]
        _last_logged[run] = max(epochs, default=None)
        (run / rundir.FAILURE).unlink(missing_ok=True)  # the run is going again
    last = _last_logged[run]
    if last is not None and record["epoch"] <= last:
        rundir.truncate_metrics(run, record["epoch"] - 1)
    rundir.append_metrics(run, record)
    _last_logged[run] = record["epoch"]
    from hpcdl import tensorboard  # loaded on first use: scripts that only read params skip it

    tensorboard.log_epoch(run, record, params)


def result(**metrics: Any) -> None:
    """Write result.json (atomically) with the run's final metrics, e.g. test_loss and
    test_accuracy; its presence marks the run finished. Rank 0 only."""
    record = {name: _plain(value, name) for name, value in metrics.items()}
    if size() is not None:
        record.setdefault("ranks", size())
    if not is_root():
        return
    run = run_dir()
    rundir.write_json_atomic(run / rundir.RESULT, record)
    (run / rundir.FAILURE).unlink(missing_ok=True)


def checkpoint_dir() -> Path:
    """The folder for the script's checkpoints (<run_dir>/checkpoints, created). A restarted
    run finds its last checkpoint here; saving and loading it is the script's job."""
    path = run_dir() / rundir.CHECKPOINTS
    path.mkdir(parents=True, exist_ok=True)
    return path


def should_stop() -> bool:
    """True once SIGUSR1 (SLURM's time-limit warning), SIGTERM (preemption, cancel, the local
    backend's limit) or SIGINT (Ctrl-C) arrived. The first call installs the handlers, so call it
    once at the start: from then on these signals no longer end the script; it checks this at
    a convenient point (after an epoch or a step), saves a checkpoint and calls requeue().

    Every rank answers for itself: a multi-rank script must agree before stopping (e.g. with
    Horovod: ``hvd.allreduce(tf.constant(int(session.should_stop())), op=hvd.Max)``)."""
    global _stopper
    if _stopper is None:
        try:
            _stopper = StopRequest().install()
        except ValueError:  # signal handlers can only be set from the main thread
            raise HpcdlError(
                "session.should_stop() must be called first from the main thread"
            ) from None
    return _stopper.signum is not None


def stop_signal() -> str:
    """The name of the stop signal received (e.g. "SIGUSR1"), or "" when none arrived."""
    return _stopper.name if _stopper else ""


def requeue(reason: str = "") -> NoReturn:
    """Leave after a stop request, the checkpoint already saved by the script: record why in
    failure.json (`reason`, else the signal and the last epoch logged), requeue the SLURM job
    where allowed (hpcdl's job scripts allow it up to scheduler.requeue times; elsewhere
    `hpcdl resume` continues) and exit with code 75. Call it on every rank; rank 0 records
    and requeues."""
    if is_root():
        records, _ = rundir.read_metrics(run_dir())
        done = max((r["epoch"] for r in records if isinstance(r.get("epoch"), int)), default=0)
        why = reason or f"stopped by {stop_signal() or 'request'} after epoch {done}"
        blocker = requeue_blocker()
        then = f"{blocker}; run `hpcdl resume` to continue" if blocker else "requeueing"
        rundir.write_json_atomic(
            run_dir() / rundir.FAILURE, {"reason": f"{why}; {then}", "time": utc_now()}
        )
        print(f"hpcdl.session: {why}; {requeue_self()}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(EXIT_STOPPED)


def params() -> dict[str, Any]:
    """The point's settings: $HPCDL_PARAMS (JSON), else <run_dir>/params.yaml, else {}."""
    text = os.environ.get("HPCDL_PARAMS", "").strip()
    if text:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise HpcdlError(f"HPCDL_PARAMS: not valid JSON ({err})") from None
        source = "HPCDL_PARAMS"
    else:
        path = run_dir() / PARAMS_FILE
        if not path.exists():
            return {}
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise HpcdlError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
        source = str(path)
    if not isinstance(values, dict):
        raise HpcdlError(f"{source}: expected a mapping of settings, got {type(values).__name__}")
    return values
