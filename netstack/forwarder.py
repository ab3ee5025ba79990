"""rl's own port driver: the supervisor accepts on the host, the connector connects in the
container, and the supervisor moves the bytes between the two sockets with splice(2).

Each direction owns a pipe: socket -> pipe -> socket, with no copy through user
space. The container sees connections coming from its own loopback
(127.0.0.1), not from the client: see docs/decisions.md ("the fast port
driver and the source address") for why the source cannot be kept here.

UDP: one container-side socket (one fd) per client address, kept as a NAT
table keeps a flow: dropped after UDP_TIMEOUT seconds without traffic either
way until the container has answered, UDP_TIMEOUT_STREAM once it has (the
defaults of the kernel's nf_conntrack_udp_timeout and _stream). At most
UDP_FLOWS flows per published port: a new one past that evicts the least
recently used flow the container never answered, else the least recently
used of all (conntrack's early drop also spares answered flows), so a flood
of source ports costs a bounded number of fds and leaves live flows alone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import struct
from collections import OrderedDict
from typing import Any

import trio

from . import connector as connector_mod
from .ports import PortMapping

PIPE_SIZE = 1 << 20
CHUNK = 1 << 20
UDP_TIMEOUT = 30.0  # nf_conntrack_udp_timeout
UDP_TIMEOUT_STREAM = 120.0  # nf_conntrack_udp_timeout_stream
UDP_FLOWS = 512  # per published port
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
        last = await self.connect("tcp", port, peer)
        last.setblocking(False)
        return last


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
                          both: trio.CancelScope, ended: list[bool]) -> None:
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
        if not ended[0]:  # else both ways are done and close() sends the FIN
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
        ended[0] = True
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
        ended = [False]
        async with trio.open_nursery() as n:
            n.start_soon(_splice_one_way, a, b, n.cancel_scope, ended)
            n.start_soon(_splice_one_way, b, a, n.cancel_scope, ended)
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
    # (inner: non-blocking, and pooled sockets come with TCP_NODELAY set)
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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


class _UdpFlow:
    """One client address's socket in the container, and the task that answers it."""

    __slots__ = ("answered", "peer", "scope", "sock")

    def __init__(self, peer: Any, sock: socket.socket) -> None:
        self.peer = peer
        self.sock = sock
        self.scope = trio.CancelScope(deadline=trio.current_time() + UDP_TIMEOUT)
        self.answered = False

    def touch(self) -> None:
        timeout = UDP_TIMEOUT_STREAM if self.answered else UDP_TIMEOUT
        self.scope.deadline = trio.current_time() + timeout

    def close(self) -> None:
        self.scope.cancel()
        if self.sock.fileno() != -1:
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()


class UdpFlows:
    """A published UDP port's flows, least recently used first; never more than limit."""

    def __init__(self, limit: int = UDP_FLOWS) -> None:
        self.limit = limit
        self.unanswered: OrderedDict[Any, _UdpFlow] = OrderedDict()
        self.answered: OrderedDict[Any, _UdpFlow] = OrderedDict()

    def __len__(self) -> int:
        return len(self.unanswered) + len(self.answered)

    def get(self, peer: Any) -> _UdpFlow | None:
        return self.answered.get(peer) or self.unanswered.get(peer)

    def add(self, flow: _UdpFlow) -> None:
        self.unanswered[flow.peer] = flow

    def used(self, flow: _UdpFlow, answer: bool = False) -> None:
        """Traffic on flow (answer: from the container): it moves to the young end."""
        if answer and not flow.answered:
            flow.answered = True
            self.unanswered.pop(flow.peer, None)
            self.answered[flow.peer] = flow
        table = self.answered if flow.answered else self.unanswered
        if flow.peer in table:
            table.move_to_end(flow.peer)
        flow.touch()

    def remove(self, flow: _UdpFlow) -> None:
        for table in (self.unanswered, self.answered):
            if table.get(flow.peer) is flow:
                del table[flow.peer]
        flow.close()

    def make_room(self) -> None:
        """Evict until one more flow fits."""
        while len(self) >= self.limit:
            table = self.unanswered or self.answered
            _, flow = table.popitem(last=False)
            flow.close()


async def serve_udp(host: socket.socket, m: PortMapping, connector: Connector) -> None:
    host.setblocking(False)
    flows = UdpFlows()

    async def back(flow: _UdpFlow) -> None:
        try:
            with flow.scope:
                while True:
                    await trio.lowlevel.wait_readable(flow.sock)
                    try:
                        data = flow.sock.recv(65535)
                    except BlockingIOError:
                        continue
                    except OSError:
                        continue  # ICMP port unreachable and friends: drop, as UDP does
                    with contextlib.suppress(OSError):
                        host.sendto(data, flow.peer)
                    flows.used(flow, answer=True)
        except trio.ClosedResourceError:
            pass  # evicted
        finally:
            flows.remove(flow)

    async with trio.open_nursery() as nursery:
        while True:
            await trio.lowlevel.wait_readable(host)
            try:
                data, peer = host.recvfrom(65535)
            except OSError:
                continue
            flow = flows.get(peer)
            if flow is None:
                flows.make_room()
                try:
                    inner = await connector.connect("udp", m.container_port, peer)
                except OSError:
                    continue
                inner.setblocking(False)
                flow = _UdpFlow(peer, inner)
                flows.add(flow)
                nursery.start_soon(back, flow)
            else:
                flows.used(flow)
            with contextlib.suppress(OSError):
                flow.sock.send(data)


async def serve(listeners: list[tuple[socket.socket, PortMapping]], connector: Connector) -> None:
    async with trio.open_nursery() as nursery:
        for sock, m in listeners:
            if m.protocol == "tcp":
                nursery.start_soon(serve_tcp, sock, m, connector)
            else:
                nursery.start_soon(serve_udp, sock, m, connector)
