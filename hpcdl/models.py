"""Models: a registry of builders (the two source models register like any other) and users'
own Keras models, all built with the Keras 2 API (tf.keras under TF_USE_LEGACY_KERAS=1).

A new model is one schema (its settings, a `name` field), one builder and one registration:

    class Tiny(Schema):
        name: Literal["tiny"]
        width: int = 8

    @register_model("tiny", Tiny, data="mnist")
    def tiny(keras, cfg, input_shape, n_classes): ...   # returns a keras.Model ending in softmax

A user's model needs no registration: `model: {name: "mypkg.nets:build", depth: 2}` calls
`build(input_shape=..., n_classes=..., depth=2)` (see UserModel).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from hpcdl.errors import HpcdlError
from hpcdl.registry import (
    Registry,
    Schema,
    UserCode,
    call_user_code,
    code_path,
    describe_error,
    is_reference,
)


@dataclass(frozen=True)
class ModelKind:
    """A registered model: its settings' schema, its builder and the data sets it trains on."""

    schema: type[Schema]
    build: Callable[..., Any]  # build(keras, cfg, input_shape, n_classes) -> keras.Model
    data: tuple[str, ...] = ()  # data set names it trains on; () = any
    check_fits: Callable[[Any, tuple[int, ...]], None] | None = None  # pure arithmetic


MODELS: Registry[Any] = Registry("model", allow_references=True)


