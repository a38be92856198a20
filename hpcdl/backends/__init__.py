"""Schedulers: one small class each, declaring only what differs (directives, commands, ids).

A backend is registered as a factory that takes the spec's `scheduler` options and returns a
`Backend`. A spec names a registered one (`backend: slurm`) or a user's `module:Class` whose
constructor takes those options (see ARCHITECTURE.md, "A scheduler").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hpcdl.backends.base import Backend, JobRecord, calls
from hpcdl.errors import HpcdlError
from hpcdl.registry import Registry, import_reference

BACKENDS: Registry[Callable[[Any], Backend]] = Registry(
    "backend", allow_references=True, reference="Class"
)


def _builtin(reference: str, *option_names: str) -> Callable[[Any], Backend]:
    """A factory that imports the class on first use and passes it the named options."""

    def make(options: Any = None) -> Backend:
        cls = import_reference(reference, "backend")
        return cls(*(getattr(options, name) for name in option_names if options is not None))

    return make


BACKENDS.register("local", _builtin("hpcdl.backends.local:Local"))
BACKENDS.register("slurm", _builtin("hpcdl.backends.slurm:Slurm"))
BACKENDS.register("pbs", _builtin("hpcdl.backends.pbs:PBS", "flavor"))


def get_backend(name: str, options: Any = None) -> Backend:
    """The backend for a spec's `backend` value, given its `scheduler` options."""
    backend = BACKENDS.get(name)(options)
    if not isinstance(backend, Backend):
        raise HpcdlError(f"backend {name!r} made a {type(backend).__name__}, not a Backend")
    return backend


__all__ = ["BACKENDS", "Backend", "JobRecord", "calls", "get_backend"]
