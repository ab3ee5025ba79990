"""rl's own port driver: the supervisor accepts on the host, the connector connects in the
container, and the supervisor moves the bytes between the two sockets with splice(2).

Each direction owns a pipe: socket -> pipe -> socket, with no copy through user
space. The container sees connections coming from its own loopback
(127.0.0.1), not from the client: see docs/decisions.md ("the fast port
driver and the source address") for why the source cannot be kept here.

UDP: one container-side socket per client address, dropped after
UDP_IDLE seconds of silence, as docker-proxy does.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import struct
from typing import Any

import trio

from . import connector as connector_mod
from .ports import PortMapping

PIPE_SIZE = 1 << 20
CHUNK = 1 << 20
UDP_IDLE = 60.0
F_SETPIPE_SZ = 1031
SPLICE_FLAGS = 0x1 | 0x2  # SPLICE_F_MOVE | SPLICE_F_NONBLOCK


class Connector:
    """The supervisor's side of the connector channel: one request at a time."""

    POOL_SIZE = 64

    def __init__(self, chan: socket.socket, loopback_as: str = "") -> None:
        chan.setblocking(False)
        self._chan = chan
        self._lock = trio.Lock()
        self._loopback_as = loopback_as
        self._keep_source: bool | None = None  # from the helper's "ready" message
        self._pool: list[socket.socket] = []

    async def _recv(self) -> tuple[bytes, list[int]]:
        while True:
            await trio.lowlevel.wait_readable(self._chan)
            try:
                msg, fds, _, _ = socket.recv_fds(self._chan, 64, 253)
                return msg, fds
            except BlockingIOError:
                continue

    async def _request(self, text: str) -> tuple[bytes, list[int]]:
        """One request and its answer (the caller holds the lock)."""
        if self._keep_source is None:
            msg, _ = await self._recv()
            if not msg.startswith(b"ready"):
                raise ConnectionError("the connector is gone")
            self._keep_source = msg == b"ready 1"
        await trio.lowlevel.wait_writable(self._chan)
        self._chan.send(text.encode())
        return await self._recv()

    async def connect(self, proto: str, port: int, peer: Any) -> socket.socket:
        """A socket connected inside the container, made by the helper."""
        async with self._lock:
            msg, fds = await self._request(f"{proto} {port} {peer[0]} {peer[1]}")
        if fds:
            return socket.socket(fileno=fds[0])
        if not msg:
            raise ConnectionError("the connector is gone")
        err = int(msg[1:]) if msg[1:].isdigit() else errno.EIO
        raise OSError(err, os.strerror(err))

    async def _fresh(self) -> socket.socket:
        if not self._pool:
            async with self._lock:
                if not self._pool:
                    _, fds = await self._request(f"pool {self.POOL_SIZE}")
                    if not fds:
                        raise ConnectionError("the connector is gone")
                    self._pool = [socket.socket(fileno=fd) for fd in fds]
        return self._pool.pop()

    async def connect_tcp(self, port: int, peer: Any) -> socket.socket:
        """Connect a pooled socket of the container's netns: to FORWARD_ADDR from the
        client's address (see connector.py), else to 127.0.0.1, else via the helper."""
        s = await self._fresh()
        src = connector_mod.source(peer[0], self._loopback_as) if self._keep_source else None
        targets = ([connector_mod.FORWARD_ADDR] if src else []) + ["127.0.0.1"]
        for target in targets:
            s.setblocking(False)
            try:
                if target == connector_mod.FORWARD_ADDR and src is not None:
                    try:
                        s.bind((src, peer[1]))
                    except OSError:
                        s.bind((src, 0))  # that port is taken there: keep the address only
                try:
                    s.connect((target, port))
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(s)
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, os.strerror(err)) from None
                return s
            except OSError:
                s.close()
                s = await self._fresh()
        s.close()
        return await self.connect("tcp", port, peer)


_PIPES: list[tuple[int, int]] = []  # empty pipes, kept for the next connection
PIPE_POOL = 64


