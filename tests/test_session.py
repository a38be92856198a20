"""hpcdl.session and its TensorBoard files: a user's own framework-free script (a real
subprocess, under real mpirun/srun ranks, real signals, SLURM's real requeue) writes the run
directory that hpcdl's built-in loop writes."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata

from hpcdl import rundir, session
from hpcdl.errors import HpcdlError
from tests.conftest import HELPERS, MPI_ENV
from tests.sweeps import requeues
from tests.test_resilience import releaser  # noqa: F401 (a fixture)

SCRIPT = str(HELPERS / "session_script.py")
LAUNCHER_VARIABLES = [v for pair in session.LAUNCHER_VARIABLES for v in pair]


@pytest.fixture
def script_env(tmp_path, monkeypatch) -> dict[str, str]:
    """A clean environment for the script: its run directory, no launcher variables."""
    for name in [*LAUNCHER_VARIABLES, "HPCDL_PARAMS", "SLURM_RESTART_COUNT", "SLURM_JOB_ID"]:
        monkeypatch.delenv(name, raising=False)
    return {**os.environ, **MPI_ENV, "HPCDL_RUN_DIR": str(tmp_path / "run")}


def run_script(env, *args, **extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, SCRIPT, *args], env={**env, **extra}, capture_output=True, text=True
    )


def metrics(run_dir: Path) -> list[dict]:
    records, problems = rundir.read_metrics(run_dir)
    assert not problems
    return records


def scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return [(s.step, round(s.value, 5)) for s in events.Scalars(tag)]


def test_plain_script_writes_metrics_result_and_tensorboard(script_env, tmp_path):
    params = {"train": {"lr": 0.01, "optimizer": "adam"}, "epochs": 3}
    proc = run_script(script_env, "3", HPCDL_PARAMS=json.dumps(params))
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "run"
    records = metrics(run_dir)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[1]["loss"] == 0.5 and records[1]["val_accuracy"] == 0.65
    assert "time" in records[0] and "ranks" not in records[0]  # no launcher: size unknown
    assert rundir.read_json(run_dir / rundir.RESULT) == {"test_accuracy": 0.875, "epochs": 3}
    # TensorBoard: Keras' layout and tag names, the step is the epoch
    assert scalars(run_dir / "tb" / "train", "epoch_loss") == [(1, 1.0), (2, 0.5), (3, 0.33333)]
    assert scalars(run_dir / "tb" / "validation", "epoch_accuracy") == [
        (1, 0.4),
        (2, 0.65),
        (3, 0.73333),
    ]
    root = EventAccumulator(str(run_dir / "tb"))
    root.Reload()
    content = root.SummaryMetadata(hparams_metadata.SESSION_START_INFO_TAG).plugin_data.content
    start = hparams_metadata.parse_session_start_info_plugin_data(content)
    assert start.hparams["train.lr"].number_value == 0.01
    assert start.hparams["train.optimizer"].string_value == "adam"
    assert start.hparams["epochs"].number_value == 3


def test_restart_from_an_older_checkpoint_keeps_every_epoch_once(script_env, tmp_path):
    run_dir = tmp_path / "run"
    assert run_script(script_env, "4", ATTEMPT="0").returncode == 0
    (run_dir / "checkpoints" / "state.json").write_text('{"epoch": 2}')  # an older checkpoint
    assert run_script(script_env, "4", ATTEMPT="1").returncode == 0
    assert [(r["epoch"], r["attempt"]) for r in metrics(run_dir)] == [
        (1, 0),
        (2, 0),
        (3, 1),
        (4, 1),
    ]
    # TensorBoard's reader drops the first attempt's points for epochs 3 and 4 as well
    assert scalars(run_dir / "tb" / "train", "epoch_loss") == [
        (1, 1.0),
        (2, 0.5),
        (3, 1.33333),
        (4, 1.25),
    ]
    assert [step for step, _ in scalars(run_dir / "tb" / "validation", "epoch_loss")] == [
        1,
        2,
        3,
        4,
    ]


def test_only_rank_0_writes_under_mpirun(script_env, tmp_path):
    proc = subprocess.run(
        ["mpirun", "-np", "2", "--bind-to", "none", sys.executable, SCRIPT, "3"],
        env=script_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rank 0 of 2" in proc.stdout and "rank 1 of 2" in proc.stdout
    records = metrics(tmp_path / "run")
    assert [(r["epoch"], r["writer_rank"], r["ranks"]) for r in records] == [
        (1, 0, 2),
        (2, 0, 2),
        (3, 0, 2),
    ]
    assert rundir.read_json(tmp_path / "run" / rundir.RESULT)["ranks"] == 2


def wait_for_epochs(run_dir: Path, count: int, proc=None, timeout=60) -> None:
    """Until the run has logged `count` epochs (failing if `proc` ended before)."""
    deadline = time.monotonic() + timeout
    while len(metrics(run_dir)) < count:
        assert proc is None or proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the script logged no epochs"
        time.sleep(0.05)


def test_stop_signal_saves_exits_75_and_a_restart_finishes(script_env, tmp_path):
    run_dir = tmp_path / "run"
    env = {**script_env, "ATTEMPT": "0"}
    proc = subprocess.Popen([sys.executable, SCRIPT, "8", "0.4"], env=env, text=True, stderr=-1)
    wait_for_epochs(run_dir, 2, proc)
    proc.send_signal(signal.SIGUSR1)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 75, stderr
    stopped_after = len(metrics(run_dir))
    assert 2 <= stopped_after < 8
    reason = rundir.read_json(run_dir / rundir.FAILURE)["reason"]
    assert reason.startswith(f"stopped by SIGUSR1 after epoch {stopped_after}; ")
    assert "run `hpcdl resume` to continue" in reason  # not a SLURM job: no requeue
    assert not (run_dir / rundir.RESULT).exists()

    assert run_script(script_env, "8", "0.01", ATTEMPT="1").returncode == 0
    records = metrics(run_dir)
    assert [r["epoch"] for r in records] == list(range(1, 9))
    assert [r["attempt"] for r in records] == [0] * stopped_after + [1] * (8 - stopped_after)
    assert (run_dir / rundir.RESULT).exists() and not (run_dir / rundir.FAILURE).exists()


@pytest.mark.slurm
@pytest.mark.slow
def test_srun_two_ranks_usr1_requeues_and_finishes(slurm_cluster, releaser, script_env, tmp_path):  # noqa: F811
    """A user's script under srun with 2 ranks, no MPI import: rank 0 alone writes; SLURM's
    USR1 makes it save and requeue through session; the requeued job finishes the run."""
    run_dir = tmp_path / "run"
    job = tmp_path / "job.sh"
    job.write_text(
        "#!/bin/bash\n#SBATCH --ntasks=2 --requeue --open-mode=append\n"
        f"#SBATCH --output={tmp_path}/job.out --chdir={tmp_path}\n"
        f"export HPCDL_RUN_DIR={run_dir} HPCDL_REQUEUE_MAX=2\n"
        f"exec srun --mpi=pmix --kill-on-bad-exit=1 {sys.executable} {SCRIPT} 10 0.4\n"
    )
    submitted = subprocess.run(
        ["sbatch", "--parsable", str(job)], env=script_env, capture_output=True, text=True
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().split(";")[0]
    wait_for_epochs(run_dir, 2, timeout=120)
    subprocess.run(["scancel", "--batch", "--signal=USR1", job_id], check=True)
    deadline = time.monotonic() + 180
    while not (run_dir / rundir.RESULT).exists():
        assert time.monotonic() < deadline, (tmp_path / "job.out").read_text()
        time.sleep(0.5)
    records = metrics(run_dir)
    assert [r["epoch"] for r in records] == list(range(1, 11))
    assert {(r["writer_rank"], r["ranks"]) for r in records} == {(0, 2)}
    assert [r["attempt"] for r in records][-1] == 1  # the last epochs came from the requeued job
    assert requeues(job_id) == 1
    out = (tmp_path / "job.out").read_text()
    assert "stopped by SIGUSR1" in out and f"requeued job {job_id} (1/2)" in out


# --- in-process checks of the API's rules --------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "rank", "size"),
    [
        ({}, 0, None),
        ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4"}, 1, 4),
        # mpirun inside an sbatch script: every process inherits SLURM_PROCID=0
        ({"SLURM_PROCID": "0", "OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4"}, 3, 4),
        ({"PMIX_RANK": "1", "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2"}, 1, 2),
        ({"HOROVOD_RANK": "2", "HOROVOD_SIZE": "3"}, 2, 3),
        ({"PMI_RANK": "1", "PMI_SIZE": "2"}, 1, 2),
    ],
)
def test_rank_from_the_launchers_environment(script_env, monkeypatch, variables, rank, size):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert (session.rank(), session.size(), session.is_root()) == (rank, size, rank == 0)


def test_other_ranks_write_nothing(script_env, tmp_path, monkeypatch):
    monkeypatch.setenv("HPCDL_RUN_DIR", str(tmp_path / "rank1"))
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "1")
    session.log(epoch=1, loss=0.5)
    session.result(test_accuracy=0.5)
    assert not (tmp_path / "rank1").exists()


def test_params_from_the_environment_or_params_yaml(script_env, tmp_path, monkeypatch):
    monkeypatch.setenv("HPCDL_RUN_DIR", str(tmp_path))
    assert session.params() == {}
    (tmp_path / "params.yaml").write_text("train.lr: 0.01\nepochs: 3\n")
    assert session.params() == {"train.lr": 0.01, "epochs": 3}
    monkeypatch.setenv("HPCDL_PARAMS", '{"train.lr": 0.1}')
    assert session.params() == {"train.lr": 0.1}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: session.params(), "HPCDL_PARAMS: not valid JSON"),
        (lambda: session.log(epoch="3", loss=1.0), "session.log: epoch='3' is not a whole number"),
        (lambda: session.log(epoch=-1), "session.log: epoch=-1 is negative"),
        (lambda: session.log(epoch=1, loss=object()), "session: loss=<object"),
        (lambda: session.result(model=print), "session: model=<built-in function print>"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(script_env, tmp_path, monkeypatch, call, message):
    monkeypatch.setenv("HPCDL_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("HPCDL_PARAMS", "{not json")
    with pytest.raises(HpcdlError, match="^" + re.escape(message)) as err:
        call()
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()


def test_a_bad_rank_variable_is_named(script_env, monkeypatch):
    monkeypatch.setenv("PMI_RANK", "one")
    with pytest.raises(HpcdlError, match="PMI_RANK='one' in the environment is not a whole"):
        session.rank()
