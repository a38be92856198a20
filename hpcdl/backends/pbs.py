"""PBS: PBS Pro syntax (-J, PBS_ARRAY_INDEX, select=) or Torque syntax (-t, PBS_ARRAYID).

Options are written as #PBS lines (the script users read) *and* passed on the qsub command line,
which real PBS accepts (command line wins, values are identical) and which Slurm's Torque
wrappers (slurm-wlm-torque) need, since they ignore #PBS lines. Job state comes from one
`qstat -f` call for all jobs; per-point detail comes from the run directories.
"""

from __future__ import annotations

import re
from pathlib import Path

from hpcdl.backends.base import (
    Backend,
    JobRecord,
    ScriptJob,
    as_int,
    horovod_hosts_expr,
    run_scheduler,
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


def pbs_mem(mem: str, times: int = 1) -> str:
    """16G -> 16gb, 4000M -> 4000mb (PBS size units), multiplied by `times`."""
    m = re.match(r"^(\d+(?:\.\d+)?)([KMGT]?)B?$", mem, re.IGNORECASE)
    if not m:
        raise HpcdlError(f"resources.mem: {mem!r} is not a size")
    amount = float(m.group(1)) * times
    return f"{amount:g}{m.group(2).lower()}b"


def parse_qstat_f(text: str) -> dict[str, JobRecord]:
    """`qstat -f` blocks ('Job Id: X' then 'key = value' lines) -> records keyed by job id."""
    records: dict[str, JobRecord] = {}
    current: dict[str, str] = {}
    job_id = None

    def flush():
        if job_id:
            raw = current.get("job_state", "")
            code = as_int(current.get("exit_status", current.get("Exit_status")))
            state = _STATES.get(raw, "UNKNOWN")
            if state == "COMPLETED" and code not in (None, 0):
                state = "FAILED"
            records[job_id] = JobRecord(state=state, raw_state=raw, exit_code=code)
            records[job_id.split(".")[0]] = records[job_id]

    for line in text.splitlines():
        head = re.match(r"^Job Id:\s*(\S+)", line)
        if head:
            flush()
            job_id, current = head.group(1), {}
        elif "=" in line and job_id:
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
    flush()
    return records


class PBS(Backend):
    name = "pbs"

    def __init__(self, flavor: str = "pro"):
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
            opts.append(["-o", f"{job.log_dir}/{job.job_name}.{name}.out"])
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
            return f"horovodrun -np {r.ranks} -H {hosts} "
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
        if not job_ids:
            return {}
        cmd = ["qstat", "-f", *(["-x"] if self.flavor == "pro" else []), *job_ids]
        proc = run_scheduler(cmd, "qstat", check=False)
        return parse_qstat_f(proc.stdout)

    def find_jobs(self, names: list[str], since: str) -> dict[str, str]:
        out = run_scheduler(
            ["qstat", "-f", *(["-x"] if self.flavor == "pro" else [])], "qstat", check=False
        ).stdout
        found, job_id = {}, None
        for line in out.splitlines():
            head = re.match(r"^Job Id:\s*(\S+)", line)
            if head:
                job_id = head.group(1)
            elif job_id and line.strip().startswith("Job_Name"):
                name = line.split("=", 1)[1].strip()
                if name in names:
                    found.setdefault(name, job_id)
        return found

    def cancel(self, job_ids: list[str]) -> None:
        if job_ids:
            run_scheduler(["qdel", *job_ids], "qdel", check=False)
