"""Resuming a sweep: rerun what is missing, failed, cancelled, timed out or lost."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError

from hpcdl.config import format_validation_error
from hpcdl.errors import HpcdlError
from hpcdl.manifest import Manifest, Submission
from hpcdl.spec import Resources
from hpcdl.states import RERUN_STATES
from hpcdl.sweep.plan import backend_for, spec_of
from hpcdl.sweep.status import statuses
from hpcdl.sweep.submit import reconcile, submit


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
    settled = reconcile(manifest, runner, out)
    todo = [p.id for p in statuses(manifest) if p.state in RERUN_STATES]
    if not todo and not settled:
        out(f"sweep {manifest.name}: nothing to resume")
        return []
    out(f"sweep {manifest.name}: resubmitting {len(todo)} point(s)")
    return submit(manifest, spec, runner, todo, "r", out, also_wait_for=tuple(settled))
