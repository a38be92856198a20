"""The `hpcdl` command."""

from __future__ import annotations

import argparse
import os
import sys

from pydantic import ValidationError

from hpcdl import __version__
from hpcdl.errors import HpcdlError


def cmd_train(args: argparse.Namespace) -> int:
    from hpcdl.config import parse_config, parse_overrides, read_yaml, set_path
    from hpcdl.preempt import EXIT_STOPPED, Stopped
    from hpcdl.train import resolve_run_dir, train

    raw = read_yaml(args.config)
    if not isinstance(raw, dict):
        raise HpcdlError(f"{args.config}: expected a mapping with model, data and train sections")
    for key, value in parse_overrides(args.set or []).items():
        set_path(raw, key, value)
    config = parse_config(raw, args.config)
    try:
        train(
            config,
            resolve_run_dir(config, args.config, args.run_dir),
            log=lambda msg: print(msg, flush=True),
        )
    except Stopped as stop:
        print(f"hpcdl: {stop}", file=sys.stderr, flush=True)
        return EXIT_STOPPED
    return 0


def _fetchable(name: str) -> str:
    """A data set `hpcdl data fetch` knows (from the data set registry)."""
    from hpcdl.datasets import DATASETS, fetchable

    known = {kind.fetch: kind.fetch for _, kind in DATASETS.items() if kind.fetch}
    known.update({n: kind.fetch for n, kind in DATASETS.items() if kind.fetch})
    if name not in known:
        raise argparse.ArgumentTypeError(
            f"unknown data set {name!r}; choose {' or '.join(fetchable())}"
        )
    return known[name]


