"""Sweeps: plan (spec -> points), submit as arrays, and later status, cancel and resume.

<results_dir>/<name>/sweep.json          manifest (hpcdl.manifest)
<results_dir>/<name>/spec.yaml           the spec as given
<results_dir>/<name>/jobs/<token>.sh     the exact scripts submitted, and
<results_dir>/<name>/jobs/<token>.points their run directories, one per array index
<results_dir>/<name>/logs/               the scheduler's own output files
<results_dir>/<name>/<point id>/         one run directory per point (hpcdl.rundir)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from hpcdl import __version__, rundir
from hpcdl.backends import get_backend
from hpcdl.backends.base import Backend, JobRecord, ScriptJob
from hpcdl.backends.local import read_state, write_state
from hpcdl.config import config_to_dict, format_validation_error
from hpcdl.errors import HpcdlError
from hpcdl.grid import Point, expand, overrides_label
from hpcdl.manifest import Manifest, PointEntry, Submission, load_manifest, now
from hpcdl.spec import Resources, SweepSpec, load_spec

RERUN_STATES = {
    "MISSING",
    "FAILED",
    "TIMEOUT",
    "CANCELLED",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "LOST",
    "UNKNOWN",
}
ACTIVE_STATES = {"PENDING", "RUNNING"}


@dataclass
class PointStatus:
    id: str
    state: str
    reason: str
    job: str | None
    run_dir: str
    label: str
    record: JobRecord | None = None  # what the scheduler said (None: nothing)


# ---------------------------------------------------------------- planning
def plan(spec_path: str | Path, backend: str | None = None) -> tuple[SweepSpec, dict, list[Point]]:
    """Validate the spec and expand it; nothing is written. Raises HpcdlError on any problem."""
    spec, base = load_spec(spec_path)
    if backend and backend != spec.backend:
        spec = SweepSpec.model_validate({**spec.model_dump(exclude_unset=True), "backend": backend})
    points = expand(spec, base, str(spec_path))
    check_scripts(spec)
    return spec, base, points


def check_scripts(spec: SweepSpec) -> None:
    """Render the job scripts once, so that a broken template stops the sweep before it starts."""
    folder = (Path(spec.results_dir) / spec.name).resolve()
    backend = backend_for(spec)
    for kind in ("array", "collect"):
        job = script_job(spec, None, kind, "x", 1, folder / "jobs" / "x.points", folder)
        backend.render(job, spec.scheduler.template)


def script_job(
    spec: SweepSpec,
    manifest: Manifest | None,
    kind: str,
    token: str,
    count: int = 1,
    points_file: Path | None = None,
    sweep_dir: Path | None = None,
) -> ScriptJob:
    """What the job template needs for one submission. Job names carry the sweep's uid, so
    that `resume` can find a job by name without mistaking another sweep's for it."""
    uid = f"-{manifest.uid}" if manifest is not None and manifest.uid else ""
    folder = Path(manifest.sweep_dir) if manifest is not None else sweep_dir
    return ScriptJob(
        kind=kind,
        sweep=spec.name,
        sweep_dir=folder,
        job_name=f"hpcdl-{spec.name}{uid}-{token}",
        resources=spec.resources,
        count=count,
        throttle=spec.max_concurrent,
        points_file=points_file,
        log_dir=folder / "logs",
        setup=tuple(spec.scheduler.setup),
        env=spec.env,
        launcher=spec.scheduler.launcher,
        requeue=spec.scheduler.requeue,
    )


def describe(spec: SweepSpec, points: list[Point], sweep_dir: Path) -> str:
    """The dry-run view: a table of points and the first script that would be submitted."""
    import pandas as pd

    rows = [{"#": i, "id": p.id, **p.overrides} for i, p in enumerate(points)]
    table = pd.DataFrame(rows).to_string(index=False) if rows else "(no points)"
    backend = backend_for(spec)
    chunk = min(len(points), spec.scheduler.max_array_size or len(points))
    job = script_job(
        spec, None, "array", "a000", chunk, sweep_dir / "jobs" / "a000.points", sweep_dir
    )
    script = backend.render(job, spec.scheduler.template, created="(dry run)")
    return (
        f"sweep {spec.name}: {len(points)} point(s), backend {spec.backend}, "
        f"{spec.resources.ranks} rank(s) each, results in {sweep_dir}\n\n{table}\n\n"
        f"--- {sweep_dir}/jobs/a000.sh (not written) ---\n{script}"
    )


