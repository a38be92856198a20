"""Locate, download and verify the data files.

Layout of a data directory: ``<dir>/mnist/<files>`` and ``<dir>/indian_pines/<files>`` (files
directly in ``<dir>`` are found too). The directory is, in order: an explicit path (config
``data.dir`` or ``--data-dir``), ``$HPCDL_DATA_DIR``, ``~/.cache/hpcdl/data``.

Checksums are of the *content*: the decompressed IDX bytes for MNIST, the array inside the .mat
file for Indian Pines (distributors re-save the .mat files; the arrays stay the same). Downloads go
to a temporary file in the target folder and are renamed into place only after verification.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from hpcdl.errors import HpcdlError
from hpcdl.files import write_bytes_atomic

DATASET_DIRS = {"mnist": "mnist", "indian_pines": "indian_pines"}
ALIASES = {"mnist": "mnist", "indian-pines": "indian_pines", "indian_pines": "indian_pines"}


@dataclass(frozen=True)
class DataFile:
    """One file of a data set and how to check it."""

    name: str
    urls: tuple[str, ...]
    sha256: str | None  # None: no published checksum (only shape checks apply)
    check: str  # "bytes" | "gunzip" | "mat:<key>"
    optional: bool = False


_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_EHU = "https://www.ehu.eus/ccwintco/uploads/"


def _mnist(name: str, sha: str) -> DataFile:
    return DataFile(name, tuple(m + name for m in _MNIST_MIRRORS), sha, "gunzip")


FILES: dict[str, tuple[DataFile, ...]] = {
    "mnist": (
        _mnist(
            "train-images-idx3-ubyte.gz",
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        ),
        _mnist(
            "train-labels-idx1-ubyte.gz",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        ),
        _mnist(
            "t10k-images-idx3-ubyte.gz",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        ),
        _mnist(
            "t10k-labels-idx1-ubyte.gz",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
    ),
    "indian_pines": (
        DataFile(
            "Indian_pines_corrected.mat",
            (_EHU + "6/67/Indian_pines_corrected.mat",),
            "36468dd7336c8bd37a80cced54362ea426f226703f3797ba494556fd8134e77f",
            "mat:indian_pines_corrected",
        ),
        DataFile(
            "Indian_pines_gt.mat",
            (_EHU + "c/c4/Indian_pines_gt.mat",),
            "ebf20cfe0bce98f01885f0ab4fd1857925db3ef0a1f1624bbee3ffcb92425103",
            "mat:indian_pines_gt",
        ),
        # the 220-band cube: no checksum is published for its array, so only its shape is checked
        DataFile(
            "Indian_pines.mat",
            (_EHU + "2/22/Indian_pines.mat",),
            None,
            "mat:indian_pines",
            optional=True,
        ),
    ),
}
MNIST_NPZ_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"


def dataset_key(name: str) -> str:
    """Normalise a user-given data set name (``indian-pines`` -> ``indian_pines``)."""
    try:
        return ALIASES[name]
    except KeyError:
        raise HpcdlError(f"unknown data set {name!r}; choose mnist or indian-pines") from None


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The data directory: explicit path, else $HPCDL_DATA_DIR, else ~/.cache/hpcdl/data."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("HPCDL_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "hpcdl" / "data"


def find_file(dataset: str, name: str, root: Path) -> Path | None:
    """The path of a data file under root (``root/<dataset>/name`` or ``root/name``), or None."""
    for candidate in (root / DATASET_DIRS[dataset] / name, root / name):
        if candidate.is_file():
            return candidate
    return None


def require_file(dataset: str, name: str, root: Path) -> Path:
    """Like find_file, but a missing file is a one-line error saying how to get it."""
    path = find_file(dataset, name, root)
    if path is None:
        cli_name = dataset.replace("_", "-")
        raise HpcdlError(
            f"{dataset}: {name} not found in {root / DATASET_DIRS[dataset]} or {root}; "
            f"run `hpcdl data fetch {cli_name} --data-dir {root}` or point HPCDL_DATA_DIR "
            "(or data.dir) at a folder that has it"
        )
    return path


# ---------------------------------------------------------------- checksums
def content_sha256(data: bytes, check: str) -> str:
    """sha256 of what a file holds, computed the way `check` says."""
    if check == "bytes":
        return hashlib.sha256(data).hexdigest()
    if check == "gunzip":
        return hashlib.sha256(
            gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        ).hexdigest()
    if check.startswith("mat:"):
        return hashlib.sha256(read_mat_array(io.BytesIO(data), check[4:]).tobytes()).hexdigest()
    raise ValueError(f"unknown check {check!r}")


def read_mat_array(source, key: str):
    """One array from a MATLAB .mat file (v5 via scipy, v7.3 via h5py), C-contiguous."""
    import numpy as np

    head = source.read(128) if hasattr(source, "read") else Path(source).read_bytes()[:128]
    if hasattr(source, "seek"):
        source.seek(0)
    if b"MATLAB 7.3" in head:  # HDF5-based .mat: stored transposed
        import h5py

        with h5py.File(source, "r") as f:
            if key not in f:
                raise HpcdlError(f"{getattr(source, 'name', 'file')}: no variable {key!r}")
            return np.ascontiguousarray(np.asarray(f[key]).T)
    import scipy.io

    try:
        mat = scipy.io.loadmat(source, variable_names=[key])
    except (ValueError, OSError) as err:
        raise HpcdlError(
            f"{getattr(source, 'name', source)}: not a readable .mat file ({err})"
        ) from None
    if key not in mat:
        raise HpcdlError(f"{getattr(source, 'name', source)}: no variable {key!r} in the .mat file")
    return np.ascontiguousarray(mat[key])


def verify_file(path: Path, spec: DataFile) -> bool:
    """True when the file's content matches its checksum (or has none to match)."""
    if spec.sha256 is None:
        return True
    try:
        return content_sha256(path.read_bytes(), spec.check) == spec.sha256
    except (HpcdlError, OSError, ValueError, EOFError):
        return False


