"""Schedulers: one small class each, declaring only what differs (directives, commands, ids)."""

from __future__ import annotations

from hpcdl.backends.base import Backend, JobRecord, calls
from hpcdl.errors import HpcdlError


def get_backend(name: str, flavor: str = "pro") -> Backend:
    """The backend class for a spec's `backend` value."""
    if name == "slurm":
        from hpcdl.backends.slurm import Slurm

        return Slurm()
    if name == "pbs":
        from hpcdl.backends.pbs import PBS

        return PBS(flavor)
    if name == "local":
        from hpcdl.backends.local import Local

        return Local()
    raise HpcdlError(f"unknown backend {name!r}; choose local, slurm or pbs")


__all__ = ["Backend", "JobRecord", "calls", "get_backend"]
