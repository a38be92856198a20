"""What a run reports: the loss, the per-epoch log line, the classification summary."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np


def classification_summary(confusion: np.ndarray) -> dict[str, Any]:
    """Overall accuracy, average (per-class) accuracy and Cohen's kappa from a confusion matrix."""
    total = confusion.sum()
    support = confusion.sum(axis=1)
    per_class = np.divide(
        np.diag(confusion), support, out=np.full(len(support), np.nan), where=support > 0
    )
    overall = float(np.trace(confusion) / total) if total else float("nan")
    expected = float((support * confusion.sum(axis=0)).sum() / total**2) if total else float("nan")
    kappa = (overall - expected) / (1 - expected) if expected < 1 else float("nan")
    return {
        "overall_accuracy": overall,
        "average_accuracy": float(np.nanmean(per_class)),
        "kappa": float(kappa),
        "per_class_accuracy": [None if math.isnan(v) else float(v) for v in per_class],
        "confusion_matrix": confusion.astype(int).tolist(),
    }


def loss_fn(tf: Any, name: str, smoothing: float) -> Callable[[Any, Any], Any]:
    """Per-sample loss on one-hot targets and softmax outputs."""
    if name == "mse":
        return lambda y, p: tf.reduce_mean(tf.square(tf.cast(y, p.dtype) - p), axis=-1)
    return lambda y, p: tf.keras.losses.categorical_crossentropy(y, p, label_smoothing=smoothing)


def epoch_line(r: dict[str, Any], epochs: int) -> str:
    val = (
        f" val_loss {r['val_loss']:.4f} val_acc {r['val_accuracy']:.4f}" if "val_loss" in r else ""
    )
    return (
        f"epoch {r['epoch']}/{epochs} loss {r['loss']:.4f} acc {r['accuracy']:.4f}{val} "
        f"lr {r['lr']:.3g} {r['epoch_seconds']:.1f}s {r['samples_per_second']:.0f} samples/s"
    )
