"""Slurm (Debian's 22.05) running jobs in rl containers: `srun --container` and
`sbatch --container` with an oci.conf whose RunTimeRun names this rl-oci.

The one-node cluster is root's to start (scripts/start-slurm, which .ci/run
calls): munge, slurmctld and slurmd on localhost. Slurm writes its own
config.json from the bundle's (root.path absolute, the job's command as
args, the job's environment appended) and runs rl-oci as the job's user."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import support

RL_OCI = Path(sys.executable).parent / "rl-oci"


@pytest.fixture(scope="module")
def cluster() -> None:
    support.require(shutil.which("srun") is not None, "slurm-client is not installed")
    try:
        conf = Path("/etc/slurm/oci.conf").read_text()
    except OSError:
        conf = ""
    support.require(str(RL_OCI) in conf,
                    f"/etc/slurm/oci.conf does not name {RL_OCI} (run scripts/start-slurm "
                    f"{RL_OCI} as root)")
    r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                       timeout=30, check=False)
    support.require(r.returncode == 0 and r.stdout.strip() in ("idle", "mixed"),
                    f"no idle Slurm node: {r.stdout.strip()} {r.stderr.strip()}")


@pytest.fixture
def bundle(cluster: None, rootfs: Path, tmp_path: Path) -> Path:
    support.require_userns()
    b = tmp_path / "bundle"
    b.mkdir()
    support.copy_tree(rootfs, b / "rootfs")
    subprocess.run([str(RL_OCI), "spec", "--rootless", "-b", str(b)], check=True)
    cfg = json.loads((b / "config.json").read_text())
    cfg["process"]["terminal"] = False
    (b / "config.json").write_text(json.dumps(cfg))
    # slurmstepd (root, then the job's user) reads the bundle: the path must be open to it.
    for p in (b, *b.parents):
        if p == Path("/tmp"):
            break
        p.chmod(p.stat().st_mode | 0o711)
    return b


def _state_dir() -> Path:
    return Path(f"/tmp/rl-oci-{support.user_name()}")  # oci.conf's --root


def _run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          check=False, cwd="/tmp")


def test_srun_container_output_status_and_job_environment(bundle: Path) -> None:
    r = _run("srun", f"--container={bundle}", "sh", "-c",
             "echo out; echo err >&2; echo job=$SLURM_JOB_ID; id -u; exit 3")
    assert r.returncode == 3, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "out" and lines[1].startswith("job=") and lines[1] != "job="
    assert lines[2] == "0"  # the job's user is root of the container's user namespace
    assert "err" in r.stderr
    assert not list(_state_dir().glob("*"))  # run deleted its state


def test_sbatch_container_and_scancel_stops_it(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "job.out"
    r = _run("sbatch", "--parsable", f"--container={bundle}", "-o", str(out),
             "--wrap", "echo started; exec sleep 300")
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip().split(";")[0]
    assert support.wait_until(lambda: out.exists() and out.read_text() == "started\n", 60)
    assert any(_state_dir().glob(f"*.{job}.*")), "no rl-oci container for the job"
    assert _run("scancel", job).returncode == 0
    assert support.wait_until(lambda: _run("squeue", "-h", "-j", job).stdout.strip() == "", 60)
    # Nothing of the job is left: neither its state nor its process.
    assert support.wait_until(lambda: not any(_state_dir().glob(f"*.{job}.*")), 30)
    left = _run("pgrep", "-u", str(os.getuid()), "-f", "sleep 300").stdout
    assert left == "", left


def test_two_jobs_at_once(bundle: Path) -> None:
    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def job(name: str) -> Callable[[], None]:
        def go() -> None:
            results[name] = _run("srun", f"--container={bundle}", "sh", "-c",
                                 f"sleep 1; echo {name}")
        return go

    threads = [threading.Thread(target=job(n)) for n in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert {n: (r.returncode, r.stdout) for n, r in results.items()} == {
        "one": (0, "one\n"), "two": (0, "two\n")}
