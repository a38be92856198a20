"""Training speed: hpcdl against plain Keras, Horovod scaling on one machine, the input pipeline.

    python benchmarks/bench_train.py [--repeats 3] [--quick]

1. Throughput of `hpcdl train` against benchmarks/plain_keras.py (same model, data, batch, threads),
   run alternately; target >= 0.95 of the plain script.
2. Horovod scaling: 1 rank x 1 thread against 2 ranks x 1 thread each, same global batch, under
   horovodrun (Gloo) and mpirun (MPI); efficiency = throughput(2) / (2 x throughput(1)).
3. Input pipeline (Indian Pines): seconds per step spent waiting for data, with and without the
   HDF5 patch cache.
Every figure is a median over repeats and over epochs after the first (warm-up). Writes
results/benchmarks.md (and .json). Needs HPCDL_DATA_DIR (or ../shared/data).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HPCDL = str(BIN / "hpcdl")
ENV = {
    **os.environ,
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "PATH": f"{BIN}:{os.environ['PATH']}",
}
ENV.setdefault("HPCDL_DATA_DIR", str(ROOT.parent / "shared" / "data"))
CONFIGS = {
    "mnist": ROOT / "jobs" / "mnist_cnn.yaml",
    "indian_pines": ROOT / "jobs" / "indian_pines_3dcnn.yaml",
}
BATCH = {"mnist": 128, "indian_pines": 50}


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(cmd, env={**ENV, **(env or {})}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")


def train_command(
    model: str, run_dir: Path, sets: list[str], launcher: list[str] | None = None
) -> list[str]:
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [*(launcher or []), HPCDL, "train", str(CONFIGS[model]), "--run-dir", str(run_dir)]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def epochs_of(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def hpcdl_epochs(
    model: str,
    folder: Path,
    sets: list[str],
    launcher: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> list[dict]:
    run_dir = folder / "run"
    [records] = watched([(train_command(model, run_dir, sets, launcher), run_dir)], env)
    return records


def together(model: str, folder: Path, sets: list[str], n: int = 2) -> list[list[dict]]:
    """`n` independent one-process trainings started at once (no Horovod communication)."""
    dirs = [folder / f"alone{i}" for i in range(n)]
    return watched([(train_command(model, d, sets), d) for d in dirs])


def watched(runs: list[tuple[list[str], Path]], env: dict[str, str] | None = None) -> list:
    """Run commands at once; each one's epoch records, with `cpu_seconds`: the CPU time its
    training processes (all ranks, all threads) spent in that epoch, sampled when the epoch's
    line appears in metrics.jsonl (every 0.1 s; training only, so set no validation)."""
    import psutil

    logs = [run_dir.with_name(run_dir.name + ".log") for _, run_dir in runs]
    procs = []
    for (cmd, _), log in zip(runs, logs, strict=True):
        with open(log, "w") as out:  # a file, not a pipe: a full pipe would stop the run
            procs.append(subprocess.Popen(cmd, env={**ENV, **(env or {})}, stdout=out, stderr=out))
    cpu: list[dict[int, float]] = [{} for _ in runs]  # per run: its rank processes' CPU
    marks: list[list[float]] = [[] for _ in runs]
    while any(p.poll() is None for p in procs):
        for i, (p, (_, run_dir)) in enumerate(zip(procs, runs, strict=True)):
            try:
                family = [psutil.Process(p.pid), *psutil.Process(p.pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                family = []
            for q in family:
                try:
                    args = q.cmdline()
                    if any(Path(a).name == "hpcdl" for a in args[:2]) and str(run_dir) in args:
                        t = q.cpu_times()
                        cpu[i][q.pid] = t.user + t.system
                except psutil.Error:
                    pass
            metrics = run_dir / "metrics.jsonl"
            lines = len(metrics.read_text().splitlines()) if metrics.exists() else 0
            while len(marks[i]) < lines:
                marks[i].append(sum(cpu[i].values()))
        time.sleep(0.1)
    out = []
    for p, (cmd, run_dir), mark, log in zip(procs, runs, marks, logs, strict=True):
        if p.returncode != 0:
            raise SystemExit(f"failed: {' '.join(cmd)}\n{log.read_text()[-2000:]}")
        records = epochs_of(run_dir)
        for i, record in enumerate(records[1:], start=1):  # epoch 1 holds the start-up
            if i < len(mark):
                record["cpu_seconds"] = mark[i] - mark[i - 1]
        out.append(records)
    return out


def after_warmup(values: list[float]) -> float:
    return statistics.median(values[1:] if len(values) > 1 else values)


def throughput(model: str, epochs: int, threads: int, repeats: int, folder: Path) -> dict:
    plain, ours = [], []
    sets = [
        f"train.epochs={epochs}",
        f"train.threads={threads}",
        f"train.batch_size={BATCH[model]}",
    ]
    if model == "mnist":
        sets.append("data.validation_split=0.2")
    for r in range(repeats):
        order = ("plain", "hpcdl") if r % 2 == 0 else ("hpcdl", "plain")
        for which in order:
            if which == "plain":
                out = folder / "plain.json"
                run(
                    [
                        sys.executable,
                        str(ROOT / "benchmarks" / "plain_keras.py"),
                        model,
                        str(epochs),
                        str(BATCH[model]),
                        str(threads),
                        str(out),
                    ]
                )
                plain.append(
                    after_warmup([e["samples_per_second"] for e in json.loads(out.read_text())])
                )
            else:
                ours.append(
                    after_warmup(
                        [e["samples_per_second"] for e in hpcdl_epochs(model, folder, sets)]
                    )
                )
    ratios = [o / p for o, p in zip(ours, plain, strict=True)]
    return {
        "plain_samples_per_second": statistics.median(plain),
        "hpcdl_samples_per_second": statistics.median(ours),
        "ratio_median": statistics.median(ratios),
        "ratios": ratios,
    }


LAUNCHERS = {  # as hpcdl's local backend starts its ranks (hpcdl/backends/local.py)
    "gloo": lambda n: ["horovodrun", "-np", str(n), "-H", f"localhost:{n}", "--gloo"],
    "mpi": lambda n: ["mpirun", "-np", str(n), "--bind-to", "none"],
}


def scaling_base(model: str, epochs: int) -> list[str]:
    base = [f"train.epochs={epochs}", "train.threads=1", "train.scale_lr=false"]
    if model == "mnist":
        base.append("data.train_subset=24000")
    return base


def median_of(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def speed(records: list[dict]) -> float:
    return after_warmup([e["samples_per_second"] for e in records])


def cpu_ms_per_sample(records: list[dict], batch: int) -> float | None:
    """CPU milliseconds (all ranks' threads) per training sample, epochs after the first."""
    values = [
        1000 * e["cpu_seconds"] / (e["steps"] * e["ranks"] * batch)
        for e in records[1:]
        if "cpu_seconds" in e
    ]
    return statistics.median(values) if values else None


def scaling(
    model: str,
    epochs: int,
    repeats: int,
    folder: Path,
    variants: dict[str, tuple[Callable[[int], list[str]], dict[str, str]]] | None = None,
) -> dict:
    """Per launcher (or variant: launcher prefix, extra environment): 1 rank x batch B against
    2 ranks x B/2 (efficiency = throughput(2) / (2 x throughput(1))), and in the same rotation
    the machine's ceiling for that comparison: one process of 1 thread x B/2 alone against two
    such processes at once, each taking as many steps per epoch as a rank (no communication;
    ceiling = (throughput_a + throughput_b) / (2 x throughput alone)). of_ceiling is each
    repeat's efficiency over the same repeat's ceiling, median over repeats."""
    batch = BATCH[model] - BATCH[model] % 2
    base = scaling_base(model, epochs)
    variants = variants or {name: (launcher, {}) for name, launcher in LAUNCHERS.items()}
    runs = [(name, n) for name in variants for n in (2, 1)] + [("alone", 1), ("pair", 2)]
    got: dict[tuple[str, int], list] = {r: [] for r in runs}
    cpu: dict[tuple[str, int], list] = {r: [] for r in runs}  # CPU ms per sample, all ranks
    steps = None  # a rank's steps per epoch, from the first Horovod run
    skews = []
    for r in range(repeats):
        for name, n in runs[r % len(runs) :] + runs[: r % len(runs)]:
            if name in ("alone", "pair"):
                sets = [*base, f"train.batch_size={batch // 2}", f"train.steps_per_epoch={steps}"]
                done = together(model, folder, sets, n)
                got[name, n].append([speed(x) for x in done])
                cpu[name, n].append([cpu_ms_per_sample(x, batch // 2) for x in done])
                ends = [datetime.fromisoformat(x[-1]["time"]).timestamp() for x in done]
                skews.append(max(ends) - min(ends))
            else:
                launcher, env = variants[name]
                sets = [*base, f"train.batch_size={batch // n}"]
                records = hpcdl_epochs(model, folder, sets, launcher(n), env)
                steps = steps or records[0]["steps"]
                got[name, n].append(speed(records))
                cpu[name, n].append(cpu_ms_per_sample(records, batch // n))
    alone = [x[0] for x in got["alone", 1]]
    ceilings = [sum(p) / (2 * a) for p, a in zip(got["pair", 2], alone, strict=True)]
    out = {
        "ceiling": {
            "alone": statistics.median(alone),
            "pair": statistics.median(sum(p) for p in got["pair", 2]),
            "ceiling_median": statistics.median(ceilings),
            "ceilings": ceilings,
            "pair_end_skew_seconds": max(skews),
            "alone_cpu_ms_per_sample": median_of(x[0] for x in cpu["alone", 1]),
        }
    }
    for name in variants:
        one, two = got[name, 1], got[name, 2]
        effs = [t / (2 * o) for o, t in zip(one, two, strict=True)]
        fractions = [e / c for e, c in zip(effs, ceilings, strict=True)]
        out[name] = {
            "one_rank": statistics.median(one),
            "two_ranks": statistics.median(two),
            "efficiency_median": statistics.median(effs),
            "efficiencies": effs,
            "of_ceiling": statistics.median(fractions),
            "of_ceiling_each": fractions,
            # of_ceiling = two_over_pair x batch_factor: what communication leaves of two
            # independent processes' throughput, and what the rank's smaller batch costs
            "two_over_pair": statistics.median(
                t / sum(p) for t, p in zip(two, got["pair", 2], strict=True)
            ),
            "batch_factor": statistics.median(a / o for a, o in zip(alone, one, strict=True)),
            "one_rank_cpu_ms_per_sample": median_of(cpu[name, 1]),
            "two_ranks_cpu_ms_per_sample": median_of(cpu[name, 2]),
        }
    return out


def pipeline(epochs: int, repeats: int, folder: Path) -> dict:
    out = {}
    for cache in (True, False):
        waits, speeds = [], []
        for _ in range(repeats):
            records = hpcdl_epochs(
                "indian_pines",
                folder,
                [
                    f"train.epochs={epochs}",
                    "train.threads=2",
                    f"data.cache={str(cache).lower()}",
                    f"data.cache_dir={folder / 'cache'}",
                ],
            )
            waits.append(after_warmup([r["data_wait_seconds"] / r["steps"] for r in records]))
            speeds.append(after_warmup([r["samples_per_second"] for r in records]))
        out["cache" if cache else "no_cache"] = {
            "wait_ms_per_step": 1000 * statistics.median(waits),
            "samples_per_second": statistics.median(speeds),
        }
    return out


WHERE_THE_REST_GOES = (
    "Measured with `benchmarks/bench_scaling.py` (its own run, not this one's: the conditions "
    "are under each table): 2 ranks under each variant, alternated with the launcher's 1-rank "
    "baseline and the ceiling, medians over repeats; CPU ms/sample is the CPU time of both "
    "ranks' processes (all threads) per training sample, against one process alone: what "
    "Horovod's background thread, the collectives and their waiting cost on top of the "
    "training itself."
)


def knob_row(name: str, v: dict) -> str:
    launcher = " ".join(v["launcher"])
    env = " ".join(f"`{key}={value}`" for key, value in v["environment"].items())
    env = " ".join([env, *(f"`{x}`" for x in v.get("settings", []))]).strip()
    return (
        f"| {name} | `{launcher}` | {env or 'hpcdl default'} | {v['two_ranks']:.0f} | "
        f"{v['efficiency_median']:.2f} | {v.get('of_ceiling', float('nan')):.2f} | "
        f"{v['cpu_ms_per_sample']:.3f} |"
    )


def knob_lines(folder: Path) -> list[str]:
    """The section "where the rest goes": benchmarks/bench_scaling.py's tables
    (results/scaling_knobs_<model>.json), each with the conditions it ran under."""
    lines = []
    for path in sorted(folder.glob("scaling_knobs_*.json")):
        k = json.loads(path.read_text())
        load = k["load_average_1min"]
        ceiling = statistics.median(k["ceilings"]) if k.get("ceilings") else None
        one = ", ".join(
            f"{b} {statistics.median(v):.0f} samples/s, {k['one_rank_cpu_ms_per_sample'][b]:.3f}"
            " CPU ms/sample"
            for b, v in k["one_rank"].items()
        )
        lines += [
            f"### {k['model']}: `{path.name}`",
            "",
            f"`python benchmarks/bench_scaling.py {k['model']} ... --repeats {k['repeats']} "
            f"--epochs {k['epochs']} --steps {k['steps_per_epoch']}"
            + (f" --batch {k['global_batch']}" if "global_batch" in k else "")
            + "".join(f" --set {x}" for x in k.get("extra_settings", []))
            + f"`, started {k['started']}; 1-minute load average {load['start']:.1f} at the "
            f"start, {load['end']:.1f} at the end"
            + (  # the run's own two ranks make about 2
                " (other work running beside it: a noisy comparison)"
                if max(load.values()) > 2.5
                else ""
            )
            + f". 1 rank: {one}"
            + (
                f"; ceiling {ceiling:.2f}, one process alone "
                f"{k['alone_cpu_ms_per_sample']:.3f} CPU ms/sample"
                if ceiling
                else ""
            )
            + ".",
            "",
            "| variant | launcher | environment, settings | 2 ranks samples/s | efficiency | "
            "of ceiling | "
            "CPU ms/sample (both ranks) |",
            "|---|---|---|---|---|---|---|",
            *(knob_row(name, v) for name, v in k["variants"].items()),
            "",
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer epochs (a smoke run)")
    parser.add_argument(
        "--only-scaling",
        action="store_true",
        help="measure the scaling rows only; the other sections stay as in benchmarks.json",
    )
    args = parser.parse_args()
    epochs = 2 if args.quick else 3
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    result = {
        "machine": f"{cpu}, {os.cpu_count()} CPUs, {platform.platform()}",
        "repeats": args.repeats,
        "epochs": epochs,
    }
    out = ROOT / "results"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.only_scaling:  # the other rows as measured before, on the machine named there
            before = json.loads((out / "benchmarks.json").read_text())
            result["throughput"], result["pipeline"] = before["throughput"], before["pipeline"]
            result["machine_other_rows"] = before.get("machine_other_rows", before["machine"])
        else:
            result["throughput"] = {
                m: throughput(m, epochs, 2, args.repeats, folder) for m in ("mnist", "indian_pines")
            }
        result["scaling"] = {
            m: scaling(m, epochs, args.repeats, folder) for m in ("mnist", "indian_pines")
        }
        if not args.only_scaling:
            result["pipeline"] = pipeline(epochs, args.repeats, folder)
    (out / "benchmarks.json").write_text(json.dumps(result, indent=2) + "\n")
    t, s, p = result["throughput"], result["scaling"], result["pipeline"]
    lines = [
        "# Training speed",
        "",
        f"Measured with `python benchmarks/bench_train.py --repeats {args.repeats}"
        f"{' --quick' if args.quick else ''}` ({epochs} epochs per run) on "
        f"{result['machine']}. Medians over {args.repeats} alternating runs, epochs after the "
        "first; samples/s counts training samples only."
        + (
            f" `--only-scaling`: the throughput and pipeline rows are from an earlier run on "
            f"{result['machine_other_rows']}."
            if args.only_scaling
            else ""
        ),
        "",
        "## hpcdl train against a plain Keras script (same model, data, batch, 2 threads)",
        "",
        "| model | plain Keras samples/s | hpcdl samples/s | ratio (target >= 0.95) |",
        "|---|---|---|---|",
        *(
            f"| {m} | {t[m]['plain_samples_per_second']:.0f} | "
            f"{t[m]['hpcdl_samples_per_second']:.0f} | {t[m]['ratio_median']:.3f} |"
            for m in t
        ),
        "",
        "## Horovod on one machine: 1 rank x 1 thread vs 2 ranks x 1 thread, same global batch",
        "",
        "The ceiling is what this machine gives two single-threaded processes without any "
        "communication: one process of 1 thread at a rank's batch alone, and two such "
        "processes started together (each as many steps per epoch as a rank), measured in "
        "the same rotation as the Horovod runs; ceiling = (a + b) / (2 x alone).",
        "",
        "| model | one process alone samples/s | two at once (sum) | ceiling |",
        "|---|---|---|---|",
        *(
            f"| {m} | {s[m]['ceiling']['alone']:.0f} | {s[m]['ceiling']['pair']:.0f} | "
            f"{s[m]['ceiling']['ceiling_median']:.2f} |"
            for m in s
        ),
        "",
        "| model | launcher | 1 rank samples/s | 2 ranks samples/s | efficiency | of ceiling "
        "| 2 ranks / two at once | alone / 1 rank |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {m} | {name} | {v['one_rank']:.0f} | {v['two_ranks']:.0f} | "
            f"{v['efficiency_median']:.2f} | {v['of_ceiling']:.2f} | "
            f"{v['two_over_pair']:.2f} | {v['batch_factor']:.2f} |"
            for m in s
            for name, v in s[m].items()
            if name != "ceiling"
        ),
        "",
        "Efficiency = throughput(2 ranks) / (2 x throughput(1 rank)); of ceiling = efficiency / "
        "ceiling, per repeat, median. Per repeat it is the product of the last two columns: what "
        "Horovod's communication leaves of two independent processes (2 ranks / two at once) "
        "and what a rank's smaller batch costs one process (alone at B/2 / 1 rank at B). "
        "Reference: Horovod reports 90% efficiency for Inception V3 "
        "on 128 servers x 4 GPUs.",
        "",
        *(
            [
                "## Where the rest goes: knobs side by side with hpcdl's defaults",
                "",
                WHERE_THE_REST_GOES,
                "",
                *knob_lines(out),
            ]
            if list(out.glob("scaling_knobs_*.json"))
            else []
        ),
        "## Input pipeline (Indian Pines, 2 threads)",
        "",
        "| patches | data wait per step | samples/s |",
        "|---|---|---|",
        *(
            f"| {'HDF5 cache' if k == 'cache' else 'cut per batch'} | "
            f"{v['wait_ms_per_step']:.2f} ms | {v['samples_per_second']:.0f} |"
            for k, v in p.items()
        ),
        "",
    ]
    (out / "benchmarks.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
