"""Collect and report on 10,000 run directories: wall time and peak memory.

    python benchmarks/bench_collect.py [--points 10000] [--repeats 3]

The run directories are written by benchmarks/synthetic.py in the real format (config.yaml,
metrics.jsonl, result.json, job.out, local.json, a real manifest), 20 epochs each, 4% failed.
Targets (issue 4): collect < 10 s, report < 30 s, memory < 2 GB; the report's HTML stays a few
MB (issue 15: it draws a sample of the runs, not one trace each).
Writes results/benchmarks/collect.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.synthetic import make_sweep  # noqa: E402

HPCDL = str(Path(sys.executable).with_name("hpcdl"))
MEASURE = (
    "import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], "
    "capture_output=True); sys.exit(p.returncode) if p.returncode else "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def measured(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one command in its own process."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed")
    return wall, int(proc.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        sweep = make_sweep(Path(tmp), args.points, epochs=20, fail_every=25)
        made = time.perf_counter() - t0
        for _ in range(args.repeats):
            c_wall, c_mem = measured([HPCDL, "collect", str(sweep)])
            r_wall, r_mem = measured([HPCDL, "report", str(sweep), "--no-collect"])
            html_mb = (sweep / "report.html").stat().st_size / 1e6
            runs.append(
                {
                    "collect_s": c_wall,
                    "collect_mb": c_mem,
                    "report_s": r_wall,
                    "report_mb": r_mem,
                    "report_html_mb": html_mb,
                }
            )
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    result = {
        "points": args.points,
        "epochs_per_point": 20,
        "generate_s": made,
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "median": med,
        "runs": runs,
    }
    out = ROOT / "results" / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    (out / "collect.json").write_text(json.dumps(result, indent=2) + "\n")
    md = (
        f"# Collect and report on {args.points:,} run directories\n\n"
        f"Measured with `python benchmarks/bench_collect.py` on {result['machine']}; medians "
        f"of {args.repeats} runs, each command in a fresh process (Python start-up included)."
        "\n\n| command | wall time | peak memory | target |\n|---|---|---|---|\n"
        f"| `hpcdl collect` | {med['collect_s']:.2f} s | {med['collect_mb']:.0f} MB | "
        "< 10 s, < 2 GB |\n"
        f"| `hpcdl report --no-collect` | {med['report_s']:.2f} s | {med['report_mb']:.0f} MB | "
        "< 30 s, < 2 GB |\n"
        f"\nreport.html: {med['report_html_mb']:.1f} MB (plotly.js and DataTables embedded, about "
        "5.6 MB, plus the data of at most 2,000 drawn and 1,000 listed runs).\n"
    )
    (out / "collect.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
