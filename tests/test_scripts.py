"""Job scripts: directives per scheduler, shell safety, PBS Pro golden files, sbatch --test-only."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpcdl.backends.base import ScriptJob
from hpcdl.backends.local import Local
from hpcdl.backends.pbs import PBS, parse_qstat_f
from hpcdl.backends.slurm import Slurm, parse_sacct
from hpcdl.errors import HpcdlError
from hpcdl.spec import Resources
from tests.conftest import ROOT, sbatch_test_only

GOLDEN = Path(__file__).parent / "golden"
SITE_TEMPLATE = str(ROOT / "slurm" / "gpu_site.sh.j2")


def demo_job(kind="array", **resources):
    r = Resources(**resources)
    return ScriptJob(
        kind=kind,
        sweep="demo",
        sweep_dir=Path("/scratch/me/results/demo"),
        job_name=f"hpcdl-demo-{'a' if kind == 'array' else 'c'}000",
        resources=r,
        count=12 if kind == "array" else 1,
        throttle=4 if kind == "array" else None,
        points_file=Path("/scratch/me/results/demo/jobs/a000.points"),
        log_dir=Path("/scratch/me/results/demo/logs"),
    )


GOLDEN_RESOURCES = dict(
    nodes=2,
    gpus_per_node=2,
    cpus_per_task=4,
    mem="16G",
    time="02:00:00",
    partition="gpuq",
    account="proj42",
    extra=["-m abe"],
)


@pytest.mark.parametrize("flavor", ["pro", "torque"])
@pytest.mark.parametrize("kind", ["array", "collect"])
def test_pbs_scripts_match_golden_files(flavor, kind, monkeypatch):
    """Golden files checked against the PBS references: PBS Pro `-J 0-11%4` (array with
    max_run_subjobs), `select=N:ncpus=C:mpiprocs=T:ngpus=G:mem=Xgb` chunks, `walltime`,
    `^array_index^` in -o, PBS_ARRAY_INDEX; Torque `-t 0-11%4`, `nodes=N:ppn=C:gpus=G`, job-wide
    mem, PBS_ARRAYID. The submitting shell's HPCDL_* settings are exported (PBS does not)."""
    for key in [k for k in os.environ if k.startswith("HPCDL_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HPCDL_DATA_DIR", "/scratch/me/data")
    text = (
        PBS(flavor)
        .render(demo_job(kind, **GOLDEN_RESOURCES), created="2026-01-01T00:00:00+00:00")
        .replace(sys.executable, "PYTHON")
    )
    golden = (GOLDEN / f"pbs_{flavor}_{kind}.sh").read_text()
    for n, (got, want) in enumerate(zip(text.splitlines(), golden.splitlines(), strict=True), 1):
        assert got == want, f"line {n}"


def test_pbs_has_no_qos_and_no_srun():
    with pytest.raises(HpcdlError, match="PBS has no QoS"):
        PBS("pro").render(demo_job(qos="high"))
    job = demo_job(gpus_per_node=2)
    job.launcher = "srun"
    with pytest.raises(HpcdlError, match="srun needs the slurm backend"):
        PBS("pro").render(job)


def test_slurm_directives_cover_every_resource():
    text = Slurm().render(
        demo_job(
            nodes=2,
            gpus_per_node=4,
            cpus_per_task=8,
            mem="64G",
            time="1-00:00:00",
            partition="gpu",
            account="proj",
            qos="normal",
            constraint="a100",
            extra=["--mail-type=END"],
        )
    )
    for line in (
        "#SBATCH --array=0-11%4",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --gres=gpu:4",
        "#SBATCH --mem=64G",
        "#SBATCH --time=1-00:00:00",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj",
        "#SBATCH --qos=normal",
        "#SBATCH --constraint=a100",
        "#SBATCH --mail-type=END",
    ):
        assert line in text.splitlines()
    assert "srun --mpi=pmix --kill-on-bad-exit=1 --cpus-per-task=8 " in text
    custom = Slurm().render(demo_job(gres="gpu:a100:2", gpus_per_node=2))
    assert "#SBATCH --gres=gpu:a100:2" in custom and "--gres=gpu:2\n" not in custom


def test_paths_and_values_stay_single_words(tmp_path):
    """A path or value like `x; touch MARKER` or `$(touch MARKER)` must not run as code."""
    marker = tmp_path / "MARKER"
    evil = tmp_path / f"dir with spaces; touch {marker}" / "$(touch MARKER2)"
    evil.mkdir(parents=True)
    points = evil / "a000.points"
    run_dir = evil / "run;touch x"
    run_dir.mkdir()
    points.write_text(f"{run_dir}\n")
    job = ScriptJob(
        kind="array",
        sweep="s",
        sweep_dir=evil,
        job_name="j",
        resources=Resources(),
        points_file=points,
        log_dir=evil,
        env={"HPCDL_NOTE": f"1; touch {marker}"},
    )
    script = tmp_path / "job.sh"
    # stop the script just before training: check what it resolved
    text = Local().render(job).replace("exec ", 'echo "$RUN_DIR|$HPCDL_NOTE"; exit 0 #')
    script.write_text(text)
    out = subprocess.run(["bash", str(script), "0"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == f"{run_dir}|1; touch {marker}"
    assert not marker.exists() and not (tmp_path / "MARKER2").exists()


def test_site_templates_extend_the_default(tmp_path):
    job = demo_job(nodes=2, gpus_per_node=2, time="01:00:00")
    site = Slurm().render(job, SITE_TEMPLATE)
    default = Slurm().render(job)
    # the example keeps every line of the default and adds its own
    assert set(default.splitlines()) - set(site.splitlines()) == set()
    assert "#SBATCH --exclusive" in site and "job_env.txt" in site
    assert site.index("#SBATCH --exclusive") < site.index("set -uo pipefail")
    assert site.index("module load") < site.index('cd "$RUN_DIR"') < site.index("exec srun")
    assert "--exclusive" not in Slurm().render(demo_job(gpus_per_node=2), SITE_TEMPLATE)
    subprocess.run(["bash", "-n"], input=site, text=True, check=True)

    own = tmp_path / "own.sh.j2"  # a user's template replacing one block
    own.write_text(
        '{% extends "hpcdl/job.sh.j2" %}{% block run %}exec echo {{ ranks }} ranks{% endblock %}'
    )
    text = PBS("pro").render(demo_job(gpus_per_node=2), str(own))
    assert text.rstrip().endswith("exec echo 2 ranks") and "#PBS -J 0-11%4" in text

    own.write_text("{% block run %}exec true{% endblok %}")
    with pytest.raises(HpcdlError, match=r"own.sh.j2:1: "):
        Slurm().render(job, str(own))
    own.write_text("{{ no_such_variable }}")
    with pytest.raises(HpcdlError, match="no_such_variable"):
        Slurm().render(job, str(own))


def test_sacct_parsing_expands_pending_ranges_and_folds_steps():
    text = "\n".join(
        [
            "7_0|n|COMPLETED|0:0|11|2026-01-01T00:00:00|2026-01-01T00:00:11|2|"
            "billing=2,cpu=2,gres/gpu=2,mem=2G,node=1|h1|",
            "7_0.batch|batch|COMPLETED|0:0|11|||2||h1|812K",
            "7_0.0|python|COMPLETED|0:0|10|||2||h1|1.5G",
            "7_1|n|TIMEOUT|0:0|60|||1|cpu=1|h1|",
            "7_2|n|FAILED|2:0|5|||1|cpu=1|h1|",
            "7_3|n|CANCELLED by 0|0:15|5|||1|cpu=1|h1|",
            "7_[4-6%2]|n|PENDING|0:0|0|Unknown|Unknown|0||None assigned|",
        ]
    )
    records = parse_sacct(text)
    assert records["7_0"].state == "COMPLETED" and records["7_0"].gpus == 2
    assert records["7_0"].max_rss == "1.5G" and records["7_0"].elapsed_seconds == 11
    assert records["7_1"].state == "TIMEOUT"
    assert records["7_2"].state == "FAILED" and records["7_2"].exit_code == 2
    assert records["7_3"].state == "CANCELLED" and records["7_3"].exit_code == 128 + 15
    assert [records[f"7_{i}"].state for i in (4, 5, 6)] == ["PENDING"] * 3


def test_qstat_f_parsing():
    text = (
        "Job Id: 12[].server\n    Job_Name = a\n    job_state = B\n\n"
        "Job Id: 13.server\n    job_state = F\n    Exit_status = 1\n"
        "Job Id: 14\n\tjob_state = C\n"
    )
    records = parse_qstat_f(text)
    assert records["12[].server"].state == "RUNNING"
    assert records["13"].state == "FAILED" and records["13"].exit_code == 1
    assert records["14"].state == "COMPLETED"


@pytest.mark.slurm
def test_rendered_slurm_scripts_pass_sbatch_test_only(slurm_cluster, tmp_path):
    for kind, resources in (
        (
            "array",
            dict(gpus_per_node=2, cpus_per_task=1, mem="1G", time="00:05:00", partition="debug"),
        ),
        ("array", dict(cpus_per_task=2, time="10")),
        ("collect", {}),
    ):
        job = demo_job(kind, **resources)
        job.log_dir = tmp_path
        script = tmp_path / "job.sh"
        for template in (None, SITE_TEMPLATE):
            script.write_text(Slurm().render(job, template))
            proc = sbatch_test_only(script)
            assert proc.returncode == 0 and "to start at" in proc.stderr, (template, proc.stderr)
    impossible = demo_job(gpus_per_node=8)
    impossible.log_dir = tmp_path
    script.write_text(Slurm().render(impossible))
    assert sbatch_test_only(script).returncode != 0
