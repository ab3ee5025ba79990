"""The user's fork server: a warm, idle process that forks container supervisors.

Why: a supervisor needs trio, and `import trio` alone costs ~100 ms and ~15 MB
per process. The fork server pays that once; each supervisor is a fork of
it, so it starts in a millisecond and shares the interpreter's and trio's
pages copy-on-write (gc.freeze() keeps the collector from dirtying them).

Protocol: a client connects to $XDG_RUNTIME_DIR/rl/fork-<fingerprint>.sock and
sends one JSON line {"op": "start", "id": ..., "attach": bool, "stdin": bool}.
The server forks; the child (the supervisor) keeps the client's socket and
speaks wire.py frames on it from then on. The server itself never runs trio,
never starts a thread and holds no state, so killing it loses nothing: the
next rl command starts a new one. The fingerprint (engine/client.py) covers
rl's own source files, so an upgraded rl never talks to an old server. The server leaves
when it has been idle for RL_FORKSERVER_IDLE seconds (default 600).
"""

from __future__ import annotations

import fcntl
import gc
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from . import paths


def _serve_one(listener: socket.socket, lock_fd: int) -> None:
    conn, _ = listener.accept()
    conn.settimeout(5)
    try:
        # A client sends its request line and then waits for an answer, so
        # whole reads cannot swallow anything meant for the supervisor.
        line = b""
        while not line.endswith(b"\n") and len(line) < (1 << 20):
            chunk = conn.recv(65536)
            if not chunk:
                break
            line += chunk
        msg = json.loads(line or b"{}")
    except (OSError, ValueError):
        conn.close()
        return
    conn.settimeout(None)
    if msg.get("op") not in ("start", "run", "run-argv"):
        conn.close()
        return
    pid = os.fork()
    if pid:
        conn.close()
        return
    # The supervisor: it must not keep the server's lock (a new server could
    # never start while this container lives) nor its listening socket.
    listener.close()
    os.close(lock_fd)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    code = 125
    try:
        from .cli.app import parse_run  # imported by _warm_up: nothing to load here
        from .engine import monitor, supervisor

        # The supervisor parses `rl run`'s arguments with the CLI's own parser (one
        # definition of every flag); the engine itself imports no face.
        if _detached(msg):
            # This process becomes the container's lean monitor, the supervisor its
            # worker while there is work (engine/monitor.py).
            code = monitor.serve(
                conn, lambda chan: supervisor.serve_request(msg, conn, chan,
                                                            parse_run=parse_run),
                supervisor.resume)
        else:
            # An attached client keeps the supervisor busy anyway: one process, one
            # hop less on the way in and out.
            code = supervisor.serve_request(msg, conn, None, parse_run=parse_run)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _detached(msg: dict[str, Any]) -> bool:
    """Whether the request is for a container nobody stays attached to: `start`
    without -a, `rl run -d`. For `rl run`'s raw arguments, a look for -d (a short
    flag cluster with a d, --detach); a false positive (an argument of the command
    that looks like one) only costs the attached run its one-process path."""
    if msg.get("op") != "run-argv":
        return not msg.get("attach")
    for arg in msg.get("argv") or ():
        if not isinstance(arg, str):
            continue
        if arg in ("--detach", "--detach=true", "--detach=1"):
            return True
        if len(arg) > 1 and arg[0] == "-" and arg[1] != "-" and "d" in arg[1:]:
            return True
    return False


def _warm_up() -> None:
    """Do once here what every supervisor would otherwise do (and copy) on its own.

    Imports, the spec's type hints and one trio.run (trio builds caches and
    imports lazily on first use). trio.run has returned and left no thread
    or fd behind, so forking afterwards is as safe as before it.
    """
    import trio

    from fs import drivers, walk  # noqa: F401

    # Everything a supervisor runs: the CLI's parser (click and rl's flags, ~25 ms
    # that `rl run`'s client saves), the engine, images and the runtime.
    from .cli import app  # noqa: F401
    from .engine import containers, execute, monitor, store, supervisor  # noqa: F401
    from .engine import images as engine_images  # noqa: F401 - containers.create defers it
    from .image import images, rootfs  # noqa: F401
    from .runtime import container, seccomp, spec  # noqa: F401

    seccomp.warm_up()  # the default seccomp filter, compiled once for every container
    store.warm_up()  # the record types' hints, for the checks of every record read

    for cls in (spec.Spec, spec.Process, spec.User, spec.Rlimit, spec.Capabilities,
                spec.ConsoleSize, spec.Root, spec.Mount, spec.Namespace, spec.IDMapping,
                spec.Linux):
        spec._hints(cls)

    async def nothing() -> None:
        await trio.sleep(0)

    trio.run(nothing)


def serve(sock_path: Path, ready_fd: int | None) -> None:
    lock_fd = os.open(f"{sock_path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another server for this fingerprint is up
    try:
        os.unlink(sock_path)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(paths.socket_address(sock_path))
    listener.listen(64)
    pid_file = paths.runtime_dir() / f"fork-{sock_path.stem.removeprefix('fork-')}.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    # Supervisors are reaped by the kernel; they setsid and outlive us anyway.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    # Import everything a supervisor will need, then freeze it for sharing.
    _warm_up()
    gc.collect()
    gc.freeze()
    if ready_fd is not None:
        os.write(ready_fd, b"1")
        os.close(ready_fd)
    idle = float(os.environ.get("RL_FORKSERVER_IDLE", "600"))
    listener.settimeout(idle)
    try:
        while True:
            try:
                _serve_one(listener, lock_fd)
            except TimeoutError:
                break
            except InterruptedError:
                continue
    finally:
        # Unlink only while we still own the name (under the lock).
        try:
            os.unlink(sock_path)
        except FileNotFoundError:
            pass
        pid_file.unlink(missing_ok=True)


def main() -> None:
    sock_path = Path(sys.argv[1])
    ready_fd = int(sys.argv[2]) if len(sys.argv) > 2 else None
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    log = os.open(paths.runtime_dir() / "forkserver.log",
                  os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 2)
    serve(sock_path, ready_fd)


if __name__ == "__main__":
    main()
