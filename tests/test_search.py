"""Search methods: spaces checked before anything is written, random search reproducible from its
seed, and real Optuna searches on the local backend (tiny MNIST runs): pruning, a worker killed
with kill -9, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hpcdl.errors import HpcdlError
from hpcdl.sweep import describe, plan
from tests.conftest import hpcdl, stderr_lines
from tests.sweeps import requeues, start_sweep, until, wait_for, write_spec
from tests.test_resilience import releaser  # noqa: F401 (releaser: a fixture)

SPACE = {
    "train.lr": {"loguniform": [1.0e-4, 1.0e-1]},
    "model.dropout": {"uniform": [0.0, 0.5]},
    "train.batch_size": {"choice": [16, 32, 64]},
    "model.dense": {"choice": [[128, 128], [256]]},
    "model.kernel": {"int": [3, 5]},
}


def search_spec(folder: Path, name: str, search: dict, backend: str = "local", **extra) -> Path:
    return write_spec(folder, name, {}, backend, search=search, **extra)


def study_trials(sweep_dir: Path) -> list:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(sweep_dir / "study.journal")))
    return optuna.load_study(study_name=sweep_dir.name, storage=storage).trials


BAD = [
    ({"train.lr": {"uniform": [0.1, 0.01]}}, "search.space.train.lr: uniform: low must be below"),
    ({"train.lr": {"loguniform": [0.0, 0.1]}}, "loguniform: low must be positive"),
    ({"model.kernel": {"int": [3, 5.5]}}, "int: expected two whole numbers"),
    ({"train.lr": {"uniform": [0.1]}}, r"uniform: expected \[low, high\]"),
    ({"train.batch_size": {"choice": []}}, "choice: needs at least one value"),
    ({"train.lr": {"normal": [0, 1]}}, "expected one of {uniform"),
    ({"train.lr": [0.1, 0.01]}, "expected one of {uniform"),
    ({"model.dropout": {"uniform": [0.0, 1.5]}}, "model.dropout=1.5: .*less than 1"),
    ({"train.optimizer": {"choice": ["adam", "lion"]}}, "train.optimizer=lion"),
]


@pytest.mark.parametrize(("space", "message"), BAD, ids=[m for _, m in BAD])
@pytest.mark.parametrize("method", ["random", "optuna"])
def test_bad_spaces_are_rejected_before_anything_is_written(tmp_path, method, space, message):
    spec = search_spec(tmp_path, "bad", {"method": method, "trials": 3, "space": space})
    with pytest.raises(HpcdlError, match=message) as err:
        plan(spec)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "results").exists()


MISUSE = [
    ({"method": "random", "space": SPACE}, {}, "search.trials: method random needs"),
    ({"method": "optuna", "trials": 4}, {}, "search.space: method optuna needs"),
    ({"method": "random", "trials": 4, "space": SPACE}, {"grid": {"train.epochs": [1]}}, "grid:"),
    ({"method": "optuna", "trials": 4, "space": SPACE}, {"seeds": [1, 2]}, "seeds: an optuna"),
    ({"method": "grid", "trials": 4, "space": SPACE}, {}, "method grid varies grid and zip"),
    ({"method": "bayes", "trials": 4, "space": SPACE}, {}, "unknown search method 'bayes'"),
    ({"method": "optuna", "trials": 4, "space": SPACE, "sampler": "gp"}, {}, "'torch'"),
    (
        {"method": "random", "trials": 4, "space": SPACE, "parallel": 2},
        {"max_concurrent": 3},
        "search.parallel 2 and max_concurrent 3 disagree",
    ),
    (
        {"method": "random", "trials": 7, "space": {"train.batch_size": {"choice": [16, 32]}}},
        {},
        "search.trials: 7 distinct points asked, but search.space holds only 2",
    ),
]


@pytest.mark.parametrize(("search", "extra", "message"), MISUSE, ids=[m for *_, m in MISUSE])
def test_search_sections_that_cannot_run_are_one_line_errors(env, tmp_path, search, extra, message):
    if "torch" in message and __import__("importlib.util").util.find_spec("torch"):
        pytest.skip("torch is installed here")
    grid = extra.pop("grid", {})
    spec = write_spec(tmp_path, "misuse", grid, "local", search=search, **extra)
    proc = hpcdl("sweep", str(spec), env=env)
    assert proc.returncode == 2
    (line,) = stderr_lines(proc)
    assert line.startswith("hpcdl: error: ") and message.replace("\\", "") in line, line
    assert not (tmp_path / "results").exists()


def test_random_search_is_reproducible_from_its_seed(tmp_path):
    def points(seed: int, name: str):
        search = {"method": "random", "trials": 5, "seed": seed, "space": SPACE}
        return plan(search_spec(tmp_path, name, search, seeds=[1, 2]))[2]

    first, again, other = points(7, "a"), points(7, "b"), points(8, "c")
    assert [p.id for p in first] == [p.id for p in again]
    assert [p.id for p in first] != [p.id for p in other]
    assert len(first) == 10  # exactly trials x seeds
    sampled = [{k: v for k, v in p.overrides.items() if k != "train.seed"} for p in first]
    assert sampled[0::2] == sampled[1::2]  # each point once per seed
    assert [p.overrides["train.seed"] for p in first[:2]] == [1, 2]
    assert len({str(s) for s in sampled[0::2]}) == 5
    for point, values in zip(first, sampled, strict=True):
        assert 1.0e-4 <= values["train.lr"] <= 1.0e-1
        assert 0.0 <= values["model.dropout"] <= 0.5
        assert values["train.batch_size"] in (16, 32, 64)
        assert values["model.dense"] in ([128, 128], [256])
        assert isinstance(values["model.kernel"], int) and 3 <= values["model.kernel"] <= 5
        assert point.config.train.lr == values["train.lr"]  # the config is the sampled one
        assert point.config.model.dense == values["model.dense"]


def test_optuna_slots_are_exactly_trials_and_throttled_to_parallel(tmp_path):
    search = {"method": "optuna", "trials": 5, "parallel": 2, "space": SPACE}
    spec, _base, points = plan(search_spec(tmp_path, "slots", search))
    assert [p.id for p in points] == [f"trial-{i:04d}" for i in range(5)]
    assert all(p.slot and not p.overrides for p in points)
    assert spec.max_concurrent == 2
    shown = describe(spec, points, tmp_path / "results" / "slots")
    assert "search optuna: 5 trial(s), 2 at a time, maximize val_accuracy" in shown
    assert "#SBATCH" not in shown and '-m hpcdl trial "$RUN_DIR" -- ' in shown


def optuna_spec(folder: Path, name: str, trials: int, **search) -> Path:
    """A tiny MNIST optuna search on this machine; learning rates up to 1 diverge at once."""
    space = {
        "train.lr": {"loguniform": [1.0e-5, 1.0]},
        "model.dense": {"choice": [[64], [128, 128]]},
    }
    fixed = search.pop("fixed", {})
    spec = {"method": "optuna", "trials": trials, "parallel": 2, "seed": 3, "space": space}
    return search_spec(folder, name, {**spec, **search}, fixed=fixed)


@pytest.mark.slow
def test_local_optuna_search_prunes_and_ends_with_exactly_its_trials(env, tmp_path):
    spec = optuna_spec(tmp_path, "asha", 6, pruner="asha", fixed={"train.epochs": 10})
    proc = hpcdl("sweep", str(spec), env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweep_dir = tmp_path / "results" / "asha"
    trials = study_trials(sweep_dir)
    states = sorted(t.state.name for t in trials)
    assert len(trials) == 6 and set(states) <= {"COMPLETE", "PRUNED"}, states
    assert "PRUNED" in states and "COMPLETE" in states, states

    status = hpcdl("status", str(sweep_dir), "--all", "--json", env=env)
    points = {p["id"]: p for p in json.loads(status.stdout)["points"]}
    assert sorted(points) == [f"trial-{i:04d}" for i in range(6)]
    import pandas as pd

    summary = pd.read_csv(sweep_dir / "summary.csv").set_index("trial")
    for trial in trials:  # each slot ran one trial, with the settings the study gave it
        row = summary.loc[trial.number]
        assert row["hp.train.lr"] == pytest.approx(trial.params["train.lr"])
        assert row["hp.model.dense"] == trial.params["model.dense"]
        assert points[row["point"]]["state"] == (
            "PRUNED" if trial.state.name == "PRUNED" else "FINISHED"
        )
        if trial.state.name == "PRUNED":
            last = max(trial.intermediate_values)
            assert points[row["point"]]["reason"].startswith(f"pruned after epoch {last} ")
            assert row["state"] == "PRUNED" and row["epochs_done"] < 10
        else:
            assert row["state"] == "FINISHED" and row["epochs_done"] == 10
            assert trial.value == pytest.approx(row["final_val_accuracy"])
    text = hpcdl("status", str(sweep_dir), env=env).stdout
    assert "pruned" in text.splitlines()[0]


@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_failed_and_resume_completes_the_search(env, tmp_path):
    spec = optuna_spec(tmp_path, "kill", 3, fixed={"train.epochs": 30})
    sweep_dir = tmp_path / "results" / "kill"
    slot = sweep_dir / "trial-0000"
    runner = start_sweep(spec, env)
    until(lambda: (slot / "metrics.jsonl").exists(), runner, timeout=300)  # mid-training
    worker = json.loads((slot / "local.json").read_text())["pid"]
    killed = json.loads((slot / "trial.json").read_text())["number"]
    os.kill(worker, signal.SIGKILL)
    _out, err = runner.communicate(timeout=900)
    assert runner.returncode == 0, err[-2000:]

    status = hpcdl("status", str(sweep_dir), "--all", env=env)
    assert "FAILED" in status.stdout and "exit 137" in status.stdout, status.stdout
    trials = study_trials(sweep_dir)  # the journal is readable, the dead trial failed
    assert trials[killed].state.name == "FAIL"
    assert sum(t.state.name == "COMPLETE" for t in trials) == 2

    resumed = hpcdl("resume", str(sweep_dir), env=env, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    trials = study_trials(sweep_dir)
    assert [t.state.name for t in trials].count("COMPLETE") == 3 and len(trials) == 4
    now = json.loads((slot / "trial.json").read_text())["number"]
    assert now != killed and trials[now].state.name == "COMPLETE"
    assert (sweep_dir / "failed_trials" / f"trial-0000.trial{killed}" / "metrics.jsonl").exists()
    final = hpcdl("status", str(sweep_dir), env=env)
    assert final.stdout.splitlines()[0].endswith("3 finished"), final.stdout


@pytest.mark.slow
def test_a_two_rank_trial_runs_under_the_launcher_and_reports_from_rank_0(env, tmp_path):
    fixed = {"train.epochs": 2, "train.threads": 1}
    spec = optuna_spec(tmp_path, "ranks", 2, parallel=1, fixed=fixed, sampler="random")
    text = spec.read_text().replace("resources:", "resources:\n  tasks_per_node: 2")
    spec.write_text(text)
    proc = hpcdl("sweep", str(spec), env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweep_dir = tmp_path / "results" / "ranks"
    assert "horovodrun -np 2" in (sweep_dir / "jobs" / "a000.sh").read_text()
    trials = study_trials(sweep_dir)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for slot in sorted(sweep_dir.glob("trial-*")):
        number = json.loads((slot / "trial.json").read_text())["number"]
        result = json.loads((slot / "result.json").read_text())
        assert result["ranks"] == 2
        assert list(trials[number].intermediate_values) == [1, 2]  # one report per epoch


def worker_pid(run_dir: Path) -> int:
    """The pid of the `hpcdl trial` worker of a slot (the SLURM batch script, exec'd)."""
    ps = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    (pid,) = [int(x.split()[0]) for x in ps.splitlines() if f"-m hpcdl trial {run_dir} " in x]
    return pid


def training_slots(sweep_dir: Path, count: int) -> list:
    """`count` slots that run and have logged an epoch: their statuses."""
    from hpcdl.manifest import load_manifest
    from hpcdl.sweep import statuses

    deadline = time.monotonic() + 300
    while True:
        points = statuses(load_manifest(sweep_dir))
        busy = [
            p
            for p in points
            if p.state == "RUNNING" and (Path(p.run_dir) / "metrics.jsonl").exists()
        ]
        if len(busy) >= count:
            return busy[:count]
        assert time.monotonic() < deadline, [(p.id, p.state) for p in points]
        time.sleep(0.5)


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.usefixtures("releaser")  # starts a requeued job at once
def test_slurm_search_requeues_into_the_same_trial_and_replaces_a_killed_one(
    slurm_cluster, env, tmp_path
):
    fixed = {"train.epochs": 20, "data.train_subset": 3000, "train.batch_size": 32}
    spec = optuna_spec(tmp_path, "slurm", 12, parallel=3, pruner="median", fixed=fixed)
    text = spec.read_text().replace("backend: local", "backend: slurm")
    spec.write_text(text + "collect: false\n")
    assert hpcdl("sweep", str(spec), env=env).returncode == 0
    sweep_dir = tmp_path / "results" / "slurm"
    assert "#SBATCH --array=0-11%3" in (sweep_dir / "jobs" / "a000.sh").read_text()
    requeued, killed = training_slots(sweep_dir, 2)
    requeued_dir, killed_dir = Path(requeued.run_dir), Path(killed.run_dir)
    requeued_trial = json.loads((requeued_dir / "trial.json").read_text())["number"]
    killed_trial = json.loads((killed_dir / "trial.json").read_text())["number"]
    os.kill(worker_pid(killed_dir), signal.SIGKILL)
    # (scancel may answer "try again later" while slurmctld ends the killed job, yet signal)
    subprocess.run(["scancel", "--batch", "--signal=USR1", requeued.job], check=False)

    done = {"FINISHED", "PRUNED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY"}
    points = wait_for(sweep_dir, lambda s: all(x in done for x in s), timeout=900)
    states = {p.id: p.state for p in points}
    assert states[killed.id] == "FAILED", states
    assert study_trials(sweep_dir)[killed_trial].state.name == "FAIL"  # from sacct's word
    assert requeues(requeued.job) == 1
    assert json.loads((requeued_dir / "trial.json").read_text())["number"] == requeued_trial
    assert f"reattaches to trial {requeued_trial}" in (requeued_dir / "job.out").read_text()
    assert states[requeued.id] in ("FINISHED", "PRUNED")

    assert hpcdl("resume", str(sweep_dir), env=env).returncode == 0
    points = wait_for(sweep_dir, lambda s: all(x in done for x in s), timeout=600)
    assert {p.state for p in points} <= {"FINISHED", "PRUNED"}, [(p.id, p.reason) for p in points]
    trials = study_trials(sweep_dir)
    names = [t.state.name for t in trials]
    assert len(trials) == 13 and names.count("FAIL") == 1, names
    assert "PRUNED" in names


SCRIPT = """\
import sys, time
from hpcdl import session

x = session.params()["x"]
assert float(sys.argv[1]) == x  # the command got the sampled value too
for epoch in range(1, 6):
    time.sleep(0.4)
    session.log(epoch=epoch, score=epoch * (1 - abs(x - 0.3)))
session.result(score=5 * (1 - abs(x - 0.3)))
"""


def program_search(folder: Path, name: str, search: dict) -> Path:
    """A program sweep of SCRIPT (no framework: fast) with this search section."""
    (folder / "score.py").write_text(SCRIPT)
    spec = {
        "name": name,
        "program": {"command": f"python {folder / 'score.py'} {{x}}", "workdir": "."},
        "search": search,
        "results_dir": str(folder / "results"),
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
def test_random_points_run_as_ordinary_points(env, tmp_path):
    search = {"method": "random", "trials": 3, "seed": 5, "space": {"x": {"uniform": [0, 1]}}}
    path = program_search(tmp_path, "rnd", search)
    assert hpcdl("sweep", str(path), env=env, timeout=600).returncode == 0
    import pandas as pd

    summary = pd.read_csv(tmp_path / "results" / "rnd" / "summary.csv")
    planned = [p.overrides["x"] for p in plan(path)[2]]
    assert sorted(summary["hp.x"]) == sorted(planned) and len(set(planned)) == 3
    assert set(summary["state"]) == {"FINISHED"}
    for x, score in zip(summary["hp.x"], summary["score"], strict=True):
        assert score == pytest.approx(5 * (1 - abs(x - 0.3)))


@pytest.mark.slow
def test_a_program_sweep_searches_with_optuna_and_prunes_its_script(env, tmp_path):
    search = {
        "method": "optuna",
        "trials": 8,
        "parallel": 2,
        "metric": "score",
        "sampler": "random",
        "pruner": "asha",
        "space": {"x": {"uniform": [0.0, 1.0]}},
    }
    path = program_search(tmp_path, "prog", search)
    proc = hpcdl("sweep", str(path), env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweep_dir = tmp_path / "results" / "prog"
    trials = study_trials(sweep_dir)
    names = [t.state.name for t in trials]
    assert len(trials) == 8 and "PRUNED" in names and set(names) <= {"COMPLETE", "PRUNED"}
    for trial in trials:
        if trial.state.name == "COMPLETE":  # result.json's value
            assert trial.value == pytest.approx(5 * (1 - abs(trial.params["x"] - 0.3)))
    slots = {
        json.loads((d / "trial.json").read_text())["number"]: d for d in sweep_dir.glob("trial-*")
    }
    for number, slot in slots.items():
        x = trials[number].params["x"]
        assert json.loads((slot / "params.json").read_text()) == {"x": x}
        assert (slot / "command.sh").read_text().split()[-1] == str(x)
        assert (slot / "pruned.json").exists() == (trials[number].state.name == "PRUNED")

    # the report: chosen on the search's metric, its progress, what mattered, the pruned trials
    from hpcdl.report import search as search_report
    from hpcdl.report.data import load

    assert hpcdl("report", str(sweep_dir), env=env).returncode == 0
    md = (sweep_dir / "report.md").read_text()
    pruned = names.count("PRUNED")
    assert "## Best runs (by score)" in md and "## Search" in md
    assert f"### Pruned trials ({pruned})" in md and "Failures (0)" in md
    data = load(sweep_dir, refresh=False, out=lambda _m: None)
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert f"({search['metric']} {best.value:.4f}" in md  # the chosen trial, named in the text
    progress = search_report.trials(data)
    assert list(progress["trial"]) == sorted(progress["trial"])
    so_far = progress["best_so_far"].dropna().to_numpy()
    assert (so_far[1:] >= so_far[:-1]).all() and so_far[-1] == pytest.approx(best.value)
    assert list(search_report.importance(data)["setting"]) == ["x"]
    table = search_report.pruned(data)
    at = {t.number: max(t.intermediate_values) for t in trials if t.state.name == "PRUNED"}
    assert dict(zip(table["trial"], table["pruned after epoch"], strict=True)) == at


@pytest.mark.slow
def test_resume_after_the_submitter_died_completes_the_study(env, tmp_path):
    search = {"method": "optuna", "trials": 6, "parallel": 2, "metric": "score"}
    search.update(sampler="random", space={"x": {"uniform": [0.0, 1.0]}})
    path = program_search(tmp_path, "orphans", search)
    sweep_dir = tmp_path / "results" / "orphans"
    runner = start_sweep(path, env)
    until(lambda: len(list(sweep_dir.glob("trial-*/result.json"))) >= 2, runner, timeout=300)
    runner.kill()  # the submitting `hpcdl sweep` dies; its running slots go on
    runner.communicate()
    points = wait_for(sweep_dir, lambda s: "RUNNING" not in s, timeout=120, every=0.5)
    assert "LOST" in {p.state for p in points}, [(p.id, p.state) for p in points]

    resumed = hpcdl("resume", str(sweep_dir), env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    trials = study_trials(sweep_dir)
    assert [t.state.name for t in trials].count("COMPLETE") == 6, [t.state for t in trials]
    assert all(t.state.name in ("COMPLETE", "FAIL") for t in trials)
    status = hpcdl("status", str(sweep_dir), env=env)
    assert status.stdout.splitlines()[0].endswith("6 finished"), status.stdout


def test_the_told_value_is_the_tested_models(tmp_path):
    from hpcdl import rundir
    from hpcdl.search.worker import final_value

    for epoch, acc in ((1, 0.5), (2, 0.9), (3, 0.7)):
        rundir.append_metrics(tmp_path, {"epoch": epoch, "val_accuracy": acc, "loss": 1.0})
    rundir.write_json_atomic(tmp_path / "result.json", {"test_accuracy": 0.8})
    assert final_value(tmp_path, "val_accuracy") == 0.7  # the last epoch's model was tested
    rundir.write_json_atomic(tmp_path / "result.json", {"test_accuracy": 0.8, "kept_epoch": 2})
    assert final_value(tmp_path, "val_accuracy") == 0.9  # keep: best tested epoch 2's
    assert final_value(tmp_path, "test_accuracy") == 0.8  # a result metric: result.json's


@pytest.mark.parametrize("startup, models_from", [(None, 10), (2, 2)])
def test_startup_trials_is_when_tpe_stops_sampling_at_random(startup, models_from):
    """Until `startup_trials` have ended TPE draws what a random sampler with its seed draws;
    after them it models the results (Optuna's own default: 10)."""
    import optuna

    from hpcdl.search.study import make_sampler
    from hpcdl.spec import SearchSpec

    search = SearchSpec(method="optuna", trials=12, startup_trials=startup)
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}

    def draws(sampler) -> list[float]:
        study = optuna.create_study(sampler=sampler)
        values = []
        for _ in range(4):
            trial = study.ask(dist)
            values.append(trial.params["x"])
            study.tell(trial, (trial.params["x"] - 0.3) ** 2)
        return values

    tpe, random = draws(make_sampler(search, 7)), draws(optuna.samplers.RandomSampler(seed=7))
    assert tpe[:2] == random[:2]
    assert (tpe[2:] == random[2:]) == (models_from > 2)


JOURNAL_WRITER = """
import sys
from pathlib import Path
from hpcdl.search.study import open_study
from hpcdl.spec import SweepSpec
spec = SweepSpec(name="j", program={"command": "true"},
                 search={"method": "optuna", "trials": 10**6, "space": {"x": {"uniform": [0, 1]}}})
study = open_study(spec, Path(sys.argv[1]))
print("open", flush=True)
while True:
    trial = study.ask()
    for epoch in range(3):
        trial.report(trial.suggest_float("x", 0, 1) * epoch, epoch)
    study.tell(trial, trial.params["x"])
"""


def _journal_study(folder: Path):
    from hpcdl.search.study import open_study
    from hpcdl.spec import SweepSpec

    space = {"x": {"uniform": [0, 1]}}
    spec = SweepSpec(
        name="j",
        program={"command": "true"},
        search={"method": "optuna", "trials": 10**6, "space": space},
    )
    return open_study(spec, folder)


def test_a_record_torn_by_a_killed_writer_is_dropped_and_the_journal_stays_usable(tmp_path):
    """A writer killed in the middle of a write leaves a record without its newline; Optuna
    would refuse everything appended after it. Opening the study cuts it."""
    study = _journal_study(tmp_path)
    for _ in range(3):
        trial = study.ask()
        study.tell(trial, trial.suggest_float("x", 0, 1))
    journal = tmp_path / "study.journal"
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code":4,"worker_id":"dead","trial_id":3,"sta')
    study = _journal_study(tmp_path)
    data = journal.read_bytes()
    assert data.startswith(whole) and b'"dead"' not in data
    trial = study.ask()
    study.tell(trial, 0.5)
    assert [t.state.name for t in _journal_study(tmp_path).trials] == ["COMPLETE"] * 4


@pytest.mark.slow
def test_kill_9_of_a_writer_at_random_moments_never_breaks_the_journal(env, tmp_path):
    """A real writer (asks, reports three epochs, tells, in a loop) killed with SIGKILL at
    random moments, three times: every time the journal opens and the trials read back (a lock
    the killed writer held is broken after Optuna's 30 s grace period)."""
    import random

    rng = random.Random(3)
    told = 0
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", JOURNAL_WRITER, str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline().strip() == "open"
        time.sleep(rng.uniform(0.05, 0.5))
        proc.kill()
        proc.wait()
        trials = _journal_study(tmp_path).trials  # raises if a record were broken
        complete = sum(t.state.name == "COMPLETE" for t in trials)
        assert complete >= told
        told = complete
    assert told > 3  # the writers did write, and were killed while writing


@pytest.mark.parametrize(
    "settings, stopped_at",
    [({}, 1), ({"prune_after": 3}, 3), ({"reduction_factor": 2}, None)],
    ids=["optuna's asha", "prune_after 3", "reduction_factor 2"],
)
def test_asha_prunes_from_prune_after_keeping_one_in_reduction_factor(settings, stopped_at):
    """Four trials reported 0.9, 0.8, 0.7, 0.6 at every epoch; a fifth at 0.85 is second of
    five: Optuna's asha (1 in 4 goes on) stops it at its first rung, epoch `prune_after`; with a
    reduction factor of 2 (2 of 5 go on) it runs to the end."""
    import optuna

    from hpcdl.search.study import make_pruner
    from hpcdl.spec import SearchSpec

    search = SearchSpec(method="optuna", trials=5, pruner="asha", **settings)
    study = optuna.create_study(direction="maximize", pruner=make_pruner(search))
    for value in (0.9, 0.8, 0.7, 0.6):
        trial = study.ask()
        for epoch in range(1, 7):
            trial.report(value, epoch)
            trial.should_prune()  # as the worker asks (it records the trial's rungs)
        study.tell(trial, value)
    trial = study.ask()
    stopped = None
    for epoch in range(1, 7):
        trial.report(0.85, epoch)
        if trial.should_prune():
            stopped = epoch
            break
    assert stopped == stopped_at


@pytest.mark.parametrize(
    "search, message",
    [
        ({"pruner": "median", "reduction_factor": 3}, "reduction_factor: only for pruner asha"),
        ({"prune_after": 2}, "search.prune_after: there is no pruner"),
    ],
)
def test_pruner_settings_without_their_pruner_are_errors(tmp_path, search, message):
    spec = search_spec(tmp_path, "bad", {"method": "optuna", "trials": 3, "space": SPACE, **search})
    with pytest.raises(HpcdlError, match=message) as err:
        plan(spec)
    assert "\n" not in str(err.value)


def test_opening_a_study_again_writes_nothing_to_its_journal(tmp_path):
    """status, resume and every worker open the study: only its creation is a record."""
    study = _journal_study(tmp_path)
    trial = study.ask()
    study.tell(trial, 0.5)
    journal = tmp_path / "study.journal"
    before = journal.read_bytes()
    again = _journal_study(tmp_path)
    assert journal.read_bytes() == before
    assert [t.value for t in again.trials] == [0.5]
