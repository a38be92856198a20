"""Search methods: how a sweep's points are chosen (the spec's `search:` section).

    grid     the cartesian product of grid and zip (hpcdl.grid.combinations), the default
    random   `trials` points sampled from `space` at planning time, reproducible from `seed`
    optuna   `trials` slots; each slot's job asks an Optuna study for its point while it runs
             and prunes it on the metric per epoch (hpcdl.search.worker)

A method is a SearchMethod registered in SEARCH_METHODS, the built-ins as a user's would be;
a spec may also name a user's `module:attribute` that holds one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpcdl.errors import HpcdlError
from hpcdl.registry import Registry

if TYPE_CHECKING:
    from hpcdl.spec import SweepSpec


def no_check(spec: SweepSpec, varied: list[str]) -> None:
    """A method that accepts any spec the schema accepts."""


@dataclass(frozen=True)
class SearchMethod:
    """How a search method makes a sweep's points.

    combinations(spec) -> the points' overrides (dotted keys), validated like grid points;
    check(spec, varied) raises HpcdlError for a spec the method cannot run (varied: the keys
    grid and zip vary); probes(spec) -> overrides that are validated but never run (e.g. every
    end of the space, so that a space no trial could train in fails at planning); adaptive:
    the points are `search.trials` slots whose settings are chosen while their jobs run."""

    combinations: Callable[[SweepSpec], list[dict[str, Any]]]
    check: Callable[[SweepSpec, list[str]], None] = no_check
    adaptive: bool = False
    probes: Callable[[SweepSpec], list[dict[str, Any]]] | None = None


SEARCH_METHODS: Registry[SearchMethod] = Registry(
    "search method", allow_references=True, reference="SearchMethod"
)


def method_of(spec: SweepSpec) -> SearchMethod:
    """The spec's search method (a one-line error for an unknown one)."""
    method = SEARCH_METHODS.get(spec.search.method)
    if not isinstance(method, SearchMethod):
        raise HpcdlError(
            f"search.method {spec.search.method!r}: expected a hpcdl.search.SearchMethod, "
            f"got {type(method).__name__}"
        )
    return method


def is_adaptive(spec: dict[str, Any]) -> bool:
    """Whether a sweep's points are trial slots, from its spec as the manifest keeps it."""
    name = (spec.get("search") or {}).get("method", "grid")
    method = SEARCH_METHODS.get(name)
    return isinstance(method, SearchMethod) and method.adaptive


def _grid(spec: SweepSpec) -> list[dict[str, Any]]:
    from hpcdl.grid import combinations

    return combinations(spec)


def _check_grid(spec: SweepSpec, varied: list[str]) -> None:
    search = spec.search
    if search.space or search.trials is not None:
        raise HpcdlError(
            "search: method grid varies grid and zip; search.space and search.trials need "
            "method random or optuna"
        )


def _random(spec: SweepSpec) -> list[dict[str, Any]]:
    from hpcdl.search.sampling import random_points

    return random_points(spec)


def _check_sampled(spec: SweepSpec, varied: list[str]) -> None:
    from hpcdl.search.sampling import check_sampled

    check_sampled(spec, varied)


def _probes(spec: SweepSpec) -> list[dict[str, Any]]:
    from hpcdl.search.sampling import probe_points

    return probe_points(spec)


def _no_points(spec: SweepSpec) -> list[dict[str, Any]]:
    return []  # an adaptive method's points are its slots


def _check_optuna(spec: SweepSpec, varied: list[str]) -> None:
    from hpcdl.search.study import check_optuna

    _check_sampled(spec, varied)
    check_optuna(spec)


SEARCH_METHODS.register("grid", SearchMethod(_grid, _check_grid))
SEARCH_METHODS.register("random", SearchMethod(_random, _check_sampled, probes=_probes))
SEARCH_METHODS.register(
    "optuna", SearchMethod(_no_points, _check_optuna, adaptive=True, probes=_probes)
)