# ---------------------------------------------------------------- creating and submitting
def create(
    spec_path: str | Path, backend: str | None = None, out: Callable[[str], None] = print
) -> Manifest:
    """Write the sweep's folders and manifest, then submit (cluster) or run (local) every point."""
    spec, base, points = plan(spec_path, backend)
    sweep_dir = (Path(spec.results_dir) / spec.name).resolve()
    runner = backend_for(spec)
    manifest = Manifest(
        name=spec.name,
        backend=spec.backend,
        sweep_dir=str(sweep_dir),
        spec_path=str(Path(spec_path).resolve()),
        spec=spec.model_dump(mode="json"),
        base=base,
        points=[PointEntry(p.id, p.overrides, str(sweep_dir / p.id)) for p in points],
        hpcdl_version=__version__,
    )
    manifest.claim()  # first: a second `hpcdl sweep` of the same name stops here
    for sub in ("jobs", "logs"):
        (sweep_dir / sub).mkdir(exist_ok=True)
    rundir.write_text_atomic(sweep_dir / "spec.yaml", Path(spec_path).read_text())
    for p in points:
        run_dir = sweep_dir / p.id
        run_dir.mkdir(exist_ok=True)
        rundir.write_yaml_atomic(
            run_dir / rundir.CONFIG, {**config_to_dict(p.config), "run_dir": str(run_dir)}
        )
    out(f"sweep {spec.name}: {len(points)} point(s) in {sweep_dir}")
    submit(manifest, spec, runner, [p.id for p in points], "a", out)
    return manifest


def backend_for(spec: SweepSpec) -> Backend:
    """The scheduler backend a spec asks for."""
    return get_backend(spec.backend, spec.scheduler.flavor)


def spec_of(manifest: Manifest) -> SweepSpec:
    return SweepSpec.model_validate(manifest.spec)


def submit(
    manifest: Manifest,
    spec: SweepSpec,
    runner: Backend,
    point_ids: list[str],
    prefix: str,
    out: Callable[[str], None] = print,
    also_wait_for: tuple[str, ...] = (),
) -> list[Submission]:
    """Submit `point_ids` as job arrays (split at the scheduler's MaxArraySize), then the collect
    job after them (and after `also_wait_for`); the local backend runs them now instead.

    Every submission is recorded as planned, with a unique job name, before its scheduler call,
    and the manifest is saved after each call: a crash leaves a record `resume` can reconcile."""
    sweep_dir = Path(manifest.sweep_dir)
    if spec.backend == "local":
        return [_run_local(manifest, spec, runner, point_ids, prefix, out)]
    size = runner.max_array_size() if point_ids else 1
    if spec.scheduler.max_array_size:
        size = min(size, spec.scheduler.max_array_size)
    planned = []
    for start in range(0, len(point_ids), size):
        chunk = point_ids[start : start + size]
        token = manifest.next_token(prefix)
        points_file = sweep_dir / "jobs" / f"{token}.points"
        job = script_job(spec, manifest, "array", token, len(chunk), points_file)
        script = sweep_dir / "jobs" / f"{token}.sh"
        rundir.write_text_atomic(
            points_file, "".join(manifest.point(pid).run_dir + "\n" for pid in chunk)
        )
        rundir.write_text_atomic(script, runner.render(job, spec.scheduler.template, now()))
        sub = Submission(token, "array", job.job_name, str(script), list(chunk), str(points_file))
        manifest.submissions.append(sub)
        planned.append((sub, job))
    manifest.save()
    for sub, job in planned:
        _submit_one(manifest, runner, sub, job, None)
        out(f"submitted {sub.job_name}: job {sub.job_id} ({len(sub.points)} point(s))")
    done = [s for s, _ in planned]
    after = [s.job_id for s in done if s.job_id] + list(also_wait_for)
    if spec.collect and after:
        token = manifest.next_token("c")
        job = script_job(spec, manifest, "collect", token)
        script = sweep_dir / "jobs" / f"{token}.sh"
        rundir.write_text_atomic(script, runner.render(job, spec.scheduler.template, now()))
        sub = Submission(token, "collect", job.job_name, str(script))
        manifest.submissions.append(sub)
        manifest.save()
        _submit_one(manifest, runner, sub, job, after)
        out(f"submitted {sub.job_name}: job {sub.job_id} (collect, after {','.join(after)})")
        done.append(sub)
    return done


