"""`hpcdl data fetch`: verified downloads, atomic writes, offline sources.

No internet here: a site mirror (HPCDL_DATA_MIRROR, file:// URL) stands in for the public servers;
the download, checksum and rename code is the same.
"""

import gzip
import shutil

import pytest

from hpcdl.datasets import sources
from tests.conftest import hpcdl


def test_fetch_from_mirror_verifies_and_writes(env, shared_data, tmp_path):
    env = {**env, "HPCDL_DATA_MIRROR": shared_data.as_uri()}
    proc = hpcdl("data", "fetch", "mnist", "indian-pines", "--data-dir", str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stderr
    for name in ("mnist/train-images-idx3-ubyte.gz", "indian_pines/Indian_pines_gt.mat"):
        assert (tmp_path / name).read_bytes() == (shared_data / name).read_bytes()
    again = hpcdl("data", "fetch", "mnist", "--data-dir", str(tmp_path), env=env)
    assert again.returncode == 0 and again.stdout.count("ok ") == 4


def test_corrupt_download_leaves_no_file(env, shared_data, tmp_path):
    mirror = tmp_path / "mirror" / "mnist"
    mirror.mkdir(parents=True)
    for path in (shared_data / "mnist").iterdir():
        shutil.copy(path, mirror)
    bad = mirror / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(gzip.decompress(bad.read_bytes()))
    data[100] ^= 1  # one flipped bit
    bad.write_bytes(gzip.compress(bytes(data)))
    target = tmp_path / "data"
    proc = hpcdl(
        "data",
        "fetch",
        "mnist",
        "--data-dir",
        str(target),
        env={**env, "HPCDL_DATA_MIRROR": (tmp_path / "mirror").as_uri()},
    )
    assert proc.returncode != 0
    [line] = [x for x in proc.stderr.splitlines() if x.strip()]
    assert line.startswith("hpcdl: error: mnist: could not fetch t10k-labels-idx1-ubyte.gz")
    assert "checksum mismatch" in line
    assert not (target / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()
    assert not [p for p in (target / "mnist").iterdir() if p.name.endswith(".part")]


def test_unreachable_source_is_one_line_error(env, tmp_path):
    proc = hpcdl(
        "data",
        "fetch",
        "mnist",
        "--data-dir",
        str(tmp_path),
        env={**env, "HPCDL_DATA_MIRROR": (tmp_path / "nowhere").as_uri()},
    )
    assert proc.returncode == 2
    assert len([x for x in proc.stderr.splitlines() if x.strip()]) == 1


def test_indian_pines_from_the_tensorly_wheel(tmp_path, monkeypatch):
    pytest.importorskip("tensorly", reason="tensorly is in the test extras (scripts/install.sh)")
    monkeypatch.setattr(
        sources, "_download", lambda url, timeout=60: (_ for _ in ()).throw(OSError("offline"))
    )
    paths = sources.fetch("indian-pines", tmp_path, log=lambda _m: None)
    assert [p.name for p in paths] == ["Indian_pines_corrected.mat", "Indian_pines_gt.mat"]
    spec = sources.FILES["indian_pines"][0]
    assert sources.verify_file(paths[0], spec)


def test_unknown_dataset_is_rejected(env):
    proc = hpcdl("data", "fetch", "cifar", env=env)
    assert proc.returncode == 2 and "unknown data set 'cifar'" in proc.stderr
