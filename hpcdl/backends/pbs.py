"""PBS: PBS Pro syntax (-J, PBS_ARRAY_INDEX, select=) or Torque syntax (-t, PBS_ARRAYID).

Options are written as #PBS lines (the script users read) *and* passed on the qsub command line,
which real PBS accepts (command line wins, values are identical) and which Slurm's Torque
wrappers (slurm-wlm-torque) need, since they ignore #PBS lines. Job state comes from one
`qstat -f` call for all jobs (PBS Pro: with -x -t, so finished jobs and every subjob are listed);
per-point detail comes from the run directories.
"""

from __future__ import annotations

import re
import subprocess
from datetime import datetime
from pathlib import Path

from hpcdl.backends.base import (
    Backend,
    JobRecord,
    ScriptJob,
    as_int,
    directive_path,
    horovod_hosts_expr,
    horovodrun,
    run_scheduler,
    scheduler_failure,
)
from hpcdl.errors import HpcdlError
from hpcdl.spec import Resources, seconds_to_hms

_STATES = {
    "Q": "PENDING",
    "H": "PENDING",
    "W": "PENDING",
    "T": "PENDING",
    "S": "PENDING",
    "R": "RUNNING",
    "E": "RUNNING",
    "B": "RUNNING",
    "C": "COMPLETED",
    "F": "COMPLETED",
    "X": "COMPLETED",
}
# PBS Pro's Exit_status for jobs its MoM killed (JOB_EXEC_KILL_* in PBS's job.h)
_KILLED = {-26: "OUT_OF_MEMORY", -27: "OUT_OF_MEMORY", -29: "TIMEOUT"}
_DELETED_SUBSTATE = "91"  # finished because of qdel (92: exit 0, 93: non-zero exit or killed)
# per-job "no such job" answers: that job has no record (left history), not a failed query
_GONE = re.compile(
    r"Unknown Job Id|Job has finished|Invalid job id|already completing or completed", re.I
)
_UNKNOWN_JOB_EXIT = 153  # PBSE_UNKJOBID; Slurm's qstat wrapper prints nothing with it


def pbs_mem(mem: str, times: int = 1) -> str:
    """16G -> 16gb, 4000M -> 4000mb (PBS size units), multiplied by `times`."""
    m = re.match(r"^(\d+(?:\.\d+)?)([KMGT]?)B?$", mem, re.IGNORECASE)
    if not m:
        raise HpcdlError(f"resources.mem: {mem!r} is not a size")
    amount = float(m.group(1)) * times
    return f"{amount:g}{m.group(2).lower()}b"


def qstat_blocks(text: str) -> dict[str, dict[str, str]]:
    """`qstat -f` output -> {job id: {attribute: value}}. PBS indents attributes by 4 spaces and
    wraps values at 80 columns onto tab-indented continuation lines, which are joined first
    (Slurm's qstat wrapper indents attributes with a tab and never wraps)."""
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("\t") and lines and lines[-1].startswith("    "):
            lines[-1] += line[1:]
        else:
            lines.append(line)
    blocks: dict[str, dict[str, str]] = {}
    attrs: dict[str, str] | None = None
    for line in lines:
        head = re.match(r"^Job Id:\s*(\S+)", line)
        if head:
            attrs = blocks.setdefault(head.group(1), {})
        elif attrs is not None and "=" in line:
            key, _, value = line.partition("=")
            attrs[key.strip()] = value.strip()
    return blocks


def job_record(attrs: dict[str, str]) -> JobRecord:
    """One job's or subjob's `qstat -f` attributes -> its record. A finished job is TIMEOUT or
    OUT_OF_MEMORY when PBS killed it for a limit, CANCELLED when deleted (qdel), FAILED on a
    non-zero exit. Exit codes above 256 (killed by signal N) become 128 + N, as in a shell."""
    raw = attrs.get("job_state", "")
    code = as_int(attrs.get("Exit_status", attrs.get("exit_status")))
    if code is not None and code > 256:
        code = 128 + code - 256
    state = _STATES.get(raw, "UNKNOWN")
    limit = re.search(r"exceeded resource (\w+)", attrs.get("comment", ""))
    if state == "COMPLETED":
        if code in _KILLED:
            state = _KILLED[code]
        elif limit:
            state = "TIMEOUT" if limit.group(1) == "walltime" else "OUT_OF_MEMORY"
        elif attrs.get("substate") == _DELETED_SUBSTATE:
            state = "CANCELLED"
        elif code not in (None, 0):
            state = "FAILED"
    return JobRecord(
        state=state,
        raw_state=raw,
        exit_code=code,
        elapsed_seconds=_seconds(attrs.get("resources_used.walltime")),
        start=_iso(attrs.get("stime")),
        end=_iso(attrs.get("obittime")),
        cpus=as_int(attrs.get("Resource_List.ncpus")),
        gpus=as_int(attrs.get("Resource_List.ngpus")),
        max_rss=_size(attrs.get("resources_used.mem")),
        node=attrs["exec_host"].split("/")[0] if attrs.get("exec_host") else None,
    )


