"""Copying file data the way copy-up needs it: in the kernel, keeping holes."""

from __future__ import annotations

import errno
import os

_CHUNK = 1 << 30


def copy_sparse(src: int, dst: int, size: int) -> None:
    """Copy *size* bytes between open fds; holes stay holes (big files are often sparse)."""
    off = 0
    while off < size:
        try:
            data = os.lseek(src, off, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole is left
                break
            raise
        hole = os.lseek(src, data, os.SEEK_HOLE)
        _copy_range(src, dst, data, hole - data)
        off = hole
    os.ftruncate(dst, size)


def _copy_range(src: int, dst: int, off: int, count: int) -> None:
    while count > 0:
        try:
            n = os.copy_file_range(src, dst, min(count, _CHUNK), off, off)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            os.lseek(dst, off, os.SEEK_SET)
            n = os.sendfile(dst, src, off, min(count, _CHUNK))
        if n == 0:
            raise OSError(errno.EIO, "copy: the source file shrank")
        off += n
        count -= n
