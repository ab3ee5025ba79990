"""The create/start gate: a FIFO in the container's state directory.

`create` makes the container up to the last instruction before its command;
its PID 1 then waits at the gate, and `start` (any process of the user, the
creator long gone or not) opens it. runc's exec.fifo has PID 1 block in
open(O_WRONLY) until start opens it for reading; here PID 1 holds the FIFO
open read-write (which never blocks, and keeps it a reader) and blocks in
read(), start writes one byte. So:

- PID 1 gets its descriptor from the creator before it is forked: it never
  opens a host path itself, least of all after pivot_root or once it has
  dropped to the command's user (runc reopens /proc/self/fd/N there, and
  must make its FIFO writable by others for a non-root user);
- a start that comes early is not lost: the byte waits in the FIFO;
- nothing waits at a FIFO without a reader, so start's
  open(O_WRONLY|O_NONBLOCK) fails with ENXIO exactly when PID 1 (and the
  creator's copy) is gone: a container killed at its gate is reported, not
  started, and its gate removed;
- start unlinks the FIFO before it writes: of two starts one wins.

The descriptor is close-on-exec and every fd above 2 is marked so before
the exec (process.execute): the command never holds it. The FIFO lives in
the state directory, outside the container's root.
"""

from __future__ import annotations

import errno
import os
import stat

from ..errors import Conflict, NotRunning, RlError

NAME = "exec.fifo"


def path(state_dir: str) -> str:
    return os.path.join(state_dir, NAME)


def make(state_dir: str) -> int:
    """A new gate in state_dir; the read-write descriptor PID 1 waits on (close-on-exec).

    A gate left by a creator killed before its start is replaced.
    """
    fifo = path(state_dir)
    try:
        os.unlink(fifo)
    except FileNotFoundError:
        pass
    os.mkfifo(fifo, 0o600)
    fd = os.open(fifo, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):  # replaced meanwhile
        os.close(fd)
        raise RlError(f"the container's gate {fifo} is not a FIFO")
    return fd


def wait(fd: int) -> None:
    """Block until start opens the gate (in PID 1, right before the exec)."""
    if os.read(fd, 1) != b"\0":
        raise RlError("the container's gate was opened with a wrong byte")
    os.close(fd)


def release(state_dir: str) -> None:
    """Let the container that waits at state_dir's gate exec its command.

    NotRunning if nothing waits there (its PID 1 died: the dead gate is
    removed); Conflict if it was started already (or never created).
    """
    fifo = path(state_dir)
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise Conflict("the container is not waiting to start: it has no gate "
                       "(started already, or never created)") from None
    except OSError as e:
        if e.errno != errno.ENXIO:
            raise RlError(f"opening the container's gate {fifo}: {e.strerror}") from None
        # No reader: PID 1 and its creator are gone, nobody will wait here again.
        try:
            os.unlink(fifo)
        except FileNotFoundError:
            pass
        raise NotRunning("the container is not waiting to start: its process "
                         "died before it was started") from None
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            raise RlError(f"the container's gate {fifo} is not a FIFO")
        try:
            os.unlink(fifo)
        except FileNotFoundError:
            raise Conflict("the container is not waiting to start: another start "
                           "released it") from None
        os.write(fd, b"\0")
    finally:
        os.close(fd)


def remove(state_dir: str) -> None:
    """Remove a gate nothing will open (the creation failed)."""
    try:
        os.unlink(path(state_dir))
    except FileNotFoundError:
        pass
