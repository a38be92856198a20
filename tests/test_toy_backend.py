"""ARCHITECTURE.md's recipe "A scheduler", followed once: a user's backend of a few lines,
named in a spec as `module:Class`, runs a sweep that status, resume and collect understand."""

from __future__ import annotations

import sys

import yaml

from hpcdl import sweep
from hpcdl.collect import collect
from hpcdl.manifest import load_manifest

TOY = '''
import json
import os
import subprocess
from pathlib import Path

from hpcdl.backends.base import Backend, JobRecord


class Toy(Backend):
    """Runs each array task as soon as it is submitted; its ledger ($TOY_LEDGER) says how each
    one ended, as a scheduler's accounting would."""

    name = "toy"
    index_expr = "${1}"
    job_id_expr = "toy"

    def submit(self, script, job, depend=None):
        ledger = Path(os.environ["TOY_LEDGER"])
        states = json.loads(ledger.read_text()) if ledger.exists() else {}
        job_id = str(1 + len({key.split("_")[0] for key in states}))
        for index in range(job.count if job.kind == "array" else 0):
            code = subprocess.run(["bash", str(script), str(index)]).returncode
            states[f"{job_id}_{index}"] = ["COMPLETED" if code == 0 else "FAILED", code]
        states.setdefault(job_id, ["COMPLETED", 0])
        ledger.write_text(json.dumps(states))
        return job_id

    def query(self, job_ids):
        states = json.loads(Path(os.environ["TOY_LEDGER"]).read_text())
        return {
            key: JobRecord(state, exit_code=code)
            for key, (state, code) in states.items()
            if key.split("_")[0] in job_ids
        }

    def cancel(self, job_ids):
        pass

    def find_jobs(self, names, since):
        return {}
'''


def test_a_users_backend_runs_a_sweep_that_status_resume_and_collect_understand(
    tmp_path, monkeypatch
):
    code = tmp_path / "code"
    code.mkdir()
    (code / "toysched.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(code))
    results = tmp_path / "results"
    monkeypatch.setenv("TOY_LEDGER", str(tmp_path / "ledger.json"))
    flag = tmp_path / "second-try"
    command = (
        f"{sys.executable} -c 'import os, sys; sys.exit(0 if {{x}} == 1 or os.path.exists"
        f'("{flag}") else 4)\''
    )
    spec = tmp_path / "toy.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "toy",
                "program": {"command": command, "workdir": str(code)},
                "grid": {"x": [1, 2]},
                "backend": "toysched:Toy",
                "results_dir": str(results),
                "collect": False,
            }
        )
    )
    manifest = sweep.create(spec, out=lambda _line: None)
    states = {p.label: (p.state, p.reason, p.job) for p in sweep.statuses(manifest)}
    assert states == {"x=1": ("FINISHED", "", "1_0"), "x=2": ("FAILED", "exit 4", "1_1")}

    flag.touch()
    resumed = sweep.resume(load_manifest(results / "toy"), out=lambda _line: None)
    assert [s.job_id for s in resumed] == ["2"]
    states = {p.label: (p.state, p.job) for p in sweep.statuses(load_manifest(results / "toy"))}
    assert states == {"x=1": ("FINISHED", "1_0"), "x=2": ("FINISHED", "2_0")}
    summary = collect(results / "toy", out=lambda _line: None)
    assert list(summary["state"]) == ["FINISHED", "FINISHED"]
    assert list(summary["scheduler_state"]) == ["COMPLETED", "COMPLETED"]
