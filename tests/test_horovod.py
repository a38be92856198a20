"""Real Horovod with 2 ranks on this machine, under horovodrun (Gloo) and mpirun (Open MPI).

The weight checks are what catch gradients that are silently not averaged (the Keras 3 trap):
without averaging the two ranks' weights drift apart after the first step.
"""

import json
import shutil
import sys

import numpy as np
import pytest

from tests.conftest import HELPERS, JOBS, run

MNIST = str(JOBS / "mnist_cnn.yaml")
TINY = [
    "train.epochs=1",
    "data.train_subset=2000",
    "data.test_subset=300",
    "train.steps_per_epoch=4",
]
LAUNCHERS = {
    "horovodrun": lambda n: [
        shutil.which("horovodrun") or "horovodrun",
        "-np",
        str(n),
        "-H",
        f"localhost:{n}",
        "--gloo",
    ],
    "mpirun": lambda n: ["mpirun", "-np", str(n), "--bind-to", "none"],
}
pytestmark = pytest.mark.slow


def rank_weights(launcher, n, tmp_path, name, overrides, env):
    cmd = [*LAUNCHERS[launcher](n)] if n > 1 else []
    cmd += [
        sys.executable,
        str(HELPERS / "rank_weights.py"),
        MNIST,
        str(tmp_path / name),
        str(tmp_path / f"{name}-weights"),
        *overrides,
    ]
    proc = run(cmd, {**env, "PATH": f"{sys.exec_prefix}/bin:{env['PATH']}"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [np.load(tmp_path / f"{name}-weights" / f"rank{r}.npz") for r in range(n)]


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_ranks_end_with_identical_weights(launcher, env, tmp_path):
    rank0, rank1 = rank_weights(launcher, 2, tmp_path, "run", TINY, env)
    assert rank0.files == rank1.files
    for key in rank0.files:
        np.testing.assert_array_equal(rank0[key], rank1[key])
    # only rank 0 wrote the run directory: one metrics line per epoch, one result
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["ranks"] == 2
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["ranks"] == 2 and result["test_samples"] == 300  # test set split, then summed


def test_two_ranks_of_batch_b_equal_one_rank_of_batch_2b(env, tmp_path):
    same = ["train.scale_lr=false", *TINY]
    [one] = rank_weights("mpirun", 1, tmp_path, "one", ["train.batch_size=128", *same], env)
    two, _ = rank_weights("mpirun", 2, tmp_path, "two", ["train.batch_size=64", *same], env)
    moved = max(float(np.abs(one[k]).max()) for k in one.files)
    for key in one.files:
        np.testing.assert_allclose(one[key], two[key], rtol=0, atol=1e-5 * moved)
    metrics = [json.loads((tmp_path / d / "metrics.jsonl").read_text()) for d in ("one", "two")]
    assert metrics[0]["loss"] == pytest.approx(metrics[1]["loss"], rel=1e-5)
    # and the check has teeth: a run with another batch order does not match
    [other] = rank_weights(
        "mpirun", 1, tmp_path, "other", ["train.batch_size=128", "train.seed=7", *same], env
    )
    assert any(not np.allclose(one[k], other[k], atol=1e-5 * moved) for k in one.files)


def test_fp16_compression_keeps_the_ranks_identical_and_close_to_float32(env, tmp_path):
    """train.compression: fp16 sends float16 gradients: the ranks still apply the same averages
    (identical weights), close to the float32 run, and not equal to it (the gradients did
    travel compressed). Adam moves a weight by at most about lr per step, so where float16
    rounds a tiny gradient to zero the two runs part by at most 2 x lr x steps."""
    plain = rank_weights("mpirun", 2, tmp_path, "plain", TINY, env)[0]
    half = rank_weights("mpirun", 2, tmp_path, "half", ["train.compression=fp16", *TINY], env)
    for key in half[0].files:
        np.testing.assert_array_equal(half[0][key], half[1][key])
    diffs = np.concatenate([np.abs(half[0][k] - plain[k]).ravel() for k in plain.files])
    lr, steps = 0.001 * 2, 4  # the config's lr x 2 ranks (scale_lr), TINY's steps
    assert diffs.max() <= 2 * lr * steps
    assert np.quantile(diffs, 0.99) < 0.05 * lr  # all but a few: float16's rounding, no more
    assert diffs.max() > 0


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_rank_defaults_reach_every_rank_and_the_environment_wins(launcher, env, tmp_path):
    """What hpcdl sets for its ranks (distributed.RANK_DEFAULTS, README: Horovod on CPUs) is
    in every rank's environment when Horovod starts; a value the job's environment already
    has (a spec's `env`) is kept."""
    from hpcdl.distributed import RANK_DEFAULTS

    def ranks_env(name, extra):
        cmd = [*LAUNCHERS[launcher](2), sys.executable, str(HELPERS / "rank_env.py")]
        clean = {k: v for k, v in env.items() if k not in RANK_DEFAULTS}
        proc = run(
            [*cmd, str(tmp_path / name)],
            {**clean, **extra, "PATH": f"{sys.exec_prefix}/bin:{env['PATH']}"},
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        records = [json.loads((tmp_path / name / f"rank{r}.json").read_text()) for r in (0, 1)]
        assert [r["size"] for r in records] == [2, 2]
        return [r["env"] for r in records]

    assert ranks_env("defaults", {}) == [RANK_DEFAULTS, RANK_DEFAULTS]
    mine = {key: "7" for key in RANK_DEFAULTS}
    assert ranks_env("own", mine) == [mine, mine]
