"""Progress display, failures table and status JSON on real run directories (local backend
records, metrics.jsonl, config.yaml, result.json), the live display under a real terminal."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from rich.cells import cell_len

from hpcdl import rundir
from hpcdl.manifest import load_manifest
from hpcdl.progress import Progress, failure_table, last_records, read_epochs, status_json
from hpcdl.states import PointStatus, point_state
from hpcdl.sweep import statuses
from tests.conftest import HELPERS, ROOT
from tests.helpers.progress_screen import statuses_of
from tests.sweeps import manifest, start_sweep, until, write_spec

TIME = r"\d+:\d\d:\d\d"


def make_run(
    root: Path,
    name: str,
    state: str,
    done: int = 0,
    total: int | None = 10,
    seconds: float = 100.0,
    label: str = "",
    log: str = "",
) -> Path:
    """A run directory as the local backend and training leave it. state: COMPLETED (with a
    result), FAILED, RUNNING (this process as its job) or PENDING."""
    run_dir = root / name
    run_dir.mkdir(parents=True, exist_ok=True)
    if total is not None:
        rundir.write_yaml_atomic(run_dir / "config.yaml", {"train": {"epochs": total}})
    for epoch in range(1, done + 1):
        rundir.append_metrics(run_dir, {"epoch": epoch, "loss": 1.0 / epoch})
    set_state(run_dir, state, seconds)
    if label:
        (run_dir / "label").write_text(label)
    (run_dir / "job.out").write_text(f"== start\n{log}\n")
    return run_dir


def set_state(run_dir: Path, state: str, seconds: float = 100.0) -> None:
    """Write the local backend's local.json; a COMPLETED run also gets its result.json."""
    now = datetime.now(timezone.utc)
    record = {"state": state, "host": socket.gethostname(), "pid": None, "runner": None}
    if state == "PENDING":
        record["runner"] = os.getpid()
    else:
        record.update(pid=os.getpid(), started=(now - timedelta(seconds=seconds)).isoformat())
    if state in ("COMPLETED", "FAILED"):
        record.update(ended=now.isoformat(), exit_code=0 if state == "COMPLETED" else 1)
    rundir.write_json_atomic(run_dir / "local.json", record)
    if state == "COMPLETED":
        rundir.write_json_atomic(run_dir / "result.json", {"test_accuracy": 0.9})


@pytest.fixture
def sweep(tmp_path) -> list[Path]:
    """2 finished points of 100 s, one running 40 s with 3 of 10 epochs, one pending, one
    failed."""
    return [
        make_run(tmp_path, "p1", "COMPLETED", 10, label="lr=0.001"),
        make_run(tmp_path, "p2", "COMPLETED", 10, label="lr=0.01"),
        make_run(tmp_path, "p3", "RUNNING", 3, seconds=40, label="lr=0.1"),
        make_run(tmp_path, "p4", "PENDING", label="lr=1"),
        make_run(tmp_path, "p5", "FAILED", 2, label="lr=10", log="ValueError: loss became nan"),
    ]


def plain_run(tmp_path: Path, steps) -> list[str]:
    """Run a Progress on a file (not a terminal) through `steps` (callables, each followed by
    an update) and return the lines it wrote."""
    out_path = tmp_path / "progress.log"
    with open(out_path, "w") as out, Progress("demo", stream=out) as progress:
        for step in steps:
            progress.update(step())
    return out_path.read_text().splitlines()


def test_plain_lines_when_not_a_terminal(sweep, tmp_path):
    def epoch_4():
        rundir.append_metrics(sweep[2], {"epoch": 4, "loss": 0.2})
        return statuses_of(sweep)

    def p3_done_p4_started():
        set_state(sweep[2], "COMPLETED")
        set_state(sweep[3], "RUNNING", seconds=1)
        return statuses_of(sweep)

    def all_done():
        set_state(sweep[3], "COMPLETED")
        return statuses_of(sweep)

    same = lambda: statuses_of(sweep)  # noqa: E731 (nothing changed: no new line)
    lines = plain_run(tmp_path, [same, same, epoch_4, same, p3_done_p4_started, all_done])
    head = r"\d\d:\d\d:\d\d demo: "
    expected = [
        rf"{head}2 finished, 1 running, 1 pending, 1 failed \| running lr=0\.1 3/10 epochs"
        rf" \| elapsed {TIME}, about {TIME} left",
        rf"{head}2 finished, 1 running, 1 pending, 1 failed \| running lr=0\.1 4/10 epochs"
        rf" \| elapsed {TIME}, about {TIME} left",
        rf"{head}3 finished, 1 running, 1 failed \| running lr=1 0/10 epochs"
        rf" \| elapsed {TIME}, about {TIME} left",
        rf"{head}4 finished, 1 failed \| elapsed {TIME}",
    ]
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(pattern, line), line


