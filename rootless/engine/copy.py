"""`rl cp`: files between a container and the host (or a tar on stdin/stdout).

The container's tree is hostile: it may swap any path component for a
symlink (to `/`, to the user's $HOME) at any moment, also while rl copies
(the docker cp CVE class, CVE-2019-14271 and the symlink-exchange races).
So rl never reaches it by a host path. A helper process holds a directory fd
of the container's root and resolves every container path below that fd
with openat2(RESOLVE_IN_ROOT) (a symlink to `/` leads to the container's
`/`), and every entry below the resolved point is reached relative to a
directory fd with O_NOFOLLOW: a symlink is only ever read or written as a
link, and a directory swapped meanwhile fails the open instead of leading
somewhere else. No container code or library is ever loaded (rl stays in
its own mount namespace: its Python is the host's).

Owners: the helper is root of the container's user namespace, so files owned
by subordinate ids are read and written as they are, what it creates is the
container's root's (the user's, on the host), and `-a` keeps the ids the
namespace shows. A running container's root is /proc/PID/root of its PID 1
(its volumes and mounts included) with the helper joined to its user
namespace; a stopped one's is its storage mounted read-write in a private
mount namespace of a fresh user namespace (the overlay drivers), with its
bind mounts and volumes put where they go.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import stat
import struct
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, NamedTuple, TypeVar

from fs.copy import copy_sparse

from .. import syscalls as sc
from ..errors import InvalidArgument, NotFound, RlError, kind_of, rebuild
from .store import Container, dead_why

T = TypeVar("T")

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# A file is opened for reading only after fstat says it is one, so a fifo or a
# device node swapped in (a bound /dev/tty) is never read or made our terminal.
_READ = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_FILE = _READ | os.O_NOFOLLOW
_RESOLVE = sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS


@dataclass
class CopyOptions:
    archive: bool = False  # -a: keep the source's uid/gid (as the namespace shows them)
    follow: bool = False  # -L: follow a symlink at the source path itself


class _Changed(RlError):
    pass


def _changed(what: str) -> _Changed:
    return _Changed(f"{what} changed while rl copied it (a symlink or another file "
                    "took its place): nothing outside the container was touched", 1)


# -- where the container's root is -------------------------------------------------


def _call(func: Callable[[], T], prepare: Callable[[], None]) -> T:
    """func() in a forked child after prepare(); its result or error comes back."""
    r, w = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(r)
            sc.prctl(sc.PR_SET_PDEATHSIG, 9)
            if os.getppid() != parent:
                os._exit(1)
            sc.prctl(sc.PR_SET_DUMPABLE, 0)  # root of the container's userns: no ptrace
            payload: tuple[str, object]
            try:
                prepare()
                payload = ("ok", func())
            except RlError as e:
                payload = ("rlerror", (e.message, e.exit_code, kind_of(e)))
            except OSError as e:
                payload = ("error", _oserror_text(e))
            except BaseException as e:
                payload = ("error", str(e) or type(e).__name__)
            data = pickle.dumps(payload)
            view = memoryview(struct.pack("!Q", len(data)) + data)
            while view:
                view = view[os.write(w, view):]
        finally:
            os._exit(0)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as f:
            data = f.read()
    finally:
        os.waitpid(pid, 0)
    if len(data) < 8:
        raise RlError("the copying helper process died")
    kind, value = pickle.loads(data[8:])
    if kind == "ok":
        return value  # type: ignore[no-any-return]
    if kind == "rlerror":
        message, code, k = value
        raise rebuild(message, code, k)
    raise RlError(str(value), 1)


def _oserror_text(e: OSError) -> str:
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{e.strerror or e}"


def _running_root(pid: int) -> tuple[int, int | None]:
    """A running container's `/` (its PID 1's, volumes and mounts included) and
    its user namespace (None: it is rl's own), both opened from the host."""
    import signal

    pidfd = os.pidfd_open(pid)
    root = userns = -1
    try:
        root = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        userns = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        signal.pidfd_send_signal(pidfd, 0)  # still that process: its pid was not reused
    except (OSError, ProcessLookupError) as e:
        for fd in (root, userns):
            if fd >= 0:
                os.close(fd)
        raise RlError(f"cannot reach the container's files: {e}", 1) from e
    finally:
        os.close(pidfd)
    if os.readlink(f"/proc/self/fd/{userns}") == os.readlink("/proc/self/ns/user"):
        os.close(userns)
        return root, None
    return root, userns


def _join(userns: int | None) -> None:  # pragma: no cover - in the helper
    if userns is not None:
        sc.setns(userns, sc.CLONE_NEWUSER)
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        with contextlib.suppress(OSError):  # single-id mode denies setgroups
            os.setgroups([])


def in_container(ctr: Container, func: Callable[[int], T]) -> T:
    """func(root_fd) in a helper that is root of the container's user namespace,
    root_fd the container's `/` (running: as its PID 1 sees it; else its storage)."""
    st = ctr.state()
    if st.status == "dead":
        raise RlError(f"container {ctr.label}: {dead_why(ctr, st)}", 1)
    if st.status == "running" and st.pid:
        root, userns = _running_root(st.pid)
        try:
            return _call(lambda: func(root), lambda: _join(userns))
        finally:
            os.close(root)
            if userns is not None:
                os.close(userns)
    from ..runtime import userns as uns

    cfg = ctr.config
    return uns.run(lambda: _stopped(cfg, func))


def _stopped(cfg: Any, func: Callable[[int], T]) -> T:  # pragma: no cover - in the helper
    """A stopped container's root in a private mount namespace: its storage
    mounted as at start, its binds and volumes on top (mounts.apply_mount
    resolves each target inside the root, as the runtime does)."""
    from fs import drivers

    from ..runtime import mounts
    from . import volumes

    sc.unshare(sc.CLONE_NEWNS)
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    with contextlib.ExitStack() as stack:
        rootfs = cfg.rootfs
        if cfg.storage_driver in drivers.OVERLAYS:
            try:
                stack.enter_context(drivers.mount(cfg.storage_driver, list(cfg.layers),
                                                  cfg.upper, cfg.work, rootfs))
            except drivers.DriverError as e:
                raise RlError(f"mounting the container's root: {e}") from None
        else:
            sc.mount(rootfs, rootfs, None, sc.MS_BIND | sc.MS_REC)
        for m in volumes.user_binds(cfg):  # not rl's /dev and /etc ones: start makes those
            if os.path.exists(m.source or ""):
                mounts.apply_mount(rootfs, m)
        root = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return func(root)
        finally:
            os.close(root)


# -- paths inside the root -------------------------------------------------------------


def open_in_root(root: int, path: str, flags: int = os.O_PATH) -> int:
    """path below root with every symlink resolved as if root were `/`."""
    rel = path.strip("/") or "."
    try:
        return sc.openat2(root, rel, flags, _RESOLVE)
    except OSError as e:
        if e.errno not in (errno.ENOSYS, errno.EPERM):  # no openat2 (or seccomp said no)
            raise
    return _walk_in_root(root, rel, flags)


def _walk_in_root(root: int, rel: str, flags: int) -> int:
    """openat2's RESOLVE_IN_ROOT by hand, one O_NOFOLLOW component at a time."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    stack = [os.dup(root)]
    budget = 40
    try:
        while parts:
            part = parts.pop(0)
            if part == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            try:
                fd = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
            except FileNotFoundError:
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", rel) from None
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                target = os.readlink("", dir_fd=fd)
                os.close(fd)
                budget -= 1
                if budget < 0:
                    raise OSError(errno.ELOOP, "Too many levels of symbolic links", rel)
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                continue
            if parts and not stat.S_ISDIR(os.fstat(fd).st_mode):
                os.close(fd)
                raise NotADirectoryError(errno.ENOTDIR, "Not a directory", rel)
            stack.append(fd)
        last = stack.pop()
        if flags == os.O_PATH:
            return last
        try:
            return os.open(f"/proc/self/fd/{last}", flags | os.O_CLOEXEC)
        finally:
            os.close(last)
    finally:
        for fd in stack:
            os.close(fd)


@dataclass
class _Top:
    """The entry a copy starts from: its stat, and an fd of it (directories and
    regular files) or its parent and name (anything else)."""

    st: os.stat_result
    fd: int | None
    parent: int | None
    name: str

    def close(self) -> None:
        for fd in (self.fd, self.parent):
            if fd is not None:
                os.close(fd)


def _reopen(fd: int, st: os.stat_result) -> int | None:
    """A readable fd of what the O_PATH fd names, for a directory or a regular file."""
    if stat.S_ISDIR(st.st_mode):
        return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    if stat.S_ISREG(st.st_mode):
        return os.open(f"/proc/self/fd/{fd}", _READ)
    return None


def _top(open_parent: Callable[[], int], open_full: Callable[[], int], name: str,
         follow: bool) -> _Top:
    """The top entry, its last component followed or not."""
    fd: int | None
    if follow or not name:
        path_fd = open_full()
        try:
            st = os.fstat(path_fd)
            if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                raise InvalidArgument(f"{name or '/'}: cannot copy a special file", 1)
            return _Top(st, _reopen(path_fd, st), None, name)
        finally:
            os.close(path_fd)
    parent = open_parent()
    try:
        st = os.lstat(name, dir_fd=parent)
        fd = None
        if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
            fd = os.open(name, _DIR if stat.S_ISDIR(st.st_mode) else _FILE, dir_fd=parent)
            if os.fstat(fd).st_ino != st.st_ino:
                os.close(fd)
                raise _changed(name)
    except BaseException:
        os.close(parent)
        raise
    return _Top(st, fd, parent, name)


# -- the walk and its consumers ---------------------------------------------------------


@dataclass
class _Event:
    kind: str  # enter | leave | file | link | fifo
    rel: str  # "" for the top
    st: os.stat_result
    fd: int = -1  # enter/leave: the directory; file: the file
    parent: int = -1  # link/fifo: where it is
    name: str = ""


def _walk(top: _Top) -> Iterator[_Event]:
    """The source tree, parents first, a directory's leave after its entries.
    Directories and files are opened relative to their parent with O_NOFOLLOW
    and must be the inode lstat saw; what was swapped meanwhile is skipped."""
    from fs.walk import allow_deep_trees

    allow_deep_trees()
    st = top.st
    if stat.S_ISREG(st.st_mode):
        assert top.fd is not None
        yield _Event("file", "", st, top.fd)
        return
    if not stat.S_ISDIR(st.st_mode):
        assert top.parent is not None
        yield from _leaf(top.parent, top.name, st, "")
        return
    assert top.fd is not None
    yield _Event("enter", "", st, top.fd)
    stack: list[tuple[int, str, os.stat_result, list[str]]] = [
        (top.fd, "", st, sorted(os.listdir(top.fd), reverse=True))]
    while stack:
        dfd, rel, dst, names = stack[-1]
        if not names:
            stack.pop()
            yield _Event("leave", rel, dst, dfd)
            if dfd != top.fd:
                os.close(dfd)
            continue
        name = names.pop()
        sub_rel = f"{rel}/{name}" if rel else name
        try:
            est = os.lstat(name, dir_fd=dfd)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(est.st_mode):
            try:
                sub = os.open(name, _DIR, dir_fd=dfd)
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    continue  # replaced meanwhile: never followed
                raise
            if os.fstat(sub).st_ino != est.st_ino:
                os.close(sub)
                continue
            yield _Event("enter", sub_rel, est, sub)
            stack.append((sub, sub_rel, est, sorted(os.listdir(sub), reverse=True)))
        elif stat.S_ISREG(est.st_mode):
            try:
                fd = os.open(name, _FILE, dir_fd=dfd)
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ELOOP):
                    continue
                raise
            try:
                fst = os.fstat(fd)
                if stat.S_ISREG(fst.st_mode) and fst.st_ino == est.st_ino:
                    yield _Event("file", sub_rel, fst, fd)
            finally:
                os.close(fd)
        else:
            yield from _leaf(dfd, name, est, sub_rel)


def _leaf(parent: int, name: str, st: os.stat_result, rel: str) -> Iterator[_Event]:
    if stat.S_ISLNK(st.st_mode):
        yield _Event("link", rel, st, parent=parent, name=name)
    elif stat.S_ISFIFO(st.st_mode):
        yield _Event("fifo", rel, st, parent=parent, name=name)
    # sockets and device nodes are left out: a user namespace cannot make devices


def _clear(d: int, name: str) -> None:
    """Make room for a non-directory at name (never following what is there)."""
    try:
        st = os.lstat(name, dir_fd=d)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise InvalidArgument(f"cannot overwrite directory {name!r} with non-directory", 1)
    os.unlink(name, dir_fd=d)


def _make_dir(d: int, name: str) -> int:
    """The directory name below d (made, or an existing one merged into)."""
    try:
        os.mkdir(name, 0o700, dir_fd=d)
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(name, dir_fd=d).st_mode):
            os.unlink(name, dir_fd=d)
            os.mkdir(name, 0o700, dir_fd=d)
    try:
        return os.open(name, _DIR, dir_fd=d)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
            raise _changed(name) from None
        raise


class _M(NamedTuple):
    """The metadata a tar entry gives (what _meta reads of a stat)."""

    st_mode: int
    st_uid: int
    st_gid: int
    st_atime_ns: int
    st_mtime_ns: int


def _meta(fd: int, st: os.stat_result | _M, archive: bool) -> None:
    if archive:
        with contextlib.suppress(OSError):  # an id the namespace cannot map
            os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, stat.S_IMODE(st.st_mode))  # after chown, which clears setuid bits
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def _write_file(sfd: int, st: os.stat_result, d: int, name: str, archive: bool) -> None:
    _clear(d, name)
    try:
        dfd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600, dir_fd=d)
    except FileExistsError:
        raise _changed(name) from None
    try:
        copy_sparse(sfd, dfd, st.st_size)
        _meta(dfd, st, archive)
    finally:
        os.close(dfd)


def _write_link(target: str, st: os.stat_result | _M, d: int, name: str, archive: bool) -> None:
    _clear(d, name)
    os.symlink(target, name, dir_fd=d)
    if archive:
        with contextlib.suppress(OSError):
            os.chown(name, st.st_uid, st.st_gid, dir_fd=d, follow_symlinks=False)
    with contextlib.suppress(OSError):
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=d, follow_symlinks=False)


def _write_fifo(st: os.stat_result | _M, d: int, name: str, archive: bool) -> None:
    _clear(d, name)
    os.mkfifo(name, stat.S_IMODE(st.st_mode), dir_fd=d)
    if archive:
        with contextlib.suppress(OSError):
            os.chown(name, st.st_uid, st.st_gid, dir_fd=d, follow_symlinks=False)


def _copy_tree(top: _Top, dst_parent: int, dst_name: str, into: int | None,
               archive: bool) -> None:
    """The source tree at dst_parent/dst_name, or merged into the open directory *into*."""
    stack: list[int] = []
    try:
        for ev in _walk(top):
            d = stack[-1] if stack else dst_parent
            name = ev.rel.rpartition("/")[2] if ev.rel else dst_name
            if ev.kind == "enter":
                stack.append(os.dup(into) if not ev.rel and into is not None
                             else _make_dir(d, name))
            elif ev.kind == "leave":
                fd = stack.pop()
                try:
                    _meta(fd, ev.st, archive)
                finally:
                    os.close(fd)
            elif ev.kind == "file":
                _write_file(ev.fd, ev.st, d, name, archive)
            elif ev.kind == "link":
                _write_link(os.readlink(ev.name, dir_fd=ev.parent), ev.st, d, name, archive)
            elif ev.kind == "fifo":
                _write_fifo(ev.st, d, name, archive)
    finally:
        for fd in stack:
            os.close(fd)


def _tar_out(top: _Top, prefix: str, out_fd: int) -> None:
    """The source tree as a tar on out_fd, its entries under prefix ("" for contents)."""
    out = os.fdopen(os.dup(out_fd), "wb", buffering=1 << 20)
    with out, tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT,
                           bufsize=1 << 20) as tf:
        tf.copybufsize = 1 << 20  # type: ignore[attr-defined]  # 16 KiB by default
        for ev in _walk(top):
            if ev.kind == "leave":
                continue
            name = "/".join(p for p in (prefix, ev.rel) if p) or "."
            info = tarfile.TarInfo(name)
            st = ev.st
            info.mode, info.uid, info.gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
            info.mtime = st.st_mtime
            if ev.kind == "enter":
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            elif ev.kind == "file":
                info.size = st.st_size
                with os.fdopen(os.dup(ev.fd), "rb") as f:
                    tf.addfile(info, _Exact(f, st.st_size))
            elif ev.kind == "link":
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(ev.name, dir_fd=ev.parent)
                tf.addfile(info)
            elif ev.kind == "fifo":
                info.type = tarfile.FIFOTYPE
                tf.addfile(info)


class _Exact:
    """A file read as exactly *size* bytes (one the container grows or shrinks while
    it is read is cut or padded, never a broken tar)."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n) if n else b""
        if len(data) < n:
            data += b"\0" * (n - len(data))
        self.left -= len(data)
        return data


def _components(name: str) -> list[str]:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"invalid tar entry {name!r}: it leads out of the destination", 1)
    return parts


