"""Points on two nodes of a real SLURM cluster (slurm/start-two-node-cluster.sh: slurmd n1 and n2,
each in its own network namespace): Horovod across the nodes under srun and mpirun, a node crash
and a time limit that requeue a two-node point, and a user's own two-node script (issue 17).

A crash is done as a real one looks: the node's link goes down and everything in its namespace
(slurmd, slurmstepd, the rank) is killed; SLURM finds the node dead, requeues the job, and the
node comes back as after a reboot (the start script: link up, stale PMIx sockets gone, slurmd)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpcdl import rundir
from hpcdl.manifest import load_manifest
from hpcdl.sweep import statuses
from tests.conftest import HELPERS, ROOT, hpcdl
from tests.sweeps import attempts, manifest, requeues, sacct_runs, wait_for, write_spec
from tests.test_horovod import MNIST, TINY, rank_weights
from tests.test_program import program_spec, run_dirs
from tests.test_resilience import (  # noqa: F401 (releaser: a fixture)
    STEADY,
    TERMINAL,
    epochs_of,
    releaser,
)

pytestmark = [pytest.mark.twonode, pytest.mark.slow]
ONE_PER_NODE = {"nodes": 2, "tasks_per_node": 1}
START = ROOT / "slurm" / "start-two-node-cluster.sh"


@pytest.fixture
def env(env):
    """The suite's environment; a crashing rank prints its Python stack to job.out."""
    return {**env, "PYTHONFAULTHANDLER": "1"}


@pytest.fixture(autouse=True)
def no_jobs_left():
    """A failed test leaves no job of its sweeps behind to hold the two nodes."""
    yield
    out = subprocess.run(["squeue", "-h", "-o", "%A %j"], capture_output=True, text=True).stdout
    jobs = [line.split()[0] for line in out.splitlines() if " hpcdl-" in line]
    if jobs:
        subprocess.run(["scancel", *jobs], check=False)


def job_ended(job: str, timeout: float = 60) -> list[tuple[str, str]]:
    """sacct_runs once the job has ended (result.json comes a moment before the job's end)."""
    deadline = time.monotonic() + timeout
    while (runs := sacct_runs(job))[-1][0] in ("RUNNING", "COMPLETING", "PENDING"):
        assert time.monotonic() < deadline, runs
        time.sleep(0.5)
    return runs


def all_done(states) -> bool:
    return all(s in TERMINAL for s in states)


def test_horovod_across_two_nodes_under_srun_and_mpirun(twonode_cluster, env, tmp_path):
    """One rank per node under each launcher: both ranks end with bit-identical weights, equal
    (within float tolerance) to one rank on one machine with the same global batch."""
    same = ["train.scale_lr=false", *TINY]
    command = (
        f"{sys.executable} {HELPERS / 'rank_weights.py'} {MNIST} "
        '"$HPCDL_RUN_DIR" "$HPCDL_RUN_DIR/weights" train.batch_size={batch} ' + " ".join(same)
    )
    launchers = {"srun": "srun --mpi=pmix", "mpirun": "mpirun -np $SLURM_NTASKS"}
    for launcher in launchers:  # both at once: each takes one CPU of each node
        spec = program_spec(
            tmp_path,
            launcher,
            command,
            backend="slurm",
            fixed={"batch": 64},
            resources=ONE_PER_NODE,
            scheduler={"launcher": launcher},
            collect=False,
        )
        proc = hpcdl("sweep", str(spec), env=env)
        assert proc.returncode == 0, proc.stderr
    # meanwhile, the reference: one rank, batch 2 x 64, on this machine
    [one] = rank_weights("mpirun", 1, tmp_path, "one", ["train.batch_size=128", *same], env)
    moved = max(float(np.abs(one[k]).max()) for k in one.files)
    reference = json.loads((tmp_path / "one" / "metrics.jsonl").read_text())

    for launcher, prefix in launchers.items():
        folder = tmp_path / "results" / launcher
        script = (folder / "jobs" / "a000.sh").read_text()
        assert "#SBATCH --nodes=2" in script and "#SBATCH --ntasks-per-node=1" in script
        [launch] = [line for line in script.splitlines() if 'bash -c "$HPCDL_COMMAND"' in line]
        assert launch.startswith(prefix), launch
        [point] = wait_for(folder, all_done, timeout=240)
        (run_dir,) = run_dirs(tmp_path, launcher).values()
        log = (run_dir / "job.out").read_text()
        assert point.state == "FINISHED", (launcher, point.reason, log)
        weights = run_dir / "weights"
        hosts = [(weights / f"rank{r}.host").read_text() for r in (0, 1)]
        assert sorted(hosts) == ["n1", "n2"], (launcher, hosts)  # one rank in each namespace
        rank0, rank1 = (np.load(weights / f"rank{r}.npz") for r in (0, 1))
        assert rank0.files == rank1.files == one.files
        for key in rank0.files:
            np.testing.assert_array_equal(rank0[key], rank1[key], err_msg=launcher)
            np.testing.assert_allclose(
                rank0[key], one[key], rtol=0, atol=1e-5 * moved, err_msg=launcher
            )
        [metrics] = rundir.read_metrics(run_dir)[0]
        assert metrics["ranks"] == 2 and metrics["loss"] == pytest.approx(
            reference["loss"], rel=1e-5
        )
        assert json.loads((run_dir / "result.json").read_text())["ranks"] == 2
        assert "on n1: 2 rank(s)" in log
        [job] = [s["job_id"] for s in manifest(tmp_path, launcher)["submissions"]]
        assert job_ended(f"{job}_0") == [("COMPLETED", "n[1-2]")]
        assert hpcdl("collect", str(folder), env=env).returncode == 0
        summary = pd.read_csv(folder / "summary.csv")
        assert list(summary["nodes"]) == ["n[1-2]"] and list(summary["state"]) == ["FINISHED"]


