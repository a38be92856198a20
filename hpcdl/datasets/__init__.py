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
