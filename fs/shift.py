"""A tree's owners moved to other ids, in place (keep-id's copy of an image's layers).

Run inside a user namespace that maps both the old and the new ids. Each inode is
changed once (hard links share it), symlinks included (lchown), and what a chown
takes away is put back: the set-id bits (the kernel clears them for root too) and a
file capability (security.capability is removed on every chown).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

from . import walk

_CAPS = "security.capability"


def shift_tree(root: str, uid_of: Callable[[int], int], gid_of: Callable[[int], int]) -> int:
    """Every entry of root, root included, owned by uid_of(uid):gid_of(gid); returns
    the bytes of the regular files (for the caller's figures)."""
    size = 0
    seen: set[int] = set()
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        _shift(top, None, os.fstat(top), uid_of, gid_of)
    finally:
        os.close(top)
    for e in walk.walk(root):
        if e.st.st_ino in seen:
            continue
        if e.st.st_nlink > 1:
            seen.add(e.st.st_ino)
        if stat.S_ISREG(e.st.st_mode):
            size += e.st.st_size
        _shift(e.dir_fd, e.name, e.st, uid_of, gid_of)
    return size


def _shift(dir_fd: int, name: str | None, st: os.stat_result,
           uid_of: Callable[[int], int], gid_of: Callable[[int], int]) -> None:
    uid, gid = uid_of(st.st_uid), gid_of(st.st_gid)
    if (uid, gid) == (st.st_uid, st.st_gid):
        return
    link = stat.S_ISLNK(st.st_mode)
    caps = None
    if stat.S_ISREG(st.st_mode):
        path = f"/proc/self/fd/{dir_fd}/{name}" if name is not None else f"/proc/self/fd/{dir_fd}"
        try:
            caps = os.getxattr(path, _CAPS, follow_symlinks=False)
        except OSError:
            caps = None
    if name is None:
        os.fchown(dir_fd, uid, gid)
    else:
        os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
    if link:
        return
    if st.st_mode & (stat.S_ISUID | stat.S_ISGID):
        if name is None:
            os.fchmod(dir_fd, stat.S_IMODE(st.st_mode))
        else:
            os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dir_fd)
    if caps is not None:
        try:
            os.setxattr(path, _CAPS, caps, follow_symlinks=False)
        except OSError:
            pass  # a v2 capability this namespace cannot write: the binary loses it
