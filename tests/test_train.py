"""`hpcdl train` on one process: it learns, resumes after a crash, refuses bad configs."""

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata

from tests.conftest import HELPERS, JOBS, ROOT, hpcdl, run

MNIST = str(JOBS / "mnist_cnn.yaml")
IP = str(JOBS / "indian_pines_3dcnn.yaml")
# the cheapest committed point: 20 steps an epoch, and its lr (inverse_time) does not depend on
# the number of epochs, so its first epochs are those of a shorter run
COMMITTED = ROOT / "results" / "indian_pines_baseline" / "f8a4a8d0"
# a few thousand MNIST images: seconds per epoch on 2 cores
SMALL_MNIST = ["--set", "data.train_subset=3000", "--set", "data.test_subset=1000"]
SMALL_IP = [
    "--set",
    "model.filters=[8,8,8]",
    "--set",
    "model.dense=[64]",
    "--set",
    "train.optimizer=adam",
    "--set",
    "train.lr=0.003",
    "--set",
    "train.loss=categorical_crossentropy",
    "--set",
    "train.batch_size=32",
]


def tb_scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return [(s.step, s.value) for s in events.Scalars(tag)]


def weights(run_dir):
    with h5py.File(run_dir / "checkpoints" / "last.h5") as f:
        return [f["model"][k][()] for k in sorted(f["model"])]


def error_line(proc) -> str:
    lines = [x for x in proc.stderr.splitlines() if x.startswith("hpcdl:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.slow
def test_mnist_learns_and_writes_the_run_directory(env, tmp_path):
    run_dir = tmp_path / "run"
    proc = hpcdl(
        "train", MNIST, "--run-dir", str(run_dir), "--set", "train.epochs=3", *SMALL_MNIST, env=env
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run_dir / "result.json").read_text())
    assert result["test_accuracy"] > 0.85  # chance is 0.1
    assert result["test_samples"] == 1000 and result["ranks"] == 1
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    for key in (
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "lr",
        "epoch_seconds",
        "samples_per_second",
    ):
        assert all(np.isfinite(r[key]) for r in lines), key
    assert lines[-1]["loss"] < lines[0]["loss"]
    assert (run_dir / "config.yaml").exists() and (run_dir / "checkpoints" / "last.h5").exists()
    # TensorBoard, read by its own reader: the same curves, and the settings for HParams
    assert tb_scalars(run_dir / "tb" / "train", "epoch_loss") == [
        (r["epoch"], pytest.approx(r["loss"], rel=1e-6)) for r in lines
    ]
    assert [s for s, _ in tb_scalars(run_dir / "tb" / "validation", "epoch_accuracy")] == [1, 2, 3]
    hparams = EventAccumulator(str(run_dir / "tb"))
    hparams.Reload()
    assert "train.lr" in str(hparams.PluginTagToContent(hparams_metadata.PLUGIN_NAME))


@pytest.mark.slow
def test_indian_pines_learns(env, tmp_path):
    run_dir = tmp_path / "ip"
    proc = hpcdl(
        "train", IP, "--run-dir", str(run_dir), "--set", "train.epochs=6", *SMALL_IP, env=env
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run_dir / "result.json").read_text())
    # the largest class is 24% of the test pixels; 16 classes
    assert result["overall_accuracy"] > 0.45
    assert result["kappa"] > 0.3
    # the classification map's data: every labelled pixel once, test predictions as scored
    with np.load(run_dir / "predictions.npz") as pixels:
        coords, truth, predicted, split = (
            pixels[k] for k in ("coords", "truth", "predicted", "split")
        )
        assert list(pixels["shape"]) == [145, 145]
    assert len({(r, c) for r, c in coords}) == len(coords) == 10249  # Indian Pines' labelled pixels
    assert (split == 0).sum() == result["train_samples"] and (split == 2).sum() == result[
        "test_samples"
    ]
    test = split == 2
    assert (predicted[test] == truth[test]).mean() == pytest.approx(result["overall_accuracy"])
    matrix = np.array(result["confusion_matrix"])
    assert matrix.shape == (16, 16) and matrix.sum() == result["test_samples"] == 9224
    assert len(result["per_class_accuracy"]) == 16


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_end(env, tmp_path):
    args = ["train.epochs=3", "data.train_subset=1200", "data.test_subset=500"]
    straight = tmp_path / "straight"
    proc = hpcdl(
        "train", MNIST, "--run-dir", str(straight), *sum((["--set", a] for a in args), []), env=env
    )
    assert proc.returncode == 0, proc.stderr

    crashed = tmp_path / "crashed"
    proc = run(
        [sys.executable, str(HELPERS / "die_after_epoch.py"), MNIST, str(crashed), "2", *args], env
    )
    assert proc.returncode == -9  # SIGKILL
    assert not (crashed / "result.json").exists()
    assert len((crashed / "metrics.jsonl").read_text().splitlines()) == 2

    proc = hpcdl(
        "train", MNIST, "--run-dir", str(crashed), *sum((["--set", a] for a in args), []), env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "resuming" in proc.stdout and "after epoch 2" in proc.stdout
    assert proc.stdout.count("epoch 3/3") == 1 and "epoch 1/3" not in proc.stdout
    for a, b in zip(weights(straight), weights(crashed), strict=True):
        np.testing.assert_array_equal(a, b)
    drop = ("epoch_seconds", "samples_per_second", "data_wait_seconds", "time")
    lines = [
        [
            {k: v for k, v in json.loads(x).items() if k not in drop}
            for x in (d / "metrics.jsonl").read_text().splitlines()
        ]
        for d in (straight, crashed)
    ]
    assert lines[0] == lines[1]
    # the restart replaced what the crashed attempt left after its last checkpoint
    assert [s for s, _ in tb_scalars(crashed / "tb" / "train", "epoch_loss")] == [1, 2, 3]
    results = [json.loads((d / "result.json").read_text()) for d in (straight, crashed)]
    assert results[0]["test_loss"] == results[1]["test_loss"]

    # a finished run is not trained again, and its result stays as it was
    before = (crashed / "result.json").read_bytes()
    proc = hpcdl(
        "train", MNIST, "--run-dir", str(crashed), *sum((["--set", a] for a in args), []), env=env
    )
    assert proc.returncode == 0 and "already finished" in proc.stdout
    assert "epoch 1/" not in proc.stdout
    assert (crashed / "result.json").read_bytes() == before


def test_changed_config_in_used_run_dir_is_refused(env, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(
        "model: {name: mnist_cnn}\ndata: {name: mnist}\ntrain: {lr: 0.5}\n"
    )
    proc = hpcdl("train", MNIST, "--run-dir", str(run_dir), env=env)
    assert proc.returncode == 2
    assert "different config" in error_line(proc)


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["model.name=vgg16"], "model"),
        (["data.window=8"], "window must be odd"),
        (["data.window=151"], "larger than the image"),
        (["train.batch_size=100000"], "train.batch_size"),
    ],
)
def test_bad_config_fails_before_writing_anything(env, tmp_path, overrides, needle):
    run_dir = tmp_path / "run"
    proc = hpcdl(
        "train", IP, "--run-dir", str(run_dir), *sum((["--set", o] for o in overrides), []), env=env
    )
    assert proc.returncode == 2
    line = error_line(proc)
    assert line.startswith("hpcdl: error:") and needle in line
    assert not run_dir.exists()