def _pipe() -> tuple[int, int]:
    if _PIPES:
        return _PIPES.pop()
    r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    with contextlib.suppress(OSError):
        fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
    return r, w


async def _splice_one_way(src: socket.socket, dst: socket.socket,
                          both: trio.CancelScope) -> None:
    """Move bytes src -> dst until EOF, then half-close dst; a reset ends both ways."""
    pr, pw = _pipe()
    clean = False
    try:
        while True:
            try:
                n = os.splice(src.fileno(), pw, CHUNK, flags=SPLICE_FLAGS)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(src)
                continue
            if n == 0:
                break
            # Drain the pipe before reading again, so it never holds stale bytes.
            while n:
                try:
                    n -= os.splice(pr, dst.fileno(), n, flags=SPLICE_FLAGS)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(dst)
        clean = True  # EOF with the pipe drained: it can serve again
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
    except OSError:
        both.cancel()  # ECONNRESET, EPIPE: the connection is over, both ways
    finally:
        if clean and len(_PIPES) < PIPE_POOL:
            _PIPES.append((pr, pw))
        else:
            os.close(pr)
            os.close(pw)


async def _relay(a: socket.socket, b: socket.socket) -> None:
    try:
        async with trio.open_nursery() as n:
            n.start_soon(_splice_one_way, a, b, n.cancel_scope)
            n.start_soon(_splice_one_way, b, a, n.cancel_scope)
    finally:
        # The kernel holds the fds while trio waits on them: tell it first.
        for s in (a, b):
            trio.lowlevel.notify_closing(s)
            s.close()


async def _handle_tcp(conn: socket.socket, peer: Any, m: PortMapping,
                      connector: Connector) -> None:
    try:
        inner = await connector.connect_tcp(m.container_port, peer)
    except OSError:
        # Nobody listens in the container: refuse the client (RST), never hang it.
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        return
    inner.setblocking(False)
    for s in (conn, inner):
        with contextlib.suppress(OSError):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await _relay(conn, inner)


async def serve_tcp(listener: socket.socket, m: PortMapping, connector: Connector) -> None:
    listener.setblocking(False)
    async with trio.open_nursery() as nursery:
        while True:
            await trio.lowlevel.wait_readable(listener)
            while True:
                try:
                    conn, peer = listener.accept()
                except BlockingIOError:
                    break
                except OSError as e:
                    if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        await trio.sleep(0.05)
                    break
                conn.setblocking(False)
                nursery.start_soon(_handle_tcp, conn, peer, m, connector)


async def serve_udp(host: socket.socket, m: PortMapping, connector: Connector) -> None:
    host.setblocking(False)
    flows: dict[Any, tuple[socket.socket, trio.CancelScope]] = {}

    async def back(peer: Any, inner: socket.socket, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                with trio.move_on_after(UDP_IDLE) as idle:
                    await trio.lowlevel.wait_readable(inner)
                if idle.cancelled_caught:
                    break
                try:
                    data = inner.recv(65535)
                    host.sendto(data, peer)
                except OSError:
                    continue  # ICMP port unreachable and friends: drop, as UDP does
        flows.pop(peer, None)
        inner.close()

    async with trio.open_nursery() as nursery:
        while True:
            await trio.lowlevel.wait_readable(host)
            try:
                data, peer = host.recvfrom(65535)
            except OSError:
                continue
            flow = flows.get(peer)
            if flow is None:
                try:
                    inner = await connector.connect("udp", m.container_port, peer)
                except OSError:
                    continue
                inner.setblocking(False)
                flow = (inner, trio.CancelScope())
                flows[peer] = flow
                nursery.start_soon(back, peer, inner, flow[1])
            with contextlib.suppress(OSError):
                flow[0].send(data)


async def serve(listeners: list[tuple[socket.socket, PortMapping]], connector: Connector) -> None:
    async with trio.open_nursery() as nursery:
        for sock, m in listeners:
            if m.protocol == "tcp":
                nursery.start_soon(serve_tcp, sock, m, connector)
            else:
                nursery.start_soon(serve_udp, sock, m, connector)
