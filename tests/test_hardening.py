"""Issue 12: spec values that would land unquoted in job scripts, sweep folders that were moved
or copied, damaged manifests (and how sweep.json is written under kill -9)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hpcdl.backends.base import ScriptJob
from hpcdl.backends.local import Local
from hpcdl.backends.pbs import PBS
from hpcdl.backends.slurm import Slurm
from hpcdl.errors import HpcdlError
from hpcdl.manifest import load_manifest
from hpcdl.spec import Resources, load_spec
from tests.conftest import ROOT, hpcdl, sbatch_test_only, stderr_lines
from tests.sweeps import write_spec as write_tiny_spec
from tests.test_pbs import fake_command

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


# ------------------------------------------------------------- 2. moved and copied folders
def copy_sweep(name: str, to: Path) -> Path:
    target = to / name
    shutil.copytree(RESULTS / name, target)
    return target


def test_committed_results_are_read_where_they_are(tmp_path):
    """The committed manifests were written in another checkout (absolute paths there): every
    run directory, script and points file maps into the folder the manifest is in."""
    for manifest_path in sorted(RESULTS.glob("*/sweep.json")):
        manifest = load_manifest(manifest_path.parent)
        folder = manifest_path.parent.resolve()
        assert manifest.sweep_dir == str(folder)
        for point in manifest.points:
            assert point.run_dir == str(folder / point.id)
            assert Path(point.run_dir, "config.yaml").is_file(), point.run_dir
        for sub in manifest.submissions:
            assert Path(sub.script).parent == folder / "jobs"


@pytest.mark.parametrize("name", sorted(p.parent.name for p in RESULTS.glob("*/sweep.json")))
def test_committed_results_collect_as_committed(tmp_path, name):
    """Collected again in a copy, each committed sweep gives its committed states and numbers."""
    from hpcdl.collect import collect

    copy = copy_sweep(name, tmp_path)
    committed = pd.read_csv(RESULTS / name / "summary.csv").set_index("point")
    collect(copy, out=lambda _msg: None)
    again = pd.read_csv(copy / "summary.csv").set_index("point")
    assert list(again.index) == list(committed.index)
    for column in ("state", "epochs_done", "test_accuracy", "final_val_accuracy"):
        if column in committed:
            pd.testing.assert_series_equal(again[column], committed[column], check_dtype=False)


def test_a_damaged_copy_is_reported_as_the_copy_is(tmp_path, env):
    """Copy a committed sweep, damage one run in the copy: status, collect and report on the
    copy see the damage, the other runs keep the committed numbers, the original is untouched."""
    copy = copy_sweep("mnist_grid", tmp_path)
    committed = pd.read_csv(RESULTS / "mnist_grid" / "summary.csv").set_index("point")
    damaged = sorted(p.name for p in copy.iterdir() if (p / "result.json").exists())[0]
    (copy / damaged / "result.json").unlink()
    (copy / damaged / "metrics.jsonl").write_text('{"epoch": 1, "loss": 0.5}\n{"epo')

    status = hpcdl("status", str(copy), env=env)
    assert status.returncode == 0 and "7 finished" in status.stdout.splitlines()[0]
    assert damaged in status.stdout
    assert hpcdl("collect", str(copy), env=env).returncode == 0
    summary = pd.read_csv(copy / "summary.csv").set_index("point")
    assert summary.loc[damaged, "state"] != "FINISHED"
    assert summary.loc[damaged, "epochs_done"] == 1
    others = summary.index.drop(damaged)
    assert (summary.loc[others, "state"] == "FINISHED").all()
    pd.testing.assert_series_equal(
        summary.loc[others, "test_accuracy"], committed.loc[others, "test_accuracy"]
    )
    report = hpcdl("report", str(copy), "--no-collect", env=env)
    assert report.returncode == 0, report.stderr
    assert damaged in (copy / "report.md").read_text()
    assert (RESULTS / "mnist_grid" / damaged / "result.json").exists()


def test_a_moved_folder_whose_original_is_gone(tmp_path):
    """An old manifest made where nothing exists any more, and a new (relative) one after a
    move: both read from where they are."""
    copy = copy_sweep("mnist_baseline", tmp_path / "a")
    raw = json.loads((copy / "sweep.json").read_text())
    old = raw["sweep_dir"]
    text = (copy / "sweep.json").read_text().replace(old, "/gone/checkout/results/mnist_baseline")
    (copy / "sweep.json").write_text(text)
    manifest = load_manifest(copy)
    assert all(Path(p.run_dir, "result.json").exists() for p in manifest.points)

    manifest.save()  # the current format: paths relative to the folder
    stored = json.loads((copy / "sweep.json").read_text())
    assert all(not Path(p["run_dir"]).is_absolute() for p in stored["points"])
    assert stored["submissions"][0]["script"] == "jobs/a000.sh"
    moved = tmp_path / "b" / "elsewhere"
    moved.parent.mkdir()
    copy.rename(moved)
    again = load_manifest(moved)
    assert [p.run_dir for p in again.points] == [str(moved.resolve() / p.id) for p in again.points]
    assert again.submissions[0].points_file == str(moved.resolve() / "jobs" / "a000.points")


@pytest.mark.slow
def test_resume_on_a_moved_folder_trains_there(tmp_path, env):
    """A real local sweep, moved; one run loses its result: resume trains it in the moved
    folder (the run's config.yaml still names the old place) and recreates nothing there."""
    spec = write_tiny_spec(tmp_path, "moved", {"train.lr": [0.001]}, "local")
    made = hpcdl("sweep", str(spec), env=env)
    assert made.returncode == 0, made.stderr
    original = tmp_path / "results" / "moved"
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    original.rename(moved)
    (point,) = [p for p in moved.iterdir() if (p / "result.json").exists()]
    (point / "result.json").unlink()
    shutil.rmtree(point / "checkpoints")
    (point / "metrics.jsonl").unlink()
    resumed = hpcdl("resume", str(moved), env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (point / "result.json").exists() and not original.exists()
    assert "1 finished" in hpcdl("status", str(moved), env=env).stdout


# ------------------------------------------------------------- 3. damaged manifests
DAMAGES = {
    "truncated": lambda text: text[: len(text) // 2],
    "empty": lambda text: "",
    "not JSON": lambda text: "sweep: yes\n",
    "binary": lambda text: "\udcff\x00",
    "a list": lambda text: "[1, 2]",
    "no points": lambda text: json.dumps(
        {k: v for k, v in json.loads(text).items() if k != "points"}
    ),
    "a point without id": lambda text: text.replace('"id":', '"ident":', 1),
    "bad spec": lambda text: text.replace('"nodes": 1', '"nodes": "many"', 1),
}


def damage(folder: Path, how: str) -> None:
    path = folder / "sweep.json"
    text = DAMAGES[how](path.read_text())
    path.write_bytes(text.encode("utf-8", "surrogateescape"))


@pytest.mark.parametrize("how", sorted(DAMAGES))
def test_a_damaged_manifest_is_one_line_naming_the_file(tmp_path, how):
    folder = copy_sweep("mnist_baseline", tmp_path)
    damage(folder, how)
    with pytest.raises(HpcdlError) as info:
        load_manifest(folder)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{folder / 'sweep.json'}: ")


def test_every_command_on_a_damaged_manifest_fails_cleanly(tmp_path, env):
    folder = copy_sweep("mnist_baseline", tmp_path)
    damage(folder, "truncated")
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    for command in ("status", "collect", "report", "resume", "cancel"):
        proc = hpcdl(command, str(folder), env=env)
        assert proc.returncode == 2, (command, proc.stderr)
        assert "Traceback" not in proc.stderr
        (line,) = stderr_lines(proc)
        assert "sweep.json: damaged sweep manifest (invalid JSON" in line, (command, line)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


def test_settings_checked_outside_a_loader_are_one_line_too(tmp_path, env):
    """A hand-made manifest (benchmarks/synthetic.py) has no training config in its spec: it
    collects, but `resume` must validate the spec as a whole, which fails on one line."""
    from benchmarks.synthetic import make_sweep

    folder = make_sweep(tmp_path, 4, epochs=2, fail_every=2)
    assert hpcdl("collect", str(folder), env=env).returncode == 0
    proc = hpcdl("resume", str(folder), env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = stderr_lines(proc)
    assert "give either base" in line


SAVER = """
import sys, random
from hpcdl.manifest import load_manifest, Submission
manifest = load_manifest(sys.argv[1])
print("ready", flush=True)
n = 0
while True:
    n += 1
    count = random.randint(0, 300)  # the file grows and shrinks
    manifest.submissions = [Submission(f"a{i:03d}", "array", "j", "s") for i in range(count)]
    manifest.save()
"""

CLAIMER = """
import os, sys
from hpcdl.manifest import load_manifest
manifest = load_manifest(sys.argv[1])
print("ready", flush=True)
while True:
    os.unlink(manifest.path)
    manifest.claim()
"""


@pytest.mark.parametrize("program", [SAVER, CLAIMER], ids=["save", "claim"])
def test_sweep_json_survives_kill_9_at_any_moment(tmp_path, program, env):
    """A process writes the manifest in a loop and is killed with SIGKILL at random moments:
    the file is always complete (save) or complete or absent (claim, which removes it first)."""
    folder = copy_sweep("mnist_grid", tmp_path)
    good = (folder / "sweep.json").read_bytes()
    rng = random.Random(12)
    deadline = time.monotonic() + 6
    kills = 0
    while time.monotonic() < deadline:
        proc = subprocess.Popen(
            [sys.executable, "-c", program, str(folder)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        if program is CLAIMER and not (folder / "sweep.json").exists():
            (folder / "sweep.json").write_bytes(good)  # killed between unlink and claim
            continue
        load_manifest(folder)  # raises if the kill left a partial file
        for leftover in folder.glob(".sweep.json.*.tmp"):
            leftover.unlink()  # a killed writer's temporary file, never read
    assert kills >= 5


def test_a_submission_left_planned_is_submitted_from_where_the_folder_is_now(tmp_path, monkeypatch):
    """An interrupted `hpcdl sweep` left its second array planned; the folder is then moved:
    resume writes that array's script and points file again, naming the moved run directories."""
    from hpcdl import sweep

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    fake_command(bin_dir, "scontrol", 'echo "MaxArraySize = 1001"')
    fake_command(bin_dir, "sacct", "true")
    fake_command(bin_dir, "squeue", "true")
    calls = tmp_path / "calls"
    fake_command(  # the first sbatch works, the second fails (as if the submitter died)
        bin_dir,
        "sbatch",
        f'echo "${{@: -1}}" >> {calls}; n=$(wc -l < {calls}); '
        f'[ "$n" -ge 2 ] && [ -e {calls}.fail ] && '
        '{ echo "sbatch: error: Socket timed out" >&2; exit 1; }; echo "$n;vm"',
    )
    spec = tmp_path / "s.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "moved",
                "program": {"command": "true", "workdir": str(tmp_path)},
                "grid": {"x": [1, 2]},
                "backend": "slurm",
                "scheduler": {"max_array_size": 1},
                "results_dir": str(tmp_path / "results"),
                "collect": False,
            }
        )
    )
    Path(f"{calls}.fail").touch()
    with pytest.raises(HpcdlError, match="Socket timed out"):
        sweep.create(spec, out=lambda _line: None)
    moved = tmp_path / "elsewhere" / "moved"
    shutil.move(tmp_path / "results" / "moved", moved)
    calls.write_text("")
    Path(f"{calls}.fail").unlink()
    manifest = load_manifest(moved)
    sweep.resume(manifest, out=lambda _line: None)
    script = calls.read_text().split()[0]  # then the point nobody knows of (UNKNOWN) again
    assert script == str(moved / "jobs" / "a001.sh")
    assert str(moved / "jobs" / "a001.points") in Path(script).read_text()
    (run_dir,) = Path(moved / "jobs" / "a001.points").read_text().split()
    assert Path(run_dir).parent == moved


def test_status_of_a_spec_file_says_to_give_the_results_folder(env):
    """A common slip: `hpcdl status jobs/x.yaml` instead of `hpcdl status results/x`."""
    proc = hpcdl("status", str(ROOT / "jobs" / "mnist_grid.yaml"), env=env)
    assert proc.returncode == 2
    assert "a spec, not a sweep; give the sweep's results folder" in proc.stderr
