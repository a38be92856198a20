"""Issue 12: spec values that would land unquoted in job scripts, sweep folders that were moved
or copied, damaged manifests (and how sweep.json is written under kill -9)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from hpcdl.backends.base import ScriptJob
from hpcdl.backends.local import Local
from hpcdl.backends.pbs import PBS
from hpcdl.backends.slurm import Slurm
from hpcdl.errors import HpcdlError
from hpcdl.spec import Resources, load_spec
from tests.conftest import ROOT, hpcdl, sbatch_test_only, stderr_lines

BASE = {"model": {"name": "mnist_cnn"}, "data": {"name": "mnist"}, "train": {"epochs": 1}}
RESULTS = ROOT / "results"
BACKENDS = (Slurm(), PBS("pro"), PBS("torque"), Local())


def write_spec(folder: Path, **fields) -> Path:
    path = folder / "spec.yaml"
    spec = {"name": "t", "base": BASE, "backend": "slurm", **fields}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def one_line_error(path: Path) -> str:
    with pytest.raises(HpcdlError) as info:
        load_spec(path)
    assert "\n" not in str(info.value)
    return str(info.value)


# ------------------------------------------------------------- 1. values that reach a script
LINE_BREAK = "gpu\n#SBATCH --partition=other\ntouch /tmp/hpcdl-hardening-marker"


@pytest.mark.parametrize(
    "key,fields",
    [
        ("resources.partition", {"resources": {"partition": LINE_BREAK}}),
        ("resources.account", {"resources": {"account": "proj\rtouch x"}}),
        ("resources.qos", {"resources": {"qos": "normal\n"}}),
        ("resources.constraint", {"resources": {"constraint": "a100\x00"}}),
        ("resources.gres", {"resources": {"gres": "gpu:2\u2028x"}}),
        ("resources.extra", {"resources": {"extra": ["--mail-type=END\ntouch x"]}}),
        ("resources.extra", {"resources": {"extra": ["touch x"]}}),
        ("resources.extra", {"resources": {"extra": ["--comment=two words"]}}),
        ("resources.time", {"resources": {"time": "01:00:00\n"}}),
        ("resources.mem", {"resources": {"mem": "4G\ntouch x"}}),
        ("resources.partition", {"resources": {"partition": "gpu debug"}}),
        ("env", {"env": {"X=1; touch /tmp/f; Y": "1"}}),
        ("env", {"env": {"1X": "1"}}),
        ("results_dir", {"results_dir": "results\n#SBATCH --x"}),
    ],
)
def test_values_that_would_break_a_script_are_refused_naming_the_key(tmp_path, key, fields):
    message = one_line_error(write_spec(tmp_path, **fields))
    assert f"spec.yaml: {key}: " in message


def test_a_refused_spec_writes_nothing_and_exits_non_zero(tmp_path, env):
    marker = Path("/tmp/hpcdl-hardening-marker")
    marker.unlink(missing_ok=True)
    spec = write_spec(
        tmp_path, resources={"partition": LINE_BREAK}, results_dir=str(tmp_path / "out")
    )
    for args in (["--dry-run"], []):
        proc = hpcdl("sweep", str(spec), *args, env=env)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert len(stderr_lines(proc)) == 1 and "resources.partition" in proc.stderr
    assert not (tmp_path / "out").exists() and not marker.exists()


def test_directives_are_checked_when_rendered_too(tmp_path):
    """Values that never passed the spec's validation (a hand-edited manifest, a Resources
    built in code) still cannot end a script's header early."""
    bad = Resources.model_construct(**{**Resources().model_dump(), "partition": "a\ntouch x"})
    job = ScriptJob("array", "s", tmp_path, "j", bad, points_file=tmp_path / "p", log_dir=tmp_path)
    for backend in (Slurm(), PBS("pro")):
        with pytest.raises(HpcdlError, match="directive .* one line"):
            backend.render(job)
    spaced = tmp_path / "my results"
    job = ScriptJob(
        "array", "s", spaced, "j", Resources(), points_file=spaced / "p", log_dir=spaced
    )
    with pytest.raises(HpcdlError, match="results_dir: the sweep's log file .*my results"):
        PBS("pro").render(job)  # qsub gets the same -o on its command line: no quotes there
    assert f'#SBATCH --output="{spaced}/slurm-%A_%a.out"' in Slurm().render(job).splitlines()
    for backend in (PBS("torque"), Local()):  # no -o: the folder is only ever shell-quoted
        assert "exec " in backend.render(job)
    quoted = tmp_path / 'say "hi"'
    job = ScriptJob(
        "array", "s", quoted, "j", Resources(), points_file=quoted / "p", log_dir=quoted
    )
    with pytest.raises(HpcdlError, match="results_dir: .* contains '\"'"):
        Slurm().render(job)


@pytest.mark.slurm
def test_a_sweep_folder_with_spaces_passes_sbatch(slurm_cluster, tmp_path):
    spaced = tmp_path / "my results"
    job = ScriptJob(
        "array", "s", spaced, "j", Resources(), points_file=spaced / "p", log_dir=spaced
    )
    script = tmp_path / "job.sh"
    script.write_text(Slurm().render(job))
    proc = sbatch_test_only(script)
    assert proc.returncode == 0 and "to start at" in proc.stderr, proc.stderr


def test_accepted_odd_values_keep_the_header_and_export_exactly(tmp_path):
    """What the spec accepts: every directive stays in the header (before the first command)
    and every env value arrives in the job exactly as written."""
    spec, _ = load_spec(
        write_spec(
            tmp_path,
            resources={"partition": "gpu", "constraint": "[a100|h100]&ib", "extra": ["-m abe"]},
            env={"NOTE": "a\nb; $(touch x) 'q' \"d\" `e`", "_X2": ""},
            backend="pbs",
        )
    )
    job = ScriptJob(
        "array",
        "t",
        tmp_path,
        "j",
        spec.resources,
        points_file=tmp_path / "p",
        log_dir=tmp_path,
        env=spec.env,
    )
    for backend in BACKENDS:
        text = backend.render(job)
        header = text.split("set -uo pipefail")[0].splitlines()
        assert all(line.startswith("#") or not line for line in header), backend.name
        subprocess.run(["bash", "-n"], input=text, text=True, check=True)
    (tmp_path / "p").write_text(f"{tmp_path}\n")
    text = Local().render(job).replace("exec ", 'printf %s "$NOTE|$_X2"; exit 0 #', 1)
    out = subprocess.run(["bash", "-c", text, "job", "0"], capture_output=True, text=True)
    assert out.stdout == spec.env["NOTE"] + "|" and not (tmp_path / "x").exists()
