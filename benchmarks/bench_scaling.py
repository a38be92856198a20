"""Where Horovod's scaling on one machine goes: knobs side by side with the baseline.

    python benchmarks/bench_scaling.py MODEL [--repeats 3] [--epochs 3] [--steps N] [--batch B]
        VARIANT...

Runs, in one rotation per repeat: 1 rank x batch B under each launcher's baseline, 2 ranks x B/2
under every VARIANT, and the machine's ceiling (one process of 1 thread x B/2 alone, two of them
at once, no communication; see bench_train.scaling). A variant's efficiency is its 2-rank
throughput over 2 x its launcher's 1-rank baseline of the same repeat, of_ceiling that over the
same repeat's ceiling; medians over repeats, epochs after the first. Variants (VARIANTS below):
a launcher prefix and extra environment for the ranks. Prints a table and writes
results/scaling_knobs.json (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_train import (  # noqa: E402
    BATCH,
    ROOT,
    cpu_ms_per_sample,
    hpcdl_epochs,
    scaling_base,
    speed,
    together,
)


def mpirun(*extra: str):
    return lambda n: ["mpirun", "-np", str(n), *extra]


def horovodrun(*extra: str):
    return lambda n: ["horovodrun", "-np", str(n), "-H", f"localhost:{n}", "--gloo", *extra]


NONE = ("--bind-to", "none")
BUSY = {"OMPI_MCA_mpi_yield_when_idle": "0"}  # Open MPI's own default (hpcdl sets 1)
# name: (launcher's baseline name, launcher prefix, environment for the ranks); "mpi" and "gloo"
# are hpcdl's defaults (hpcdl/distributed.py RANK_DEFAULTS, the local backend's launchers)
VARIANTS = {
    "mpi": ("mpi", mpirun(*NONE), {}),
    "mpi_busy_poll": ("mpi", mpirun(*NONE), BUSY),
    "mpi_busy_poll_bind_core": ("mpi", mpirun("--bind-to", "core"), BUSY),
    "mpi_bind_core": ("mpi", mpirun("--bind-to", "core"), {}),
    "mpi_cycle_0.5": ("mpi", mpirun(*NONE), {"HOROVOD_CYCLE_TIME": "0.5"}),
    "mpi_cycle_2": ("mpi", mpirun(*NONE), {"HOROVOD_CYCLE_TIME": "2"}),
    "mpi_cycle_5": ("mpi", mpirun(*NONE), {"HOROVOD_CYCLE_TIME": "5"}),
    "mpi_cycle_20": ("mpi", mpirun(*NONE), {"HOROVOD_CYCLE_TIME": "20"}),
    "mpi_no_fusion": ("mpi", mpirun(*NONE), {"HOROVOD_FUSION_THRESHOLD": "0"}),
    "mpi_no_cache": ("mpi", mpirun(*NONE), {"HOROVOD_CACHE_CAPACITY": "0"}),
    "mpi_affinity": ("mpi", mpirun(*NONE), {"HOROVOD_THREAD_AFFINITY": "0,1"}),
    "gloo": ("gloo", horovodrun(), {}),
    "gloo_cycle_0.5": ("gloo", horovodrun(), {"HOROVOD_CYCLE_TIME": "0.5"}),
    "gloo_cycle_2": ("gloo", horovodrun(), {"HOROVOD_CYCLE_TIME": "2"}),
    "gloo_cycle_5": ("gloo", horovodrun(), {"HOROVOD_CYCLE_TIME": "5"}),
    "gloo_cycle_20": ("gloo", horovodrun(), {"HOROVOD_CYCLE_TIME": "20"}),
    "gloo_no_fusion": ("gloo", horovodrun(), {"HOROVOD_FUSION_THRESHOLD": "0"}),
    "gloo_no_cache": ("gloo", horovodrun(), {"HOROVOD_CACHE_CAPACITY": "0"}),
    "gloo_affinity": ("gloo", horovodrun(), {"HOROVOD_THREAD_AFFINITY": "0,1"}),
}
# variants that change a train setting of the 2-rank run: name -> (variant it modifies, settings)
SETTINGS = {
    "mpi_fp16": ("mpi", ["train.compression=fp16"]),
    "gloo_fp16": ("gloo", ["train.compression=fp16"]),
}
for _name, (_of, _sets) in SETTINGS.items():
    VARIANTS[_name] = VARIANTS[_of]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", choices=sorted(BATCH))
    parser.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="steps per epoch (default all)")
    parser.add_argument(
        "--batch", type=int, default=None, help="global batch (default: as bench_train)"
    )
    parser.add_argument("--set", action="append", default=[], help="extra train settings")
    parser.add_argument("--no-ceiling", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "scaling_knobs.json")
    args = parser.parse_args()
    model = args.model
    batch = (args.batch or BATCH[model]) - (args.batch or BATCH[model]) % 2
    base = [*scaling_base(model, args.epochs), *args.set]
    if args.steps:
        base.append(f"train.steps_per_epoch={args.steps}")
    baselines = sorted({VARIANTS[v][0] for v in args.variants})
    runs = [("one", b) for b in baselines] + [("two", v) for v in args.variants]
    if not args.no_ceiling:
        runs += [("alone", ""), ("pair", "")]
    got: dict[tuple[str, str], list] = {r: [] for r in runs}
    cpu: dict[tuple[str, str], list] = {r: [] for r in runs}  # CPU ms per sample, all ranks
    loads = [os.getloadavg()[0]]
    steps, started = args.steps, datetime.now().isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for r in range(args.repeats):
            for kind, name in runs[r % len(runs) :] + runs[: r % len(runs)]:
                if kind in ("alone", "pair"):
                    if steps is None:  # a rank's steps per epoch, from a 1-rank run of B
                        launcher, env = VARIANTS[baselines[0]][1:]
                        one = hpcdl_epochs(
                            model, folder, [*base, f"train.batch_size={batch}"], launcher(1), env
                        )
                        steps = one[0]["steps"]
                    sets = [*base, f"train.batch_size={batch // 2}"]
                    sets.append(f"train.steps_per_epoch={steps}")
                    done = together(model, folder, sets, 1 if kind == "alone" else 2)
                    got[kind, name].append([speed(x) for x in done])
                    cpu[kind, name].append(
                        statistics.mean(cpu_ms_per_sample(x, batch // 2) or 0 for x in done)
                    )
                else:
                    n = 1 if kind == "one" else 2
                    launcher, env = VARIANTS[name][1:]
                    sets = [*base, f"train.batch_size={batch // n}"]
                    if kind == "two":
                        sets += SETTINGS.get(name, ("", []))[1]
                    records = hpcdl_epochs(model, folder, sets, launcher(n), env)
                    steps = steps or records[0]["steps"]
                    got[kind, name].append(speed(records))
                    cpu[kind, name].append(cpu_ms_per_sample(records, batch // n) or 0)
                print(
                    kind,
                    name,
                    got[kind, name][-1],
                    f"{cpu[kind, name][-1]:.3f} cpu ms/sample",
                    os.getloadavg()[0],
                    flush=True,
                )
    ceilings = None
    if not args.no_ceiling:
        ceilings = [
            sum(p) / (2 * a[0]) for p, a in zip(got["pair", ""], got["alone", ""], strict=True)
        ]
    rows = {}
    for v in args.variants:
        one, two = got["one", VARIANTS[v][0]], got["two", v]
        effs = [t / (2 * o) for o, t in zip(one, two, strict=True)]
        rows[v] = {
            "environment": VARIANTS[v][2],
            "settings": SETTINGS.get(v, ("", []))[1],
            "launcher": VARIANTS[v][1](2),
            "two_ranks": statistics.median(two),
            "two_ranks_each": two,
            "efficiency_median": statistics.median(effs),
            "efficiencies": effs,
            "cpu_ms_per_sample": statistics.median(cpu["two", v]),
        }
        if ceilings:
            rows[v]["of_ceiling"] = statistics.median(
                e / c for e, c in zip(effs, ceilings, strict=True)
            )
    result = {
        "model": model,
        "started": started,
        "repeats": args.repeats,
        "epochs": args.epochs,
        "steps_per_epoch": steps,
        "global_batch": batch,
        "extra_settings": args.set,
        "load_average_1min": {"start": loads[0], "end": os.getloadavg()[0]},
        "one_rank": {b: got["one", b] for b in baselines},
        "one_rank_cpu_ms_per_sample": {b: statistics.median(cpu["one", b]) for b in baselines},
        "alone_cpu_ms_per_sample": statistics.median(cpu["alone", ""]) if ceilings else None,
        "ceilings": ceilings,
        "variants": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"ceiling {statistics.median(ceilings):.3f}" if ceilings else "no ceiling")
    print("| variant | 2 ranks samples/s | efficiency | of ceiling | CPU ms/sample |")
    for v, row in rows.items():
        print(
            f"| {v} | {row['two_ranks']:.0f} | {row['efficiency_median']:.3f} | "
            f"{row.get('of_ceiling', float('nan')):.3f} | {row['cpu_ms_per_sample']:.3f} |"
        )


if __name__ == "__main__":
    main()
