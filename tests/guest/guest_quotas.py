"""Quotas on a real cgroup v2 kernel: runs INSIDE the qemu guest only.

tests/test_quotas_vm.py boots the guest (tests/vm/guest.py) once and runs
this module there as the unprivileged test user, whose cgroup
user@UID.service was delegated the way systemd's Delegate=yes does it. The
host suite does not collect it (its name does not start with test_); the
host test reports the guest's results one by one. TCG is slow, so each
test checks several things per container.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("RL_GUEST") != "1",
    reason="runs inside the qemu guest started by tests/test_quotas_vm.py")

MiB = 1 << 20
DISK = os.environ.get("RL_GUEST_DISK", "/dev/vda")


def _own_base() -> Path:
    own = Path("/proc/self/cgroup").read_text().split("0::", 1)[1].strip()
    path = Path("/sys/fs/cgroup") / own.lstrip("/")
    return path.parent if path.name == "rl.leaf" else path


def _inspect(rl, ref: str) -> dict:  # type: ignore[no-untyped-def]
    out = rl("inspect", ref, check=True).stdout
    return json.loads(out)[0]  # type: ignore[no-any-return]


def _cgroup(rl, ref: str) -> Path:  # type: ignore[no-untyped-def]
    path = _inspect(rl, ref)["State"]["CgroupPath"]
    assert path, "a running container has a cgroup"
    return Path(path)


def _read(path: Path) -> str:
    return path.read_text().strip()


def _kv(path: Path) -> dict[str, int]:
    return {k: int(v) for k, v in (ln.split() for ln in path.read_text().splitlines())}


def _logs(rl, ref: str) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 20
    while True:
        out = rl("logs", ref, check=True).stdout
        if out or time.monotonic() > deadline:
            return out  # type: ignore[no-any-return]
        time.sleep(0.2)


def _inside(rl, ref: str, *files: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """What `rl exec` sees: its own cgroup line, the /sys/fs/cgroup mount, a write to
    it, and the given files of /sys/fs/cgroup."""
    script = ("cat /proc/self/cgroup; grep ' /sys/fs/cgroup ' /proc/self/mounts; "
              "echo max > /sys/fs/cgroup/pids.max 2>/dev/null && echo WROTE; "
              + "".join(f"echo {f}=$(cat /sys/fs/cgroup/{f}); " for f in files))
    out = rl("exec", ref, "sh", "-c", script, check=True).stdout.splitlines()
    assert out[0] == "0::/", out
    mount = out[1].split()
    assert mount[1:3] == ["/sys/fs/cgroup", "cgroup2"], out
    assert "ro" in mount[3].split(","), out
    assert "WROTE" not in out, "the container's cgroupfs is read-only"
    return dict(line.split("=", 1) for line in out[2:])


def test_limits_written_to_a_delegated_leaf(rl, rootfs) -> None:  # type: ignore[no-untyped-def]
    st = os.stat(DISK)
    dev = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    cid = rl("run", "-d", "--memory", "64m", "--memory-swap", "96m",
             "--memory-reservation", "32m", "--cpus", "1.5", "--cpu-shares", "512",
             "--pids-limit", "100", "--cpuset-cpus", "0", "--device-read-bps", f"{DISK}:10mb",
             "--device-write-iops", f"{DISK}:100", "--blkio-weight", "500",
             "--rootfs", rootfs, "sh", "-c", "cat /proc/self/cgroup; exec sleep 1000",
             check=True).stdout.strip()
    cg = _cgroup(rl, cid)
    base = _own_base()
    # No internal processes: rl moved the delegated cgroup's processes into a leaf.
    assert cg == base / "rl" / cid
    assert _read(base / "cgroup.procs") == ""
    assert str(os.getpid()) in _read(base / "rl.leaf" / "cgroup.procs").split()
    assert {"cpu", "memory", "pids", "io", "cpuset"} <= set(
        _read(base / "cgroup.subtree_control").split())
    pid1 = _inspect(rl, cid)["State"]["Pid"]
    assert Path(f"/proc/{pid1}/cgroup").read_text().strip().endswith(f"/rl/{cid}")
    # Only PID 1 is in it: C1, which moved in first, is gone.
    assert _read(cg / "cgroup.procs") == str(pid1)
    # Inside, the cgroup namespace is rooted at the container's cgroup (docker's
    # cgroupns=private): PID 1 sees "0::/"...
    assert _logs(rl, cid) == "0::/\n"
    # ...and its own cgroup, read-only, at /sys/fs/cgroup.
    inside = _inside(rl, cid, "memory.max", "memory.low", "cpu.max", "pids.max", "cpuset.cpus")
    assert inside["memory.max"] == str(64 * MiB) and inside["memory.low"] == str(32 * MiB)
    assert inside["cpu.max"] == "150000 100000" and inside["pids.max"] == "100"
    assert inside["cpuset.cpus"] == "0"
    assert _read(cg / "memory.max") == str(64 * MiB)
    assert _read(cg / "memory.swap.max") == str(32 * MiB)
    assert _read(cg / "memory.low") == str(32 * MiB)
    assert _read(cg / "cpu.max") == "150000 100000"
    assert _read(cg / "cpu.weight") == "20"  # 1 + (512 - 2) * 9999 // 262142
    assert _read(cg / "pids.max") == "100"
    assert _read(cg / "cpuset.cpus") == "0"
    assert f"{dev} rbps={10 * MiB} wbps=max riops=max wiops=100" in _read(cg / "io.max")
    assert "default 4950" in _read(cg / "io.weight")  # 1 + (500 - 10) * 9999 // 990
    host = _inspect(rl, cid)["HostConfig"]
    assert (host["Memory"], host["MemorySwap"], host["MemoryReservation"]) == (
        64 * MiB, 96 * MiB, 32 * MiB)
    assert (host["NanoCpus"], host["CpuShares"], host["PidsLimit"]) == (1500000000, 512, 100)
    assert host["CpusetCpus"] == "0" and host["Cgroups"] == "enabled"
    assert host["BlkioDeviceReadBps"] == [{"Path": DISK, "Rate": 10 * MiB}]
    assert host["BlkioDeviceWriteIOps"] == [{"Path": DISK, "Rate": 100}]
    rl("rm", "-f", cid, check=True)
    assert not cg.exists(), "the cgroup goes with the container"


def test_allocation_past_memory_is_oom_killed(rl, rootfs) -> None:  # type: ignore[no-untyped-def]
    # busybox tail keeps the last 10 lines of a file with no newline: it grows forever.
    r = rl("run", "--name", "oom", "--memory", "16m", "--rootfs", rootfs, "tail", "/dev/zero",
           timeout=120)
    assert r.returncode == 137, r.stderr
    state = _inspect(rl, "oom")["State"]
    assert state["OOMKilled"] is True and state["ExitCode"] == 137
    assert state["CgroupPath"] == ""
    assert not [p for p in (_own_base() / "rl").iterdir() if p.is_dir()], "no cgroup left"
    # Without a limit the same container is not OOM-killed (OOMKilled is read, not assumed).
    r = rl("run", "--name", "no-oom", "--rootfs", rootfs, "sh", "-c", "exit 3", check=False)
    assert r.returncode == 3
    assert _inspect(rl, "no-oom")["State"]["OOMKilled"] is False
    # docker's events: `oom` before `die` for the one the kernel killed, none for the other
    acts = rl("events", "--since", "1h", "--until", "0s", "--filter", "container=oom",
              "--filter", "container=no-oom", "--format",
              "{{.Actor.Attributes.name}} {{.Action}}", check=True).stdout.splitlines()
    assert [a for a in acts if a.startswith("oom ")][-2:] == ["oom oom", "oom die"], acts
    assert "no-oom oom" not in acts and "no-oom die" in acts, acts


def test_busy_loop_under_half_a_cpu(rl, rootfs) -> None:  # type: ignore[no-untyped-def]
    cid = rl("run", "-d", "--cpus", "0.5", "--rootfs", rootfs, "sh", "-c",
             "while :; do :; done", check=True).stdout.strip()
    cg = _cgroup(rl, cid)
    time.sleep(1)
    u0, t0 = _kv(cg / "cpu.stat")["usage_usec"], time.monotonic()
    time.sleep(4)
    stat, t1 = _kv(cg / "cpu.stat"), time.monotonic()
    share = (stat["usage_usec"] - u0) / ((t1 - t0) * 1e6)
    assert 0.3 <= share <= 0.7, f"{share:.2f} of a CPU under --cpus 0.5"
    assert stat["nr_throttled"] > 0
    rl("rm", "-f", cid, check=True)


def test_forks_past_pids_limit_fail(rl, rootfs) -> None:  # type: ignore[no-untyped-def]
    # sh itself and four sleeps make five tasks: the fifth fork must fail (and a
    # failed fork ends a non-interactive busybox sh).
    r = rl("run", "--pids-limit", "5", "--rootfs", rootfs, "sh", "-c",
           "for i in 1 2 3 4 5 6 7 8; do sleep 1000 & echo forked $i; done; echo all")
    assert r.returncode != 0
    assert "forked 4" in r.stdout and "forked 5" not in r.stdout, r.stdout
    assert "can't fork" in r.stderr, r.stderr
    # A limit of 1 still starts (C1 and PID 1 share the cgroup only while starting).
    # --network host: /sys is then the host's, bound read-only, and the
    # container's cgroupfs goes on top of the host's hierarchy.
    r = rl("run", "--rm", "--network", "host", "--pids-limit", "1", "--rootfs", rootfs,
           "cat", "/sys/fs/cgroup/pids.max")
    assert (r.returncode, r.stdout) == (0, "1\n"), r.stderr
    # Unlimited, the same loop runs to its end.
    r = rl("run", "--rm", "--rootfs", rootfs, "sh", "-c",
           "for i in 1 2 3 4 5 6 7 8; do sleep 1 & echo forked $i; done; echo all")
    assert r.returncode == 0 and "all" in r.stdout, r.stderr


def _dd_seconds(rl, rootfs, *flags: str) -> float:  # type: ignore[no-untyped-def]
    """Seconds the container's dd takes to read 3 MiB of the disk with O_DIRECT."""
    r = rl("run", "--rm", *flags, "-v", f"{DISK}:/dev/disk", "--rootfs", rootfs, "sh", "-c",
           "time dd if=/dev/disk of=/dev/null bs=64k count=48 iflag=direct", check=True,
           timeout=120)
    m = re.search(r"real\s+(\d+)m\s*([\d.]+)s", r.stderr)
    assert m, r.stderr
    return int(m.group(1)) * 60 + float(m.group(2))