def test_plain_line_shows_what_a_script_of_ones_own_leaves(tmp_path):
    """Without config.yaml the total is unknown; without metrics.jsonl the epoch too."""
    runs = [
        make_run(tmp_path, "a", "RUNNING", 2, total=None, label="mine"),
        make_run(tmp_path, "b", "RUNNING", 0, total=None),
    ]
    (line,) = plain_run(tmp_path, [lambda: statuses_of(runs)])
    # no finished point, and b has no epochs: no estimate of the time left
    assert re.fullmatch(rf"\S+ demo: 2 running \| running mine 2 epochs, b \| elapsed {TIME}", line)


def test_plain_line_names_three_running_points_and_counts_the_rest(tmp_path):
    runs = [make_run(tmp_path, f"r{i}", "RUNNING", i, label=f"seed={i}") for i in range(1, 6)]
    (line,) = plain_run(tmp_path, [lambda: statuses_of(runs)])
    assert "| running seed=1 1/10 epochs, seed=2 2/10 epochs, seed=3 3/10 epochs, 2 more |" in line


def test_estimate_of_time_left(sweep, tmp_path):
    def left(points):
        return json.loads(status_json(points))["estimated_seconds_left"]

    # p3: 40 s for 3 of 10 epochs -> 93 s more; p4: 100 s (the finished points' mean); 1 at once
    assert left(statuses_of(sweep)) == pytest.approx(40 * 10 / 3 - 40 + 100, abs=3)
    two_running = [*sweep, make_run(tmp_path, "p6", "RUNNING", 5, seconds=50)]
    # p6: 50 s more; (93 + 50 + 100) s of work shared by 2 running points
    assert left(statuses_of(two_running)) == pytest.approx((93.3 + 50 + 100) / 2, abs=3)
    set_state(sweep[2], "PENDING")
    assert left(statuses_of(sweep)) is None  # nothing runs: when the queue moves is unknown
    set_state(sweep[2], "RUNNING", seconds=30)
    (sweep[2] / "metrics.jsonl").unlink()
    # no epochs: the mean duration less its 30 s, then p4
    assert left(statuses_of(sweep)) == pytest.approx(70 + 100, abs=3)
    for run in sweep[:2]:
        (run / "local.json").unlink()  # finished, but how long they took is not known
    assert left(statuses_of(sweep)) is None


