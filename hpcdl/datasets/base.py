"""What a prepared data set looks like to the training loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hpcdl.errors import HpcdlError


@dataclass
class ArraySplit:
    """Samples held in memory in their raw dtype, normalised batch by batch on `take`.

    take(idx) returns float32 ``(x - offset) / scale`` with a trailing channel axis.
    """

    x: np.ndarray
    labels: np.ndarray
    offset: Any = 0.0
    scale: Any = 1.0
    coords: np.ndarray | None = None  # (n, 2) row, col of each sample cut from a scene

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray) -> np.ndarray:
        return ((self.x[idx].astype(np.float32) - self.offset) / self.scale)[..., None]


@dataclass
class WindowSplit:
    """Windows cut from a padded cube on demand (no patch cache): take(idx) gathers them."""

    padded: np.ndarray  # (H + 2r, W + 2r, bands), raw dtype
    coords: np.ndarray  # (n, 2) row, col of each centre pixel in the unpadded image
    labels: np.ndarray
    window: int
    offset: Any = 0.0
    scale: Any = 1.0

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray) -> np.ndarray:
        batch = gather_windows(self.padded, self.coords[idx], self.window)
        return ((batch.astype(np.float32) - self.offset) / self.scale)[..., None]


def gather_windows(padded: np.ndarray, coords: np.ndarray, window: int) -> np.ndarray:
    """The (n, window, window, bands) windows whose top-left corners in `padded` are `coords`.

    With the cube padded by window // 2, that corner is the centre pixel's unpadded position.
    """
    d = np.arange(window)
    return padded[
        coords[:, 0][:, None, None] + d[None, :, None],
        coords[:, 1][:, None, None] + d[None, None, :],
    ]


@dataclass
class Prepared:
    """Train / validation / test splits plus what the model needs to know."""

    train: ArraySplit | WindowSplit | MemorySplit
    val: ArraySplit | WindowSplit | MemorySplit | None
    test: ArraySplit | WindowSplit | MemorySplit
    n_classes: int  # classification: classes; regression: outputs per sample
    input_shape: tuple[int, ...]
    info: dict[str, Any] = field(default_factory=dict)
    task: str = "classification"  # or "regression" (a user's loader may say so)


@dataclass
class MemorySplit:
    """A user's samples as given (float32, no channel axis added); take(idx) indexes them."""

    x: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray) -> np.ndarray:
        return self.x[idx]


def load_user_data(reference: str, kwargs: dict[str, Any], code: str | None) -> Prepared:
    """Call a user's `module:function` loader and check what it returns (see UserData)."""
    from hpcdl.datasets import DATASETS
    from hpcdl.registry import call_user_code, code_path

    what = f"data {reference!r}"
    with code_path(code):
        out = call_user_code(DATASETS, reference, kwargs, what, "loader")
    if not isinstance(out, dict) or not {"train", "test"} <= set(out):
        raise HpcdlError(
            f"{what}: the loader returned {type(out).__name__}; expected a mapping with train "
            "and test (and optionally validation, n_classes), each split (x, y) or a tf.data "
            "Dataset of (x, y)"
        )
    unknown = set(out) - {"train", "validation", "test", "n_classes", "task"}
    if unknown:
        raise HpcdlError(f"{what}: the loader returned unknown key {sorted(unknown)[0]!r}")
    task = out.get("task", "classification")
    if task not in ("classification", "regression"):
        raise HpcdlError(f"{what}: task must be classification or regression, got {task!r}")
    splits = {
        k: _user_split(out[k], f"{what}: {k}", task)
        for k in ("train", "validation", "test")
        if out.get(k) is not None
    }
    shapes = {k: s.x.shape[1:] for k, s in splits.items()}
    if len(set(shapes.values())) > 1:
        raise HpcdlError(f"{what}: the splits' samples differ in shape: {shapes}")
    if task == "regression":
        return _regression_data(splits, out, what)
    top = max(int(s.labels.max()) for s in splits.values())
    n_classes = out.get("n_classes", top + 1)
    if not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 2:
        raise HpcdlError(f"{what}: n_classes must be an integer >= 2, got {n_classes!r}")
    if top >= n_classes:
        raise HpcdlError(f"{what}: label {top} is out of range for n_classes {n_classes}")
    return Prepared(
        train=splits["train"],
        val=splits.get("validation"),
        test=splits["test"],
        n_classes=n_classes,
        input_shape=tuple(int(d) for d in splits["train"].x.shape[1:]),
        info={k: len(s) for k, s in splits.items()},
    )