def test_missing_data_file_names_it(env, tmp_path):
    run_dir = tmp_path / "run"
    proc = hpcdl(
        "train",
        IP,
        "--run-dir",
        str(run_dir),
        env={**env, "HPCDL_DATA_DIR": str(tmp_path / "empty")},
    )
    assert proc.returncode == 2
    line = error_line(proc)
    assert "Indian_pines_corrected.mat not found" in line and "hpcdl data fetch" in line
    assert not run_dir.exists()


def test_missing_config_file(env, tmp_path):
    proc = hpcdl("train", str(tmp_path / "nope.yaml"), env=env)
    assert proc.returncode == 2 and "no such file" in error_line(proc)


def test_diverging_run_stops_with_a_reason_and_no_result(env, tmp_path):
    run_dir = tmp_path / "nan"
    proc = hpcdl(
        "train",
        MNIST,
        "--run-dir",
        str(run_dir),
        "--set",
        "train.optimizer=sgd",
        "--set",
        "train.lr=1.0e+12",
        "--set",
        "train.epochs=2",
        *SMALL_MNIST,
        "--set",
        "train.steps_per_epoch=3",
        env=env,
    )
    assert proc.returncode == 2
    assert "loss became nan at epoch 1" in error_line(proc)
    failure = json.loads((run_dir / "failure.json").read_text())
    assert failure["reason"].startswith("loss became nan") and failure["error"] == "HpcdlError"
    assert not (run_dir / "result.json").exists()
    assert not (run_dir / "checkpoints" / "last.h5").exists()


