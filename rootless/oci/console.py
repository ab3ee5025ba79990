"""The terminal of an OCI container: the pty master over --console-socket, as runc.

The caller (conmon, podman, a test) listens on a unix socket; the runtime
connects and sends one message whose ancillary data holds the master's fd
(SCM_RIGHTS) and whose bytes name the terminal, then closes. Without a
socket (`run` in the foreground) rl-oci relays the master to its own stdio.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import selectors
import socket
import stat
import sys
import termios
import tty

from ..errors import InvalidArgument

_TIOCGPTN = 0x80045430  # the pty's number (Python's termios lacks it)


def connect(path: str) -> socket.socket:
    """A connection to the console socket; InvalidArgument if it is not one."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise InvalidArgument(f"console socket {path}: {e.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise InvalidArgument(f"console socket {path} is not a socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError as e:
        sock.close()
        raise InvalidArgument(f"console socket {path}: {e.strerror}") from None
    return sock


def send(sock: socket.socket, master: int) -> None:
    # The bytes name the terminal, as runc's do (conmon reads only the fd).
    try:
        n = int.from_bytes(fcntl.ioctl(master, _TIOCGPTN, b"\0" * 4), sys.byteorder)
        name = f"/dev/pts/{n}"
    except OSError:
        name = "/dev/ptmx"
    socket.send_fds(sock, [name.encode()], [master])


def _copy_size(src: int, dst: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(dst, termios.TIOCSWINSZ, fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8))


def relay(master: int, pidfd: int) -> None:
    """Copy stdin to the master and the master to stdout until the terminal
    closes (the container's processes are gone) or the process exits."""
    raw = os.isatty(0)
    saved = termios.tcgetattr(0) if raw else None
    if raw:
        _copy_size(0, master)
        tty.setraw(0)
    sel = selectors.DefaultSelector()
    sel.register(master, selectors.EVENT_READ)
    sel.register(pidfd, selectors.EVENT_READ)
    stdin_open = True
    try:
        sel.register(0, selectors.EVENT_READ)
    except (ValueError, OSError):
        stdin_open = False
    exited = False
    try:
        while True:
            events = sel.select(0.1 if exited else None)
            if not events and exited:
                return  # exited and nothing more to read
            for key, _ in events:
                if key.fd == pidfd:
                    exited = True
                    sel.unregister(pidfd)
                elif key.fd == master:
                    try:
                        data = os.read(master, 65536)
                    except OSError as e:
                        if e.errno == errno.EIO:
                            return
                        raise
                    if not data:
                        return
                    os.write(1, data)
                elif stdin_open:
                    data = os.read(0, 65536)
                    if not data:
                        sel.unregister(0)
                        stdin_open = False
                        continue
                    os.write(master, data)
    finally:
        sel.close()
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        os.close(master)
