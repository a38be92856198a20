"""Expand a sweep spec into points: deterministic order, stable ids, every config validated."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

from hpcdl.config import TrainConfig, config_to_dict, parse_config, set_path
from hpcdl.errors import HpcdlError
from hpcdl.spec import ProgramSpec, RangeSpec, SweepSpec

_MISSING = object()


@dataclass(frozen=True)
class Point:
    """One run of a sweep: the values it sets and its validated config."""

    id: str
    overrides: dict[str, Any]
    config: TrainConfig | None  # None for a program sweep's point
    settings: dict[str, Any] | None = None  # a program point's settings (fixed + overrides)
    command: str | None = None  # a program point's command with its values filled in
    slot: bool = False  # a trial slot of an adaptive search: its settings come while it runs

    @property
    def label(self) -> str:
        return overrides_label(self.overrides)


def overrides_label(overrides: dict[str, Any]) -> str:
    """`train.lr=0.1 model.dropout=0.5`, or (base) for a point that sets nothing; a sampled
    float shows 4 significant digits (`train.lr=0.000285`)."""
    shown = {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in overrides.items()}
    return " ".join(f"{k}={v}" for k, v in shown.items()) or "(base)"


def get_path(raw: dict[str, Any], dotted: str, default: Any = _MISSING) -> Any:
    node: Any = raw
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def point_id(config: TrainConfig, overrides: dict[str, Any]) -> str:
    """Readable prefix from the varied values + a hash of the whole resolved config."""
    resolved = config_to_dict(config)
    resolved.pop("run_dir", None)
    return _id(resolved, overrides)


def _id(resolved: dict[str, Any], overrides: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:8]
    parts = [f"{k.rsplit('.', 1)[-1]}{_short(v)}" for k, v in overrides.items()]
    slug = re.sub(r"[^A-Za-z0-9.+=-]+", "_", "_".join(parts)).strip("_")[:60].rstrip("_")
    return f"{slug}-{digest}" if slug else digest


def _short(value: Any) -> str:
    if isinstance(value, list):
        return "x".join(_short(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _axes(spec: SweepSpec) -> list[list[dict[str, Any]]]:
    """Each axis is a list of override dicts; the points are their cartesian product."""
    axes = []
    for key, values in spec.grid.items():
        vals = values.values() if isinstance(values, RangeSpec) else values
        axes.append([{key: v} for v in vals])
    for group in spec.zip:
        n = len(next(iter(group.values())))
        axes.append([{k: vals[i] for k, vals in group.items()} for i in range(n)])
    return axes


def combinations(spec: SweepSpec) -> list[dict[str, Any]]:
    """The override dicts of every point: grid x zip groups, or only `include`, times seeds."""
    axes = _axes(spec)
    combos = [
        dict(itertools.chain.from_iterable(d.items() for d in combo))
        for combo in itertools.product(*axes)
    ]
    if not axes and spec.include:  # only `include`: exactly those points, not the base too
        combos = []
    combos += [dict(extra) for extra in spec.include]
    return with_seeds(spec, combos)


def with_seeds(spec: SweepSpec, combos: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every point once per entry of `seeds` (unchanged without seeds)."""
    if spec.seeds is None:
        return combos
    return [{**c, "train.seed": s} for c in combos for s in spec.seeds]


def trial_slots(spec: SweepSpec, probes: list[Point]) -> list[Point]:
    """An adaptive search's points: `search.trials` slots trial-0000, trial-0001, ... with the
    base config (or a program's fixed settings); each slot's job fills in its trial."""
    base = probes[0]
    settings = dict(spec.fixed) if base.config is None else None
    return [
        Point(f"trial-{i:04d}", {}, base.config, settings, None, slot=True)
        for i in range(spec.search.trials or 0)
    ]


def program_points(
    spec: SweepSpec, program: ProgramSpec, combos: list[dict[str, Any]], source: str
) -> list[Point]:
    """A program sweep's points: settings (fixed + overrides, dotted keys as in the spec) and
    the command filled in with them; the id hashes the command, its folder and the settings."""
    from hpcdl.program import fill

    points: list[Point] = []
    seen: set[str] = set()
    for overrides in combos:
        settings = {**spec.fixed, **overrides}
        if any(all(settings.get(k, _MISSING) == v for k, v in r.items()) for r in spec.exclude):
            continue
        where = f"{source}: point {overrides_label(overrides)}: program.command"
        command = fill(program.command, settings, where)
        identity = {"program": program.model_dump(), "settings": settings}
        pid = _id(identity, overrides)
        if pid not in seen:
            seen.add(pid)
            points.append(Point(pid, overrides, None, settings, command))
    if not points:
        raise HpcdlError(f"{source}: the grid is empty (exclude rules remove every point)")
    return points


def expand(spec: SweepSpec, base: dict[str, Any], source: str = "spec") -> list[Point]:
    """All points of the sweep, validated; raises HpcdlError naming the first bad point. The
    spec's search method makes them (the grid by default); an adaptive one's are trial slots."""
    from hpcdl.search import method_of

    method = method_of(spec)
    probes = validated_points(spec, base, method.probes(spec), source) if method.probes else []
    if method.adaptive:
        return trial_slots(spec, probes or validated_points(spec, base, [{}], source))
    return validated_points(spec, base, method.combinations(spec), source)


def validated_points(
    spec: SweepSpec, base: dict[str, Any], combos: list[dict[str, Any]], source: str
) -> list[Point]:
    """The points of these overrides, each config validated (and checked to fit its model)."""
    from hpcdl.datasets import expected_input_shape, expected_n_classes, expected_task
    from hpcdl.models import check_fits

    if spec.program is not None:
        return program_points(spec, spec.program, combos, source)
    points: list[Point] = []
    seen: set[str] = set()
    for overrides in combos:
        raw = copy.deepcopy(base)
        raw.pop("run_dir", None)
        for key, value in overrides.items():
            set_path(raw, key, value)
        if any(all(get_path(raw, k) == v for k, v in rule.items()) for rule in spec.exclude):
            continue
        where = f"{source}: point {' '.join(f'{k}={v}' for k, v in overrides.items()) or 'base'}"
        config = parse_config(raw, where)
        try:
            shape, task = expected_input_shape(config.data), expected_task(config.data)
            check_fits(config.model, shape, expected_n_classes(config.data), task)
            check_loss(config.train.loss, task)
        except HpcdlError as err:
            raise HpcdlError(f"{where}: {err}") from None
        pid = point_id(config, overrides)
        if pid not in seen:
            seen.add(pid)
            points.append(Point(pid, overrides, config))
    if not points:
        raise HpcdlError(f"{source}: the grid is empty (exclude rules remove every point)")
    return points


def check_loss(loss: str, task: str) -> None:
    """A regression trains on mse or mae; cross-entropy needs classes."""
    if task == "regression" and loss not in ("mse", "mae"):
        raise HpcdlError(f"train.loss: {loss} needs classes; a regression trains with mse or mae")
