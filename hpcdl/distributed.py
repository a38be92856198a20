"""TensorFlow + Horovod bootstrap: the Keras 2 API, one process per GPU, CPU threads, seeds.

Importing this module checks the stack and fails with a clear message when Horovod is missing or
was built without TensorFlow support, so that `hpcdl train` never runs with silent non-averaging.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from hpcdl.errors import HpcdlError

# Keras 3 (TF >= 2.16 default) silently breaks Horovod's gradient averaging; tf-keras restores the
# Keras 2 API. This must happen before TensorFlow is first imported anywhere in the process.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:
    import horovod.tensorflow as _hvd  # noqa: F401  (the check itself)
except ImportError as _err:
    raise ImportError(
        "hpcdl needs Horovod built with TensorFlow support, and this one is not "
        f"({str(_err).splitlines()[0]}). Reinstall it against the installed TensorFlow: "
        "HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 "
        "pip install --no-build-isolation --force-reinstall --no-cache-dir horovod==0.28.1 "
        "(see scripts/install.sh)"
    ) from None


def import_tf() -> Any:
    """TensorFlow with the Keras 2 API (tf.keras is tf_keras); an error if Keras 3 got in first."""
    import tensorflow as tf

    if not tf.keras.__name__.startswith("tf_keras") and not tf.__version__.startswith("2.15"):
        raise HpcdlError(
            "TensorFlow was imported with Keras 3 before hpcdl set TF_USE_LEGACY_KERAS=1; "
            "Horovod would not average gradients. Set TF_USE_LEGACY_KERAS=1 and install tf-keras."
        )
    return tf


def horovod_ops(hvd: Any) -> list[str]:
    """The collective back ends Horovod was built with (MPI, Gloo, NCCL, ...)."""
    checks = (
        ("MPI", hvd.mpi_built),
        ("Gloo", hvd.gloo_built),
        ("NCCL", hvd.nccl_built),
        ("CUDA", hvd.cuda_built),
        ("ROCm", hvd.rocm_built),
        ("oneCCL", hvd.ccl_built),
    )
    return [name for name, built in checks if built()]


def check_horovod() -> str:
    """Describe the working stack (import already verified Horovod's TensorFlow extension)."""
    import horovod
    import horovod.tensorflow as hvd

    tf = import_tf()
    ops = horovod_ops(hvd)
    if not {"MPI", "Gloo"} & set(ops):
        raise HpcdlError("Horovod has neither MPI nor Gloo support built in")
    return f"tensorflow {tf.__version__}, horovod {horovod.__version__} ({', '.join(ops)})"


def gpu_for(local_rank: int, gpus: list[str]) -> str | None:
    """The GPU a rank pins: its local rank's, round robin when ranks outnumber GPUs."""
    return gpus[local_rank % len(gpus)] if gpus else None


def pinning_report(gpus: list[str], local_ranks: int, ops: list[str], threads: int) -> list[str]:
    """What each local rank of a node would use, and what would make GPU training slow."""
    if not gpus:
        return [
            f"no GPU visible to TensorFlow: each of {local_ranks} local rank(s) trains on CPU "
            f"with {threads} thread(s)"
        ]
    lines = [f"local rank {r} -> {gpu_for(r, gpus)}" for r in range(local_ranks)]
    if local_ranks > len(gpus):
        lines.append(
            f"warning: {local_ranks} local ranks share {len(gpus)} GPU(s); ask for one rank per GPU"
        )
    if "NCCL" not in ops:
        lines.append(
            "warning: Horovod was built without NCCL: gradients are averaged through host memory "
            "(rebuild with HOROVOD_GPU_OPERATIONS=NCCL, see README's GPU install)"
        )
    return lines


def local_ranks_here() -> int:
    """Ranks per node as the launcher says (mpirun, srun), else 1."""
    for name in ("OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE", "PMI_LOCAL_SIZE"):
        value = os.environ.get(name, "").split("(")[0]
        if value.isdigit():
            return int(value)
    return 1


@dataclass
class Context:
    """Who this process is in the run, and the modules it trains with."""

    rank: int
    size: int
    local_rank: int
    local_size: int
    threads: int | None
    gpu: str | None
    tf: Any
    hvd: Any

    @property
    def is_root(self) -> bool:
        return self.rank == 0


# What hpcdl sets for its ranks before Horovod starts, unless the environment already sets it
# (a spec's `env`, the job's shell): README, "Horovod on CPUs". Measured in results/benchmarks.md.
RANK_DEFAULTS = {
    # Open MPI: a rank waiting in a collective yields its core instead of busy-polling it
    # (Horovod's background thread waits in one every cycle, beside the rank's compute thread)
    "OMPI_MCA_mpi_yield_when_idle": "1",
}


def rank_defaults(environ: Any = None) -> dict[str, str]:
    """Set RANK_DEFAULTS that `environ` (os.environ) lacks; the ones it set."""
    environ = os.environ if environ is None else environ
    added = {k: v for k, v in RANK_DEFAULTS.items() if k not in environ}
    environ.update(added)
    return added


def cpu_threads(requested: int | None, local_size: int) -> int:
    """Threads for one rank: requested, else SLURM's CPUs per task, else its share of the CPUs."""
    if requested:
        return requested
    if os.environ.get("SLURM_CPUS_PER_TASK"):
        return max(1, int(os.environ["SLURM_CPUS_PER_TASK"]))
    usable = len(os.sched_getaffinity(0))
    if usable < (os.cpu_count() or usable):  # the launcher bound this rank to its own cores
        return usable
    return max(1, usable // max(1, local_size))


def init(threads: int | None = None, deterministic: bool = True) -> Context:
    """Start Horovod, pin one GPU per local rank (or set CPU threads), and make ops repeatable."""
    import horovod.tensorflow as hvd

    tf = import_tf()
    rank_defaults()  # read by Open MPI and Horovod in hvd.init()
    hvd.init()
    gpus = tf.config.list_physical_devices("GPU")
    gpu = None
    used_threads = None
    if gpus:
        for g in gpus:
            tf.config.experimental.set_memory_growth(g, True)
        mine = gpu_for(hvd.local_rank(), gpus)
        tf.config.set_visible_devices(mine, "GPU")
        gpu = mine.name
    else:
        used_threads = cpu_threads(threads, hvd.local_size())
        tf.config.threading.set_intra_op_parallelism_threads(used_threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, used_threads))
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    return Context(
        hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size(), used_threads, gpu, tf, hvd
    )
