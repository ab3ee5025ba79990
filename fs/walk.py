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

import contextlib
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
    allow_deep_trees()
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


def allow_deep_trees() -> None:
    """One fd per level (two in fs.drivers.apply_layer): a tree at PATH_MAX depth
    needs thousands at once, past the usual soft limit of 1,024 (the walkers
    are short-lived helpers)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < min(hard, 8192):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))


def remove(name: str, dir_fd: int | None = None) -> None:
    """``rm -rf name`` (relative to *dir_fd*), without recursion and without
    following a symlink: safe on a tree at PATH_MAX depth or one a container
    is changing. Directories that deny us write access are chmodded first
    (ours, or root's in the user namespace)."""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    allow_deep_trees()
    # (fd of a directory being emptied, its name, the fd of its parent)
    try:
        stack = [(_open_to_empty(name, dir_fd), name, dir_fd)]
    except FileNotFoundError:
        return
    try:
        while stack:
            dfd, dname, pfd = stack[-1]
            sub = None
            with os.scandir(dfd) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        sub = entry.name
                        break
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.name, dir_fd=dfd)
            if sub is not None:
                try:
                    stack.append((_open_to_empty(sub, dfd), sub, dfd))
                except FileNotFoundError:
                    pass  # a concurrent remover was faster
                continue
            os.close(dfd)
            stack.pop()
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(dname, dir_fd=pfd)
    finally:
        for dfd, _, _ in stack:
            os.close(dfd)


def _open_to_empty(name: str, dir_fd: int | None) -> int:
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:  # mode 000 (overlayfs leaves work/work so)
        os.chmod(name, 0o700, dir_fd=dir_fd)
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    if os.fstat(fd).st_mode & 0o300 != 0o300:
        try:
            os.fchmod(fd, 0o700)
        except OSError:
            pass  # not ours: the unlinks will say why
    return fd
