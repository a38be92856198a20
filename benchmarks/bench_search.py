"""Grid against random search against Optuna TPE + ASHA at the same budget (issue 14).

Each workload has a grid of N points and a space that holds the grid; random search and Optuna
get N trials of the same epochs each. Per repetition (a different training seed and search seed)
the grid's best validation metric is the target; for each method the benchmark counts the epochs
spent, in trial order, until a finished trial reached that target, and the best validation
metric it found. Every run is a real `hpcdl sweep` on the local backend; the sweeps and their
reports stay in the output folder.

    python benchmarks/bench_search.py --workload mnist --reps 3
    python benchmarks/bench_search.py --workload indian_pines --reps 2
    python benchmarks/bench_search.py --workload indian_pines_spectral --reps 2
    python benchmarks/bench_search.py --workload mnist --reps 3 --methods optuna_gentle
    python benchmarks/bench_search.py --summarize      # the tables and figure from what ran
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "search_benchmark"
METHODS = ("grid", "random", "optuna", "optuna_gentle")
# optuna: TPE + Optuna's ASHA (first rung at epoch 1, 1 in 4 go on); optuna_gentle: TPE + ASHA
# with its first rung at the workload's `prune_after` and 1 in 3 going on
WORKLOADS = {
    # 6,000 training / 1,500 validation images of MNIST, 6 epochs: lr x dropout
    "mnist": {
        "config": "mnist_cnn.yaml",
        "fixed": {
            "train.epochs": 6,
            "train.threads": 1,
            "train.batch_size": 64,
            "data.train_subset": 7500,
            "data.validation_split": 0.2,
        },
        "grid": {"train.lr": [0.0003, 0.001, 0.003, 0.01], "model.dropout": [0.0, 0.25, 0.5]},
        "space": {
            "train.lr": {"loguniform": [0.0001, 0.03]},
            "model.dropout": {"uniform": [0.0, 0.6]},
        },
        "prune_after": 2,
    },
    # the spatially disjoint block split (16x16 blocks, 10% of each class trains), validation
    # from whole held-out blocks, 10 epochs: lr x dropout (x label smoothing when sampled)
    "indian_pines": {
        "config": "indian_pines_3dcnn.yaml",
        "fixed": {
            "train.epochs": 10,
            "train.threads": 1,
            "train.batch_size": 32,
            "train.optimizer": "adam",
            "train.loss": "categorical_crossentropy",
            "train.keep": "last",
            "data.split": "blocks",
            "data.block_size": 16,
            "data.normalize": "per_band",
            "data.validation_split": 0.2,
        },
        "grid": {"train.lr": [0.0003, 0.001, 0.003], "model.dropout": [0.0, 0.5]},
        "space": {
            "train.lr": {"loguniform": [0.0001, 0.01]},
            "model.dropout": {"uniform": [0.0, 0.6]},
            "train.label_smoothing": {"uniform": [0.0, 0.3]},
        },
        "prune_after": 3,
    },
    # the same split with the spectral model (jobs/indian_pines_spectral.yaml), 30 epochs:
    # lr x dropout (x Gaussian noise when sampled)
    "indian_pines_spectral": {
        "config": "indian_pines_spectral.yaml",
        "fixed": {"train.epochs": 30, "train.threads": 1, "train.batch_size": 32},
        "grid": {"train.lr": [0.0003, 0.001, 0.003], "model.dropout": [0.2, 0.45, 0.7]},
        "space": {
            "train.lr": {"loguniform": [0.0001, 0.01]},
            "model.dropout": {"uniform": [0.1, 0.7]},
            "model.noise": {"uniform": [0.0, 0.3]},
        },
        "prune_after": 6,
    },
}


def spec_for(workload: str, method: str, rep: int, parallel: int) -> dict:
    """The sweep spec of one method and repetition (rep = training seed = search seed)."""
    w = WORKLOADS[workload]
    spec = {
        "name": f"{method}_rep{rep}",
        "config": str(ROOT / "jobs" / w["config"]),
        "fixed": {**w["fixed"], "train.seed": rep},
        "resources": {"cpus_per_task": 1, "time": "02:00:00"},
        "backend": "local",
        "max_concurrent": parallel,
        "results_dir": str(OUT / workload),
    }
    trials = 1
    for values in w["grid"].values():
        trials *= len(values)
    if method == "grid":
        spec["grid"] = w["grid"]
        return spec
    spec["search"] = {"method": method, "trials": trials, "parallel": parallel, "seed": rep}
    spec["search"]["space"] = w["space"]
    if method.startswith("optuna"):
        spec["search"].update(
            method="optuna", sampler="tpe", pruner="asha", startup_trials=max(2, trials // 4)
        )
    if method == "optuna_gentle":
        spec["search"].update(prune_after=w["prune_after"], reduction_factor=3)
    return spec


def run_sweep(workload: str, method: str, rep: int, parallel: int) -> Path:
    """Run one sweep to the end and write its report; a folder that exists is resumed (its
    failed points, e.g. killed for memory, run again), one whose points all ended is kept."""
    folder = OUT / workload / f"{method}_rep{rep}"
    hpcdl = [sys.executable, "-m", "hpcdl"]
    for _ in range(3):
        if (folder / "sweep.json").exists():
            if all_ended(folder):
                break
            cmd = [*hpcdl, "resume", str(folder)]
        else:
            specs = OUT / "specs"
            specs.mkdir(parents=True, exist_ok=True)
            path = specs / f"{workload}_{method}_rep{rep}.yaml"
            spec = spec_for(workload, method, rep, parallel)
            path.write_text(yaml.safe_dump(spec, sort_keys=False))
            cmd = [*hpcdl, "sweep", str(path)]
        subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL)
    if not all_ended(folder):
        raise SystemExit(f"{folder}: points still failed after three tries (hpcdl status)")
    if not (folder / "report.md").exists():
        subprocess.run([*hpcdl, "report", str(folder)], check=True, stdout=subprocess.DEVNULL)
        (folder / "report.html").unlink(missing_ok=True)  # 6 MB each; report.md stays
    return folder


def all_ended(folder: Path) -> bool:
    """Every point of the sweep finished or was pruned (hpcdl status --json)."""
    proc = subprocess.run(
        [sys.executable, "-m", "hpcdl", "status", str(folder), "--json"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return False
    points = json.loads(proc.stdout)["points"]
    return all(p["state"] in ("FINISHED", "PRUNED") for p in points)


def trial_table(folder: Path) -> pd.DataFrame:
    """The sweep's points in the order they ran, with epochs spent and best-so-far."""
    from hpcdl.report.data import load
    from hpcdl.report.search import trials

    data = load(folder)
    table = trials(data)
    table["value"] = table["val_accuracy"].where(table["state"] == "FINISHED")
    return table


