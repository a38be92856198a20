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


def run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")


def hpcdl_epochs(
    model: str, folder: Path, sets: list[str], launcher: list[str] | None = None
) -> list[dict]:
    run_dir = folder / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [*(launcher or []), HPCDL, "train", str(CONFIGS[model]), "--run-dir", str(run_dir)]
    for s in sets:
        cmd += ["--set", s]
    run(cmd)
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


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


def scaling(model: str, epochs: int, repeats: int, folder: Path) -> dict:
    batch = BATCH[model] - BATCH[model] % 2
    base = [f"train.epochs={epochs}", "train.threads=1", "train.scale_lr=false"]
    if model == "mnist":
        base.append("data.train_subset=24000")
    launchers = {
        "gloo": lambda n: ["horovodrun", "-np", str(n), "-H", f"localhost:{n}", "--gloo"],
        "mpi": lambda n: ["mpirun", "-np", str(n), "--bind-to", "none"],
    }
    out = {}
    for name, launcher in launchers.items():
        one, two = [], []
        for _ in range(repeats):
            one.append(
                after_warmup(
                    [
                        e["samples_per_second"]
                        for e in hpcdl_epochs(
                            model, folder, [*base, f"train.batch_size={batch}"], launcher(1)
                        )
                    ]
                )
            )
            two.append(
                after_warmup(
                    [
                        e["samples_per_second"]
                        for e in hpcdl_epochs(
                            model, folder, [*base, f"train.batch_size={batch // 2}"], launcher(2)
                        )
                    ]
                )
            )
        effs = [t / (2 * o) for o, t in zip(one, two, strict=True)]
        out[name] = {
            "one_rank": statistics.median(one),
            "two_ranks": statistics.median(two),
            "efficiency_median": statistics.median(effs),
            "efficiencies": effs,
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer epochs (a smoke run)")
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
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        result["throughput"] = {
            m: throughput(m, epochs, 2, args.repeats, folder) for m in ("mnist", "indian_pines")
        }
        result["scaling"] = {
            m: scaling(m, epochs, args.repeats, folder) for m in ("mnist", "indian_pines")
        }
        result["pipeline"] = pipeline(epochs, args.repeats, folder)
    out = ROOT / "results"
    (out / "benchmarks.json").write_text(json.dumps(result, indent=2) + "\n")
    t, s, p = result["throughput"], result["scaling"], result["pipeline"]
    lines = [
        "# Training speed",
        "",
        f"Measured with `python benchmarks/bench_train.py --repeats {args.repeats}"
        f"{' --quick' if args.quick else ''}` ({epochs} epochs per run) on "
        f"{result['machine']}. Medians over {args.repeats} alternating runs, epochs after the "
        "first; samples/s counts training samples only.",
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
        "| model | launcher | 1 rank samples/s | 2 ranks samples/s | efficiency |",
        "|---|---|---|---|---|",
        *(
            f"| {m} | {name} | {v['one_rank']:.0f} | {v['two_ranks']:.0f} | "
            f"{v['efficiency_median']:.2f} |"
            for m in s
            for name, v in s[m].items()
        ),
        "",
        "Reference: Horovod reports 90% efficiency for Inception V3 on 128 servers x 4 GPUs.",
        "",
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