def parse_qstat_f(text: str) -> dict[str, JobRecord]:
    """Records from `qstat -f` keyed by the id PBS printed (`26[2].vm`) and, Slurm-style, by
    sequence number: `26` for a job or array, `26_2` for subjob 2 of array `26[]`."""
    records: dict[str, JobRecord] = {}
    for job_id, attrs in qstat_blocks(text).items():
        record = job_record(attrs)
        records[job_id] = record
        subjob = re.match(r"^(\d+)\[(\d+)\]", job_id)
        key = f"{subjob.group(1)}_{subjob.group(2)}" if subjob else sequence(job_id)
        records[key] = record
    return records


def sequence(job_id: str) -> str:
    """`26[].vm` -> `26`, `25.vm` -> `25` (the number that identifies a job on its server)."""
    m = re.match(r"^\d+", job_id)
    return m.group(0) if m else job_id.split(".")[0]


def check_answer(proc: subprocess.CompletedProcess, what: str) -> None:
    """Raise unless the command worked. A non-zero exit is fine only when every message says
    that a job is unknown or finished (qstat still prints the others), or, from Slurm's qstat
    wrapper, when it exits 153 without a message (no such job)."""
    if proc.returncode == 0:
        return
    lines = proc.stderr.splitlines() or [  # Slurm's wrappers print errors on stdout
        x for x in proc.stdout.splitlines() if x.startswith(("qstat:", "qdel:"))
    ]
    lines = [x for x in lines if x.strip()]
    if lines and all(_GONE.search(x) for x in lines):
        return
    if not lines and proc.returncode == _UNKNOWN_JOB_EXIT:
        return
    raise scheduler_failure(proc, what)


def _seconds(hms: str | None) -> float | None:
    parts = [as_int(x) for x in (hms or "").split(":")]
    if not parts or None in parts:
        return None
    return float(sum(int(p) * 60**i for i, p in enumerate(reversed(parts))))


def _size(text: str | None) -> str | None:
    """PBS's 123456kb -> 123456K (sacct's form)."""
    m = re.fullmatch(r"(\d+)([kmgt]?)b", text or "")
    return f"{m.group(1)}{m.group(2).upper()}" if m else None


def _iso(text: str | None) -> str | None:
    try:
        return datetime.strptime(text or "", "%a %b %d %H:%M:%S %Y").isoformat()
    except ValueError:
        return None


