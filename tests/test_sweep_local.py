"""`hpcdl sweep` on the local backend, end to end with real training runs."""

import json
import os
import signal

import pandas as pd
import pytest

from tests.conftest import hpcdl
from tests.sweeps import attempts, manifest, start_sweep, until, write_spec

pytestmark = pytest.mark.slow


def test_local_sweep_runs_every_point_and_collects(env, tmp_path):
    spec = write_spec(
        tmp_path,
        "grid",
        {"train.lr": [0.001, 0.003], "train.batch_size": [32, 64]},
        "local",
        max_concurrent=2,
    )
    sweep_dir = tmp_path / "results" / "grid"
    runner = start_sweep(spec, env)
    until(
        lambda: (sweep_dir / "sweep.json").exists() and manifest(tmp_path, "grid")["submissions"],
        runner,
        timeout=120,
    )
    # another shell waits for it: pending while queued behind max_concurrent, then finished
    waited = hpcdl("status", str(sweep_dir), "--wait", env=env)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert "pending" in waited.stdout.splitlines()[0] and "4 finished" in waited.stdout
    stdout, stderr = runner.communicate(timeout=120)
    assert runner.returncode == 0, stderr
    assert stdout.count("completed ") >= 4 and "[4/4]" in stdout
    summary = pd.read_csv(sweep_dir / "summary.csv")
    assert len(summary) == 4 and set(summary["state"]) == {"FINISHED"}
    assert summary["test_accuracy"].min() > 0.3  # 1 epoch on 600 images; chance is 0.1
    assert sorted(summary["hp.train.batch_size"]) == [32, 32, 64, 64]
    data = manifest(tmp_path, "grid")
    assert len(data["points"]) == 4 and (sweep_dir / "jobs" / "a000.sh").exists()
    for point in data["points"]:
        config = (sweep_dir / point["id"] / "config.yaml").read_text()
        assert f"lr: {point['overrides']['train.lr']}" in config

    status = hpcdl("status", str(sweep_dir), env=env)
    assert status.returncode == 0 and "4 finished" in status.stdout

    again = hpcdl("sweep", str(spec), env=env)
    assert again.returncode == 2 and "already holds sweep 'grid'" in again.stderr
    resume = hpcdl("resume", str(sweep_dir), env=env)
    assert resume.returncode == 0 and "nothing to resume" in resume.stdout


def test_failed_and_timed_out_points_resume_to_completion(env, tmp_path):
    """One point fails (its data folder is not there yet), one runs past the time limit;
    `resume` reruns exactly those two, and the timed-out one continues from its checkpoint."""
    staged = tmp_path / "staged-data"
    spec = write_spec(
        tmp_path,
        "drill",
        {},
        "local",
        max_concurrent=3,
        include=[
            {"train.lr": 0.001},
            {"train.lr": 0.002, "data.dir": str(staged)},
            {"train.lr": 0.003, "train.epochs": 40, "data.train_subset": 3000},
        ],
        resources={"time": "00:25"},
    )
    proc = hpcdl("sweep", str(spec), env=env)
    assert proc.returncode == 0, proc.stderr
    sweep_dir = tmp_path / "results" / "drill"
    status = hpcdl("status", str(sweep_dir), env=env).stdout
    assert "1 failed" in status and "1 finished" in status and "1 timeout" in status
    assert "Indian_pines" not in status and "train-images-idx3-ubyte.gz not found" in status

    points = {
        p["overrides"]["train.lr"]: sweep_dir / p["id"]
        for p in manifest(tmp_path, "drill")["points"]
    }
    done_before = (points[0.001] / "result.json").read_bytes()
    slow_epochs = len((points[0.003] / "metrics.jsonl").read_text().splitlines())
    assert 0 < slow_epochs < 40

    staged.symlink_to(env["HPCDL_DATA_DIR"])  # the data arrives
    proc = hpcdl("resume", str(sweep_dir), "--time", "00:10:00", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "resubmitting 2 point(s)" in proc.stdout
    status = hpcdl("status", str(sweep_dir), env=env).stdout
    assert "3 finished" in status
    assert (points[0.001] / "result.json").read_bytes() == done_before
    assert attempts(points[0.001]) == 1 and attempts(points[0.002]) == 2
    assert attempts(points[0.003]) == 2
    slow_log = (points[0.003] / "job.out").read_text()
    assert f"resuming {points[0.003]} after epoch" in slow_log
    epochs = [
        json.loads(x)["epoch"] for x in (points[0.003] / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == list(range(1, 41))  # no epoch lost or repeated


def test_sigterm_to_a_background_sweep_stops_its_points_for_resume(env, tmp_path):
    """`hpcdl sweep ... &` starts with SIGINT ignored; a SIGTERM (a batch job that runs the sweep
    reaching its limit, a `kill`) must still stop every point with a checkpoint, leave no
    training process behind, and let `resume` finish the work."""
    spec = write_spec(
        tmp_path,
        "bg",
        {"train.lr": [0.001, 0.002, 0.003]},
        "local",
        max_concurrent=2,
        fixed={"train.epochs": 12, "data.train_subset": 2000},
    )
    sweep_dir = tmp_path / "results" / "bg"
    runner = start_sweep(spec, env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    # a point is past its first epoch
    until(lambda: list(sweep_dir.glob("*/metrics.jsonl")), runner, timeout=180)
    states = [json.loads(p.read_text()) for p in sweep_dir.glob("*/local.json")]
    pids = [s["pid"] for s in states if s["state"] == "RUNNING"]
    assert len(pids) == 2
    runner.send_signal(signal.SIGTERM)
    out, err = runner.communicate(timeout=120)
    assert runner.returncode != 0 and "interrupted" in err + out
    for pid in pids:  # no training left running
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    status = hpcdl("status", str(sweep_dir), env=env).stdout
    assert "3 cancelled" in status, status
    stopped = [d for d in sweep_dir.iterdir() if (d / "checkpoints").exists()]
    assert len(stopped) == 2
    assert all("stopped by SIGTERM" in (d / "job.out").read_text() for d in stopped)

    proc = hpcdl("resume", str(sweep_dir), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "3 finished" in hpcdl("status", str(sweep_dir), env=env).stdout
    for run_dir in stopped:  # continued from the checkpoint, no epoch run twice
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        epochs = [json.loads(x)["epoch"] for x in lines]
        assert epochs == list(range(1, 13)) and "resuming" in (run_dir / "job.out").read_text()
