"""Syscalls the overlay needs that Python 3.11's os module lacks (ctypes)."""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                            ctypes.c_uint]

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
RENAME_WHITEOUT = 4


def renameat2(olddirfd: int, old: bytes, newdirfd: int, new: bytes, flags: int = 0) -> None:
    if _libc.renameat2(olddirfd, old, newdirfd, new, flags) < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), os.fsdecode(old))
