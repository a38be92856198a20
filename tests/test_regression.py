"""A user's regression task (a loader that says task: regression, a model with a linear output)
through hpcdl's own Horovod loop: mse/mae losses, mean absolute error per epoch and on test,
2 ranks ending with identical weights, and sweeps chosen on validation error (lower is better)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import yaml

from hpcdl.errors import HpcdlError
from hpcdl.grid import expand
from hpcdl.spec import load_spec
from tests.conftest import HELPERS, hpcdl, run

CODE = '''
import numpy as np
import tensorflow as tf


def linear(n=1200, noise=0.05, outputs=2, seed=0):
    """y = x @ w + noise: a regression a small network learns in a few epochs."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    w = rng.normal(size=(8, outputs)).astype("float32")
    y = x @ w + noise * rng.normal(size=(n, outputs))
    cut, val = int(0.7 * n), int(0.85 * n)
    return {"train": (x[:cut], y[:cut]), "validation": (x[cut:val], y[cut:val]),
            "test": (x[val:], y[val:]), "task": "regression"}


def mlp(input_shape, n_outputs, width=16):
    keras = tf.keras
    return keras.Sequential([keras.Input(input_shape), keras.layers.Dense(width, activation="relu"),
                             keras.layers.Dense(n_outputs)])


def classifier(input_shape, n_classes):
    keras = tf.keras
    out = keras.layers.Dense(n_classes, activation="softmax")
    return keras.Sequential([keras.Input(input_shape), out])
'''
TRAIN = {
    "epochs": 4,
    "batch_size": 32,
    "optimizer": "adam",
    "lr": 0.01,
    "loss": "mse",
    "threads": 1,
}


def config(tmp_path, **train) -> dict:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "reg.py").write_text(CODE)
    return {
        "code": str(tmp_path / "src"),
        "model": {"name": "reg:mlp"},
        "data": {"name": "reg:linear"},
        "train": {**TRAIN, **train},
    }


@pytest.mark.slow
def test_two_ranks_learn_a_regression_to_identical_weights(env, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path)))
    cmd = ["mpirun", "-np", "2", "--bind-to", "none", sys.executable]
    cmd += [str(HELPERS / "rank_weights.py"), str(path), str(tmp_path / "run"), str(tmp_path / "w")]
    proc = run(cmd, {**env, "PATH": f"{sys.exec_prefix}/bin:{env['PATH']}"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rank0, rank1 = (np.load(tmp_path / "w" / f"rank{r}.npz") for r in (0, 1))
    for key in rank0.files:
        np.testing.assert_array_equal(rank0[key], rank1[key])
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]
    assert "accuracy" not in lines[0] and lines[-1]["val_mae"] < lines[0]["val_mae"]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["ranks"] == 2 and result["test_samples"] == 180
    assert result["test_mae"] < 0.5 * lines[0]["val_mae"] and "test_accuracy" not in result
    assert "confusion_matrix" not in result


@pytest.mark.slow
def test_a_regression_sweep_is_chosen_on_the_lowest_validation_error(env, tmp_path):
    spec = {
        "name": "reg",
        "base": config(tmp_path, epochs=2),
        "grid": {"train.loss": ["mse", "mae"], "train.lr": [0.01, 0.0001]},
        "results_dir": str(tmp_path / "results"),
        "max_concurrent": 2,
    }
    path = tmp_path / "reg.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = hpcdl("sweep", str(path), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert hpcdl("report", str(tmp_path / "results" / "reg"), env=env).returncode == 0
    md = (tmp_path / "results" / "reg" / "report.md").read_text()
    assert "## Best runs (by val_mae)" in md and "overstates" not in md
    import pandas as pd

    summary = pd.read_csv(tmp_path / "results" / "reg" / "summary.csv")
    best = summary.sort_values("val_mae").iloc[0]
    table = md[md.index("## Best runs") :]
    assert table.index(best["point"]) < min(
        table.index(p) for p in summary["point"] if p != best["point"]
    )
    assert best["hp.train.lr"] == 0.01  # the slow learning rate has not learnt in 2 epochs


def test_regression_misuse_is_one_line_at_planning(tmp_path):
    for base, message in [
        (config(tmp_path, loss="categorical_crossentropy"), "train.loss: categorical_crossentropy"),
        ({**config(tmp_path), "model": {"name": "reg:classifier"}}, "n_classes"),
        ({**config(tmp_path), "model": {"name": "mnist_cnn"}}, "trains on data 'mnist'"),
    ]:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({"name": "bad", "base": base}))
        with pytest.raises(HpcdlError, match=message) as err:
            expand(*load_spec(path))
        assert "\n" not in str(err.value)
