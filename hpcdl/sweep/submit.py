"""Submitting a sweep: write its folder and manifest, submit the points as job arrays (and the
collect job after them), settle submissions an interrupted `hpcdl sweep` left unconfirmed, cancel.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hpcdl import __version__, rundir
from hpcdl.backends.base import Backend, ScriptJob
from hpcdl.config import config_to_dict
from hpcdl.errors import HpcdlError
from hpcdl.grid import Point
from hpcdl.manifest import Manifest, PointEntry, Submission, now
from hpcdl.program import write_run_files
from hpcdl.spec import SweepSpec
from hpcdl.sweep.plan import backend_for, backend_of, plan, script_job, spec_of
from hpcdl.sweep.status import statuses


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
        write_point_files(sweep_dir / p.id, p)
    out(f"sweep {spec.name}: {len(points)} point(s) in {sweep_dir}")
    submit(manifest, spec, runner, [p.id for p in points], "a", out)
    return manifest


def write_point_files(run_dir: Path, point: Point) -> None:
    """What a point's job reads: its training config, or a program's settings and command."""
    run_dir.mkdir(exist_ok=True)
    if point.slot:  # its trial's worker writes them (hpcdl.search.worker)
        return
    if point.config is None:
        write_run_files(run_dir, point.settings or {}, point.command or "")
    else:
        config = {**config_to_dict(point.config), "run_dir": str(run_dir)}
        rundir.write_yaml_atomic(run_dir / rundir.CONFIG, config)


def write_array_files(
    manifest: Manifest,
    spec: SweepSpec,
    runner: Backend,
    job: ScriptJob,
    script: Path,
    point_ids: list[str],
) -> None:
    """An array's points file (its run directories, one per index) and its job script."""
    if job.points_file is None:
        raise ValueError("an array job needs its points file")
    lines = "".join(manifest.point(pid).run_dir + "\n" for pid in point_ids)
    rundir.write_text_atomic(job.points_file, lines)
    rundir.write_text_atomic(script, runner.render(job, spec.scheduler.template, now()))


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
    job after them (and after `also_wait_for`); the local backend runs them now, at the end.

    Every submission is recorded as planned, with a unique job name, before its scheduler call,
    and the manifest is saved after each call: a crash leaves a record `resume` can reconcile."""
    sweep_dir = Path(manifest.sweep_dir)
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
        write_array_files(manifest, spec, runner, job, script, chunk)
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
    runner.run_submitted(out, watch=lambda: statuses(manifest))
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
            points_file = Path(manifest.sweep_dir) / "jobs" / f"{sub.token}.points"
            job = script_job(spec, manifest, "array", sub.token, len(sub.points), points_file)
            # written again: the sweep folder may have moved since (paths inside them)
            write_array_files(manifest, spec, runner, job, Path(sub.script), sub.points)
            _submit_one(manifest, runner, sub, job, None)
            out(f"submitted {sub.job_name}: job {sub.job_id} (was planned, never submitted)")
        if sub.kind == "array" and sub.job_id:
            arrays.append(sub.job_id)
        manifest.save()
    return arrays


def cancel(manifest: Manifest, out: Callable[[str], None] = print) -> list[str]:
    """Cancel every submitted job of the sweep in one scheduler call."""
    ids = [s.job_id for s in manifest.submissions if s.job_id]
    backend_of(manifest).cancel(ids)
    out(f"cancelled {len(ids)} job(s): {' '.join(ids)}")
    return ids
