"""Walking a tree a container may be changing while we read it.

`rl export`, `rl commit` and `rl diff` read a container's files from outside
it, possibly while it runs. Walking by path would let the container swap a
directory for a symlink between our check and our use, and make us read the
user's own files into an image. So the walk holds a directory fd per level
and reaches every entry relative to it with O_NOFOLLOW: a symlink is only
ever read as a link, and a directory replaced mid-walk is skipped.

Entries come parents first, names sorted (tars are reproducible); the walk
is iterative, so a tree at PATH_MAX depth costs one fd per level, not a
Python stack frame.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Entry:
    rel: str  # the path below the root, without a leading "/"
    st: os.stat_result
    dir_fd: int  # the directory holding it; valid until the walk moves on
    name: str

    def open(self) -> int:
        """The regular file itself, for reading (never a file swapped in meanwhile)."""
        fd = os.open(self.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=self.dir_fd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_ino != self.st.st_ino:
            os.close(fd)
            raise OSError(errno.ESTALE, "changed while being read", self.rel)
        return fd

    def readlink(self) -> str:
        return os.readlink(self.name, dir_fd=self.dir_fd)

    def xattrs(self) -> dict[str, bytes]:
        """Its extended attributes (a symlink can carry none a user may set)."""
        if stat.S_ISLNK(self.st.st_mode):
            return {}
        try:
            fd = os.open(self.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.dir_fd)
        except OSError:
            return {}
        try:
            path = f"/proc/self/fd/{fd}"  # the opened inode itself, not a path lookup
            out = {}
            for attr in os.listxattr(path):
                try:
                    out[attr] = os.getxattr(path, attr)
                except OSError:
                    continue
            return out
        except OSError:
            return {}
        finally:
            os.close(fd)


def walk(root: str) -> Iterator[Entry]:
    """Every entry below *root* (not root itself), depth first, parents first."""
    top = os.open(root, _DIR_FLAGS)
    # (dir fd, rel of that dir, names left to visit)
    stack: list[tuple[int, str, list[str]]] = [(top, "", sorted(os.listdir(top), reverse=True))]
    try:
        while stack:
            dfd, rel, names = stack[-1]
            if not names:
                os.close(dfd)
                stack.pop()
                continue
            name = names.pop()
            try:
                st = os.lstat(name, dir_fd=dfd)
            except FileNotFoundError:
                continue  # removed meanwhile
            sub_rel = f"{rel}/{name}" if rel else name
            yield Entry(sub_rel, st, dfd, name)
            if not stat.S_ISDIR(st.st_mode):
                continue
            try:
                sub = os.open(name, _DIR_FLAGS, dir_fd=dfd)
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    continue  # replaced meanwhile (by a symlink, say): not ours to follow
                raise
            if os.fstat(sub).st_ino != st.st_ino:
                os.close(sub)
                continue
            stack.append((sub, sub_rel, sorted(os.listdir(sub), reverse=True)))
    finally:
        for dfd, _, _ in stack:
            os.close(dfd)
