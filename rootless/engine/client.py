"""Client side of the fork server and of a supervisor's control socket.

Plain blocking sockets, no trio: this is on every rl command's start path.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import zlib
from pathlib import Path

from .. import paths
from ..errors import NeedsFullCli, NoSuchImage, NotRunning, RlError, rebuild
from . import wire

# Not `from typing import ...`: this module is on `rl run`'s start path, where
# typing and dataclasses cost ~5 ms to import (mypy honours a local constant).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .store import Container


def fingerprint() -> str:
    """The fork server's identity: the one to talk to serves this user, namespace and rl."""
    # A server serves one user in one user namespace with one version of rl.
    # zlib, not hashlib: this runs on every command and needs no cryptography.
    # Its gid and groups too: the maps use the gid, and --group-add keep-groups hands the
    # server's groups to the container (`sg video rl run ...` must get a server in video).
    parts = [sys.executable, str(os.geteuid()), os.readlink("/proc/self/ns/user"),
             str(os.getegid()), ",".join(map(str, sorted(os.getgroups())))]
    top = Path(__file__).parent.parent.parent
    # The supervisor runs all of rl's code: rootless and its sub-packages
    # (runtime, image, engine, cli) and the sibling packages (netstack, fs).
    # One level of glob each, not rglob: this is on every command's path.
    for pattern in ("rootless/*.py", "rootless/*/*.py", "netstack/*.py", "fs/*.py"):
        for f in sorted(top.glob(pattern)):
            st = f.stat()
            parts.append(f"{f.relative_to(top)}:{st.st_mtime_ns}:{st.st_size}")
    text = "\n".join(parts).encode()
    return f"{zlib.crc32(text):08x}{zlib.adler32(text):08x}"


def socket_path() -> Path:
    return paths.runtime_dir() / f"fork-{fingerprint()}.sock"


def _connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.connect(paths.socket_address(Path(path)))
    except OSError:
        s.close()
        raise
    return s


def _spawn_server(sock_path: str) -> None:
    import subprocess

    r, w = os.pipe()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    proc = subprocess.Popen(
        # -P: not the caller's cwd first on sys.path (a checkout of rl there would win)
        [sys.executable, "-P", "-m", "rootless.forkserver", sock_path, str(w)],
        pass_fds=(w,), start_new_session=True, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True, env=env,
    )
    os.close(w)
    try:
        # "1" once it listens; EOF if it exited because another server is up.
        os.read(r, 1)
    finally:
        os.close(r)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=0)


def connect_forkserver() -> socket.socket:
    path = str(socket_path())
    for _ in range(50):
        try:
            return _connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            _spawn_server(path)
        time.sleep(0.01)
    raise RlError(f"cannot reach rl's fork server at {path}; see "
                  f"{paths.runtime_dir() / 'forkserver.log'}")


class Session:
    """A supervisor's socket after its first event, with what already came after it.

    The container's first output (even its exit) can arrive in the same read
    as the "started" event: those frames must reach the attach loop, not be lost.
    """

    def __init__(self, sock: socket.socket, event: dict[str, Any], reader: wire.FrameReader,
                 pending: list[tuple[int, bytes]] | None = None) -> None:
        self.sock = sock
        self.event = event
        self.reader = reader
        self.pending = pending if pending is not None else []

    def close(self) -> None:
        self.sock.close()


def start_supervisor(cid: str, attach: bool, stdin: bool) -> Session:
    """Ask for a supervisor for cid; returns its session after the "started" event."""
    return _ask({"op": "start", "id": cid, "attach": attach, "stdin": stdin})


def run_container(options: dict[str, Any], attach: bool, stdin: bool) -> Session:
    """Have a supervisor create (from CreateOptions, as a dict: resolved by the face,
    so no cwd travels) and start a container."""
    return _ask({"op": "run", "options": options, "attach": attach, "stdin": stdin})


def run_argv(argv: list[str], console_size: tuple[int, int] | None) -> Session:
    """`rl run ARGV` parsed and run by a supervisor (entry.py); NeedsFullCli if it
    wants the full CLI (help, a usage error, a pull)."""
    try:
        cwd = os.getcwd()
    except FileNotFoundError:
        cwd = ""  # removed: only a relative path in argv fails (cli/resolve.py)
    return _ask({"op": "run-argv", "argv": argv, "cwd": cwd, "console_size": console_size})


def _ask(request: dict[str, Any]) -> Session:
    """Send a request to the fork server; the supervisor's session after its first event.

    The request carries this command's environment: the supervisor takes rl's
    settings from it (XDG_* directories, RL_* knobs), and run-argv's parser -e KEY.
    """
    sock = connect_forkserver()
    wire.request(sock, {**request, "env": dict(os.environ)})
    reader = wire.FrameReader()
    pending: list[tuple[int, bytes]] = []
    while True:
        data = sock.recv(65536)
        if not data:
            sock.close()
            raise RlError("the container's supervisor died while starting it; see "
                          f"{paths.runtime_dir() / 'forkserver.log'}")
        pending += reader.feed(data)
        while pending:
            kind, payload = pending.pop(0)
            if kind != wire.CONTROL:
                sock.close()
                raise RlError("unexpected data from the supervisor")
            event: dict[str, Any] = json.loads(payload)
            if event.get("event") == "warning":
                sys.stderr.write(f"WARNING: {event.get('message')}\n")
                continue
            if event.get("event") == "error":
                sock.close()
                code = int(event.get("exit_code", 125))
                if event.get("needs_full_cli"):
                    raise NeedsFullCli
                if event.get("missing_image"):
                    raise NoSuchImage(str(event["missing_image"]), code)
                raise rebuild(str(event.get("message")), code, str(event.get("kind", "")))
            return Session(sock, event, reader, pending)


def control(ctr: Container, msg: dict[str, Any], timeout: float | None = 10) -> dict[str, Any]:
    """One request/answer on a running container's control socket."""
    path = str(ctr.run_dir / "ctl.sock")
    try:
        sock = _connect(path)
    except OSError:  # gone, refused, or not a socket any more (a damaged run dir)
        raise NotRunning(f"container {ctr.label} is not running", 1) from None
    with sock:
        sock.settimeout(timeout)
        try:
            wire.request(sock, msg)
            line = wire.read_line(sock)
        except (ConnectionResetError, BrokenPipeError):
            # The supervisor left while we asked (it was exiting): no answer;
            # callers read the state it recorded before leaving.
            line = b""
    if not line:
        return {}
    answer: dict[str, Any] = json.loads(line)
    return answer


def attach(ctr: Container, stdin: bool) -> Session:
    """Join a running container's output (and stdin) on its control socket, as one
    more of its supervisor's clients; the session once the supervisor said so."""
    path = str(ctr.run_dir / "ctl.sock")
    try:
        sock = _connect(path)
    except OSError:
        raise NotRunning("You cannot attach to a stopped container, start it first", 1) from None
    try:
        wire.request(sock, {"op": "attach", "stdin": stdin})
        reader = wire.FrameReader()
        pending: list[tuple[int, bytes]] = []
        while True:
            data = sock.recv(65536)
            if not data:
                raise NotRunning("You cannot attach to a stopped container, start it first",
                                 1)
            pending += reader.feed(data)
            if pending:
                kind, payload = pending.pop(0)
                event = json.loads(payload) if kind == wire.CONTROL else {}
                if event.get("event") != "attached":
                    raise RlError("unexpected data from the supervisor")
                return Session(sock, event, reader, pending)
    except BaseException:
        sock.close()
        raise
