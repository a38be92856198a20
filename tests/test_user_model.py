"""Your own Keras model and data (`name: "module:function"` under model / data): trained like a
built-in (2 Horovod ranks end with bit-identical weights), varied by a grid like any other key,
and every bad input is one line at planning, before anything is written."""

import json
import sys

import numpy as np
import pytest
import yaml

from hpcdl.errors import HpcdlError
from hpcdl.grid import expand
from hpcdl.spec import load_spec
from tests.conftest import HELPERS, SHARED_DATA, hpcdl, run

NETS = """
import tensorflow as tf


def build(input_shape, n_classes, width, depth=1):
    keras = tf.keras
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Reshape((*input_shape, 1))(inputs)
    for _ in range(depth):
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax")(keras.layers.Flatten()(x))
    return keras.Model(inputs, outputs)


def logits(input_shape, n_classes):
    return tf.keras.Sequential(
        [tf.keras.Input(input_shape), tf.keras.layers.Flatten(), tf.keras.layers.Dense(n_classes)]
    )


def too_few(input_shape, n_classes):
    layers = [tf.keras.layers.Flatten(), tf.keras.layers.Dense(n_classes - 1, activation="softmax")]
    return tf.keras.Sequential([tf.keras.Input(input_shape), *layers])


def not_a_model(input_shape, n_classes):
    return "a model"


def keras3(input_shape, n_classes):
    import keras

    layers = [keras.layers.Flatten(), keras.layers.Dense(n_classes, activation="softmax")]
    return keras.Sequential([keras.Input(input_shape), *layers])


def broken(input_shape, n_classes):
    raise RuntimeError("out of ideas")


def verbose(input_shape, n_classes):
    raise ValueError("first line\\n  and a traceback-like second")


def positional(input_shape, n_classes, /):
    return None
"""

DIGITS = """
import gzip
from pathlib import Path

import numpy as np
import tensorflow as tf


def _idx(path, offset):
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def load(folder, n_train=1024, n_test=256):
    root = Path(folder) / "mnist"
    n = n_train + n_test
    x = _idx(root / "train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)[:n] / 255.0
    y = _idx(root / "train-labels-idx1-ubyte.gz", 8)[:n].astype(np.int64)
    train = tf.data.Dataset.from_tensor_slices((x[:n_train], y[:n_train])).batch(100)
    return {"train": train, "test": (x[n_train:], y[n_train:]), "n_classes": 10}


def one_hot(folder):
    data = load(folder, 64, 32)
    x, y = data["test"]
    return {"train": (x, np.eye(10)[y]), "test": (x, y)}


def uneven(folder):
    x, y = load(folder, 64, 32)["test"]
    return {"train": (x, y[:-1]), "test": (x, y)}


def a_list(folder):
    return [1, 2]
"""

DROP = object()  # a key to remove from the section
TINY_TRAIN = {"epochs": 1, "batch_size": 32, "steps_per_epoch": 6, "threads": 1, "seed": 3}


def user_code(tmp_path):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "nets.py").write_text(NETS)
    (src / "digits.py").write_text(DIGITS)
    (src / "broken_import.py").write_text("import not_a_module_anywhere\n")
    return src


def base_config(**model):
    model = {"name": "nets:build", "width": 4, **model}
    return {
        "model": {k: v for k, v in model.items() if v is not DROP},
        "data": {"name": "digits:load", "folder": str(SHARED_DATA)},
        "train": dict(TINY_TRAIN),
    }


def write_spec(tmp_path, base, **extra):
    user_code(tmp_path)
    spec = {"name": "mine", "code": "src", "base": base, "results_dir": str(tmp_path / "res")}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**spec, **extra}, sort_keys=False))
    return path


