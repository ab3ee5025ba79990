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

import contextlib
import os
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fs import walk

from .. import syscalls as sc
from ..errors import RlError, kind_of, rebuild
from . import idmap
from .idmap import IdMapPlan

T = TypeVar("T")


def run(func: Callable[[], T], plan: IdMapPlan | None = None) -> T:
    """func() in a child that is root of a new user namespace mapped by plan.

    RlError raised by func comes back as is (message and exit status); any
    other exception becomes an RlError with its text.
    """
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
                _become_root_of_new_userns(plan, res_w, sync_r)
                payload = ("ok", func())
            except RlError as e:
                payload = ("rlerror", (e.message, e.exit_code, kind_of(e)))
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
    return _unwrap(kind, value)  # type: ignore[no-any-return]


def execute(argv: list[str], env: dict[str, str], plan: IdMapPlan | None = None) -> int:
    """`rl unshare`: argv, root of a new user namespace with the user's maps, on
    the caller's own stdio (the user's command on the user's host: no container
    boundary to keep). Returns its exit status as a shell gives it (128+N for
    signal N); the terminal's Ctrl-C is the command's, not this waiting parent's."""
    import signal

    plan = plan or idmap.plan()
    sync_r, sync_w = os.pipe()
    res_r, res_w = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(sync_w)
            os.close(res_r)
            sc.prctl(sc.PR_SET_PDEATHSIG, 9)
            if os.getppid() != parent:
                os._exit(1)
            _become_root_of_new_userns(plan, res_w, sync_r)
            os.close(res_w)
            os.close(sync_r)
            os.execvpe(argv[0], argv, env)
        except FileNotFoundError:
            os.write(2, f"Error: exec: {argv[0]!r}: executable file not found\n".encode())
            os._exit(127)
        except OSError as e:
            os.write(2, f"Error: exec: {argv[0]!r}: {e.strerror}\n".encode())
            os._exit(126)
        except BaseException:
            os._exit(125)
    os.close(sync_r)
    os.close(res_w)
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGQUIT)}
    try:
        try:
            if os.read(res_r, 1) != b"U":
                raise RlError("cannot create a user namespace")
            try:
                idmap.write_maps(pid, plan)
            except OSError as e:
                raise RlError(f"writing the id maps: {e.strerror}") from e
            os.write(sync_w, b"M")
        except BaseException:
            os.kill(pid, signal.SIGKILL)
            raise
        finally:
            os.close(sync_w)
            os.close(res_r)
        _, status = os.waitpid(pid, 0)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _unwrap(kind: str, value: Any) -> Any:
    """A helper's result as it came back pickled: the value, or its error raised."""
    if kind == "ok":
        return value
    if kind == "rlerror":
        message, code, kind = value
        raise rebuild(message, code, kind)
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


def _become_root_of_new_userns(plan: IdMapPlan, res_w: int, sync_r: int) -> None:
    """In a forked child: a new user namespace; tell the parent ("U"), wait
    for it to write the maps ("M"), then become that namespace's root."""
    sc.unshare(sc.CLONE_NEWUSER)
    _write_all(res_w, b"U")
    if os.read(sync_r, 1) != b"M":
        os._exit(3)
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    if plan.mode == "subuid":
        os.setgroups([])


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
    with contextlib.suppress(OSError):
        walk.remove(path)  # what is ours goes without a fork
    if not os.path.lexists(path):
        return
    run(lambda: walk.remove(path))  # root in the namespace may remove (and chmod) the rest


def remove_renamed(path: str | Path, trash: str | Path) -> None:
    """Rename path to trash, then delete it: a removal killed half-way leaves a
    trash name for the garbage collector, never a partial tree under the real
    name. Nothing to do if path is gone already."""
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    remove_tree(trash)


def _rmtree(path: str) -> None:
    walk.remove(path)


