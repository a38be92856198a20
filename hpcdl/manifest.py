"""The sweep manifest (`<results>/<sweep>/sweep.json`): what was planned and what was submitted.

It is rewritten atomically after every change, so a crash at any point leaves a readable file, and
each submission is recorded as 'planned' *before* the scheduler is called (with a unique job name)
so that a later `resume` can find jobs whose id never made it into the file.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hpcdl import rundir
from hpcdl.errors import HpcdlError

MANIFEST = "sweep.json"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Submission:
    """One scheduler submission: an array over points (by index) or the dependent collect job."""

    token: str
    kind: str  # "array" | "collect"
    job_name: str
    script: str
    points: list[str] = field(default_factory=list)  # point ids in array-index order
    points_file: str | None = None
    job_id: str | None = None
    state: str = "planned"  # planned -> submitted | failed
    submitted_at: str | None = None
    error: str | None = None


@dataclass
class PointEntry:
    id: str
    overrides: dict[str, Any]
    run_dir: str


@dataclass
class Manifest:
    name: str
    backend: str
    sweep_dir: str
    spec_path: str
    spec: dict[str, Any]
    base: dict[str, Any]
    points: list[PointEntry]
    submissions: list[Submission] = field(default_factory=list)
    created_at: str = field(default_factory=now)
    hpcdl_version: str = ""
    uid: str = field(default_factory=lambda: secrets.token_hex(3))

    @property
    def path(self) -> Path:
        return Path(self.sweep_dir) / MANIFEST

    def point(self, point_id: str) -> PointEntry:
        return next(p for p in self.points if p.id == point_id)

    def save(self) -> None:
        rundir.write_json_atomic(self.path, asdict(self))

    def claim(self) -> None:
        """Write the manifest only if none exists: of two `hpcdl sweep` runs racing for one
        folder, exactly one gets it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise HpcdlError(
                f"{self.path.parent} already holds sweep {self.name!r}: see `hpcdl status "
                f"{self.path.parent}`, rerun what failed with `hpcdl resume "
                f"{self.path.parent}`, or choose another name"
            ) from None
        with os.fdopen(fd, "w") as f:
            f.write(rundir.dumps(asdict(self)))
            f.flush()
            os.fsync(f.fileno())

    def next_token(self, prefix: str = "a") -> str:
        used = {s.token for s in self.submissions}
        n = 0
        while f"{prefix}{n:03d}" in used:
            n += 1
        return f"{prefix}{n:03d}"


def load_manifest(sweep: str | Path) -> Manifest:
    """Read a sweep's manifest from its folder (or the sweep.json path itself)."""
    path = Path(sweep)
    if path.is_dir():
        path = path / MANIFEST
    if not path.exists():
        raise HpcdlError(f"{sweep}: no sweep here (no {MANIFEST}); give the sweep's results folder")
    raw = rundir.read_json(path)
    raw["points"] = [PointEntry(**p) for p in raw["points"]]
    raw["submissions"] = [Submission(**s) for s in raw["submissions"]]
    manifest = Manifest(**raw)
    manifest.sweep_dir = str(path.parent.resolve())
    return manifest
