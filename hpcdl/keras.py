"""A Keras callback for `model.fit` scripts: reports to hpcdl through `hpcdl.session` and stops
cleanly on a time-limit or preemption signal.

    from hpcdl import session
    from hpcdl.keras import Callback

    model.fit(x, y, epochs=20, validation_data=(xv, yv), callbacks=[
        keras.callbacks.BackupAndRestore(session.checkpoint_dir()),  # resume after a requeue
        Callback(write_result=True),
    ])

Each finished epoch's logs become a metrics.jsonl line and TensorBoard scalars (epoch numbered
from 1, Keras' `acc`/`learning_rate` named accuracy/lr as hpcdl does); no Keras TensorBoard
callback is needed. Importing this module imports Keras: tf_keras when TF_USE_LEGACY_KERAS is
set (as TensorFlow's own tf.keras decides), else Keras 3.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from hpcdl import session
from hpcdl.logparse import keras_metric_name

if os.environ.get("TF_USE_LEGACY_KERAS", "") in ("1", "true", "True"):
    import tf_keras as keras
else:
    import keras


class Callback(keras.callbacks.Callback):
    """Report each finished epoch to hpcdl (rank 0 writes) and stop on a stop signal.

    On SIGUSR1/SIGTERM/SIGINT (see session.should_stop) training stops after the current batch
    and the unfinished epoch is not logged. With requeue=True (default) the process then leaves
    through session.requeue(): failure.json records why, the job is requeued where allowed, the
    exit code is 75, and a restart resumes from the last finished epoch's checkpoint (Keras'
    BackupAndRestore or ModelCheckpoint). With requeue=False only model.stop_training is set:
    fit returns, `stopped` says why, and the script saves and calls session.requeue() itself
    (other callbacks then see the unfinished epoch's on_epoch_end).

    write_result=True writes result.json from the last epoch's logs when training ends
    normally. Under Horovod with several ranks (horovod.tensorflow initialised) the ranks agree
    on stopping every `stop_check_batches` batches with one small allreduce, so all stop at the
    same batch (all ranks must run the same number of batches, as Horovod needs anyway).
    """

    def __init__(
        self, write_result: bool = False, requeue: bool = True, stop_check_batches: int = 10
    ) -> None:
        super().__init__()
        self.write_result = write_result
        self.requeue = requeue
        self.stop_check_batches = max(1, int(stop_check_batches))
        self.stopped = ""  # why training stopped early; "" when it did not
        self._epoch = 0
        self._batches = 0  # finished batches in this fit, the same count on every rank
        self._last: dict[str, Any] | None = None

    def on_train_begin(self, logs=None) -> None:
        session.should_stop()  # listen for stop signals from the first batch on

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None) -> None:
        self._batches += 1
        if self.stopped or not self._stop_agreed():
            return
        self.stopped = (
            f"stopped by {session.stop_signal() or 'another rank'} "
            f"at epoch {self._epoch + 1} batch {batch + 1}"
        )
        self.model.stop_training = True
        if self.requeue:
            session.requeue(self.stopped)

    def on_epoch_end(self, epoch, logs=None) -> None:
        if self.stopped:
            return  # the epoch did not finish
        metrics = {keras_metric_name(name): value for name, value in (logs or {}).items()}
        session.log(epoch=epoch + 1, **metrics)
        self._last = {"epochs": epoch + 1, **metrics}

    def on_train_end(self, logs=None) -> None:
        if self.write_result and not self.stopped and self._last:
            session.result(**self._last)

    def _stop_agreed(self) -> bool:
        """should_stop(), agreed across Horovod ranks when there are several."""
        stop = session.should_stop()
        hvd = sys.modules.get("horovod.tensorflow")
        if hvd is None or not hvd.is_initialized() or hvd.size() == 1:
            return stop
        if self._batches % self.stop_check_batches:
            return False
        import tensorflow as tf

        return bool(hvd.allreduce(tf.constant(int(stop)), op=hvd.Max).numpy())