def test_io_max_throttles_reads(rl, rootfs) -> None:  # type: ignore[no-untyped-def]
    free = _dd_seconds(rl, rootfs)
    throttled = _dd_seconds(rl, rootfs, "--device-read-bps", f"{DISK}:1mb")
    # 3 MiB at 1 MiB/s takes about 3 s; the kernel grants a small first slice.
    assert throttled >= 2.0, f"3 MiB in {throttled:.2f} s under 1mb/s"
    assert throttled >= free + 1.0, f"throttled {throttled:.2f} s, free {free:.2f} s"


def test_stats_match_cgroupfs_and_update_changes_limits(rl, rootfs) -> None:  # type: ignore[no-untyped-def]
    cid = rl("run", "-d", "--name", "st", "--memory", "64m", "--pids-limit", "50",
             "--rootfs", rootfs, "sh", "-c", "sleep 1000 & sleep 1000",  # 2 tasks
             check=True).stdout.strip()
    cg = _cgroup(rl, cid)
    r = rl("stats", "--no-stream", "--format", "json", "--interval", "0.2", "st", check=True)
    row = json.loads(r.stdout)
    assert row["ID"] == cid and row["Name"] == "st"
    assert row["MemLimitBytes"] == int(_read(cg / "memory.max")) == 64 * MiB
    assert row["MemUsage"].endswith(" / 64MiB")
    assert row["PIDsCurrent"] == int(_read(cg / "pids.current")) == 2
    assert row["PIDs"] == "2" and row["PIDsLimit"] == 50
    used = int(_read(cg / "memory.current")) - _kv(cg / "memory.stat")["inactive_file"]
    assert abs(row["MemUsageBytes"] - used) < 2 * MiB
    assert 0 < row["CPUUsageUsec"] <= _kv(cg / "cpu.stat")["usage_usec"]
    table = rl("stats", "--no-stream", "--interval", "0.2", check=True).stdout
    assert "CONTAINER ID" in table and "st" in table and "64MiB" in table

    # rl exec runs in the container's cgroup, under its limits, and in its
    # cgroup namespace: "0::/", the same limits at /sys/fs/cgroup.
    inside = _inside(rl, "st", "memory.max", "pids.max", "cgroup.procs")
    assert inside["memory.max"] == str(64 * MiB) and inside["pids.max"] == "50"
    # Its own subtree only, with the PIDs of its own PID namespace.
    assert "1" in inside["cgroup.procs"].split(), inside

    rl("update", "--memory", "128m", "--cpus", "1", "--pids-limit", "20", "st", check=True)
    assert _read(cg / "memory.max") == str(128 * MiB)
    assert _read(cg / "cpu.max") == "100000 100000"
    assert _read(cg / "pids.max") == "20"
    host = _inspect(rl, "st")["HostConfig"]
    assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (
        128 * MiB, 1000000000, 20)
    assert _inside(rl, "st", "memory.max")["memory.max"] == str(128 * MiB)
    bad = rl("update", "--memory", "3x", "st")
    assert bad.returncode != 0 and "invalid size" in bad.stderr
    assert _read(cg / "memory.max") == str(128 * MiB), "a bad update changes nothing"
    rl("rm", "-f", "st", check=True)


