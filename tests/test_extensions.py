"""Each extension recipe followed once with a toy of a few lines: a model, a data set and a report
section registered the way the built-ins are, then used by the real config, trainer and report."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from hpcdl.config import parse_config
from hpcdl.datasets import DATASETS
from hpcdl.errors import HpcdlError
from hpcdl.models import MODELS
from hpcdl.registry import code_path
from hpcdl.report import SWEEP_SECTIONS, Section, report
from tests.conftest import run

TOY = '''
from typing import Literal

import numpy as np

from hpcdl.datasets import register_data
from hpcdl.datasets.base import MemorySplit, Prepared
from hpcdl.models import register_model
from hpcdl.registry import Schema


class Blobs(Schema):
    name: Literal["toy_blobs"]
    n: int = 600


def blobs(cfg):
    """Three Gaussian blobs in 4 dimensions, 2/3 for training."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, cfg.n)
    x = (rng.normal(size=(cfg.n, 4)) + 3.0 * np.eye(3, 4)[y]).astype(np.float32)
    cut = 2 * cfg.n // 3
    train, test = MemorySplit(x[:cut], y[:cut]), MemorySplit(x[cut:], y[cut:])
    return Prepared(train, None, test, n_classes=3, input_shape=(4,))


register_data("toy_blobs", Blobs, blobs, lambda cfg: (4,), n_classes=3)


class Mlp(Schema):
    name: Literal["toy_mlp"]
    width: int = 16


@register_model("toy_mlp", Mlp, data="toy_blobs")
def toy_mlp(keras, cfg, input_shape, n_classes):
    layers = [keras.layers.Dense(cfg.width, activation="relu"), keras.layers.Dense(n_classes)]
    return keras.Sequential([keras.Input(input_shape), *layers, keras.layers.Softmax()])
'''

CONFIG = {
    "model": {"name": "toy_mlp", "width": 8},
    "data": {"name": "toy_blobs"},
    "train": {"epochs": 3, "batch_size": 20, "lr": 0.01, "threads": 1},
}


@pytest.fixture
def toy(tmp_path):
    (tmp_path / "toyext.py").write_text(TOY)
    with code_path(tmp_path):
        import toyext  # noqa: F401  (registers the toys)
    yield tmp_path
    MODELS.unregister("toy_mlp")
    DATASETS.unregister("toy_blobs")


def test_a_toy_model_and_data_set_join_the_schema_and_its_messages(toy):
    config = parse_config(CONFIG, "toy.yaml")
    assert config.model.width == 8 and config.data.n == 600
    with pytest.raises(HpcdlError, match=r"^toy.yaml: model.width: Input should be a valid int"):
        parse_config({**CONFIG, "model": {"name": "toy_mlp", "width": "wide"}}, "toy.yaml")
    with pytest.raises(
        HpcdlError,
        match=r"choose indian_pines_3dcnn, indian_pines_spectral, mnist_cnn or toy_mlp or",
    ):
        parse_config({**CONFIG, "model": {"name": "toy_mpl"}}, "toy.yaml")
    with pytest.raises(
        HpcdlError, match=r"model 'toy_mlp' trains on data 'toy_blobs', not 'mnist'"
    ):
        parse_config({**CONFIG, "data": {"name": "mnist"}}, "toy.yaml")
    with pytest.raises(HpcdlError, match=r"model 'mnist_cnn' trains on data 'mnist', not 'toy_b"):
        parse_config({**CONFIG, "model": {"name": "mnist_cnn"}}, "toy.yaml")


def test_the_real_trainer_trains_the_toys(toy, env, tmp_path):
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(CONFIG))
    script = "import sys, toyext; from hpcdl.cli import main; sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", script, "train", "toy.yaml", "--run-dir", "run"]
    env = {**env, "PYTHONPATH": f"{tmp_path}:{env.get('PYTHONPATH', '')}"}
    proc = run(cmd, env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "training toy_mlp on toy_blobs: 400 train, 0 validation, 200 test" in proc.stdout
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["test_samples"] == 200 and result["test_accuracy"] > 0.8  # chance: 1/3
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 3


def test_a_toy_report_section_appears_in_a_real_report(tmp_path):
    real = Path(__file__).resolve().parents[1] / "results" / "mnist_baseline"
    folder = tmp_path / real.name
    shutil.copytree(real, folder, ignore=shutil.ignore_patterns("report.*"))

    def runs_per_state(s, prefix):
        counts = s.summary["state"].value_counts().rename_axis("state").reset_index()
        return [Section(f"{prefix}Runs per state", text="a toy section", table=counts)]

    SWEEP_SECTIONS.register("runs_per_state", runs_per_state)
    try:
        html, md = report([folder], refresh=False, out=lambda _m: None)
    finally:
        SWEEP_SECTIONS.unregister("runs_per_state")
    text = md.read_text()
    assert "## Runs per state" in text and "| FINISHED |" in text
    assert text.index("## Failures (0)") < text.index("## Runs per state")  # registered last
    assert "Runs per state" in html.read_text()
    _html, md = report([folder], refresh=False, out=lambda _m: None)
    assert "Runs per state" not in md.read_text()


def test_a_search_method_of_a_few_lines_makes_the_points(tmp_path):
    """ARCHITECTURE.md's recipe "A search method": a toy method registered like the built-ins
    (every other grid point) makes the sweep's points, validated and named like any others."""
    from hpcdl.grid import combinations
    from hpcdl.search import SEARCH_METHODS, SearchMethod
    from hpcdl.sweep import plan

    SEARCH_METHODS.register("every_other", SearchMethod(lambda spec: combinations(spec)[::2]))
    spec = tmp_path / "s.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "toy_search",
                "program": {"command": "true --lr {train.lr}", "workdir": str(tmp_path)},
                "grid": {"train.lr": [0.1, 0.2, 0.3, 0.4, 0.5]},
                "search": {"method": "every_other"},
            }
        )
    )
    try:
        points = plan(spec)[2]
        assert [p.overrides["train.lr"] for p in points] == [0.1, 0.3, 0.5]
        assert points[1].command == "true --lr 0.3"
    finally:
        SEARCH_METHODS.unregister("every_other")
    with pytest.raises(HpcdlError, match="unknown search method 'every_other'"):
        plan(spec)
