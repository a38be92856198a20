"""Show the live progress of the run directories given, as `hpcdl status --wait` would.

Usage: progress_screen.py CONTROL_DIR RUN_DIR...  Reads the points' states from their run
directories, shows them, prints a line, writes CONTROL_DIR/shown (the number of updates so
far), and updates
again when CONTROL_DIR/go<N> appears; leaves when CONTROL_DIR/stop appears, printing DONE.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from hpcdl.backends.local import read_state
from hpcdl.progress import Progress
from hpcdl.states import PointStatus, point_state


def statuses_of(run_dirs: list[Path]) -> list[PointStatus]:
    """The points' statuses from their run directories (local backend records), labelled by
    the file `label` in each when it has one."""
    points = []
    for run_dir in run_dirs:
        record = read_state(run_dir)
        state, reason = point_state(run_dir, True, record)
        label_file = run_dir / "label"
        label = label_file.read_text().strip() if label_file.exists() else ""
        points.append(PointStatus(run_dir.name, state, reason, None, str(run_dir), label, record))
    return points


def main(control: Path, run_dirs: list[Path]) -> None:
    with Progress("demo sweep") as progress:
        shown = 0
        while True:
            progress.update(statuses_of(run_dirs))
            shown += 1
            print(f"update {shown} shown", flush=True)  # as a local sweep prints its lines
            (control / "shown").write_text(str(shown))
            while not (control / f"go{shown}").exists() and not (control / "stop").exists():
                time.sleep(0.05)
            if (control / "stop").exists():
                break
    print("DONE")


if __name__ == "__main__":
    main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