def test_killed_supervisor_leaves_a_cgroup_the_next_command_removes(rl, rootfs, rl_state) -> None:  # type: ignore[no-untyped-def]
    cid = rl("run", "-d", "--memory", "32m", "--rootfs", rootfs, "sleep", "1000",
             check=True).stdout.strip()
    cg = _cgroup(rl, cid)
    sup = int((rl_state.runtime_dir / "rl" / cid / "sup.pid").read_text())
    os.kill(sup, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while "populated 1" in (cg / "cgroup.events").read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cg.exists() and "populated 0" in (cg / "cgroup.events").read_text()
    rl("ps", "-a", check=True)
    assert not cg.exists(), "rl ps removed the empty cgroup of the dead container"
    # The container starts again, with a fresh cgroup.
    rl("start", cid, check=True)
    assert _read(_cgroup(rl, cid) / "memory.max") == str(32 * MiB)
    rl("rm", "-f", cid, check=True)


def test_fuse_server_stays_out_of_the_container_cgroup(rl, rootfs, rl_state, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from imagetools import rootfs_tar

    rl("import", rootfs_tar(rootfs, tmp_path / "base.tar", compress=""), "cg-base", check=True)
    # --network none: the supervisor's only children are PID 1 and the server.
    cid = rl("run", "-d", "--network", "none", "--storage-driver", "fuse", "--memory", "32m",
             "--pids-limit", "10", "cg-base", "sh", "-c", "cat /proc/self/cgroup; exec sleep 1000",
             check=True).stdout.strip()
    cg = _cgroup(rl, cid)
    pid1 = _inspect(rl, cid)["State"]["Pid"]
    sup = int((rl_state.runtime_dir / "rl" / cid / "sup.pid").read_text())
    children = Path(f"/proc/{sup}/task/{sup}/children").read_text().split()
    servers = [int(p) for p in children if int(p) != pid1]
    assert len(servers) == 1, children
    # The root's server is the supervisor's, as fuse-overlayfs is podman's: it
    # was forked before C1 moved into the container's cgroup.
    assert _read(cg / "cgroup.procs") == str(pid1)
    server_cg = Path(f"/proc/{servers[0]}/cgroup").read_text().strip()
    assert server_cg == Path(f"/proc/{sup}/cgroup").read_text().strip(), server_cg
    assert _logs(rl, cid) == "0::/\n"
    rl("rm", "-f", cid, check=True)
    assert not cg.exists()


def test_cgroups_disabled_and_too_small_memory(rl, rootfs) -> None:  # type: ignore[no-untyped-def]
    r = rl("run", "--name", "nocg", "--cgroups=disabled", "--rootfs", rootfs, "sh", "-c",
           "cat /proc/self/cgroup; grep -c ' /sys/fs/cgroup ' /proc/self/mounts", check=False)
    # No cgroup of its own: the namespace is rooted at the supervisor's cgroup,
    # and nothing is mounted at /sys/fs/cgroup (there is nothing of its own to show).
    assert r.stdout.splitlines() == ["0::/", "0"], r
    ins = _inspect(rl, "nocg")
    assert ins["HostConfig"]["Cgroups"] == "disabled" and ins["HostConfig"]["Memory"] == 0
    bad = rl("run", "--memory", "4m", "--rootfs", rootfs, "true")
    assert bad.returncode == 125 and "6MB" in bad.stderr
    # The smallest limit rl accepts does start a container.
    rl("run", "--rm", "--memory", "6m", "--rootfs", rootfs, "true", check=True)
    info = json.loads(rl("info", "--format", "json", check=True).stdout)["cgroups"]
    assert info["version"] == "v2" and info["delegated"] is True
    assert info["limits"] == "enforced"


def test_rl_oci_applies_linux_resources(rootfs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """rl-oci (the OCI face) puts a config's memory and pids limits on a cgroup at
    its linux.cgroupsPath below the delegated base, and delete removes it."""
    import subprocess
    import sys

    oci = [str(Path(sys.executable).parent / "rl-oci"), "--root", str(tmp_path / "state")]
    b = tmp_path / "bundle"
    b.mkdir()
    subprocess.run(["cp", "-a", str(rootfs), str(b / "rootfs")], check=True)
    subprocess.run([*oci, "spec", "--rootless", "-b", str(b)], check=True)
    cfg = json.loads((b / "config.json").read_text())
    cfg["process"].update(terminal=False, args=[
        "sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 1000 & echo forked $i; done; "
        "sleep 1000"])
    cfg["linux"]["cgroupsPath"] = "rl-oci-test/g1"  # relative: below the delegated base
    cfg["linux"]["resources"] = {"memory": {"limit": 64 * MiB}, "pids": {"limit": 5},
                                 "unified": {"memory.high": str(48 * MiB)}}
    (b / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    with open(out, "w") as f:
        subprocess.run([*oci, "create", "-b", str(b), "g1"], check=True, stdout=f, stderr=f)
    cg = _own_base() / "rl-oci-test" / "g1"
    state = json.loads(subprocess.run([*oci, "state", "g1"], check=True, text=True,
                                      capture_output=True).stdout)
    assert str(state["pid"]) in _read(cg / "cgroup.procs").split()
    assert (_read(cg / "memory.max"), _read(cg / "pids.max"), _read(cg / "memory.high")) == (
        str(64 * MiB), "5", str(48 * MiB))
    assert Path(f"/proc/{state['pid']}/cgroup").read_text().strip().endswith(
        "/rl-oci-test/g1")
    subprocess.run([*oci, "start", "g1"], check=True)
    deadline = time.monotonic() + 60
    while "can't fork" not in out.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    text = out.read_text()
    assert "forked 4" in text and "forked 5" not in text and "can't fork" in text, text
    subprocess.run([*oci, "delete", "-f", "g1"], check=True)
    assert not cg.exists()

def _count(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


@pytest.mark.timeout(600)  # TCG on a loaded host: the first run alone can take minutes
def test_pause_freezes_the_cgroup_and_unpause_resumes(rl, rootfs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)
    counter = out / "n"
    cid = rl("run", "-d", "--name", "pz", "-v", f"{out}:/out", "--rootfs", rootfs, "sh", "-c",
             "i=0; while :; do i=$((i+1)); echo $i > /out/n; sleep 0.05; done",
             check=True, timeout=300).stdout.strip()  # the first run warms the fork server
    try:
        deadline = time.monotonic() + 60
        while _count(counter) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _count(counter) >= 3, "the counter runs"
        cg = _cgroup(rl, "pz")
        assert rl("pause", "pz", check=True).stdout == "pz\n"
        assert "frozen 1" in (cg / "cgroup.events").read_text().splitlines()
        frozen_at = _count(counter)
        time.sleep(1)  # a second in which a running counter would have moved ~20 times
        assert _count(counter) == frozen_at, "a frozen counter does not count"
        ins = _inspect(rl, "pz")
        assert ins["State"]["Status"] == "paused" and ins["State"]["Paused"] is True
        assert ins["State"]["Running"] is True
        assert "(Paused)" in rl("ps", "--format", "{{.Status}}", check=True).stdout
        again = rl("pause", "pz")
        assert again.returncode == 1
        assert again.stderr == f"Error: Container {cid} is already paused\n"
        assert rl("unpause", "pz", check=True).stdout == "pz\n"
        assert "frozen 0" in (cg / "cgroup.events").read_text().splitlines()
        deadline = time.monotonic() + 60
        while _count(counter) <= frozen_at and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _count(counter) > frozen_at, "the counter counts again after unpause"
        assert not _inspect(rl, "pz")["State"]["Paused"]
        not_paused = rl("unpause", "pz")
        assert not_paused.returncode == 1
        assert not_paused.stderr == f"Error: Container {cid} is not paused\n"
        # A paused container still stops: it is thawed to get its signal (docker's).
        rl("pause", "pz", check=True)
        rl("stop", "-t", "2", "pz", check=True)
        assert _inspect(rl, "pz")["State"]["Status"] == "exited"
        acts = rl("events", "--since", "10m", "--until", "0s", "--filter", "container=pz",
                  "--format", "{{.Action}}", check=True).stdout.split()
        assert acts[:2] == ["create", "start"]
        assert acts[2:6] == ["pause", "unpause", "pause", "kill"], acts
        assert "unpause" in acts[6:] and acts[-2:] == ["die", "stop"], acts
    finally:
        rl("rm", "-f", "pz")
