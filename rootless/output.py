"""What rl does when its own stdio is closed, full or a pipe nobody reads.

As Go programs (docker, podman) do: standard fds that are closed at start
become /dev/null, so a socket rl opens later can never be mistaken for its
stdout; a write to a pipe whose reader has gone ends rl quietly, by SIGPIPE,
as `cat` or `podman images | head -1` end; any other failed write to stdout
(ENOSPC, EIO, EBADF) is one `Error: write /dev/stdout: ...` line and 125.
Failing to write to stderr changes nothing: there is no one left to tell,
and the exit status stays the one the command earned.

Stdlib only and nothing costly: `rl run` imports it on its start path.
"""

from __future__ import annotations

import errno
import io
import os
import signal
import sys

TYPE_CHECKING = False  # not `import typing`: rl run's start path (see client.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

    from _typeshed import ReadableBuffer

EXIT_OUTPUT = 125  # rl's own error (errors.EXIT_RL; not imported: keep this module alone)
_NAMES = {1: "/dev/stdout", 2: "/dev/stderr"}


class OutputError(Exception):
    """A write to rl's own stdout failed. Not an OSError, so that no handler
    meant for a file rl works on takes it for one."""

    def __init__(self, fd: int, err: OSError, name: str = "") -> None:
        self.fd = fd
        self.errno = err.errno or errno.EIO
        text = os.strerror(self.errno)
        where = name or _NAMES.get(fd) or _fd_path(fd)
        super().__init__(f"write {where}: {text[:1].lower()}{text[1:]}")


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return f"fd {fd}"


def ensure_stdio() -> None:
    """Open /dev/null on any of fds 0-2 that is closed (Go's runtime does the same)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            got = os.open(os.devnull, os.O_RDWR)  # the lowest free fd: this one
            if got != fd:
                os.dup2(got, fd)
                os.close(got)
            os.set_inheritable(fd, True)  # a standard fd, as the children expect
    # Python left sys.stdin/stdout/stderr None for fds that were closed at start.
    if sys.stdin is None:
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    if sys.stdout is None:
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    if sys.stderr is None:
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace",  # noqa: SIM115
                          closefd=False)


class Sink(io.RawIOBase):
    """A raw writer on fd whose failed writes raise OutputError (strict) or are
    dropped (stderr). closefd: the fd is the Sink's own, closed with it;
    name: what the error calls it (default: /dev/stdout for 1, else its path)."""

    def __init__(self, fd: int, strict: bool = True, closefd: bool = False,
                 name: str = "") -> None:
        super().__init__()
        self._fd = fd
        self._strict = strict
        self._closefd = closefd
        self._name = name

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return os.isatty(self._fd)

    def write(self, b: ReadableBuffer, /) -> int:
        try:
            return os.write(self._fd, b)
        except OSError as e:
            if not self._strict:
                return len(memoryview(b))
            raise OutputError(self._fd, e, self._name) from None

    def close(self) -> None:
        if not self.closed and self._closefd:
            os.close(self._fd)
        super().close()


def install() -> None:
    """sys.stdout and sys.stderr through Sinks (same encoding and buffering as before)."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        old = getattr(sys, name)
        old.flush()
        new = io.TextIOWrapper(io.BufferedWriter(Sink(fd, strict=fd == 1)),
                               encoding=old.encoding,
                               errors=old.errors, line_buffering=old.line_buffering,
                               write_through=name == "stderr")
        setattr(sys, name, new)


def write_all(fd: int, data: bytes) -> None:
    """All of data on fd 1 or 2 (attach's container output), by the rules above."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except OSError as e:
            if fd == 2:
                return
            raise OutputError(fd, e) from None
        view = view[n:]


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\x1b": "\\e"}


def one_line(text: str) -> str:
    """text with what would break the line or drive the terminal (control characters,
    Unicode line separators) written out: an error is one line, whatever it quotes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\t" else _ESCAPES.get(c, f"\\x{ord(c):02x}"
                   if ord(c) < 0x100 else f"\\u{ord(c):04x}") for c in text)


def error_line(message: str) -> None:
    """`Error: message` on fd 2, if it can be written at all."""
    try:
        os.write(2, f"Error: {one_line(message)}\n".encode(errors="backslashreplace"))
    except OSError:
        pass


def reader_gone(fd: int = 1) -> bool:
    """fd is a pipe or socket whose reading end is closed (a write would be EPIPE)."""
    import select

    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null: what is still buffered for it then goes nowhere
    quietly, instead of failing once more when the interpreter flushes at exit."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
    except OSError:
        pass


def die_of_sigpipe() -> NoReturn:
    """End as a process killed by SIGPIPE (the shell's status 141), without a word."""
    _silence_stdout()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGPIPE)
    os._exit(128 + signal.SIGPIPE)  # not reached


def fail(e: OutputError) -> NoReturn:
    """rl's answer to a failed write of its stdout: quiet for EPIPE, else one line and 125."""
    if e.errno == errno.EPIPE:
        die_of_sigpipe()
    _silence_stdout()
    error_line(str(e))
    sys.exit(EXIT_OUTPUT)


def run_quick(work: Callable[[], None]) -> NoReturn:
    """A click-free command's end (entry.py's quick paths): its work, then exit 0; an
    RlError is its one `Error:` line and exit status, a failed stdout rl's usual end."""
    from .errors import RlError

    try:
        work()
        sys.stdout.flush()
    except RlError as e:
        sys.stderr.write(f"Error: {one_line(e.message)}\n")
        sys.exit(e.exit_code)
    except OutputError as e:
        fail(e)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0)
