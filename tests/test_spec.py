"""Sweep specs: validation before anything happens, deterministic expansion, stable ids."""

import pytest
import yaml

from hpcdl.errors import HpcdlError
from hpcdl.grid import expand
from hpcdl.spec import SweepSpec, load_spec, time_to_seconds
from tests.conftest import JOBS, hpcdl

BASE = {"model": {"name": "mnist_cnn"}, "data": {"name": "mnist"}, "train": {"epochs": 1}}


def write_spec(tmp_path, **fields):
    spec = {"name": "t", "base": BASE, **fields}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def points_of(tmp_path, **fields):
    spec, base = load_spec(write_spec(tmp_path, **fields))
    return expand(spec, base)


def spec_error(tmp_path, **fields) -> str:
    with pytest.raises(HpcdlError) as info:
        points_of(tmp_path, **fields)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_cartesian_grid_in_spec_order(tmp_path):
    points = points_of(tmp_path, grid={"train.lr": [0.1, 0.01], "train.batch_size": [32, 64, 128]})
    assert [p.overrides for p in points] == [
        {"train.lr": lr, "train.batch_size": bs} for lr in (0.1, 0.01) for bs in (32, 64, 128)
    ]
    assert [p.config.train.lr for p in points][:3] == [0.1] * 3


def test_zip_ranges_seeds_include_exclude(tmp_path):
    points = points_of(
        tmp_path,
        grid={"model.dropout": {"start": 0.0, "stop": 0.5, "step": 0.25}},
        zip=[{"train.batch_size": [64, 128], "train.lr": [0.0005, 0.001]}],
        seeds=[1, 2],
        exclude=[{"model.dropout": 0.5, "train.batch_size": 128}],
        include=[{"train.optimizer": "sgd", "train.lr": 0.1}],
    )
    combos = {
        (
            p.config.model.dropout,
            p.config.train.batch_size,
            p.config.train.lr,
            p.config.train.seed,
            p.config.train.optimizer,
        )
        for p in points
    }
    assert (0.25, 64, 0.0005, 2, "adam") in combos
    assert (0.25, 64, 0.001, 1, "adam") not in combos  # zipped keys never cross
    assert not any(c[0] == 0.5 and c[1] == 128 for c in combos)  # excluded
    assert (0.0, 128, 0.1, 1, "sgd") in combos  # include runs on the base values + seeds
    assert len(points) == (3 * 2 - 1) * 2 + 2


def test_log_range():
    spec = SweepSpec.model_validate(
        {
            "name": "x",
            "base": BASE,
            "grid": {"train.lr": {"start": 1e-4, "stop": 1e-2, "num": 3, "log": True}},
        }
    )
    assert spec.grid["train.lr"].values() == [1e-4, 1e-3, 1e-2]


def test_ids_are_stable_and_follow_the_settings(tmp_path):
    a = points_of(tmp_path, grid={"train.lr": [0.1, 0.01]})
    b = points_of(tmp_path, grid={"train.lr": [0.01, 0.1, 0.5]})
    assert {p.id for p in a} < {p.id for p in b}
    assert a[0].id.startswith("lr0.1-") and len({p.id for p in b}) == 3


@pytest.mark.parametrize(
    "fields, needle",
    [
        ({"grid": {"train.lr": []}}, "grid key 'train.lr' has no values"),
        ({"grid": {"train.lr": [0.1, "fast"]}}, "train.lr"),
        ({"grid": {"train.epoch": [1, 2]}}, "train.epoch"),
        ({"grid": {"model.name": ["mnist_cnn", "alexnet"]}}, "alexnet"),
        ({"gird": {"train.lr": [0.1]}}, "gird"),
        ({"zip": [{"train.lr": [0.1, 0.2], "train.batch_size": [32]}]}, "same, non-zero number"),
        ({"resources": {"time": "soon"}}, "resources.time"),
        ({"resources": {"mem": "lots"}}, "resources.mem"),
        ({"resources": {"gpus_per_node": 2, "tasks_per_node": 3}}, "one rank per GPU"),
        ({"resources": {"nodes": 2}}, "needs a cluster backend"),
        ({"resources": {"nodez": 2}}, "resources.nodez"),
        ({"exclude": [{"train.epochs": 1}]}, "the grid is empty"),
        ({"backend": "lsf"}, "backend"),
    ],
)
def test_bad_specs_are_one_line_errors(tmp_path, fields, needle):
    assert needle in spec_error(tmp_path, **fields)


