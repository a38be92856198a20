"""MNIST from the four IDX files (gzip-compressed or raw) or from Keras' mnist.npz."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from hpcdl.config import MnistData
from hpcdl.datasets.base import ArraySplit, Prepared
from hpcdl.datasets.sources import data_root, find_file, require_file
from hpcdl.errors import HpcdlError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the original MNIST format), gzip-compressed or not."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise HpcdlError(f"{path}: not an IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", count=ndim, offset=4).astype(int)
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = 4 + 4 * ndim + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise HpcdlError(f"{path}: truncated IDX file ({len(raw)} bytes, expected {expected})")
    return (
        np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(dims).astype(dtype.newbyteorder("="))
    )


def _idx(root: Path, stem: str) -> Path | None:
    return find_file("mnist", stem + ".gz", root) or find_file("mnist", stem, root)


def load_arrays(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): uint8 images and labels from IDX files or mnist.npz."""
    stems = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]
    paths = [_idx(root, s) for s in stems]
    if all(paths):
        arrays = [read_idx(p) for p in paths]
    else:
        npz = find_file("mnist", "mnist.npz", root)
        if npz is None:
            missing = stems[[p is None for p in paths].index(True)]
            require_file("mnist", missing + ".gz", root)  # raises the how-to-get-it error
        with np.load(npz) as f:
            arrays = [f[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    x_train, y_train, x_test, y_test = arrays
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise HpcdlError(f"mnist: images and labels differ in number under {root}")
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)


def prepare(cfg: MnistData) -> Prepared:
    """Pixels / 255; validation = the last `validation_split` of the training set, as in Keras."""
    x_train, y_train, x_test, y_test = load_arrays(data_root(cfg.dir))
    if cfg.train_subset:
        x_train, y_train = x_train[: cfg.train_subset], y_train[: cfg.train_subset]
    if cfg.test_subset:
        x_test, y_test = x_test[: cfg.test_subset], y_test[: cfg.test_subset]
    n_val = int(len(x_train) * cfg.validation_split)
    n_fit = len(x_train) - n_val
    val = ArraySplit(x_train[n_fit:], y_train[n_fit:], 0.0, 255.0) if n_val else None
    return Prepared(
        train=ArraySplit(x_train[:n_fit], y_train[:n_fit], 0.0, 255.0),
        val=val,
        test=ArraySplit(x_test, y_test, 0.0, 255.0),
        n_classes=10,
        input_shape=(28, 28, 1),
        info={"train": n_fit, "val": n_val, "test": len(x_test)},
    )
