"""What every scheduler backend provides, and the shared job-script template."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from hpcdl.errors import HpcdlError
from hpcdl.shell import quote
from hpcdl.spec import Resources, control_character

calls: list[list[str]] = []  # every scheduler command run by this process (benchmarks read it)
SCHEDULER_TIMEOUT = 120  # seconds a scheduler command may take before it counts as failed
SCRIPT_SETTINGS = {"HPCDL_REQUEUE_MAX"}  # set by the job script itself, never copied from the shell


def run_scheduler(
    cmd: list[str], what: str, cwd: str | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run one scheduler command; a failure is a one-line error with the scheduler's message."""
    calls.append(cmd)
    if os.environ.get("HPCDL_SCHEDULER_LOG"):
        with open(os.environ["HPCDL_SCHEDULER_LOG"], "a") as f:
            f.write(" ".join(quote(c) for c in cmd) + "\n")
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, cwd=cwd, timeout=SCHEDULER_TIMEOUT
        )
    except FileNotFoundError:
        raise HpcdlError(
            f"{what}: {cmd[0]} not found; is this a login node of the cluster?"
        ) from None
    except subprocess.TimeoutExpired:
        raise HpcdlError(f"{what}: {cmd[0]} did not answer within {SCHEDULER_TIMEOUT} s") from None
    if check and proc.returncode != 0:
        raise scheduler_failure(proc, what)
    return proc


def scheduler_failure(proc: subprocess.CompletedProcess, what: str) -> HpcdlError:
    """The one-line error for a scheduler command that failed, with its own message."""
    message = proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}"
    return HpcdlError(f"{what} failed: {' '.join(message.split())}")


@dataclass
class JobRecord:
    """What the scheduler says about one job or array task."""

    state: str  # normalised: PENDING RUNNING COMPLETED FAILED TIMEOUT CANCELLED OUT_OF_MEMORY ...
    exit_code: int | None = None
    elapsed_seconds: float | None = None
    start: str | None = None
    end: str | None = None
    cpus: int | None = None
    gpus: int | None = None
    max_rss: str | None = None
    node: str | None = None
    raw_state: str = ""


@dataclass(frozen=True)
class ArrayTask:
    """One point's place in a submitted array: job id, index, run directory."""

    job_id: str
    index: int
    run_dir: Path

    @property
    def key(self) -> str:
        """How the scheduler names the task ('ID_INDEX')."""
        return f"{self.job_id}_{self.index}"


@dataclass
class ScriptJob:
    """Everything a job script needs to be rendered."""

    kind: str  # "array" | "collect"
    sweep: str
    sweep_dir: Path
    job_name: str
    resources: Resources
    count: int = 1  # array size
    throttle: int | None = None
    points_file: Path | None = None
    log_dir: Path | None = None
    setup: tuple[str, ...] = ()
    env: dict[str, str] | None = None
    launcher: str = "auto"
    requeue: int = 0
    program_workdir: Path | None = None  # a program sweep: where its command runs
    trial: bool = False  # an adaptive search's slot: `hpcdl trial` runs the training


