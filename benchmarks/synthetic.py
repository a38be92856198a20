"""Realistic sweep folders in the real format, for collector/report benchmarks and tests.

Each point gets what a real run leaves: config.yaml, metrics.jsonl, result.json (or a failure),
job.out, and the local backend's local.json; the sweep gets a real manifest. Accuracy follows a
smooth function of the settings plus noise, so reports have effects to show.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import yaml

from hpcdl.manifest import Manifest, PointEntry, Submission

BASE = {
    "model": {"name": "indian_pines_3dcnn"},
    "data": {"name": "indian_pines"},
    "train": {"epochs": 20, "optimizer": "sgd"},
}
LRS = [0.01, 0.03, 0.1, 0.3, 1.0]
BATCHES = [16, 32, 50, 64]
DROPOUTS = [0.0, 0.25, 0.5]


def make_sweep(
    folder: Path,
    points: int,
    epochs: int = 20,
    seed: int = 0,
    fail_every: int = 25,
    name: str = "synthetic",
) -> Path:
    """Write a finished local sweep of `points` points under folder/name; returns its folder."""
    rng = random.Random(seed)
    sweep_dir = folder / name
    sweep_dir.mkdir(parents=True)
    entries, ids = [], []
    for i in range(points):
        lr, bs, dr = LRS[i % 5], BATCHES[(i // 5) % 4], DROPOUTS[(i // 20) % 3]
        seed_i = i // 60
        overrides = {
            "train.lr": lr,
            "train.batch_size": bs,
            "model.dropout": dr,
            "train.seed": seed_i,
        }
        pid = f"lr{lr:g}_batch_size{bs}_dropout{dr:g}_seed{seed_i}-{i:08x}"
        run_dir = sweep_dir / pid
        run_dir.mkdir()
        ids.append(pid)
        entries.append(PointEntry(pid, overrides, str(run_dir)))
        config = {
            **BASE,
            "model": {**BASE["model"], "dropout": dr},
            "train": {**BASE["train"], "lr": lr, "batch_size": bs, "seed": seed_i},
            "run_dir": str(run_dir),
        }
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        quality = 0.93 - 0.08 * abs(math.log10(lr / 0.1)) - 0.04 * dr + rng.gauss(0, 0.01)
        failed = fail_every and i % fail_every == fail_every - 1
        done = epochs // 2 if failed else epochs
        lines = []
        for e in range(1, done + 1):
            acc = quality * (1 - math.exp(-e / 4)) + rng.gauss(0, 0.005)
            lines.append(
                json.dumps(
                    {
                        "epoch": e,
                        "loss": 0.06 * math.exp(-e / 5) + 0.01,
                        "accuracy": acc,
                        "lr": lr,
                        "epoch_seconds": 9.5 + rng.random(),
                        "samples_per_second": 105.0,
                        "data_wait_seconds": 0.01,
                        "steps": 1025 // bs,
                        "ranks": 1,
                    }
                )
            )
        (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        log = [
            "== 2026-01-01T00:00:00+00:00 local job local-1 on node: 1 rank(s)",
            *(f"epoch {e}/{epochs} loss 0.05 acc 0.9" for e in range(1, done + 1)),
        ]
        if failed:
            log.append("tensorflow.python.framework.errors_impl.ResourceExhaustedError: OOM")
            state, code = "FAILED", 1
        else:
            per_class = [min(1.0, max(0.0, quality + rng.gauss(0, 0.05))) for _ in range(16)]
            support = [5, 1285, 747, 213, 435, 657, 25, 430, 18, 875, 2209, 534, 184, 1138, 347, 84]
            matrix = [[0] * 16 for _ in range(16)]
            for c in range(16):
                right = round(per_class[c] * support[c])
                matrix[c][c] = right
                matrix[c][(c + 1) % 16] = support[c] - right
            (run_dir / "result.json").write_text(
                json.dumps(
                    {
                        "status": "finished",
                        "model": "indian_pines_3dcnn",
                        "data": "indian_pines",
                        "test_loss": 0.02,
                        "test_accuracy": quality,
                        "overall_accuracy": quality,
                        "average_accuracy": sum(per_class) / 16,
                        "kappa": quality - 0.03,
                        "per_class_accuracy": per_class,
                        "confusion_matrix": matrix,
                        "epochs": epochs,
                        "params": 504816,
                        "ranks": 1,
                        "train_samples": 1025,
                        "test_samples": 9224,
                        "best_epoch": epochs,
                    }
                )
            )
            state, code = "COMPLETED", 0
        (run_dir / "job.out").write_text("\n".join(log) + "\n")
        (run_dir / "local.json").write_text(
            json.dumps(
                {
                    "state": state,
                    "host": "node",
                    "pid": 1,
                    "exit_code": code,
                    "started": "2026-01-01T00:00:00+00:00",
                    "ended": "2026-01-01T00:03:20+00:00",
                }
            )
        )
    manifest = Manifest(
        name=name,
        backend="local",
        sweep_dir=str(sweep_dir),
        spec_path=str(sweep_dir / "s.yaml"),
        spec={
            "name": name,
            "resources": {
                "nodes": 1,
                "gpus_per_node": 0,
                "tasks_per_node": 1,
                "cpus_per_task": 2,
                "time": "01:00:00",
            },
            "scheduler": {"flavor": "pro"},
            "backend": "local",
        },
        base=BASE,
        points=entries,
        submissions=[
            Submission(
                "a000",
                "array",
                f"hpcdl-{name}-a000",
                "a000.sh",
                ids,
                job_id=f"local-{os.getpid()}",
                state="submitted",
            )
        ],
    )
    manifest.save()
    return sweep_dir