# ---------------------------------------------------------------- fetching
def _mirror_urls(dataset: str, spec: DataFile) -> tuple[str, ...]:
    mirror = os.environ.get("HPCDL_DATA_MIRROR")
    if mirror:  # a site-local mirror with the same layout as a data directory
        return (f"{mirror.rstrip('/')}/{DATASET_DIRS[dataset]}/{spec.name}",)
    return spec.urls


def _download(url: str, timeout: float = 60.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http/https/file)
        return resp.read()


def fetch(dataset: str, root: Path, include_optional: bool = False, log=print) -> list[Path]:
    """Make sure every file of `dataset` is in `root/<dataset>/`, verified; download the rest.

    Raises HpcdlError naming the file when no source gives a verified copy.
    """
    dataset = dataset_key(dataset)
    target_dir = root / DATASET_DIRS[dataset]
    done = []
    for spec in FILES[dataset]:
        if spec.optional and not include_optional:
            continue
        existing = find_file(dataset, spec.name, root)
        if existing and verify_file(existing, spec):
            log(f"ok        {existing}")
            done.append(existing)
            continue
        if existing:
            log(f"corrupt   {existing}: checksum mismatch, downloading again")
        errors = []
        for url in _mirror_urls(dataset, spec):
            try:
                data = _download(url)
            except OSError as err:  # URLError, HTTPError, timeouts
                errors.append(f"{url}: {getattr(err, 'reason', err)}")
                continue
            if spec.sha256 and content_sha256(data, spec.check) != spec.sha256:
                errors.append(f"{url}: checksum mismatch")
                continue
            if not spec.sha256:
                content_sha256(data, spec.check)  # at least it must parse
            path = target_dir / spec.name
            write_bytes_atomic(path, data)
            log(f"fetched   {path} ({len(data) / 1e6:.1f} MB from {url})")
            done.append(path)
            break
        else:
            if dataset == "indian_pines" and not spec.optional:
                try:
                    done.append(_from_tensorly(spec, target_dir, log))
                    continue
                except HpcdlError as err:
                    errors.append(str(err))
            raise HpcdlError(f"{dataset}: could not fetch {spec.name}: " + "; ".join(errors))
    return done


def _from_tensorly(spec: DataFile, target_dir: Path, log=print) -> Path:
    """Offline source: the Indian Pines arrays that the tensorly wheel ships, saved as .mat."""
    import numpy as np
    import scipy.io

    try:
        import tensorly.datasets as tds
    except ImportError:
        raise HpcdlError(
            "tensorly not installed (pip install tensorly: it ships Indian Pines)"
        ) from None
    key = spec.check[4:]
    npy = Path(tds.__file__).parent / "data" / (Path(spec.name).stem + ".npy")
    if not npy.is_file():
        raise HpcdlError(f"tensorly has no {npy.name}")
    array = np.ascontiguousarray(np.load(npy))
    if hashlib.sha256(array.tobytes()).hexdigest() != spec.sha256:
        raise HpcdlError(f"tensorly's {npy.name}: checksum mismatch")
    buf = io.BytesIO()
    scipy.io.savemat(buf, {key: array}, do_compression=True)
    path = target_dir / spec.name
    write_bytes_atomic(path, buf.getvalue())
    log(f"fetched   {path} (from the tensorly package)")
    return path
