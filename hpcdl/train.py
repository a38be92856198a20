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

from hpcdl import __version__, checkpoint, rundir
from hpcdl.config import TrainConfig, config_to_dict
from hpcdl.errors import HpcdlError
from hpcdl.preempt import Stopped, StopRequest, requeue_blocker, requeue_self
from hpcdl.training.agreement import Ranks
from hpcdl.training.epochs import prefetch, shard_batches
from hpcdl.training.results import classification_summary, epoch_line, loss_fn
from hpcdl.training.runfiles import check_run_dir, resolve_run_dir

__all__ = ["Outcome", "resolve_run_dir", "train"]

PARTIAL_KEYS = ("partial_loss", "partial_correct", "partial_wait", "partial_seconds")
FRESH_STATE = {
    "epoch": 0,
    "step": 0,
    "best_loss": float("inf"),
    "best_epoch": 0,
    **dict.fromkeys(PARTIAL_KEYS, 0.0),
}


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
    run_dir = Path(run_dir).resolve()
    ts = config.train
    ctx = distributed.init(ts.threads, ts.deterministic)
    tf, ranks = ctx.tf, Ranks(ctx)
    say = log if ctx.is_root else (lambda _msg: None)

    def finished_result():
        check_run_dir(run_dir, config)
        path = run_dir / rundir.RESULT
        return rundir.read_json(path) if path.exists() else None

    done = ranks.root_decides(finished_result)
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

    ckpt_dir = run_dir / rundir.CHECKPOINTS

    def open_run_dir():
        run_dir.mkdir(parents=True, exist_ok=True)
        rundir.write_yaml_atomic(
            run_dir / rundir.CONFIG, {**config_to_dict(config), "run_dir": str(run_dir)}
        )
        (run_dir / rundir.FAILURE).unlink(missing_ok=True)
        state = dict(FRESH_STATE)
        if (ckpt_dir / "last.h5").exists():
            attrs = checkpoint.load(ckpt_dir / "last.h5", model, optimizer)
            state.update({k: _plain(v) for k, v in attrs.items() if k in state})
        rundir.truncate_metrics(run_dir, state["epoch"])
        return state

    state = ranks.root_decides(open_run_dir)
    ranks.broadcast_from_root(model.variables, optimizer.variables)
    if state["epoch"] or state["step"]:
        within = f", step {state['step']} of epoch {state['epoch'] + 1}" if state["step"] else ""
        say(f"resuming {run_dir} after epoch {state['epoch']}{within}")
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

    def save_checkpoint(name: str, epoch: int, step: int = 0, partial=(0.0, 0.0, 0.0, 0.0)):
        """epoch: epochs completed; step > 0: that many steps of the next one, whose running
        sums over all ranks (loss, correct, wait, seconds) are `partial`."""
        checkpoint.save(
            ckpt_dir / name,
            model,
            optimizer,
            {
                "epoch": epoch,
                "step": step,
                "best_loss": state["best_loss"],
                "best_epoch": state["best_epoch"],
                **dict(zip(PARTIAL_KEYS, partial, strict=True)),
            },
        )

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
            save_checkpoint("last.h5", epoch - 1, step, tuple(partial))
            rundir.write_json_atomic(run_dir / rundir.FAILURE, {"reason": reason + "; requeueing"})
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

    def write_epoch(record: dict[str, Any], epoch: int, improved: bool) -> None:
        """Rank 0: the metrics line first, then the checkpoints (resume trims extra lines)."""
        rundir.append_metrics(run_dir, record)
        if improved and ts.keep == "best":
            save_checkpoint("best.h5", epoch)
        save_checkpoint("last.h5", epoch)

    stopper = StopRequest().install()
    with rundir.failure_recorded(run_dir, enabled=ctx.is_root):
        for epoch in range(state["epoch"] + 1, ts.epochs + 1):
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
            first = state["step"] if epoch == state["epoch"] + 1 else 0
            carried = [state[k] for k in PARTIAL_KEYS] if first and ctx.is_root else [0.0] * 4
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
            improved = monitored < state["best_loss"]
            if improved:
                state["best_loss"], state["best_epoch"] = monitored, epoch

            ranks.root_decides(functools.partial(write_epoch, record, epoch, improved))
            say(epoch_line(record, ts.epochs))

        if ts.keep == "best" and state["best_epoch"]:
            if ctx.is_root:
                checkpoint.load(ckpt_dir / "best.h5", model, None)
            ranks.broadcast_from_root(model.variables)
        test_loss, test_acc, confusion = evaluate(data.test, with_confusion=True)
        records, _ = rundir.read_metrics(run_dir) if ctx.is_root else ([], [])
        result = {
            "status": "finished",
            "model": config.model.name,
            "data": config.data.name,
            "test_loss": test_loss,
            "test_accuracy": test_acc,
            **classification_summary(confusion),
            "epochs": ts.epochs,
            "kept": ts.keep,
            "kept_epoch": state["best_epoch"] if ts.keep == "best" else ts.epochs,
            "best_epoch": state["best_epoch"],
            "best_monitored_loss": state["best_loss"],
            "params": int(model.count_params()),
            "ranks": ctx.size,
            "train_samples": len(data.train),
            "val_samples": len(data.val) if data.val else 0,
            "test_samples": len(data.test),
            "train_seconds": float(sum(r.get("epoch_seconds", 0.0) for r in records)),
            "wall_seconds_last_session": time.time() - started,
            "versions": {
                "hpcdl": __version__,
                "tensorflow": tf.__version__,
                "horovod": _horovod_version(),
            },
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        ranks.root_decides(lambda: rundir.write_json_atomic(run_dir / rundir.RESULT, result))
    say(
        f"test loss {test_loss:.4f} accuracy {test_acc:.4f} "
        f"(average accuracy {result['average_accuracy']:.4f}, kappa {result['kappa']:.4f})"
    )
    return Outcome("finished", result, model, ctx.rank, ctx.size)


def _plain(value: Any) -> Any:
    """An HDF5 attribute as a Python number."""
    return value.item() if hasattr(value, "item") else value


def _horovod_version() -> str:
    import horovod

    return horovod.__version__