def outcome(table: pd.DataFrame, target: float) -> dict:
    """Epochs until a finished trial reached `target`, the best value, its test accuracy."""
    reached = table[table["value"] >= target - 1e-12]
    best = table.loc[table["value"].idxmax()]
    return {
        "trials": len(table),
        "epochs": int(table["epochs_done"].fillna(0).sum()),
        "pruned": int((table["state"] == "PRUNED").sum()),
        "epochs_to_target": int(reached["epochs_spent"].iloc[0]) if len(reached) else None,
        "best_val": float(best["value"]),
        "test_of_best": float(best["test_accuracy"]),
    }


def summarize(reps: dict[str, list[int]]) -> dict:
    """Per workload and repetition: the grid's best as target and each method's outcome."""
    rows = []
    for workload, seeds in reps.items():
        for rep in seeds:
            folders = {m: OUT / workload / f"{m}_rep{rep}" for m in METHODS}
            folders = {m: f for m, f in folders.items() if (f / "summary.csv").exists()}
            if "grid" not in folders:
                continue
            tables = {m: trial_table(f) for m, f in folders.items()}
            target = float(tables["grid"]["value"].max())
            grid_epochs = int(tables["grid"]["epochs_done"].sum())
            for method, table in tables.items():
                row = {"workload": workload, "rep": rep, "method": method, "target": target}
                row.update(outcome(table, target))
                row["grid_epochs"] = grid_epochs
                rows.append(row)
    return {"rows": rows}


def write_markdown(result: dict, machine: str) -> None:
    """results/search_benchmark/README.md: one table per workload and the target's verdict."""
    table = pd.DataFrame(result["rows"])
    lines = [
        "# Search benchmark: grid vs random vs Optuna TPE + ASHA at the same budget",
        "",
        f"`python benchmarks/bench_search.py` on {machine}. Every method gets as many trials as",
        "the grid has points, each trained for the same epochs; repetition r uses training seed r",
        "and search seed r. Target: the grid's best validation accuracy in that repetition.",
        "*epochs to target*: epochs spent, in trial order, until a finished trial reached it",
        "(- = never). Test accuracy is that of the trial each method chose on validation.",
        "*optuna*: TPE + Optuna's ASHA (first rung at epoch 1, 1 in 4 trials go on at each rung);",
        "*optuna_gentle*: TPE + ASHA with its first rung at the workload's `prune_after` ("
        + ", ".join(f"{w} {v['prune_after']}" for w, v in WORKLOADS.items())
        + ") and 1 in 3 going on (search.prune_after, search.reduction_factor), added after the",
        "first runs showed Optuna's ASHA stopping all but one or two trials after epoch 1.",
        "",
    ]
    for workload, part in table.groupby("workload", sort=False):
        lines += [f"## {workload}", "", _markdown_table(part), ""]
        for method, label in [("optuna", "Optuna's ASHA"), ("optuna_gentle", "gentle ASHA")]:
            optuna = part[part["method"] == method]
            if optuna.empty:
                continue
            share = optuna["epochs_to_target"] / optuna["grid_epochs"]
            verdict = ", ".join("-" if pd.isna(v) else f"{v:.2f}" for v in share)
            lines += [
                f"TPE + {label}: epochs to the grid's best as a share of the grid's epochs, per "
                f"repetition: {verdict} (target: at most 0.33).",
                "",
            ]
    lines += ["![best so far against epochs spent](search_benchmark.png)", ""]
    (OUT / "README.md").write_text("\n".join(lines))


