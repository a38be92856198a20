"""The epoch loop and its steps: each rank's shard of an epoch, prefetched batches, the compiled
train step (gradients averaged over the ranks), evaluation, and stopping mid-epoch on request."""

from __future__ import annotations

import math
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from hpcdl.config import TrainSettings
from hpcdl.errors import HpcdlError
from hpcdl.files import utc_now
from hpcdl.preempt import Stopped, StopRequest, requeue_blocker, requeue_self
from hpcdl.training.agreement import Ranks
from hpcdl.training.results import loss_fn
from hpcdl.training.runfiles import Progress, RunFiles


def shard_batches(
    n: int, batch: int, rank: int, size: int, seed: int, epoch: int, max_steps: int | None
) -> list[np.ndarray]:
    """This rank's index batches for one epoch (same global order on every rank)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    steps = n // (batch * size)
    if max_steps:
        steps = min(steps, max_steps)
    mine = order[rank::size]
    return [mine[i * batch : (i + 1) * batch] for i in range(steps)]


def flip_windows(x: np.ndarray, seed: list[int]) -> np.ndarray:
    """Each sample of a batch of square windows (n, w, w, ...) turned by a random one of the 8
    symmetries of the square (turns by 90 degrees, with or without a mirror), from `seed`."""
    if x.ndim < 3 or x.shape[1] != x.shape[2]:
        raise HpcdlError(f"train.augment: flips needs square windows, got samples of {x.shape[1:]}")
    which = np.random.default_rng(seed).integers(0, 8, len(x))
    out = np.empty_like(x)
    for k in range(8):
        chosen = which == k
        if chosen.any():
            turned = np.rot90(x[chosen], k % 4, axes=(1, 2))
            out[chosen] = turned[:, :, ::-1] if k >= 4 else turned
    return out


def prefetch(
    batches: list[np.ndarray], take: Callable[[np.ndarray], Any], depth: int = 2
) -> Iterator[tuple[Any, float]]:
    """Yield (take(batch), seconds waited for it) with `depth` batches prepared in a thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work():
        try:
            for idx in batches:
                if stop.is_set():
                    return
                q.put((take(idx), None))
        except BaseException as err:  # surfaces in the training thread
            q.put((None, err))

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        for _ in batches:
            t0 = time.perf_counter()
            item, err = q.get()
            if err is not None:
                raise err
            yield item, time.perf_counter() - t0
    finally:
        stop.set()


def steps_per_epoch(n: int, settings: TrainSettings, size: int) -> int:
    """Steps every rank takes each epoch; an error when one global batch is more than the data."""
    batches = shard_batches(
        n, settings.batch_size, 0, size, settings.seed, 0, settings.steps_per_epoch
    )
    if not batches:
        raise HpcdlError(
            f"train.batch_size: {settings.batch_size} x {size} rank(s) is more than the "
            f"{n} training samples"
        )
    return len(batches)


def compile_steps(
    tf: Any,
    model: Any,
    optimizer: Any,
    per_sample_loss: Callable,
    n_classes: int,
    ranks: Ranks,
    regression: bool = False,
) -> tuple[Callable, Callable]:
    """The train step (gradients averaged over the ranks) and the predict step, as graphs.
    The step's second sum is the batch's right answers, or for a regression its absolute
    error (mean over the outputs) summed over the samples."""

    @tf.function(reduce_retracing=True, autograph=False)  # no source read: safe if files change
    def train_step(x, y):
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            targets = tf.cast(y, probs.dtype) if regression else tf.one_hot(y, n_classes)
            loss = tf.reduce_mean(per_sample_loss(targets, probs))
            total = loss + tf.add_n(model.losses) if model.losses else loss
        grads = ranks.averaging(tape).gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        if regression:
            score = tf.reduce_sum(tf.reduce_mean(tf.abs(targets - probs), axis=-1))
        else:
            score = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probs, 1), y), tf.float32))
        return loss * tf.cast(tf.shape(y)[0], tf.float32), score

    @tf.function(reduce_retracing=True, autograph=False)  # no source read: safe if files change
    def predict_step(x):
        return model(x, training=False)

    return train_step, predict_step


