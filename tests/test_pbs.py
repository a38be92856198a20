"""PBS Pro as it really behaves (issue 16): status from a real OpenPBS 23.06 server's output, and
job scripts run in a real PBS subjob's environment.

No PBS server can run here (none is packaged for Debian or on PyPI), so `qsub`, `qstat` and `qdel`
are small stand-ins on PATH that replay the real server's answers captured in tests/data/openpbs
(byte for byte, exit codes included). Everything else is real: the manifest, run directories, the
CLI, the rendered job script under bash, Open MPI's start-up through mpi4py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hpcdl import cli, sweep
from hpcdl.backends import base
from hpcdl.backends.base import ScriptJob
from hpcdl.backends.local import Local
from hpcdl.backends.pbs import PBS, parse_qstat_f, qstat_blocks
from hpcdl.backends.slurm import Slurm
from hpcdl.errors import HpcdlError
from hpcdl.manifest import load_manifest
from hpcdl.spec import Resources
from tests.conftest import MPI_ENV
from tests.sweeps import write_spec

DATA = Path(__file__).parent / "data" / "openpbs"
LONG_NAME = (
    "pbsref_array_job_with_a_deliberately_long_name_to_show_qstat_f_wrapping_of_Job_Name_0123456789"
)


def capture(name: str) -> str:
    """A capture without its first line (`# command: ... | situation: ...`)."""
    return (DATA / name).read_text().split("\n", 1)[1]


def error_capture(name: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of an err_*.txt capture."""
    text = (DATA / name).read_text()
    code = int(re.search(r"^# exit_code: (\d+)$", text, re.M).group(1))
    out = re.search(r"^# ---- stdout.*?----\n(.*?)^# ---- stderr", text, re.M | re.S).group(1)
    err = re.search(r"^# ---- stderr.*?----\n(.*?)^# ---- end", text, re.M | re.S).group(1)
    return code, out, err