def test_the_last_records_are_read_from_the_end(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert last_records(run) == [] and read_epochs(run).done is None
    for epoch in range(1, 3001):  # well over the 64 KB read from the end
        rundir.append_metrics(run, {"epoch": epoch, "loss": 0.5, "note": "x" * 40})
    assert (run / "metrics.jsonl").stat().st_size > 200_000
    assert [r["epoch"] for r in last_records(run)] == [2999, 3000]
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3001, "lo')  # a line being written
    assert [r["epoch"] for r in last_records(run, 1)] == [3000]
    assert read_epochs(run).done == 3000 and read_epochs(run).total is None


def test_the_latest_epoch_duration(tmp_path):
    """hpcdl's loop logs epoch_seconds; hpcdl.session the time of each line."""
    loop = make_run(tmp_path, "loop", "RUNNING", 0, total=10, seconds=60)
    for epoch in (1, 2, 3):
        rundir.append_metrics(loop, {"epoch": epoch, "epoch_seconds": 4.0 + epoch})
    script = make_run(tmp_path, "script", "RUNNING", 0, total=None, seconds=60)
    for epoch, time_ in ((1, "2026-01-01T10:00:00+00:00"), (3, "2026-01-01T10:00:30+00:00")):
        rundir.append_metrics(script, {"epoch": epoch, "time": time_})
    assert read_epochs(loop) == (loop_epochs := read_epochs(loop))
    assert (loop_epochs.done, loop_epochs.total, loop_epochs.seconds) == (3, 10, 7.0)
    assert read_epochs(script).seconds == 15.0  # 30 s for 2 epochs
    document = json.loads(status_json(statuses_of([loop, script])))
    assert [p["epoch_seconds"] for p in document["points"]] == [7.0, 15.0]
    # loop: 7 more epochs of 7 s; the script's total is not known, nor a finished duration
    assert document["estimated_seconds_left"] is None
    (script / "label").write_text("script")
    rundir.write_yaml_atomic(script / "config.yaml", {"train": {"epochs": 4}})
    document = json.loads(status_json(statuses_of([loop, script])))
    # loop: 49 s; script: 1 epoch of 15 s; both run at once: the longer one
    assert document["estimated_seconds_left"] == pytest.approx(49)


class Terminal:
    """A real terminal (tmux, on a socket of its own) running progress_screen.py on `runs`."""

    def __init__(self, tmp_path: Path, runs: list[Path], width: int, height: int = 30):
        self.width, self.control, self.sock = width, tmp_path / "control", tmp_path / "tmux.sock"
        self.control.mkdir()
        # rich takes COLUMNS/LINES over the terminal's own size: drop any the test's shell set
        command = (
            f"cd {ROOT} && env -u COLUMNS -u LINES PYTHONPATH={ROOT} {sys.executable} "
            f"{HELPERS / 'progress_screen.py'} {self.control} {' '.join(map(str, runs))}; sleep 60"
        )
        size = ["-x", str(width), "-y", str(height)]
        subprocess.run(
            ["tmux", "-S", str(self.sock), "new-session", "-d", *size, command], check=True
        )

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["tmux", "-S", str(self.sock), "kill-server"], check=False)

    def screen(self) -> list[str]:
        """The lines shown, wrapped lines joined (so that too long ones show as such)."""
        shown = subprocess.run(
            ["tmux", "-S", str(self.sock), "capture-pane", "-p", "-J"],
            capture_output=True,
            text=True,
            check=True,
        )
        return shown.stdout.splitlines()

    def after_update(self, n: int, text: str) -> list[str]:
        """The screen once update `n` is done and shows `text`."""
        shown = self.control / "shown"
        wait_for(lambda: shown.exists() and shown.read_text() == str(n), f"update {n}")
        wait_for(lambda: text in "\n".join(self.screen()), repr(text))
        return self.screen()

    def next(self, n: int) -> None:
        (self.control / f"go{n}").touch()

    def stop(self) -> list[str]:
        (self.control / "stop").touch()
        wait_for(lambda: "DONE" in "\n".join(self.screen()), "DONE")
        return self.screen()

    def assert_panel_fits(self, lines: list[str]) -> None:
        """Every line of the panel fits the width and is whole (not cut at the right edge)."""
        ends = {"╭": "╮", "│": "│", "╰": "╯"}
        panel = [line for line in lines if line[:1] in ends]
        assert panel[0][0] == "╭" and panel[-1][0] == "╰" and len(panel) >= 6
        for line in panel:
            assert cell_len(line) <= self.width and line[-1] == ends[line[0]], line


