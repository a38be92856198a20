"""What the ranks agree on, so that no rank waits forever in a collective the others skipped:
rank 0 decides (and its error reaches every rank), sums over ranks, whether to stop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from hpcdl.errors import HpcdlError

STOP_CHECK_STEPS = 10  # steps between the ranks' agreement on a stop request
T = TypeVar("T")


class Ranks:
    """This process's place among the run's Horovod ranks, and the collectives training uses."""

    def __init__(self, ctx: Any, compression: str = "none") -> None:
        self.tf, self.hvd = ctx.tf, ctx.hvd
        self.rank, self.size, self.is_root = ctx.rank, ctx.size, ctx.is_root
        self.compression = compression  # how gradients travel: "none" or "fp16"

    def root_decides(self, step: Callable[[], T]) -> T:
        """Run `step` on rank 0 and share its value or its error, so no rank waits forever."""
        value, error = None, None
        if self.is_root:
            try:
                value = step()
            except HpcdlError as err:
                error = str(err)
        if self.size > 1:
            value, error = self.hvd.broadcast_object((value, error), root_rank=0)
        if error:
            raise HpcdlError(error)
        return value

    def broadcast_from_root(self, *variable_groups: list[Any]) -> None:
        """Give every rank rank 0's values of these variables (weights, optimizer state)."""
        for variables in variable_groups:
            self.hvd.broadcast_variables(variables, root_rank=0)

    def averaging(self, tape: Any) -> Any:
        """`tape`, its gradients averaged over the ranks (Horovod's DistributedGradientTape)."""
        if self.size == 1:
            return tape
        if self.compression == "fp16":
            return self.hvd.DistributedGradientTape(tape, compression=self.hvd.Compression.fp16)
        return self.hvd.DistributedGradientTape(tape)

    def sum(self, values: list[float] | np.ndarray) -> np.ndarray:
        """Element-wise sums over the ranks, in float64."""
        arr = np.asarray(values, dtype=np.float64)
        if self.size == 1:
            return arr
        return self.hvd.allreduce(self.tf.constant(arr), op=self.hvd.Sum).numpy()

    def stop_requested(self, stopper: Any, step: int) -> bool:
        """The same answer on every rank: checked each step on one rank, every
        STOP_CHECK_STEPS steps across ranks (one tiny allreduce)."""
        if self.size == 1:
            return stopper.signum is not None
        if (step + 1) % STOP_CHECK_STEPS:
            return False
        flag = self.tf.constant(1 if stopper.signum is not None else 0)
        return bool(self.hvd.allreduce(flag, op=self.hvd.Max).numpy())