class FakePBS:
    """qsub/qstat/qdel on PATH that log their arguments; qstat answers what it is given."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.bin = folder / "bin"
        self.bin.mkdir(parents=True)
        for cmd, body in {
            "qsub": 'case " $* " in *" -J "*) cat "$D/array_id";; *) echo 27.vm;; esac',
            "qstat": 'cat "$D/out"; cat "$D/err" >&2; exit "$(cat "$D/code")"',
            "qdel": "exit 0",
        }.items():
            (self.bin / cmd).write_text(
                f'#!/bin/bash\nD={folder}\necho "$*" >> "$D/{cmd}.log"\n{body}\n'
            )
            (self.bin / cmd).chmod(0o755)
        self.array_id("26[].vm")
        self.answer("")

    def array_id(self, job_id: str) -> None:
        (self.folder / "array_id").write_text(job_id + "\n")

    def answer(self, out: str, err: str = "", code: int = 0) -> None:
        for name, text in (("out", out), ("err", err), ("code", str(code))):
            (self.folder / name).write_text(text)

    def calls(self, cmd: str) -> list[str]:
        log = self.folder / f"{cmd}.log"
        return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def pbs(tmp_path, monkeypatch) -> FakePBS:
    fake = FakePBS(tmp_path / "fake-pbs")
    monkeypatch.setenv("PATH", f"{fake.bin}{os.pathsep}{os.environ['PATH']}")
    return fake


def pbs_sweep(folder: Path, name: str = "pbs4") -> Path:
    """A 4-point PBS Pro sweep, submitted (to the stand-in qsub) as one array + a collect job."""
    spec = write_spec(
        folder, name, {"train.lr": [0.001, 0.002, 0.003, 0.004]}, "pbs", max_concurrent=2
    )
    sweep.create(spec, out=lambda _msg: None)
    return folder / "results" / name


# ---------------------------------------------------------------- reading qstat -f
def test_wrapped_qstat_lines_are_joined():
    """`qstat -f` wraps at 80 columns onto tab-indented lines, also inside words."""
    text = capture("snapD_qstat_f_x_t.txt")
    assert "\tg_name_to_show" in text  # the capture really is wrapped
    array = qstat_blocks(text)["26[].vm"]
    assert array["Job_Name"] == LONG_NAME
    assert array["Output_Path"] == f"vm:/scr/pbsref/out/{LONG_NAME}.^array_index^.out"
    assert array["Submit_arguments"].endswith(f"{LONG_NAME}.^array_index^.out /scr/pbsref/array.sh")
    assert array["max_run_subjobs"] == "2"


@pytest.mark.parametrize(
    "name, states",
    [
        ("snapA_qstat_f_x_t.txt", "PENDING PENDING PENDING PENDING"),
        ("snapB_qstat_f_x_t.txt", "RUNNING RUNNING PENDING PENDING"),
        ("snapC_qstat_f_x_t.txt", "COMPLETED FAILED RUNNING RUNNING"),
        ("snapD_qstat_f_x_t.txt", "COMPLETED FAILED TIMEOUT CANCELLED"),
    ],
)
def test_each_subjob_has_its_own_record(name, states):
    records = parse_qstat_f(capture(name))
    assert " ".join(records[f"26_{i}"].state for i in range(4)) == states
    assert records["26[1].vm"] is records["26_1"]
    assert records["25"].state in ("RUNNING", "COMPLETED")  # the plain job


def test_walltime_kill_and_qdel_are_read_as_timeout_and_cancelled():
    c2 = parse_qstat_f(capture("snapC2_qstat_f_x_subjob3_just_after_qdel.txt"))["26_3"]
    c3 = parse_qstat_f(capture("snapC3_qstat_f_x_subjob2_just_after_walltime_kill.txt"))["26_2"]
    assert (c2.state, c2.exit_code) == ("CANCELLED", 0)  # root's job: Exit_status 0, substate 91
    assert (c3.state, c3.exit_code) == ("TIMEOUT", -29)
    sig = parse_qstat_f(capture("sig_jobs_final_qstat_f_x.txt"))
    assert [sig[j].state for j in ("28", "29", "30", "31")] == [
        "TIMEOUT",
        "CANCELLED",
        "TIMEOUT",
        "CANCELLED",
    ]
    assert sig["31"].exit_code == 128 + 15  # PBS's 271: killed by SIGTERM
    nonroot = parse_qstat_f(capture("nonroot_snapD_qstat_f_x_t.txt"))
    # qdel'ed 0 s after its start with a 5 s walltime: MoM killed it for walltime first
    assert [nonroot[f"32_{i}"].state for i in range(4)] == [
        "COMPLETED",
        "FAILED",
        "TIMEOUT",
        "TIMEOUT",
    ]
    snap_c = parse_qstat_f(capture("snapC_qstat_f_x_t.txt"))
    assert (
        snap_c["26"].exit_code == 1 and snap_c["26_1"].exit_code == 3
    )  # the point's, not the array's
    assert snap_c["26_0"].elapsed_seconds == 4 and snap_c["26_0"].node == "vm"
    assert snap_c["26_0"].max_rss == "0K" and snap_c["26_0"].end == "2026-11-22T22:36:03"


# ---------------------------------------------------------------- hpcdl status / resume
@pytest.mark.parametrize(
    "name, started, finished, want",
    [
        ("snapA_qstat_f_x_t.txt", [], [], ["PENDING"] * 4),
        ("snapB_qstat_f_x_t.txt", [0, 1], [], ["RUNNING", "RUNNING", "PENDING", "PENDING"]),
        ("snapC_qstat_f_x_t.txt", [0, 1, 2, 3], [0], ["FINISHED", "FAILED", "RUNNING", "RUNNING"]),
        (
            "snapD_qstat_f_x_t.txt",
            [0, 1, 2, 3],
            [0],
            ["FINISHED", "FAILED", "TIMEOUT", "CANCELLED"],
        ),
    ],
)
def test_status_shows_each_points_own_state(pbs, tmp_path, name, started, finished, want):
    sweep_dir = pbs_sweep(tmp_path)
    assert (
        pbs.calls("qsub")[0].startswith("-N hpcdl-pbs4-") and " -J 0-3%2 " in pbs.calls("qsub")[0]
    )
    manifest = load_manifest(sweep_dir)
    for i, entry in enumerate(manifest.points):
        if i in started:
            (Path(entry.run_dir) / "job.out").write_text("== started\n")
        if i in finished:
            (Path(entry.run_dir) / "result.json").write_text("{}")
    pbs.answer(capture(name))
    points = sweep.statuses(manifest)
    assert [p.state for p in points] == want
    assert pbs.calls("qstat") == ["-f -x -t 26[].vm"]  # one call for the whole sweep
    reasons = {p.state: p.reason for p in points}
    if name.startswith("snapD"):
        assert reasons["FAILED"] == "exit 3"
        assert reasons["TIMEOUT"] == "time limit reached"
        assert reasons["CANCELLED"] == "cancelled"
        assert sweep.resume(manifest, out=lambda _m: None)[0].points == [p.id for p in points[1:]]


def test_unreachable_server_is_an_error_and_resume_submits_nothing(pbs, tmp_path, capsys):
    sweep_dir = pbs_sweep(tmp_path)
    submitted = pbs.calls("qsub")
    code, out, err = error_capture("err_qstat_unreachable_server_env_jobid.txt")
    pbs.answer(out, err, code)
    capsys.readouterr()
    for command in ("status", "resume"):
        assert cli.main([command, str(sweep_dir)]) != 0
        err = capsys.readouterr().err.strip()
        assert err == (
            "hpcdl: error: qstat failed: Unknown Host. "
            "qstat: cannot connect to server nosuchhost.invalid (errno=15008)"
        )
    assert pbs.calls("qsub") == submitted
    manifest = load_manifest(sweep_dir)  # an interrupted submission: find_jobs must not guess
    manifest.submissions[0].state, manifest.submissions[0].job_id = "planned", None
    manifest.save()
    with pytest.raises(HpcdlError, match="cannot connect to server"):
        sweep.resume(manifest, out=lambda _m: None)
    assert pbs.calls("qsub") == submitted


def test_unknown_jobs_have_no_record_and_known_ones_still_count(pbs, tmp_path):
    """A job that left the server's history is 'no record' (exit 153), not a failed query."""
    sweep_dir = pbs_sweep(tmp_path)
    code, out, err = error_capture("err_qstat_unknown_job_x.txt")
    pbs.answer(out, err, code)
    assert {p.state for p in sweep.statuses(load_manifest(sweep_dir))} == {"UNKNOWN"}
    code, out, err = error_capture("err_qstat_mixed_known_unknown.txt")
    pbs.answer(capture("snapB_qstat_f_x_t.txt"), err, code)  # the same answer, in -f form
    assert sweep.statuses(load_manifest(sweep_dir))[2].state == "PENDING"
    code, out, err = error_capture("err_qdel_finished_job.txt")
    assert code == 35 and "Job has finished" in err
    PBS("pro").cancel(["25.vm"])  # qdel of a finished job is no error


