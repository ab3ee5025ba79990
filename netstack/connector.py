"""The connector: a helper inside the container's user and network namespaces that
opens connections to the container's ports and hands the sockets to the supervisor.

setns(CLONE_NEWUSER) works only in a single-threaded process, and the
supervisor runs trio (which may start threads). So the supervisor forks this
helper before trio starts, right after the container's PID 1 exists. The
helper joins PID 1's user and network namespaces and then serves requests on
a SOCK_SEQPACKET socketpair: "tcp 80" -> a socket connected to 127.0.0.1:80
inside the container (::1 if IPv4 is refused), passed back with SCM_RIGHTS,
or "E<errno>". A socket keeps the namespace it was created in, so the
supervisor then moves bytes between it and the host side itself.

The helper dies with the supervisor (PR_SET_PDEATHSIG and EOF on its socket).
"""

from __future__ import annotations

import errno
import os
import signal
import socket

from rootless import _syscalls as sc

TARGETS = ("127.0.0.1", "::1")


def _connect(proto: str, port: int) -> socket.socket:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    last: OSError | None = None
    for host in TARGETS:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, kind)
        try:
            s.connect((host, port))
            return s
        except OSError as e:
            s.close()
            last = e
    assert last is not None
    raise last


def _serve(chan: socket.socket) -> None:
    while True:
        msg = chan.recv(64)
        if not msg:
            return
        proto, _, port = msg.decode().partition(" ")
        try:
            s = _connect(proto, int(port))
        except OSError as e:
            chan.send(f"E{e.errno or errno.EIO}".encode())
            continue
        socket.send_fds(chan, [b"ok"], [s.fileno()])
        s.close()


def start(pid: int) -> tuple[socket.socket, int]:
    """Fork the connector for the container whose PID 1 is pid; returns (channel, its pid)."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    user_fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    net_fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    supervisor = os.getpid()
    helper = os.fork()
    if helper == 0:
        code = 1
        try:
            sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != supervisor:
                os._exit(1)
            keep = sorted((child.fileno(), user_fd, net_fd))
            # Nothing of the supervisor's (its lock, the exit fd that keeps
            # slirp4netns alive, client sockets) may outlive it here.
            low = 3
            for fd in keep:
                os.closerange(low, fd)
                low = fd + 1
            os.closerange(low, 1 << 16)
            sc.setns(user_fd, sc.CLONE_NEWUSER)
            sc.setns(net_fd, sc.CLONE_NEWNET)
            os.close(user_fd)
            os.close(net_fd)
            try:
                with open("/proc/self/comm", "w") as f:
                    f.write("rl-connector")
            except OSError:
                pass
            _serve(child)
            code = 0
        except BaseException:
            pass
        os._exit(code)
    os.close(user_fd)
    os.close(net_fd)
    child.close()
    return parent, helper
