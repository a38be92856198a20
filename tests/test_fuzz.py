"""Property-based tests (hypothesis) over everything that reads user input or files a run left:
the spec loader, the grid expander, the run-directory readers and sweep.json. For any input,
a result or a one-line HpcdlError, never another exception; every script rendered from an
accepted spec passes `bash -n` (and, with the test cluster up, `sbatch --test-only`)."""

from __future__ import annotations

import json
import os
import shutil
import string
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpcdl import logparse, rundir
from hpcdl.backends.base import ScriptJob
from hpcdl.backends.local import Local
from hpcdl.backends.pbs import PBS
from hpcdl.backends.slurm import Slurm
from hpcdl.errors import HpcdlError
from hpcdl.grid import expand
from hpcdl.manifest import load_manifest
from hpcdl.spec import SweepSpec, load_spec
from hpcdl.states import last_error_line, point_state
from hpcdl.sweep import spec_of
from tests.conftest import ROOT, sbatch_test_only

EXAMPLES = int(os.environ.get("HPCDL_FUZZ_EXAMPLES", "80"))  # 2000 for a longer hunt
FAST = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
BASE = {"model": {"name": "mnist_cnn"}, "data": {"name": "mnist"}, "train": {"epochs": 1}}
SITE_TEMPLATE = str(ROOT / "slurm" / "gpu_site.sh.j2")

# text users type, and the characters that break scripts: line breaks, quotes, $, ;, NUL, ...
nasty = st.text(
    alphabet=st.sampled_from(list(string.printable) + ["\x00", "\u2028", "é", "\x1b", "\x85"]),
    max_size=12,
)
words = st.sampled_from(["gpu", "debug", "a100", "proj", "normal", "gpu:2", "[a|b]&c"]) | nasty
scalars = st.none() | st.booleans() | st.integers(-5, 200) | st.floats(allow_nan=True) | nasty
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(nasty, inner, max_size=3),
    max_leaves=8,
)
dotted = st.sampled_from(
    ["train.lr", "train.batch_size", "model.dropout", "train.seed", "data.train_subset", "x.y"]
)
ranges = st.fixed_dictionaries(
    {"start": st.floats(-2, 2) | values, "stop": st.floats(-2, 2)},
    optional={"step": st.floats(-1, 1) | values, "num": st.integers(-1, 6), "log": st.booleans()},
)
resources = st.fixed_dictionaries(
    {},
    optional={
        "nodes": st.integers(0, 3) | values,
        "gpus_per_node": st.integers(0, 3),
        "cpus_per_task": st.integers(0, 4),
        "mem": st.sampled_from(["1G", "500M", "2gb", "4G\n"]) | nasty,
        "time": st.sampled_from(["10", "00:05:00", "1-00", "0", "5:00\n"]) | nasty,
        "partition": words,
        "account": words,
        "qos": words,
        "constraint": words,
        "gres": words,
        "extra": st.lists(st.sampled_from(["--mail-type=END", "-m abe"]) | nasty, max_size=2),
    },
)
sensible = {  # values the training config accepts, so that many points get validated
    "train.lr": st.floats(1e-5, 1.0),
    "train.batch_size": st.integers(1, 256),
    "model.dropout": st.floats(0.0, 0.9),
    "train.seed": st.integers(0, 9),
    "data.train_subset": st.integers(1, 1000) | st.none(),
}
sensible_grid = st.dictionaries(
    st.sampled_from(sorted(sensible)), st.just(None), min_size=1, max_size=2
).flatmap(
    lambda keys: st.fixed_dictionaries(
        {k: st.lists(sensible[k], min_size=1, max_size=3) | ranges for k in keys}
    )
)
good_specs = st.fixed_dictionaries(
    {"name": st.sampled_from(["t", "sweep_1", "a.b-c"]), "base": st.just(BASE)},
    optional={
        "fixed": st.dictionaries(st.sampled_from(sorted(sensible)), values, max_size=1),
        "grid": sensible_grid,
        "zip": st.lists(sensible_grid, max_size=1),
        "seeds": st.lists(st.integers(0, 3), min_size=1, max_size=3),
        "include": st.lists(sensible_grid, max_size=2),
        "exclude": st.lists(sensible_grid, max_size=1),
        "resources": resources,
        "backend": st.sampled_from(["local", "slurm", "pbs"]),
        "env": st.dictionaries(st.sampled_from(["HPCDL_X", "A1", "_b"]) | nasty, nasty),
    },
)
wild_specs = st.fixed_dictionaries(
    {"name": st.sampled_from(["t", "sweep_1", "a.b-c"]) | nasty},
    optional={
        "base": st.just(BASE) | values,
        "config": st.sampled_from(["missing.yaml", "../x\x00.yaml"]) | nasty,
        "fixed": st.dictionaries(dotted, values, max_size=2),
        "grid": st.dictionaries(dotted, st.lists(values, max_size=3) | ranges, max_size=2),
        "zip": st.lists(st.dictionaries(dotted, st.lists(values, max_size=3), max_size=2)),
        "seeds": st.lists(st.integers(0, 3) | values, max_size=3),
        "include": st.lists(st.dictionaries(dotted, values, max_size=2), max_size=2),
        "exclude": st.lists(st.dictionaries(dotted, values, max_size=2), max_size=2),
        "resources": resources | values,
        "backend": st.sampled_from(["local", "slurm", "pbs", "lsf"]),
        "max_concurrent": st.integers(-1, 4),
        "results_dir": st.sampled_from(["results", "my results"]) | nasty,
        "env": st.dictionaries(st.sampled_from(["HPCDL_X", "A1", "_b"]) | nasty, nasty),
        "scheduler": st.fixed_dictionaries(
            {}, optional={"flavor": st.sampled_from(["pro", "torque"]), "template": nasty}
        ),
    },
)
specs = good_specs | wild_specs