def pbs_wrapped(line: str) -> str:
    """How qstat -f prints a long attribute: 79 columns, then a tab and 71 characters a line."""
    lines = [line[:79]]
    rest = line[79:]
    while rest:
        lines.append("\t" + rest[:71])
        rest = rest[71:]
    return "\n".join(lines)


def test_interrupted_submission_with_a_long_name_is_found_not_submitted_again(pbs, tmp_path):
    name = "s" * 66  # job name hpcdl-<name>-<uid>-a000: 84 characters
    sweep_dir = pbs_sweep(tmp_path, name)
    manifest = load_manifest(sweep_dir)
    array = manifest.submissions[0]
    assert len(array.job_name) == 84
    array.state, array.job_id = "planned", None  # what a crash right after qsub leaves
    manifest.save()
    listing = capture("snapA_qstat_f_x_t.txt").replace(
        pbs_wrapped(f"    Job_Name = {LONG_NAME}"), pbs_wrapped(f"    Job_Name = {array.job_name}")
    )
    assert f"\t{array.job_name[64:]}\n" in listing  # wrapped as the server would
    pbs.answer(listing)
    submitted = len(pbs.calls("qsub"))
    sweep.resume(manifest, out=lambda _m: None)
    assert load_manifest(sweep_dir).submissions[0].job_id == "26[].vm"
    assert not any(" -J " in c for c in pbs.calls("qsub")[submitted:])
    # the real capture's 94-character name
    pbs.answer(capture("snapD_qstat_f_x_t.txt"))
    assert PBS("pro").find_jobs([LONG_NAME], "") == {LONG_NAME: "26[].vm"}


