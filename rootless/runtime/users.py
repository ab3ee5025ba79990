"""Resolve `-u user[:group]` against the container's own /etc/passwd and /etc/group.

Called inside the container (after pivot_root for PID 1, after setns for
`rl exec`), with every capability and before seccomp, on files a process of
the container may have replaced by anything: see read_account_file.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

from .. import syscalls as sc
from ..errors import EXIT_CANNOT_EXEC, CannotExecute, RlError

# Far above any real account file (a 100k-user passwd is ~6 MiB); only a bound
# on what a container can make rl read into memory.
MAX_ACCOUNT_FILE = 32 << 20


@dataclass
class ResolvedUser:
    uid: int
    gid: int
    home: str = "/"
    additional_gids: list[int] = field(default_factory=list)


def _unreadable(path: str, why: str) -> RlError:
    return CannotExecute(f"unable to read {path} of the container: {why}", EXIT_CANNOT_EXEC)


def _open_in_root(path: str) -> int:
    """Open path for reading as the container's own file: resolved inside this
    process's root (absolute symlinks and ".." included) and through no /proc
    magic link, which could reach a descriptor or root of another process
    (`rl exec`'s own stdio before it execs); O_NONBLOCK: a FIFO does not block
    the open; O_NOCTTY: a tty does not become ours."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return sc.openat2(root, path.lstrip("/"), flags,
                          sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS)
    except OSError as e:
        if e.errno not in (errno.ENOSYS, errno.EPERM):  # not a sandbox without openat2
            raise
        return os.open(path, flags)  # the regular-file check below still holds
    finally:
        os.close(root)


def read_account_file(path: str) -> str | None:
    """The text of the container's account file at path, None if there is none.

    Only a regular file of at most MAX_ACCOUNT_FILE bytes is read: the reads
    of a FIFO, a socket or a device could block or never end, with
    `rl exec` (or the container's start) waiting on them.
    """
    try:
        fd = _open_in_root(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise _unreadable(path, os.strerror(e.errno or 0)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _unreadable(path, "not a regular file")
        # /proc/self/environ & co. are regular files and no magic links: in
        # rl exec's joining process they would be the CLI's own.
        if sc.fs_type(fd) in (sc.PROC_SUPER_MAGIC, sc.SYSFS_MAGIC):
            raise _unreadable(path, "a file of /proc or /sys")
        chunks = []
        size = 0
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
            if size > MAX_ACCOUNT_FILE:
                raise _unreadable(path, f"larger than {MAX_ACCOUNT_FILE >> 20} MiB")
            chunks.append(chunk)
    except OSError as e:
        raise _unreadable(path, os.strerror(e.errno or 0)) from None
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def _read_db(path: str) -> list[list[str]]:
    text = read_account_file(path) or ""
    return [line.split(":") for line in text.split("\n") if line.strip()
            and not line.startswith("#")]


def resolve(spec: str, passwd: str = "/etc/passwd", group: str = "/etc/group") -> ResolvedUser:
    """docker's rules: numeric ids need no passwd entry; names must exist."""
    user_part, _, group_part = spec.partition(":")
    users = [e for e in _read_db(passwd) if len(e) >= 7]
    groups = [e for e in _read_db(group) if len(e) >= 3]
    user_part = user_part or "0"

    entry = None
    if user_part.isdigit():
        uid = int(user_part)
        entry = next((e for e in users if e[2] == user_part), None)
    else:
        entry = next((e for e in users if e[0] == user_part), None)
        if entry is None:
            raise CannotExecute(
                f"unable to find user {user_part}: no matching entries in passwd file",
                EXIT_CANNOT_EXEC,
            )
        uid = int(entry[2])
    gid = int(entry[3]) if entry else 0
    home = entry[5] if entry else "/"

    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            g = next((e for e in groups if e[0] == group_part), None)
            if g is None:
                raise CannotExecute(
                    f"unable to find group {group_part}: no matching entries in group file",
                    EXIT_CANNOT_EXEC,
                )
            gid = int(g[2])

    extra: list[int] = []
    if entry is not None and not group_part:
        name = entry[0]
        for g in groups:
            members = g[3].split(",") if len(g) > 3 and g[3] else []
            if name in members and g[2].isdigit() and int(g[2]) != gid:
                extra.append(int(g[2]))
    return ResolvedUser(uid, gid, home, extra)
