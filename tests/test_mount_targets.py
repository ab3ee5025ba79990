"""Mount targets runc refuses (/, /proc and what is in it, /dev) are refused, and rl never
writes into a volume source the user did not ask to be written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from imagetools import rootfs_tar

import support
from rootless.runtime.mounts import CGROUPFS, with_cgroupfs
from rootless.runtime.spec import Mount
from support import RlRunner


@pytest.fixture(autouse=True)
def _needs_userns() -> None:
    support.require_userns()


def _names(rl: RlRunner) -> list[str]:
    return rl("ps", "-a", "--format", "{{.Names}}", check=True).stdout.split()


def _tree(path: Path) -> list[str]:
    """Every entry below path, symlinks included, with what a symlink points at."""
    out = []
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = Path(root) / name
            out.append(f"{p.relative_to(path)} -> {os.readlink(p)}" if p.is_symlink()
                       else str(p.relative_to(path)))
    return sorted(out)


REFUSED = [
    ("-v", "/", "destination can't be '/'"),
    ("-v", "//", "destination can't be '/'"),
    ("-v", "/proc/..", "destination can't be '/'"),
    ("-v", "/proc", '"/proc" cannot be mounted'),
    ("-v", "/proc/", '"/proc" cannot be mounted'),
    ("-v", "//proc", '"/proc" cannot be mounted'),
    ("-v", "/tmp/../proc/", '"/proc" cannot be mounted'),
    ("-v", "/proc/kcore", '"/proc/kcore" cannot be mounted because it is inside /proc'),
    ("-v", "/proc/sys", '"/proc/sys" cannot be mounted because it is inside /proc'),
    ("-v", "/proc/self/fd", "inside /proc"),
    ("-v", "/dev", '"/dev" cannot be mounted over'),
    ("-v", "/dev/", '"/dev" cannot be mounted over'),
    ("--tmpfs", "/", "destination can't be '/'"),
    ("--tmpfs", "/proc", '"/proc" cannot be mounted'),
    ("--tmpfs", "/proc/sys/kernel", "inside /proc"),
    ("--tmpfs", "//dev", '"/dev" cannot be mounted over'),
]


@pytest.mark.parametrize(("flag", "dest", "message"), REFUSED)
def test_mount_over_root_proc_or_dev_is_refused_at_create(
        rl: RlRunner, rootfs: Path, tmp_path: Path, flag: str, dest: str, message: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    value = f"{src}:{dest}" if flag == "-v" else dest
    name = f"refused-{REFUSED.index((flag, dest, message))}"
    for command in ("run", "create"):
        r = rl(command, "--name", name, flag, value, "--rootfs", rootfs, "true")
        assert r.returncode == 125, r.stderr
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("Error: "), r.stderr
        assert "invalid mount config" in r.stderr and message in r.stderr, r.stderr
        assert name not in _names(rl)
    assert _tree(src) == []


def test_a_symlink_in_the_rootfs_cannot_lead_a_mount_onto_proc_dev_or_root(
        rl: RlRunner, fresh_rootfs: Path, tmp_path: Path) -> None:
    # Only the start can see where the rootfs's symlinks lead.
    (fresh_rootfs / "myproc").symlink_to("/proc")
    (fresh_rootfs / "mydev").symlink_to("../dev")
    (fresh_rootfs / "myroot").symlink_to("/")
    src = tmp_path / "src"
    src.mkdir()
    for dest, resolved in (("/myproc", "/proc"), ("/mydev", "/dev"), ("/myroot", "/")):
        r = rl("run", "--rm", "-v", f"{src}:{dest}", "--rootfs", fresh_rootfs, "true")
        assert r.returncode == 125, r.stderr
        assert r.stderr.count("\n") == 1, r.stderr
        assert f"(which is {resolved} in the rootfs)" in r.stderr, r.stderr
    r = rl("run", "--rm", "--tmpfs", "/mydev", "--rootfs", fresh_rootfs, "true")
    assert r.returncode == 125 and "which is /dev in the rootfs" in r.stderr, r.stderr
    assert _tree(src) == []


def test_what_may_be_mounted_below_proc_and_dev_still_is(rl: RlRunner, rootfs: Path,
                                                       tmp_path: Path) -> None:
    # runc's list of files lxcfs emulates, and the directories under /dev.
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 1234 kB\n")
    shm = tmp_path / "shm"
    shm.mkdir()
    (shm / "seen").write_text("")
    r = rl("run", "--rm", "-v", f"{meminfo}:/proc/meminfo:ro", "-v", f"{shm}:/dev/shm",
           "--rootfs", rootfs, "sh", "-c", "cat /proc/meminfo; ls /dev/shm; ls -l /dev/fd",
           check=True)
    lines = r.stdout.splitlines()
    assert lines[:2] == ["MemTotal: 1234 kB", "seen"]
    assert lines[2].endswith("/dev/fd -> /proc/self/fd")


def test_rl_writes_nothing_into_a_volume_over_etc(rl: RlRunner, rootfs: Path,
                                                 tmp_path: Path) -> None:
    # rl's /etc/hosts, hostname and resolv.conf are mounted before the user's
    # volumes: under -v DIR:/etc the user's directory wins and gets no mount
    # points (docker creates them in it). With an image they go into the init
    # layer, so rl diff stays empty.
    rootfs_copy = support.copy_tree(rootfs, tmp_path / "rootfs")
    for name in ("hosts", "hostname", "resolv.conf"):
        (rootfs_copy / "etc" / name).unlink(missing_ok=True)
    rl("import", rootfs_tar(rootfs_copy, tmp_path / "etcless.tar"), "mt-etcless", check=True)
    vol = tmp_path / "etc"
    vol.mkdir()
    (vol / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (vol / "group").write_text("root:x:0:\n")
    before = _tree(vol)
    try:
        r = rl("run", "--name", "mt-etc", "-v", f"{vol}:/etc", "mt-etcless", "ls", "/etc",
               check=True)
        assert r.stdout.split() == ["group", "passwd"]
        assert rl("diff", "mt-etc", check=True).stdout == ""
    finally:
        rl("rm", "-f", "mt-etc")
    r = rl("run", "--rm", "-v", f"{vol}:/etc", "--rootfs", rootfs_copy, "ls", "/etc",
           check=True)
    assert r.stdout.split() == ["group", "passwd"]
    assert _tree(vol) == before


def test_the_cgroup_mount_point_is_never_made_in_a_users_sys() -> None:
    # The container's cgroup2 goes at /sys/fs/cgroup right after rl's sysfs;
    # when the user mounts their own directory on /sys or /sys/fs, making that
    # mount point would write into it: their tree wins, no cgroup2 is added.
    sysfs = Mount("/sys", "sysfs", "sysfs", ["ro"])
    proc = Mount("/proc", "proc", "proc", [])
    assert with_cgroupfs([proc, sysfs]) == [proc, sysfs, CGROUPFS]
    for dest in ("/sys", "/sys/", "/sys/fs", "//sys/fs/", "/sys/fs/cgroup"):
        user = Mount(dest, "bind", "/srv/x", ["rbind"])
        assert with_cgroupfs([proc, sysfs, user]) == [proc, sysfs, user], dest
    other = Mount("/sys/kernel/x", "bind", "/srv/x", ["rbind"])
    assert with_cgroupfs([sysfs, other]) == [sysfs, CGROUPFS, other]