def cmd_trial(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hpcdl.search.worker import run_trial

    command = args.command_line[1:] if args.command_line[:1] == ["--"] else args.command_line
    return run_trial(Path(args.run_dir), command)


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from hpcdl.datasets.sources import data_root, fetch

    root = data_root(args.data_dir)
    for name in args.datasets:
        fetch(name, root, include_optional=args.all)
    print(f"data in {root}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from hpcdl import sweep

    if args.dry_run:
        from pathlib import Path

        spec, _base, points = sweep.plan(args.spec, args.backend)
        print(sweep.describe(spec, points, (Path(spec.results_dir) / spec.name).resolve()))
        return 0
    sweep.create(args.spec, args.backend, out=lambda msg: print(msg, flush=True))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from hpcdl import sweep
    from hpcdl.manifest import load_manifest
    from hpcdl.progress import Progress, status_json
    from hpcdl.states import DONE_STATES

    if args.wait:
        with Progress(f"sweep {load_manifest(args.sweep).name}") as progress:
            manifest, points = sweep.wait(args.sweep, args.timeout, on_poll=progress.update)
    else:
        manifest = load_manifest(args.sweep)
        points = sweep.statuses(manifest)
    if args.json:
        print(status_json(points, sweep=manifest.name, backend=manifest.backend))
    else:
        print(sweep.format_status(manifest, points, args.all))
    return 0 if not args.wait or all(p.state in DONE_STATES for p in points) else 1


def cmd_cancel(args: argparse.Namespace) -> int:
    from hpcdl import sweep
    from hpcdl.manifest import load_manifest

    sweep.cancel(load_manifest(args.sweep))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from hpcdl import sweep
    from hpcdl.manifest import load_manifest

    sweep.resume(load_manifest(args.sweep), args.time, out=lambda msg: print(msg, flush=True))
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from hpcdl.collect import collect

    collect(args.sweep)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from hpcdl.report import report

    report(args.sweeps, args.out, refresh=not args.no_collect)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from hpcdl import distributed  # first: it makes TensorFlow use Keras 2

    print(f"hpcdl {__version__}: {distributed.check_horovod()}")
    import horovod.tensorflow as hvd

    tf = distributed.import_tf()
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    ranks = args.ranks or distributed.local_ranks_here()
    threads = distributed.cpu_threads(None, ranks)
    for line in distributed.pinning_report(gpus, ranks, distributed.horovod_ops(hvd), threads):
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from hpcdl.backends import BACKENDS

    parser = argparse.ArgumentParser(
        prog="hpcdl", description="Deep-learning training and sweeps as HPC batch jobs."
    )
    parser.add_argument("--version", action="version", version=f"hpcdl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "train", help="train one config (run it under horovodrun/mpirun/srun for N ranks)"
    )
    p.add_argument("config", help="training config (YAML)")
    p.add_argument(
        "--run-dir",
        help="where logs, checkpoints and results go "
        "(default: the config's run_dir, else results/<config name>)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=3 (repeatable)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "trial", help="run one trial slot of an adaptive search (its job script calls this)"
    )
    p.add_argument("run_dir", help="the slot's run directory (<sweep>/trial-NNNN)")
    p.add_argument(
        "command_line",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND",
        help="the training command, started as the worker's child",
    )
    p.set_defaults(func=cmd_trial)

    p = sub.add_parser("data", help="data sets")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    f = dsub.add_parser(
        "fetch", help="download and verify data sets (sha256), or check local copies"
    )
    from hpcdl.datasets import fetchable

    f.add_argument(
        "datasets", nargs="+", metavar="DATASET", type=_fetchable, help=", ".join(fetchable())
    )
    f.add_argument(
        "--data-dir", help="target folder (default: $HPCDL_DATA_DIR or ~/.cache/hpcdl/data)"
    )
    f.add_argument("--all", action="store_true", help="also optional files (220-band Indian Pines)")
    f.set_defaults(func=cmd_data_fetch)

    p = sub.add_parser("sweep", help="expand a job spec into points and submit (or run) them")
    p.add_argument("spec", help="sweep spec (YAML, see jobs/)")
    p.add_argument("--backend", help=f"override the spec's ({BACKENDS.choices()} or module:Class)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the points and the job script; write and submit nothing",
    )
    p.set_defaults(func=cmd_sweep)

    for name, func, text in (
        ("status", cmd_status, "state of every point (one scheduler query)"),
        ("cancel", cmd_cancel, "cancel all of a sweep's jobs"),
        ("resume", cmd_resume, "resubmit missing, failed, cancelled and timed-out points"),
        ("collect", cmd_collect, "gather run directories and accounting into summary tables"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("sweep", help="the sweep's results folder (e.g. results/NAME)")
        if name == "status":
            p.add_argument("--all", action="store_true", help="list every point, one line each")
            p.add_argument("--json", action="store_true", help="the statuses as JSON, for scripts")
            p.add_argument(
                "--wait",
                action="store_true",
                help="poll until no point is pending or running; exit 0 only if all finished",
            )
            p.add_argument(
                "--timeout", type=float, metavar="S", help="with --wait: give up after S seconds"
            )
        if name == "resume":
            p.add_argument("--time", help="a new time limit for the rerun points, e.g. 04:00:00")
        p.set_defaults(func=func)

    p = sub.add_parser("report", help="HTML + Markdown report of one or more sweeps")
    p.add_argument("sweeps", nargs="+", metavar="SWEEP", help="sweep results folders")
    p.add_argument("--out", help="folder for report.html/.md (default: the sweep's folder)")
    p.add_argument(
        "--no-collect",
        action="store_true",
        help="use the last collected tables instead of collecting again",
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("info", help="check the TensorFlow + Horovod stack and GPU pinning")
    p.add_argument(
        "--ranks", type=int, metavar="N", help="ranks per node to show pinning for (default: "
        "the launcher's, else 1)"
    )  # fmt: skip
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HpcdlError as err:
        print(f"hpcdl: error: {err}", file=sys.stderr)
        return 2
    except ValidationError as err:  # settings checked outside a loader (e.g. a hand-made file)
        from hpcdl.config import format_validation_error

        print(f"hpcdl: error: {format_validation_error(err, err.title)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `hpcdl ... | head`: the reader left, nothing went wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as err:  # disk full, unwritable folder, ...: one line, not a traceback
        where = f": {err.filename}" if err.filename else ""
        print(f"hpcdl: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hpcdl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
