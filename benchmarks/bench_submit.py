"""Submitting a 1,000-point grid to a real SLURM cluster: scheduler calls and wall time.

    python benchmarks/bench_submit.py [--points 1000] [--repeats 3]

Needs the test cluster (bash slurm/start-test-cluster.sh). The jobs are submitted held
(--hold) and cancelled afterwards, so nothing trains. Writes results/benchmarks/submit.{json,md}.
Targets (issue 3): a handful of scheduler calls, `hpcdl sweep` under 5 s, 1-2 calls per status.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
HPCDL = str(Path(sys.executable).with_name("hpcdl"))


def spec_for(points: int, folder: Path) -> Path:
    side = round(points ** (1 / 3))
    assert side**3 == points, "use a cube number of points (e.g. 1000)"
    spec = {
        "name": "bench1000",
        "config": str(ROOT / "jobs" / "mnist_cnn.yaml"),
        "grid": {
            "train.lr": {"start": 1e-4, "stop": 1e-2, "num": side, "log": True},
            "train.batch_size": [16 * (i + 1) for i in range(side)],
            "model.dropout": {"start": 0.0, "stop": 0.45, "num": side},
        },
        "resources": {"time": "00:10:00", "extra": ["--hold"]},
        "backend": "slurm",
        "max_concurrent": 50,
        "results_dir": str(folder / "results"),
    }
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def timed(cmd: list[str], log: Path) -> tuple[float, list[str]]:
    log.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "HPCDL_SCHEDULER_LOG": str(log)},
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr}")
    calls = log.read_text().splitlines() if log.exists() else []
    return wall, calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sweeps, statuses = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            log = folder / "calls.log"
            spec = spec_for(args.points, folder)
            wall, calls = timed([HPCDL, "sweep", str(spec)], log)
            sweeps.append(
                {"seconds": wall, "calls": len(calls), "commands": [c.split()[0] for c in calls]}
            )
            sweep_dir = folder / "results" / "bench1000"
            for _ in range(3):
                wall, calls = timed([HPCDL, "status", str(sweep_dir)], log)
                statuses.append({"seconds": wall, "calls": len(calls)})
            subprocess.run([HPCDL, "cancel", str(sweep_dir)], capture_output=True, check=True)
    result = {
        "points": args.points,
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()}, "
        f"{__import__('os').cpu_count()} CPUs), Slurm "
        + subprocess.run(["sinfo", "-V"], capture_output=True, text=True).stdout.strip(),
        "sweep_seconds_median": statistics.median(s["seconds"] for s in sweeps),
        "sweep_scheduler_calls": sweeps[0]["calls"],
        "sweep_commands": sweeps[0]["commands"],
        "status_seconds_median": statistics.median(s["seconds"] for s in statuses),
        "status_scheduler_calls_max": max(s["calls"] for s in statuses),
        "runs": {"sweep": sweeps, "status": statuses},
    }
    out = ROOT / "results" / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    (out / "submit.json").write_text(json.dumps(result, indent=2) + "\n")
    md = (
        f"# Submitting a {args.points}-point grid to SLURM\n\n"
        f"Measured with `python benchmarks/bench_submit.py` on {result['machine']}; "
        f"medians of {args.repeats} sweeps and {len(statuses)} status polls (jobs held, then "
        "cancelled).\n\n"
        "| what | measured | target |\n|---|---|---|\n"
        f"| `hpcdl sweep` wall time (includes Python start-up, validation of every point, "
        f"{args.points} run directories) | {result['sweep_seconds_median']:.2f} s | < 5 s |\n"
        f"| scheduler calls to submit | {result['sweep_scheduler_calls']} "
        f"({', '.join(result['sweep_commands'])}) | a handful |\n"
        f"| `hpcdl status` wall time | {result['status_seconds_median']:.2f} s | - |\n"
        f"| scheduler calls per status poll | {result['status_scheduler_calls_max']} | 1-2 |\n"
    )
    (out / "submit.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
