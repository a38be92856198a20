"""Horovod across two nodes of the test cluster (slurm/start-two-node-cluster.sh), issue 17.

    bash slurm/start-two-node-cluster.sh && python benchmarks/bench_twonode.py [--repeats 3]

Per model, in one run and alternating: one rank on n1 (batch B), one rank on each of n1 and n2
under `srun --mpi=pmix` (batch B/2 each, the same global batch; gradients cross the nodes'
network, TCP over the namespaces' bridge, instead of shared memory), and the ceiling: two
independent one-rank runs at once, one per node, with no communication. Both nodes share this
machine's cores, so the ceiling is this machine's, as in benchmarks/bench_train.py. Efficiency =
throughput(2 ranks) / (2 x throughput(1 rank)); of_ceiling = efficiency / ceiling. Writes
results/benchmarks_twonode.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
ENV.setdefault("HPCDL_DATA_DIR", str(ROOT.parent / "shared" / "data"))
CONFIGS = {"mnist": "mnist_cnn.yaml", "indian_pines": "indian_pines_3dcnn.yaml"}
BATCH = {"mnist": 128, "indian_pines": 50}


def srun(nodes: str, tasks: int, run_dir: Path, model: str, sets: list[str]) -> subprocess.Popen:
    """One `hpcdl train` step on `nodes` (one task per node), started, not waited for."""
    cmd = ["srun", "--mpi=pmix", "-w", nodes, "-N", str(tasks), "-n", str(tasks), "-t", "20"]
    cmd += ["--cpus-per-task=1", str(BIN / "hpcdl"), "train", str(ROOT / "jobs" / CONFIGS[model])]
    cmd += ["--run-dir", str(run_dir)]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def speed(run_dir: Path) -> float:
    """Median samples/s of the epochs after the first (tracing) of a finished run."""
    epochs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    values = [e["samples_per_second"] for e in epochs]
    return statistics.median(values[1:] if len(values) > 1 else values)


def finish(*procs: subprocess.Popen) -> None:
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"failed: {' '.join(proc.args)}\n{err.decode()[-2000:]}")


def measure(model: str, epochs: int, repeats: int, folder: Path) -> dict:
    """One rank, two ranks on two nodes, and two independent ranks at once, alternating."""
    base = [f"train.epochs={epochs}", "train.threads=1", "train.scale_lr=false"]
    if model == "mnist":
        base.append("data.train_subset=24000")
    batch = BATCH[model] - BATCH[model] % 2
    one, two, apart = [], [], []
    for r in range(repeats):
        d = folder / f"{model}{r}"
        finish(srun("n1", 1, d / "one", model, [*base, f"train.batch_size={batch}"]))
        one.append(speed(d / "one"))
        finish(srun("n1,n2", 2, d / "two", model, [*base, f"train.batch_size={batch // 2}"]))
        two.append(speed(d / "two"))
        a = srun("n1", 1, d / "a", model, [*base, f"train.batch_size={batch}"])
        b = srun("n2", 1, d / "b", model, [*base, f"train.batch_size={batch}"])
        finish(a, b)
        apart.append((speed(d / "a") + speed(d / "b")) / (2 * one[-1]))
    efficiency = [t / (2 * o) for o, t in zip(one, two, strict=True)]
    ceiling = statistics.median(apart)
    return {
        "one_rank": statistics.median(one),
        "two_ranks": statistics.median(two),
        "efficiency_median": statistics.median(efficiency),
        "ceiling": ceiling,
        "of_ceiling": statistics.median(efficiency) / ceiling,
        "efficiencies": efficiency,
        "ceilings": apart,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--models", nargs="+", choices=sorted(CONFIGS), default=sorted(CONFIGS))
    args = parser.parse_args()
    # the run directories must be on a file system every node sees: this machine's
    with tempfile.TemporaryDirectory(dir=ROOT / "results") as tmp:
        result = {m: measure(m, args.epochs, args.repeats, Path(tmp)) for m in args.models}
    out = {"repeats": args.repeats, "epochs": args.epochs, "srun_pmix_two_nodes": result}
    (ROOT / "results" / "benchmarks_twonode.json").write_text(json.dumps(out, indent=2) + "\n")
    print("| model | 1 rank samples/s | 2 nodes x 1 rank samples/s | efficiency | ceiling | "
          "of ceiling |\n|---|---|---|---|---|---|")  # fmt: skip
    for m, v in result.items():
        print(
            f"| {m} | {v['one_rank']:.0f} | {v['two_ranks']:.0f} | {v['efficiency_median']:.2f} "
            f"| {v['ceiling']:.2f} | {v['of_ceiling']:.2f} |"
        )


if __name__ == "__main__":
    main()
