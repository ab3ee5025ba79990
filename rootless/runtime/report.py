"""The report pipe: how a forked child tells its parent what became of it.

One line per event, written atomically (well under PIPE_BUF): "U", "F<pid>",
"P<pid>" and "R" (waiting at the gate) while a container is made,
"E<code> <message>" on failure. The pipe is close-on-exec, so EOF with no
"E" line means the command was executed. Used for the container's PID 1
(container.py) and for `rl exec`.
"""

from __future__ import annotations

import os
import traceback
from typing import BinaryIO, NoReturn

from ..errors import EXIT_RL, RlError, rebuild


def send(fd: int, line: str) -> None:
    os.write(fd, (line.replace("\n", " ") + "\n").encode())


def fail(fd: int, code: int, msg: str) -> NoReturn:
    """Report the failure and leave the (forked) process at once."""
    try:
        send(fd, f"E{code} {msg}")
    finally:
        os._exit(code)


def fail_with(fd: int, exc: BaseException, context: str = "") -> NoReturn:
    """fail() with the exit code and one-line message an exception stands for."""
    prefix = f"{context}: " if context else ""
    if isinstance(exc, RlError):
        fail(fd, exc.exit_code, exc.message)
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        fail(fd, EXIT_RL, f"{prefix}{exc.strerror or exc}{where}")
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    fail(fd, EXIT_RL, prefix + last)


def read_line(f: BinaryIO) -> str:
    """The next report line ("" at EOF)."""
    return f.readline().decode(errors="replace").rstrip("\n")


def raise_error(line: str) -> NoReturn:
    """Raise the RlError an "E<code> <message>" line reports, of the kind its code means."""
    code, _, msg = line[1:].partition(" ")
    raise rebuild(msg, int(code) if code.isdigit() else EXIT_RL)
