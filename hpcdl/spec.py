"""Sweep specs (YAML in jobs/): a base training config, a grid around it, and the resources of
every run. Validated as a whole before anything is written or submitted.

    name: mnist_lr                 # results go to <results_dir>/<name>/
    base: {model: ..., data: ..., train: ...}     # or  config: mnist_cnn.yaml  (relative path)
    fixed: {train.epochs: 5}       # settings every point shares, on top of base/config
    grid:                          # cartesian product, keys by dotted path
      train.lr: [0.001, 0.0003]
      model.dropout: {start: 0.0, stop: 0.5, step: 0.25}      # inclusive numeric range
      train.weight_decay: {start: 1.0e-5, stop: 1.0e-3, num: 3, log: true}
    zip:                           # groups of keys that vary together (one grid axis each)
      - {train.batch_size: [64, 128], train.lr: [0.0005, 0.001]}
    seeds: [1, 2, 3]               # every point once per train.seed
    exclude: [{train.optimizer: sgd, model.dropout: 0.5}]    # drop points matching all pairs
    include: [{train.optimizer: adamw, train.weight_decay: 0.01}]   # extra points (base + these);
                                   # with no grid and no zip, the points are exactly the includes
    resources: {nodes: 1, gpus_per_node: 2, cpus_per_task: 4, mem: 16G, time: "02:00:00", ...}
    backend: slurm                 # local (default) | slurm | pbs
    max_concurrent: 8              # array throttle (%8) / parallel runs on the local backend
    code: src/                     # folder with your own model / data code (relative to the spec)
    search:                        # instead of grid/zip: sample `trials` points (hpcdl.search)
      method: random               # grid (default) | random | optuna
      trials: 20
      space: {train.lr: {loguniform: [1.0e-4, 1.0e-1]}, train.batch_size: {choice: [32, 64]}}
"""

from __future__ import annotations

import copy
import math
import re
import shlex
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from hpcdl.config import format_validation_error, read_yaml, set_path
from hpcdl.errors import HpcdlError

_TIME = re.compile(r"(?:(\d+)-)?(?:(\d+):)?(\d+)(?::(\d+))?")
_MEM = re.compile(r"\d+(?:\.\d+)?[KMGT]?B?", re.IGNORECASE)
SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # what `export NAME=...` accepts
MAX_RANGE_VALUES = 10_000  # values one grid range may expand to
MAX_POINTS = 100_000  # points one sweep may have
# fields written into #SBATCH / #PBS lines as they are: one word each, no line breaks
DIRECTIVE_WORDS = ("partition", "account", "qos", "constraint", "gres")


def control_character(text: str) -> str | None:
    """The first line break or control character in `text` (None when there is none): one of
    them in a directive ends the scheduler's header early and starts a shell command."""
    for char in text:
        if unicodedata.category(char) == "Cc" or char in "\u2028\u2029":
            return char
    return None


def check_directive(value: str, one_word: bool = True) -> str:
    """A value that goes into a scheduler directive line as it is: printable, on one line,
    and (for `one_word`) without spaces. Raises ValueError saying what is wrong."""
    char = control_character(value)
    if char is not None:
        raise ValueError(
            f"{value!r} contains {char!r}: a scheduler directive must be one line of "
            "printable characters"
        )
    if one_word and (not value or any(c.isspace() for c in value)):
        raise ValueError(f"{value!r}: expected one word without spaces")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def time_to_seconds(text: str) -> int:
    """SLURM time formats: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS."""
    m = _TIME.fullmatch(text)
    if not m:
        raise ValueError(f"time {text!r}: expected HH:MM:SS, MM, or D-HH:MM:SS")
    days, a, b, c = m.groups()
    parts = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # D-HH[:MM[:SS]]
        hh, mm, ss = (parts + [0, 0, 0])[:3]
        total = int(days) * 86400 + hh * 3600 + mm * 60 + ss
    elif len(parts) == 1:
        total = parts[0] * 60
    elif len(parts) == 2:
        total = parts[0] * 60 + parts[1]
    else:
        total = parts[0] * 3600 + parts[1] * 60 + parts[2]
    if total <= 0:
        raise ValueError(f"time {text!r}: must be positive")
    return total


