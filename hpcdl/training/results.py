"""What a run reports: the loss, the per-epoch log line, the classification summary."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from hpcdl.files import utc_now


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
    if name == "mae":
        return lambda y, p: tf.reduce_mean(tf.abs(tf.cast(y, p.dtype) - p), axis=-1)
    return lambda y, p: tf.keras.losses.categorical_crossentropy(y, p, label_smoothing=smoothing)


def epoch_line(r: dict[str, Any], epochs: int) -> str:
    name, key = ("mae", "mae") if "mae" in r else ("acc", "accuracy")
    val = (
        f" val_loss {r['val_loss']:.4f} val_{name} {r[f'val_{key}']:.4f}" if "val_loss" in r else ""
    )
    return (
        f"epoch {r['epoch']}/{epochs} loss {r['loss']:.4f} {name} {r[key]:.4f}{val} "
        f"lr {r['lr']:.3g} {r['epoch_seconds']:.1f}s {r['samples_per_second']:.0f} samples/s"
    )


def start_lines(
    path: Any, progress: Any, config: Any, data: Any, size: int, steps: int, params: int
) -> list[str]:
    """What a (re)started run logs before its first epoch."""
    lines = []
    if progress.epoch or progress.step:
        within = f", step {progress.step} of epoch {progress.epoch + 1}" if progress.step else ""
        lines.append(f"resuming {path} after epoch {progress.epoch}{within}")
    ts = config.train
    lines.append(
        f"training {config.model.name} on {config.data.name}: {len(data.train)} train, "
        f"{len(data.val) if data.val else 0} validation, {len(data.test)} test samples; "
        f"{size} rank(s) x batch {ts.batch_size}, {steps} steps/epoch, "
        f"{params:,} parameters"
    )
    return lines


def run_result(
    config: Any,
    data: Any,
    model: Any,
    size: int,
    progress: Any,
    test: tuple[float, float, np.ndarray],
    train_seconds: float,
    wall_seconds: float,
) -> dict[str, Any]:
    """result.json: the test metrics and classification summary, what was kept, sizes, versions."""
    import horovod
    import tensorflow as tf

    from hpcdl import __version__

    ts = config.train
    test_loss, test_score, confusion = test
    scores = (
        {"test_mae": test_score}
        if data.task == "regression"
        else {"test_accuracy": test_score, **classification_summary(confusion)}
    )
    return {
        "status": "finished",
        "model": config.model.name,
        "data": config.data.name,
        "test_loss": test_loss,
        **scores,
        "epochs": ts.epochs,
        "kept": ts.keep,
        "kept_epoch": progress.best_epoch if ts.keep == "best" else ts.epochs,
        "best_epoch": progress.best_epoch,
        "best_monitored_loss": progress.best_loss,
        "params": int(model.count_params()),
        "ranks": size,
        "train_samples": len(data.train),
        "val_samples": len(data.val) if data.val else 0,
        "test_samples": len(data.test),
        "train_seconds": train_seconds,
        "wall_seconds_last_session": wall_seconds,
        "versions": {
            "hpcdl": __version__,
            "tensorflow": tf.__version__,
            "horovod": horovod.__version__,
        },
        "finished_at": utc_now(),
    }


def final_line(result: dict[str, Any]) -> str:
    """The last line a finished run logs."""
    if "test_mae" in result:
        return f"test loss {result['test_loss']:.4f} mae {result['test_mae']:.4f}"
    return (
        f"test loss {result['test_loss']:.4f} accuracy {result['test_accuracy']:.4f} "
        f"(average accuracy {result['average_accuracy']:.4f}, kappa {result['kappa']:.4f})"
    )
