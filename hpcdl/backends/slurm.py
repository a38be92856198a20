"""SLURM: sbatch arrays (%N throttle), srun --mpi=pmix for multi-rank points, one sacct a poll."""

from __future__ import annotations

import re
from pathlib import Path

from submitit.slurm.slurm import read_job_id

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

SACCT_FIELDS = (
    "JobID,JobName,State,ExitCode,ElapsedRaw,Start,End,AllocCPUS,AllocTRES,NodeList,MaxRSS"
)
_GPU_TRES = re.compile(r"gres/gpu(?::[^=,]+)?=(\d+)")
_NO_SUCH_JOB = "Invalid job id specified"  # squeue -j with one id that slurmctld forgot


def normalise_state(raw: str) -> str:
    """'CANCELLED by 0' -> CANCELLED; the states hpcdl reasons about."""
    state = raw.split()[0] if raw else "UNKNOWN"
    return {
        "NODE_FAIL": "FAILED",
        "BOOT_FAIL": "FAILED",
        "DEADLINE": "TIMEOUT",
        "REQUEUED": "PENDING",
        "REQUEUE_HOLD": "PENDING",
        "REQUEUE_FED": "PENDING",
        "RESIZING": "RUNNING",
        "SUSPENDED": "RUNNING",
        "COMPLETING": "RUNNING",
        "CONFIGURING": "RUNNING",
        "STAGE_OUT": "RUNNING",
        "SIGNALING": "RUNNING",
        "PREEMPTED": "PREEMPTED",
        "OUT_OF_MEMORY": "OUT_OF_MEMORY",
    }.get(state, state)


def exit_code(text: str) -> int | None:
    """sacct's 'code:signal' -> the shell's view: code, or 128 + signal when killed."""
    if not text or ":" not in text:
        return as_int(text)
    code, sig = (as_int(x) or 0 for x in text.split(":", 1))
    return 128 + sig if sig else code


def _rss_bytes(text: str) -> float:
    units = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    if not text:
        return 0.0
    if text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def parse_sacct(text: str) -> dict[str, JobRecord]:
    """Records keyed 'ID' and 'ID_INDEX' from `sacct -P -n -o SACCT_FIELDS` (steps fold into
    their job: the largest MaxRSS); pending ranges like 12_[3-9%2] expand to every index."""
    names = SACCT_FIELDS.split(",")
    records: dict[str, JobRecord] = {}
    steps: dict[str, list[str]] = {}
    for line in text.splitlines():
        row = dict(zip(names, line.split("|"), strict=False))
        job_id = row.get("JobID", "")
        if not job_id:
            continue
        if "." in job_id:  # a step (batch, extern, 0, ...)
            steps.setdefault(job_id.split(".")[0], []).append(row.get("MaxRSS", ""))
            continue
        gpus = _GPU_TRES.search(row.get("AllocTRES", ""))
        record = JobRecord(
            state=normalise_state(row.get("State", "")),
            raw_state=row.get("State", ""),
            exit_code=exit_code(row.get("ExitCode", "")),
            elapsed_seconds=float(as_int(row.get("ElapsedRaw")) or 0),
            start=row.get("Start") if row.get("Start") not in ("Unknown", "None") else None,
            end=row.get("End") if row.get("End") not in ("Unknown", "None") else None,
            cpus=as_int(row.get("AllocCPUS")),
            gpus=int(gpus.group(1)) if gpus else 0,
            node=row.get("NodeList") or None,
        )
        try:
            parts = read_job_id(job_id)
        except (ValueError, AttributeError):
            continue
        for part in parts:
            if len(part) == 3:
                for index in range(int(part[1]), int(part[2]) + 1):
                    records[f"{part[0]}_{index}"] = record
            else:
                records["_".join(part)] = record
    for job_id, rss in steps.items():
        if job_id in records:
            biggest = max(rss, key=_rss_bytes, default="")
            records[job_id].max_rss = biggest or None
    return records


