"""Your own training script as a sweep's program: placeholders, settings, states, Keras output
read into curves, and a session script under srun that SLURM's USR1 requeues."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hpcdl import rundir
from tests.conftest import HELPERS, JOBS, hpcdl
from tests.sweeps import manifest, requeues
from tests.test_resilience import releaser  # noqa: F401 (a fixture)

RECORDER = """import json, os, sys
run_dir = os.environ["HPCDL_RUN_DIR"]
with open(os.path.join(run_dir, "seen.json"), "w") as f:
    json.dump({"argv": sys.argv[1:], "params": json.loads(os.environ["HPCDL_PARAMS"]),
               "cwd": os.getcwd()}, f)
sys.exit(int(os.environ.get("EXIT_WITH", "0")))
"""


def program_spec(folder: Path, name: str, command: str, **extra) -> Path:
    spec = {
        "name": name,
        "program": {"command": command, "workdir": "code"},
        "resources": {"time": "00:10:00", "mem": "2G", **extra.pop("resources", {})},
        "results_dir": str(folder / "results"),
        **extra,
    }
    (folder / "code").mkdir(exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_dirs(folder: Path, name: str) -> dict[str, Path]:
    return {p["id"]: folder / "results" / name / p["id"] for p in manifest(folder, name)["points"]}


def test_each_value_is_one_shell_word_and_settings_reach_the_script(env, tmp_path):
    hostile = "a b; touch pwned; $(touch pwned2) 'q\""
    spec = program_spec(
        tmp_path,
        "words",
        f"{sys.executable} record.py --name {{name}} --lr {{train.lr}} --dims {{dims}} ${{HOME}}",
        fixed={"name": hostile, "dims": [64, 32]},
        grid={"train.lr": [0.001, 0.01]},
        include=[{"train.lr": 0.1, "fails": True}],
        max_concurrent=2,
    )
    (tmp_path / "code" / "record.py").write_text(RECORDER)
    proc = hpcdl("sweep", str(spec), env={**env, "HOME": "/home/x"}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not list(tmp_path.rglob("pwned*"))
    seen = {}
    for run_dir in run_dirs(tmp_path, "words").values():
        data = json.loads((run_dir / "seen.json").read_text())
        seen[data["params"]["train.lr"]] = data
        assert (run_dir / "result.json").exists()  # exit 0 without reporting: finished
        assert yaml.safe_load((run_dir / "params.yaml").read_text()) == data["params"]
    assert sorted(seen) == [0.001, 0.01, 0.1]
    assert seen[0.01]["argv"] == [
        "--name",
        hostile,
        "--lr",
        "0.01",
        "--dims",
        "[64, 32]",
        "/home/x",
    ]
    assert seen[0.01]["params"] == {"name": hostile, "dims": [64, 32], "train.lr": 0.01}
    assert seen[0.1]["params"]["fails"] is True
    assert seen[0.01]["cwd"] == str(tmp_path / "code")


def test_a_failing_program_is_failed_with_its_exit_code_and_resume_reruns_it(env, tmp_path):
    spec = program_spec(tmp_path, "fails", f"{sys.executable} record.py", grid={"x": [1]})
    (tmp_path / "code" / "record.py").write_text(RECORDER)
    proc = hpcdl("sweep", str(spec), env={**env, "EXIT_WITH": "3"}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "results" / "fails"
    status = hpcdl("status", str(folder), env=env)
    assert "1 failed" in status.stdout and "exit 3" in status.stdout
    (run_dir,) = run_dirs(tmp_path, "fails").values()
    assert not (run_dir / "result.json").exists()
    again = hpcdl("resume", str(folder), env=env)
    assert again.returncode == 0 and "resubmitting 1 point(s)" in again.stdout
    assert "1 finished" in hpcdl("status", str(folder), env=env).stdout


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"program": {"command": "python t.py --lr {lr}"}}, r"\{lr\} has no value in the spec"),
        ({"program": {"command": "python t.py\ntouch x"}}, "program.command: must be one line"),
        ({"program": {"command": "t", "workdir": "nowhere"}}, "program.workdir: no folder"),
        ({"base": {"model": {}}}, "a program sweep runs your command: drop base and config"),
    ],
)
def test_bad_programs_are_one_line_errors_and_nothing_is_written(env, tmp_path, change, message):
    spec = program_spec(tmp_path, "bad", "python t.py", grid={"x": [1, 2]})
    raw = yaml.safe_load(spec.read_text())
    raw["program"] = {**raw["program"], **change.pop("program", {})}
    spec.write_text(yaml.safe_dump({**raw, **change}))
    proc = hpcdl("sweep", str(spec), env=env, cwd=tmp_path)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert re.search(message, line), line
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_an_unmodified_keras_script_swept_over_its_flags(env, tmp_path):
    """The plain Keras example in jobs/ (nothing of hpcdl in it): its printed fit progress
    becomes the sweep's curves and summary."""
    spec = yaml.safe_load((JOBS / "keras_mnist_script.yaml").read_text())
    spec["program"]["command"] = (
        spec["program"]["command"].replace("python ", f"{sys.executable} ") + " --train-subset 1500"
    )
    spec["program"]["workdir"] = str(JOBS)
    spec.update(fixed={"epochs": 2}, grid={"lr": [0.001], "batch_size": [64]})
    spec["results_dir"] = str(tmp_path / "results")
    path = tmp_path / "keras.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = hpcdl("sweep", str(path), env=env)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "results" / spec["name"]
    summary = pd.read_csv(folder / "summary.csv")
    (row,) = summary.to_dict("records")
    assert row["state"] == "FINISHED" and row["epochs_done"] == 2
    assert 0.5 < row["final_val_accuracy"] <= 1 and row["final_loss"] > 0
    curves = pd.read_csv(folder / "curves.csv")
    assert list(curves["epoch"]) == [1, 2] and curves["loss"].iloc[1] < curves["loss"].iloc[0]


