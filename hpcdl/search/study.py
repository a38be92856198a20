"""The Optuna study of an adaptive search: `<sweep>/study.journal`, Optuna's file journal (no
database server; its open-lock works on NFS and Lustre), driven with ask-and-tell.

Sampler and pruner are not stored: every process rebuilds them from the spec. `settle` is the
bookkeeping Optuna lacks: a trial whose job the scheduler reports dead is marked FAIL (never
left RUNNING), so that its slot can run a new trial.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcdl.errors import HpcdlError
from hpcdl.states import ACTIVE_STATES

if TYPE_CHECKING:
    import optuna

    from hpcdl.manifest import Manifest
    from hpcdl.spec import SearchSpec, SweepSpec
    from hpcdl.states import PointStatus

JOURNAL = "study.journal"
SAMPLER_NEEDS = {"gp": "torch", "cmaes": "cmaes"}  # samplers whose package Optuna leaves out
ALIVE_STATES = ACTIVE_STATES | {"UNKNOWN", "UNCONFIRMED"}  # never failed on this word alone


def check_optuna(spec: SweepSpec) -> None:
    """What an optuna search needs beyond a space: Optuna (and the sampler's package), no seeds."""
    search = spec.search
    if spec.seeds is not None:
        raise HpcdlError(
            "seeds: an optuna search runs each trial once; put train.seed in fixed (or in "
            "search.space)"
        )
    needed = ["optuna", SAMPLER_NEEDS.get(search.sampler)]
    for package in filter(None, needed):
        if importlib.util.find_spec(package) is None:
            raise HpcdlError(
                f"search.sampler {search.sampler!r}: needs the Python package {package!r} "
                f"(pip install {package})"
            )


def make_sampler(search: SearchSpec, seed: int | None) -> optuna.samplers.BaseSampler:
    """The spec's sampler; TPE lies about running trials so parallel workers spread out."""
    import optuna

    startup = {} if search.startup_trials is None else {"n_startup_trials": search.startup_trials}
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, constant_liar=True, **startup),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed, **startup),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
    }
    return samplers[search.sampler]()


def make_pruner(search: SearchSpec) -> optuna.pruners.BasePruner:
    """The spec's pruner on the metric per epoch (first rung at epoch `prune_after`)."""
    import optuna

    first = search.prune_after
    factor = (
        {} if search.reduction_factor is None else {"reduction_factor": search.reduction_factor}
    )
    pruners = {
        "none": optuna.pruners.NopPruner,
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=first),
        "asha": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=first, **factor),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=first, **factor),
    }
    return pruners[search.pruner]()


def open_study(spec: SweepSpec, sweep_dir: Path, seed: int | None = None) -> optuna.Study:
    """The sweep's study (created on first use), with sampler and pruner from the spec."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    path = str(Path(sweep_dir) / JOURNAL)
    lock = JournalFileOpenLock(path)
    drop_torn_record(Path(path), lock)
    storage = JournalStorage(JournalFileBackend(path, lock_obj=lock))
    study = {
        "storage": storage,
        "study_name": spec.name,
        "sampler": make_sampler(spec.search, seed),
        "pruner": make_pruner(spec.search),
    }
    try:  # loading writes nothing; create_study appends a record on every call
        return optuna.load_study(**study)
    except KeyError:  # the first open (load_if_exists: two workers may create it at once)
        return optuna.create_study(direction=spec.search.direction, load_if_exists=True, **study)


def drop_torn_record(path: Path, lock: Any) -> None:
    """Cut a last record without its newline: what a writer killed in the middle of a write
    leaves (Optuna would refuse every record appended after it). Under the journal's lock, so no
    live writer is cut off; the dead one's trial is settled from the scheduler's record."""

    def whole() -> bool:
        if not path.exists() or path.stat().st_size == 0:
            return True
        with open(path, "rb") as f:
            f.seek(-1, 2)
            return f.read(1) == b"\n"

    if whole():  # the usual case: no lock taken
        return
    lock.acquire()
    try:
        if whole():  # a live writer was finishing its record
            return
        with open(path, "rb+") as f:
            f.seek(0)
            data = f.read()
            f.truncate(data.rfind(b"\n") + 1)
            f.flush()
            os.fsync(f.fileno())
    finally:
        lock.release()


def suggest(trial: optuna.Trial, search: SearchSpec) -> dict[str, Any]:
    """The trial's settings from the space (choices that are lists or mappings go to Optuna
    as JSON text, which it can store, and come back as they were written)."""
    params: dict[str, Any] = {}
    for key, entry in search.space.items():
        values = entry.values
        if entry.kind == "choice":
            plain = all(v is None or isinstance(v, bool | int | float | str) for v in values)
            if plain:
                params[key] = trial.suggest_categorical(key, values)
            else:
                texts = [json.dumps(v) for v in values]
                params[key] = json.loads(trial.suggest_categorical(key, texts))
        elif entry.kind == "int":
            params[key] = trial.suggest_int(key, values[0], values[1])
        else:
            log = entry.kind == "loguniform"
            params[key] = trial.suggest_float(key, float(values[0]), float(values[1]), log=log)
    return params


def settle(manifest: Manifest, points: list[PointStatus]) -> list[int]:
    """Mark FAIL every RUNNING trial whose slot's job is no longer alive by the scheduler's
    word (failed, node failure, cancelled, out of memory, lost); returns their numbers."""
    import optuna

    from hpcdl.sweep.plan import spec_of

    sweep_dir = Path(manifest.sweep_dir)
    if not (sweep_dir / JOURNAL).exists():
        return []
    alive = {p.id for p in points if _alive(p)}
    study = open_study(spec_of(manifest), sweep_dir)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        slot = trial.user_attrs.get("slot")
        if (slot in alive) if slot else bool(alive):
            continue
        try:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        except (RuntimeError, ValueError):  # finished by its worker meanwhile
            continue
        failed.append(trial.number)
    return failed


def _alive(point: PointStatus) -> bool:
    """Whether a slot's job may still be working on its trial."""
    record_active = point.record is not None and point.record.state in ACTIVE_STATES
    return point.state in ALIVE_STATES or record_active
