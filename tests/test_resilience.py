"""Surviving what clusters do to jobs: time limits, preemption signals, dead ranks, a crashed
`hpcdl sweep`, racing sweeps, a full disk. SLURM drills run on the real test cluster."""

import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import HELPERS, JOBS, hpcdl, run
from tests.sweeps import attempts, manifest, requeues, sacct_settled, wait_for, write_spec

TERMINAL = {"FINISHED", "FAILED", "TIMEOUT", "CANCELLED", "OUT_OF_MEMORY"}
MNIST = str(JOBS / "mnist_cnn.yaml")
# one thread everywhere, so the SLURM run and the uninterrupted reference compute alike
STEADY = {"train.threads": 1, "data.train_subset": 3000, "train.batch_size": 32}


class Releaser(threading.Thread):
    """Starts requeued jobs at once. Slurm holds a requeued job for about two minutes
    (Reason=BeginTime) before it may run again; on a real cluster that is noise, in a test it
    is waiting. `scontrol update StartTime=now` is what an operator would do, a few seconds
    after the requeue: a job started again within the second its old allocation was revoked
    is killed by slurmd ("Job credential revoked"), the race Slurm's own hold avoids."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()

    def run(self):
        held_since: dict[str, float] = {}
        while not self.stop.is_set():
            out = subprocess.run(
                ["squeue", "-h", "-t", "PD", "-o", "%i %r"], capture_output=True, text=True
            ).stdout
            for line in out.splitlines():
                job, _, reason = line.partition(" ")
                if reason.strip() != "BeginTime":
                    continue
                since = held_since.setdefault(job, time.monotonic())
                if time.monotonic() - since >= 3:
                    subprocess.run(
                        ["scontrol", "update", f"jobid={job}", "StartTime=now"], capture_output=True
                    )
                    del held_since[job]
            time.sleep(1)


@pytest.fixture
def releaser():
    thread = Releaser()
    thread.start()
    yield thread
    thread.stop.set()


def final_weights(run_dir: Path):
    with h5py.File(run_dir / "checkpoints" / "last.h5") as f:
        return [f["model"][k][()] for k in sorted(f["model"])]


def epochs_of(run_dir: Path) -> list[int]:
    return [json.loads(x)["epoch"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def training_point(sweep_dir: Path):
    """The sweep's one point once it runs and has finished an epoch: (status, run dir)."""
    [point] = wait_for(sweep_dir, lambda s: "RUNNING" in s, timeout=120, every=0.5)
    run_dir = Path(point.run_dir)
    deadline = time.monotonic() + 120
    while not (run_dir / "metrics.jsonl").exists():
        assert time.monotonic() < deadline
        time.sleep(0.5)
    return point, run_dir


def straight_run(env, tmp_path, point_dir: Path) -> Path:
    """The same config trained without interruption, for comparison."""
    reference = tmp_path / "reference"
    proc = hpcdl("train", str(point_dir / "config.yaml"), "--run-dir", str(reference), env=env)
    assert proc.returncode == 0, proc.stderr
    return reference


