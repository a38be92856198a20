"""The source material's KERAS_MNIST_CNN job as a plain Keras script: nothing of hpcdl in it.

    python keras_mnist_cnn.py --data DIR [--lr 0.001] [--epochs 20] [--batch-size 128]

LeNet-like CNN (Conv 20 5x5 -> pool -> Conv 50 5x5 -> pool -> Dense 500 -> Dense 10), Adam,
categorical cross-entropy, validation split 0.2, pixels / 255, as in the material. DIR holds the
MNIST IDX files (train-images-idx3-ubyte.gz, ...). It prints Keras' own fit progress, which is
all hpcdl reads from it: jobs/keras_mnist_script.yaml sweeps it over its flags.
"""

import argparse
import gzip
from pathlib import Path

import numpy as np
import tensorflow as tf

keras = tf.keras


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


parser = argparse.ArgumentParser()
parser.add_argument("--data", type=Path, required=True)
parser.add_argument("--lr", type=float, default=0.001)
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--train-subset", type=int, default=None, help="first N training images")
args = parser.parse_args()

x_train = read_idx(args.data / "train-images-idx3-ubyte.gz")[: args.train_subset]
y_train = read_idx(args.data / "train-labels-idx1-ubyte.gz")[: args.train_subset]
x_test = read_idx(args.data / "t10k-images-idx3-ubyte.gz")
y_test = read_idx(args.data / "t10k-labels-idx1-ubyte.gz")
x_train = x_train[..., None].astype("float32") / 255
x_test = x_test[..., None].astype("float32") / 255
y_train = keras.utils.to_categorical(y_train, 10)
y_test = keras.utils.to_categorical(y_test, 10)

model = keras.Sequential(
    [
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Conv2D(20, 5, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2, strides=2),
        keras.layers.Conv2D(50, 5, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2, strides=2),
        keras.layers.Flatten(),
        keras.layers.Dense(500, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ]
)
model.compile(
    optimizer=keras.optimizers.Adam(args.lr), loss="categorical_crossentropy", metrics=["accuracy"]
)
model.fit(
    x_train,
    y_train,
    batch_size=args.batch_size,
    epochs=args.epochs,
    validation_split=0.2,
    verbose=2,
)
score = model.evaluate(x_test, y_test, verbose=0)
print("Test loss:", score[0])
print("Test accuracy:", score[1])
