"""The monitor: the lean, long-lived parent of a container (issue 16's memory).

Why: a supervisor is a fork of the warm fork server, and running trio and the
engine dirties ~9 MiB of the pages it shares with the server (reference
counts, the interpreter's inline caches, new objects). A container that is
merely running needs almost none of that: its exit status reaped and its
output appended to its log. So the fork server's child M stays lean. It is
the child subreaper that adopts the container's PID 1 (whose parent-death
signal is therefore tied to M), and it forks a worker W that runs the
supervisor (supervisor.py) with trio. Once W has nothing to do (no client,
no network helper, no healthcheck: `Supervisor.quiet`), W hands M its
descriptors and its state and exits, and its dirtied pages go with it. M then
polls the output and the control socket with plain os and select calls; a
connection on the control socket, or a child's exit, forks a new worker from
M, which resumes the supervisor from the handed-over state.

    fork server ─ M (monitor: subreaper, lean) ─ W (worker: trio supervisor, while needed)
                  └─ PID 1 (PR_SET_PDEATHSIG: dies with M)

Failure is the per-container supervisor's (docs/decisions.md, runtime core
§3 and issue 16): W dies with M (its parent-death signal), and so does PID 1;
a worker that dies without handing over takes M, and so its container, with
it, and its exit status becomes M's. Only M and its workers ever hold the
container's liveness lock.

M only runs code the fork server loaded, and little of it, so that it dirties
few pages: no trio, no imports after the fork.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import select
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import syscalls as sc

READ_SIZE = 65536
MAX_MESSAGE = 1 << 20  # a handover's JSON: the state, the environment, log tails
MAX_FDS = 16


def _now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Log:
    """docker's json-file format: one JSON object per line of output."""

    def __init__(self, path: Path, partial: dict[str, bytes] | None = None,
                 error: str | None = None) -> None:
        self._partial: dict[str, bytes] = dict(partial or {})
        self.error: str | None = error
        self._f = None
        try:
            self._f = open(path, "ab", buffering=0)  # noqa: SIM115 - lives as long as its owner
        except OSError as e:  # a damaged record (a directory in its place, say): no log
            self.error = self.error or f"opening the log failed: {e.strerror}"

    def write(self, stream: str, data: bytes) -> None:
        data = self._partial.pop(stream, b"") + data
        lines = data.split(b"\n")
        tail = lines.pop()
        out = []
        for line in lines:
            out.append(self._record(stream, line + b"\n"))
        if len(tail) >= 16384:
            out.append(self._record(stream, tail))
        elif tail:
            self._partial[stream] = tail
        if out:
            self._write(b"".join(out))

    def _write(self, data: bytes) -> None:
        # A full disk or a removed log must not stop the container or its
        # attached clients: the log stops, once, and says why at the end.
        if self.error is not None or self._f is None:
            return
        try:
            self._f.write(data)
        except OSError as e:
            self.error = f"writing the log failed: {e.strerror}"

    def _record(self, stream: str, data: bytes) -> bytes:
        rec = {"log": data.decode(errors="replace"), "stream": stream, "time": _now_rfc3339()}
        return json.dumps(rec).encode() + b"\n"

    def tails(self) -> tuple[dict[str, str], str | None]:
        """Its unfinished lines (latin-1, so any bytes survive JSON) and its error, for
        the log's next owner."""
        return {k: v.decode("latin-1") for k, v in self._partial.items()}, self.error

    def detach(self) -> None:
        if self._f is not None:
            with contextlib.suppress(OSError):
                self._f.close()
            self._f = None

    def close(self) -> None:
        for stream, tail in list(self._partial.items()):
            self._write(self._record(stream, tail))
        self._partial.clear()
        if self._f is None:
            return
        try:
            self._f.close()
        except OSError as e:
            self.error = self.error or f"closing the log failed: {e.strerror}"
        self._f = None


