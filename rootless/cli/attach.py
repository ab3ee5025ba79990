"""The terminal side of an attached container: rl's stdio <-> the supervisor's socket.

A selectors loop, no threads, no trio: stdin becomes STDIN frames, output
frames go to fd 1 and 2 with blocking writes (never set O_NONBLOCK on a file
description the user's shell shares), signals rl receives are proxied to the
container, and SIGWINCH becomes a resize.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import termios
import tty as ttymod

from .. import output
from ..engine import wire

TYPE_CHECKING = False  # not `import typing`: rl run's start path (see client.py)

if TYPE_CHECKING:
    from ..engine.client import Session

PROXIED = wire.PROXIED
DETACHED = -1  # run()'s answer when the user typed the detach keys
DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
# docker's names for the control characters a detach sequence may hold
_CTRL = {**{f"ctrl-{chr(c)}": c - 96 for c in range(ord("a"), ord("z") + 1)},
         "ctrl-@": 0, "ctrl-[": 27, "ctrl-\\": 28, "ctrl-]": 29, "ctrl-^": 30, "ctrl-_": 31}


def parse_detach_keys(keys: str) -> bytes:
    """docker's --detach-keys: comma-separated single characters or `ctrl-X`s."""
    from ..errors import InvalidArgument

    out = bytearray()
    for key in keys.split(","):
        if len(key) == 1:
            out += key.encode()
        elif key.lower() in _CTRL:
            out.append(_CTRL[key.lower()])
        else:
            raise InvalidArgument(f"Invalid detach keys ({keys}) provided: "
                                  f"Unknown character: '{key}'")
    return bytes(out)


def default_detach_keys(tty: bool, stdin: bool) -> bytes:
    """`run -it` and `start -ai`: docker's ctrl-p,ctrl-q on a terminal. Not on a pipe,
    whose bytes are data (a binary stream may hold the sequence)."""
    return b"\x10\x11" if tty and stdin else b""


class Escape:
    """docker's escape proxy on stdin: bytes that could begin the detach sequence
    are held back; the whole sequence detaches, anything else lets them through."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(what to send on, whether the sequence is complete)."""
        if not self.keys:
            return data, False
        out = bytearray()
        for b in data:
            self.held += bytes([b])
            if self.keys.startswith(self.held):
                if self.held == self.keys:
                    return bytes(out), True
                continue
            out += self.held
            self.held = b""
        return bytes(out), False


def terminal_size() -> tuple[int, int] | None:
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(fd)
            return size.lines, size.columns
    return None


def _write_all(fd: int, data: bytes) -> None:
    # A failed write to stdout raises output.OutputError: the caller leaves
    # (quietly for EPIPE) and the container goes on, as after a kill of rl.
    output.write_all(fd, data)


def watch_stdin(sel: selectors.BaseSelector, data: object = None) -> bool:
    """Register fd 0 for reading; False where it cannot be polled.

    epoll refuses a regular file or /dev/null (EPERM), which a plain read never
    waits on: the caller reads those directly instead.
    """
    try:
        sel.register(0, selectors.EVENT_READ, data)
    except OSError:
        return False
    return True


def _deliver(frames: list[tuple[int, bytes]]) -> int | None:
    """Write output frames; the exit code if one of them is the exit event."""
    for kind, payload in frames:
        if kind in (wire.STDOUT, wire.STDERR):
            _write_all(kind, payload)
        elif kind == wire.CONTROL:
            event = json.loads(payload)
            if event.get("event") == "exit":
                return int(event["exit_code"])
    return None


class _Detach(Exception):
    pass


def _send_stdin(sock: socket.socket, escape: Escape | None = None) -> bool:
    """One read of rl's stdin to the supervisor; False at its end."""
    try:
        data = os.read(0, 65536)
    except BlockingIOError:  # made non-blocking by whoever shares it
        return True
    except OSError:
        data = b""
    if escape is not None and data:
        data, detach = escape.feed(data)
        if detach:
            # What was typed before the sequence still goes (docker's escape proxy).
            with contextlib.suppress(OSError):
                if data:
                    sock.sendall(wire.frame(wire.STDIN, data))
            raise _Detach
        if not data:
            return True
    try:
        sock.sendall(wire.frame(wire.STDIN, data) if data else wire.frame(wire.STDIN_EOF, b""))
    except OSError:  # the supervisor is leaving: its exit event (or EOF) follows
        return False
    return bool(data)


def run(session: Session, tty: bool, stdin: bool, detach_keys: bytes = b"",
        sig_proxy: bool = True) -> int | None:
    """Pump until the container exits; its exit code, or None if the supervisor vanished,
    or DETACHED once the user typed detach_keys (empty: none)."""
    try:
        return _run(session, tty, stdin, Escape(detach_keys) if detach_keys else None,
                    sig_proxy)
    except _Detach:
        # The container's stdin stays open for the next attacher (docker's).
        with contextlib.suppress(OSError):
            session.sock.sendall(wire.control({"op": "detach"}))
        return DETACHED


def _run(session: Session, tty: bool, stdin: bool, escape: Escape | None,
         sig_proxy: bool) -> int | None:
    sock = session.sock
    sel = selectors.DefaultSelector()
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    old_wakeup = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    pending: list[int] = []  # signal numbers, handled in the loop
    old_handlers = {}
    watched = [*PROXIED, signal.SIGWINCH] if tty else list(PROXIED)
    if not sig_proxy:
        watched = [signal.SIGWINCH] if tty else []
    for sig in watched:
        old_handlers[sig] = signal.signal(sig, lambda s, _f: pending.append(s))
    saved_tc = None
    if tty and stdin and os.isatty(0):
        saved_tc = termios.tcgetattr(0)
        ttymod.setraw(0)
    if tty:
        size = terminal_size()
        if size:
            sock.sendall(wire.control({"op": "resize", "rows": size[0], "cols": size[1]}))
    sel.register(sock, selectors.EVENT_READ, "sock")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    # stdin that cannot be polled is read in the loop between two looks at the
    # rest, which then never waits.
    read_stdin = stdin and not watch_stdin(sel, "stdin")
    reader = session.reader
    try:
        # Output that came with "started" is shown only now that the signal
        # handlers are in place: a caller that reacts to it (a signal right
        # after the first line) must reach the container, not kill rl.
        code = _deliver(session.pending)
        if code is not None:
            return code
        while True:
            if read_stdin:
                read_stdin = _send_stdin(sock, escape)
            for key, _ in sel.select(0 if read_stdin else None):
                if key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        wake_r.recv(4096)
                    while pending:
                        signum = pending.pop(0)
                        if signum == signal.SIGWINCH:
                            size = terminal_size()
                            if size:
                                sock.sendall(wire.control(
                                    {"op": "resize", "rows": size[0], "cols": size[1]}))
                        else:
                            sock.sendall(wire.control({"op": "signal", "signal": signum}))
                elif key.data == "stdin":
                    if not _send_stdin(sock, escape):
                        sel.unregister(0)
                else:
                    try:
                        data = sock.recv(65536)
                    except OSError:  # ECONNRESET: it left with our stdin unread
                        data = b""
                    if not data:
                        return None
                    code = _deliver(reader.feed(data))
                    if code is not None:
                        return code
    finally:
        if saved_tc is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved_tc)
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(old_wakeup)
        sel.close()
        wake_r.close()
        wake_w.close()
