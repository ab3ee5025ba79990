"""Resource flags on this host: validation, refusal without delegation, --cgroups=disabled.

The host's cgroups are a v1/v2 hybrid without v2 controllers, so rl must
refuse limits here with a reason and a way out (podman silently ignores
them). What the kernel enforces is tested in a real cgroup v2 guest:
tests/test_quotas_vm.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

import support
from rootless.errors import RlError
from rootless.runtime import cgroups, resources
from rootless.runtime.resources import LimitFlags
from support import RlRunner

DELEGATED = cgroups.probe().base is not None


@pytest.fixture(autouse=True)
def _needs_userns() -> None:
    support.require_userns()


def ids(rl: RlRunner) -> list[str]:
    return rl("ps", "-aq", "--no-trunc", check=True).stdout.split()


@pytest.mark.parametrize(("flags", "message"), [
    (["--memory", "0"], "minimum memory limit allowed is 6MB"),
    (["--memory", "3x"], "invalid size: '3x'"),
    (["--memory", "1m"], "minimum memory limit allowed is 6MB"),
    (["--memory-swap", "1g"], "--memory-swap needs --memory"),
    (["--memory", "64m", "--memory-swap", "32m"], "memoryswap limit should be larger"),
    (["--cpus", "-1"], "range of CPUs is from 0.01"),
    (["--cpus", "1000"], "range of CPUs is from 0.01"),
    (["--cpus", "abc"], "invalid number"),
    (["--cpus", "1", "--cpu-quota", "50000"], "conflicting options"),
    (["--cpu-period", "10"], "CPU cfs period can not be less than 1ms"),
    (["--cpu-shares", "1"], "CPU shares range from 2 to 262144"),
    (["--cpuset-cpus", "99"], "requested CPUs are not available - requested 99"),
    (["--cpuset-cpus", "1-x"], "invalid format"),
    (["--cpuset-mems", "7"], "requested memory nodes are not available"),
    (["--blkio-weight", "5"], "range of blkio weight is from 10 to 1000"),
    (["--device-read-bps", "/dev/nonexistent:1mb"],
     'adding custom device "/dev/nonexistent": no such file or directory'),
    (["--device-write-iops", "/dev/null:10"], '"/dev/null" is not a block device'),
    (["--device-read-bps", "nocolon"], "bad format"),
    (["--memory", "64m", "--cgroups=disabled"], "cannot be used with --cgroups=disabled"),
])
@pytest.mark.parametrize("command", ["run", "create"])
def test_bad_limits_fail_before_anything_is_created(
        rl: RlRunner, rootfs: Path, command: str, flags: list[str], message: str) -> None:
    before = ids(rl)
    r = rl(command, *flags, "--rootfs", rootfs, "true")
    assert r.returncode == 125
    assert r.stderr.startswith("Error: ") and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert ids(rl) == before


def test_limits_refused_without_delegation_with_the_reason(rl: RlRunner, rootfs: Path) -> None:
    if DELEGATED:
        pytest.skip("this host delegates cgroup v2 controllers (see test_quotas_vm.py)")
    before = ids(rl)
    r = rl("run", "--rm", "--memory", "512m", "--cpus", "1.5", "--rootfs", rootfs, "true")
    assert r.returncode == 125
    line = r.stderr.strip()
    assert line.startswith("Error: --memory, --cpus cannot be enforced: ")
    assert "delegate" in line and "--cgroups=disabled" in line, line
    assert len(line.splitlines()) == 1
    assert ids(rl) == before
    info = json.loads(rl("info", "--format", "json", check=True).stdout)["cgroups"]
    assert info["limits"].startswith("unavailable: ") and info["base"] is None
    assert info["version"] in ("hybrid", "v1", "v2")


def test_cgroups_disabled_runs_and_says_so(rl: RlRunner, rootfs: Path) -> None:
    r = rl("run", "--name", "nocg", "--cgroups=disabled", "--rootfs", rootfs, "sh", "-c",
           "echo ok; grep ^0:: /proc/self/cgroup; grep -c ' /sys/fs/cgroup cgroup2 ' "
           "/proc/self/mounts || true", check=True)
    # Its cgroup namespace is rooted where PID 1 is (the supervisor's cgroup), and
    # without a cgroup of its own nothing is mounted at /sys/fs/cgroup.
    assert r.stdout == "ok\n0::/\n0\n"
    host = json.loads(rl("inspect", "nocg", check=True).stdout)[0]["HostConfig"]
    assert host["Cgroups"] == "disabled"
    assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (0, 0, None)
    r = rl("update", "--memory", "64m", "nocg")
    assert r.returncode == 1 and "--cgroups=disabled" in r.stderr
    rl("rm", "nocg", check=True)


def test_rl_cgroups_setting(rl: RlRunner, rootfs: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as env:
        env.setenv("RL_CGROUPS", "disabled")
        rl("create", "--name", "envcg", "--rootfs", rootfs, "true", check=True)
        info = json.loads(rl("info", "--format", "json", check=True).stdout)["cgroups"]
        assert info["mode"] == "disabled" and info["limits"] == "disabled (RL_CGROUPS)"
        env.setenv("RL_CGROUPS", "sometimes")
        r = rl("run", "--rootfs", rootfs, "true")
        assert r.returncode == 125 and "RL_CGROUPS=sometimes" in r.stderr
    host = json.loads(rl("inspect", "envcg", check=True).stdout)[0]["HostConfig"]
    assert host["Cgroups"] == "disabled"
    rl("rm", "envcg", check=True)


def test_stats_and_update_without_a_cgroup(rl: RlRunner, rootfs: Path) -> None:
    if DELEGATED:
        pytest.skip("this host delegates cgroup v2 controllers (see test_quotas_vm.py)")
    cid = rl("run", "-d", "--name", "plain", "--rootfs", rootfs, "sleep", "100",
             check=True).stdout.strip()
    try:
        r = rl("stats", "--no-stream", "--format", "json", "--interval", "0.1", "plain",
               check=True)
        row = json.loads(r.stdout)
        assert row["ID"] == cid and row["Cgroup"] is False and row["CPUPerc"] == "--"
        # what /proc tells without a cgroup: the PID namespace's tasks (sleep, and
        # the two an exec adds), the network namespace's counters; a note says why
        assert row["PIDs"] == "1" and row["PIDsCurrent"] == 1
        assert "no cgroup of its own" in r.stderr and "CPU, memory" in r.stderr
        rl("exec", "-d", "plain", "sh", "-c", "sleep 30 & sleep 30", check=True)
        for _ in range(50):
            row = json.loads(rl("stats", "--no-stream", "--format", "json", "--interval",
                                "0.1", "plain", check=True).stdout)
            if row["PIDsCurrent"] == 3:
                break
        assert row["PIDsCurrent"] == 3
        table = rl("stats", "--no-stream", "--interval", "0.1", check=True).stdout
        assert table.splitlines()[0].split()[:3] == ["CONTAINER", "ID", "NAME"]
        assert "plain" in table
        r = rl("update", "--memory", "64m", "plain")
        assert r.returncode == 1 and "cannot be enforced" in r.stderr
        r = rl("update", "plain")
        assert r.returncode == 1 and "one or more flags" in r.stderr
    finally:
        rl("rm", "-f", "plain", check=True)
    r = rl("stats", "--no-stream", "plain")
    assert r.returncode == 1 and "no such container" in r.stderr
    r = rl("stats", "--no-stream", "--interval", "0", "nothing")
    assert r.returncode == 125


def test_pause_without_a_cgroup_of_its_own_is_refused_with_the_reason(
        rl: RlRunner, rootfs: Path) -> None:
    created = rl("create", "--name", "pzc", "--rootfs", rootfs, "true", check=True).stdout.strip()
    try:
        r = rl("pause", "pzc")
        assert r.returncode == 1 and r.stderr == f"Error: Container {created} is not running\n"
        rl("run", "-d", "--name", "pzr", "--cgroups=disabled", "--rootfs", rootfs,
           "sleep", "100", check=True)
        r = rl("pause", "pzr")
        assert r.returncode == 125
        assert r.stderr == ("Error: cannot pause container pzr: the cgroup v2 freezer needs a "
                            "cgroup of the container's own, and it was created with "
                            "--cgroups=disabled\n")
        if not DELEGATED:
            rl("run", "-d", "--name", "pzh", "--rootfs", rootfs, "sleep", "100", check=True)
            r = rl("pause", "pzh")
            assert r.returncode == 125 and len(r.stderr.splitlines()) == 1
            assert r.stderr.startswith("Error: cannot pause container pzh: the cgroup v2 "
                                       f"freezer needs a cgroup of the container's own, and "
                                       f"{cgroups.probe().reason}"), r.stderr
        r = rl("unpause", "pzr")
        assert r.returncode == 1 and "is not paused" in r.stderr
        assert json.loads(rl("inspect", "pzr", check=True).stdout)[0]["State"]["Paused"] is False
    finally:
        rl("rm", "-f", "pzc", "pzr", "pzh")


def test_update_of_a_stopped_container_changes_its_record(rl: RlRunner, rootfs: Path) -> None:
    rl("create", "--name", "upd", "--rootfs", rootfs, "true", check=True)
    if not DELEGATED:
        r = rl("update", "--pids-limit", "10", "upd")
        assert r.returncode == 1 and "cannot be enforced" in r.stderr
        host = json.loads(rl("inspect", "upd", check=True).stdout)[0]["HostConfig"]
        assert host["PidsLimit"] is None, "a refused update changes nothing"
    rl("rm", "upd", check=True)


def test_stats_stream_until_the_container_is_gone(rl: RlRunner, rl_path: Path,
                                                  rl_state: support.RlState,
                                                  rootfs: Path) -> None:
    """Streams a line per round while the container runs, then stops once it has exited.

    The container runs until the test has seen two rounds (however slow the
    machine), and only then is it stopped.
    """
    rl("run", "-d", "--name", "short", "--rootfs", rootfs, "sleep", "1000", check=True)
    proc = subprocess.Popen([str(rl_path), "stats", "--format", "json", "--interval", "0.2",
                             "short"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **rl_state.env()})
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")),
                              daemon=True)
    try:
        reader.start()
        assert support.wait_until(lambda: len(lines) >= 2 or not reader.is_alive(), 120)
        assert len(lines) >= 2, (lines, proc.poll())
        assert all(json.loads(line)["Name"] == "short" for line in lines[:2]), lines
        rl("kill", "short", check=True)
        reader.join(120)
        assert not reader.is_alive(), "rl stats goes on after the container exited"
        assert proc.wait(30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        rl("rm", "-f", "short")


# -- the conversions (pure functions, checked against docker's/runc's figures) ----------


def test_cgroupfs_goes_right_after_sys() -> None:
    from rootless.engine.specgen import default_mounts
    from rootless.runtime.mounts import CGROUPFS, with_cgroupfs
    from rootless.runtime.spec import Mount

    mounts = default_mounts(Path("/run/x"), True, True)
    dests = [m.destination for m in with_cgroupfs(mounts)]
    assert dests[dests.index("/sys") + 1] == "/sys/fs/cgroup"
    assert CGROUPFS.type == "cgroup2" and "ro" in CGROUPFS.options
    own = [*mounts, Mount("/sys/fs/cgroup/", "bind", "/tmp", ["bind"])]
    assert with_cgroupfs(own) == own, "the user's mount on /sys/fs/cgroup wins"
    assert with_cgroupfs(mounts[:1]) == mounts[:1], "no /sys, no cgroupfs"


def test_pids_limit_below_two_waits_for_the_start(tmp_path: Path) -> None:
    # C1 and PID 1 share the cgroup while starting: pids.max 1 is written after.
    (tmp_path / "pids.max").write_text("max")
    one = resources.parse(LimitFlags(pids_limit=1))
    cgroups.apply(str(tmp_path), cgroups._for_start(one))
    assert (tmp_path / "pids.max").read_text() == "2"
    cgroups.settle(str(tmp_path), one)
    assert (tmp_path / "pids.max").read_text() == "1"
    five = resources.parse(LimitFlags(pids_limit=5))
    assert cgroups._for_start(five) is five
    cgroups.settle(str(tmp_path), five)
    assert (tmp_path / "pids.max").read_text() == "1", "nothing to settle"


def test_docker_conversions() -> None:
    assert resources.parse_size("512m", "memory") == 512 << 20
    assert resources.parse_size("1.5GiB", "memory") == 3 << 29
    assert resources.parse_size("10mb", "x") == 10 << 20
    assert resources.parse_size("4096", "x") == 4096
    assert resources.cpu_weight(1024) == 39  # docker's default shares -> cgroup v2 weight
    assert resources.cpu_weight(2) == 1 and resources.cpu_weight(262144) == 10000
    assert resources.io_weight(500) == 4950 and resources.io_weight(10) == 1
    res = resources.parse(LimitFlags(cpus="1.5"))
    assert res.nano_cpus == 1_500_000_000
    assert resources.cpu_max(res) == "150000 100000"
    res = resources.parse(LimitFlags(cpu_quota=50000, cpu_period=200000))
    assert resources.cpu_max(res) == "50000 200000"
    res = resources.parse(LimitFlags(memory="64m"))
    assert res.memory_swap == 128 << 20, "docker: swap as large as --memory by default"
    assert resources.format_cpu_list({0, 1, 2, 5}) == "0-2,5"
    with pytest.raises(RlError):
        resources.parse(LimitFlags(memory="64m", memory_reservation="128m"))
    # rl update: --cpus replaces an earlier --cpu-quota and keeps the other limits.
    base = resources.parse(LimitFlags(cpu_quota=50000, pids_limit=10))
    upd = resources.parse(LimitFlags(cpus="1"), base=base)
    assert (upd.nano_cpus, upd.cpu_quota, upd.pids_limit) == (1_000_000_000, 0, 10)