class Worker:
    """A user-namespace process for threaded callers (rl pull).

    Forking while other threads run can copy a lock some thread holds (inside
    OpenSSL, say) into a child that then deadlocks on it. So the worker is
    forked once, before any thread exists, becomes root in a new user
    namespace, and runs each job in a child of its own: jobs run in parallel
    (up to the CPU count) without the caller ever forking. Jobs are a
    module-level function and its arguments (pickled); `call` blocks the
    calling thread until its job's result comes back.
    """

    def __init__(self, plan: IdMapPlan | None = None) -> None:
        import threading

        self._req_r, self._req_w = os.pipe()
        res_r, res_w = os.pipe()
        self._lock = threading.Lock()
        self._waiting: dict[int, tuple[threading.Event, list[tuple[str, Any]]]] = {}
        self._next = 0
        self.pid = _start_worker(self._req_r, self._req_w, res_r, res_w, plan)
        os.close(self._req_r)
        os.close(res_w)
        self._res = res_r
        self._reader = threading.Thread(target=self._read_results, daemon=True)
        self._reader.start()

    def _read_results(self) -> None:
        while True:
            head = _read_exact(self._res, 8)
            if len(head) < 8:
                break
            (size,) = struct.unpack("!Q", head)
            job, payload = pickle.loads(_read_exact(self._res, size))
            with self._lock:
                event, slot = self._waiting.pop(job)
            slot.append(payload)
            event.set()
        with self._lock:  # the worker died: fail whoever still waits
            for event, slot in self._waiting.values():
                slot.append(("error", "the user-namespace worker died"))
                event.set()
            self._waiting.clear()

    def call(self, func: Callable[..., T], *args: object) -> T:
        import threading

        event = threading.Event()
        slot: list[tuple[str, Any]] = []
        with self._lock:
            job = self._next
            self._next += 1
            self._waiting[job] = (event, slot)
            data = pickle.dumps((job, func, args))
            _write_all(self._req_w, struct.pack("!Q", len(data)) + data)
        event.wait()
        kind, value = slot[0]
        return _unwrap(kind, value)  # type: ignore[no-any-return]

    def remove_tree(self, path: str | Path) -> None:
        if os.path.lexists(path):
            self.call(_rmtree, str(path))

    def close(self) -> None:
        os.close(self._req_w)
        self._reader.join()
        os.close(self._res)
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _start_worker(req_r: int, req_w: int, res_r: int, res_w: int,
                  plan: IdMapPlan | None) -> int:
    plan = plan or idmap.plan()
    sync_r, sync_w = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the worker
        code = 0
        try:
            for fd in (sync_w, req_w, res_r):
                os.close(fd)
            sc.prctl(sc.PR_SET_PDEATHSIG, 9)
            if os.getppid() != parent:
                os._exit(1)
            _become_root_of_new_userns(plan, res_w, sync_r)
            _serve(req_r, res_w)
        except BaseException:
            code = 2
        os._exit(code)
    os.close(sync_r)
    try:
        if os.read(res_r, 1) != b"U":
            raise RlError("cannot create a user namespace")
        idmap.write_maps(pid, plan)
        os.write(sync_w, b"M")
    except BaseException:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(sync_w)
    return pid


def _serve(req_r: int, res_w: int) -> None:  # pragma: no cover - runs in the worker
    """The worker's loop: fork a child per job, relay each result as one frame."""
    import select

    limit = max(2, os.cpu_count() or 2)
    queue: list[tuple[int, Callable[..., object], tuple[object, ...]]] = []
    running: dict[int, tuple[int, int, list[bytes]]] = {}  # fd -> job, pid, chunks
    eof = False
    while not (eof and not queue and not running):
        while queue and len(running) < limit:
            job, func, args = queue.pop(0)
            r, w = os.pipe()
            child = os.fork()
            if child == 0:
                os.close(r)
                try:
                    payload: tuple[str, object] = ("ok", func(*args))
                except RlError as e:
                    payload = ("rlerror", (e.message, e.exit_code, kind_of(e)))
                except BaseException as e:
                    payload = ("error", str(e) or type(e).__name__)
                _write_all(w, pickle.dumps(payload))
                os._exit(0)
            os.close(w)
            running[r] = (job, child, [])
        fds = list(running) + ([] if eof else [req_r])
        ready, _, _ = select.select(fds, [], [])
        for fd in ready:
            if fd == req_r:
                head = _read_exact(req_r, 8)
                if len(head) < 8:
                    eof = True
                    continue
                (size,) = struct.unpack("!Q", head)
                job, func, args = pickle.loads(_read_exact(req_r, size))
                queue.append((job, func, args))
                continue
            chunk = os.read(fd, 1 << 16)
            if chunk:
                running[fd][2].append(chunk)
                continue
            job, child, chunks = running.pop(fd)
            os.close(fd)
            os.waitpid(child, 0)
            data = b"".join(chunks)
            payload = pickle.loads(data) if data else ("error", "a worker job died")
            frame = pickle.dumps((job, payload))
            _write_all(res_w, struct.pack("!Q", len(frame)) + frame)
