"""One training run on 1 or N Horovod ranks (`hpcdl train CONFIG`).

The same code runs as a single process or under horovodrun, mpirun or ``srun --mpi=pmix``:
- every rank loads the data and takes its shard of each epoch's shuffled order: rank r of n gets
  positions r, r + n, ... so the n per-rank batches of a step together are exactly the global batch
  one rank of n x batch_size would see (remainders are dropped so every rank takes equal steps);
- the initial state (or the checkpoint rank 0 read) is broadcast from rank 0; gradients are averaged
  by Horovod's DistributedGradientTape; epoch metrics are summed over ranks, so they are exact;
- rank 0 alone writes the run directory (see hpcdl.rundir) and a checkpoint after every epoch.
Started again on the same run directory it resumes after the last checkpoint; a run with a
result.json is not trained again.
"""

from __future__ import annotations

import functools
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hpcdl import __version__, rundir
from hpcdl.config import TrainConfig
from hpcdl.errors import HpcdlError
from hpcdl.preempt import Stopped, StopRequest, requeue_blocker, requeue_self
from hpcdl.training.agreement import Ranks
from hpcdl.training.epochs import prefetch, shard_batches
from hpcdl.training.results import classification_summary, epoch_line, loss_fn
from hpcdl.training.runfiles import RunFiles, resolve_run_dir

__all__ = ["Outcome", "resolve_run_dir", "train"]


@dataclass
class Outcome:
    """How a run ended ('finished' or 'already_finished'), its result and this rank's model."""

    status: str
    result: dict[str, Any]
    model: Any = None
    rank: int = 0
    size: int = 1


