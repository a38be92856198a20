"""Checkpoints as HDF5 files: model weights, optimizer state and the epoch, written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from hpcdl.errors import HpcdlError


def save(path: Path, model: Any, optimizer: Any, attrs: dict[str, Any]) -> None:
    """Write weights, optimizer variables and attrs to `path` via a temporary file and a rename."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            for group, values in (
                ("model", model.get_weights()),
                ("optimizer", [v.numpy() for v in optimizer.variables]),
            ):
                g = f.create_group(group)
                for i, value in enumerate(values):
                    g.create_dataset(f"{i:04d}", data=value)
            for key, value in attrs.items():
                f.attrs[key] = value
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # HDF5 reports a full disk as RuntimeError
        Path(tmp).unlink(missing_ok=True)
        reason = str(err).split("error message = ")[-1].strip("')\n ") or type(err).__name__
        raise HpcdlError(
            f"cannot write checkpoint {path} ({reason}); the previous one is kept"
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path, model: Any, optimizer: Any | None) -> dict[str, Any]:
    """Restore weights (and optimizer state when given) from `path`; return its attrs."""
    import h5py

    with h5py.File(path, "r") as f:
        weights = [f["model"][k][()] for k in sorted(f["model"])]
        model.set_weights(weights)
        if optimizer is not None:
            values = [f["optimizer"][k][()] for k in sorted(f["optimizer"])]
            if len(values) != len(optimizer.variables):
                raise ValueError(f"{path}: optimizer state does not match this optimizer")
            for var, value in zip(optimizer.variables, values, strict=True):
                var.assign(np.asarray(value))
        return dict(f.attrs)