def _open_parent(dest: int, parts: list[str], make: bool) -> int:
    """The directory holding parts[-1] below dest, each step O_NOFOLLOW."""
    fd = os.dup(dest)
    try:
        for part in parts[:-1]:
            try:
                nxt = os.open(part, _DIR, dir_fd=fd)
            except FileNotFoundError:
                if not make:
                    raise
                nxt = _make_dir(fd, part)
                os.fchmod(nxt, 0o755)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise InvalidArgument(f"{'/'.join(parts)}: {part!r} is not a directory "
                                          "(a symlink is never followed)", 1) from None
                raise
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _untar(in_fd: int, dest: int, archive: bool) -> None:
    """A tar from in_fd into the directory dest; entries never leave it."""
    src = os.fdopen(os.dup(in_fd), "rb", buffering=1 << 20)
    dirs: list[tuple[list[str], tarfile.TarInfo]] = []
    with src, tarfile.open(fileobj=src, mode="r|*", bufsize=1 << 20) as tf:
        for info in tf:
            parts = _components(info.name)
            if not parts:
                continue
            d = _open_parent(dest, parts, make=True)
            name = parts[-1]
            try:
                st = _tar_stat(info, archive)
                if info.isdir():
                    os.close(_make_dir(d, name))
                    dirs.append((parts, info))
                elif info.isreg():
                    f = tf.extractfile(info)
                    assert f is not None
                    _clear(d, name)
                    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, 0o600, dir_fd=d)
                    try:
                        while chunk := f.read(1 << 20):
                            view = memoryview(chunk)
                            while view:
                                view = view[os.write(fd, view):]
                        _meta(fd, st, archive)
                    finally:
                        os.close(fd)
                elif info.issym():
                    _write_link(info.linkname, st, d, name, archive)
                elif info.islnk():
                    tparts = _components(info.linkname)
                    tp = _open_parent(dest, tparts, make=False)
                    try:
                        _clear(d, name)
                        os.link(tparts[-1], name, src_dir_fd=tp, dst_dir_fd=d,
                                follow_symlinks=False)
                    finally:
                        os.close(tp)
                elif info.isfifo():
                    _write_fifo(st, d, name, archive)
            finally:
                os.close(d)
    for parts, info in reversed(dirs):  # modes and times once their contents are in
        with contextlib.suppress(OSError):
            d = _open_parent(dest, parts, make=False)
            try:
                fd = os.open(parts[-1], _DIR, dir_fd=d)
                try:
                    _meta(fd, _tar_stat(info, archive), archive)
                finally:
                    os.close(fd)
            finally:
                os.close(d)


