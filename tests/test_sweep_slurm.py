"""Sweeps on a real one-node SLURM cluster (slurm/start-test-cluster.sh): arrays, throttle,
dependent collect job, fake GPUs, a 2-rank Horovod point under srun, cancel, failure, time limit,
resume, and the PBS path through Slurm's Torque-style qsub wrappers."""

import json
import time

import pandas as pd
import pytest

from tests.conftest import ROOT, hpcdl, sbatch_test_only
from tests.sweeps import attempts, manifest, sacct_rows, wait_for, write_spec

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
TERMINAL = {"FINISHED", "FAILED", "TIMEOUT", "CANCELLED", "OUT_OF_MEMORY"}


def all_in(states, wanted):
    return all(s in wanted for s in states)


def wait_collect(sweep_dir, timeout=120):
    deadline = time.monotonic() + timeout
    while not (sweep_dir / "summary.csv").exists():
        assert time.monotonic() < deadline, "the collect job never wrote summary.csv"
        time.sleep(2)
    return pd.read_csv(sweep_dir / "summary.csv")


def test_array_with_throttle_then_collect_job(slurm_cluster, env, tmp_path):
    log = tmp_path / "scheduler.log"
    env = {**env, "HPCDL_SCHEDULER_LOG": str(log)}
    spec = write_spec(
        tmp_path, "arr", {"train.lr": [0.001, 0.002, 0.003]}, "slurm", max_concurrent=1
    )
    proc = hpcdl("sweep", str(spec), env=env)
    assert proc.returncode == 0, proc.stderr
    # submission: MaxArraySize, one array, one collect job
    assert [line.split()[0] for line in log.read_text().splitlines()] == [
        "scontrol",
        "sbatch",
        "sbatch",
    ]
    sweep_dir = tmp_path / "results" / "arr"
    for script in sorted((sweep_dir / "jobs").glob("*.sh")):
        assert sbatch_test_only(script).returncode == 0, script
    assert "#SBATCH --array=0-2%1" in (sweep_dir / "jobs" / "a000.sh").read_text()

    wait_for(sweep_dir, lambda states: all_in(states, {"FINISHED"}), timeout=240)
    summary = wait_collect(sweep_dir)
    log.unlink()  # (the collect job, which inherits this environment, logged its one query)
    assert len(summary) == 3 and set(summary["state"]) == {"FINISHED"}
    assert summary["alloc_cpus"].tolist() == [1, 1, 1]
    array_id, collect_id = [s["job_id"] for s in manifest(tmp_path, "arr")["submissions"]]
    rows = sacct_rows(f"{array_id},{collect_id}")
    tasks = sorted((rows[f"{array_id}_{i}"] for i in range(3)), key=lambda r: r["Start"])
    for earlier, later in zip(tasks, tasks[1:], strict=False):
        assert later["Start"] >= earlier["End"]  # %1: never two at once
    assert rows[collect_id]["Start"] >= max(t["End"] for t in tasks)  # afterany
    # status asks the scheduler once for the whole sweep
    status = hpcdl("status", str(sweep_dir), env=env)
    assert "3 finished" in status.stdout
    assert len(log.read_text().splitlines()) == 1


def test_two_rank_point_through_srun_on_fake_gpus(slurm_cluster, env, tmp_path):
    spec = write_spec(
        tmp_path,
        "gpu2",
        {"train.batch_size": [32]},
        "slurm",
        resources={"gpus_per_node": 2, "cpus_per_task": 1},
        collect=False,
        scheduler={"template": str(ROOT / "slurm" / "gpu_site.sh.j2")},  # the site example
    )
    proc = hpcdl("sweep", str(spec), env=env)
    assert proc.returncode == 0, proc.stderr
    sweep_dir = tmp_path / "results" / "gpu2"
    script = (sweep_dir / "jobs" / "a000.sh").read_text()
    assert "#SBATCH --gres=gpu:2" in script and "#SBATCH --ntasks-per-node=2" in script
    assert "exec srun --mpi=pmix" in script
    [point] = wait_for(sweep_dir, lambda s: all_in(s, TERMINAL), timeout=240)
    assert point.state == "FINISHED", point.reason
    result = json.loads((sweep_dir / point.id / "result.json").read_text())
    assert result["ranks"] == 2
    [job] = [s["job_id"] for s in manifest(tmp_path, "gpu2")["submissions"]]
    record = (sweep_dir / point.id / "job_env.txt").read_text()  # written by the site template
    assert f"SLURM_JOB_ID={job}" in record or f"SLURM_ARRAY_JOB_ID={job}" in record, record
    assert "gres/gpu=2" in sacct_rows(job)[f"{job}_0"]["AllocTRES"]


