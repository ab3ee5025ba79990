"""Run a function in a fresh user namespace that maps the user's ids.

Image layers hold files owned by many ids. Rootless, the only way to create
(chown), read or delete such files is from a user namespace whose map covers
them: container 0 is the user, 1..N the /etc/subuid range (idmap.plan). This
module forks a child that unshares CLONE_NEWUSER, lets the parent write the
maps (newuidmap needs a process outside the namespace), becomes root in it
and runs the function. The result or the error comes back pickled on a pipe.
Only trusted data crosses it: the child is a fork of this very process.
"""

from __future__ import annotations

import os
import pickle
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from . import _syscalls as sc
from .errors import RlError
from .idmap import IdMapPlan

T = TypeVar("T")


def run(func: Callable[[], T], plan: IdMapPlan | None = None) -> T:
    """func() in a child that is root of a new user namespace mapped by plan.

    RlError raised by func comes back as is (message and exit status); any
    other exception becomes an RlError with its text.
    """
    from . import idmap

    plan = plan or idmap.plan()
    sync_r, sync_w = os.pipe()  # parent -> child: "maps written"
    res_r, res_w = os.pipe()  # child -> parent: b"U" after unshare, then the result
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            os.close(sync_w)
            os.close(res_r)
            # A kill -9 of rl takes the helper with it (no orphan writing into the store).
            sc.prctl(sc.PR_SET_PDEATHSIG, 9)
            if os.getppid() != parent:
                os._exit(1)
            payload: tuple[str, object]
            try:
                sc.unshare(sc.CLONE_NEWUSER)
                os.write(res_w, b"U")
                if os.read(sync_r, 1) != b"M":
                    os._exit(3)
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
                if plan.mode == "subuid":
                    os.setgroups([])
                payload = ("ok", func())
            except RlError as e:
                payload = ("rlerror", (e.message, e.exit_code))
            except BaseException as e:  # everything reaches the parent as one line
                text = str(e) or type(e).__name__
                payload = ("error", text)
            data = pickle.dumps(payload)
            _write_all(res_w, struct.pack("!Q", len(data)) + data)
        except BaseException:
            code = 2
        os._exit(code)
    os.close(sync_r)
    os.close(res_w)
    try:
        if os.read(res_r, 1) != b"U":
            raise RlError("cannot create a user namespace")
        try:
            idmap.write_maps(pid, plan)
        except RlError:
            raise
        except OSError as e:
            raise RlError(f"writing the id maps: {e.strerror}") from e
        os.write(sync_w, b"M")
        head = _read_exact(res_r, 8)
        if len(head) < 8:
            raise RlError("the user-namespace helper process died")
        (size,) = struct.unpack("!Q", head)
        kind, value = pickle.loads(_read_exact(res_r, size))
    finally:
        os.close(sync_w)
        os.close(res_r)
        _reap(pid)
    if kind == "ok":
        return value  # type: ignore[no-any-return]
    if kind == "rlerror":
        message, code = value
        raise RlError(message, code)
    raise RlError(str(value))


def _reap(pid: int) -> None:
    import signal

    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            # The child finished writing; give it its moment, never hang on it.
            import time

            for _ in range(200):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    return
                time.sleep(0.005)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, size: int) -> bytes:
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def remove_tree(path: str | Path) -> None:
    """Delete a tree that may hold files owned by subordinate ids (rm -rf)."""
    path = str(path)
    if not os.path.lexists(path):
        return
    shutil.rmtree(path, ignore_errors=True)
    if not os.path.lexists(path):
        return

    def rm() -> None:
        def fix(func: Callable[..., object], p: str, _exc: object) -> None:
            # A directory without write permission: root in the namespace may chmod it.
            parent = os.path.dirname(p)
            os.chmod(parent, 0o700)
            func(p)

        shutil.rmtree(path, onerror=fix)

    run(rm)