def _submit_one(
    manifest: Manifest, runner: Backend, sub: Submission, job: ScriptJob, depend: list[str] | None
) -> None:
    try:
        sub.job_id = runner.submit(Path(sub.script), job, depend)
        sub.state, sub.submitted_at = "submitted", now()
    except HpcdlError as err:
        sub.state, sub.error = "failed", str(err)
        manifest.save()
        raise
    manifest.save()


def reconcile(manifest: Manifest, runner: Backend, out: Callable[[str], None] = print) -> list[str]:
    """Settle submissions an interrupted `hpcdl sweep` left unconfirmed: a job the scheduler
    knows by its unique name is recorded (never submitted twice); an array it does not know is
    submitted now. Unconfirmed collect jobs are dropped (resume submits a fresh one).
    Returns the ids of the arrays this confirmed or submitted."""
    open_subs = [s for s in manifest.submissions if s.state in ("planned", "failed")]
    if not open_subs:
        return []
    found = runner.find_jobs([s.job_name for s in open_subs], manifest.created_at)
    spec = spec_of(manifest)
    arrays = []
    for sub in open_subs:
        if sub.job_name in found:
            sub.job_id, sub.state, sub.submitted_at = found[sub.job_name], "submitted", now()
            out(f"found {sub.job_name}: job {sub.job_id} (its submission was not recorded)")
        elif sub.kind == "collect":
            sub.state = "dropped"
        else:
            job = script_job(
                spec, manifest, "array", sub.token, len(sub.points), Path(sub.points_file or "")
            )
            _submit_one(manifest, runner, sub, job, None)
            out(f"submitted {sub.job_name}: job {sub.job_id} (was planned, never submitted)")
        if sub.kind == "array" and sub.job_id:
            arrays.append(sub.job_id)
        manifest.save()
    return arrays


def _run_local(
    manifest: Manifest,
    spec: SweepSpec,
    runner: Backend,
    point_ids: list[str],
    prefix: str,
    out: Callable[[str], None],
) -> Submission:
    sweep_dir = Path(manifest.sweep_dir)
    token = manifest.next_token(prefix)
    points_file = sweep_dir / "jobs" / f"{token}.points"
    job = script_job(spec, manifest, "array", token, len(point_ids), points_file)
    script = sweep_dir / "jobs" / f"{token}.sh"
    run_dirs = [Path(manifest.point(pid).run_dir) for pid in point_ids]
    rundir.write_text_atomic(points_file, "".join(f"{d}\n" for d in run_dirs))
    rundir.write_text_atomic(script, runner.render(job, spec.scheduler.template, now()))
    sub = Submission(
        token,
        "array",
        job.job_name,
        str(script),
        list(point_ids),
        str(points_file),
        job_id=f"local-{os.getpid()}",
        state="submitted",
        submitted_at=now(),
    )
    for run_dir in run_dirs:  # pending while this process lives (else LOST), before it is recorded
        write_state(run_dir, "PENDING", runner=os.getpid())
    manifest.submissions.append(sub)
    manifest.save()
    concurrent = spec.max_concurrent or 1
    out(
        f"running {len(point_ids)} point(s) here, {concurrent} at a time "
        f"({spec.resources.ranks} rank(s) each); Ctrl-C stops them"
    )
    runner.run(script, run_dirs, concurrent, spec.resources.time_seconds, sweep_dir / "logs", out)
    if spec.collect:
        from hpcdl.collect import collect

        collect(sweep_dir, out=out)
    return sub