def _regression_data(splits: dict[str, MemorySplit], out: dict, what: str) -> Prepared:
    """A regression loader's splits: targets of one shape, as many outputs as they have."""
    if "n_classes" in out:
        raise HpcdlError(f"{what}: a regression loader returns no n_classes")
    targets = {k: s.labels.shape[1:] for k, s in splits.items()}
    if len(set(targets.values())) > 1:
        raise HpcdlError(f"{what}: the splits' targets differ in shape: {targets}")
    return Prepared(
        train=splits["train"],
        val=splits.get("validation"),
        test=splits["test"],
        n_classes=int(np.prod(splits["train"].labels.shape[1:], dtype=int)),
        input_shape=tuple(int(d) for d in splits["train"].x.shape[1:]),
        info={k: len(s) for k, s in splits.items()},
        task="regression",
    )


def _user_split(split: Any, what: str, task: str = "classification") -> MemorySplit:
    """(x, y) arrays or a tf.data.Dataset of (x, y) -> MemorySplit, one-line errors if not."""
    if type(split).__module__.startswith("tensorflow"):
        split = _dataset_arrays(split, what)
    if not isinstance(split, (tuple, list)) or len(split) != 2:
        raise HpcdlError(
            f"{what}: expected (x, y) or a tf.data Dataset, got {type(split).__name__}"
        )
    try:
        x = np.asarray(split[0], dtype=np.float32)
        y = np.asarray(split[1])
    except (TypeError, ValueError) as err:
        raise HpcdlError(f"{what}: x or y is not numeric arrays ({err})") from None
    if task == "regression":
        return _regression_split(x, y, what)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or np.array_equal(y, y.round())):
        raise HpcdlError(
            f"{what}: y must be integer class labels, one per sample (got shape {y.shape}, "
            f"dtype {y.dtype}); not one-hot"
        )
    if len(x) != len(y) or len(y) == 0 or x.ndim < 2:
        raise HpcdlError(
            f"{what}: x {x.shape} and y {y.shape} must hold the same, non-zero number of samples"
        )
    if y.min() < 0:
        raise HpcdlError(f"{what}: labels must be >= 0, got {int(y.min())}")
    return MemorySplit(np.ascontiguousarray(x), y.astype(np.int64))


def _regression_split(x: np.ndarray, y: np.ndarray, what: str) -> MemorySplit:
    """Regression samples: y one number (or a vector of numbers) per sample, all finite."""
    if y.ndim not in (1, 2) or len(x) != len(y) or len(y) == 0 or x.ndim < 2:
        raise HpcdlError(
            f"{what}: x {x.shape} and y {y.shape} must hold the same, non-zero number of "
            "samples, y one number or one vector of numbers each"
        )
    try:
        targets = y.astype(np.float32)
    except (TypeError, ValueError) as err:
        raise HpcdlError(f"{what}: y is not numbers ({err})") from None
    if not np.isfinite(targets).all():
        raise HpcdlError(f"{what}: y holds NaN or infinite targets")
    return MemorySplit(np.ascontiguousarray(x), targets.reshape(len(targets), -1))


def _dataset_arrays(dataset: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """All (x, y) of a tf.data.Dataset as two arrays (a batched one is unbatched first)."""
    spec = getattr(dataset, "element_spec", None)
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise HpcdlError(f"{what}: the tf.data Dataset must yield (x, y) pairs, got {spec}")
    if spec[1].shape.rank == 1:  # a batch of integer labels
        dataset = dataset.unbatch()
    pairs = list(dataset.as_numpy_iterator())
    if not pairs:
        raise HpcdlError(f"{what}: the tf.data Dataset is empty")
    return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs])
