"""Watching a sweep: every point's state from ONE scheduler query, the status text, waiting."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from hpcdl.backends.base import ArrayTask
from hpcdl.errors import HpcdlError
from hpcdl.grid import overrides_label
from hpcdl.manifest import Manifest, Submission, load_manifest, now
from hpcdl.progress import failure_table
from hpcdl.search import is_adaptive
from hpcdl.search.slots import point_overrides
from hpcdl.search.study import settle
from hpcdl.states import ACTIVE_STATES, PointStatus, count_line, point_state
from hpcdl.sweep.plan import backend_of


def statuses(manifest: Manifest) -> list[PointStatus]:
    """Every point's state from its run directory and ONE scheduler query for the whole sweep."""
    latest: dict[str, tuple[Submission, int]] = {}  # each point's last array submission
    for sub in manifest.submissions:
        if sub.kind == "array":
            for index, pid in enumerate(sub.points):
                latest[pid] = (sub, index)
    tasks = {
        entry.id: ArrayTask(sub.job_id, index, Path(entry.run_dir))
        for entry in manifest.points
        if entry.id in latest
        for sub, index in [latest[entry.id]]
        if sub.job_id
    }
    records = backend_of(manifest).task_records(tasks)
    adaptive = is_adaptive(manifest.spec)  # the points are trial slots (hpcdl.search)
    out = []
    for entry in manifest.points:
        sub_index = latest.get(entry.id)
        task = tasks.get(entry.id)
        unconfirmed = sub_index is not None and sub_index[0].state in ("planned", "failed")
        state, reason = point_state(
            Path(entry.run_dir), sub_index is not None, records.get(entry.id), unconfirmed
        )
        overrides = point_overrides(entry)
        label = overrides_label(overrides) if overrides or not adaptive else "(no trial yet)"
        out.append(
            PointStatus(
                entry.id,
                state,
                reason,
                task.key if task else None,
                entry.run_dir,
                label,
                records.get(entry.id),
            )
        )
    if adaptive:  # a dead job's trial must not stay RUNNING in the study
        settle(manifest, out)
    return out


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
    if verbose:  # every point, one line each
        for p in points:
            reason = f"  {p.reason}" if p.reason else ""
            lines.append(f"  {p.state:13s} {p.id:40s} {p.job or '-':>12s}{reason}")
    elif table := failure_table(points):  # what did not finish, and why, in 100 columns
        lines.append(table)
    return "\n".join(lines)


def wait(
    folder: str | Path,
    timeout: float | None = None,
    out: Callable[[str], None] = print,
    first_delay: float = 2.0,
    max_delay: float = 60.0,
    on_poll: Callable[[list[PointStatus]], None] | None = None,
) -> tuple[Manifest, list[PointStatus]]:
    """Poll until no point is pending or running; one scheduler query per poll, the pause
    doubling from `first_delay` to `max_delay`. Each poll's statuses go to `on_poll` (e.g. a
    Progress display), else the counts are printed whenever they change.
    Raises HpcdlError after `timeout` seconds."""
    start, delay, last = time.monotonic(), first_delay, ""
    while True:
        manifest = load_manifest(folder)  # re-read: a `resume` elsewhere may add submissions
        points = statuses(manifest)
        line = count_line(points)
        if on_poll is not None:
            on_poll(points)
        elif line != last:
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
