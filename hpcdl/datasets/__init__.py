"""Data sets: a registry of loaders (the built-ins register like any other) and users' own.

A new data set is one schema (its settings, a `name` field), one `prepare(cfg) -> Prepared`
and one registration:

    register_data("tiny", Tiny, prepare=lazy("mypkg.tiny:prepare"),
                  input_shape=lambda cfg: (8, 8, 1), n_classes=3)

A user's loader needs no registration: `data: {name: "mypkg.data:load", ...}` (see UserData).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from hpcdl.datasets.base import Prepared
from hpcdl.errors import HpcdlError
from hpcdl.registry import Registry, Schema, UserCode, is_reference, lazy


@dataclass(frozen=True)
class DataKind:
    """A registered data set: its settings' schema, its loader, what a model gets from it."""

    schema: type[Schema]
    prepare: Callable[[Any], Prepared]
    input_shape: Callable[[Any], tuple[int, ...]]  # known without reading the data
    n_classes: int | None = None  # known without reading the data (None: read it)
    fetch: str | None = None  # its name for `hpcdl data fetch`


DATASETS: Registry[Any] = Registry("data set", allow_references=True)


def register_data(
    name: str,
    schema: type[Schema],
    prepare: Callable[[Any], Prepared],
    input_shape: Callable[[Any], tuple[int, ...]],
    n_classes: int | None = None,
    fetch: str | None = None,
) -> DataKind:
    """Register data set `name`; `prepare(cfg)` loads it, `input_shape(cfg)` predicts its shape."""
    return DATASETS.register(name, DataKind(schema, prepare, input_shape, n_classes, fetch))


def fetchable() -> list[str]:
    """The names `hpcdl data fetch` accepts."""
    return sorted(kind.fetch for _, kind in DATASETS.items() if kind.fetch)


class MnistData(Schema):
    """MNIST from IDX files (.gz or raw) or Keras' mnist.npz."""

    name: Literal["mnist"]
    dir: str | None = None
    validation_split: Annotated[float, Field(ge=0, lt=1)] = 0.2
    train_subset: Annotated[int, Field(gt=0)] | None = None
    test_subset: Annotated[int, Field(gt=0)] | None = None


class IndianPinesData(Schema):
    """Indian Pines windows around labelled pixels, split per class."""

    name: Literal["indian_pines"]
    dir: str | None = None
    variant: Literal["corrected", "uncorrected"] = "corrected"
    window: Annotated[int, Field(gt=0)] = 9
    border: Literal["reflect", "zero"] = "reflect"
    split: Literal["random", "blocks"] = "random"
    train_fraction: Annotated[float, Field(gt=0, lt=1)] | None = 0.1
    train_count: Annotated[int, Field(gt=0)] | None = None
    block_size: Annotated[int, Field(gt=0)] = 16
    split_seed: int = 0
    validation_split: Annotated[float, Field(ge=0, lt=1)] = 0.0
    normalize: Literal["global", "per_band"] = "global"
    cache: bool = True
    cache_dir: str | None = None

    @model_validator(mode="after")
    def _one_split_size(self) -> IndianPinesData:
        if self.train_count is not None:
            self.train_fraction = None
        if self.train_fraction is None and self.train_count is None:
            raise ValueError("give train_fraction or train_count")
        if self.window % 2 == 0:
            raise ValueError(f"window must be odd (a centre pixel), got {self.window}")
        return self


class UserData(UserCode):
    """`name: "module:function"`; every other key is a keyword argument of that loader.

    The loader returns a mapping: ``train`` and ``test`` (and optionally ``validation``), each
    ``(x, y)`` arrays or a ``tf.data.Dataset`` of ``(x, y)`` pairs (batched or not), ``y``
    integer class labels; optionally ``n_classes`` (default: the largest label + 1).
    """


def _prepare_user(cfg: UserData) -> Prepared:
    from hpcdl.datasets.base import load_user_data

    return load_user_data(cfg.name, cfg.kwargs(), cfg._code)


_planned: dict[str, tuple[tuple[int, ...], int, str]] = {}


def _user_shape(cfg: UserData) -> tuple[tuple[int, ...], int, str]:
    """Input shape, classes (or outputs) and task of a user's data: loaded once per setting."""
    key = json.dumps([cfg.model_dump(mode="json"), cfg._code])
    if key not in _planned:
        data = _prepare_user(cfg)
        _planned[key] = (data.input_shape, data.n_classes, data.task)
    return _planned[key]


USER_DATA = DataKind(UserData, _prepare_user, lambda cfg: _user_shape(cfg)[0], None, None)


def data_kind(name: str) -> DataKind:
    """The registered data set `name`, or the user-data kind for a `module:function`."""
    if name not in DATASETS and is_reference(name):
        return USER_DATA
    return DATASETS.get(name)


def prepare(cfg: Any) -> Prepared:
    """Load and prepare the data set a config's ``data`` section names."""
    return data_kind(cfg.name).prepare(cfg)


def expected_input_shape(cfg: Any) -> tuple[int, ...]:
    """The model input shape a data config will produce (built-ins: without reading the data)."""
    return data_kind(cfg.name).input_shape(cfg)


def expected_n_classes(cfg: Any) -> int:
    """The number of classes a data config will produce (built-ins: without reading the data)."""
    kind = data_kind(cfg.name)
    return kind.n_classes if kind.n_classes is not None else _user_shape(cfg)[1]


def expected_task(cfg: Any) -> str:
    """classification (every built-in) or regression (a user's loader that says so)."""
    return "classification" if data_kind(cfg.name) is not USER_DATA else _user_shape(cfg)[2]


def _indian_pines_shape(cfg: IndianPinesData) -> tuple[int, ...]:
    from hpcdl.datasets.indian_pines import SCENE_SHAPE, VARIANTS

    if cfg.window > min(SCENE_SHAPE):
        raise HpcdlError(f"data.window: {cfg.window} is larger than the image {SCENE_SHAPE}")
    return (cfg.window, cfg.window, VARIANTS[cfg.variant][2], 1)


register_data(
    "mnist",
    MnistData,
    lazy("hpcdl.datasets.mnist:prepare"),
    lambda cfg: (28, 28, 1),
    n_classes=10,
    fetch="mnist",
)
register_data(
    "indian_pines",
    IndianPinesData,
    lazy("hpcdl.datasets.indian_pines:prepare"),
    _indian_pines_shape,
    n_classes=16,
    fetch="indian-pines",
)
