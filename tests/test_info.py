"""`hpcdl info`: the stack, which GPU each local rank pins and whether Horovod has NCCL."""

from __future__ import annotations

import os

from hpcdl.distributed import gpu_for, pinning_report
from tests.conftest import hpcdl


def test_info_names_the_collectives_and_the_cpu_threads_of_each_rank(env):
    proc = hpcdl("info", "--ranks", "2", env=env)
    assert proc.returncode == 0, proc.stderr
    first, *rest = proc.stdout.splitlines()
    assert "horovod 0.28.1 (MPI, Gloo" in first  # the CPU build tested here has no NCCL
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    assert rest == [
        f"no GPU visible to TensorFlow: each of 2 local rank(s) trains on CPU with "
        f"{threads} thread(s)"
    ]


# No GPU with TensorFlow can be reached from here: the device names below stand in for what
# tf.config.list_physical_devices("GPU") returns on a GPU node; training pins with gpu_for too.
GPUS = ["/physical_device:GPU:0", "/physical_device:GPU:1"]


def test_each_local_rank_pins_its_own_gpu_and_a_nccl_build_has_no_warning():
    assert pinning_report(GPUS, 2, ["MPI", "NCCL", "CUDA"], 1) == [
        "local rank 0 -> /physical_device:GPU:0",
        "local rank 1 -> /physical_device:GPU:1",
    ]


def test_more_ranks_than_gpus_and_a_build_without_nccl_are_warned_about():
    lines = pinning_report(GPUS, 3, ["MPI", "Gloo"], 1)
    assert lines[2] == "local rank 2 -> /physical_device:GPU:0"  # round robin
    assert "3 local ranks share 2 GPU(s)" in lines[3]
    assert "without NCCL" in lines[4]
    assert gpu_for(5, GPUS) == GPUS[1] and gpu_for(0, []) is None