def seconds_to_hms(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Resources(_Strict):
    """What every run of the sweep asks the scheduler for."""

    nodes: Annotated[int, Field(gt=0)] = 1
    gpus_per_node: Annotated[int, Field(ge=0)] = 0
    tasks_per_node: Annotated[int, Field(gt=0)] | None = None  # default: gpus_per_node or 1
    cpus_per_task: Annotated[int, Field(gt=0)] = 1
    mem: str | None = None  # per node, e.g. 8G
    time: str = "01:00:00"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gres: str | None = None  # raw gres, e.g. gpu:a100:2 (instead of gpus_per_node)
    signal_seconds: Annotated[int, Field(ge=0)] = 120  # warning signal before the time limit
    extra: list[str] = []  # free-form directives, e.g. ["--mail-type=END"] or ["-m abe"]

    @field_validator("time")
    @classmethod
    def _time(cls, v: str) -> str:
        time_to_seconds(v)
        return v

    @field_validator("mem")
    @classmethod
    def _mem(cls, v: str | None) -> str | None:
        if v is not None and not _MEM.fullmatch(v):
            raise ValueError(f"mem {v!r}: expected a size such as 4000M or 16G")
        return v

    @field_validator(*DIRECTIVE_WORDS)
    @classmethod
    def _one_word(cls, v: str | None) -> str | None:
        return None if v is None else check_directive(v)

    @field_validator("extra")
    @classmethod
    def _directives(cls, extra: list[str]) -> list[str]:
        for item in extra:
            check_directive(item, one_word=False)
            if not item.startswith("-"):
                raise ValueError(f"{item!r}: expected a scheduler option such as --mail-type=END")
        return extra

    @model_validator(mode="after")
    def _one_rank_per_gpu(self) -> Resources:
        if self.tasks_per_node is None:
            self.tasks_per_node = max(1, self.gpus_per_node)
        elif self.gpus_per_node and self.tasks_per_node != self.gpus_per_node:
            raise ValueError(
                f"tasks_per_node {self.tasks_per_node} != gpus_per_node {self.gpus_per_node}: "
                "Horovod runs one rank per GPU"
            )
        return self

    @property
    def ranks(self) -> int:
        return self.nodes * (self.tasks_per_node or 1)

    @property
    def time_seconds(self) -> int:
        return time_to_seconds(self.time)


class SchedulerOptions(_Strict):
    """Per-scheduler knobs."""

    template: str | None = None  # your Jinja2 job script, relative to the spec (see slurm/)
    setup: list[str] = []  # shell lines before training, e.g. "module load cuda/12.2"
    launcher: Literal["auto", "srun", "mpirun", "horovodrun"] = "auto"
    max_array_size: Annotated[int, Field(gt=0)] | None = None  # default: ask the scheduler
    flavor: Literal["pro", "torque"] = "pro"  # PBS only
    requeue: Annotated[int, Field(ge=0)] = 3  # how often a run may requeue itself (time limits)


class RangeSpec(_Strict):
    start: float
    stop: float
    step: float | None = None
    num: Annotated[int, Field(gt=0)] | None = None
    log: bool = False

    def values(self) -> list[float]:
        if (self.step is None) == (self.num is None):
            raise ValueError("a range needs exactly one of step or num")
        bounds = (self.start, self.stop, self.step if self.step is not None else 1.0)
        if not all(math.isfinite(x) for x in bounds):
            raise ValueError(
                f"range {self.start}..{self.stop}: start, stop and step must be finite"
            )
        count = self.num if self.num is not None else self._step_count()
        if count > MAX_RANGE_VALUES:
            raise ValueError(f"a range of {count} values: at most {MAX_RANGE_VALUES}")
        if self.num is not None:
            if self.num == 1:
                return [self.start]
            if self.log:
                if self.start <= 0 or self.stop <= 0:
                    raise ValueError("a log range needs positive start and stop")
                a, b = math.log10(self.start), math.log10(self.stop)
                return [
                    float(f"{10 ** (a + (b - a) * i / (self.num - 1)):.6g}")
                    for i in range(self.num)
                ]
            return [
                float(f"{self.start + (self.stop - self.start) * i / (self.num - 1):.10g}")
                for i in range(self.num)
            ]
        return [float(f"{self.start + i * self.step:.10g}") for i in range(count)]

    def _step_count(self) -> int:
        steps = (self.stop - self.start) / self.step if self.step else -1.0
        if steps < 0:
            raise ValueError("step must move from start towards stop")
        if not math.isfinite(steps) or steps > MAX_RANGE_VALUES:
            raise ValueError(f"step {self.step}: more than {MAX_RANGE_VALUES} values")
        return int(math.floor(steps + 1e-9)) + 1


GridValues = list[Any] | RangeSpec


SPACE_KINDS = ("uniform", "loguniform", "int", "choice")


class SpaceEntry(BaseModel):
    """One searched setting: {uniform: [low, high]}, {loguniform: [low, high]} (low > 0),
    {int: [low, high]} (both ends included) or {choice: [value, ...]}."""

    kind: Literal["uniform", "loguniform", "int", "choice"]
    values: list[Any]

    @model_validator(mode="before")
    @classmethod
    def _one_kind(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in SPACE_KINDS:
            raise ValueError(
                f"expected one of {{uniform: [low, high]}}, {{loguniform: [low, high]}}, "
                f"{{int: [low, high]}} or {{choice: [values]}}, got {raw!r:.80}"
            )
        ((kind, values),) = raw.items()
        return {"kind": kind, "values": values}

    @model_validator(mode="after")
    def _bounds(self) -> SpaceEntry:
        v = self.values
        if self.kind == "choice":
            if not v:
                raise ValueError("choice: needs at least one value")
            return self
        numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
        if len(v) != 2 or not numeric:
            raise ValueError(f"{self.kind}: expected [low, high] (two numbers), got {v!r:.80}")
        if self.kind == "int" and not all(isinstance(x, int) for x in v):
            raise ValueError(f"int: expected two whole numbers [low, high], got {v!r:.80}")
        if not v[0] < v[1]:
            raise ValueError(f"{self.kind}: low must be below high, got {v!r:.80}")
        if self.kind == "loguniform" and v[0] <= 0:
            raise ValueError(f"loguniform: low must be positive, got {v!r:.80}")
        return self

    @model_serializer
    def _as_written(self) -> dict[str, list[Any]]:
        return {self.kind: self.values}


class SearchSpec(_Strict):
    """How the points are chosen (hpcdl.search): the grid, or `trials` sampled from `space`."""

    method: str = "grid"  # a registered search method (hpcdl.search.SEARCH_METHODS)
    trials: Annotated[int, Field(gt=0)] | None = None  # total points, exactly
    parallel: Annotated[int, Field(gt=0)] | None = None  # at most this many at once
    metric: Annotated[str, Field(min_length=1)] = "val_accuracy"  # optimised, ranks points
    direction: Literal["maximize", "minimize"] = "maximize"
    sampler: Literal["tpe", "gp", "cmaes", "random"] = "tpe"  # optuna
    pruner: Literal["none", "median", "asha", "hyperband"] = "none"  # optuna, per epoch
    # optuna tpe/gp: trials sampled at random before the sampler models (None: Optuna's, 10)
    startup_trials: Annotated[int, Field(ge=1)] | None = None
    # pruner: the first epoch at which a trial can be stopped (asha and hyperband: their first
    # rung; median: its warm-up); a model whose metric is noisy early needs a later one
    prune_after: Annotated[int, Field(ge=1)] = 1
    # asha, hyperband: 1 / reduction_factor of the trials go on at each rung (None: Optuna's,
    # 4 for asha, 3 for hyperband)
    reduction_factor: Annotated[int, Field(ge=2)] | None = None
    seed: int = 0
    space: dict[str, SpaceEntry] = {}

    @model_validator(mode="after")
    def _pruner_settings(self) -> SearchSpec:
        if self.reduction_factor is not None and self.pruner not in ("asha", "hyperband"):
            raise ValueError(
                f"search.reduction_factor: only for pruner asha or hyperband (not {self.pruner!r})"
            )
        if self.prune_after != 1 and self.pruner == "none":
            raise ValueError("search.prune_after: there is no pruner (search.pruner: none)")
        return self


class ProgramSpec(_Strict):
    """Your own training command instead of `hpcdl train` (see hpcdl.program)."""

    command: Annotated[str, Field(min_length=1)]
    workdir: str = "."  # where the command runs, relative to the spec

    @field_validator("command")
    @classmethod
    def _one_line(cls, command: str) -> str:
        if any(ord(c) < 32 for c in command):
            raise ValueError("must be one line without control characters (use a script file)")
        return command


class SweepSpec(_Strict):
    """A whole sweep: what varies, around what, on which resources and backend."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80)]
    base: dict[str, Any] | None = None
    config: str | None = None
    program: ProgramSpec | None = None
    fixed: dict[str, Any] = {}
    grid: dict[str, GridValues] = {}
    zip: list[dict[str, list[Any]]] = []
    seeds: list[int] | None = None
    include: list[dict[str, Any]] = []
    exclude: list[dict[str, Any]] = []
    resources: Resources = Resources()
    backend: str = "local"  # a registered backend (hpcdl.backends.BACKENDS) or module:Class
    max_concurrent: Annotated[int, Field(gt=0)] | None = None
    results_dir: str = "results"
    scheduler: SchedulerOptions = SchedulerOptions()
    env: dict[str, str] = {}
    collect: bool = True
    code: str | None = None  # folder with your model / data code, relative to the spec

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for name, value in env.items():
            if not SHELL_NAME.fullmatch(name):
                raise ValueError(
                    f"{name!r}: expected a shell variable name (letters, digits and _, "
                    "not starting with a digit)"
                )
            if "\0" in value:
                raise ValueError(f"{name}: {value!r} contains a NUL byte, which no shell holds")
        return env

    @field_validator("results_dir")
    @classmethod
    def _results_dir(cls, v: str) -> str:
        char = control_character(v)
        if char is not None:
            raise ValueError(f"{v!r} contains {char!r}: the folder lands in job directives")
        return v

    search: SearchSpec = SearchSpec()

    @field_validator("grid")
    @classmethod
    def _grid_values(cls, grid: dict[str, GridValues]) -> dict[str, GridValues]:
        for key, values in grid.items():
            try:
                expanded = values.values() if isinstance(values, RangeSpec) else values
            except ValueError as err:
                raise ValueError(f"{key}: {err}") from None
            if not expanded:
                raise ValueError(f"grid key {key!r} has no values")
        return grid

    @field_validator("zip")
    @classmethod
    def _zip_lengths(cls, groups: list[dict[str, list[Any]]]) -> list[dict[str, list[Any]]]:
        for i, group in enumerate(groups):
            lengths = {len(v) for v in group.values()}
            if len(lengths) != 1 or 0 in lengths:
                raise ValueError(
                    f"zip group {i}: every key needs the same, non-zero number of values "
                    f"(got {', '.join(f'{k}: {len(v)}' for k, v in group.items())})"
                )
        return groups

    @model_validator(mode="after")
    def _one_base(self) -> SweepSpec:
        if self.program is not None:
            if self.base is not None or self.config is not None:
                raise ValueError("a program sweep runs your command: drop base and config")
        elif (self.base is None) == (self.config is None):
            raise ValueError(
                "give either base (a training config), config (a path to one) or program "
                "(your own command)"
            )
        keys = list(self.grid) + [k for g in self.zip for k in g]
        dupes = {k for k in keys if keys.count(k) > 1}
        if dupes:
            raise ValueError(f"{sorted(dupes)[0]} is varied twice (grid and zip)")
        if self.seeds is not None and ("train.seed" in keys):
            raise ValueError("train.seed is varied by both seeds and the grid")
        from hpcdl.backends import get_backend  # the registry: built-ins and users' own

        try:
            get_backend(self.backend, self.scheduler).check(self.resources)
        except HpcdlError as err:
            raise ValueError(str(err)) from None
        self._check_search(keys)
        count = self.point_count()
        if count > MAX_POINTS:
            raise ValueError(f"the grid has {count} points: at most {MAX_POINTS}")
        return self

    def point_count(self) -> int:
        """How many points the grid, zip, include and seeds make (before exclude)."""
        sizes = [
            len(v.values()) if isinstance(v, RangeSpec) else len(v) for v in self.grid.values()
        ]
        sizes += [len(next(iter(group.values()), [])) for group in self.zip]
        combos = math.prod(sizes) if sizes else (0 if self.include else 1)
        return (combos + len(self.include)) * (len(self.seeds) if self.seeds is not None else 1)

    @model_validator(mode="after")
    def _sbatch_words(self) -> SweepSpec:
        """sbatch splits #SBATCH lines at spaces outside quotes: one option per extra item."""
        if self.backend != "slurm":
            return self
        for item in self.resources.extra:
            try:
                words = shlex.split(item)
            except ValueError:
                words = []
            if len(words) != 1:
                raise ValueError(
                    f"resources.extra: {item!r} is not one #SBATCH option; quote a value with "
                    'spaces (--comment="two words")'
                )
        return self

    def _check_search(self, varied: list[str]) -> None:
        """The search section against the rest of the spec, then the method's own checks."""
        from hpcdl.search import SEARCH_METHODS

        search = self.search
        try:
            method = SEARCH_METHODS.get(search.method)
        except HpcdlError as err:
            raise ValueError(f"search.method: {err}") from None
        if search.parallel is not None:
            if self.max_concurrent not in (None, search.parallel):
                raise ValueError(
                    f"search.parallel {search.parallel} and max_concurrent "
                    f"{self.max_concurrent} disagree: give one of them"
                )
            self.max_concurrent = search.parallel
        if self.seeds is not None and "train.seed" in search.space:
            raise ValueError("train.seed is varied by both seeds and search.space")
        try:
            method.check(self, varied)
        except HpcdlError as err:
            raise ValueError(str(err)) from None


def _read_yaml(path: str | Path) -> Any:
    """read_yaml, with a one-line error also for what PyYAML or the path itself rejects
    (control characters, an impossible date such as 2026-02-30, a NUL byte in a path)."""
    try:
        return read_yaml(path)
    except HpcdlError as err:  # PyYAML's reader errors span lines
        raise HpcdlError(" ".join(str(err).split())) from None
    except (ValueError, RecursionError) as err:
        raise HpcdlError(f"{path}: cannot read ({' '.join(str(err).split())})") from None


def load_spec(path: str | Path) -> tuple[SweepSpec, dict[str, Any]]:
    """Read and validate a sweep spec; returns it with the base training config it refers to."""
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise HpcdlError(f"{path}: expected a mapping (name, base or config, grid, resources, ...)")
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as err:
        raise HpcdlError(format_validation_error(err, str(path))) from None
    template = spec.scheduler.template
    if template is not None:  # relative to the spec, like `config`
        if "\0" in template:
            raise HpcdlError(f"{path}: scheduler.template: {template!r} contains a NUL byte")
        spec.scheduler.template = str((Path(path).parent / Path(template).expanduser()).resolve())
        if not Path(spec.scheduler.template).is_file():
            raise HpcdlError(f"{path}: scheduler.template: no file {spec.scheduler.template}")
    if spec.program is not None:
        workdir = (Path(path).parent / Path(spec.program.workdir).expanduser()).resolve()
        if not workdir.is_dir():
            raise HpcdlError(f"{path}: program.workdir: no folder {workdir}")
        spec.program.workdir = str(workdir)
        return spec, {}
    if spec.config is not None:
        base = _read_yaml(Path(path).parent / spec.config)
        if not isinstance(base, dict):
            raise HpcdlError(f"{path}: config {spec.config!r} is not a training config mapping")
    else:
        base = copy.deepcopy(spec.base)
    if spec.code is not None:  # relative to the spec; absolute in every run's config
        base["code"] = str((Path(path).parent / Path(spec.code).expanduser()).resolve())
    for key, value in spec.fixed.items():
        set_path(base, key, value)
    return spec, base