@pytest.mark.slurm
@pytest.mark.slow
def test_time_limit_warning_checkpoints_requeues_and_finishes(
    slurm_cluster, releaser, env, tmp_path
):
    # one minute limit, warning 30 s before it; ~40 s of training: at least one requeue
    spec = write_spec(
        tmp_path,
        "limit",
        {},
        "slurm",
        include=[{"train.epochs": 20}],
        fixed=STEADY,
        resources={"time": "1"},
        collect=False,
    )
    assert hpcdl("sweep", str(spec), env=env).returncode == 0
    sweep_dir = tmp_path / "results" / "limit"
    [point] = wait_for(sweep_dir, lambda s: all(x in TERMINAL for x in s), timeout=400)
    assert point.state == "FINISHED", point.reason
    run_dir = Path(point.run_dir)
    assert "#SBATCH --signal=B:USR1@30" in (sweep_dir / "jobs" / "a000.sh").read_text()
    assert requeues(point.job) >= 1  # sacct shows the requeue
    log = (run_dir / "job.out").read_text()
    assert "stopped by SIGUSR1" in log and "requeued job" in log
    assert attempts(run_dir) == requeues(point.job) + 1
    assert epochs_of(run_dir) == list(range(1, 21))  # nothing lost, nothing repeated
    reference = straight_run(env, tmp_path, run_dir)
    for a, b in zip(final_weights(run_dir), final_weights(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    ours, theirs = (json.loads((d / "result.json").read_text()) for d in (run_dir, reference))
    assert ours["test_loss"] == pytest.approx(theirs["test_loss"], abs=1e-6)
    assert ours["test_accuracy"] == pytest.approx(theirs["test_accuracy"], abs=1e-9)


@pytest.mark.slurm
@pytest.mark.slow
def test_scancel_signal_usr1_checkpoints_and_requeues(slurm_cluster, releaser, env, tmp_path):
    spec = write_spec(
        tmp_path, "usr1", {}, "slurm", include=[{"train.epochs": 12}], fixed=STEADY, collect=False
    )
    assert hpcdl("sweep", str(spec), env=env).returncode == 0
    sweep_dir = tmp_path / "results" / "usr1"
    point, run_dir = training_point(sweep_dir)
    subprocess.run(["scancel", "--batch", "--signal=USR1", point.job], check=True)
    [point] = wait_for(sweep_dir, lambda s: all(x in TERMINAL for x in s), timeout=300)
    assert point.state == "FINISHED", point.reason
    assert requeues(point.job) == 1
    assert "stopped by SIGUSR1" in (run_dir / "job.out").read_text()
    assert epochs_of(run_dir) == list(range(1, 13))


@pytest.mark.slurm
@pytest.mark.slow
def test_killing_one_rank_ends_the_run_promptly(slurm_cluster, env, tmp_path):
    spec = write_spec(
        tmp_path,
        "rank",
        {},
        "slurm",
        include=[{"train.epochs": 500}],
        resources={"gpus_per_node": 2, "time": "00:20:00"},
        collect=False,
    )
    assert hpcdl("sweep", str(spec), env=env).returncode == 0
    sweep_dir = tmp_path / "results" / "rank"
    point, run_dir = training_point(sweep_dir)
    ps = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    ranks = [
        int(line.split()[0])
        for line in ps.splitlines()
        if f"hpcdl train {run_dir}/config.yaml" in line and "srun" not in line
    ]
    assert len(ranks) == 2, ps
    killed = time.monotonic()
    os.kill(ranks[1], signal.SIGKILL)
    [point] = wait_for(sweep_dir, lambda s: all(x in TERMINAL for x in s), timeout=120, every=0.5)
    ended_after = time.monotonic() - killed
    assert point.state == "FAILED"
    assert ended_after < 60, f"took {ended_after:.0f} s (limit 20 min)"
    assert re.search(r"exit \d+|Killed|task 1", point.reason), point.reason


@pytest.mark.slurm
@pytest.mark.slow
def test_killed_sweep_then_resume_runs_every_point_exactly_once(slurm_cluster, env, tmp_path):
    # a slow `sbatch` on the PATH: the second call sleeps, `hpcdl sweep` is killed meanwhile,
    # and the orphaned sbatch still submits: the worst case, a job without a record
    wrapper_dir = tmp_path / "bin"
    wrapper_dir.mkdir()
    real = subprocess.run(["which", "sbatch"], capture_output=True, text=True).stdout.strip()
    (wrapper_dir / "sbatch").write_text(f"""#!/bin/bash
n=$(cat {tmp_path}/count 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {tmp_path}/count
if [ $n -eq 2 ]; then touch {tmp_path}/sleeping; sleep 4; fi
exec {real} "$@"
""")
    (wrapper_dir / "sbatch").chmod(0o755)
    spec = write_spec(
        tmp_path,
        "crash",
        {"train.lr": [0.001, 0.002, 0.003, 0.004]},
        "slurm",
        scheduler={"max_array_size": 2},
    )
    exe = str(Path(sys.executable).with_name("hpcdl"))
    proc = subprocess.Popen(
        [exe, "sweep", str(spec)],
        env={**env, "PATH": f"{wrapper_dir}:{env['PATH']}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / "sleeping").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.kill()  # between the two array submissions
    proc.wait()
    time.sleep(5)  # the orphaned sbatch submits the second array
    sweep_dir = tmp_path / "results" / "crash"
    status = hpcdl("status", str(sweep_dir), env=env).stdout
    assert "submission a001: planned, no job id" in status and "2 unconfirmed" in status

    proc = hpcdl("resume", str(sweep_dir), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "(its submission was not recorded)" in proc.stdout
    assert "resubmitting 0 point(s)" in proc.stdout
    wait_for(sweep_dir, lambda s: all(x == "FINISHED" for x in s), timeout=300)
    for point in manifest(tmp_path, "crash")["points"]:
        assert attempts(sweep_dir / point["id"]) == 1, point["id"]
    arrays = [s for s in manifest(tmp_path, "crash")["submissions"] if s["kind"] == "array"]
    assert [s["token"] for s in arrays] == ["a000", "a001"] and all(s["job_id"] for s in arrays)
    rows = sacct_settled([s["job_id"] for s in arrays], rows=4)
    names = sorted(r["JobName"].rsplit("-", 1)[1] for r in rows)
    assert names == ["a000", "a000", "a001", "a001"]  # 2 arrays x 2 tasks, nothing submitted twice


@pytest.mark.slurm
def test_two_sweeps_racing_for_one_folder(slurm_cluster, env, tmp_path):
    spec = write_spec(
        tmp_path, "race", {"train.lr": [0.1, 0.2]}, "slurm", resources={"extra": ["--hold"]}
    )
    other = write_spec(
        tmp_path, "other", {"train.lr": [0.1]}, "slurm", resources={"extra": ["--hold"]}
    )
    exe = str(Path(sys.executable).with_name("hpcdl"))
    procs = [
        subprocess.Popen(
            [exe, "sweep", str(s)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for s in (spec, spec, other)
    ]
    results = [(p.wait(), p.stderr.read()) for p in procs]
    try:
        assert sorted(code for code, _ in results[:2]) == [0, 2]
        assert "already holds sweep 'race'" in [err for code, err in results[:2] if code][0]
        assert results[2][0] == 0  # another sweep in the same results folder is unaffected
        data = manifest(tmp_path, "race")
        assert len(data["points"]) == 2
        assert len([s for s in data["submissions"] if s["kind"] == "array"]) == 1
    finally:
        for name in ("race", "other"):
            hpcdl("cancel", str(tmp_path / "results" / name), env=env)


def test_a_stop_signal_while_python_starts_is_a_stop_request(env, tmp_path):
    """SLURM sends the time-limit warning at its next 30-second check once it is due within
    that period: with a short limit it can come while the job's Python is still importing. The
    run then stops at its first step with a checkpoint (exit 75) instead of dying of SIGUSR1
    (exit 138, a failed job that is never requeued). The config comes through a FIFO, so the
    signal surely arrives before training (and its own handlers) start."""
    from tests.test_pbs import fake_command

    fifo, run_dir = tmp_path / "config.yaml", tmp_path / "run"
    os.mkfifo(fifo)
    fake_command(tmp_path, "scontrol", f'echo "$@" > {tmp_path}/scontrol.args')
    slurm_job = {"SLURM_JOB_ID": "41", "HPCDL_REQUEUE_MAX": "3", "SLURM_RESTART_COUNT": "0"}
    args = ["train.epochs=1", "data.train_subset=600", "data.test_subset=300"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpcdl", "train", str(fifo), "--run-dir", str(run_dir)]
        + sum((["--set", a] for a in args), []),
        env={
            **{k: v for k, v in env.items() if not k.startswith("SLURM_")},
            **slurm_job,
            "PATH": f"{tmp_path}{os.pathsep}{env['PATH']}",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    with open(fifo, "w") as config:  # returns once hpcdl opened it to read its config
        time.sleep(0.2)
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.2)
        config.write(Path(MNIST).read_text())
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 75, out[-3000:]
    assert "stopped by SIGUSR1 at epoch 1 step 1/" in out, out[-3000:]
    assert (run_dir / "checkpoints" / "last.h5").exists()
    assert (tmp_path / "scontrol.args").read_text().split() == ["requeue", "41"]


def test_full_disk_keeps_the_last_good_checkpoint(env, tmp_path):
    """A file-size limit makes the checkpoint write fail like a full disk (EFBIG ~ ENOSPC)."""
    run_dir = tmp_path / "run"
    args = ["train.epochs=3", "data.train_subset=1200", "data.test_subset=300"]
    proc = run(
        [sys.executable, str(HELPERS / "die_after_epoch.py"), MNIST, str(run_dir), "1", *args], env
    )
    assert proc.returncode == -9
    good = (run_dir / "checkpoints" / "last.h5").read_bytes()

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (10_000_000, 10_000_000))  # < a checkpoint

    exe = str(Path(sys.executable).with_name("hpcdl"))
    full = subprocess.run(
        [exe, "train", MNIST, "--run-dir", str(run_dir), *sum((["--set", a] for a in args), [])],
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=small_files,
        timeout=300,
    )
    assert full.returncode == 2
    errors = [x for x in full.stderr.splitlines() if x.startswith("hpcdl:")]
    assert len(errors) == 1 and "File too large" in errors[0], full.stderr
    assert (run_dir / "checkpoints" / "last.h5").read_bytes() == good
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.suffix == ".tmp"]
    assert "File too large" in json.loads((run_dir / "failure.json").read_text())["reason"]

    proc = hpcdl(
        "train", MNIST, "--run-dir", str(run_dir), *sum((["--set", a] for a in args), []), env=env
    )
    assert proc.returncode == 0 and "resuming" in proc.stdout
    assert epochs_of(run_dir) == [1, 2, 3]
