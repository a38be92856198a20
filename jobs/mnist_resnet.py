"""Your own model: a small residual network for MNIST (the spec: jobs/mnist_resnet.yaml).

hpcdl calls build(input_shape=..., n_classes=..., **the other keys under `model`) and trains
what it returns with Horovod like a built-in model. Use tf.keras (hpcdl makes it the Keras 2
API, tf_keras, before importing this file) and end in a softmax.
"""

import tensorflow as tf


def build(input_shape, n_classes, width=16, depth=2, dropout=0.0):
    """Conv -> `depth` residual blocks of two 3x3 convolutions -> pool -> softmax."""
    keras = tf.keras
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    for _ in range(depth):
        y = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(x)
        y = keras.layers.Conv2D(width, 3, padding="same")(y)
        x = keras.layers.Activation("relu")(keras.layers.Add()([x, y]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    if dropout:
        x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="mnist_resnet")
