"""A bad config is one line naming the key, the value and what was expected."""

import pytest

from hpcdl.config import load_config, parse_config, parse_overrides, set_path
from hpcdl.errors import HpcdlError
from tests.conftest import JOBS

GOOD = {"model": {"name": "mnist_cnn"}, "data": {"name": "mnist"}}


def error_of(raw) -> str:
    with pytest.raises(HpcdlError) as info:
        parse_config(raw, "cfg.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_example_jobs_are_valid():
    for path in JOBS.glob("*.yaml"):
        if path.name.startswith(("mnist_cnn", "indian_pines_3dcnn")):
            load_config(path)


def test_unknown_model_names_the_choices():
    msg = error_of({"model": {"name": "resnet"}, "data": {"name": "mnist"}})
    assert msg.startswith("cfg.yaml: model")
    assert "resnet" in msg and "mnist_cnn" in msg and "indian_pines_3dcnn" in msg


def test_typo_in_key_is_named():
    msg = error_of({**GOOD, "train": {"epoch": 3}})
    assert msg.startswith("cfg.yaml: train.epoch") and "not permitted" in msg


def test_wrong_type_names_key_and_value():
    msg = error_of({**GOOD, "train": {"batch_size": "big"}})
    assert msg.startswith("cfg.yaml: train.batch_size") and "'big'" in msg


def test_even_window_is_rejected():
    msg = error_of(
        {"model": {"name": "indian_pines_3dcnn"}, "data": {"name": "indian_pines", "window": 8}}
    )
    assert "data" in msg and "window must be odd" in msg and "8" in msg


def test_model_and_data_must_match():
    msg = error_of({"model": {"name": "mnist_cnn"}, "data": {"name": "indian_pines"}})
    assert "trains on data 'mnist'" in msg


def test_layer_lists_must_agree():
    msg = error_of(
        {
            "model": {"name": "indian_pines_3dcnn", "filters": [8, 8]},
            "data": {"name": "indian_pines"},
        }
    )
    assert "kernels has 3 entries but filters has 2" in msg


def test_overrides_parse_yaml_values():
    raw = {"train": {"lr": 1}}
    for key, value in parse_overrides(["train.lr=0.5", "model.filters=[4, 8]"]).items():
        set_path(raw, key, value)
    assert raw == {"train": {"lr": 0.5}, "model": {"filters": [4, 8]}}
    with pytest.raises(HpcdlError, match="expected KEY=VALUE"):
        parse_overrides(["train.lr"])


def test_horovod_without_tensorflow_support_is_a_clear_import_error():
    """A Horovod built without TensorFlow (simulated: its TensorFlow module cannot be imported,
    as when the extension was not built) stops `hpcdl.distributed` with instructions."""
    import subprocess
    import sys

    code = "import sys; sys.modules['horovod.tensorflow'] = None\nimport hpcdl.distributed"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: hpcdl needs Horovod built with TensorFlow support")
    assert "HOROVOD_WITH_TENSORFLOW=1" in last
