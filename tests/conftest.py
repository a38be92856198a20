"""Shared test fixtures: the real data sets in ../shared/data and a way to run `hpcdl`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HPCDL_TEST_DATA", ROOT.parent / "shared" / "data")).resolve()
JOBS = ROOT / "jobs"
HELPERS = Path(__file__).parent / "helpers"

# Open MPI refuses to run as root without these; CI runs as root.
MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
}


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.fail(f"test data not found at {SHARED_DATA} (set HPCDL_TEST_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One patch cache for the whole session, so the Indian Pines extraction happens once."""
    return tmp_path_factory.mktemp("patch-cache")


@pytest.fixture
def env(shared_data, cache_dir, monkeypatch) -> dict[str, str]:
    """Environment for subprocesses (and this process) pointing at the test data."""
    values = {
        "HPCDL_DATA_DIR": str(shared_data),
        "HPCDL_CACHE_DIR": str(cache_dir),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
        **MPI_ENV,
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **values}


def run(
    args: list[str], env: dict[str, str], timeout: float = 600, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run a command, capturing text output."""
    return subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT
    )


def hpcdl(*args: str, env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    """Run the installed `hpcdl` console script (as users do)."""
    exe = Path(sys.executable).with_name("hpcdl")
    return run([str(exe), *args], env, **kw)


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """stderr minus TensorFlow/absl start-up noise."""
    return [line for line in proc.stderr.splitlines() if line.strip() and "hpcdl" in line]


def slurm_up() -> bool:
    import shutil

    if not shutil.which("scontrol"):
        return False
    return subprocess.run(["scontrol", "ping"], capture_output=True).returncode == 0


TWO_NODES = ("n1", "n2")  # slurm/start-two-node-cluster.sh's nodes


def slurm_nodes() -> set[str]:
    """The nodes of the running SLURM cluster (empty without one)."""
    if not slurm_up():
        return set()
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True)
    return set(proc.stdout.split()) if proc.returncode == 0 else set()


def _missing(require: str, message: str) -> None:
    if os.environ.get(require) == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def slurm_cluster():
    """The one-node test cluster (slurm/start-test-cluster.sh). scripts/test.sh starts it and sets
    HPCDL_REQUIRE_SLURM=1, so in CI a missing cluster fails instead of skipping."""
    nodes = slurm_nodes()
    if not nodes:
        _missing("HPCDL_REQUIRE_SLURM", "no SLURM cluster (run: bash slurm/start-test-cluster.sh)")
    if set(TWO_NODES) <= nodes:
        _missing(
            "HPCDL_REQUIRE_SLURM",
            "the two-node cluster is running; these tests need the one-node one "
            "(bash slurm/start-test-cluster.sh)",
        )
    return True


@pytest.fixture(scope="session")
def twonode_cluster() -> tuple[str, ...]:
    """The two-node test cluster (slurm/start-two-node-cluster.sh): nodes n1 and n2, each in its
    own network namespace. scripts/test.sh starts it for `-m twonode` and sets
    HPCDL_REQUIRE_TWONODE=1, so there a missing cluster fails instead of skipping."""
    missing = [n for n in TWO_NODES if n not in slurm_nodes()]
    if missing:
        _missing(
            "HPCDL_REQUIRE_TWONODE",
            f"no two-node SLURM cluster (nodes {', '.join(missing)} not in sinfo; run: "
            "bash slurm/start-two-node-cluster.sh)",
        )
    return TWO_NODES


def sbatch_test_only(script: Path) -> subprocess.CompletedProcess:
    """Ask the real slurmctld whether it would accept this script (nothing is submitted)."""
    return subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True)