# ---------------------------------------------------------------- watching
def statuses(manifest: Manifest) -> list[PointStatus]:
    """Every point's state from its run directory and ONE scheduler query for the whole sweep."""
    latest: dict[str, tuple[Submission, int]] = {}
    for sub in manifest.submissions:
        if sub.kind == "array":
            for index, pid in enumerate(sub.points):
                latest[pid] = (sub, index)
    records: dict[str, JobRecord] = {}
    if manifest.backend != "local":
        ids = sorted({s.job_id for s, _ in latest.values() if s.job_id})
        if ids:
            runner = backend_for(spec_of(manifest))
            records = runner.query(ids)
    out = []
    for entry in manifest.points:
        sub_index = latest.get(entry.id)
        job_key = (
            f"{sub_index[0].job_id}_{sub_index[1]}" if sub_index and sub_index[0].job_id else None
        )
        if manifest.backend == "local":
            record = read_state(Path(entry.run_dir))
        else:
            record = records.get(job_key or "") or (
                records.get(sub_index[0].job_id or "") if sub_index else None
            )
        unconfirmed = sub_index is not None and sub_index[0].state in ("planned", "failed")
        state, reason = point_state(Path(entry.run_dir), sub_index is not None, record, unconfirmed)
        label = overrides_label(entry.overrides)
        out.append(PointStatus(entry.id, state, reason, job_key, entry.run_dir, label, record))
    return out


def last_error_line(run_dir: Path, name: str = "job.out") -> str:
    """The last line of a log that looks like an error ('' when none does)."""
    path = run_dir / name
    if not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 16384))
        lines = [x.strip() for x in f.read().decode(errors="replace").splitlines() if x.strip()]
    for line in reversed(lines):
        if any(
            w in line
            for w in (
                "Error",
                "error:",
                "Killed",
                "Traceback",
                "Exception",
                "CANCELLED",
                "DUE TO TIME LIMIT",
                "oom",
                "Segmentation",
                "An error occurred in MPI_",  # Open MPI could not start (MPI_Init_thread)
                "MPI_ABORT was invoked",
                "ORTE_ERROR_LOG",
                "not enough slots",
            )
        ):
            return line.lstrip("* ")[:300]
    return ""


BASE_REASONS = {
    "TIMEOUT": "time limit reached",
    "OUT_OF_MEMORY": "out of memory",
    "CANCELLED": "cancelled",
    "PREEMPTED": "preempted",
    "LOST": "its process is gone (the runner or node died)",
}


def point_state(
    run_dir: Path, submitted: bool, record: JobRecord | None, unconfirmed: bool = False
) -> tuple[str, str]:
    """(state, reason) of one point: its files first, the scheduler's word second."""
    if (run_dir / rundir.RESULT).exists():
        return "FINISHED", ""
    if not submitted:
        return "MISSING", "never submitted"
    if unconfirmed:
        return "UNCONFIRMED", "its submission was not recorded; `hpcdl resume` settles it"
    if record is None:
        return "UNKNOWN", "the scheduler has no record of its job"
    state = record.state
    if state == "RUNNING" and not (run_dir / "job.out").exists():
        state = "PENDING"  # PBS reports a whole array running before this index started
    if state in ACTIVE_STATES:
        return state, ""
    if state == "COMPLETED":
        state, parts = "FAILED", ["ended without result.json"]
    elif state in BASE_REASONS:
        parts = [BASE_REASONS[state]]
    else:
        parts = [f"exit {record.exit_code}"] if record.exit_code not in (None, 0) else []
    failure = run_dir / rundir.FAILURE
    if failure.exists():
        try:
            parts.append(rundir.read_json(failure).get("reason", ""))
        except ValueError:
            pass
    tail = last_error_line(run_dir)
    if tail and not any(tail in p or p in tail for p in parts if p):
        parts.append(tail)
    return state, ": ".join(p for p in parts if p) or "ended without result.json"


