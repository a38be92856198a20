"""Data sets: where the files are, how they are fetched and verified, how they are read."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from hpcdl.datasets.base import Prepared
from hpcdl.registry import Schema as _Strict


class MnistData(_Strict):
    """MNIST from IDX files (.gz or raw) or Keras' mnist.npz."""

    name: Literal["mnist"]
    dir: str | None = None
    validation_split: Annotated[float, Field(ge=0, lt=1)] = 0.2
    train_subset: Annotated[int, Field(gt=0)] | None = None
    test_subset: Annotated[int, Field(gt=0)] | None = None


class IndianPinesData(_Strict):
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


def prepare(cfg) -> Prepared:
    """Load and prepare the data set a config's ``data`` section names."""
    if cfg.name == "mnist":
        from hpcdl.datasets import mnist

        return mnist.prepare(cfg)
    from hpcdl.datasets import indian_pines

    return indian_pines.prepare(cfg)


def expected_input_shape(cfg) -> tuple[int, ...]:
    """The model input shape a data config will produce, known without reading the data."""
    if cfg.name == "mnist":
        return (28, 28, 1)
    from hpcdl.datasets.indian_pines import SCENE_SHAPE, VARIANTS
    from hpcdl.errors import HpcdlError

    if cfg.window > min(SCENE_SHAPE):
        raise HpcdlError(f"data.window: {cfg.window} is larger than the image {SCENE_SHAPE}")
    return (cfg.window, cfg.window, VARIANTS[cfg.variant][2], 1)