@pytest.mark.slow
def test_two_ranks_train_a_user_model_to_identical_weights(env, tmp_path):
    config = {"code": str(user_code(tmp_path)), **base_config(depth=2)}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = ["mpirun", "-np", "2", "--bind-to", "none", sys.executable]
    cmd += [str(HELPERS / "rank_weights.py"), str(path), str(tmp_path / "run"), str(tmp_path / "w")]
    proc = run(cmd, {**env, "PATH": f"{sys.exec_prefix}/bin:{env['PATH']}"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rank0, rank1 = (np.load(tmp_path / "w" / f"rank{r}.npz") for r in (0, 1))
    assert len(rank0.files) == 6  # two conv blocks and the softmax layer: kernels and biases
    for key in rank0.files:
        np.testing.assert_array_equal(rank0[key], rank1[key])
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["ranks"] == 2 and result["test_samples"] == 256  # split, then summed
    assert len(result["confusion_matrix"]) == 10
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["code"] == str(tmp_path / "src") and saved["model"]["depth"] == 2
    assert (tmp_path / "run" / "checkpoints" / "last.h5").is_file()


def test_a_grid_varies_the_builders_keyword_arguments(tmp_path):
    path = write_spec(tmp_path, base_config(), grid={"model.width": [2, 4], "model.depth": [1, 2]})
    points = expand(*load_spec(path))
    assert len({p.id for p in points}) == 4
    assert [(p.config.model.width, p.config.model.depth) for p in points] == [
        (2, 1),
        (2, 2),
        (4, 1),
        (4, 2),
    ]
    assert all(p.config.code == str(tmp_path / "src") for p in points)


@pytest.mark.parametrize(
    ("model", "data", "message"),
    [
        ({"name": "broken_import:build"}, {}, "module 'broken_import' does not import"),
        ({"name": "nets:nope"}, {}, "'nets' has no attribute 'nope'"),
        (
            {"width": DROP, "widht": 4},
            {},
            "no keyword argument 'widht' (its keyword arguments: width, depth)",
        ),
        ({"width": "wide"}, {}, "the builder failed ("),
        (
            {"name": "nets:logits", "width": DROP},
            {},
            "not softmax probabilities; end it with Dense(10",
        ),
        (
            {"name": "nets:too_few", "width": DROP},
            {},
            "output has shape (None, 9), expected (None, 10)",
        ),
        (
            {"name": "nets:not_a_model", "width": DROP},
            {},
            "returned builtins.str, not a tf.keras Model",
        ),
        (
            {"name": "nets:keras3", "width": DROP},
            {},
            "not a tf.keras Model (build it with tensorflow's tf.keras",
        ),
        (
            {"name": "nets:broken", "width": DROP},
            {},
            "the builder failed (RuntimeError: out of ideas)",
        ),
        ({"name": "nets:verbose", "width": DROP}, {}, "failed (ValueError: first line)"),
        (
            {"name": "nets:positional", "width": DROP},
            {},
            "argument 'input_shape' is positional-only",
        ),
        ({}, {"name": "digits:one_hot"}, "y must be integer class labels"),
        ({}, {"name": "digits:uneven"}, "must hold the same, non-zero number of samples"),
        ({}, {"name": "digits:a_list"}, "the loader returned list; expected a mapping"),
        ({}, {"n_trian": 5}, "has no keyword argument 'n_trian'"),
        ({}, {"folder": "/nonexistent"}, "the loader failed (FileNotFoundError"),
    ],
)
def test_bad_user_code_is_one_line_at_planning(tmp_path, model, data, message):
    base = base_config()
    for section, changes in (("model", model), ("data", data)):
        base[section].update(changes)
        base[section] = {k: v for k, v in base[section].items() if v is not DROP}
    with pytest.raises(HpcdlError) as info:
        expand(*load_spec(write_spec(tmp_path, base)), "spec")
    text = str(info.value)
    assert "\n" not in text and message in text, text
    assert text.startswith("spec: point base: ")


def test_missing_keyword_argument_and_code_folder(tmp_path):
    base = base_config()
    del base["model"]["width"]
    with pytest.raises(HpcdlError, match=r"model 'nets:build': missing key 'width'"):
        expand(*load_spec(write_spec(tmp_path, base)))
    with pytest.raises(HpcdlError, match=r"code: no folder '.*/nowhere'"):
        expand(*load_spec(write_spec(tmp_path, base_config(), code="nowhere")))


def test_a_bad_user_model_stops_the_sweep_before_anything_is_written(env, tmp_path):
    path = write_spec(tmp_path, base_config(name="nets:logits", width=DROP), backend="local")
    proc = hpcdl("sweep", str(path), env=env)
    assert proc.returncode == 2
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("hpcdl:")]
    assert "'nets:logits'" in line and "not softmax probabilities" in line
    assert not (tmp_path / "res").exists()


@pytest.mark.slow
def test_a_killed_user_model_run_resumes_to_the_same_end(env, tmp_path):
    config = {"code": str(user_code(tmp_path)), **base_config()}
    config["train"].update(epochs=2, steps_per_epoch=None)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))

    def final_weights(name):
        cmd = [sys.executable, str(HELPERS / "rank_weights.py"), str(path), str(tmp_path / name)]
        proc = run([*cmd, str(tmp_path / f"{name}-w")], env)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout, np.load(tmp_path / f"{name}-w" / "rank0.npz")

    _out, straight = final_weights("straight")
    crash = [sys.executable, str(HELPERS / "die_after_epoch.py"), str(path), str(tmp_path / "b")]
    assert run([*crash, "1"], env).returncode == -9  # SIGKILL after epoch 1's checkpoint
    out, resumed = final_weights("b")
    assert "resuming" in out and "after epoch 1" in out
    for key in straight.files:
        np.testing.assert_array_equal(straight[key], resumed[key])
