"""Collector and reports: damaged runs get a state and a reason, no row is dropped; reports
say which settings won. (The HTML report in a browser: test_report_browser.py.)"""

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.synthetic import make_sweep
from hpcdl.collect import collect
from hpcdl.report import report
from tests.conftest import hpcdl


@pytest.fixture
def sweep(tmp_path):
    return make_sweep(tmp_path, 12, epochs=6, fail_every=0)


def point_dirs(sweep):
    return sorted(p for p in sweep.iterdir() if p.is_dir())


def local_state(run_dir, **fields):
    path = run_dir / "local.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def test_damaged_runs_each_get_a_state_and_reason(sweep):
    dirs = point_dirs(sweep)
    # 0: truncated last metrics line (killed mid-write) but finished
    with open(dirs[0] / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 7, "loss": 0.0')
    # 1: job ended "successfully" but wrote no result.json
    (dirs[1] / "result.json").unlink()
    # 2: empty log, failed with exit 1, no result
    (dirs[2] / "result.json").unlink()
    (dirs[2] / "job.out").write_text("")
    local_state(dirs[2], state="FAILED", exit_code=1)
    # 3: a crashed job: only its config, and a runner that is gone
    for name in ("metrics.jsonl", "result.json", "job.out"):
        (dirs[3] / name).unlink()
    local_state(dirs[3], state="RUNNING", host=os.uname().nodename, pid=2**22 + 12345)
    # 4: NaN loss, no result
    (dirs[4] / "result.json").unlink()
    (dirs[4] / "metrics.jsonl").write_text('{"epoch": 1, "loss": null, "accuracy": 0.1}\n')
    local_state(dirs[4], state="FAILED", exit_code=2)
    # 5: result.json is garbage
    (dirs[5] / "result.json").write_text("{not json")
    # 6: time limit, with the training's own failure record
    (dirs[6] / "result.json").unlink()
    (dirs[6] / "failure.json").write_text(json.dumps({"reason": "interrupted"}))
    local_state(dirs[6], state="TIMEOUT", exit_code=143)

    with pytest.warns(UserWarning) as caught:
        summary = collect(sweep, out=lambda _m: None)
    assert len(summary) == 12  # no row dropped
    rows = summary.set_index("point")
    expect = {
        0: ("FINISHED", ""),
        1: ("FAILED", "ended without result.json"),
        2: ("FAILED", "exit 1"),
        3: ("LOST", "its process is gone"),
        4: ("FAILED", "loss became NaN"),
        5: ("FAILED", "result.json unreadable"),
        6: ("TIMEOUT", "time limit reached: interrupted"),
    }
    for i, (state, reason) in expect.items():
        row = rows.loc[dirs[i].name]
        assert row["state"] == state, (i, row["state"], row["reason"])
        assert reason in (row["reason"] if isinstance(row["reason"], str) else ""), (i, row)
    assert rows.loc[dirs[0].name, "epochs_done"] == 6
    messages = " ".join(str(w.message) for w in caught)
    assert "unreadable line" in messages and "NaN" in messages
    meta = json.loads((sweep / "collect.json").read_text())
    assert meta["points"] == 12 and meta["partial"] is False
    curves = pd.read_csv(sweep / "curves.csv")
    assert set(curves["point"]) >= {d.name for d in dirs if (d / "metrics.jsonl").exists()}
    assert pd.read_parquet(sweep / "summary.parquet").shape == summary.shape


def test_collect_of_a_running_sweep_says_partial(sweep):
    run = point_dirs(sweep)[0]
    (run / "result.json").unlink()
    local_state(run, state="RUNNING", host=os.uname().nodename, pid=os.getpid())
    summary = collect(sweep, out=lambda _m: None)
    assert json.loads((sweep / "collect.json").read_text())["partial"] is True
    assert (summary["state"] == "RUNNING").sum() == 1


def test_collect_is_idempotent(sweep):
    collect(sweep, out=lambda _m: None)
    first = (sweep / "summary.csv").read_text()
    collect(sweep, out=lambda _m: None)
    assert (sweep / "summary.csv").read_text() == first


def test_report_answers_which_settings_won(sweep, tmp_path):
    other = make_sweep(tmp_path / "b", 8, epochs=4, fail_every=4, name="other")
    html_path, md_path = report([sweep], out=lambda _m: None)
    md = md_path.read_text()
    for heading in (
        "## Overview",
        "## Best runs (by test_accuracy)",
        "### Effect of lr",
        "## Per-class accuracy of the best run",
        "## Failures (0)",
    ):
        assert heading in md, heading
    summary = pd.read_csv(sweep / "summary.csv")
    best = summary.sort_values("test_accuracy", ascending=False).iloc[0]
    assert md.index(best["point"]) < md.index("### Effect")  # the winner heads the table
    winner = f"lr={best['hp.train.lr']:g} batch_size={best['hp.train.batch_size']} "
    assert md.index(winner) < md.index(best["point"])  # named by its settings
    assert "Effect of seed" not in md  # every point has seed 0: not an effect
    lr_table = summary.groupby("hp.train.lr")["test_accuracy"].mean()
    assert f"{lr_table.max():.4g}" in md
    page = html_path.read_text()
    assert page.count('class="plotly-graph-div"') >= 4 and page.count("<table") >= 6

    compare_html, compare_md = report([sweep, other], out_dir=tmp_path / "cmp", out=lambda _m: None)
    text = compare_md.read_text()
    assert "## Best run of each sweep" in text and "other: Failures (2)" in text
    assert "ResourceExhaustedError" in text  # the failing runs' log tails


def test_report_of_a_real_grid_names_runs_and_groups_zipped_settings(tmp_path):
    real = Path(__file__).resolve().parents[1] / "results" / "indian_pines_grid"
    folder = tmp_path / real.name
    shutil.copytree(real, folder, ignore=shutil.ignore_patterns("report.*"))
    _html, md_path = report([folder], refresh=False, out=lambda _m: None)
    md = md_path.read_text()
    # optimizer, loss and lr vary together (a zip): one effect table, not three alike
    assert md.count("### Effect of optimizer / loss / lr on test_accuracy") == 1
    assert "### Effect of loss" not in md and "### Effect of lr" not in md
    best = "| dropout=0 window=9 optimizer=adam loss=categorical_crossentropy lr=0.001 seed=2 |"
    assert best in md.split("## Best runs")[1].splitlines()[6]  # first row under the header
    assert "| Stone-Steel-Towers | 84 |" in md  # Indian Pines' class names


def test_report_averages_each_setting_over_its_seeds(tmp_path):
    sweep = make_sweep(tmp_path, 120, epochs=3, fail_every=0)  # 60 settings x seeds 0 and 1
    _html, md_path = report([sweep], out=lambda _m: None)
    md = md_path.read_text()
    section = md.split("## Settings averaged over seeds (by mean test_accuracy)")[1]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    first_row = rows[1].split("|")[1:-1]  # rows[0] is the header
    summary = pd.read_csv(sweep / "summary.csv")
    means = summary.groupby(["hp.train.lr", "hp.train.batch_size", "hp.model.dropout"])[
        "test_accuracy"
    ].agg(["mean", "count"])
    winner = means["mean"].idxmax()
    lr, batch, dropout, seeds, mean = (float(v) for v in first_row[:5])
    assert (lr, batch, dropout) == winner and seeds == 2
    assert mean == pytest.approx(means["mean"].max(), rel=1e-3)


def test_report_command(sweep, env, tmp_path):
    proc = hpcdl("report", str(sweep), env=env)
    assert proc.returncode == 0, proc.stderr
    assert (sweep / "report.html").exists() and (sweep / "summary.csv").exists()
    missing = hpcdl("report", str(tmp_path / "nothing"), env=env)
    assert missing.returncode == 2 and "no sweep here" in missing.stderr


def test_waiting_on_a_sweep_with_a_queued_point(sweep):
    from hpcdl.errors import HpcdlError
    from hpcdl.sweep import wait

    queued = point_dirs(sweep)[0]
    (queued / "result.json").unlink()
    local_state(queued, state="PENDING", host=os.uname().nodename, runner=os.getpid())
    lines = []
    with pytest.raises(HpcdlError, match="still 11 finished, 1 pending after"):
        wait(sweep, timeout=0.3, out=lines.append, first_delay=0.1)
    assert len(lines) == 1  # printed once: the counts did not change

    local_state(queued, runner=2**22 + 12345)  # the sweep process that ran it is gone
    _manifest, points = wait(sweep, timeout=0.3, out=lines.append)
    assert {p.state for p in points} == {"LOST", "FINISHED"}


def test_a_scenes_classification_map_shows_the_best_runs_pixels(sweep):
    """A run that wrote predictions.npz (training does for scenes such as Indian Pines) gets its
    map beside the ground truth; runs without one get none."""
    import numpy as np

    from hpcdl.report.data import load
    from hpcdl.report.sections import scene_map

    data = load(sweep, refresh=True, out=lambda _m: None)
    assert scene_map(data, "") == []
    best = data.summary.sort_values("test_accuracy", ascending=False)["point"].iloc[0]
    coords = np.array([(r, c) for r in range(4) for c in range(5) if (r + c) % 3])
    truth = (coords[:, 0] + coords[:, 1]) % 3
    predicted = truth.copy()
    predicted[-1] = (predicted[-1] + 1) % 3  # one test pixel wrong
    split = np.where(np.arange(len(coords)) < 4, 0, 2)
    np.savez(
        sweep / best / "predictions.npz",
        coords=coords,
        truth=truth,
        predicted=predicted,
        split=split,
        shape=np.array([4, 5]),
    )
    (section,) = scene_map(data, "")
    assert section.title == "Classification map of the best run"
    assert (
        f"{(split == 2).sum()} test pixels" in section.text and "4 training pixels" in section.text
    )
    maps = [trace for trace in section.figure.data if trace.type == "heatmap"]
    assert [m.z.shape for m in maps] == [(4, 5), (4, 5)]
    assert np.isnan(maps[0].z[0, 0]) and maps[0].z[0, 1] == truth[0]  # unlabelled pixel blank
    assert maps[1].z[tuple(coords[-1])] == predicted[-1]
    html_path, _ = report([sweep], out=lambda _m: None)
    assert "Classification map of the best run" in html_path.read_text()


def test_runs_are_chosen_on_validation_and_the_test_figure_shown_beside(sweep):
    """Where runs have a validation metric, the report ranks on the tested model's validation
    accuracy (never the test set) and shows the test accuracy next to it; without one it ranks
    on test and says that this overstates the result."""
    from hpcdl.report import tables
    from hpcdl.report.data import load

    plain = load(sweep, refresh=True, out=lambda _m: None)
    assert plain.metric == "test_accuracy"
    assert any("selects on the test set and overstates" in note for note in plain.notes)

    points = point_dirs(sweep)
    for i, run_dir in enumerate(points):  # validation disagrees with test: reverse order
        lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        for record in lines:
            record["val_accuracy"] = 0.5 + 0.01 * i + 0.001 * record["epoch"]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    data = load(sweep, refresh=True, out=lambda _m: None)
    assert data.metric == "val_accuracy" and not any("overstates" in n for n in data.notes)
    best = tables.best_runs(data)
    assert best["id"].iloc[0] == points[-1].name  # the best on validation, not on test
    assert best["val_accuracy"].iloc[0] == pytest.approx(0.5 + 0.01 * (len(points) - 1) + 0.006)
    summary = pd.read_csv(sweep / "summary.csv").set_index("point")
    assert best["test_accuracy"].iloc[0] == summary.loc[points[-1].name, "test_accuracy"]
    assert list(best.columns[:3]) == ["run", "val_accuracy", "test_accuracy"]