def counts(points: list[PointStatus]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in points:
        out[p.state] = out.get(p.state, 0) + 1
    return dict(sorted(out.items()))


def count_line(points: list[PointStatus]) -> str:
    """'3 finished, 1 running, ...'"""
    return ", ".join(f"{n} {s.lower()}" for s, n in counts(points).items())


def format_status(manifest: Manifest, points: list[PointStatus], verbose: bool) -> str:
    summary = count_line(points)
    lines = [f"sweep {manifest.name} ({manifest.backend}, {len(points)} points): {summary}"]
    for sub in manifest.submissions:  # what was submitted, and what may not have been
        what = f"{len(sub.points)} point(s)" if sub.kind == "array" else "collect"
        job = f"job {sub.job_id}" if sub.job_id else "no job id"
        if verbose or sub.state != "submitted":
            lines.append(
                f"  submission {sub.token}: {sub.state}, {job}, {what}"
                + (f" ({sub.error})" if sub.error else "")
            )
    shown = points if verbose else [p for p in points if p.state != "FINISHED"]
    for p in shown[:200] if not verbose else shown:
        reason = f"  {p.reason}" if p.reason else ""
        lines.append(f"  {p.state:13s} {p.id:40s} {p.job or '-':>12s}{reason}")
    if not verbose and len(shown) > 200:
        lines.append(f"  ... {len(shown) - 200} more (use --all)")
    return "\n".join(lines)


def wait(
    folder: str | Path,
    timeout: float | None = None,
    out: Callable[[str], None] = print,
    first_delay: float = 2.0,
    max_delay: float = 60.0,
) -> tuple[Manifest, list[PointStatus]]:
    """Poll until no point is pending or running; one scheduler query per poll, the pause
    doubling from `first_delay` to `max_delay`. Prints the counts whenever they change.
    Raises HpcdlError after `timeout` seconds."""
    start, delay, last = time.monotonic(), first_delay, ""
    while True:
        manifest = load_manifest(folder)  # re-read: a `resume` elsewhere may add submissions
        points = statuses(manifest)
        line = count_line(points)
        if line != last:
            out(f"{now()} {manifest.name}: {line}")
            last = line
        if not any(p.state in ACTIVE_STATES for p in points):
            return manifest, points
        waited = time.monotonic() - start
        if timeout is not None and waited >= timeout:
            raise HpcdlError(f"{manifest.name}: still {line} after {waited:.0f} s")
        pause = delay if timeout is None else min(delay, max(0.0, timeout - waited))
        time.sleep(pause)
        delay = min(2 * delay, max_delay)


def cancel(manifest: Manifest, out: Callable[[str], None] = print) -> list[str]:
    """Cancel every submitted job of the sweep in one scheduler call."""
    if manifest.backend == "local":
        raise HpcdlError("local sweeps run in the foreground: stop them with Ctrl-C")
    ids = [s.job_id for s in manifest.submissions if s.job_id]
    runner = backend_for(spec_of(manifest))
    runner.cancel(ids)
    out(f"cancelled {len(ids)} job(s): {' '.join(ids)}")
    return ids


def resume(
    manifest: Manifest, time: str | None = None, out: Callable[[str], None] = print
) -> list[Submission]:
    """Resubmit the points that are missing, failed, cancelled, timed out or lost (optionally
    with a new time limit, kept for later resumes). Finished and active points are left alone."""
    if time is not None:
        resources = {**manifest.spec["resources"], "time": time}
        try:
            manifest.spec["resources"] = Resources.model_validate(resources).model_dump(mode="json")
        except ValidationError as err:
            raise HpcdlError(format_validation_error(err, "--time")) from None
    spec = spec_of(manifest)
    runner = backend_for(spec)
    settled = reconcile(manifest, runner, out) if spec.backend != "local" else []
    todo = [p.id for p in statuses(manifest) if p.state in RERUN_STATES]
    if not todo and not settled:
        out(f"sweep {manifest.name}: nothing to resume")
        return []
    out(f"sweep {manifest.name}: resubmitting {len(todo)} point(s)")
    return submit(manifest, spec, runner, todo, "r", out, also_wait_for=tuple(settled))
