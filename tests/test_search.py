"""Search methods: spaces checked before anything is written, random search reproducible from its
seed, and real Optuna searches on the local backend (tiny MNIST runs): pruning, a worker killed
with kill -9, resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcdl.errors import HpcdlError
from hpcdl.sweep import plan
from tests.conftest import hpcdl, stderr_lines
from tests.sweeps import write_spec

SPACE = {
    "train.lr": {"loguniform": [1.0e-4, 1.0e-1]},
    "model.dropout": {"uniform": [0.0, 0.5]},
    "train.batch_size": {"choice": [16, 32, 64]},
    "model.dense": {"choice": [[128, 128], [256]]},
    "model.kernel": {"int": [3, 5]},
}


def search_spec(folder: Path, name: str, search: dict, backend: str = "local", **extra) -> Path:
    return write_spec(folder, name, {}, backend, search=search, **extra)


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
@pytest.mark.parametrize("method", ["random"])
def test_bad_spaces_are_rejected_before_anything_is_written(tmp_path, method, space, message):
    spec = search_spec(tmp_path, "bad", {"method": method, "trials": 3, "space": space})
    with pytest.raises(HpcdlError, match=message) as err:
        plan(spec)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "results").exists()


MISUSE = [
    ({"method": "random", "space": SPACE}, {}, "search.trials: method random needs"),
    ({"method": "random", "trials": 4, "space": SPACE}, {"grid": {"train.epochs": [1]}}, "grid:"),
    ({"method": "grid", "trials": 4, "space": SPACE}, {}, "method grid varies grid and zip"),
    ({"method": "bayes", "trials": 4, "space": SPACE}, {}, "unknown search method 'bayes'"),
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
