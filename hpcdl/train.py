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

`train` follows Horovod's tensorflow2_keras_mnist.py example; the parts are in hpcdl.training:
agreement (Ranks), runfiles (RunFiles, Progress), epochs (EpochLoop), results.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcdl import rundir
from hpcdl.config import TrainConfig
from hpcdl.preempt import StopRequest
from hpcdl.training.agreement import Ranks
from hpcdl.training.epochs import EpochLoop, steps_per_epoch
from hpcdl.training.results import epoch_line, final_line, run_result, start_lines
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


def train(config: TrainConfig, run_dir: str | Path, log: Callable[[str], None] = print) -> Outcome:
    """Train `config` into `run_dir` on however many Horovod ranks this process belongs to."""
    from hpcdl import distributed
    from hpcdl.datasets import prepare
    from hpcdl.grid import check_loss
    from hpcdl.models import build_model
    from hpcdl.schedules import make_optimizer, make_schedule

    started, ts = time.time(), config.train
    # first: a time-limit warning or preemption during the slow start (imports, data, model)
    # must be a stop request at the first step, not SIGUSR1's default (the job dies)
    stopper = StopRequest().install()
    files = RunFiles(Path(run_dir).resolve(), config)
    ctx = distributed.init(ts.threads, ts.deterministic)  # 1. Horovod; a GPU (or threads) each
    tf, ranks = ctx.tf, Ranks(ctx, ts.compression)
    say = log if ctx.is_root else (lambda _msg: None)
    done = ranks.root_decides(files.finished_result)
    if done is not None:
        say(f"{files.path}: already finished (result.json present); not training again")
        return Outcome("already_finished", done, None, ctx.rank, ctx.size)

    # 2.-4.: everything that can be wrong with the config fails here, before anything is written
    tf.keras.utils.set_random_seed(ts.seed)
    data = prepare(config.data)  # 2. every rank loads it all and trains on its shard
    model = build_model(config.model, data.input_shape, data.n_classes, data.task)  # 3.
    check_loss(ts.loss, data.task)
    steps = steps_per_epoch(len(data.train), ts, ctx.size)
    schedule = make_schedule(tf, ts, ctx.size, steps)  # 4. lr x ranks, warm-up, decay
    optimizer = make_optimizer(tf, ts, schedule)
    optimizer.build(model.trainable_variables)

    progress = ranks.root_decides(lambda: files.open(model, optimizer))  # 5. rank 0 restores,
    ranks.broadcast_from_root(model.variables, optimizer.variables)  # every rank starts alike
    for line in start_lines(
        files.path, progress, config, data, ctx.size, steps, model.count_params()
    ):
        say(line)

    loop = EpochLoop(tf, ranks, data, ts, model, optimizer, schedule, files, say)
    with rundir.failure_recorded(files.path, enabled=ctx.is_root):
        for epoch in range(progress.epoch + 1, ts.epochs + 1):  # 6. epochs
            record = loop.run(epoch, progress, stopper)  # averaged gradients, sums over ranks
            best = progress.finish_epoch(epoch, record.get("val_loss", record["loss"]))
            keep = best and ts.keep == "best"
            ranks.root_decides(
                functools.partial(files.write_epoch, record, model, optimizer, progress, keep)
            )
            say(epoch_line(record, ts.epochs))
        if ts.keep == "best" and progress.best_epoch:  # the kept weights, on every rank
            if ctx.is_root:
                files.load_best(model)
            ranks.broadcast_from_root(model.variables)
        test = loop.evaluate(data.test, with_confusion=True)  # 7. test (split, then summed)
        pixels = loop.scene_predictions(data)  # a scene's classification map, every pixel
        ranks.root_decides(lambda: files.write_predictions(pixels))
        seconds = files.train_seconds() if ctx.is_root else 0.0
        result = run_result(
            config, data, model, ctx.size, progress, test, seconds, time.time() - started
        )
        ranks.root_decides(lambda: files.write_result(result))
    say(final_line(result))
    return Outcome("finished", result, model, ctx.rank, ctx.size)