class Slurm(Backend):
    name = "slurm"
    can_requeue = True
    index_expr = "${SLURM_ARRAY_TASK_ID:-0}"
    job_id_expr = "${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}_${SLURM_ARRAY_TASK_ID:-0}"

    def directives(self, job: ScriptJob) -> list[str]:
        r = job.resources
        lines = [f"--job-name={job.job_name}"]
        if job.kind == "collect":
            lines += [
                "--ntasks=1",
                "--cpus-per-task=1",
                "--time=00:30:00",
                f"--output={directive_path(job.log_dir / 'collect-%j.out', quote_spaces=True)}",
            ]
            lines += [
                f"--{k}={v}"
                for k, v in (("partition", r.partition), ("account", r.account), ("qos", r.qos))
                if v
            ]
            return [f"#SBATCH {line}" for line in lines]
        array = f"0-{job.count - 1}" + (f"%{job.throttle}" if job.throttle else "")
        lines += [
            f"--array={array}",
            f"--nodes={r.nodes}",
            f"--ntasks-per-node={r.tasks_per_node}",
            f"--cpus-per-task={r.cpus_per_task}",
            f"--time={r.time}",
            f"--output={directive_path(job.log_dir / 'slurm-%A_%a.out', quote_spaces=True)}",
            "--open-mode=append",
        ]
        if job.requeue:  # warn before the time limit; the run checkpoints and requeues itself
            warn = min(r.signal_seconds, r.time_seconds // 2)
            lines += [f"--signal=B:USR1@{warn}", "--requeue"]
        if r.gres:
            lines.append(f"--gres={r.gres}")
        elif r.gpus_per_node:
            lines.append(f"--gres=gpu:{r.gpus_per_node}")
        for key in ("mem", "partition", "account", "qos", "constraint"):
            value = getattr(r, key)
            if value:
                lines.append(f"--{key}={value}")
        lines += r.extra
        return [f"#SBATCH {line}" for line in lines]

    def launch(self, job: ScriptJob) -> str:
        r = job.resources
        if r.ranks == 1:
            return ""
        if job.launcher in ("auto", "srun"):
            # one dead rank ends the step instead of leaving the others in an allreduce
            return f"srun --mpi=pmix --kill-on-bad-exit=1 --cpus-per-task={r.cpus_per_task} "
        if job.launcher == "mpirun":
            return "mpirun -np $SLURM_NTASKS "
        hosts = horovod_hosts_expr(
            'scontrol show hostnames "$SLURM_JOB_NODELIST"', r.tasks_per_node or 1
        )
        return f"{horovodrun(job)} -np $SLURM_NTASKS -H {hosts} "

    def max_array_size(self) -> int:
        out = run_scheduler(["scontrol", "show", "config"], "scontrol show config").stdout
        m = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
        return int(m.group(1)) if m else 1001

    def submit(self, script: Path, job: ScriptJob, depend: list[str] | None = None) -> str:
        cmd = ["sbatch", "--parsable"]
        if depend:
            cmd.append("--dependency=afterany:" + ":".join(depend))
        out = run_scheduler([*cmd, str(script)], f"sbatch {script.name}").stdout.strip()
        return out.split(";")[0]

    def query(self, job_ids: list[str]) -> dict[str, JobRecord]:
        """One sacct for all jobs, one squeue for those sacct does not know yet. A command that
        fails or times out raises: "no record" would make `resume` run live points twice."""
        if not job_ids:
            return {}
        records = parse_sacct(_sacct(["-P", "-n", "-o", SACCT_FIELDS, "-j", ",".join(job_ids)]))
        missing = [
            j
            for j in job_ids
            if j not in records and not any(k.startswith(f"{j}_") for k in records)
        ]
        # NODE_FAIL / PREEMPTED while SLURM requeues the job (about 10 s): squeue still has it
        ended = {k for k, r in records.items() if _may_be_requeued(r)}
        if missing or ended:  # just submitted (not in accounting yet), no accounting at all
            for key, queued in _squeue(
                [*missing, *sorted({k.split("_")[0] for k in ended})]
            ).items():
                if key in ended:  # requeued: the earlier run's end is kept as its reason
                    queued.raw_state = (
                        f"{queued.raw_state} (requeued after {records[key].raw_state})"
                    )
                if key in ended or key not in records:
                    records[key] = queued
        return records

    def cancel(self, job_ids: list[str]) -> None:
        if job_ids:
            run_scheduler(["scancel", *job_ids], "scancel")

    def find_jobs(self, names: list[str], since: str) -> dict[str, str]:
        if not names:
            return {}
        found: dict[str, str] = {}
        queued = run_scheduler(
            ["squeue", "-h", "-r", "--name", ",".join(names), "-o", "%F|%j"], "squeue"
        ).stdout
        since = since.split("+")[0]  # sacct wants local time without the offset
        done = _sacct(
            ["-X", "-n", "-P", "-S", since, "--name", ",".join(names), "-o", "JobID,JobName"]
        )
        for line in [*queued.splitlines(), *done.splitlines()]:
            job_id, _, name = line.partition("|")
            if name in names and job_id:
                found.setdefault(name, job_id.split("_")[0])
        return found


def _may_be_requeued(record: JobRecord) -> bool:
    """An end that SLURM follows with a requeue when the job allows it."""
    return record.raw_state.split()[:1] == ["NODE_FAIL"] or record.state == "PREEMPTED"


def _squeue(job_ids: list[str]) -> dict[str, JobRecord]:
    """What squeue says of these jobs and their array tasks (jobs it forgot are left out)."""
    cmd = ["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(job_ids)]
    proc = run_scheduler(cmd, "squeue", check=False)
    if proc.returncode != 0 and _NO_SUCH_JOB not in proc.stderr:
        raise scheduler_failure(proc, "squeue")
    records = {}
    for line in proc.stdout.splitlines():
        key, _, state = line.partition("|")
        records[key.strip()] = JobRecord(state=normalise_state(state), raw_state=state)
    return records


def _sacct(args: list[str]) -> str:
    """sacct's output; '' on a cluster without accounting (squeue is all there is); any other
    failure raises."""
    proc = run_scheduler(["sacct", *args], "sacct", check=False)
    if proc.returncode == 0:
        return proc.stdout
    if "accounting storage is disabled" in proc.stderr.lower():
        return ""
    raise scheduler_failure(proc, "sacct")