def one_line(err: HpcdlError) -> None:
    assert str(err) and "\n" not in str(err), repr(str(err))


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def scratch():
    folder = Path(tempfile.mkdtemp(prefix="hpcdl-fuzz-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------- spec loader and grid expander
@FAST
@given(spec=specs)
def test_spec_loader_and_expander_answer_or_say_what_is_wrong(scratch, spec):
    path = write(scratch, "spec.yaml", yaml.safe_dump(spec, allow_unicode=True).encode())
    try:
        loaded, base = load_spec(path)
    except HpcdlError as err:
        one_line(err)
        return
    if loaded.point_count() > 24:  # validating thousands of points proves nothing more here
        return
    try:
        points = expand(loaded, base, str(path))
    except HpcdlError as err:
        one_line(err)
        return
    assert points and len({p.id for p in points}) == len(points)


@FAST
@given(text=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_spec_loader_on_any_file_content(scratch, text):
    try:
        load_spec(write(scratch, "raw.yaml", text))
    except HpcdlError as err:
        one_line(err)


# ------------------------------------------------------------- run-directory readers
json_lines = st.lists(
    st.one_of(
        values.map(lambda v: json.dumps(v, allow_nan=True)),
        st.fixed_dictionaries({"epoch": values, "loss": values}).map(json.dumps),
        st.text(max_size=30),
    ),
    max_size=6,
).map(lambda lines: "\n".join(lines).encode())
file_bytes = st.binary(max_size=300) | json_lines
failures = st.fixed_dictionaries({}, optional={"reason": values, "error": values}).map(
    lambda v: json.dumps(v).encode()
)


@FAST
@given(data=file_bytes, last_epoch=st.integers(-1, 5))
def test_metrics_reader_keeps_epoch_records_and_reports_the_rest(scratch, data, last_epoch):
    run = scratch / "metrics-run"
    run.mkdir(exist_ok=True)
    write(run, rundir.METRICS, data)
    records, problems = rundir.read_metrics(run)
    assert all(isinstance(r, dict) and isinstance(r.get("epoch", 0), int) for r in records)
    assert all(isinstance(p, str) and "\n" not in p for p in problems)
    rundir.truncate_metrics(run, last_epoch)
    kept, _ = rundir.read_metrics(run)
    assert all(r.get("epoch", 0) <= last_epoch for r in kept)


@FAST
@given(data=file_bytes | values.map(lambda v: json.dumps(v).encode()) | failures)
def test_json_reader_gives_an_object_or_one_line(scratch, data):
    for name in (rundir.RESULT, rundir.FAILURE):
        try:
            assert isinstance(rundir.read_json(write(scratch, name, data)), dict)
        except HpcdlError as err:
            assert isinstance(err, ValueError)  # callers that skip damaged files catch this
            one_line(err)


@FAST
@given(
    job_out=file_bytes,
    failure=file_bytes | values.map(lambda v: json.dumps(v).encode()) | failures,
    result=st.booleans(),
    state=st.sampled_from(["COMPLETED", "FAILED", "TIMEOUT", "RUNNING", "OUT_OF_MEMORY", "X"]),
)
def test_point_state_from_any_run_directory(scratch, job_out, failure, result, state):
    from hpcdl.backends.base import JobRecord

    run = scratch / "state-run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    write(run, "job.out", job_out)
    write(run, rundir.FAILURE, failure)
    if result:
        write(run, rundir.RESULT, b"{}")
    assert isinstance(logparse.parse_file(run / "job.out"), list)
    assert isinstance(last_error_line(run), str)
    got, reason = point_state(run, True, JobRecord(state=state, exit_code=1))
    assert isinstance(reason, str) and (got == "FINISHED") == result


@FAST
@given(metrics=file_bytes, result=file_bytes | values.map(lambda v: json.dumps(v).encode()))
def test_collect_reads_any_run_directory_into_one_row(scratch, metrics, result):
    from hpcdl.backends.base import JobRecord
    from hpcdl.collect import point_row
    from hpcdl.manifest import PointEntry
    from hpcdl.spec import Resources
    from hpcdl.sweep import PointStatus

    run = scratch / "collect-run"
    run.mkdir(exist_ok=True)
    write(run, rundir.METRICS, metrics)
    write(run, rundir.RESULT, result)
    entry = PointEntry("p", {"train.lr": 0.1}, str(run))
    status = PointStatus("p", "FINISHED", "", "1_0", str(run), "lr", JobRecord("COMPLETED", 0))
    row, curves, problems = point_row(entry, status, Resources())
    assert row["point"] == "p" and all(c["point"] == "p" for c in curves)
    assert all("\n" not in p for p in problems)


# ------------------------------------------------------------- sweep.json
@pytest.fixture(scope="module")
def manifest_text() -> str:
    return (ROOT / "results" / "mnist_baseline" / "sweep.json").read_text()


def mutate(node, path: list, new):
    """`node` with the value at `path` replaced by `new` (or removed when new is ...)."""
    if not path:
        return new
    key, rest = path[0], path[1:]
    if isinstance(node, dict) and node:
        key = sorted(node)[key % len(node)]
    elif isinstance(node, list) and node:
        key = key % len(node)
    else:
        return new
    copy = node.copy()
    changed = mutate(node[key], rest, new)
    if changed is ...:
        del copy[key]
    else:
        copy[key] = changed
    return copy


@FAST
@given(
    where=st.lists(st.integers(0, 50), min_size=1, max_size=4),
    new=values | st.just(...),
    cut=st.none() | st.integers(0, 5000),
)
def test_manifest_loader_on_damaged_manifests(scratch, manifest_text, where, new, cut):
    folder = scratch / "sweep"
    folder.mkdir(exist_ok=True)
    damaged = json.dumps(mutate(json.loads(manifest_text), where, new))
    write(folder, "sweep.json", damaged[:cut].encode())
    try:
        manifest = load_manifest(folder)
    except HpcdlError as err:
        one_line(err)
        return
    assert all(Path(p.run_dir).is_absolute() for p in manifest.points)
    spec_of(manifest)  # what status (cluster backends), cancel and resume read


# ------------------------------------------------------------- rendered scripts
def accepted(spec: dict, folder: Path) -> SweepSpec | None:
    path = write(folder, "spec.yaml", yaml.safe_dump(spec, allow_unicode=True).encode())
    try:
        return load_spec(path)[0]
    except HpcdlError:
        return None


def script_job(spec: SweepSpec, folder: Path, kind: str) -> ScriptJob:
    sweep_dir = folder / spec.results_dir / spec.name
    return ScriptJob(
        kind=kind,
        sweep=spec.name,
        sweep_dir=sweep_dir,
        job_name=f"hpcdl-{spec.name}-a000",
        resources=spec.resources,
        count=3,
        throttle=spec.max_concurrent,
        points_file=sweep_dir / "jobs" / "a000.points",
        log_dir=sweep_dir / "logs",
        setup=("module load cuda",),
        env=spec.env,
        launcher=spec.scheduler.launcher,
        requeue=spec.scheduler.requeue,
    )


def rendered(spec: SweepSpec, folder: Path):
    """Every script the spec's backend renders, with and without the site template."""
    backend = {"slurm": Slurm(), "pbs": PBS(spec.scheduler.flavor), "local": Local()}[spec.backend]
    for kind in ("array", "collect"):
        for template in (None, SITE_TEMPLATE):
            try:
                yield backend.render(script_job(spec, folder, kind), template)
            except HpcdlError as err:  # e.g. PBS and qos, a folder PBS's -o cannot hold
                one_line(err)


script_specs = st.fixed_dictionaries(
    {"name": st.sampled_from(["t", "s-1"]), "base": st.just(BASE)},
    optional={
        "resources": resources,
        "backend": st.sampled_from(["local", "slurm", "pbs"]),
        "max_concurrent": st.integers(1, 4),
        "results_dir": st.sampled_from(["results", "my results"]) | nasty,
        "env": st.dictionaries(st.sampled_from(["HPCDL_X", "A1", "_b"]) | nasty, nasty),
        "scheduler": st.fixed_dictionaries({}, optional={"flavor": st.sampled_from(["pro"])}),
    },
)


@FAST
@given(spec=script_specs)
def test_scripts_of_accepted_specs_parse_and_keep_their_header(scratch, spec):
    loaded = accepted(spec, scratch)
    if loaded is None:
        return
    for text in rendered(loaded, scratch):
        subprocess.run(["bash", "-n"], input=text, text=True, check=True)
        header = text.split("set -uo pipefail")[0].splitlines()
        assert all(not line or line.startswith("#") for line in header), header


cluster_specs = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["t", "s-1"]),
        "base": st.just(BASE),
        "backend": st.just("slurm"),
        "resources": st.fixed_dictionaries(
            {
                "gpus_per_node": st.integers(0, 2),
                "mem": st.sampled_from(["100M", "1G"]),
                "time": st.sampled_from(["10", "00:05:00", "0-00:30"]),
                "extra": st.lists(
                    st.text(string.ascii_letters + string.digits + " -_.", max_size=10).map(
                        lambda c: f'--comment="{c}"'
                    ),
                    max_size=1,
                ),
            },
            optional={"partition": st.just("debug")},
        ),
        "env": st.dictionaries(
            st.sampled_from(["HPCDL_X", "A1", "_b"]), nasty.filter(lambda v: "\0" not in v)
        ),
        "results_dir": st.sampled_from(["results", "my results"]),
    },
)


@pytest.mark.slurm
@settings(
    max_examples=max(12, EXAMPLES // 8), deadline=None, suppress_health_check=list(HealthCheck)
)
@given(spec=cluster_specs)
def test_scripts_of_accepted_specs_pass_sbatch_test_only(slurm_cluster, scratch, spec):
    loaded = accepted(spec, scratch)
    assert loaded is not None, spec
    for text in rendered(loaded, scratch):
        script = write(scratch, "job.sh", text.encode())
        proc = sbatch_test_only(script)
        assert proc.returncode == 0 and "to start at" in proc.stderr, (proc.stderr, text)
