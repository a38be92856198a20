"""Helpers for sweep tests: tiny MNIST specs written into a temporary results folder."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.conftest import JOBS

TINY = {"train.epochs": 1, "data.train_subset": 600, "data.test_subset": 300}


def write_spec(folder: Path, name: str, grid: dict, backend: str, **extra) -> Path:
    """A sweep of the source MNIST config made tiny; results go under folder/results."""
    spec = {
        "name": name,
        "config": str(JOBS / "mnist_cnn.yaml"),
        "fixed": {**TINY, **extra.pop("fixed", {})},
        "grid": grid,
        "resources": {"time": "00:10:00", "mem": "2G", **extra.pop("resources", {})},
        "backend": backend,
        "results_dir": str(folder / "results"),
        **extra,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def manifest(folder: Path, name: str) -> dict:
    return json.loads((folder / "results" / name / "sweep.json").read_text())


def attempts(run_dir: Path) -> int:
    """How many times a point's job script started (one header line each)."""
    log = run_dir / "job.out"
    return (
        sum(line.startswith("== ") for line in log.read_text().splitlines()) if log.exists() else 0
    )


def wait_for(sweep_dir: Path, done, timeout: float = 300, every: float = 2.0):
    """Poll the sweep's point states until done(states) is true; return the last statuses."""
    import time

    from hpcdl.manifest import load_manifest
    from hpcdl.sweep import statuses

    deadline = time.monotonic() + timeout
    while True:
        points = statuses(load_manifest(sweep_dir))
        if done([p.state for p in points]):
            return points
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting; states: {[(p.id, p.state) for p in points]}")
        time.sleep(every)


def sacct_rows(job_id: str) -> dict[str, dict[str, str]]:
    """sacct's allocation rows for a job (array tasks keyed ID_INDEX)."""
    fields = "JobID,JobName,State,Start,End,AllocTRES,ExitCode"
    out = subprocess.run(
        ["sacct", "-X", "-P", "-n", "-o", fields, "-j", job_id],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [
        dict(zip(fields.split(","), line.split("|"), strict=True))
        for line in out.splitlines()
        if line
    ]
    return {r["JobID"]: r for r in rows}


def sacct_runs(job: str) -> list[tuple[str, str]]:
    """(state, nodes) of every start of a job, requeued ones included, in order."""
    out = subprocess.run(
        ["sacct", "-D", "-X", "-n", "-P", "-o", "State,NodeList", "-j", job],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [tuple(line.split("|")) for line in out.splitlines() if line]


def requeues(job: str) -> int:
    """How many times sacct saw the job requeued."""
    return sum(state == "REQUEUED" for state, _ in sacct_runs(job))


def sacct_settled(job_ids: list[str], rows: int, timeout: float = 60) -> list[dict[str, str]]:
    """sacct's allocation rows of the jobs once at least `rows` of them have ended.

    slurmctld passes records to slurmdbd asynchronously, so a finished array task can reach
    sacct a few seconds after its run folder says so.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = [r for job in job_ids for r in sacct_rows(job).values()]
        ended = [r for r in found if r["State"].split()[0] not in ("PENDING", "RUNNING")]
        if len(ended) >= rows or time.monotonic() > deadline:
            return found
        time.sleep(1)


def start_sweep(spec: Path, env: dict[str, str], **popen) -> subprocess.Popen:
    """`hpcdl sweep SPEC` in the background (the local backend runs in the foreground)."""
    exe = str(Path(sys.executable).with_name("hpcdl"))
    return subprocess.Popen(
        [exe, "sweep", str(spec)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def until(condition: Callable[[], object], runner: subprocess.Popen, timeout: float) -> None:
    """Wait for `condition` while the background sweep `runner` is still going."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert runner.poll() is None and time.monotonic() < deadline, runner.communicate()
        time.sleep(0.2)
