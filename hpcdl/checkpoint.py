"""Checkpoints as HDF5 files: model weights, optimizer state and the epoch, written atomically."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from hpcdl.errors import HpcdlError
from hpcdl.files import write_bytes_atomic


def save(path: Path, model: Any, optimizer: Any, attrs: dict[str, Any]) -> None:
    """Write weights, optimizer variables and attrs to `path` atomically.

    The HDF5 file is built in memory (a checkpoint is a few times the model's size), then written
    to a temporary file, flushed to disk and renamed over the old one: a full disk or a quota
    raises an OSError with its errno, and the previous checkpoint stays as it was.
    """
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        for group, values in (
            ("model", model.get_weights()),
            ("optimizer", [v.numpy() for v in optimizer.variables]),
        ):
            g = f.create_group(group)
            for i, value in enumerate(values):
                g.create_dataset(f"{i:04d}", data=value)
        for key, value in attrs.items():
            f.attrs[key] = value
    try:
        write_bytes_atomic(path, buffer.getvalue())
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise HpcdlError(
            f"cannot write checkpoint {path} ({reason}); the previous one is kept"
        ) from None


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
