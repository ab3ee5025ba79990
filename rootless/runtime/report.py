"""The report pipe: how a forked child tells its parent what became of it.

One line per event, written atomically (at most PIPE_BUF bytes): "U",
"F<pid>", "P<pid>" and "R" (waiting at the gate) while a container is made,
"E<code> <kind> <message>" on failure, kind being an errors.KINDS name, so
the parent raises the child's kind again and not only what its exit code
means. The pipe is close-on-exec, so EOF with no "E" line means the command
was executed. Used for the container's PID 1 (container.py) and for `rl exec`.
"""

from __future__ import annotations

import os
import select
from typing import BinaryIO, NoReturn

from ..errors import EXIT_RL, KINDS, RlError, kind_of, rebuild


def send(fd: int, line: str) -> None:
    line = line.replace("\n", " ")
    try:  # a name from argv or a file may hold undecodable bytes: they go as they came
        data = line.encode(errors="surrogateescape")
    except UnicodeEncodeError:
        data = line.encode(errors="backslashreplace")
    # One write of at most PIPE_BUF bytes is atomic: a longer message is cut,
    # not interleaved (a cut UTF-8 sequence is dropped, not half-written).
    limit = select.PIPE_BUF - 1
    if len(data) > limit:
        data = data[:limit].decode(errors="ignore").encode()
    os.write(fd, data + b"\n")


def fail(fd: int, code: int, msg: str, kind: str = "") -> NoReturn:
    """Report the failure and leave the (forked) process at once.

    kind: the error's kind name; by default the kind the code means (errors.rebuild).
    """
    try:
        send(fd, f"E{code} {kind if kind in KINDS else kind_of(rebuild(msg, code))} {msg}")
    finally:
        os._exit(code)


def fail_error(fd: int, err: RlError) -> NoReturn:
    """fail() with an RlError's code, kind and message."""
    fail(fd, err.exit_code, err.message, kind_of(err))


def fail_with(fd: int, exc: BaseException, context: str = "") -> NoReturn:
    """fail() with the exit code, kind and one-line message an exception stands for."""
    prefix = f"{context}: " if context else ""
    if isinstance(exc, RlError):
        fail_error(fd, exc)
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        fail(fd, EXIT_RL, f"{prefix}{exc.strerror or exc}{where}")
    fail(fd, EXIT_RL, prefix + _exception_line(exc))


def _exception_line(exc: BaseException) -> str:
    """traceback.format_exception_only's last line, without traceback: it costs
    rl-oci's create ~2 ms, and PID 1 may fail past pivot_root, where an import
    would read the container's files."""
    t = type(exc)
    name = t.__qualname__
    if t.__module__ not in ("__main__", "builtins"):
        name = f"{t.__module__}.{name}"
    text = str(exc)
    return f"{name}: {text}" if text else name


def read_line(f: BinaryIO) -> str:
    """The next report line ("" at EOF)."""
    return f.readline().decode(errors="replace").rstrip("\n")


def parse_error(line: str) -> RlError:
    """The RlError an "E" line reports: of the kind it names.

    A line without a kind name ("E<code> <message>", rl's format before
    kinds) means the kind its code means, as it always did.
    """
    code, _, rest = line[1:].partition(" ")
    kind, _, msg = rest.partition(" ")
    if kind not in KINDS:
        kind, msg = "", rest
    return rebuild(msg, int(code) if code.isdigit() else EXIT_RL, kind)


def raise_error(line: str) -> NoReturn:
    """Raise the RlError an "E<code> <kind> <message>" line reports."""
    raise parse_error(line)
