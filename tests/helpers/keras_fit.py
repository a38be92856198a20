"""A plain Keras MNIST script using hpcdl.keras.Callback, as a user would write one.

usage: keras_fit.py VERBOSE EPOCHS [STOP_EPOCH STOP_BATCH]
The run directory is $HPCDL_RUN_DIR; the data the first 512 MNIST training images in
$HPCDL_DATA_DIR/mnist. With STOP_EPOCH/STOP_BATCH (from 1) the script sends itself SIGUSR1
during that batch, as SLURM's time-limit warning would. Keras' BackupAndRestore keeps the last
finished epoch in session.checkpoint_dir(), so a restart resumes after it. The test set
evaluation at the end prints one more progress line, as such scripts do.

KERAS_FIT_HOROVOD=1: Horovod's data-parallel recipe instead (shards, averaged gradients, state
broadcast from rank 0, no BackupAndRestore); only the last rank sends itself the signal.
"""

import gzip
import os
import signal
import sys

import numpy as np

from hpcdl import session
from hpcdl.keras import Callback, keras

use_horovod = os.environ.get("KERAS_FIT_HOROVOD") == "1"
if use_horovod:
    import horovod.tensorflow.keras as hvd

    hvd.init()

verbose, epochs = int(sys.argv[1]), int(sys.argv[2])
stop_at = (int(sys.argv[3]) - 1, int(sys.argv[4]) - 1) if len(sys.argv) > 4 else None
folder = os.path.join(os.environ["HPCDL_DATA_DIR"], "mnist")
with gzip.open(os.path.join(folder, "train-images-idx3-ubyte.gz")) as f:
    x = np.frombuffer(f.read(16 + 512 * 784)[16:], np.uint8).reshape(512, 28, 28, 1) / 255.0
with gzip.open(os.path.join(folder, "train-labels-idx1-ubyte.gz")) as f:
    y = np.frombuffer(f.read(8 + 512)[8:], np.uint8).astype("int64")

keras.utils.set_random_seed(1)
model = keras.Sequential(
    [
        keras.layers.Input((28, 28, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ]
)
optimizer = hvd.DistributedOptimizer(keras.optimizers.Adam()) if use_horovod else "adam"
model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
shard = slice(hvd.rank(), 384, hvd.size()) if use_horovod else slice(0, 384)
signalled = not use_horovod or hvd.rank() == hvd.size() - 1


class SendSignal(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == stop_at and signalled:
            os.kill(os.getpid(), signal.SIGUSR1)


if use_horovod:
    first = [hvd.callbacks.BroadcastGlobalVariablesCallback(0)]
else:
    first = [keras.callbacks.BackupAndRestore(str(session.checkpoint_dir()))]
model.fit(
    x[shard],
    y[shard],
    batch_size=32,
    epochs=epochs,
    validation_data=(x[384:], y[384:]),
    verbose=verbose,
    callbacks=[*first, Callback(write_result=True), SendSignal()],
)
model.evaluate(x[384:], y[384:], verbose=verbose)