class PBS(Backend):
    name = "pbs"

    def __init__(self, flavor: str = "pro"):
        super().__init__()
        self.flavor = flavor
        if flavor == "pro":
            self.index_expr = "${PBS_ARRAY_INDEX:-0}"
        else:  # Slurm's Torque wrappers do not set PBS_ARRAYID; Slurm's own variable stands in
            self.index_expr = "${PBS_ARRAYID:-${SLURM_ARRAY_TASK_ID:-0}}"
        self.job_id_expr = "${PBS_JOBID:-${SLURM_JOB_ID:-}}"

    @staticmethod
    def check(r: Resources) -> None:
        if r.qos:
            raise HpcdlError("resources.qos: PBS has no QoS; use queue (resources.partition)")

    def options(self, job: ScriptJob) -> list[list[str]]:
        """qsub options as argument lists, in the order they appear in the script."""
        r = job.resources
        self.check(r)
        opts: list[list[str]] = [["-N", job.job_name]]
        if job.kind == "collect":
            if self.flavor == "pro":
                opts += [["-l", "select=1:ncpus=1"], ["-l", "walltime=00:30:00"]]
            else:  # Torque: one comma-joined -l (Slurm's qsub wrapper keeps only the last -l)
                opts.append(["-l", "nodes=1:ppn=1,walltime=00:30:00"])
        else:
            if job.count > 1:  # PBS Pro: -J 0-N%K sets max_run_subjobs; Torque: -t 0-N%K
                throttle = f"%{job.throttle}" if job.throttle else ""
                flag = "-J" if self.flavor == "pro" else "-t"
                opts.append([flag, f"0-{job.count - 1}{throttle}"])
            walltime = seconds_to_hms(r.time_seconds)
            cpus = (r.tasks_per_node or 1) * r.cpus_per_task
            if self.flavor == "pro":
                chunk = f"select={r.nodes}:ncpus={cpus}:mpiprocs={r.tasks_per_node}"
                chunk += f":ngpus={r.gpus_per_node}" if r.gpus_per_node else ""
                chunk += f":mem={pbs_mem(r.mem)}" if r.mem else ""
                chunk += f":{r.constraint}" if r.constraint else ""
                opts += [["-l", chunk], ["-l", f"walltime={walltime}"]]
            else:
                nodes = f"nodes={r.nodes}:ppn={cpus}"
                nodes += f":gpus={r.gpus_per_node}" if r.gpus_per_node else ""
                nodes += f":{r.constraint}" if r.constraint else ""
                # Torque's mem is for the whole job; resources.mem is per node
                mem = f",mem={pbs_mem(r.mem, r.nodes)}" if r.mem else ""
                opts.append(["-l", f"{nodes},walltime={walltime}{mem}"])
            opts.append(["-r", "y"])
        if r.partition:
            opts.append(["-q", r.partition])
        if r.account:
            opts.append(["-A", r.account])
        opts.append(["-j", "oe"])
        if self.flavor == "pro":
            name = (
                "collect" if job.kind == "collect" else ("^array_index^" if job.count > 1 else "0")
            )
            opts.append(["-o", directive_path(job.log_dir / f"{job.job_name}.{name}.out")])
        for extra in r.extra:
            opts.append(extra.split(None, 1))
        return opts

    def directives(self, job: ScriptJob) -> list[str]:
        return ["#PBS " + " ".join(o) for o in self.options(job)]

    def launch(self, job: ScriptJob) -> str:
        r = job.resources
        if r.ranks == 1:
            return ""
        if job.launcher == "srun":
            raise HpcdlError("scheduler.launcher: srun needs the slurm backend; use mpirun")
        if job.launcher == "horovodrun":
            hosts = horovod_hosts_expr('cat "$PBS_NODEFILE"', r.tasks_per_node or 1)
            return f"{horovodrun(job)} -np {r.ranks} -H {hosts} "
        return f'mpirun -np {r.ranks} ${{PBS_NODEFILE:+--hostfile "$PBS_NODEFILE"}} '

    def submit(self, script: Path, job: ScriptJob, depend: list[str] | None = None) -> str:
        cmd = ["qsub"]
        for opt in self.options(job):
            cmd += opt
        if depend:
            cmd += ["-W", "depend=afterany:" + ":".join(depend)]
        # Torque writes default output files into the submission directory: the sweep's logs
        out = run_scheduler([*cmd, str(script)], f"qsub {script.name}", cwd=str(job.log_dir))
        return out.stdout.strip().splitlines()[-1].strip()

    def query(self, job_ids: list[str]) -> dict[str, JobRecord]:
        """One `qstat -f` for all jobs; PBS Pro adds -x (finished jobs, from the server's job
        history) and -t (array subjobs). Records are keyed `ID` and `ID_INDEX` with the ids as
        given (`26[].vm`, `26[].vm_2`). A qstat that fails (server unreachable) raises."""
        if not job_ids:
            return {}
        flags = ["-x", "-t"] if self.flavor == "pro" else []  # Slurm's Torque wrapper has neither
        proc = run_scheduler(["qstat", "-f", *flags, *job_ids], "qstat", check=False)
        check_answer(proc, "qstat")
        records = parse_qstat_f(proc.stdout)
        given = {sequence(j): j for j in job_ids}
        for key, record in list(records.items()):
            seq, _, index = key.partition("_")
            if seq in given and "[" not in key and "." not in key:
                records[f"{given[seq]}_{index}" if index else given[seq]] = record
        return records

    def find_jobs(self, names: list[str], since: str) -> dict[str, str]:
        proc = run_scheduler(
            ["qstat", "-f", *(["-x"] if self.flavor == "pro" else [])], "qstat", check=False
        )
        check_answer(proc, "qstat")
        found: dict[str, str] = {}
        for job_id, attrs in qstat_blocks(proc.stdout).items():
            if attrs.get("Job_Name") in names:
                found.setdefault(attrs["Job_Name"], job_id)
        return found

    def cancel(self, job_ids: list[str]) -> None:
        if job_ids:  # jobs that already finished are no error; an unreachable server is
            check_answer(run_scheduler(["qdel", *job_ids], "qdel", check=False), "qdel")