# ---------------------------------------------------------------- the run
def train(config: TrainConfig, run_dir: str | Path, log: Callable[[str], None] = print) -> Outcome:
    """Train `config` into `run_dir` on however many Horovod ranks this process belongs to."""
    from hpcdl import distributed
    from hpcdl.datasets import prepare
    from hpcdl.models import build_model
    from hpcdl.schedules import make_optimizer, make_schedule

    started = time.time()
    files = RunFiles(Path(run_dir).resolve(), config)
    run_dir = files.path
    ts = config.train
    ctx = distributed.init(ts.threads, ts.deterministic)
    tf, ranks = ctx.tf, Ranks(ctx)
    say = log if ctx.is_root else (lambda _msg: None)

    done = ranks.root_decides(files.finished_result)
    if done is not None:
        say(f"{run_dir}: already finished (result.json present); not training again")
        return Outcome("already_finished", done, None, ctx.rank, ctx.size)

    # everything that can be wrong with the config fails here, before anything is written
    tf.keras.utils.set_random_seed(ts.seed)
    data = prepare(config.data)
    model = build_model(config.model, data.input_shape, data.n_classes)
    steps = len(
        shard_batches(len(data.train), ts.batch_size, 0, ctx.size, ts.seed, 0, ts.steps_per_epoch)
    )
    if steps == 0:
        raise HpcdlError(
            f"train.batch_size: {ts.batch_size} x {ctx.size} rank(s) is more than the "
            f"{len(data.train)} training samples"
        )
    schedule = make_schedule(tf, ts, ctx.size, steps)
    optimizer = make_optimizer(tf, ts, schedule)
    optimizer.build(model.trainable_variables)

    progress = ranks.root_decides(lambda: files.open(model, optimizer))
    ranks.broadcast_from_root(model.variables, optimizer.variables)
    if progress.epoch or progress.step:
        within = f", step {progress.step} of epoch {progress.epoch + 1}" if progress.step else ""
        say(f"resuming {run_dir} after epoch {progress.epoch}{within}")
    say(
        f"training {config.model.name} on {config.data.name}: {len(data.train)} train, "
        f"{len(data.val) if data.val else 0} validation, {len(data.test)} test samples; "
        f"{ctx.size} rank(s) x batch {ts.batch_size}, {steps} steps/epoch, "
        f"{model.count_params():,} parameters"
    )

    n_classes = data.n_classes
    per_sample_loss = loss_fn(tf, ts.loss, ts.label_smoothing)

    @tf.function(reduce_retracing=True, autograph=False)  # no source read: safe if files change
    def train_step(x, y):
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            loss = tf.reduce_mean(per_sample_loss(tf.one_hot(y, n_classes), probs))
            total = loss + tf.add_n(model.losses) if model.losses else loss
        grads = ranks.averaging(tape).gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probs, 1), y), tf.float32))
        return loss * tf.cast(tf.shape(y)[0], tf.float32), correct

    @tf.function(reduce_retracing=True, autograph=False)  # no source read: safe if files change
    def predict_step(x):
        return model(x, training=False)

    def evaluate(split, with_confusion: bool = False) -> tuple[float, float, np.ndarray | None]:
        idx = np.arange(len(split))[ctx.rank :: ctx.size]
        loss_sum, confusion = 0.0, np.zeros((n_classes, n_classes))
        for start in range(0, len(idx), ts.eval_batch_size):
            part = idx[start : start + ts.eval_batch_size]
            probs = predict_step(tf.constant(split.take(part))).numpy()
            truth = split.labels[part]
            loss_sum += float(
                per_sample_loss(np.eye(n_classes, dtype=np.float32)[truth], probs).numpy().sum()
            )
            confusion += np.bincount(
                truth * n_classes + probs.argmax(1), minlength=n_classes**2
            ).reshape(n_classes, n_classes)
        sums = ranks.sum([loss_sum, *confusion.ravel()])
        confusion = sums[1:].reshape(n_classes, n_classes)
        count = confusion.sum()
        return sums[0] / count, np.trace(confusion) / count, confusion if with_confusion else None

    def stop_now(epoch: int, step: int, partial: np.ndarray) -> None:
        """Checkpoint mid-epoch, record why, ask to be requeued, and leave (all ranks)."""
        signame = stopper.name or "a signal"
        reason = (
            f"stopped by {signame} at epoch {epoch} step {step}/{len(batches)}; checkpoint written"
        )

        def write():
            blocker = requeue_blocker()
            if stopper.signum == signal.SIGUSR1 and blocker:
                return None  # only a warning, and no requeue to gain from stopping early
            stopped_at = progress.within_epoch(step, partial)
            files.write_stop(reason + "; requeueing", model, optimizer, stopped_at)
            return requeue_self()

        note = ranks.root_decides(write)
        if note is None:
            stopper.ignore(signal.SIGUSR1)
            say(
                f"time-limit warning at epoch {epoch} step {step}: {requeue_blocker()}; "
                "training on, a checkpoint follows at the limit"
            )
            return
        say(f"{reason}; {note}")
        raise Stopped(f"{reason}; {note}")

    stopper = StopRequest().install()
    with rundir.failure_recorded(run_dir, enabled=ctx.is_root):
        for epoch in range(progress.epoch + 1, ts.epochs + 1):
            t0 = time.perf_counter()
            batches = shard_batches(
                len(data.train),
                ts.batch_size,
                ctx.rank,
                ctx.size,
                ts.seed,
                epoch,
                ts.steps_per_epoch,
            )
            # a resumed epoch skips the steps done before the stop; rank 0 carries their sums
            first = progress.step
            carried = progress.partial if first and ctx.is_root else [0.0] * 4
            sums, waited = [], 0.0
            feed = prefetch(
                batches[first:], lambda idx: (data.train.take(idx), data.train.labels[idx])
            )
            for step, ((x, y), wait) in enumerate(feed, start=first):
                waited += wait
                sums.append(train_step(tf.constant(x), tf.constant(y)))
                if step + 1 < len(batches) and ranks.stop_requested(stopper, step):
                    done = [float(np.sum([s[i] for s in sums])) for i in (0, 1)]
                    seconds = time.perf_counter() - t0
                    partial = ranks.sum(np.add(carried, [*done, waited, seconds / ctx.size]))
                    stop_now(epoch, step + 1, partial)
            loss_sum, correct = (float(np.sum([s[i] for s in sums])) for i in (0, 1))
            total = ranks.sum([loss_sum + carried[0], correct + carried[1], waited + carried[2]])
            count = len(batches) * ts.batch_size * ctx.size  # full batches, equal on all ranks
            train_seconds = time.perf_counter() - t0 + carried[3]
            record = {"epoch": epoch, "loss": total[0] / count, "accuracy": total[1] / count}
            if data.val is not None:
                record["val_loss"], record["val_accuracy"], _ = evaluate(data.val)
            epoch_seconds = time.perf_counter() - t0 + carried[3]
            record.update(
                {
                    "lr": float(schedule(optimizer.iterations)),
                    "epoch_seconds": epoch_seconds,
                    "samples_per_second": count / train_seconds,
                    "data_wait_seconds": total[2] / ctx.size,
                    "steps": len(batches),
                    "ranks": ctx.size,
                    "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                }
            )
            # a diverged run stops before its checkpoint replaces the last good one
            if not math.isfinite(record["loss"]):
                raise HpcdlError(
                    f"loss became {record['loss']} at epoch {epoch}; lower train.lr "
                    "or check the data"
                )
            monitored = record.get("val_loss", record["loss"])
            best = progress.finish_epoch(epoch, monitored) and ts.keep == "best"
            write = functools.partial(files.write_epoch, record, model, optimizer, progress, best)
            ranks.root_decides(write)
            say(epoch_line(record, ts.epochs))

        if ts.keep == "best" and progress.best_epoch:
            if ctx.is_root:
                files.load_best(model)
            ranks.broadcast_from_root(model.variables)
        test_loss, test_acc, confusion = evaluate(data.test, with_confusion=True)
        result = {
            "status": "finished",
            "model": config.model.name,
            "data": config.data.name,
            "test_loss": test_loss,
            "test_accuracy": test_acc,
            **classification_summary(confusion),
            "epochs": ts.epochs,
            "kept": ts.keep,
            "kept_epoch": progress.best_epoch if ts.keep == "best" else ts.epochs,
            "best_epoch": progress.best_epoch,
            "best_monitored_loss": progress.best_loss,
            "params": int(model.count_params()),
            "ranks": ctx.size,
            "train_samples": len(data.train),
            "val_samples": len(data.val) if data.val else 0,
            "test_samples": len(data.test),
            "train_seconds": files.train_seconds() if ctx.is_root else 0.0,
            "wall_seconds_last_session": time.time() - started,
            "versions": {
                "hpcdl": __version__,
                "tensorflow": tf.__version__,
                "horovod": _horovod_version(),
            },
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        ranks.root_decides(lambda: files.write_result(result))
    say(
        f"test loss {test_loss:.4f} accuracy {test_acc:.4f} "
        f"(average accuracy {result['average_accuracy']:.4f}, kappa {result['kappa']:.4f})"
    )
    return Outcome("finished", result, model, ctx.rank, ctx.size)


def _horovod_version() -> str:
    import horovod

    return horovod.__version__
