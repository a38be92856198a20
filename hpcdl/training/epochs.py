"""The epoch loop and its steps: each rank's shard of an epoch, prefetched batches."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np


def shard_batches(
    n: int, batch: int, rank: int, size: int, seed: int, epoch: int, max_steps: int | None
) -> list[np.ndarray]:
    """This rank's index batches for one epoch (same global order on every rank)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    steps = n // (batch * size)
    if max_steps:
        steps = min(steps, max_steps)
    mine = order[rank::size]
    return [mine[i * batch : (i + 1) * batch] for i in range(steps)]


def prefetch(
    batches: list[np.ndarray], take: Callable[[np.ndarray], Any], depth: int = 2
) -> Iterator[tuple[Any, float]]:
    """Yield (take(batch), seconds waited for it) with `depth` batches prepared in a thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work():
        try:
            for idx in batches:
                if stop.is_set():
                    return
                q.put((take(idx), None))
        except BaseException as err:  # surfaces in the training thread
            q.put((None, err))

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        for _ in batches:
            t0 = time.perf_counter()
            item, err = q.get()
            if err is not None:
                raise err
            yield item, time.perf_counter() - t0
    finally:
        stop.set()