def crash(node: str) -> None:
    """What a node crash looks like from outside: its link goes down, everything on it dies."""
    subprocess.run(["ip", "-n", node, "link", "set", "eth0", "down"], check=True)
    deadline = time.monotonic() + 30
    while pids := netns_pids(node):
        assert time.monotonic() < deadline, pids
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


def netns_pids(node: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", node], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def trains_on(node: str, run_dir: Path) -> bool:
    """A rank of this run is alive in the node's namespace."""
    for pid in netns_pids(node):
        try:
            if str(run_dir) in Path(f"/proc/{pid}/cmdline").read_text():
                return True
        except OSError:
            continue
    return False


def release_held_jobs() -> None:
    """What tests.test_resilience.Releaser does, once: start requeued jobs now, not after the
    BeginTime SLURM gives them (about two minutes)."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "PD", "-o", "%i %r"], capture_output=True, text=True
    ).stdout
    for line in out.splitlines():
        job, _, reason = line.partition(" ")
        if reason.strip() == "BeginTime":
            subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], check=False)


def limit(job: str, minutes: str) -> None:
    subprocess.run(["scontrol", "update", f"jobid={job}", f"TimeLimit={minutes}"], check=True)


def controller_idle() -> bool:
    """No RPC of slurmctld's still out (sdiag's agent count): e.g. the job's termination,
    which it keeps sending to a dead node until the node answers again."""
    out = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    return "Agent count:          0" in out.replace("\t", " ")


def test_node_crash_and_time_limit_requeue_a_two_node_point_that_finishes_once_per_epoch(
    twonode_cluster, env, tmp_path
):
    """The point trains on n1 and n2 under srun. n2 crashes after a checkpoint exists: SLURM
    sets it DOWN, ends the job with NODE_FAIL and requeues it; `hpcdl status` says pending,
    never failed; n2 comes back and the job resumes from the checkpoint. Once that start trains,
    an operator shortens its time limit (`scontrol update TimeLimit=2`: the warning, 120 s
    before the end, is due at once): SLURM's warning makes it checkpoint and requeue itself; it
    continues on the nodes it gets next (with its ten minutes back) and finishes with every
    epoch logged once.
    Why not a short limit at submission: SLURM sends the warning at its next 30-second check
    once it is due within that period, so a one-minute limit warns 0-30 s into every start (5,
    21, 29 s measured), often before two ranks train at all, and whether a longer one warns
    before the run ends depends on this machine's load.
    The requeued job is released (BeginTime) only once slurmctld has delivered the crashed
    run's termination to the node that came back: released earlier, it starts on n2 first and
    that late termination kills the new run (job ids stay across requeues; seen here once)."""
    epochs = 50  # 18 steps each: more than 30 s of training after the crash, even unloaded
    spec = write_spec(
        tmp_path,
        "crash",
        {},
        "slurm",
        include=[{"train.epochs": epochs}],
        fixed={**STEADY, "data.train_subset": 1500},
        resources=ONE_PER_NODE,  # ten minutes
        scheduler={"requeue": 6},  # the node failure's requeue counts too
        collect=False,
    )
    assert hpcdl("sweep", str(spec), env=env).returncode == 0
    folder = tmp_path / "results" / "crash"
    exe = str(Path(sys.executable).with_name("hpcdl"))
    waiter = subprocess.Popen(
        [exe, "status", str(folder), "--wait", "--timeout", "900"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []
    release = True  # held while n2 is down or its late termination is still on its way

    def poll() -> str:
        [point] = statuses(load_manifest(folder))
        seen.append(point.state)
        assert point.state not in TERMINAL - {"FINISHED"}, (point.state, point.reason)
        assert waiter.poll() is None or point.state == "FINISHED", waiter.communicate()[0]
        if release:
            release_held_jobs()
        return point.state

    def until(condition, timeout: float, every: float = 0.5) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, seen[-5:]
            time.sleep(every)

    try:
        until(lambda: poll() == "RUNNING", 60)
        [point] = statuses(load_manifest(folder))
        run_dir, job = Path(point.run_dir), point.job
        until(
            lambda: (
                poll() == "RUNNING"
                and rundir.read_metrics(run_dir)[0]  # an epoch done: a checkpoint exists
                and trains_on("n2", run_dir)
            ),
            150,
        )
        release = False
        crash("n2")
        # SLURM finds n2 dead (SlurmdTimeout) and requeues the job; meanwhile it is never failed
        until(lambda: poll() and "NODE_FAIL" in [s for s, _ in sacct_runs(job)], 90, every=1)
        until(lambda: poll() == "PENDING", 30)
        down = subprocess.run(["sinfo", "-h", "-n", "n2", "-o", "%t"], capture_output=True)
        assert down.stdout.decode().startswith("down"), down.stdout
        back = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=180)
        assert back.returncode == 0, back.stdout + back.stderr
        until(lambda: poll() and controller_idle(), 60)
        release = True
        until(lambda: poll() == "RUNNING" and "resuming" in (run_dir / "job.out").read_text(), 90)
        release = False
        limit(job, "2")  # the warning (due 120 s before the end) comes at SLURM's next check
        # the time-limit warning: the run checkpoints and requeues itself
        until(lambda: poll() == "PENDING" and requeues(job) == 1, 150, every=1)
        limit(job, "10")
        release = True
        until(lambda: poll() == "FINISHED", 600, every=1)
    finally:
        if waiter.poll() is None:
            waiter.terminate()
        out = waiter.communicate()[0]
    # status --wait never gave up on the point: still waiting when it finished, or exited 0
    assert waiter.returncode in (0, -signal.SIGTERM), out
    assert not re.search(r"\b[1-9]\d* failed", out), out
    assert "PENDING" in seen[seen.index("RUNNING") :]  # the requeue was seen as pending

    runs = job_ended(job)
    states = [s.split()[0] for s, _ in runs]
    assert states[0] == "NODE_FAIL" and states[-1] == "COMPLETED", runs
    assert states == ["NODE_FAIL", "REQUEUED", "COMPLETED"], runs  # the crash, the limit, done
    assert all(nodes == "n[1-2]" for _, nodes in runs), runs
    log = (run_dir / "job.out").read_text()
    assert attempts(run_dir) == len(runs), log
    assert "Node failure on n2" in log, log
    resumed = re.search(rf"resuming {run_dir} after epoch (\d+)\n", log)  # the first resume
    assert resumed and int(resumed.group(1)) >= 1, log  # from the checkpoint before the crash
    assert "stopped by SIGUSR1" in log and "requeued job" in log
    assert epochs_of(run_dir) == list(range(1, epochs + 1))  # nothing lost, nothing repeated
    assert json.loads((run_dir / "result.json").read_text())["ranks"] == 2


def test_a_users_two_node_script_requeues_and_finishes_rank_0_alone_writing(
    twonode_cluster,
    releaser,  # noqa: F811
    env,
    tmp_path,
):
    """hpcdl.session script, one rank per node under srun: USR1 to the batch shell reaches both
    nodes' ranks, rank 0 saves and requeues, the requeued job finishes every epoch once."""
    spec = program_spec(
        tmp_path,
        "script",
        f"{sys.executable} {HELPERS / 'session_script.py'} {{epochs}} 0.4",
        backend="slurm",
        fixed={"epochs": 10},
        resources=ONE_PER_NODE,
        scheduler={"requeue": 2},
        collect=False,
    )
    proc = hpcdl("sweep", str(spec), env=env)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = run_dirs(tmp_path, "script").values()
    job = next(s["job_id"] for s in manifest(tmp_path, "script")["submissions"])
    deadline = time.monotonic() + 120
    while len(rundir.read_metrics(run_dir)[0]) < 2:
        assert time.monotonic() < deadline, (run_dir / "job.out").read_text()
        time.sleep(0.5)
    subprocess.run(["scancel", "--batch", "--signal=USR1", f"{job}_0"], check=True)
    [point] = wait_for(tmp_path / "results" / "script", all_done, timeout=180, every=1)
    log = (run_dir / "job.out").read_text()
    assert point.state == "FINISHED", point.reason + log
    records = rundir.read_metrics(run_dir)[0]
    assert [r["epoch"] for r in records] == list(range(1, 11))
    assert {(r["writer_rank"], r["ranks"]) for r in records} == {(0, 2)}
    assert records[-1]["attempt"] == 1  # the last epochs came from the requeued job
    assert requeues(f"{job}_0") == 1
    assert [nodes for _, nodes in job_ended(f"{job}_0")] == ["n[1-2]", "n[1-2]"]
    assert log.count("rank 1 of 2: starting") == 2  # the rank on n2, in each start
    assert json.loads((run_dir / "result.json").read_text())["test_accuracy"] == 0.875
