"""Data sets: where the files are, how they are fetched and verified, how they are read."""

from __future__ import annotations

from hpcdl.datasets.base import Prepared


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
