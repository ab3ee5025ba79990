"""Shared helpers for rl's test suite (imported by conftest.py and the tests).

Host prerequisites (newuidmap, slirp4netns, busybox-static, /dev/fuse, ...)
are checked with :func:`require`: a developer's machine that lacks one skips
the test, but under CI (``CI=true``) a missing piece is a failure, so that a
broken ``.ci/run`` or ``scripts/setup-host`` can't turn the suite green by
skipping everything.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import stat
import struct
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"

BUSYBOX = Path("/bin/busybox")


def require(condition: bool, reason: str) -> None:
    """Skip the current test unless *condition* holds; under CI, fail instead."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"host requirement missing under CI: {reason}", pytrace=False)
    pytest.skip(reason)


# --------------------------------------------------------------------------
# Host facts


def user_name() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


@dataclass(frozen=True)
class SubIdRange:
    start: int
    count: int


def subid_ranges(kind: str = "uid") -> list[SubIdRange]:
    """The current user's ranges in /etc/subuid (kind='uid') or /etc/subgid ('gid')."""
    path = Path(f"/etc/sub{kind}")
    try:
        text = path.read_text()
    except OSError:
        return []
    me = {user_name(), str(os.getuid())}  # both files are keyed by user name or uid
    ranges = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] not in me:
            continue
        try:
            ranges.append(SubIdRange(int(parts[1]), int(parts[2])))
        except ValueError:
            continue
    return ranges


def is_setuid_root(path: str | Path) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_uid == 0 and bool(st.st_mode & stat.S_ISUID)


def have_newidmap() -> bool:
    """newuidmap and newgidmap (Debian's uidmap) exist and are setuid root."""
    tools = [shutil.which(t) for t in ("newuidmap", "newgidmap")]
    return all(t is not None and is_setuid_root(t) for t in tools)


def dev_openable_rw(path: str | Path) -> bool:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


