"""Checks of the test environment itself: they fail when .ci/run or
scripts/setup-host forgot something, instead of letting tests skip silently."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

import support
from support import RlState


def test_not_root() -> None:
    assert os.geteuid() != 0, "the suite must run as an unprivileged user"
    assert os.getuid() != 0


@pytest.mark.parametrize("dev", ["/dev/fuse", "/dev/net/tun"])
def test_device_read_write(dev: str) -> None:
    support.require(os.path.exists(dev), f"{dev} does not exist")
    fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)  # raises with the real errno if not
    os.close(fd)


def test_unprivileged_userns() -> None:
    r = subprocess.run(
        ["unshare", "-Ur", "id", "-u"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0"


@pytest.mark.parametrize("tool", ["newuidmap", "newgidmap"])
def test_newidmap_setuid_root(tool: str) -> None:
    path = shutil.which(tool)
    support.require(path is not None, f"{tool} not installed (Debian: uidmap)")
    assert path is not None
    st = os.stat(path)
    assert st.st_uid == 0
    assert st.st_mode & stat.S_ISUID, f"{path} is not setuid"


@pytest.mark.parametrize("kind", ["uid", "gid"])
def test_subid_range(kind: str) -> None:
    ranges = support.subid_ranges(kind)
    assert ranges, f"no range for {support.user_name()} in /etc/sub{kind}"
    assert max(r.count for r in ranges) >= 65536


def test_subid_userns_mapping() -> None:
    """newuidmap really maps our sub-ids: root and a non-root id inside."""
    support.require_newidmap()
    r = subprocess.run(
        ["unshare", "--map-root-user", "--map-auto", "cat", "/proc/self/uid_map"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    # e.g. "0 1001 1" (us as root) and "1 100000 65535" (our sub-ids above it)
    maps = [tuple(map(int, line.split())) for line in r.stdout.splitlines()]
    inside = {inner for inner, _, _ in maps}
    assert {0, 1} <= inside, r.stdout
    assert sum(count for _, _, count in maps) >= 65536, r.stdout


@pytest.mark.parametrize("tool", ["slirp4netns", "pasta", "busybox", "fusermount3", "ip"])
def test_host_tools(tool: str) -> None:
    assert shutil.which(tool), f"{tool} not on PATH"


def test_busybox_is_static() -> None:
    assert support.have_static_busybox()


def test_rootfs(rootfs: Path) -> None:
    assert (rootfs / "bin/sh").is_symlink()
    assert os.readlink(rootfs / "bin/sh") == "/bin/busybox"
    r = subprocess.run(
        [str(rootfs / "bin/busybox"), "echo", "ok"], capture_output=True, text=True, check=True
    )
    assert r.stdout == "ok\n"
    assert (rootfs / "tmp").stat().st_mode & 0o7777 == 0o1777
    notexec = rootfs / "bin/notexec"
    assert notexec.read_text() == "echo hi\n"
    assert notexec.stat().st_mode & 0o777 == 0o644
    assert "user:x:1000:1000:User:/home/user:/bin/sh" in (rootfs / "etc/passwd").read_text()
    assert "wheel:x:10:user" in (rootfs / "etc/group").read_text()
    for name in ("hosts", "hostname", "resolv.conf"):
        assert (rootfs / "etc" / name).read_text() == ""


def test_fresh_rootfs_is_a_copy(rootfs: Path, fresh_rootfs: Path) -> None:
    assert fresh_rootfs != rootfs
    (fresh_rootfs / "etc/hostname").write_text("changed\n")
    assert (rootfs / "etc/hostname").read_text() == ""
    assert os.readlink(fresh_rootfs / "bin/sh") == "/bin/busybox"


def test_state_isolated(rl_state: RlState) -> None:
    for var, path in rl_state.env().items():
        assert os.environ[var] == path
        assert Path(path).is_dir()
        assert Path(path).stat().st_mode & 0o777 == 0o700
    # room for rl's sockets below the runtime dir (sun_path is 108 bytes)
    assert len(str(rl_state.runtime_dir)) < 40


def test_rl_installed(rl_path: Path) -> None:
    assert rl_path.exists()
    assert os.access(rl_path, os.X_OK)