@pytest.mark.slurm
@pytest.mark.slow
def test_session_script_under_srun_requeues_on_usr1_and_finishes(
    slurm_cluster,
    releaser,  # noqa: F811
    env,
    tmp_path,
):
    """A user's session script as a 2-rank program point: rank 0 alone writes; the time-limit
    warning (USR1 to the batch shell) is passed on, the script saves and requeues, and the
    requeued job finishes with every epoch once."""
    spec = program_spec(
        tmp_path,
        "srun",
        f"{sys.executable} {HELPERS / 'session_script.py'} {{epochs}} 0.4",
        backend="slurm",
        fixed={"epochs": 10},
        resources={"tasks_per_node": 2},
        scheduler={"requeue": 2},
    )
    proc = hpcdl("sweep", str(spec), env=env)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = run_dirs(tmp_path, "srun").values()
    job = next(s["job_id"] for s in manifest(tmp_path, "srun")["submissions"])
    deadline = time.monotonic() + 120
    while len(rundir.read_metrics(run_dir)[0]) < 2:
        assert time.monotonic() < deadline, (run_dir / "job.out").read_text()
        time.sleep(0.5)
    subprocess.run(["scancel", "--batch", "--signal=USR1", f"{job}_0"], check=True)
    waited = hpcdl(
        "status", str(tmp_path / "results" / "srun"), "--wait", "--timeout", "180", env=env
    )
    assert waited.returncode == 0, waited.stdout + (run_dir / "job.out").read_text()
    records = rundir.read_metrics(run_dir)[0]
    assert [r["epoch"] for r in records] == list(range(1, 11))
    assert {(r["writer_rank"], r["ranks"]) for r in records} == {(0, 2)}
    assert records[-1]["attempt"] == 1  # the last epochs came from the requeued job
    assert requeues(f"{job}_0") == 1
    assert json.loads((run_dir / "result.json").read_text())["test_accuracy"] == 0.875