def test_failed_and_timed_out_points_resume_without_rerunning_finished(
    slurm_cluster, env, tmp_path
):
    staged = tmp_path / "staged-data"
    spec = write_spec(
        tmp_path,
        "drill",
        {},
        "slurm",
        include=[
            {"train.lr": 0.001},
            {"train.lr": 0.002, "data.dir": str(staged)},
            {"train.lr": 0.003, "train.epochs": 80, "data.train_subset": 3000},
        ],
        resources={"time": "1"},  # one minute: the 80-epoch point cannot make it
        scheduler={"requeue": 0},  # the classic path: killed at the limit, `resume` continues
    )
    proc = hpcdl("sweep", str(spec), env=env)
    assert proc.returncode == 0, proc.stderr
    sweep_dir = tmp_path / "results" / "drill"
    points = wait_for(sweep_dir, lambda s: all_in(s, TERMINAL), timeout=200)
    states = {p.label: p for p in points}
    by_lr = {
        p["overrides"]["train.lr"]: sweep_dir / p["id"]
        for p in manifest(tmp_path, "drill")["points"]
    }
    assert sorted(p.state for p in points) == ["FAILED", "FINISHED", "TIMEOUT"]
    failed = next(p for p in states.values() if p.state == "FAILED")
    assert "exit 2" in failed.reason and "not found" in failed.reason
    finished_result = (by_lr[0.001] / "result.json").read_bytes()

    staged.symlink_to(env["HPCDL_DATA_DIR"])
    proc = hpcdl("resume", str(sweep_dir), "--time", "00:10:00", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "resubmitting 2 point(s)" in proc.stdout
    assert "#SBATCH --time=00:10:00" in (sweep_dir / "jobs" / "r000.sh").read_text()
    wait_for(sweep_dir, lambda s: all_in(s, {"FINISHED"}), timeout=240)
    assert (by_lr[0.001] / "result.json").read_bytes() == finished_result
    assert attempts(by_lr[0.001]) == 1 and attempts(by_lr[0.002]) == 2
    assert attempts(by_lr[0.003]) == 2
    epochs = [
        json.loads(x)["epoch"] for x in (by_lr[0.003] / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == list(range(1, 81))
    first = manifest(tmp_path, "drill")["submissions"][0]["job_id"]
    assert sorted(
        r["State"].split()[0] for r in sacct_rows(first).values() if "_" in r["JobID"]
    ) == ["COMPLETED", "FAILED", "TIMEOUT"]


def test_cancel_stops_the_sweep(slurm_cluster, env, tmp_path):
    spec = write_spec(
        tmp_path, "cancel", {"train.lr": [0.001, 0.002]}, "slurm", fixed={"train.epochs": 200}
    )
    assert hpcdl("sweep", str(spec), env=env).returncode == 0
    sweep_dir = tmp_path / "results" / "cancel"
    wait_for(sweep_dir, lambda s: "RUNNING" in s, timeout=60, every=1)
    proc = hpcdl("cancel", str(sweep_dir), env=env)
    assert (
        proc.returncode == 0 and "cancelled 2 job(s)" in proc.stdout
    )  # the array and its collect job
    points = wait_for(sweep_dir, lambda s: all_in(s, {"CANCELLED"}), timeout=60)
    assert len(points) == 2


def test_torque_syntax_through_the_qsub_wrappers(slurm_cluster, env, tmp_path):
    """Slurm's Torque wrappers stand in for a PBS server (none is packaged for Debian)."""
    spec = write_spec(
        tmp_path,
        "pbs",
        {"train.lr": [0.001, 0.002]},
        "pbs",
        scheduler={"flavor": "torque"},
        max_concurrent=2,
    )
    proc = hpcdl("sweep", str(spec), env=env)
    assert proc.returncode == 0, proc.stderr
    sweep_dir = tmp_path / "results" / "pbs"
    script = (sweep_dir / "jobs" / "a000.sh").read_text()
    assert "#PBS -t 0-1%2" in script and "INDEX=${PBS_ARRAYID:-" in script
    wait_for(sweep_dir, lambda s: all_in(s, {"FINISHED"}), timeout=240)
    summary = wait_collect(sweep_dir)  # the dependent collect job (qsub -W depend=afterany:ID)
    assert len(summary) == 2 and set(summary["state"]) == {"FINISHED"}