def _tar_stat(info: tarfile.TarInfo, archive: bool) -> _M:
    ns = int(info.mtime * 1e9)
    return _M(info.mode & 0o7777, info.uid if archive else 0, info.gid if archive else 0, ns, ns)


# -- docker's path rules -----------------------------------------------------------------


def _contents_only(path: str) -> bool:
    return path == "." or path.endswith("/.")


def _wants_dir(path: str) -> bool:
    return path.endswith("/") or _contents_only(path)


def _not_found(path: str, ctr: Container) -> NotFound:
    return NotFound(f"Could not find the file {path} in container {ctr.label}", 1)


def _split(path: str) -> tuple[str, str]:
    """(parent, base) of a path, `.`/`/` endings ignored."""
    clean = os.path.normpath("/" + path) if not path.startswith("/") else os.path.normpath(path)
    clean = "/" + clean.lstrip("/")
    parent, _, base = clean.rpartition("/")
    return parent or "/", base


def copy_from_container(ctr: Container, src: str, dest: str | None, opts: CopyOptions,
                        out_fd: int = 1) -> None:
    """CTR:src to the host path dest (absolute), or as a tar on out_fd (dest None)."""
    parent, base = _split(src)
    follow = opts.follow or _wants_dir(src)
    dest_plan = _host_dest(dest) if dest is not None else (False, False)

    def job(root: int) -> None:
        try:
            top = _top(lambda: open_in_root(root, parent, os.O_PATH | os.O_DIRECTORY),
                       lambda: open_in_root(root, src), base, follow)
        except (FileNotFoundError, NotADirectoryError):
            raise _not_found(src, ctr) from None
        try:
            is_dir = stat.S_ISDIR(top.st.st_mode)
            if _wants_dir(src) and not is_dir:
                raise InvalidArgument(f"{src}: not a directory", 1)
            if dest is None:
                _tar_out(top, "" if _contents_only(src) or not base else base, out_fd)
                return
            _to_host(top, base, is_dir, _contents_only(src) or not base, dest, dest_plan,
                     opts.archive)
        finally:
            top.close()

    in_container(ctr, job)


