"""The two source models, built with the Keras 2 API (tf.keras under TF_USE_LEGACY_KERAS=1)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from hpcdl.errors import HpcdlError
from hpcdl.registry import Schema as _Strict


class MnistCNN(_Strict):
    """The source's LeNet-like MNIST network."""

    name: Literal["mnist_cnn"]
    filters: list[Annotated[int, Field(gt=0)]] = [20, 50]
    kernel: Annotated[int, Field(gt=0)] = 5
    dense: list[Annotated[int, Field(gt=0)]] = [500]
    activation: Literal["relu", "elu", "tanh", "sigmoid", "selu", "gelu"] = "relu"
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    l2: Annotated[float, Field(ge=0)] = 0.0


class IndianPines3DCNN(_Strict):
    """The source's 3D-CNN for hyperspectral pixel classification (defaults = the source)."""

    name: Literal["indian_pines_3dcnn"]
    filters: list[Annotated[int, Field(gt=0)]] = [48, 32, 32]
    kernels: list[tuple[int, int, int]] = [(3, 3, 5), (3, 3, 5), (3, 3, 5)]
    pools: list[tuple[int, int, int]] = [(1, 1, 3), (1, 1, 3), (1, 1, 2)]
    band_padding: list[Annotated[int, Field(ge=0)]] = [2, 2, 0]
    spatial_padding: Literal["valid", "same"] = "valid"
    dense: list[Annotated[int, Field(gt=0)]] = [128, 128]
    activation: Literal["relu", "elu", "tanh", "sigmoid", "selu", "gelu"] = "relu"
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    l2: Annotated[float, Field(ge=0)] = 0.0

    @model_validator(mode="after")
    def _same_depth(self) -> IndianPines3DCNN:
        n = len(self.filters)
        for key in ("kernels", "pools", "band_padding"):
            if len(getattr(self, key)) != n:
                raise ValueError(
                    f"{key} has {len(getattr(self, key))} entries but filters has {n}; "
                    "give one per convolution"
                )
        return self


def _dense_head(
    keras: Any, x: Any, widths: list[int], activation: str, dropout: float, reg: Any, n_classes: int
) -> Any:
    x = keras.layers.Flatten()(x)
    for width in widths:
        x = keras.layers.Dense(width, activation=activation, kernel_regularizer=reg)(x)
        if dropout:
            x = keras.layers.Dropout(dropout)(x)
    return keras.layers.Dense(n_classes, activation="softmax", kernel_regularizer=reg)(x)


def mnist_cnn(keras: Any, cfg: MnistCNN, input_shape: tuple[int, ...], n_classes: int) -> Any:
    """Conv(20, 5x5, same) -> pool -> Conv(50, 5x5, same) -> pool -> Dense(500) -> Dense(10)."""
    reg = keras.regularizers.l2(cfg.l2) if cfg.l2 else None
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for filters in cfg.filters:
        x = keras.layers.Conv2D(
            filters, cfg.kernel, padding="same", activation=cfg.activation, kernel_regularizer=reg
        )(x)
        x = keras.layers.MaxPooling2D(pool_size=2, strides=2)(x)
    outputs = _dense_head(keras, x, cfg.dense, cfg.activation, cfg.dropout, reg, n_classes)
    return keras.Model(inputs, outputs, name="mnist_cnn")


def indian_pines_3dcnn(
    keras: Any, cfg: IndianPines3DCNN, input_shape: tuple[int, ...], n_classes: int
) -> Any:
    """Conv3D blocks over (window, window, bands, 1): conv -> pool over bands -> pad bands."""
    check_fits(cfg, input_shape)
    reg = keras.regularizers.l2(cfg.l2) if cfg.l2 else None
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for kernel, filters, pool, pad in zip(
        cfg.kernels, cfg.filters, cfg.pools, cfg.band_padding, strict=True
    ):
        if cfg.spatial_padding == "same":  # rows/cols only: the band axis stays 'valid'
            x = keras.layers.ZeroPadding3D(
                (
                    (kernel[0] // 2, (kernel[0] - 1) // 2),
                    (kernel[1] // 2, (kernel[1] - 1) // 2),
                    (0, 0),
                )
            )(x)
        x = keras.layers.Conv3D(filters, kernel, activation=cfg.activation, kernel_regularizer=reg)(
            x
        )
        x = keras.layers.MaxPooling3D(pool_size=pool)(x)
        if pad:
            x = keras.layers.ZeroPadding3D(((0, 0), (0, 0), (pad, pad)))(x)
    outputs = _dense_head(keras, x, cfg.dense, cfg.activation, cfg.dropout, reg, n_classes)
    return keras.Model(inputs, outputs, name="indian_pines_3dcnn")


def check_fits(cfg: MnistCNN | IndianPines3DCNN, input_shape: tuple[int, ...]) -> None:
    """Raise HpcdlError when the model's feature maps would vanish for this input shape.

    Pure arithmetic (no TensorFlow), so sweeps can check every point before submitting it.
    """
    if cfg.name != "indian_pines_3dcnn":
        return
    shape = list(input_shape[:3])
    for i, (kernel, pool, pad) in enumerate(
        zip(cfg.kernels, cfg.pools, cfg.band_padding, strict=True)
    ):
        if cfg.spatial_padding == "valid":
            shape = [shape[0] - kernel[0] + 1, shape[1] - kernel[1] + 1, shape[2]]
        shape[2] = shape[2] - kernel[2] + 1
        shape = [s // p for s, p in zip(shape, pool, strict=True)]
        if min(shape) < 1:
            raise HpcdlError(
                f"model: indian_pines_3dcnn does not fit input {tuple(input_shape[:3])}: after "
                f"convolution {i + 1} the feature map would be empty; use a larger data.window, "
                "spatial_padding: same, or smaller kernels/pools"
            )
        shape[2] += 2 * pad


BUILDERS = {"mnist_cnn": mnist_cnn, "indian_pines_3dcnn": indian_pines_3dcnn}


def build_model(
    cfg: MnistCNN | IndianPines3DCNN, input_shape: tuple[int, ...], n_classes: int
) -> Any:
    """Build the configured model for the given input shape and number of classes."""
    from hpcdl.distributed import import_tf

    keras = import_tf().keras
    return BUILDERS[cfg.name](keras, cfg, tuple(input_shape), n_classes)