class Channel:
    """A worker's end of its socket pair with the monitor.

    Monitor to worker: "X <pid> <wait status>" for each child of the monitor
    that exited (the container's PID 1 and the root's FUSE server are the
    monitor's children, not the worker's). Worker to monitor: one handover
    (JSON and descriptors), after which the worker exits.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def exits(self) -> list[tuple[int, int]] | None:
        """The exits reported since the last call; None once the monitor is gone."""
        out: list[tuple[int, int]] = []
        while True:
            try:
                msg = self.sock.recv(256, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return out
            except OSError:
                return None
            if not msg:
                return None
            kind, _, rest = msg.decode().partition(" ")
            if kind == "X":
                pid, _, status = rest.partition(" ")
                out.append((int(pid), int(status)))

    def share_lock(self, fd: int) -> None:
        """The record's liveness lock, held by the monitor too from now on: the
        container is alive as long as the monitor is, whichever worker serves it."""
        socket.send_fds(self.sock, [b"L"], [fd])

    def hand_over(self, header: dict[str, Any], blob: bytes, fds: dict[str, int]) -> None:
        """header is what the monitor reads; blob, for the next worker, it keeps unread
        (parsing the state and the config would dirty its pages for nothing)."""
        names = sorted(fds)
        data = b"H" + json.dumps({**header, "fds": names}).encode() + b"\n" + blob
        if len(data) > MAX_MESSAGE or len(names) > MAX_FDS:
            raise OSError(errno.EMSGSIZE, "handover too large")
        socket.send_fds(self.sock, [data], [fds[n] for n in names])


Work = Callable[[Channel], int]
Resume = Callable[[Channel, bytes, dict[str, int], dict[int, int]], int]


class Monitor:
    def __init__(self, resume: Resume) -> None:
        self.resume = resume
        self.pid = os.getpid()
        self.worker = 0  # the worker's pid (0: none)
        self.chan: socket.socket | None = None
        self.handover: dict[str, Any] | None = None  # the last worker's header
        self.blob = b""  # and its state for the next worker, unread
        self.fds: dict[str, int] = {}  # and its descriptors, now the monitor's
        self.lock_fd = -1  # the record's liveness lock, once the first worker took it
        self.exits: dict[int, int] = {}  # children reaped: pid -> wait status
        self.log: Log | None = None
        self.outputs: dict[str, int] = {}  # lean: "stdout", "stderr" or "pty" -> its fd
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # -- workers -------------------------------------------------------------------

    def spawn(self, target: Callable[[Channel], int]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            code = 255
            try:
                ours.close()
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.close(self.wake_r)
                os.close(self.wake_w)
                sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
                if os.getppid() != self.pid:  # the monitor died before the line above
                    os._exit(255)
                code = target(Channel(theirs))
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        theirs.close()
        # Never blocking: (3.11's socket.recv_fds drops its flags argument.)
        ours.setblocking(False)
        self.worker = pid
        self.chan = ours

    def _resume(self) -> None:
        """A new worker takes the container over from the lean loop."""
        assert self.handover is not None
        if self.log is not None:
            partial, error = self.log.tails()
            self.handover["log_partial"], self.handover["log_error"] = partial, error
            self.log.detach()
            self.log = None
        # Outputs that reached their end here are closed: the worker pumps the rest.
        for name, fd in self.outputs.items():
            self.fds[f"out_{name}"] = fd
        self.outputs.clear()
        blob = json.dumps({"log_partial": self.handover.get("log_partial", {}),
                           "log_error": self.handover.get("log_error"),
                           "log_path": self.handover["log_path"]}).encode() + b"\n" + self.blob
        fds, exits = dict(self.fds), dict(self.exits)
        self.spawn(lambda ch: self.resume(ch, blob, fds, exits))

    def _take_handover(self) -> None:
        assert self.chan is not None
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.chan, MAX_MESSAGE, MAX_FDS)
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            if not data:
                self.chan.close()
                self.chan = None
                return
            if data == b"L" and len(fds) == 1 and self.lock_fd < 0:
                self.lock_fd = fds[0]
                continue
            if not data.startswith(b"H"):
                for fd in fds:
                    os.close(fd)
                continue
            head, _, blob = data[1:].partition(b"\n")
            try:
                state = dict(json.loads(head))
                names = [str(n) for n in state.pop("fds")]
            except (ValueError, KeyError, TypeError):
                for fd in fds:
                    os.close(fd)
                continue
            if len(names) != len(fds):
                for fd in fds:
                    os.close(fd)
                continue
            for fd in self.fds.values():  # the previous handover's (the same files)
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.fds = dict(zip(names, fds, strict=True))
            self.handover, self.blob = state, blob

    def _go_lean(self) -> None:
        assert self.handover is not None
        st = self.handover
        self.log = Log(Path(st["log_path"]),
                       {k: v.encode("latin-1") for k, v in st.get("log_partial", {}).items()},
                       st.get("log_error"))
        self.outputs = {}
        for name in ("out_stdout", "out_stderr", "out_pty"):
            fd = self.fds.pop(name, None)
            if fd is not None:
                self.outputs[name.removeprefix("out_")] = fd
        watch = set(st.get("watch", ()))
        # Exits of earlier runs (a restart's old PID 1) must not be taken for this one's.
        self.exits = {pid: status for pid, status in self.exits.items() if pid in watch}
        if self.exits:  # it exited while the worker was handing over
            self._resume()

    # -- the loop ---------------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        pass  # the wakeup fd does the work

    def _reap(self) -> int | None:
        """Reap what exited; the code to exit with once the worker is gone for good."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid == 0:
                return None
            if pid == self.worker:
                self.worker = 0
                if self.chan is not None:
                    self._take_handover()
                if self.chan is not None:
                    self.chan.close()
                    self.chan = None
                handed = self.handover is not None and self.handover.get("by") == pid
                if not handed:
                    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 255
                self._go_lean()
                continue
            self.exits[pid] = status
            if len(self.exits) > 256:  # orphans the container left: keep the recent ones
                for old in list(self.exits)[:128]:
                    del self.exits[old]
            if self.chan is not None:
                with contextlib.suppress(OSError):
                    self.chan.send(f"X {pid} {status}".encode())
            elif self.worker == 0 and self.handover is not None and (
                    pid in self.handover.get("watch", ())):
                self._resume()

    def _relay(self, name: str) -> None:
        fd = self.outputs[name]
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:  # EIO: a pty whose last slave closed
            data = b""
        if data:
            assert self.log is not None
            self.log.write("stderr" if name == "stderr" else "stdout", data)
            return
        del self.outputs[name]
        os.close(fd)

    def loop(self) -> int:
        poller = select.poll()
        while True:
            watched: dict[int, str] = {self.wake_r: "wake"}
            if self.chan is not None:
                watched[self.chan.fileno()] = "chan"
            if self.worker == 0 and self.handover is not None:
                ctl = self.fds.get("ctl")
                if ctl is not None:
                    watched[ctl] = "ctl"
                for name, fd in self.outputs.items():
                    watched[fd] = name
            for fd in watched:
                poller.register(fd, select.POLLIN)
            try:
                ready = poller.poll()
            finally:
                for fd in watched:
                    poller.unregister(fd)
            for fd, _ in ready:
                what = watched[fd]
                if what == "wake":
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self.wake_r, 512):
                            pass
                    code = self._reap()
                    if code is not None:
                        return code
                elif what == "chan" and self.chan is not None:
                    self._take_handover()
                elif what == "ctl" and self.worker == 0:
                    self._resume()
                elif what in self.outputs and self.worker == 0:
                    self._relay(what)
            if self.worker == 0 and self.handover is None:
                return 255  # no worker and nothing handed over: nothing to serve


def serve(client: socket.socket, work: Work, resume: Resume) -> int:
    """In the fork server's child: become the monitor of one container.

    work runs in the first worker (the supervisor's start); client is the
    requesting command's socket, which only the worker keeps."""
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    mon = Monitor(resume)

    signal.set_wakeup_fd(mon.wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, mon._on_signal)
    mon.spawn(work)
    # The worker has the client's socket: the client hears EOF when it is done.
    client.close()
    return mon.loop()
