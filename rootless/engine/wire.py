"""The framing spoken between rl clients and a container's supervisor.

One UNIX stream socket carries everything, so a client needs no second
channel: a frame is a 1-byte kind, a 4-byte big-endian length, then the
payload. Output and stdin frames carry raw bytes; control frames carry one
JSON object. Kept free of trio so the CLI can speak it with plain sockets.
"""

from __future__ import annotations

import json
import signal
import socket
import struct

TYPE_CHECKING = False  # not `import typing`: rl run's start path (see client.py)
if TYPE_CHECKING:
    from typing import Any

# The signals a client passes on to the container's process (docker's
# --sig-proxy set): `rl run`/`start -a`/`attach` as frames to the supervisor,
# `rl exec` through the exec'd process's parent, E1.
PROXIED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
           signal.SIGUSR2)

STDIN = 0
STDOUT = 1
STDERR = 2
CONTROL = 3  # JSON, both directions
STDIN_EOF = 4

HEADER = struct.Struct(">BI")
MAX_FRAME = 1 << 20


def frame(kind: int, payload: bytes) -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


def control(msg: dict[str, Any]) -> bytes:
    return frame(CONTROL, json.dumps(msg).encode())


class FrameReader:
    """Incremental decoder: feed bytes, take out whole frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out = []
        while len(self._buf) >= HEADER.size:
            kind, length = HEADER.unpack_from(self._buf)
            if length > MAX_FRAME:
                raise ValueError(f"frame of {length} bytes is too large")
            end = HEADER.size + length
            if len(self._buf) < end:
                break
            out.append((kind, bytes(self._buf[HEADER.size:end])))
            del self._buf[:end]
        return out


def request(sock: socket.socket, msg: dict[str, Any]) -> None:
    """The first thing a client sends: one JSON line saying what it wants."""
    sock.sendall(json.dumps(msg).encode() + b"\n")


def read_line(sock: socket.socket, limit: int = 65536) -> bytes:
    """Read one newline-terminated line byte by byte (nothing past it is consumed)."""
    buf = bytearray()
    while len(buf) < limit:
        b = sock.recv(1)
        if not b:
            break
        buf += b
        if b == b"\n":
            break
    return bytes(buf)