class Backend:
    """Base class: render a script from directives + the shared template; submit; query; cancel."""

    name = "base"
    can_requeue = False  # can a job requeue itself (SLURM: scontrol requeue)
    index_expr = "0"
    job_id_expr = "local"
    template_name = "job.sh.j2"

    def __init__(self, options: Any = None):
        self.scheduler = options  # the spec's `scheduler` section (None where not needed)

    def check(self, resources: Resources) -> None:
        """Raise HpcdlError for resources this scheduler cannot give (checked at planning)."""

    def directives(self, job: ScriptJob) -> list[str]:
        return []

    def checked_directives(self, job: ScriptJob) -> list[str]:
        """directives(), each one line: a line break would end the scheduler's header early
        (the directives after it ignored) and run the rest of the line as a command."""
        lines = self.directives(job)
        for line in lines:
            char = control_character(line)
            if char is not None:
                raise HpcdlError(
                    f"job script: directive {line!r} contains {char!r}; "
                    "a scheduler directive must be one line"
                )
        return lines

    def launch(self, job: ScriptJob) -> str:
        """The command prefix that starts `ranks` processes ('' for one)."""
        return ""

    def render(self, job: ScriptJob, template: str | None = None, created: str = "") -> str:
        """The job script. `template`: a user's Jinja2 file, which may extend the default
        with {% extends "hpcdl/job.sh.j2" %} and replace its blocks."""
        package = jinja2.PackageLoader("hpcdl", "templates")
        folders = [str(Path(template).resolve().parent)] if template else []
        env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(
                [jinja2.PrefixLoader({"hpcdl": package}), jinja2.FileSystemLoader(folders)]
            ),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            autoescape=False,
        )
        env.filters["q"] = quote
        name = Path(template).name if template else f"hpcdl/{self.template_name}"
        try:
            tmpl = env.get_template(name)
        except jinja2.TemplateNotFound as err:
            raise HpcdlError(f"scheduler.template: cannot read {template or err.name}") from None
        except jinja2.TemplateSyntaxError as err:
            raise HpcdlError(f"job template {err.filename}:{err.lineno}: {err.message}") from None
        try:
            return tmpl.render(
                backend=self.name,
                sweep=job.sweep,
                kind=job.kind,
                created=created,
                what=(
                    "collect after the arrays"
                    if job.kind == "collect"
                    else f"array of {job.count} point(s)"
                ),
                directives=self.checked_directives(job),
                index_expr=self.index_expr,
                job_id_expr=self.job_id_expr,
                points_file=job.points_file,
                sweep_dir=job.sweep_dir,
                python=sys.executable,
                env={**submitting_settings(), **(job.env or {})},
                setup=list(job.setup),
                launch=self.launch(job) if job.kind == "array" else "",
                ranks=job.resources.ranks,
                requeue=job.requeue if self.can_requeue else 0,
                program_workdir=job.program_workdir,
                trial=job.trial,
                resources=job.resources,
            )
        except jinja2.TemplateError as err:
            raise HpcdlError(f"job template: {err}") from None

    # --- scheduler operations (cluster backends override) ---
    def max_array_size(self) -> int:
        return 1_000_000

    def submit(self, script: Path, job: ScriptJob, depend: list[str] | None = None) -> str:
        raise NotImplementedError

    def query(self, job_ids: list[str]) -> dict[str, JobRecord]:
        """States of all given jobs (keys 'ID' and 'ID_INDEX') in as few calls as possible."""
        raise NotImplementedError

    def cancel(self, job_ids: list[str]) -> None:
        raise NotImplementedError

    def find_jobs(self, names: list[str], since: str) -> dict[str, str]:
        """Job ids of jobs with these (unique) names submitted since `since`, by name."""
        raise NotImplementedError

    def task_records(self, tasks: dict[str, ArrayTask]) -> dict[str, JobRecord]:
        """The record of each point's array task, by point id, from ONE query of all their jobs
        (a scheduler that keeps no per-task record answers for the whole array)."""
        ids = sorted({t.job_id for t in tasks.values()})
        records = self.query(ids) if ids else {}
        found = {}
        for point, task in tasks.items():
            record = records.get(task.key) or records.get(task.job_id)
            if record is not None:
                found[point] = record
        return found

    def run_submitted(
        self, out: Callable[[str], None] = print, watch: Callable[[], list[Any]] | None = None
    ) -> None:
        """Called once a submission's jobs are all recorded: a cluster has them already (nothing
        to do); the local backend runs them here, in the foreground, showing `watch()` (the
        points' statuses) as live progress."""


def submitting_settings() -> dict[str, str]:
    """The submitting shell's HPCDL_* settings, which the job script records and exports: PBS
    does not pass the submitting environment on, and the kept script should show them."""
    return {
        key: value
        for key, value in sorted(os.environ.items())
        if re.fullmatch(r"HPCDL_[A-Za-z0-9_]+", key) and key not in SCRIPT_SETTINGS
    }


def directive_path(path: Path | str, quote_spaces: bool = False) -> str:
    """A path for a directive (--output=, -o), refused (naming the setting it comes from) when
    a directive line cannot carry it: line breaks, quotes, and whitespace unless
    `quote_spaces` (sbatch reads "double-quoted" values; PBS gets the same value on qsub's
    command line, where quotes would be part of the name)."""
    text = str(path)
    bad = next(
        (
            c
            for c in text
            if c in "\"'" or control_character(c) or (c.isspace() and not quote_spaces)
        ),
        None,
    )
    if bad is not None:
        raise HpcdlError(
            f"results_dir: the sweep's log file {text!r} contains {bad!r}, which a scheduler "
            f"directive cannot hold; choose a results folder without quotes"
            + ("" if quote_spaces else " or spaces")
        )
    return f'"{text}"' if any(c.isspace() for c in text) else text


def horovodrun(job: ScriptJob) -> str:
    """horovodrun by the path of this environment (it is not on a batch job's PATH unless the
    environment is activated there); refused across nodes, where it starts ranks over ssh."""
    if job.resources.nodes > 1:
        raise HpcdlError(
            "scheduler.launcher: horovodrun starts the ranks of other nodes over ssh, which "
            "clusters often forbid; use srun (slurm) or mpirun for points on several nodes"
        )
    exe = Path(sys.executable).with_name("horovodrun")
    return quote(str(exe)) if exe.exists() else "horovodrun"


def horovod_hosts_expr(nodes_cmd: str, per_node: int) -> str:
    """Shell that builds horovodrun's -H list (host:slots,...) from a command printing hosts."""
    return f"$({nodes_cmd} | sort -u | sed 's/$/:{per_node}/' | paste -sd, -)"


def as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