def wait_for(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


# scripts/test.sh installs tmux and sets HPCDL_REQUIRE_TMUX: from then on a missing tmux fails
needs_tmux = pytest.mark.skipif(
    shutil.which("tmux") is None and not os.environ.get("HPCDL_REQUIRE_TMUX"),
    reason="needs tmux (apt install tmux)",
)


@needs_tmux
@pytest.mark.parametrize("width", [100, 48])
def test_live_display_in_a_terminal(sweep, tmp_path, width):
    (sweep[2] / "label").write_text("lr=0.1 " + "with a label far longer than any terminal " * 3)
    with Terminal(tmp_path, sweep, width) as terminal:
        first = terminal.after_update(1, "3/10")
        text = "\n".join(first)
        assert "2 finished, 1 running, 1 pending, 1 failed" in text
        assert re.search(rf"elapsed {TIME}, about {TIME} left", text)
        assert "lr=0.1 with" in text
        rundir.append_metrics(sweep[2], {"epoch": 4, "loss": 0.2})
        terminal.next(1)
        second = "\n".join(terminal.after_update(2, "4/10"))
        assert "3/10" not in second  # drawn again in place, not appended
        assert second.count("demo sweep") == 1
        # lines printed meanwhile (a local sweep's) go above the panel, each once
        top = second.index("demo sweep")
        assert second.index("update 1 shown") < top and second.index("update 2 shown") < top
        assert second.count("update 1 shown") == 1
        last = terminal.stop()
        terminal.assert_panel_fits(first)
        terminal.assert_panel_fits(last)


@needs_tmux
def test_live_display_in_a_short_terminal(tmp_path):
    """20 running points on 15 lines: as many as fit, then how many more."""
    runs = [
        make_run(tmp_path, f"r{i:02d}", "RUNNING", i % 10, label=f"seed={i}") for i in range(20)
    ]
    with Terminal(tmp_path, runs, 60, height=15) as terminal:
        lines = terminal.after_update(1, "more running")
        text = "\n".join(lines)
        assert "20 running" in text and "seed=0 " in text and "seed=19" not in text
        shown = sum(bool(re.search(r"seed=\d+ +\d+/10", line)) for line in lines)
        assert shown >= 1 and f"... {20 - shown} more running" in text
        terminal.assert_panel_fits(lines)
        assert lines.index(next(line for line in lines if line.startswith("╰"))) < 15
        terminal.stop()


def failed_points(tmp_path: Path, n: int = 4) -> list[Path]:
    reason = "[red]not markup[/red] " + "一个很长的原因 " * 5 + "word " * 20 + "END-OF-REASON"
    long_id = "lr0.001_batch_size64_model.dropout0.25_" + "x" * 120 + "-c1895581"
    runs = [
        make_run(tmp_path, f"{long_id}{i}", "FAILED", 1, log=f"Error: {reason}") for i in range(n)
    ]
    runs.append(make_run(tmp_path, "ok", "COMPLETED", 10))
    runs.append(make_run(tmp_path, "busy", "RUNNING", 1))
    return runs


@pytest.mark.parametrize("width", [100, 60])
def test_failure_table_fits_the_width(tmp_path, width):
    points = statuses_of(failed_points(tmp_path))
    table = failure_table(points, width=width)
    lines = table.splitlines()
    assert max(cell_len(line) for line in lines) <= width
    assert lines[0].split() == ["state", "point", "job", "reason"]
    assert sum(line.startswith("FAILED ") for line in lines) == 4
    flat = "".join(table.split())  # folded cells: the words are all there, broken anywhere
    assert flat.count("END-OF-REASON") == 4 and flat.count("[red]notmarkup[/red]") == 4
    assert "busy" not in table and "ok" not in flat.replace("notmarkup", "")
    assert failure_table(points[4:]) == ""  # nothing failed: nothing to show


def test_failure_table_order_and_limit(tmp_path):
    never = make_run(tmp_path, "never", "PENDING")
    (never / "local.json").unlink()
    missing = PointStatus("never", *point_state(never, False, None), None, str(never), "lr=5")
    points = [missing, *statuses_of(failed_points(tmp_path, 5))]
    lines = failure_table(points).splitlines()
    states = [line.split()[0] for line in lines if line[:1].isupper()]
    assert states == ["FAILED"] * 5 + ["MISSING"]  # failures first
    assert "never submitted" in lines[-2] and lines[-1].strip() == "lr=5"
    table = failure_table(points, limit=2)
    assert sum(line.startswith("FAILED ") for line in table.splitlines()) == 2
    assert "MISSING" not in table and "... 4 more" in table


def test_status_json_for_scripts(sweep):
    points = statuses_of(sweep)
    document = json.loads(status_json(points))
    assert list(document) == ["total", "counts", "estimated_seconds_left", "points"]
    assert document["total"] == 5
    counts = document["counts"]
    assert {k: v for k, v in counts.items() if v} == {
        "FINISHED": 2,
        "RUNNING": 1,
        "PENDING": 1,
        "FAILED": 1,
    }
    assert counts["TIMEOUT"] == 0 and counts["MISSING"] == 0  # every known state, always
    keys = ["id", "label", "state", "reason", "job", "run_dir", "epochs_done", "epochs_total"]
    keys += ["epoch_seconds", "elapsed_seconds", "exit_code", "start", "end", "node"]
    by_id = {p["id"]: p for p in document["points"]}
    assert all(list(p) == keys for p in document["points"])
    assert by_id["p3"]["state"] == "RUNNING" and by_id["p3"]["label"] == "lr=0.1"
    assert (by_id["p3"]["epochs_done"], by_id["p3"]["epochs_total"]) == (3, 10)
    assert by_id["p1"]["epochs_done"] is None  # read for running points only
    assert by_id["p1"]["elapsed_seconds"] == pytest.approx(100, abs=1)
    assert by_id["p5"]["exit_code"] == 1 and "loss became nan" in by_id["p5"]["reason"]
    assert by_id["p4"]["start"] is None and by_id["p4"]["node"] == socket.gethostname()
    assert Path(by_id["p2"]["run_dir"]) == sweep[1]
    assert json.loads(status_json([]))["points"] == []


def test_ten_thousand_points(tmp_path):
    """A large sweep (8 running, 10,000 finished, 2,000 failed) is shown, tabled and written
    quickly; the table shows 200 failures unless asked for more."""
    runs = [make_run(tmp_path, f"r{i}", "RUNNING", i, label=f"seed={i}") for i in range(8)]
    points = statuses_of(runs)
    points += statuses_of([make_run(tmp_path, "done", "COMPLETED", 10)]) * 10_000
    points += statuses_of([make_run(tmp_path, "bad", "FAILED", 1, log="Error: boom")]) * 2_000
    started = time.monotonic()
    lines = plain_run(tmp_path, [lambda: points])
    document = json.loads(status_json(points))
    table = failure_table(points).splitlines()
    assert time.monotonic() - started < 10
    assert lines[0].split(" | ")[0].endswith("demo: 10000 finished, 8 running, 2000 failed")
    assert document["counts"]["FINISHED"] == 10_000 and len(document["points"]) == 12_008
    assert sum(line.startswith("FAILED ") for line in table) == 200
    assert table[-1].split() == ["...", "1800", "more"]


@pytest.mark.slow
def test_a_real_local_sweep_watched(env, tmp_path):
    """`hpcdl sweep` trains 2 tiny MNIST points one after the other; another process shows
    their statuses (hpcdl.sweep.statuses) as plain lines until both have finished."""
    spec = write_spec(
        tmp_path, "watched", {"train.lr": [0.001, 0.003]}, "local", fixed={"train.epochs": 3}
    )
    sweep_dir = tmp_path / "results" / "watched"
    runner = start_sweep(spec, env)
    # submitted, not only planned: between the two a point is UNCONFIRMED (found under load)
    until(
        lambda: (
            (sweep_dir / "sweep.json").exists()
            and any(s["state"] == "submitted" for s in manifest(tmp_path, "watched")["submissions"])
        ),
        runner,
        timeout=120,
    )
    out_path = tmp_path / "watch.log"
    with open(out_path, "w") as out, Progress("watched", stream=out) as progress:
        while True:
            points = statuses(load_manifest(sweep_dir))
            progress.update(points)
            if not any(p.state in ("PENDING", "RUNNING") for p in points):
                break
            assert runner.poll() is None or runner.returncode == 0, runner.communicate()
            time.sleep(0.3)
    stdout, stderr = runner.communicate(timeout=120)
    assert runner.returncode == 0, stderr
    lines = out_path.read_text().splitlines()
    assert re.search(r" watched: (2 pending|1 running, 1 pending) \|", lines[0])
    running = [re.search(r"\| running (.+) (\d)/3 epochs \|", line) for line in lines]
    seen = [(m.group(1), int(m.group(2))) for m in running if m]
    assert {label for label, _ in seen} == {"train.lr=0.001", "train.lr=0.003"}
    for label in ("train.lr=0.001", "train.lr=0.003"):
        epochs = [epoch for name, epoch in seen if name == label]
        assert epochs == sorted(epochs) and len(set(epochs)) == len(epochs)  # one line each
    assert re.fullmatch(rf"\S+ watched: 2 finished \| elapsed {TIME}", lines[-1])
    document = json.loads(status_json(points))
    assert document["counts"]["FINISHED"] == 2 and document["estimated_seconds_left"] == 0
    assert all(p["elapsed_seconds"] > 1 for p in document["points"])
    assert failure_table(points) == ""


def test_a_sampled_float_is_shown_with_four_significant_digits():
    from hpcdl.grid import overrides_label

    label = overrides_label({"train.lr": 0.000284995206498731, "model.dense": [128], "x": 1})
    assert label == "train.lr=0.000285 model.dense=[128] x=1"
    assert overrides_label({}) == "(base)"
