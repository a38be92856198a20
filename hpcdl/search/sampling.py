"""The search space (`search.space`): checks, random points, and the probes that validate it."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from hpcdl.errors import HpcdlError

if TYPE_CHECKING:
    import numpy as np

    from hpcdl.spec import SpaceEntry, SweepSpec

MAX_DRAWS_PER_TRIAL = 100  # give up on `trials` distinct points after this many draws each


def check_sampled(spec: SweepSpec, varied: list[str]) -> None:
    """What every sampling method needs: trials and a space, and no grid beside them."""
    search, name = spec.search, spec.search.method
    if search.trials is None:
        raise HpcdlError(f"search.trials: method {name} needs the number of points (e.g. 20)")
    if not search.space:
        raise HpcdlError(f"search.space: method {name} needs the settings it samples")
    for key, used in (("grid", varied), ("include", spec.include), ("exclude", spec.exclude)):
        if used:
            raise HpcdlError(
                f"{key}: method {name} samples search.space; drop {key} (put fixed values "
                "in fixed, ranges in search.space)"
            )


def draw(entry: SpaceEntry, rng: np.random.Generator) -> Any:
    """One value of a space entry (floats to 6 significant digits, inside the bounds)."""
    values = entry.values
    if entry.kind == "choice":
        return values[int(rng.integers(len(values)))]
    if entry.kind == "int":
        return int(rng.integers(values[0], values[1] + 1))
    low, high = float(values[0]), float(values[1])
    if entry.kind == "loguniform":
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        value = rng.uniform(low, high)
    return min(max(float(f"{value:.6g}"), low), high)


def random_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Exactly `search.trials` distinct points drawn from `search.space` with `search.seed`
    (the same spec gives the same points), each once per entry of `seeds`."""
    import numpy as np

    from hpcdl.grid import with_seeds

    search = spec.search
    trials = search.trials or 0
    rng = np.random.default_rng(search.seed)
    points: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _ in range(trials * MAX_DRAWS_PER_TRIAL):
        if len(points) == trials:
            break
        point = {key: draw(entry, rng) for key, entry in search.space.items()}
        identity = json.dumps(point, sort_keys=True)
        if identity not in seen:
            seen.add(identity)
            points.append(point)
    if len(points) < trials:
        raise HpcdlError(
            f"search.trials: {trials} distinct points asked, but search.space holds only "
            f"{len(points)}"
        )
    return with_seeds(spec, points)


def probe_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Points that try every end of every range and every choice (the other settings at their
    first value), so that a space no trial could train in fails at planning time."""
    space = spec.search.space
    first = {key: entry.values[0] for key, entry in space.items()}
    probes = [dict(first)]
    for key, entry in space.items():
        for value in entry.values[1:]:
            probes.append({**first, key: value})
    return probes