def _host_dest(dest: str) -> tuple[bool, bool]:
    """(exists, is a directory) of the host destination, following symlinks as
    docker does; its parent must exist."""
    if os.path.isdir(dest):
        return True, True
    if os.path.lexists(dest):
        return True, False
    if dest.endswith("/"):
        raise NotFound(f"destination directory {dest} must exist", 1)
    parent = os.path.dirname(dest.rstrip("/")) or "/"
    if not os.path.isdir(parent):
        raise NotFound(f"lstat {parent}: no such file or directory", 1)
    return False, False


def _to_host(top: _Top, base: str, is_dir: bool, contents: bool, dest: str,
             plan: tuple[bool, bool], archive: bool) -> None:
    exists, dest_is_dir = plan
    if is_dir and exists and not dest_is_dir:
        raise InvalidArgument(f"cannot copy a directory to a file: {dest}", 1)
    if exists and dest_is_dir:
        dfd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if is_dir and contents:
                _copy_tree(top, dfd, ".", dfd, archive)
            else:
                _copy_tree(top, dfd, base or ".", None, archive)
        finally:
            os.close(dfd)
        return
    clean = dest.rstrip("/") or "/"
    pfd = os.open(os.path.dirname(clean) or "/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _copy_tree(top, pfd, os.path.basename(clean), None, archive)
    finally:
        os.close(pfd)


def copy_to_container(ctr: Container, src: str | None, dest: str, opts: CopyOptions,
                      in_fd: int = 0) -> None:
    """The host path src (absolute), or a tar on in_fd (src None), to CTR:dest."""
    if src is not None:
        follow = opts.follow or _wants_dir(src)
        if not os.path.lexists(src if not follow else src.rstrip("/") or "/"):
            raise NotFound(f"lstat {src.rstrip('/') or '/'}: no such file or directory", 1)
        real = os.path.realpath(src) if follow else src.rstrip("/") or "/"
        if _wants_dir(src) and not os.path.isdir(real):
            raise InvalidArgument(f"{src}: not a directory", 1)
        src_parent, src_base = os.path.dirname(real) or "/", os.path.basename(real)
        base = _split(src)[1]  # the name as given (a followed link keeps its own)
    dparent, dbase = _split(dest)

    def job(root: int) -> None:
        into: int | None = None
        try:
            into = open_in_root(root, dest, os.O_RDONLY | os.O_DIRECTORY)
        except NotADirectoryError:
            pass
        except FileNotFoundError:
            if src is None:
                raise _not_found(dest, ctr) from None
        if src is None:
            if into is None:
                raise InvalidArgument(f"extraction point is not a directory: {dest}", 1)
            try:
                _untar(in_fd, into, opts.archive)
            finally:
                os.close(into)
            return
        top = _top(lambda: os.open(src_parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC),
                   lambda: os.open(real, os.O_PATH | os.O_CLOEXEC), src_base, follow)
        try:
            is_dir = stat.S_ISDIR(top.st.st_mode)
            if into is not None:
                if is_dir and _contents_only(src):
                    _copy_tree(top, into, ".", into, opts.archive)
                else:
                    _copy_tree(top, into, base, None, opts.archive)
                return
            if dest.endswith("/"):
                raise _not_found(dest, ctr)
            try:
                pfd = open_in_root(root, dparent, os.O_PATH | os.O_DIRECTORY)
            except (FileNotFoundError, NotADirectoryError):
                raise _not_found(dparent, ctr) from None
            try:
                if is_dir and stat.S_ISREG(_lstat_or_dir(pfd, dbase)):
                    raise InvalidArgument(f"cannot copy a directory to a file: {dest}", 1)
                _copy_tree(top, pfd, dbase, None, opts.archive)
            finally:
                os.close(pfd)
        finally:
            top.close()
            if into is not None:
                os.close(into)

    in_container(ctr, job)


def _lstat_or_dir(d: int, name: str) -> int:
    try:
        return os.lstat(name, dir_fd=d).st_mode
    except FileNotFoundError:
        return stat.S_IFDIR
