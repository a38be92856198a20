"""What a prepared data set looks like to the training loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ArraySplit:
    """Samples held in memory in their raw dtype, normalised batch by batch on `take`.

    take(idx) returns float32 ``(x - offset) / scale`` with a trailing channel axis.
    """

    x: np.ndarray
    labels: np.ndarray
    offset: Any = 0.0
    scale: Any = 1.0

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

    train: ArraySplit | WindowSplit
    val: ArraySplit | WindowSplit | None
    test: ArraySplit | WindowSplit
    n_classes: int
    input_shape: tuple[int, ...]
    info: dict[str, Any] = field(default_factory=dict)
