"""The run directory's reads and writes for one run (the file contract is hpcdl.rundir)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpcdl import rundir
from hpcdl.config import TrainConfig, config_to_dict
from hpcdl.errors import HpcdlError


def _first_difference(old: Any, new: Any, path: str = "") -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            diff = _first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else key)
            if diff:
                return diff
        return None
    return None if old == new else f"{path}: {old!r} -> {new!r}"


def check_run_dir(run_dir: Path, config: TrainConfig) -> None:
    """A run directory belongs to one config: refuse to resume a different one in it."""
    stored = run_dir / rundir.CONFIG
    if not stored.exists():
        return
    import yaml

    old = yaml.safe_load(stored.read_text()) or {}
    new = config_to_dict(config)
    old.pop("run_dir", None)
    new.pop("run_dir", None)
    diff = _first_difference(old, new)
    if diff:
        raise HpcdlError(
            f"{run_dir} holds a run with a different config ({diff}); "
            "use another --run-dir or delete that folder"
        )


def resolve_run_dir(config: TrainConfig, config_path: str | None, override: str | None) -> Path:
    """--run-dir, else the config's run_dir, else results/<config file stem>."""
    if override:
        return Path(override).resolve()
    if config.run_dir:
        return Path(config.run_dir).resolve()
    return (Path("results") / Path(config_path or "run").stem).resolve()