# ---------------------------------------------------------------- the job script in a subjob
def subjob_environment(home: Path, tmpdir: Path) -> dict[str, str]:
    """The environment PBS gave array subjob 26[2].vm (captured), with this machine's PATH and
    HOME and the same kind of TMPDIR; no HPCDL_* variables."""
    env = dict(
        line.split("=", 1) for line in capture("env_array_subjob_root.txt").splitlines() if line
    )
    assert env["TMPDIR"] == "/var/tmp/pbs.26[2].vm" and not any(k.startswith("HPCDL_") for k in env)
    return {**env, "PATH": "/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(tmpdir), **MPI_ENV}


def test_job_script_starts_mpi_and_sees_hpcdl_settings_in_a_pbs_subjob(tmp_path, monkeypatch):
    """Issue 16, defects 1, 2 and 7, with real Open MPI: the subjob's TMPDIR has brackets, which
    breaks a 1-rank MPI start; the submitting shell's HPCDL_* settings must reach the job."""
    for key in [k for k in os.environ if k.startswith("HPCDL_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HPCDL_DATA_DIR", str(tmp_path / "my data"))
    pbs_tmp = tmp_path / "var" / "pbs.26[2].vm"
    pbs_tmp.mkdir(parents=True)
    run_dirs = [tmp_path / f"point{i}" for i in range(4)]
    for d in run_dirs:
        d.mkdir()
    points = tmp_path / "a000.points"
    points.write_text("".join(f"{d}\n" for d in run_dirs))
    check = (
        "import os; from mpi4py import MPI; "
        "print(MPI.COMM_WORLD.size, os.environ['TMPDIR'], os.environ['HPCDL_DATA_DIR'])"
    )
    template = tmp_path / "probe.sh.j2"  # the default script, training replaced by the probe
    template.write_text(
        '{% extends "hpcdl/job.sh.j2" %}{% block run %}'
        f'exec {{{{ python|q }}}} -c "{check}" >> job.out 2>&1{{% endblock %}}'
    )
    job = ScriptJob(
        kind="array",
        sweep="s",
        sweep_dir=tmp_path,
        job_name="j",
        resources=Resources(),
        count=4,
        points_file=points,
        log_dir=tmp_path,
    )
    script = tmp_path / "a000.sh"
    script.write_text(PBS("pro").render(job, str(template)))
    assert f"export HPCDL_DATA_DIR='{tmp_path}/my data'" in script.read_text()
    env = subjob_environment(tmp_path, pbs_tmp)
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    out = (run_dirs[2] / "job.out").read_text()
    assert proc.returncode == 0, out
    size, tmpdir, data_dir = out.splitlines()[-1].split(" ", 2)
    assert size == "1" and "[" not in tmpdir and data_dir == f"{tmp_path}/my data"
    assert os.path.realpath(tmpdir) == str(pbs_tmp)  # still PBS's folder, which PBS cleans up

    # without the script, the same start fails; status names the reason
    bare = subprocess.run(
        [sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=120
    )
    assert bare.returncode != 0
    (run_dirs[1] / "job.out").write_text(bare.stdout + bare.stderr)
    record = base.JobRecord(state="FAILED", exit_code=1)
    assert sweep.point_state(run_dirs[1], True, record) == (
        "FAILED",
        "exit 1: An error occurred in MPI_Init_thread",
    )


@pytest.mark.parametrize(
    "backend",
    [Slurm(), Local(), PBS("pro"), PBS("torque")],
    ids=["slurm", "local", "pro", "torque"],
)
def test_every_backend_records_the_submitting_shells_settings(backend, monkeypatch):
    for key in [k for k in os.environ if k.startswith("HPCDL_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HPCDL_DATA_DIR", "/data dir")
    monkeypatch.setenv("HPCDL_CACHE_DIR", "/shell cache")
    monkeypatch.setenv("HPCDL_REQUEUE_MAX", "9")  # the script's own, never copied
    for kind in ("array", "collect"):
        job = ScriptJob(
            kind=kind,
            sweep="s",
            sweep_dir=Path("/r"),
            job_name="j",
            resources=Resources(),
            points_file=Path("/r/p"),
            log_dir=Path("/r"),
            env={"HPCDL_CACHE_DIR": "/spec cache"},  # the spec's env wins
        )
        lines = backend.render(job).splitlines()
        exports = [x for x in lines if x.startswith("export HPCDL_") and "REQUEUE" not in x]
        assert exports == [
            "export HPCDL_CACHE_DIR='/spec cache'",
            "export HPCDL_DATA_DIR='/data dir'",
        ]
        assert "export HPCDL_REQUEUE_MAX=9" not in lines


# ---------------------------------------------------------------- the same on the SLURM path
def fake_command(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)


def test_slurm_query_fails_loudly(tmp_path, monkeypatch):
    """sacct/squeue that fail or hang are errors, never "no record". Stand-ins: the shared
    test cluster's database and controller must not be stopped."""
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    fake_command(
        tmp_path, "sacct", 'echo "sacct: error: Problem talking to the database" >&2; exit 1'
    )
    with pytest.raises(HpcdlError, match="sacct failed: .*Problem talking to the database"):
        Slurm().query(["7"])
    with pytest.raises(HpcdlError, match="sacct failed"):
        Slurm().find_jobs(["j"], "2026-01-01T00:00:00")
    fake_command(tmp_path, "sacct", 'echo "Slurm accounting storage is disabled" >&2; exit 1')
    fake_command(
        tmp_path,
        "squeue",
        'echo "slurm_load_jobs error: Unable to contact slurm controller" >&2; exit 1',
    )
    with pytest.raises(HpcdlError, match="squeue failed: .*Unable to contact"):
        Slurm().query(["7"])
    fake_command(tmp_path, "squeue", "sleep 5")
    monkeypatch.setattr(base, "SCHEDULER_TIMEOUT", 1)
    with pytest.raises(HpcdlError, match="squeue did not answer within 1 s"):
        Slurm().query(["7"])


@pytest.mark.slurm
def test_slurm_job_unknown_to_squeue_has_no_record(slurm_cluster, tmp_path, monkeypatch):
    """Without accounting, a job slurmctld has forgotten is 'no record' (real squeue)."""
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    fake_command(tmp_path, "sacct", 'echo "Slurm accounting storage is disabled" >&2; exit 1')
    assert Slurm().query(["999999"]) == {}