@pytest.mark.slow
def test_sigterm_mid_epoch_checkpoints_and_resumes_to_the_same_end(env, tmp_path):
    import signal
    import subprocess
    import time

    args = sum(
        (
            ["--set", a]
            for a in (
                "train.epochs=3",
                "data.train_subset=4000",
                "data.test_subset=500",
                "train.batch_size=32",
            )
        ),
        [],
    )
    straight = tmp_path / "straight"
    assert hpcdl("train", MNIST, "--run-dir", str(straight), *args, env=env).returncode == 0

    stopped = tmp_path / "stopped"
    exe = str(Path(sys.executable).with_name("hpcdl"))
    proc = subprocess.Popen(
        [exe, "train", MNIST, "--run-dir", str(stopped), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = stopped / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # early in epoch 2
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    assert "stopped by SIGTERM at epoch 2 step" in err
    failure = json.loads((stopped / "failure.json").read_text())
    assert failure["reason"].startswith("stopped by SIGTERM at epoch 2")
    with h5py.File(stopped / "checkpoints" / "last.h5") as f:
        assert f.attrs["epoch"] == 1 and 0 < f.attrs["step"] < 125

    proc = hpcdl("train", MNIST, "--run-dir", str(stopped), *args, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "resuming" in proc.stdout and "of epoch 2" in proc.stdout
    assert not (stopped / "failure.json").exists()
    for a, b in zip(weights(straight), weights(stopped), strict=True):
        np.testing.assert_array_equal(a, b)
    epochs = [json.loads(x) for x in (stopped / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    for a, b in zip(epochs, ref, strict=True):  # the interrupted epoch's sums carried over
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
        assert a["accuracy"] == pytest.approx(b["accuracy"], rel=1e-9)


def test_time_limit_warning_without_requeue_trains_on(env, tmp_path):
    """SIGUSR1 is only a warning: where the job cannot requeue itself (here: not under SLURM)
    stopping early would gain nothing, so the run goes on (SIGTERM at the limit stops it)."""
    import signal
    import subprocess
    import time

    run_dir = tmp_path / "run"
    exe = str(Path(sys.executable).with_name("hpcdl"))
    proc = subprocess.Popen(
        [
            exe,
            "train",
            MNIST,
            "--run-dir",
            str(run_dir),
            "--set",
            "train.epochs=2",
            "--set",
            "train.batch_size=32",
            *SMALL_MNIST,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (run_dir / "metrics.jsonl").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "time-limit warning at epoch 2" in out and "training on" in out
    assert (run_dir / "result.json").exists()


@pytest.mark.slow
def test_rerun_of_a_committed_point_reproduces_its_losses_bit_for_bit(env, tmp_path):
    """Training code that changes what a run computes shows here, not in next month's results."""
    committed = [json.loads(x) for x in (COMMITTED / "metrics.jsonl").read_text().splitlines()]
    run_dir = tmp_path / "rerun"
    proc = hpcdl(
        "train",
        str(COMMITTED / "config.yaml"),
        "--run-dir",
        str(run_dir),
        "--set",
        "train.epochs=2",
        "--set",
        "train.threads=2",  # as many as the committed run had (threads: null on 2 cores)
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    rerun = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rerun) == 2
    for new, old in zip(rerun, committed, strict=False):
        for key in ("epoch", "loss", "accuracy", "lr", "steps", "ranks"):
            assert new[key] == old[key], (key, new[key], old[key])


def test_flips_turn_each_window_by_one_of_the_squares_symmetries():
    from hpcdl.errors import HpcdlError
    from hpcdl.training.epochs import flip_windows

    x = np.random.default_rng(0).normal(size=(64, 5, 5, 3, 1))
    out = flip_windows(x, [1, 2, 3])
    symmetries = [lambda w, k=k: np.rot90(w, k % 4) if k < 4 else np.rot90(w, k % 4)[:, ::-1]
                  for k in range(8)]  # fmt: skip
    found = [next(k for k, f in enumerate(symmetries) if np.array_equal(f(a), b))
             for a, b in zip(x, out, strict=True)]  # fmt: skip
    assert set(found) == set(range(8))  # all eight drawn over a batch of 64
    assert np.array_equal(flip_windows(x, [1, 2, 3]), out)  # the batch's seed decides
    assert not np.array_equal(flip_windows(x, [1, 2, 4]), out)
    with pytest.raises(HpcdlError, match="square windows"):
        flip_windows(np.zeros((4, 5, 3)), [0])


def test_training_on_flipped_windows_is_reproducible(env, tmp_path):
    """(MNIST's windows here, for speed: the flips are the same for Indian Pines' patches.)"""

    def losses(name: str, augment: str) -> list[float]:
        run_dir = tmp_path / name
        sets = ["train.epochs=1", "train.steps_per_epoch=6", "data.train_subset=2000"]
        sets += ["data.test_subset=200", f"train.augment={augment}"]
        args = [a for s in sets for a in ("--set", s)]
        proc = hpcdl("train", MNIST, "--run-dir", str(run_dir), *args, env=env)
        assert proc.returncode == 0, proc.stderr
        return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").open()]

    flipped = losses("a", "flips")
    assert losses("b", "flips") == flipped  # same seed, same flips, same losses
    assert losses("c", "none") != flipped


def test_a_run_folder_written_before_a_setting_existed_is_still_the_same_run(tmp_path):
    """A point planned by an older hpcdl (its config.yaml lacks a setting added since) resumes:
    the missing setting counts with its default; a value that differs is still refused."""
    import yaml

    from hpcdl.config import config_to_dict, load_config
    from hpcdl.errors import HpcdlError
    from hpcdl.training.runfiles import check_run_dir

    config = load_config(MNIST)
    written = config_to_dict(config)
    del written["train"]["augment"]  # as written before train.augment existed
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(written))
    check_run_dir(tmp_path, config)
    written["train"]["lr"] = 0.5
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(written))
    with pytest.raises(HpcdlError, match=r"train.lr: 0.5 -> 0.001"):
        check_run_dir(tmp_path, config)
