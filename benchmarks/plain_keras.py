"""The comparison point for training throughput: a plain Keras script, as the source material
would write it (model.fit on in-memory arrays), for the same model, data and batch size.

    python benchmarks/plain_keras.py mnist|indian_pines EPOCHS BATCH THREADS OUT.json

Prints nothing; writes per-epoch seconds and samples/s to OUT.json. Data is read with hpcdl's
loaders (not timed); everything timed is plain Keras.
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # the same Keras 2 (tf-keras) as hpcdl
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

name, epochs, batch, threads, out = (
    sys.argv[1],
    int(sys.argv[2]),
    int(sys.argv[3]),
    int(sys.argv[4]),
    sys.argv[5],
)
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
keras = tf.keras
layers = keras.layers

if name == "mnist":
    from hpcdl.config import MnistData
    from hpcdl.datasets.mnist import prepare

    data = prepare(MnistData(name="mnist"))
    x = data.train.take(np.arange(len(data.train)))
    y = keras.utils.to_categorical(data.train.labels, 10)
    model = keras.Sequential(
        [
            layers.Conv2D(20, 5, padding="same", activation="relu", input_shape=(28, 28, 1)),
            layers.MaxPooling2D(2, 2),
            layers.Conv2D(50, 5, padding="same", activation="relu"),
            layers.MaxPooling2D(2, 2),
            layers.Flatten(),
            layers.Dense(500, activation="relu"),
            layers.Dense(10, "softmax"),
        ]
    )
    model.compile(keras.optimizers.Adam(0.001), "categorical_crossentropy", ["accuracy"])
else:
    from hpcdl.config import IndianPinesData
    from hpcdl.datasets.indian_pines import prepare

    data = prepare(IndianPinesData(name="indian_pines", cache=False))
    x = data.train.take(np.arange(len(data.train)))
    y = keras.utils.to_categorical(data.train.labels, 16)
    model = keras.Sequential(
        [
            layers.Conv3D(48, (3, 3, 5), activation="relu", input_shape=x.shape[1:]),
            layers.MaxPooling3D((1, 1, 3)),
            layers.ZeroPadding3D((0, 0, 2)),
            layers.Conv3D(32, (3, 3, 5), activation="relu"),
            layers.MaxPooling3D((1, 1, 3)),
            layers.ZeroPadding3D((0, 0, 2)),
            layers.Conv3D(32, (3, 3, 5), activation="relu"),
            layers.MaxPooling3D((1, 1, 2)),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(128, activation="relu"),
            layers.Dense(16, activation="softmax"),
        ]
    )
    model.compile(keras.optimizers.SGD(1.0), "mse", ["accuracy"])

steps = len(x) // batch  # hpcdl drops the remainder too: the same samples per epoch
x, y = x[: steps * batch], y[: steps * batch]


class Timer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.t0
        records.append(
            {"epoch": epoch + 1, "seconds": seconds, "samples_per_second": steps * batch / seconds}
        )


records = []
model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=True, verbose=0, callbacks=[Timer()])
with open(out, "w") as f:
    json.dump(records, f)