@functools.cache
def userns_works() -> bool:
    """An unprivileged user namespace can be created (``unshare -Ur true``)."""
    try:
        r = subprocess.run(
            ["unshare", "-Ur", "true"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def _elf_is_static(path: Path) -> bool:
    """True if *path* is an ELF executable without a PT_INTERP (dynamic loader)."""
    try:
        with path.open("rb") as f:
            ident = f.read(16)
            if ident[:4] != b"\x7fELF" or ident[4] != 2:  # 64-bit only
                return False
            end = "<" if ident[5] == 1 else ">"
            header = f.read(48)
            e_phoff = struct.unpack_from(end + "Q", header, 16)[0]
            e_phentsize, e_phnum = struct.unpack_from(end + "HH", header, 38)
            for i in range(e_phnum):
                f.seek(e_phoff + i * e_phentsize)
                (p_type,) = struct.unpack(end + "I", f.read(4))
                if p_type == 3:  # PT_INTERP
                    return False
    except (OSError, struct.error, IndexError):
        return False
    return True


def have_static_busybox() -> bool:
    return BUSYBOX.is_file() and _elf_is_static(BUSYBOX)


def require_userns() -> None:
    require(userns_works(), "unprivileged user namespaces don't work (unshare -Ur true)")


def require_newidmap() -> None:
    require(have_newidmap(), "newuidmap/newgidmap missing or not setuid root (Debian: uidmap)")
    require(bool(subid_ranges("uid")), f"no /etc/subuid range for {user_name()}")
    require(bool(subid_ranges("gid")), f"no /etc/subgid range for {user_name()}")


def require_slirp4netns() -> None:
    require(shutil.which("slirp4netns") is not None, "slirp4netns not installed")
    require(dev_openable_rw("/dev/net/tun"), "/dev/net/tun not read-write for this user")


def require_pasta() -> None:
    require(shutil.which("pasta") is not None, "pasta not installed (Debian: passt)")
    require(dev_openable_rw("/dev/net/tun"), "/dev/net/tun not read-write for this user")


def require_fuse() -> None:
    require(dev_openable_rw("/dev/fuse"), "/dev/fuse not read-write for this user")
    require(is_setuid_root(shutil.which("fusermount3") or ""), "fusermount3 missing/not setuid")


def require_busybox() -> None:
    require(have_static_busybox(), f"{BUSYBOX} is not a static binary (Debian: busybox-static)")


# --------------------------------------------------------------------------
# Root filesystems

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
user:x:1000:1000:User:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""

GROUP = """\
root:x:0:
daemon:x:1:
wheel:x:10:user
user:x:1000:
nogroup:x:65534:
"""


def _applets() -> Iterator[str]:
    """Paths of busybox's applets relative to /, e.g. 'bin/sh', 'usr/bin/awk'."""
    out = subprocess.run(
        [str(BUSYBOX), "--list-full"], capture_output=True, text=True, check=True
    ).stdout
    for line in out.split():
        yield line if "/" in line else f"bin/{line}"


def busybox_rootfs(dest: Path) -> Path:
    """Build a minimal root filesystem from Debian's busybox-static in *dest*.

    Every applet is a symlink to /bin/busybox; /etc/passwd and /etc/group
    know root, daemon, user (1000, in group wheel) and nobody; /bin/notexec
    is a plain, non-executable file.
    """
    require_busybox()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for d in (
        "bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "home/user",
        "var/log", "var/tmp", "usr/bin", "usr/sbin",
    ):  # fmt: skip
        (dest / d).mkdir(parents=True, exist_ok=True)
    (dest / "tmp").chmod(0o1777)
    (dest / "var/tmp").chmod(0o1777)
    (dest / "root").chmod(0o700)

    bb = dest / "bin/busybox"
    shutil.copyfile(BUSYBOX, bb)
    bb.chmod(0o755)
    for applet in _applets():
        link = dest / applet
        if link == bb or link.is_symlink() or link.exists():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")

    etc = dest / "etc"
    (etc / "passwd").write_text(PASSWD)
    (etc / "group").write_text(GROUP)
    for name in ("hosts", "hostname", "resolv.conf"):
        (etc / name).write_text("")
    for name in ("passwd", "group", "hosts", "hostname", "resolv.conf"):
        (etc / name).chmod(0o644)

    notexec = dest / "bin/notexec"
    notexec.write_text("echo hi\n")
    notexec.chmod(0o644)
    return dest


def copy_tree(src: Path, dest: Path) -> Path:
    """Cheap faithful copy (symlinks, modes) with ``cp -a``."""
    subprocess.run(["cp", "-a", "--", str(src), str(dest)], check=True)
    return dest


# --------------------------------------------------------------------------
# Isolated state


@dataclass(frozen=True)
class RlState:
    """Fresh XDG dirs for rl, under one short /tmp path (UNIX sockets: <108 bytes)."""

    base: Path
    runtime_dir: Path  # XDG_RUNTIME_DIR
    data_home: Path  # XDG_DATA_HOME
    config_home: Path  # XDG_CONFIG_HOME

    def env(self) -> dict[str, str]:
        return {
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "XDG_DATA_HOME": str(self.data_home),
            "XDG_CONFIG_HOME": str(self.config_home),
        }


# --------------------------------------------------------------------------
# Cleanup


def kill_recorded_pids(run_dir: Path, sub: str = "rl") -> list[int]:
    """SIGKILL every process whose pid is recorded in ``run_dir/<sub>/**/*.pid``
    (sub="": rl's /tmp/rl-<uid> fallback, which is the runtime dir itself)."""
    import signal

    killed: list[int] = []
    base = run_dir / sub
    if not base.is_dir():
        return killed
    for pidfile in sorted(base.rglob("*.pid")):
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if pid <= 1 or pid == os.getpid():
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except (ProcessLookupError, PermissionError):
            pass
    return killed


def unmount_fuse_under(path: Path) -> None:
    """Lazily unmount any FUSE mount (visible here) below *path*."""
    prefix = str(path).rstrip("/") + "/"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    mounts = []
    for line in lines:
        fields = line.split(" - ")
        mountpoint = fields[0].split()[4].replace("\\040", " ")
        fstype = fields[1].split()[0] if len(fields) > 1 else ""
        if mountpoint.startswith(prefix) and fstype.startswith("fuse"):
            mounts.append(mountpoint)
    for mp in sorted(mounts, reverse=True):
        subprocess.run(["fusermount3", "-u", "-z", mp], capture_output=True, check=False)


def remove_tree(path: Path) -> None:
    """Remove *path*, including files a container chowned to sub-ids.

    Files owned by our subordinate ids can't be removed by us directly; retry
    inside a user namespace mapping them (``unshare -r --map-auto``), the way
    ``podman unshare rm -rf`` does.
    """
    if not path.exists() and not path.is_symlink():
        return
    unmount_fuse_under(path)
    # rm, not shutil.rmtree: a test may leave a tree at PATH_MAX depth (recursion)
    subprocess.run(["rm", "-rf", "--", str(path)], capture_output=True, check=False)
    if not path.exists():
        return
    subprocess.run(
        ["unshare", "--map-root-user", "--map-auto", "rm", "-rf", "--", str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )


# The type of the `rl` fixture. It lives here, not in conftest.py: test modules
# import it, and `from conftest import ...` can pick up another directory's
# conftest.py (tests/guest has one) when pytest collects the whole tree.
RlRunner = Callable[..., "subprocess.CompletedProcess[str]"]


def wait_until(cond: Callable[[], object], timeout: float = 10) -> bool:
    """Poll cond until it is true or timeout seconds pass (then one last look)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return bool(cond())


def as_foreground_job() -> None:
    """Popen's preexec_fn for a child a test interrupts with SIGINT: the default
    SIGINT and SIGQUIT a shell gives its foreground job. A suite started in the
    background of a non-interactive shell inherits them ignored, and Python then
    never raises KeyboardInterrupt (the Ctrl-C a user's terminal would send)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
