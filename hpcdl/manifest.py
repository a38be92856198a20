"""The sweep manifest (`<results>/<sweep>/sweep.json`): what was planned and what was submitted.

It is rewritten atomically after every change, so a crash at any point leaves a readable file, and
each submission is recorded as 'planned' *before* the scheduler is called (with a unique job name)
so that a later `resume` can find jobs whose id never made it into the file.

Run directories, scripts and points files are stored relative to the sweep folder, so a folder
that was moved or copied is read where it is now. In memory they are absolute paths under the
folder the manifest was read from; old manifests (absolute paths) are mapped the same way.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from hpcdl import rundir
from hpcdl.errors import HpcdlError
from hpcdl.files import utc_now
from hpcdl.spec import SweepSpec

MANIFEST = "sweep.json"


now = utc_now  # the manifest's timestamps (ISO 8601, UTC)


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

    def on_disk(self) -> dict[str, Any]:
        """The manifest as stored: paths inside the sweep folder relative to it."""
        data = asdict(self)
        for point in data["points"]:
            point["run_dir"] = _relative(point["run_dir"], self.sweep_dir)
        for sub in data["submissions"]:
            sub["script"] = _relative(sub["script"], self.sweep_dir)
            if sub["points_file"]:
                sub["points_file"] = _relative(sub["points_file"], self.sweep_dir)
        return data

    def save(self) -> None:
        """Replace sweep.json in one step (temporary file, fsync, rename)."""
        rundir.write_json_atomic(self.path, self.on_disk())

    def claim(self) -> None:
        """Write the manifest only if none exists: of two `hpcdl sweep` runs racing for one
        folder, exactly one gets it. The file is complete before it appears (written to a
        temporary file, then hard-linked to its name, which fails if the name exists)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(rundir.json_text(self.on_disk()))
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            _link_exclusive(tmp, self.path)
        except FileExistsError:
            raise HpcdlError(
                f"{self.path.parent} already holds sweep {self.name!r}: see `hpcdl status "
                f"{self.path.parent}`, rerun what failed with `hpcdl resume "
                f"{self.path.parent}`, or choose another name"
            ) from None
        finally:
            Path(tmp).unlink(missing_ok=True)
        rundir.fsync_dir(self.path.parent)

    def next_token(self, prefix: str = "a") -> str:
        used = {s.token for s in self.submissions}
        n = 0
        while f"{prefix}{n:03d}" in used:
            n += 1
        return f"{prefix}{n:03d}"


def _link_exclusive(tmp: str, path: Path) -> None:
    """Give the complete file `tmp` the name `path` unless that exists (FileExistsError). On a
    file system without hard links, an exclusive create and copy is the nearest thing."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(Path(tmp).read_text())
            f.flush()
            os.fsync(f.fileno())


def _relative(path: str, sweep_dir: str) -> str:
    """`path` relative to the sweep folder when it lies inside it, else unchanged."""
    if os.path.isabs(path) and Path(path).is_relative_to(sweep_dir):
        return os.path.relpath(path, sweep_dir)
    return path


def _here(path: str, stored_dir: str, sweep_dir: Path, point_id: str | None = None) -> str:
    """A stored path as an absolute path under the folder the manifest is in now: relative
    ones from the folder; absolute ones from an old manifest when they were inside the folder
    it was written in, or (run directories) when they end in the point's own folder."""
    if not os.path.isabs(path):
        return str(sweep_dir / path)
    if stored_dir and Path(path).is_relative_to(stored_dir):
        return str(sweep_dir / Path(path).relative_to(stored_dir))
    if point_id is not None and Path(path).name == point_id:
        return str(sweep_dir / point_id)
    return path


_MANIFEST_TYPE = TypeAdapter(Manifest)


def _damaged(path: Path, what: str) -> HpcdlError:
    return HpcdlError(
        f"{path}: damaged sweep manifest ({what}); restore it from a backup or copy, "
        "or start the sweep again under another name"
    )


def _read_raw(path: Path) -> Manifest:
    """Parse and type-check sweep.json; a one-line error saying what is wrong with it."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise HpcdlError(f"{path}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise _damaged(path, f"not UTF-8 text at byte {err.start}") from None
    if not text.strip():
        raise _damaged(path, "empty file")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        end = " (truncated?)" if err.pos >= len(text.rstrip()) else ""
        raise _damaged(
            path, f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}{end}"
        ) from None
    except RecursionError:
        raise _damaged(path, "nested too deeply") from None
    try:
        manifest = _MANIFEST_TYPE.validate_python(raw)
        spec = manifest.spec
        if "base" not in spec and "config" not in spec:  # made by hand (benchmarks/synthetic.py)
            spec = {**spec, "base": manifest.base}
        SweepSpec.model_validate(spec)  # as status, resume and cancel will read it
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "top level"
        raise _damaged(path, f"{where}: {first['msg']}") from None
    return manifest


def _check_points(path: Path, manifest: Manifest) -> None:
    """Point ids unique, usable as folder names, and every submission's points known."""
    ids = [p.id for p in manifest.points]
    for pid in ids:
        if pid in ("", ".", "..") or "/" in pid or "\0" in pid:
            raise _damaged(path, f"point id {pid!r} is not a folder name")
    if len(set(ids)) != len(ids):
        raise _damaged(path, "a point id appears twice")
    known = set(ids)
    for sub in manifest.submissions:
        unknown = [pid for pid in sub.points if pid not in known]
        if unknown:
            raise _damaged(path, f"submission {sub.token} names unknown point {unknown[0]!r}")


def load_manifest(sweep: str | Path) -> Manifest:
    """Read a sweep's manifest from its folder (or the sweep.json path itself), with every path
    in it absolute under the folder it is in now. Raises HpcdlError for a missing or damaged
    file."""
    path = Path(sweep)
    if path.is_dir():
        path = path / MANIFEST
    if not path.is_file():
        raise HpcdlError(f"{sweep}: no sweep here (no {MANIFEST}); give the sweep's results folder")
    if path.name != MANIFEST and path.suffix in (".yaml", ".yml"):
        raise HpcdlError(
            f"{sweep}: a spec, not a sweep; give the sweep's results folder (results/<name>)"
        )
    manifest = _read_raw(path)
    _check_points(path, manifest)
    stored, here = manifest.sweep_dir, path.parent.resolve()
    for point in manifest.points:
        point.run_dir = _here(point.run_dir, stored, here, point.id)
    for sub in manifest.submissions:
        sub.script = _here(sub.script, stored, here)
        if sub.points_file:
            sub.points_file = _here(sub.points_file, stored, here)
    manifest.sweep_dir = str(here)
    return manifest