def test_point_that_cannot_train_is_caught_before_submission(tmp_path):
    path = tmp_path / "ip.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "ip",
                "base": {"model": {"name": "indian_pines_3dcnn"}, "data": {"name": "indian_pines"}},
                "grid": {"data.window": [9, 5]},
            }
        )
    )
    with pytest.raises(HpcdlError, match=r"point data.window=5: model: .* does not fit"):
        expand(*load_spec(path))


def test_slurm_time_formats():
    assert time_to_seconds("90") == 5400
    assert time_to_seconds("10:30") == 630
    assert time_to_seconds("01:00:00") == 3600
    assert time_to_seconds("2-00:00:00") == 172800


def test_invalid_spec_writes_and_submits_nothing(env, tmp_path):
    log = tmp_path / "scheduler.log"
    path = write_spec(
        tmp_path,
        grid={"train.lr": [0.1, -1.0]},
        backend="slurm",
        results_dir=str(tmp_path / "results"),
    )
    proc = hpcdl("sweep", str(path), env={**env, "HPCDL_SCHEDULER_LOG": str(log)})
    assert proc.returncode == 2
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("hpcdl:")]
    assert "point train.lr=-1.0" in line and "train.lr" in line and "greater than 0" in line
    assert not (tmp_path / "results").exists() and not log.exists()


def test_own_template_is_found_next_to_the_spec_and_checked_first(env, tmp_path):
    (tmp_path / "site.sh.j2").write_text(
        '{% extends "hpcdl/job.sh.j2" %}{% block setup %}module load cuda\n{% endblock %}'
    )
    path = write_spec(tmp_path, backend="slurm", scheduler={"template": "site.sh.j2"})
    proc = hpcdl("sweep", str(path), "--dry-run", env=env, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert 'module load cuda\ncd "$RUN_DIR"' in proc.stdout

    log = tmp_path / "scheduler.log"
    results = tmp_path / "results"
    for template, needle in (("missing.sh.j2", "no file"), ("broken.sh.j2", "broken.sh.j2:1:")):
        (tmp_path / "broken.sh.j2").write_text("{% block run %}{% endblok %}")
        path = write_spec(
            tmp_path, backend="slurm", scheduler={"template": template}, results_dir=str(results)
        )
        proc = hpcdl("sweep", str(path), env={**env, "HPCDL_SCHEDULER_LOG": str(log)})
        assert proc.returncode == 2
        [line] = [x for x in proc.stderr.splitlines() if x.startswith("hpcdl:")]
        assert "template" in line and needle in line, line
        assert not results.exists() and not log.exists()


def test_example_specs_expand(tmp_path):
    for path in sorted(JOBS.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if "name" in raw:  # a sweep spec (the others are training configs)
            assert expand(*load_spec(path)), path.name


def test_dry_run_prints_grid_and_script_without_writing(env, tmp_path):
    path = write_spec(
        tmp_path,
        grid={"train.lr": [0.1, 0.01]},
        backend="slurm",
        results_dir=str(tmp_path / "results"),
    )
    proc = hpcdl("sweep", str(path), "--dry-run", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "2 point(s)" in proc.stdout and "#SBATCH --array=0-1" in proc.stdout
    assert "lr0.1-" in proc.stdout and "lr0.01-" in proc.stdout
    assert not (tmp_path / "results").exists()


def test_include_only_spec_is_exactly_its_points(tmp_path):
    points = points_of(tmp_path, include=[{"train.lr": 0.1}, {"train.lr": 0.2}])
    assert [p.config.train.lr for p in points] == [0.1, 0.2]
    with_grid = points_of(tmp_path, grid={"train.epochs": [2]}, include=[{"train.lr": 0.2}])
    assert [(p.config.train.epochs, p.config.train.lr) for p in with_grid] == [(2, 0.001), (1, 0.2)]
