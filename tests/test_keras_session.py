"""hpcdl.keras.Callback in real Keras fits (a small CNN on 512 real MNIST images, tf_keras and
Keras 3, one process and 2 Horovod ranks), and hpcdl.logparse on the progress these fits print."""

import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from hpcdl import logparse, rundir
from tests.conftest import HELPERS

pytestmark = pytest.mark.slow
FIT = str(HELPERS / "keras_fit.py")
KEYS = {"epoch", "loss", "accuracy", "val_loss", "val_accuracy"}


def fit(env, run_dir, *args, keras="tf_keras", launcher=(), **extra):
    """Run the user-style Keras script; returns the finished process."""
    env = {**env, "HPCDL_RUN_DIR": str(run_dir), **extra}
    env.pop("TF_USE_LEGACY_KERAS", None)
    if keras == "tf_keras":
        env["TF_USE_LEGACY_KERAS"] = "1"
    return subprocess.run(
        [*launcher, sys.executable, FIT, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def metrics(run_dir):
    records, problems = rundir.read_metrics(run_dir)
    assert not problems
    return records


def assert_same_curves(parsed, records):
    """What the parser read from the printed progress is what the callback logged (Keras
    prints 4 decimals)."""
    assert [p["epoch"] for p in parsed] == [r["epoch"] for r in records]
    for printed, logged in zip(parsed, records, strict=True):
        assert printed.keys() == KEYS
        for key in KEYS - {"epoch"}:
            assert printed[key] == pytest.approx(logged[key], abs=5.1e-5), key


@pytest.mark.parametrize(
    ("keras", "verbose"), [("tf_keras", "1"), ("tf_keras", "2"), ("keras3", "1")]
)
def test_fit_logs_each_epoch_and_its_printed_progress_parses_the_same(
    env, tmp_path, keras, verbose
):
    run_dir = tmp_path / "run"
    proc = fit(env, run_dir, verbose, "2", keras=keras)
    assert proc.returncode == 0, proc.stderr
    records = metrics(run_dir)
    assert [r["epoch"] for r in records] == [1, 2]
    assert KEYS <= records[0].keys()
    result = rundir.read_json(run_dir / rundir.RESULT)
    assert result["epochs"] == 2 and result["val_accuracy"] == records[-1]["val_accuracy"]
    assert_same_curves(logparse.parse(proc.stdout), records)  # evaluate's line is not an epoch
    events = EventAccumulator(str(run_dir / "tb" / "validation"))
    events.Reload()
    logged = [(s.step, s.value) for s in events.Scalars("epoch_accuracy")]
    assert logged == [(r["epoch"], pytest.approx(r["val_accuracy"])) for r in records]


def test_stop_signal_ends_fit_after_the_batch_and_a_restart_finishes(env, tmp_path):
    run_dir = tmp_path / "run"
    stopped = fit(env, run_dir, "2", "3", "2", "5")  # SIGUSR1 during batch 5 of epoch 2
    assert stopped.returncode == 75, stopped.stderr
    assert [r["epoch"] for r in metrics(run_dir)] == [1]  # the unfinished epoch is not logged
    reason = rundir.read_json(run_dir / rundir.FAILURE)["reason"]
    assert reason.startswith("stopped by SIGUSR1 at epoch 2 batch 5; ")
    assert not (run_dir / rundir.RESULT).exists()

    resumed = fit(env, run_dir, "2", "3")  # BackupAndRestore continues after epoch 1
    assert resumed.returncode == 0, resumed.stderr
    records = metrics(run_dir)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert rundir.read_json(run_dir / rundir.RESULT)["epochs"] == 3
    assert not (run_dir / rundir.FAILURE).exists()
    # job.out of both starts: "Epoch 2/3" printed twice, the second one counts
    assert_same_curves(logparse.parse(stopped.stdout + resumed.stdout), records)


def test_horovod_ranks_agree_to_stop_when_one_got_the_signal(env, tmp_path):
    run_dir = tmp_path / "run"
    mpirun = ("mpirun", "-np", "2", "--bind-to", "none", "-x", "KERAS_FIT_HOROVOD")
    # 6 batches per epoch and rank; only rank 1 gets SIGUSR1, in batch 2 of epoch 2; the ranks
    # compare every 10 batches, so both stop after batch 4 of epoch 2 (the 10th)
    proc = fit(env, run_dir, "2", "3", "2", "2", launcher=mpirun, KERAS_FIT_HOROVOD="1")
    assert proc.returncode == 75, proc.stdout + proc.stderr
    assert [(r["epoch"], r["ranks"]) for r in metrics(run_dir)] == [(1, 2)]
    reason = rundir.read_json(run_dir / rundir.FAILURE)["reason"]
    assert reason.startswith("stopped by another rank at epoch 2 batch 4; ")