def _markdown_table(part: pd.DataFrame) -> str:
    cols = ["rep", "method", "trials", "pruned", "epochs", "epochs_to_target", "best_val"]
    cols += ["test_of_best"]
    head = "| " + " | ".join(c.replace("_", " ") for c in cols) + " |"
    out = [head, "|" + "---|" * len(cols)]
    for _, row in part.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if pd.isna(v):
                cells.append("-")
            elif isinstance(v, float) and not v.is_integer():
                cells.append(f"{v:.4f}")
            else:
                cells.append(str(int(v)) if isinstance(v, float) else str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def write_figure(reps: dict[str, list[int]]) -> None:
    """Best validation so far against epochs spent, one panel per workload (plotly HTML, and a
    PNG through headless Chromium when it is there)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = [w for w in reps if any((OUT / w / f"grid_rep{r}").exists() for r in reps[w])]
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names)
    colours = {"grid": "#7f7f7f", "random": "#1f77b4", "optuna": "#d62728"}
    colours["optuna_gentle"] = "#2ca02c"
    for col, workload in enumerate(names, start=1):
        for method in METHODS:
            for rep in reps[workload]:
                folder = OUT / workload / f"{method}_rep{rep}"
                if not (folder / "summary.csv").exists():
                    continue
                table = trial_table(folder)
                fig.add_trace(
                    go.Scatter(
                        x=table["epochs_spent"],
                        y=table["best_so_far"],
                        mode="lines+markers",
                        line={"shape": "hv", "color": colours[method]},
                        name=f"{method} rep {rep}",
                        legendgroup=method,
                        showlegend=col == 1,
                    ),
                    row=1,
                    col=col,
                )
        fig.update_xaxes(title_text="epochs spent", row=1, col=col)
        fig.update_yaxes(title_text="best validation accuracy so far", row=1, col=col)
    fig.update_layout(width=560 * len(names), height=460, template="plotly_white")
    fig.write_html(OUT / "search_benchmark.html", include_plotlyjs="cdn")
    chromium = shutil.which("chromium")
    if chromium:  # from a copy with plotly inline: the machine may be offline
        html = OUT / "specs" / "figure-inline.html"
        fig.write_html(html, include_plotlyjs=True, config={"displayModeBar": False})
        png = OUT / "search_benchmark.png"
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--window-size={560 * len(names)},480", f"--screenshot={png}",
             "--virtual-time-budget=10000", html.as_uri()],
            check=False, capture_output=True, timeout=120,
        )  # fmt: skip
        html.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
    parser.add_argument("--reps", type=int, default=2, help="repetitions (seeds 1..reps)")
    parser.add_argument("--parallel", type=int, default=2, help="points at once")
    parser.add_argument("--summarize", action="store_true", help="only tables and figure")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    args = parser.parse_args()
    chosen = list(WORKLOADS) if args.workload == "all" else [args.workload]
    if not args.summarize:
        for workload in chosen:
            for rep in range(1, args.reps + 1):
                for method in args.methods:
                    run_sweep(workload, method, rep, args.parallel)
    found = {w: sorted(int(p.name.split("rep")[1]) for p in (OUT / w).glob("grid_rep*"))
             for w in WORKLOADS if (OUT / w).exists()}  # fmt: skip
    result = summarize(found)
    import platform

    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
         if line.startswith("model name")),
        platform.machine(),
    )  # fmt: skip
    machine = f"{cpu}, {__import__('os').cpu_count()} CPUs"
    (OUT / "search_benchmark.json").write_text(json.dumps(result, indent=1))
    write_markdown(result, machine)
    write_figure(found)
    print((OUT / "README.md").read_text())


if __name__ == "__main__":
    main()
