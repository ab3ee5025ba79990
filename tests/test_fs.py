"""fs/: every storage driver against kernel overlayfs, the reference.

Each test runs the same operations on a mount made by the driver under test
and on a kernel overlayfs mount of the same lower layers, compares every
result (value or errno) and then the whole trees. The mounts live in a user +
mount namespace owned by tests/fs_agent.py, which acts as root there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import support
from fs import diff, drivers

AGENT = Path(__file__).with_name("fs_agent.py")
DRIVERS = ["overlay", "fuse", "fuse-overlayfs", "vfs"]


class AgentError(Exception):
    pass


class Agent:
    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            ["unshare", "--map-root-user", "--map-auto", "--mount", sys.executable, str(AGENT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("wb"),
        )

    def call(self, op: str, **kw: Any) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write((json.dumps({"op": op, **kw}) + "\n").encode())
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AgentError(f"agent died: {self.log.read_text()[-2000:]}")
        res: dict[str, Any] = json.loads(line)
        return res

    def ok(self, op: str, **kw: Any) -> Any:
        res = self.call(op, **kw)
        if "ok" not in res:
            raise AgentError(f"{op} {kw}: {res}")
        return res["ok"]

    def fs(self, root: str, name: str, *args: Any, as_: tuple[int, int] | None = None) -> Any:
        """Result of an fsop: its value, or {'errno': NAME}."""
        res = self.call("fsop", root=root, name=name, args=list(args), **{"as": as_})
        if "error" in res:
            raise AgentError(res["error"])
        return res["ok"] if "ok" in res else {"errno": res["errno"]}

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def agent() -> Iterator[Agent]:
    support.require(support.userns_works(), "unprivileged user namespaces unavailable")
    support.require(support.have_newidmap(), "newuidmap/newgidmap missing")
    support.require(support.dev_openable_rw("/dev/fuse"), "/dev/fuse not read-write")
    support.require(shutil.which("fuse-overlayfs") is not None, "fuse-overlayfs not installed")
    base = Path(tempfile.mkdtemp(prefix="rl-fs-agent-", dir="/tmp"))
    a = Agent(base / "agent.log")
    try:
        yield a
    finally:
        a.close()
        support.remove_tree(base)


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="rl-fs-", dir="/tmp"))
    d.chmod(0o755)  # other ids in the namespace must reach the mounts
    try:
        yield d
    finally:
        support.remove_tree(d)


def build_lowers(agent: Agent, base: Path) -> list[str]:
    """Two lower layers with a bit of everything; returned top first."""
    top, bottom = base / "l1", base / "l2"
    top.mkdir()
    bottom.mkdir()
    b, t = str(bottom), str(top)
    a = agent.fs
    a(b, "write", "f", "hello\n", None)
    a(b, "write", "exe", "#!/bin/sh\necho hi\n", None)
    a(b, "chown", "exe", 1000, 1000)
    a(b, "chmod", "exe", 0o4755)
    a(b, "setxattr", "exe", "user.k", "v")
    a(b, "utime", "exe", 1_000_000_000 * 10**9, 1_000_000_000 * 10**9)
    for d in ("d", "d/sub", "merged", "op", "sticky"):
        a(b, "mkdir", d)
    a(b, "chmod", "sticky", 0o1777)
    a(b, "write", "d/a", "a\n", None)
    a(b, "write", "d/sub/b", "b\n", None)
    a(b, "write", "merged/low", "low\n", None)
    a(b, "write", "op/hidden", "x\n", None)
    a(b, "symlink", "f", "sl")
    a(b, "mkfifo", "fifo")
    a(b, "write", "hl1", "linked\n", None)
    a(b, "link", "hl1", "hl2")
    a(b, "write", "gone", "bye\n", None)
    a(b, "sparse", "big", 5 << 30, "tail")
    a(t, "mkdir", "merged")
    a(t, "write", "merged/up", "up\n", None)
    a(t, "whiteout", "gone")
    a(t, "mkdir", "op")
    a(t, "setxattr", "op", "user.overlay.opaque", "y")
    a(t, "write", "op/new", "new\n", None)
    a(t, "write", "f2", "two\n", None)
    return [t, b]


class Pair:
    """The driver under test and the kernel reference, on the same lower layers."""

    def __init__(self, agent: Agent, base: Path, driver: str,
                 lowers: list[str] | None = None) -> None:
        self.agent, self.driver = agent, driver
        self.lowers = lowers or build_lowers(agent, base)
        self.mnt: dict[str, str] = {}
        self.upper: dict[str, str] = {}
        for side, drv in (("test", driver), ("ref", "overlay")):
            d = base / side
            for sub in ("upper", "work", "mnt"):
                (d / sub).mkdir(parents=True)
            agent.ok("mount", driver=drv, lowers=self.lowers, upper=str(d / "upper"),
                     work=str(d / "work"), target=str(d / "mnt"))
            self.mnt[side] = str(d / "mnt")
            self.upper[side] = str(d / "upper")

    def do(self, name: str, *args: Any, as_: tuple[int, int] | None = None) -> Any:
        got = self.agent.fs(self.mnt["test"], name, *args, as_=as_)
        want = self.agent.fs(self.mnt["ref"], name, *args, as_=as_)
        if name == "statvfs" and self.driver == "fuse-overlayfs":
            want["namemax"] = got["namemax"]  # 251: it keeps room for ".wh."
        if name == "fd_stat" and "nlink" in got and "nlink" in want and (
                (self.driver, got["nlink"], want["nlink"]) in _UNLINKED_NLINK
                or (self.driver != "overlay"
                    and got["ino"] == self.agent.fs(self.mnt["test"], "stat", "hl2").get("ino"))):
            got.pop("nlink")  # known deviations (docs/decisions.md): see _UNLINKED_NLINK,
            want.pop("nlink")  # and lower hard links kept linked (_without_lower_hardlinks)
        if name in ("stat", "fd_stat") and "ino" in got and "ino" in want:
            for k in ("ino", "atime_ns", "mtime_ns"):  # compared where it matters
                got.pop(k, None)
                want.pop(k, None)
        assert got == want, f"{self.driver}: {name}{args}"
        return got

    def check(self) -> list[Any]:
        got = self.agent.ok("tree", root=self.mnt["test"])
        want = self.agent.ok("tree", root=self.mnt["ref"])
        if self.driver != "overlay":
            linked = _linked_to_lower_hardlinks(got) | _linked_to_lower_hardlinks(want)
            _without_lower_hardlinks(got, linked)
            _without_lower_hardlinks(want, linked)
        assert got == want
        return list(got)

    def unmount(self) -> None:
        for m in self.mnt.values():
            self.agent.fs(m, "close_all")  # a busy FUSE mount would make the server linger
            self.agent.ok("unmount", target=m)


# The link count of an open file whose last name is gone, (driver, driver's,
# kernel's): fuse-overlayfs says 1 where it is 0; vfs is a plain directory, so
# an unlinked file of its copy of a lower layer has 0 where the kernel shows the
# lower file's own count.
_UNLINKED_NLINK = {("fuse-overlayfs", 1, 0), ("vfs", 0, 1)}


def _linked_to_lower_hardlinks(tree: list[Any]) -> set[str]:
    """hl1, hl2 and every name that shares an inode number with one of them."""
    names = {"hl1", "hl2"}
    for group in tree[-1]["hardlinks"]:
        if names & set(group):
            names |= set(group)
    return names


def _without_lower_hardlinks(tree: list[Any], linked: set[str]) -> None:
    """Known deviations (docs/decisions.md) in hard links.

    The kernel reports a copied-up file by its lower origin's number and a new
    link to it by the upper one, so its groups of equal st_ino are not POSIX
    groups; the FUSE overlay's are (test_links_and_special_files checks
    them). Hard links *inside a lower layer* part on copy-up in the kernel
    (hl1 is copied up, hl2 stays below); the FUSE overlay, fuse-overlayfs and
    vfs keep them linked, so hl2 shows what was done to hl1 and the link
    counts differ (test_lower_hard_links_are_one_inode checks them).
    """
    for e in tree:
        if e.get("path") in linked:
            e.pop("nlink", None)
        if e.get("path") == "hl2":
            for k in ("mode", "uid", "gid", "sha", "size", "xattrs"):
                e.pop(k, None)
    tree.pop()


@pytest.fixture(params=DRIVERS)
def pair(request: pytest.FixtureRequest, agent: Agent, workdir: Path) -> Iterator[Pair]:
    p = Pair(agent, workdir, request.param)
    try:
        yield p
    finally:
        p.unmount()


# --------------------------------------------------------------------------
# Behaviour, every driver against the kernel


def test_merged_view(pair: Pair) -> None:
    tree = pair.check()
    paths = {e["path"] for e in tree if "path" in e}
    assert {"f", "f2", "merged/low", "merged/up", "op/new", "sl", "fifo"} <= paths
    assert "gone" not in paths and "op/hidden" not in paths  # whiteout, opaque dir
    assert pair.do("read", "f") == "hello\n"
    assert pair.do("pread", "big", (5 << 30) - 4, 10) == "tail"
    assert pair.do("stat", "big")["size"] == 5 << 30
    assert pair.do("listdir", "merged") == ["low", "up"]
    assert pair.do("read", "gone") == {"errno": "ENOENT"}
    assert pair.do("statvfs", "")["namemax"] == (251 if pair.driver == "fuse-overlayfs" else 255)


def test_copy_up_keeps_metadata(pair: Pair) -> None:
    before = pair.agent.fs(pair.mnt["test"], "stat", "exe")
    pair.do("chmod", "exe", 0o4750)
    st = pair.agent.fs(pair.mnt["test"], "stat", "exe")
    assert (st["mode"] & 0o7777, st["uid"], st["gid"]) == (0o4750, 1000, 1000)
    assert st["mtime_ns"] == before["mtime_ns"] == 1_000_000_000 * 10**9
    assert st["ino"] == before["ino"]  # stable across copy-up
    assert pair.do("getxattr", "exe", "user.k") == "v"
    pair.do("append", "f", "more\n")
    assert pair.do("read", "f") == "hello\nmore\n"
    pair.do("truncate", "d/a", 1)
    pair.do("setxattr", "d/sub/b", "user.new", "1")
    pair.do("utime", "merged/low", 5 * 10**9, 6 * 10**9)
    assert pair.agent.fs(pair.mnt["test"], "stat", "merged/low")["mtime_ns"] == 6 * 10**9
    pair.do("chown", "hl1", 7, 8)
    assert pair.do("listxattr", "exe") == ["user.k"]
    pair.check()


def test_delete_and_recreate(pair: Pair) -> None:
    assert pair.do("rmdir", "d") == {"errno": "ENOTEMPTY"}
    pair.do("unlink", "d/sub/b")
    pair.do("rmdir", "d/sub")
    pair.do("unlink", "d/a")
    pair.do("rmdir", "d")
    assert pair.do("listdir", "") == pair.do("listdir", "")
    pair.do("mkdir", "d")
    assert pair.do("listdir", "d") == []  # the new dir does not merge with the old one
    pair.do("unlink", "f")
    assert pair.do("read", "f") == {"errno": "ENOENT"}
    pair.do("write", "f", "again\n", None)
    pair.do("unlink", "merged/up")
    pair.do("unlink", "merged/low")
    pair.do("rmdir", "merged")
    pair.do("write", "gone", "back\n", None)  # over a whiteout of a lower layer
    assert pair.do("rmdir", "f2") == {"errno": "ENOTDIR"}
    assert pair.do("unlink", "op") == {"errno": "EISDIR"}
    pair.check()


def test_rename(pair: Pair) -> None:
    pair.do("rename", "f", "g")
    pair.do("rename", "g", "d/g")
    pair.do("rename", "f2", "merged/low")  # over a lower file
    pair.do("mkdir", "new")
    pair.do("write", "new/x", "x\n", None)
    pair.do("rename", "new", "new2")
    pair.do("rename", "new2", "d/sub/new3")
    pair.do("mkdir", "empty")
    res = pair.do("rename", "d", "d-moved") if pair.driver != "vfs" else None
    if pair.driver != "vfs":
        assert res == {"errno": "EXDEV"}  # a lower directory: mv falls back to copying
    assert pair.do("rename", "empty", "op") == {"errno": "ENOTEMPTY"}
    assert pair.do("rename", "sl", "merged") == {"errno": "EISDIR"}
    pair.check()


def test_links_and_special_files(pair: Pair) -> None:
    pair.do("link", "f", "f-link")
    st = pair.agent.fs(pair.mnt["test"], "stat", "f-link")
    assert st["nlink"] == 2
    if pair.driver == "fuse":  # the kernel reports the lower origin's number for "f"
        assert st["ino"] == pair.agent.fs(pair.mnt["test"], "stat", "f")["ino"]
    pair.do("append", "f-link", "via link\n")
    assert pair.do("read", "f") == "hello\nvia link\n"
    pair.do("unlink", "f")
    assert pair.do("stat", "f-link")["nlink"] == 1
    pair.do("symlink", "../f2", "d/up")
    assert pair.do("read", "d/up") == "two\n"
    pair.do("mkfifo", "d/fifo2")
    pair.do("mksock", "d/sock")
    pair.do("append", "hl1", "x")
    pair.check()


def test_mmap_and_fsync(pair: Pair) -> None:
    assert pair.do("mmap_read", "f") == "hello\n"
    pair.do("mmap_write", "f", 1, "EL")  # a lower file: copy-up, then shared mapping
    assert pair.do("read", "f") == "hELlo\n"
    pair.do("fsync", "f")
    pair.do("fsync", "d")
    pair.check()


def test_large_file(pair: Pair) -> None:
    pair.do("write", "huge", "", None)
    pair.do("write", "huge", "end", (4 << 30) + 7)
    assert pair.do("stat", "huge")["size"] == (4 << 30) + 10
    assert pair.do("pread", "huge", (4 << 30) + 7, 3) == "end"
    assert pair.do("pread", "huge", 1 << 30, 2) == "\0\0"


def test_permissions_of_other_users(pair: Pair) -> None:
    user = (1000, 1000)
    assert pair.do("append", "f", "x", as_=user) == {"errno": "EACCES"}
    assert pair.do("write", "d/new", "x", None, as_=user) == {"errno": "EACCES"}
    assert pair.do("write", "sticky/mine", "mine\n", None, as_=user) is None
    assert pair.do("stat", "sticky/mine")["uid"] == 1000
    assert pair.do("unlink", "sticky/mine", as_=(1001, 1001)) == {"errno": "EPERM"}
    if pair.driver != "fuse-overlayfs":  # 1.10 keeps the setuid bit: known deviation
        pair.do("append", "exe", "x", as_=user)  # the owner writes: copy-up, suid dropped
        assert pair.do("stat", "exe")["mode"] & 0o7777 == 0o755
    pair.do("chmod", "d", 0o777)
    pair.do("mkdir", "d/u", as_=user)
    assert pair.do("stat", "d/u")["uid"] == 1000
    pair.check()


def test_odd_names(pair: Pair) -> None:
    longest = 251 if pair.driver == "fuse-overlayfs" else 255  # it keeps room for ".wh."
    for name in ("new\nline", "x" * longest, "sp ace", "\u00e9t\u00e9", "tab\t"):
        assert pair.agent.fs(pair.mnt["test"], "write", name, name, None) is None
        assert pair.agent.fs(pair.mnt["ref"], "write", name, name, None) is None
        assert pair.do("read", name) == name
    assert pair.agent.fs(pair.mnt["test"], "write", "y" * 256, "", None) == {
        "errno": "ENAMETOOLONG"}
    pair.do("mkdir", "n\nd")
    pair.do("rename", "new\nline", "n\nd/" + "z" * longest)
    pair.check()


def test_path_max_depth(pair: Pair) -> None:
    comp = "p" * 100
    path = ""
    while len(pair.mnt["test"]) + len(path) + 1 + len(comp) < 4000:
        path = f"{path}/{comp}" if path else comp
        pair.do("mkdir", path)
    pair.do("write", f"{path}/leaf", "deep", None)
    assert pair.do("read", f"{path}/leaf") == "deep"
    assert pair.do("mkdir", f"{path}/{'q' * 200}/{'r' * 200}")["errno"] in ("ENAMETOOLONG",
                                                                            "ENOENT")
    pair.check()


def test_hard_link_nlink_of_lower(pair: Pair) -> None:
    assert pair.do("stat", "hl1")["nlink"] == 2
    pair.check()


def test_unlinked_open_file_lives_on(pair: Pair) -> None:
    # apt's pattern: write and read a temporary file through an fd after rm
    pair.do("write", "tmp", "abc", None)
    pair.do("open", "tmp", "k", "rw")
    pair.do("unlink", "tmp")
    assert pair.do("fd_write", "k", 3, "hi\n") == 3
    assert pair.do("fd_read", "k") == "abchi\n"
    assert pair.do("reopen_read", "k") == "abchi\n"  # cat /proc/self/fd/N
    st = pair.do("fd_stat", "k")
    assert (st.get("nlink", 0), st["size"]) == (0, 6)  # (no nlink: _UNLINKED_NLINK)
    pair.do("fd_truncate", "k", 2)
    assert pair.do("fd_read", "k") == "ab"
    pair.do("fd_mmap_write", "k", 0, "XY")
    assert pair.do("fd_mmap_read", "k") == "XY"
    assert pair.do("fd_read", "k") == "XY"
    pair.do("write", "tmp", "other\n", None)  # the name again, for a new file
    assert pair.do("fd_read", "k") == "XY"
    assert pair.do("read", "tmp") == "other\n"
    assert pair.do("fd_stat", "k").get("nlink", 0) == 0
    pair.do("close", "k")
    pair.check()


def test_unlinked_lower_file_lives_on(pair: Pair) -> None:
    pair.do("open", "f", "r", "r")
    pair.do("open", "d/a", "w", "rw")  # a copy-up at open
    pair.do("unlink", "f")
    pair.do("unlink", "d/a")
    assert pair.do("fd_read", "r") == "hello\n"
    assert pair.do("reopen_read", "r") == "hello\n"
    assert pair.do("fd_stat", "r").get("nlink", 1) == 1  # the lower file's own
    pair.do("fd_write", "w", 2, "more\n")
    assert pair.do("reopen_read", "w") == "a\nmore\n"
    assert pair.do("fd_stat", "w").get("nlink", 0) == 0
    pair.do("open", "d/sub", "dir", "r")
    pair.do("unlink", "d/sub/b")
    pair.do("rmdir", "d/sub")
    pair.do("fd_stat", "dir")
    pair.do("open", "hl1", "h", "r")
    pair.do("unlink", "hl1")  # a hard link whose other name was never looked up
    assert pair.do("read", "hl2") == "linked\n"
    assert pair.do("fd_read", "h") == "linked\n"
    pair.do("fd_stat", "h")
    pair.check()


def test_rename_over_an_open_file(pair: Pair) -> None:
    pair.do("write", "a", "old\n", None)
    pair.do("open", "a", "up", "r")
    pair.do("open", "f2", "low", "r")
    pair.do("write", "b", "new\n", None)
    pair.do("rename", "b", "a")  # over an upper file
    pair.do("rename", "f", "f2")  # over a lower one
    assert pair.do("fd_read", "up") == "old\n"
    assert pair.do("reopen_read", "up") == "old\n"
    assert pair.do("fd_stat", "up").get("nlink", 0) == 0
    assert pair.do("fd_read", "low") == "two\n"
    assert pair.do("reopen_read", "low") == "two\n"
    assert pair.do("read", "a") == "new\n"
    assert pair.do("read", "f2") == "hello\n"
    pair.check()


def test_open_file_sees_its_copy_up(pair: Pair) -> None:
    # An fd opened on the lower file reads what is written after another open
    # copied it up (the kernel's stacked files; the FUSE overlay's handles
    # move to the upper copy).
    pair.do("open", "f", "r", "r")
    pair.do("append", "f", "x\n")
    assert pair.do("fd_read", "r") == "hello\nx\n"
    pair.do("open", "f2", "r2", "r")
    pair.do("write", "f2", "ZZ", 1)
    assert pair.do("fd_read", "r2") == "tZZ\n"
    pair.check()


@pytest.mark.parametrize("driver", DRIVERS)
def test_lower_hard_links_are_one_inode(agent: Agent, workdir: Path, driver: str) -> None:
    lowers = build_lowers(agent, workdir)
    agent.fs(lowers[1], "link", "hl1", "d/sub/hl3")  # a name the kernel has not looked up
    p = Pair(agent, workdir, driver, lowers=lowers)
    try:
        for side in ("test", "ref"):
            m = p.mnt[side]
            st = [agent.fs(m, "stat", n) for n in ("hl1", "hl2")]
            assert st[0]["ino"] == st[1]["ino"], side  # du counts it once, tar links it
            if driver != "fuse-overlayfs" or side == "ref":  # it counts the names it has seen
                assert st[0]["nlink"] == st[1]["nlink"] == 3
        got = agent.ok("tree", root=p.mnt["test"])[-1]
        assert got == agent.ok("tree", root=p.mnt["ref"])[-1]
        assert got["hardlinks"] == [["d/sub/hl3", "hl1", "hl2"]]
        p.do("append", "hl1", "x\n")
        m = p.mnt["test"]
        st = [agent.fs(m, "stat", n) for n in ("hl1", "hl2", "d/sub/hl3")]
        seen = [agent.fs(m, "read", n) for n in ("hl1", "hl2", "d/sub/hl3")]
        assert seen[0] == "linked\nx\n"
        if driver == "overlay":  # the kernel (without index=on) parts them on copy-up
            assert st[0]["ino"] != st[1]["ino"] == st[2]["ino"]
            assert seen[1:] == ["linked\n", "linked\n"]
        else:  # one inode, one file: the others see the write (known deviation)
            assert st[0]["ino"] == st[1]["ino"] == st[2]["ino"]
            assert seen[1:] == [seen[0], seen[0]]
            assert [s["nlink"] for s in st] == [3, 3, 3]
    finally:
        p.unmount()


# --------------------------------------------------------------------------
# The pyfuse3 overlay's upper dir is the kernel's


def test_fuse_upper_dir_is_kernel_compatible(agent: Agent, workdir: Path) -> None:
    p = Pair(agent, workdir, "fuse")
    try:
        for side in ("test", "ref"):
            r = p.mnt[side]
            agent.fs(r, "unlink", "f")
            agent.fs(r, "unlink", "d/sub/b")
            agent.fs(r, "rmdir", "d/sub")
            agent.fs(r, "mkdir", "d/sub")
            agent.fs(r, "append", "exe", "x")
            agent.fs(r, "mkdir", "new")
            agent.fs(r, "rename", "f2", "new/f3")
        got = agent.ok("upper", upper=p.upper["test"])
        want = agent.ok("upper", upper=p.upper["ref"])
        assert got == want
        assert ["f", "whiteout"] in [e[1:] and [e[0].removeprefix("./"), e[1]] for e in got]
    finally:
        p.unmount()
    # the kernel mounts what the FUSE overlay wrote, and sees the same tree
    up = p.upper["test"]
    (workdir / "w2").mkdir()
    (workdir / "m2").mkdir()
    agent.ok("mount", driver="overlay", lowers=p.lowers, upper=up, work=str(workdir / "w2"),
             target=str(workdir / "m2"))
    try:
        tree = agent.ok("tree", root=str(workdir / "m2"))
        paths = {e["path"] for e in tree if "path" in e}
        assert "f" not in paths and "new/f3" in paths and "d/sub" in paths
        assert "d/sub/b" not in paths
    finally:
        agent.ok("unmount", target=str(workdir / "m2"))


# --------------------------------------------------------------------------
# Randomised: the same operation sequence on the FUSE overlay and the kernel

NAMES = ["f", "f2", "d", "d/a", "d/sub", "d/sub/b", "merged", "merged/low", "op", "op/new",
         "n", "n/m", "sl", "hl1"]
KEYS = ["k0", "k1"]
name_ops = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(NAMES), st.text("ab\n", max_size=5),
              st.sampled_from([None, 0, 3])),
    st.tuples(st.just("append"), st.sampled_from(NAMES), st.just("z")),
    st.tuples(st.just("truncate"), st.sampled_from(NAMES), st.integers(0, 4)),
    st.tuples(st.just("mkdir"), st.sampled_from(NAMES)),
    st.tuples(st.just("rmdir"), st.sampled_from(NAMES)),
    st.tuples(st.just("unlink"), st.sampled_from(NAMES)),
    st.tuples(st.just("rename"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
    st.tuples(st.just("link"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
    st.tuples(st.just("symlink"), st.sampled_from(["f", "../d", "x"]), st.sampled_from(NAMES)),
    st.tuples(st.just("chmod"), st.sampled_from(NAMES), st.sampled_from([0o600, 0o755])),
    st.tuples(st.just("setxattr"), st.sampled_from(NAMES), st.just("user.t"), st.just("1")),
)
opens = st.tuples(st.just("open"), st.sampled_from(NAMES), st.sampled_from(KEYS),
                  st.sampled_from(["r", "rw"]))
fd_ops = st.one_of(  # through fds kept open while their names change or go
    opens,
    st.tuples(st.just("fd_write"), st.sampled_from(KEYS), st.integers(0, 3),
              st.text("ab\n", min_size=1, max_size=3)),
    *(st.tuples(st.just(op), st.sampled_from(KEYS))
      for op in ("fd_read", "reopen_read", "fd_stat", "close")),
    st.tuples(st.just("fd_truncate"), st.sampled_from(KEYS), st.integers(0, 4)),
    # the name an fd was opened on goes (made concrete in the test)
    st.tuples(st.just("unlink_opened"), st.sampled_from(KEYS)),
    st.tuples(st.just("rename_onto_opened"), st.sampled_from(NAMES), st.sampled_from(KEYS)),
)
ops = st.one_of(name_ops, fd_ops)  # half and half
# every sequence starts with both fds open, on lower files (hl1: a hard link)
held = st.tuples(*(st.tuples(st.just("open"),
                             st.sampled_from(["f", "f2", "d/a", "merged/low", "hl1"]),
                             st.just(k), st.sampled_from(["r", "rw"])) for k in KEYS))


@settings(max_examples=int(os.environ.get("RL_FS_EXAMPLES", "15")), deadline=None,
          database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(seq=st.tuples(held, st.lists(ops, min_size=1, max_size=12)))
def test_random_sequences_match_kernel(agent: Agent,
                                       seq: tuple[Any, list[tuple[Any, ...]]]) -> None:
    base = Path(tempfile.mkdtemp(prefix="rl-fs-hyp-", dir="/tmp"))
    try:
        p = Pair(agent, base, "fuse", lowers=_shared_lowers(agent))
        opened: dict[str, str] = {}
        try:
            for op in [*seq[0], *seq[1]]:
                if op[0] == "open":
                    opened[op[2]] = op[1]
                elif op[0] == "unlink_opened":
                    op = ("unlink", opened[op[1]])
                elif op[0] == "rename_onto_opened":
                    op = ("rename", op[1], opened[op[2]])
                p.do(op[0], *op[1:])
                p.check()
        finally:
            p.unmount()
    finally:
        support.remove_tree(base)


_LOWERS: dict[str, list[str]] = {}


def _shared_lowers(agent: Agent) -> list[str]:
    """One set of lower layers for all examples (they are never written)."""
    if "l" not in _LOWERS:
        base = Path(tempfile.mkdtemp(prefix="rl-fs-lowers-", dir="/tmp"))
        _LOWERS["l"] = build_lowers(agent, base)
        _LOWERS["base"] = [str(base)]
    return _LOWERS["l"]


@pytest.fixture(scope="module", autouse=True)
def _drop_shared_lowers() -> Iterator[None]:
    yield
    if "base" in _LOWERS:
        support.remove_tree(Path(_LOWERS["base"][0]))
        _LOWERS.clear()


# --------------------------------------------------------------------------
# Bad input and failure paths


@pytest.mark.parametrize("driver", DRIVERS)
def test_missing_lower_layer_is_a_clear_error(agent: Agent, workdir: Path, driver: str) -> None:
    for d in ("u", "w", "m"):
        (workdir / d).mkdir()
    missing = str(workdir / "no-such-layer")
    res = agent.call("mount", driver=driver, lowers=[missing], upper=str(workdir / "u"),
                     work=str(workdir / "w"), target=str(workdir / "m"))
    assert res == {"error": f"lower layer {missing}: no such directory"}
    assert str(workdir / "m") not in agent.ok("mountinfo")
    res = agent.call("mount", driver="zfs", lowers=[str(workdir / "u")],
                     upper=str(workdir / "u"), work=str(workdir / "w"),
                     target=str(workdir / "m"))
    assert "unknown storage driver 'zfs'" in res["error"]


@pytest.mark.parametrize("driver", ["overlay", "fuse", "fuse-overlayfs"])
def test_full_upper_disk(agent: Agent, workdir: Path, driver: str) -> None:
    lowers = build_lowers(agent, workdir)
    small = workdir / "small"
    small.mkdir()
    r = agent.ok("sh", cmd=f"mount -t tmpfs -o size=1m tmpfs {small} && "
                           f"mkdir {small}/u {small}/w {small}/m")
    assert r["rc"] == 0, r
    try:
        agent.ok("mount", driver=driver, lowers=lowers, upper=f"{small}/u", work=f"{small}/w",
                 target=f"{small}/m")
        m = f"{small}/m"
        res = agent.fs(m, "write", "fill", "x" * (2 << 20), None)
        assert res == {"errno": "ENOSPC"}
        # the mount survives: reads, listing and small changes after freeing space
        assert agent.fs(m, "read", "f") == "hello\n"
        assert "merged" in agent.fs(m, "listdir", "")
        agent.fs(m, "unlink", "fill")
        # FUSE's RELEASE of the failed file's handle is asynchronous (close waits only for
        # FLUSH): the FUSE drivers hold its blocks until the server hears of it, so space
        # comes back within moments, not at once as with the kernel's overlay.
        deadline = time.monotonic() + 10
        while (res := agent.fs(m, "write", "after", "ok", None)) == {"errno": "ENOSPC"} \
                and driver != "overlay" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert res != {"errno": "ENOSPC"}, res
        assert agent.fs(m, "read", "after") == "ok"
        agent.ok("unmount", target=m)
    finally:
        agent.ok("sh", cmd=f"umount -l {small}")


@pytest.mark.parametrize("driver", ["overlay", "fuse", "fuse-overlayfs"])
def test_busy_mount_at_exit_leaves_nothing(agent: Agent, workdir: Path, driver: str) -> None:
    lowers = build_lowers(agent, workdir)
    for d in ("u", "w", "m"):
        (workdir / d).mkdir()
    m = str(workdir / "m")
    pid = agent.ok("mount", driver=driver, lowers=lowers, upper=str(workdir / "u"),
                   work=str(workdir / "w"), target=m)
    fd = agent.fs(m, "hold", "f")
    assert agent.fs("/", "read_held", fd) == "hello\n"
    agent.ok("unmount", target=m)
    assert f" {m} " not in agent.ok("mountinfo")
    if pid is not None:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
        # its open file answers from the page cache or fails; it doesn't hang
        assert agent.fs("/", "read_held", fd) in ("hello\n", {"errno": "ENOTCONN"})
    agent.fs("/", "release", fd)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return True


def _fuse_mount(agent: Agent, workdir: Path) -> tuple[str, int]:
    """A fuse mount of the standard lowers at workdir/m; (mount point, server pid)."""
    lowers = build_lowers(agent, workdir)
    for d in ("u", "w", "m"):
        (workdir / d).mkdir()
    m = str(workdir / "m")
    pid = agent.ok("mount", driver="fuse", lowers=lowers, upper=str(workdir / "u"),
                   work=str(workdir / "w"), target=m)
    return m, pid


def test_fuse_server_death_gives_errors_not_a_hang(agent: Agent, workdir: Path) -> None:
    m, pid = _fuse_mount(agent, workdir)
    assert agent.fs(m, "read", "f") == "hello\n"
    assert agent.ok("server_error", target=m) is None
    os.kill(pid, 9)
    deadline = time.monotonic() + 10
    while not _is_zombie(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert agent.fs(m, "read", "f2") == {"errno": "ENOTCONN"}
    assert agent.ok("server_error", target=m) == f"fuse server (pid {pid}) killed by signal 9"
    agent.ok("unmount", target=m)
    assert f" {m} " not in agent.ok("mountinfo")


def test_fuse_server_stops_on_sigterm_while_busy(agent: Agent, workdir: Path) -> None:
    # The server takes waiting requests back to back (fs/fuse.py); SIGTERM must
    # still stop it while clients keep it busy.
    m, pid = _fuse_mount(agent, workdir)
    # three writers, so one's request always waits while the server does
    # another's; each stops once the mount is gone (or after 20 s at most)
    # and then leaves a done.N behind
    done = [workdir / f"done.{i}" for i in (1, 2, 3)]
    agent.ok("sh", cmd=(
        f"t=$(($(date +%s) + 20)); for i in 1 2 3; do (while mountpoint -q {m} && "
        f"[ $(date +%s) -lt $t ]; do dd if=/dev/zero of={m}/t$i bs=1M count=32; done; "
        f"mkdir {workdir}/done.$i) >/dev/null 2>&1 & done"))
    try:
        time.sleep(0.3)
        os.kill(pid, 15)
        deadline = time.monotonic() + 5
        while not _is_zombie(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _is_zombie(pid), "the server went on serving after SIGTERM"
        assert agent.ok("server_error", target=m) == f"fuse server (pid {pid}) exited with status 0"
        assert f" {m} " not in agent.ok("mountinfo")
    finally:
        deadline = time.monotonic() + 30
        while not all(d.exists() for d in done) and time.monotonic() < deadline:
            time.sleep(0.05)
    agent.ok("unmount", target=m)


def test_fuse_request_loop_lets_other_tasks_run() -> None:
    # The deterministic half of the above: with a request always waiting, the
    # loop still passes through trio's scheduler every YIELD_EVERY requests.
    import trio

    from fs import fuse

    r, w = os.pipe()
    try:
        os.write(w, b"x")  # readable for good
        lowlevel = fuse._Lowlevel(r)
        turns = 0

        async def other() -> None:
            nonlocal turns
            while True:
                turns += 1
                await trio.sleep(0)

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(other)
                await trio.sleep(0)
                for _ in range(10 * lowlevel.YIELD_EVERY):
                    await lowlevel.wait_readable(r)
                nursery.cancel_scope.cancel()

        trio.run(main)
        assert 10 <= turns <= 12
    finally:
        os.close(r)
        os.close(w)


def test_fuse_server_restart_cleans_copy_up_leftovers(agent: Agent, workdir: Path) -> None:
    lowers = build_lowers(agent, workdir)
    for d in ("u", "w", "m"):
        (workdir / d).mkdir()
    agent.fs(str(workdir / "w"), "write", "#rl-copyup-7", "half", None)
    agent.ok("mount", driver="fuse", lowers=lowers, upper=str(workdir / "u"),
             work=str(workdir / "w"), target=str(workdir / "m"))
    agent.ok("unmount", target=str(workdir / "m"))
    assert agent.fs(str(workdir / "w"), "listdir", "") == []


# --------------------------------------------------------------------------
# diff and commit from the upper dir


@pytest.mark.parametrize("driver", ["overlay", "fuse", "fuse-overlayfs"])
def test_diff_and_layer_tar(agent: Agent, workdir: Path, driver: str) -> None:
    p = Pair(agent, workdir, driver)
    m = p.mnt["test"]
    for name, *args in [("unlink", "f"), ("append", "merged/low", "x"),
                        ("write", "added", "new\n", None), ("unlink", "d/sub/b"),
                        ("rmdir", "d/sub"), ("mkdir", "d/sub"), ("link", "added", "added-link")]:
        assert agent.fs(m, name, *args) is None
    p.unmount()
    upper = p.upper["test"]
    assert [str(c) for c in diff.changes(upper, p.lowers)] == [
        "A /added", "A /added-link", "C /d", "C /d/sub", "D /d/sub/b", "D /f", "C /merged",
        "C /merged/low"]
    layer = diff.write_layer(upper, str(workdir / "layer.tar"))
    assert layer.diff_id.startswith("sha256:")
    assert layer.size == (workdir / "layer.tar").stat().st_size
    with tarfile.open(layer.path) as tar:
        members = {t.name: t for t in tar.getmembers()}
    assert members[".wh.f"].isfile() and members[".wh.f"].size == 0
    assert "d/sub/.wh..wh..opq" in members
    assert members["merged/low"].size == len("low\nx")
    assert members["added-link"].islnk() and members["added-link"].linkname == "added"
    assert not any(n.startswith("#rl") or ".tmp-" in n for n in members)
    assert not list(workdir.glob("layer.tar.tmp-*"))


def test_write_layer_failure_leaves_no_file(workdir: Path) -> None:
    with pytest.raises(FileNotFoundError):
        diff.write_layer(str(workdir / "no-upper"), str(workdir / "out.tar"))
    assert list(workdir.iterdir()) == []


def test_detect_default_probes_the_kernel(agent: Agent) -> None:
    driver, reason = agent.ok("detect")
    mine = drivers.detect_default()  # also works outside any namespace
    assert driver == mine.driver == "overlay", reason
    assert "userxattr" in mine.reason


def test_rl_info_shows_the_storage_driver_and_why(rl: Any) -> None:
    out = rl("info", "--format", "{{.storage.default_driver}}|{{.storage.reason}}",
             check=True).stdout.strip()
    driver, reason = out.split("|", 1)
    assert driver == drivers.detect_default().driver
    assert reason and driver in drivers.DRIVERS


def test_standalone_mount_command(workdir: Path) -> None:
    support.require(support.userns_works(), "unprivileged user namespaces unavailable")
    for d in ("l", "u", "w", "m"):
        (workdir / d).mkdir()
    (workdir / "l" / "f").write_text("hi\n")
    cmd = ["unshare", "--map-root-user", "--mount", sys.executable, "-m", "fs", "mount",
           "--driver", "fuse", "--lower", str(workdir / "l"), "--upper", str(workdir / "u"),
           "--work", str(workdir / "w"), str(workdir / "m")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parent.parent)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        mountinfo = Path(f"/proc/{proc.pid}/mountinfo").read_text()
        assert f"{workdir / 'm'} " in mountinfo and "fuse.rl-overlay" in mountinfo
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    bad = subprocess.run([*cmd[:-7], "--lower", str(workdir / "nope"), "--upper",
                          str(workdir / "u"), "--work", str(workdir / "w"), str(workdir / "m")],
                         capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert bad.returncode == 125
    assert bad.stderr == f"Error: lower layer {workdir / 'nope'}: no such directory\n"


def test_benchmark_script_runs(tmp_path: Path) -> None:
    """benchmarks/fs.py at a tiny scale: every configuration mounts and measures."""
    support.require(support.userns_works(), "unprivileged user namespaces unavailable")
    support.require(shutil.which("fuse-overlayfs") is not None, "fuse-overlayfs not installed")
    tmp_path.chmod(0o755)
    r = subprocess.run([sys.executable, str(Path(__file__).parent.parent / "benchmarks" / "fs.py"),
                        "--rounds", "1", "--scale", "0.002", "--dir", str(tmp_path), "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    med = json.loads(r.stdout)
    assert set(med) == {"plain", "raw-overlay", "overlay", "fuse-overlayfs", "fuse"}
    for figures in med.values():
        assert set(figures) == {"read", "write", "copy-up", "walk", "create"}
        assert all(v > 0 for v in figures.values())
    assert list(tmp_path.iterdir()) == []  # its data set is removed


@pytest.mark.parametrize("driver", ["fuse", "fuse-overlayfs"])
def test_kill_9_of_the_mounter_leaves_no_server(workdir: Path, driver: str) -> None:
    support.require(support.userns_works(), "unprivileged user namespaces unavailable")
    support.require(shutil.which("fuse-overlayfs") is not None, "fuse-overlayfs not installed")
    for d in ("l", "u", "w", "m"):
        (workdir / d).mkdir()
    proc = subprocess.Popen(
        ["unshare", "--map-root-user", "--mount", sys.executable, "-m", "fs", "mount",
         "--driver", driver, "--lower", str(workdir / "l"), "--upper", str(workdir / "u"),
         "--work", str(workdir / "w"), str(workdir / "m")],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(children) == 1  # the server
    server = int(children[0])
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while not _is_zombie(server) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _is_zombie(server), "the server outlived its mounter"  # (or init has yet to reap it)


@pytest.mark.parametrize("driver", DRIVERS)
def test_extracted_oci_layer_whiteouts_work_as_lower(agent: Agent, workdir: Path,
                                                     driver: str) -> None:
    """A layer tar's .wh. markers, converted, hide what they should in every driver."""
    base, top = workdir / "base", workdir / "top"
    (base / "etc").mkdir(parents=True)
    (base / "etc" / "passwd").write_text("root\n")
    (base / "etc" / "gone").write_text("x\n")
    (base / "opq").mkdir()
    (base / "opq" / "old").write_text("old\n")
    (top / "etc").mkdir(parents=True)
    (top / "etc" / ".wh.gone").write_text("")
    (top / "opq").mkdir()
    (top / "opq" / ".wh..wh..opq").write_text("")
    (top / "opq" / "new").write_text("new\n")
    assert agent.ok("convert", dir=str(top)) == 2
    for d in ("u", "w", "m"):
        (workdir / d).mkdir()
    m = str(workdir / "m")
    agent.ok("mount", driver=driver, lowers=[str(top), str(base)], upper=str(workdir / "u"),
             work=str(workdir / "w"), target=m)
    try:
        assert agent.fs(m, "listdir", "etc") == ["passwd"]
        assert agent.fs(m, "listdir", "opq") == ["new"]
    finally:
        agent.ok("unmount", target=m)


def test_truncating_open_is_seen_by_a_listing(pair: Pair) -> None:
    # Found by the sequence test: a listing's attributes, cached by the FUSE
    # overlay, still said 7 bytes after an open(O_TRUNC) emptied the file.
    for name in ("t-new", "t-twice"):
        pair.do("write", name, "abcdef", None)
        pair.check()
        pair.do("append", name, "z")
        pair.check()  # the listing caches size 7
        pair.do("write", name, "", None)  # open(O_WRONLY|O_CREAT|O_TRUNC)
        pair.check()


def test_a_created_file_is_in_the_next_listing(pair: Pair) -> None:
    # Found by the sequence test: the FUSE overlay's cached listing of a directory
    # it had listed before missed a file created in it with creat(2).
    pair.check()
    pair.do("write", "f", "", None)
    pair.check()
    pair.do("write", "n", "", None)
    pair.check()