class EpochLoop:
    """One rank's epochs: its shard of the training data in compiled steps, sums over ranks,
    validation, and a mid-epoch checkpoint when the ranks agree on a stop request."""

    def __init__(self, tf, ranks, data, settings, model, optimizer, schedule, files, say) -> None:
        self.tf, self.ranks, self.data, self.settings = tf, ranks, data, settings
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.files: RunFiles = files
        self.say: Callable[[str], None] = say
        self.n_classes = data.n_classes
        self.regression = data.task == "regression"
        self.score = "mae" if self.regression else "accuracy"  # the epoch line's second metric
        self.per_sample_loss = loss_fn(tf, settings.loss, settings.label_smoothing)
        self.train_step, self.predict_step = compile_steps(
            tf, model, optimizer, self.per_sample_loss, self.n_classes, ranks, self.regression
        )

    def run(self, epoch: int, progress: Progress, stopper: StopRequest) -> dict[str, Any]:
        """Train epoch `epoch` (from step `progress.step`), validate; its metrics line."""
        t0 = time.perf_counter()
        ts, size = self.settings, self.ranks.size
        batches = shard_batches(
            len(self.data.train),
            ts.batch_size,
            self.ranks.rank,
            size,
            ts.seed,
            epoch,
            ts.steps_per_epoch,
        )
        total, carried_seconds = self._steps(epoch, batches, progress, stopper, t0)
        count = len(batches) * ts.batch_size * size  # full batches, equal on all ranks
        train_seconds = time.perf_counter() - t0 + carried_seconds
        record = {"epoch": epoch, "loss": total[0] / count, self.score: total[1] / count}
        if self.data.val is not None:
            record["val_loss"], record[f"val_{self.score}"], _ = self.evaluate(self.data.val)
        epoch_seconds = time.perf_counter() - t0 + carried_seconds
        record.update(
            {
                "lr": float(self.schedule(self.optimizer.iterations)),
                "epoch_seconds": epoch_seconds,
                "samples_per_second": count / train_seconds,
                "data_wait_seconds": total[2] / size,
                "steps": len(batches),
                "ranks": size,
                "time": utc_now(),
            }
        )
        # a diverged run stops before its checkpoint replaces the last good one
        if not math.isfinite(record["loss"]):
            raise HpcdlError(
                f"loss became {record['loss']} at epoch {epoch}; lower train.lr or check the data"
            )
        return record

    def _steps(self, epoch, batches, progress, stopper, t0) -> tuple[np.ndarray, float]:
        """(loss, correct, data wait) summed over the epoch's steps and the ranks, and the seconds
        carried over from before a stop (a resumed epoch skips the steps done; rank 0 carries
        their sums)."""
        tf, size = self.tf, self.ranks.size
        first = progress.step
        carried = progress.partial if first and self.ranks.is_root else [0.0] * 4
        sums, waited = [], 0.0
        train = self.data.train
        seed = self.settings.seed

        def take(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            x = train.take(idx)
            if self.settings.augment == "flips":  # the batch's own seed: a resume draws the same
                x = flip_windows(x, [seed, epoch, *idx[:4].tolist()])
            return x, train.labels[idx]

        feed = prefetch(batches[first:], take)
        for step, ((x, y), wait) in enumerate(feed, start=first):
            waited += wait
            sums.append(self.train_step(tf.constant(x), tf.constant(y)))
            if step + 1 < len(batches) and self.ranks.stop_requested(stopper, step):
                done = [float(np.sum([s[i] for s in sums])) for i in (0, 1)]
                seconds = time.perf_counter() - t0
                partial = self.ranks.sum(np.add(carried, [*done, waited, seconds / size]))
                at = progress.within_epoch(step + 1, partial)
                self._stop(stopper, epoch, len(batches), at)
        loss_sum, correct = (float(np.sum([s[i] for s in sums])) for i in (0, 1))
        total = self.ranks.sum([loss_sum + carried[0], correct + carried[1], waited + carried[2]])
        return total, carried[3]

    def _stop(self, stopper: StopRequest, epoch: int, steps: int, at: Progress) -> None:
        """Checkpoint mid-epoch, record why, ask to be requeued, and leave (all ranks); after a
        time-limit warning that gains nothing (no requeue possible), train on."""
        signame = stopper.name or "a signal"
        reason = f"stopped by {signame} at epoch {epoch} step {at.step}/{steps}; checkpoint written"

        def write():
            blocker = requeue_blocker()
            if stopper.signum == signal.SIGUSR1 and blocker:
                return None  # only a warning, and no requeue to gain from stopping early
            self.files.write_stop(reason + "; requeueing", self.model, self.optimizer, at)
            return requeue_self()

        note = self.ranks.root_decides(write)
        if note is None:
            stopper.ignore(signal.SIGUSR1)
            self.say(
                f"time-limit warning at epoch {epoch} step {at.step}: {requeue_blocker()}; "
                "training on, a checkpoint follows at the limit"
            )
            return
        self.say(f"{reason}; {note}")
        raise Stopped(f"{reason}; {note}")

    def predict_classes(self, split) -> np.ndarray:
        """The predicted class of every sample of `split`, on every rank (each rank predicts
        every size-th sample; one sum over the ranks puts them together)."""
        idx = np.arange(len(split))[self.ranks.rank :: self.ranks.size]
        mine = np.zeros(len(split))
        for start in range(0, len(idx), self.settings.eval_batch_size):
            part = idx[start : start + self.settings.eval_batch_size]
            probs = self.predict_step(self.tf.constant(split.take(part))).numpy()
            mine[part] = probs.argmax(1) + 1  # 0: another rank's sample
        return self.ranks.sum(mine).astype(np.int64) - 1

    def scene_predictions(self, data) -> dict[str, np.ndarray] | None:
        """For data cut from one scene (pixels with coordinates): every labelled pixel's
        row, column, true class, predicted class and split (0 train, 1 validation, 2 test), for
        the classification map; None for other data."""
        splits = [(0, data.train), (1, data.val), (2, data.test)]
        splits = [(code, split) for code, split in splits if split is not None and len(split)]
        if "scene_shape" not in data.info or any(
            getattr(split, "coords", None) is None for _, split in splits
        ):
            return None
        return {
            "coords": np.concatenate([split.coords for _, split in splits]).astype(np.int32),
            "truth": np.concatenate([split.labels for _, split in splits]).astype(np.int16),
            "predicted": np.concatenate([self.predict_classes(s) for _, s in splits]).astype(
                np.int16
            ),
            "split": np.concatenate([np.full(len(s), code, np.int8) for code, s in splits]),
            "shape": np.array(data.info["scene_shape"]),
        }

    def evaluate(self, split, with_confusion: bool = False) -> tuple[float, float, Any]:
        """Loss and accuracy on `split` (each rank takes every size-th sample; sums over ranks),
        and the confusion matrix when asked; for a regression loss, mean absolute error, None."""
        if self.regression:
            return self._evaluate_regression(split)
        tf, n_classes, batch = self.tf, self.n_classes, self.settings.eval_batch_size
        idx = np.arange(len(split))[self.ranks.rank :: self.ranks.size]
        loss_sum, confusion = 0.0, np.zeros((n_classes, n_classes))
        for start in range(0, len(idx), batch):
            part = idx[start : start + batch]
            probs = self.predict_step(tf.constant(split.take(part))).numpy()
            truth = split.labels[part]
            loss_sum += float(
                self.per_sample_loss(np.eye(n_classes, dtype=np.float32)[truth], probs)
                .numpy()
                .sum()
            )
            confusion += np.bincount(
                truth * n_classes + probs.argmax(1), minlength=n_classes**2
            ).reshape(n_classes, n_classes)
        sums = self.ranks.sum([loss_sum, *confusion.ravel()])
        confusion = sums[1:].reshape(n_classes, n_classes)
        count = confusion.sum()
        return sums[0] / count, np.trace(confusion) / count, confusion if with_confusion else None

    def _evaluate_regression(self, split) -> tuple[float, float, None]:
        idx = np.arange(len(split))[self.ranks.rank :: self.ranks.size]
        loss_sum, error_sum, batch = 0.0, 0.0, self.settings.eval_batch_size
        for start in range(0, len(idx), batch):
            part = idx[start : start + batch]
            out = self.predict_step(self.tf.constant(split.take(part))).numpy()
            truth = split.labels[part].astype(out.dtype)
            loss_sum += float(self.per_sample_loss(truth, out).numpy().sum())
            error_sum += float(np.abs(truth - out).mean(axis=-1).sum())
        loss, error = self.ranks.sum([loss_sum, error_sum]) / len(split)
        return float(loss), float(error), None
