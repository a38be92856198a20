"""Sweeps: plan (spec -> points), submit as arrays, and later status, cancel and resume.

<results_dir>/<name>/sweep.json          manifest (hpcdl.manifest)
<results_dir>/<name>/spec.yaml           the spec as given
<results_dir>/<name>/jobs/<token>.sh     the exact scripts submitted, and
<results_dir>/<name>/jobs/<token>.points their run directories, one per array index
<results_dir>/<name>/logs/               the scheduler's own output files
<results_dir>/<name>/<point id>/         one run directory per point (hpcdl.rundir)

    plan     spec -> validated points and job scripts (nothing written)
    submit   the sweep's folder and manifest, job arrays, the collect job, cancel
    status   every point's state from one scheduler query, status text, wait
    resume   rerun what did not finish
Point states themselves live in hpcdl.states.
"""

from hpcdl.states import ACTIVE_STATES, RERUN_STATES, PointStatus, point_state
from hpcdl.sweep.plan import backend_for, describe, plan, spec_of
from hpcdl.sweep.resume import resume
from hpcdl.sweep.status import format_status, statuses, wait
from hpcdl.sweep.submit import cancel, create, reconcile, submit

__all__ = [
    "ACTIVE_STATES",
    "RERUN_STATES",
    "PointStatus",
    "backend_for",
    "cancel",
    "create",
    "describe",
    "format_status",
    "plan",
    "point_state",
    "reconcile",
    "resume",
    "spec_of",
    "statuses",
    "submit",
    "wait",
]
