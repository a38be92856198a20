"""Points on several nodes (issue 17): a node failure SLURM is requeueing is not a failed point,
the reason names the rank that failed first, the tables have the nodes, a job SLURM requeued is
not told to resume, horovodrun is called by its path and refused across nodes. sacct/squeue/
scontrol are stand-ins printing what the two-node test cluster printed (a node crash)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hpcdl.backends.slurm import SACCT_FIELDS, Slurm
from hpcdl.states import last_error_line
from tests.test_pbs import fake_command


def sacct_row(job: str, state: str, nodes: str, exit_code: str = "0:0") -> str:
    values = {"JobID": job, "State": state, "ExitCode": exit_code, "NodeList": nodes}
    return "|".join(values.get(name, "") for name in SACCT_FIELDS.split(","))


def test_a_node_failure_that_slurm_requeues_is_pending_not_failed(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    rows = [
        sacct_row("41_0", "NODE_FAIL", "n[1-2]", "0:1"),
        sacct_row("41_1", "FAILED", "n1", "1:0"),
    ]
    fake_command(tmp_path, "sacct", "cat <<'EOF'\n" + "\n".join(rows) + "\nEOF")
    fake_command(tmp_path, "squeue", 'echo "41_0|PENDING"')
    records = Slurm().query(["41"])
    assert records["41_0"].state == "PENDING"
    assert records["41_0"].raw_state == "PENDING (requeued after NODE_FAIL)"
    assert records["41_1"].state == "FAILED" and records["41_1"].node == "n1"
    fake_command(tmp_path, "squeue", "true")  # the requeue did not happen: the failure stands
    assert Slurm().query(["41"])["41_0"].state == "FAILED"


def test_the_reason_names_the_rank_that_failed_first_in_the_last_start(tmp_path):
    (tmp_path / "job.out").write_text(
        "== 2026-12-01T10:00:00 slurm job 41 on n1: 2 rank(s)\n"
        "srun: error: n1: task 0: Exited with exit code 3\n"  # an earlier start's failure
        "== 2026-12-01T10:05:00 slurm job 41 on n1: 2 rank(s)\n"
        "epoch 3/10 ...\n"
        "srun: error: n2: task 1: Killed\n"
        "srun: Terminating StepId=41.0\n"
        "srun: error: n1: task 0: Killed\n"
    )
    assert last_error_line(tmp_path) == "srun: error: n2: task 1: Killed"


def test_the_summary_and_the_reports_failures_name_the_nodes(tmp_path, monkeypatch):
    """A real (tiny) sweep folder whose scheduler record names two nodes."""
    import yaml

    from hpcdl import collect, sweep
    from hpcdl.manifest import load_manifest
    from hpcdl.report import tables
    from hpcdl.report.data import load

    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    fake_command(tmp_path, "sbatch", 'echo "41;vm"')
    fake_command(tmp_path, "scontrol", 'echo "MaxArraySize = 1001"')
    rows = [sacct_row("41_0", "FAILED", "n[1-2]", "1:0"), sacct_row("42", "COMPLETED", "n1")]
    fake_command(tmp_path, "sacct", "cat <<'EOF'\n" + "\n".join(rows) + "\nEOF")
    spec = tmp_path / "s.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "nodes",
                "program": {"command": "true", "workdir": str(tmp_path)},
                "grid": {"x": [1]},
                "backend": "slurm",
                "results_dir": str(tmp_path / "results"),
                "collect": False,
            }
        )
    )
    sweep.create(spec, out=lambda _line: None)
    folder = tmp_path / "results" / "nodes"
    summary = collect.collect(folder, out=lambda _line: None)
    assert list(summary["nodes"]) == ["n[1-2]"] and list(summary["state"]) == ["FAILED"]
    assert list(tables.failures(load(folder, refresh=False))["nodes"]) == ["n[1-2]"]
    assert load_manifest(folder).submissions[0].job_id == "41"


def test_a_job_slurm_already_requeued_gets_no_advice_to_resume(tmp_path, monkeypatch):
    from hpcdl import preempt

    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    for name in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.setenv("HPCDL_REQUEUE_MAX", "3")
    fake_command(
        tmp_path, "scontrol", 'echo "scontrol: error: Job is pending execution" >&2; exit 1'
    )
    said = preempt.requeue_self()
    assert said == "SLURM has requeued job 41 already; it continues from this checkpoint"
    fake_command(
        tmp_path, "scontrol", 'echo "scontrol: error: Access/permission denied" >&2; exit 1'
    )
    assert "run `hpcdl resume` to continue" in preempt.requeue_self()


@pytest.mark.parametrize("backend", ["slurm", "pbs", "local"])
def test_horovodrun_is_called_by_its_path_and_refused_across_nodes(tmp_path, backend):
    import sys

    import yaml

    from hpcdl import sweep
    from hpcdl.errors import HpcdlError

    spec = {
        "name": "hvd",
        "program": {"command": "true", "workdir": str(tmp_path)},
        "grid": {"x": [1]},
        "backend": backend,
        "resources": {"tasks_per_node": 2},
        "scheduler": {"launcher": "horovodrun"},
        "results_dir": str(tmp_path / "results"),
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    planned, _base, points = sweep.plan(path)
    script = sweep.describe(planned, points, tmp_path / "results" / "hvd")
    assert f"{Path(sys.executable).with_name('horovodrun')} -np" in script
    if backend != "local":  # local points have one node
        path.write_text(yaml.safe_dump({**spec, "resources": {"nodes": 2, "tasks_per_node": 2}}))
        with pytest.raises(HpcdlError, match="horovodrun starts the ranks of other nodes over ssh"):
            sweep.plan(path)


def test_a_killed_run_says_which_signal_and_skips_tensorflows_own_log_lines(tmp_path):
    """Exit 137 of a run the kernel killed for memory, whose log ends with a harmless Grappler
    note that says 'error:'; a real error line above it is still the one named."""
    from hpcdl.backends.base import JobRecord
    from hpcdl.states import point_state

    (tmp_path / "job.out").write_text(
        "== 2026-12-01T23:00:00 local job 7 on vm: 1 rank(s)\n"
        "epoch 3/10 loss 1.2\n"
        "E0000 00:00:1796166442.246404    3841 meta_optimizer.cc:966] remapper failed: "
        "INVALID_ARGUMENT: Mutation::Apply error: fanout 'gradient_tape/x' exist\n"
    )
    record = JobRecord(state="FAILED", exit_code=137)
    state, reason = point_state(tmp_path, True, record)
    assert state == "FAILED"
    assert reason.startswith("exit 137 (SIGKILL: out of memory, or killed)")
    with (tmp_path / "job.out").open("a") as log:
        log.write("ValueError: bad shape\nE0000 00:00:17.1 1 x.cc:1] remapper failed: error: x\n")
    assert last_error_line(tmp_path) == "ValueError: bad shape"