def register_model(
    name: str,
    schema: type[Schema],
    data: str | tuple[str, ...] = (),
    check_fits: Callable[[Any, tuple[int, ...]], None] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register `build(keras, cfg, input_shape, n_classes)` as model `name`."""

    def add(build: Callable[..., Any]) -> Callable[..., Any]:
        wants = (data,) if isinstance(data, str) else tuple(data)
        MODELS.register(name, ModelKind(schema, build, wants, check_fits))
        return build

    return add


class UserModel(UserCode):
    """`name: "module:function"`; every other key is a keyword argument of that builder."""


def model_kind(name: str) -> ModelKind:
    """The registered model `name`, or the user-model kind for a `module:function`."""
    if name not in MODELS and is_reference(name):
        return USER_MODEL
    return MODELS.get(name)


class MnistCNN(Schema):
    """The source's LeNet-like MNIST network."""

    name: Literal["mnist_cnn"]
    filters: list[Annotated[int, Field(gt=0)]] = [20, 50]
    kernel: Annotated[int, Field(gt=0)] = 5
    dense: list[Annotated[int, Field(gt=0)]] = [500]
    activation: Literal["relu", "elu", "tanh", "sigmoid", "selu", "gelu"] = "relu"
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    l2: Annotated[float, Field(ge=0)] = 0.0


class IndianPines3DCNN(Schema):
    """The source's 3D-CNN for hyperspectral pixel classification (defaults = the source)."""

    name: Literal["indian_pines_3dcnn"]
    filters: list[Annotated[int, Field(gt=0)]] = [48, 32, 32]
    kernels: list[tuple[int, int, int]] = [(3, 3, 5), (3, 3, 5), (3, 3, 5)]
    pools: list[tuple[int, int, int]] = [(1, 1, 3), (1, 1, 3), (1, 1, 2)]
    band_padding: list[Annotated[int, Field(ge=0)]] = [2, 2, 0]
    spatial_padding: Literal["valid", "same"] = "valid"
    # the model sees only the centre crop x crop pixels of each window (None: all of it); the
    # data's window, and with it the split, stays as it is
    crop: Annotated[int, Field(gt=0)] | None = None
    dense: list[Annotated[int, Field(gt=0)]] = [128, 128]
    activation: Literal["relu", "elu", "tanh", "sigmoid", "selu", "gelu"] = "relu"
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    l2: Annotated[float, Field(ge=0)] = 0.0

    @model_validator(mode="after")
    def _same_depth(self) -> IndianPines3DCNN:
        if self.crop is not None and self.crop % 2 == 0:
            raise ValueError(f"crop must be odd (a centre pixel), got {self.crop}")
        n = len(self.filters)
        for key in ("kernels", "pools", "band_padding"):
            if len(getattr(self, key)) != n:
                raise ValueError(
                    f"{key} has {len(getattr(self, key))} entries but filters has {n}; "
                    "give one per convolution"
                )
        return self


class IndianPinesSpectral(Schema):
    """Mean spectra of nested centre squares of each window (1x1: the pixel itself, 3x3, ...),
    side by side, into dense layers: averages keep no spatial layout to overfit few pixels on."""

    name: Literal["indian_pines_spectral"]
    scales: list[Annotated[int, Field(gt=0)]] = [1, 3, 5, 9]
    dense: list[Annotated[int, Field(gt=0)]] = [512, 512]
    activation: Literal["relu", "elu", "tanh", "sigmoid", "selu", "gelu"] = "relu"
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.5
    l2: Annotated[float, Field(ge=0)] = 1.0e-4
    noise: Annotated[float, Field(ge=0)] = 0.1  # std of Gaussian noise on the spectra (training)

    @model_validator(mode="after")
    def _odd_scales(self) -> IndianPinesSpectral:
        even = [s for s in self.scales if s % 2 == 0]
        if even or not self.scales:
            raise ValueError(f"scales must be odd sizes (centred squares), got {self.scales}")
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


@register_model("mnist_cnn", MnistCNN, data="mnist")
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


@register_model(
    "indian_pines_3dcnn",
    IndianPines3DCNN,
    data="indian_pines",
    check_fits=lambda cfg, shape: indian_pines_fits(cfg, shape),
)
def indian_pines_3dcnn(
    keras: Any, cfg: IndianPines3DCNN, input_shape: tuple[int, ...], n_classes: int
) -> Any:
    """Conv3D blocks over (window, window, bands, 1): conv -> pool over bands -> pad bands."""
    indian_pines_fits(cfg, input_shape)
    reg = keras.regularizers.l2(cfg.l2) if cfg.l2 else None
    inputs = keras.Input(shape=input_shape)
    x = inputs
    if cfg.crop is not None and cfg.crop < input_shape[0]:
        cut = (input_shape[0] - cfg.crop) // 2
        x = keras.layers.Cropping3D(((cut, cut), (cut, cut), (0, 0)))(x)
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


def indian_pines_fits(cfg: IndianPines3DCNN, input_shape: tuple[int, ...]) -> None:
    """Raise HpcdlError when the model's feature maps would vanish for this input shape.

    Pure arithmetic (no TensorFlow), so sweeps can check every point before submitting it.
    """
    shape = list(input_shape[:3])
    if cfg.crop is not None:
        if cfg.crop > shape[0]:
            raise HpcdlError(
                f"model: crop {cfg.crop} is larger than the {shape[0]}x{shape[1]} window"
            )
        shape[:2] = [cfg.crop, cfg.crop]
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


@register_model(
    "indian_pines_spectral",
    IndianPinesSpectral,
    data="indian_pines",
    check_fits=lambda cfg, shape: indian_pines_spectral_fits(cfg, shape),
)
def indian_pines_spectral(
    keras: Any, cfg: IndianPinesSpectral, input_shape: tuple[int, ...], n_classes: int
) -> Any:
    """For each scale s, the mean spectrum of the window's centre s x s pixels; concatenated,
    Gaussian noise while training, then the dense layers."""
    indian_pines_spectral_fits(cfg, input_shape)
    window, _, bands = input_shape[:3]
    reg = keras.regularizers.l2(cfg.l2) if cfg.l2 else None
    inputs = keras.Input(shape=input_shape)
    image = keras.layers.Reshape((window, window, bands))(inputs)  # bands as channels
    spectra = []
    for scale in cfg.scales:
        cut = (window - scale) // 2
        square = keras.layers.Cropping2D(((cut, cut), (cut, cut)))(image) if cut else image
        spectra.append(keras.layers.GlobalAveragePooling2D()(square))
    x = keras.layers.Concatenate()(spectra) if len(spectra) > 1 else spectra[0]
    if cfg.noise:
        x = keras.layers.GaussianNoise(cfg.noise)(x)
    outputs = _dense_head(keras, x, cfg.dense, cfg.activation, cfg.dropout, reg, n_classes)
    return keras.Model(inputs, outputs, name="indian_pines_spectral")


def indian_pines_spectral_fits(cfg: IndianPinesSpectral, input_shape: tuple[int, ...]) -> None:
    """Raise HpcdlError when a scale is larger than the data's window."""
    too_large = [s for s in cfg.scales if s > input_shape[0]]
    if too_large:
        raise HpcdlError(
            f"model: scales {too_large} are larger than the {input_shape[0]}x{input_shape[1]} "
            "window (data.window)"
        )


def build_user_model(
    keras: Any,
    cfg: UserModel,
    input_shape: tuple[int, ...],
    n_classes: int,
    task: str = "classification",
) -> Any:
    """Call the user's builder with input_shape, n_classes (regression: n_outputs) and the
    section's other keys."""
    what = f"model {cfg.name!r}"
    count = "n_classes" if task == "classification" else "n_outputs"
    kwargs = {"input_shape": tuple(input_shape), count: n_classes, **cfg.kwargs()}
    with code_path(cfg._code):
        model = call_user_code(MODELS, cfg.name, kwargs, what, "builder", ("input_shape", count))
    check_user_model(keras, model, what, tuple(input_shape), n_classes, task)
    return model


def check_user_model(
    keras: Any,
    model: Any,
    what: str,
    input_shape: tuple[int, ...],
    n_classes: int,
    task: str = "classification",
) -> None:
    """A tf.keras model whose output is one probability per class (softmax), or one number per
    output for regression, else HpcdlError."""
    import numpy as np

    if not isinstance(model, keras.Model):
        raise HpcdlError(
            f"{what}: the builder returned {type(model).__module__}.{type(model).__name__}, "
            "not a tf.keras Model (build it with tensorflow's tf.keras, not Keras 3)"
        )
    x = np.random.default_rng(0).random((2, *input_shape), dtype=np.float32)
    try:
        out = np.asarray(model(x, training=False))
    except Exception as err:  # the user's model may fail in any way
        raise HpcdlError(
            f"{what}: the model fails on a batch of input shape {input_shape} "
            f"({describe_error(err)})"
        ) from None
    each = "one probability per class" if task == "classification" else "one number per output"
    if out.shape != (2, n_classes):
        raise HpcdlError(
            f"{what}: the model's output has shape {(None, *out.shape[1:])}, expected "
            f"(None, {n_classes}): {each}"
        )
    probabilities = (out >= 0).all() and np.allclose(out.sum(axis=1), 1.0, atol=1e-3)
    if task == "classification" and not probabilities:
        raise HpcdlError(
            f"{what}: the model's output is not softmax probabilities; end it with "
            f"Dense({n_classes}, activation='softmax') (training uses categorical cross-entropy)"
        )


USER_MODEL = ModelKind(UserModel, build_user_model)
_checked: set[str] = set()


def check_fits(
    cfg: Any,
    input_shape: tuple[int, ...],
    n_classes: int | None = None,
    task: str = "classification",
) -> None:
    """Raise HpcdlError when the model cannot be built for this input (planning, every point).

    Registered models check by arithmetic (no TensorFlow, so sweeps stay fast); a user's model
    is built once per distinct setting, with TensorFlow, and its output checked.
    """
    kind = model_kind(cfg.name)
    if kind is not USER_MODEL:
        _classifies(cfg, task)
        if kind.check_fits is not None:
            kind.check_fits(cfg, tuple(input_shape))
        return
    key = json.dumps([cfg.model_dump(mode="json"), cfg._code, list(input_shape), n_classes, task])
    if key not in _checked:
        model = build_model(cfg, input_shape, n_classes or 0, task)
        del model
        _keras().backend.clear_session()  # planning many settings does not pile up graphs
        _checked.add(key)


def _keras() -> Any:
    from hpcdl.distributed import import_tf

    return import_tf().keras


def build_model(
    cfg: Any, input_shape: tuple[int, ...], n_classes: int, task: str = "classification"
) -> Any:
    """Build the configured model for the given input shape and number of classes (or, for
    regression, outputs)."""
    kind = model_kind(cfg.name)
    if kind is USER_MODEL:
        return build_user_model(_keras(), cfg, tuple(input_shape), n_classes, task)
    _classifies(cfg, task)
    return kind.build(_keras(), cfg, tuple(input_shape), n_classes)


def _classifies(cfg: Any, task: str) -> None:
    if task != "classification":
        raise HpcdlError(
            f"model: {cfg.name!r} is a classifier; a {task} data set trains a model of your "
            "own ('module:function')"
        )
