"""Planning a sweep: spec -> validated points and the job scripts that would run them.

Nothing here writes a file or calls a scheduler; `hpcdl sweep --dry-run` shows what it made.
"""

from __future__ import annotations

from pathlib import Path

from hpcdl.backends import get_backend
from hpcdl.backends.base import Backend, ScriptJob
from hpcdl.grid import Point, expand
from hpcdl.manifest import Manifest
from hpcdl.search import method_of
from hpcdl.spec import SchedulerOptions, SweepSpec, load_spec


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
        program_workdir=Path(spec.program.workdir) if spec.program else None,
        trial=method_of(spec).adaptive,
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
    command = f"point 0 runs: {points[0].command}\n\n" if points and points[0].command else ""
    return (
        f"sweep {spec.name}: {len(points)} point(s), backend {spec.backend}, "
        f"{spec.resources.ranks} rank(s) each, results in {sweep_dir}\n{search_line(spec)}\n"
        f"{table}\n\n{command}--- {sweep_dir}/jobs/a000.sh (not written) ---\n{script}"
    )


def search_line(spec: SweepSpec) -> str:
    """How the points are chosen, for the dry run ('' for a grid)."""
    s = spec.search
    if s.method == "grid":
        return ""
    space = ", ".join(f"{k} {e.kind} {e.values}" for k, e in s.space.items())
    how = f"sampler {s.sampler}, pruner {s.pruner}, " if method_of(spec).adaptive else ""
    return (
        f"search {s.method}: {s.trials} trial(s), {spec.max_concurrent or 1} at a time, "
        f"{s.direction} {s.metric}, {how}seed {s.seed}; space: {space}\n"
    )


def backend_for(spec: SweepSpec) -> Backend:
    """The scheduler backend a spec asks for."""
    return get_backend(spec.backend, spec.scheduler)


def backend_of(manifest: Manifest) -> Backend:
    """The backend a sweep was submitted to, from its manifest (without revalidating the spec)."""
    options = SchedulerOptions.model_validate(manifest.spec.get("scheduler") or {})
    return get_backend(manifest.backend, options)


def spec_of(manifest: Manifest) -> SweepSpec:
    return SweepSpec.model_validate(manifest.spec)
