"""Storage drivers: how a container's root is made from image layers + a writable dir.

``mount(driver, lowers, upper, work, target)`` is the one entry point; it must
run as root of a user namespace, inside the mount namespace that should see
the root (a container's C1/C2 before pivot_root, or the test/benchmark agent).
*lowers* are listed top first, as in overlayfs' ``lowerdir``.

* ``overlay``: kernel overlayfs with ``userxattr`` (Linux >= 5.11 lets a user
  namespace mount it). Fastest, the default wherever a probe mount works.
* ``fuse``: rl's own overlay (overlay.py) served by a forked trio process.
* ``fuse-overlayfs``: the Debian binary, run in the foreground as our child.
* ``vfs``: no overlay at all: the layers are copied into *upper* once and
  *upper* is bind-mounted; the last resort that works everywhere.

All four leave the same upper dir layout (layout.py), so diff.py serves all.
"""

from __future__ import annotations

import contextlib
import errno
import os
import platform
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fs import layout
from fs.copy import copy_sparse
from rootless import syscalls as sc

if TYPE_CHECKING:
    from fs.overlay import Overlay

OVERLAYS = ("overlay", "fuse", "fuse-overlayfs")  # mount layers + an upper dir
DRIVERS = (*OVERLAYS, "vfs")
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_VFS_MARKER = "rl-vfs-populated"


class DriverError(Exception):
    """A driver can't mount; the message is one line for ``Error: ...``."""


@dataclass
class Choice:
    driver: str
    reason: str


@dataclass
class Mounted:
    driver: str
    target: str
    pid: int | None = None  # the serving process (fuse, fuse-overlayfs)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _status: int | None = field(default=None, repr=False)  # exit code, -N for signal N

    def unmount(self, timeout: float = 2.0) -> None:
        """Detach the mount (even when busy) and stop its server.

        A busy FUSE mount's server gets *timeout* seconds to finish with the
        open files; then it is stopped, and those users see ENOTCONN.
        """
        try:
            sc.umount2(self.target, sc.MNT_DETACH)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOENT):
                raise
        if self.pid is None:
            return
        deadline = time.monotonic() + timeout
        while not self._reaped():
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self._wait()
                break
            time.sleep(0.005)
        self.pid = None

    def server_error(self) -> str | None:
        """Why the serving process is gone (for rl to report), or None while it serves.

        Once it is gone, every access to the mount fails with ENOTCONN.
        """
        if self.pid is None or not self._reaped():
            return None
        st = self._status
        assert st is not None
        what = f"killed by signal {-st}" if st < 0 else f"exited with status {st}"
        return f"{self.driver} server (pid {self.pid}) {what}"

    def _reaped(self) -> bool:
        assert self.pid is not None
        if self._status is not None:
            return True
        if self._proc is not None:
            self._status = self._proc.poll()
        else:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._status = os.waitstatus_to_exitcode(status)
        return self._status is not None

    def _wait(self) -> None:
        if self._proc is not None:
            self._status = self._proc.wait()
        elif self.pid is not None and self._status is None:
            self._status = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])

    def __enter__(self) -> Mounted:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unmount()


def _check_layers(lowers: Sequence[str], upper: str, work: str) -> None:
    if not lowers:
        raise DriverError("no lower layer given")
    for kind, path in [*(("lower", p) for p in lowers), ("upper", upper), ("work", work)]:
        if not os.path.isdir(path):
            raise DriverError(f"{kind} layer {path}: no such directory")


@dataclass
class Serving:
    """How a server (fuse, fuse-overlayfs) outlives the process that mounted it.

    By default a server is tied to its parent (PR_SET_PDEATHSIG). A container's
    mount is made by a short-lived process (C1, see rootless/container.py), so
    there the server instead watches *life_fd*, the read end of a pipe whose
    write end only the supervisor holds: EOF means the supervisor is gone, and
    the server unmounts and exits. The server then keeps no descriptor but
    its own (no lock, socket or pipe of the mounting process's family).
    """

    life_fd: int


def mount(driver: str, lowers: Sequence[str], upper: str, work: str, target: str,
          serving: Serving | None = None) -> Mounted:
    """Mount *lowers* (top first) + *upper* on *target* with *driver*."""
    _check_layers(lowers, upper, work)
    if driver == "overlay":
        return _mount_overlay(lowers, upper, work, target)
    if driver == "fuse":
        return _mount_fuse(lowers, upper, work, target, serving)
    if driver == "fuse-overlayfs":
        if serving is not None:
            return _keep_serving(lowers, upper, work, target, serving)
        return _mount_fuse_overlayfs(lowers, upper, work, target)
    if driver == "vfs":
        return _mount_vfs(lowers, upper, work, target)
    raise DriverError(f"unknown storage driver {driver!r} (expected {', '.join(DRIVERS)})")


def _overlay_options(lowers: Sequence[str], upper: str, work: str) -> str:
    for p in [*lowers, upper, work]:
        # the legacy mount(2) option string has no escape for these
        if any(c in p for c in ",:\\"):
            raise DriverError(f"layer path {p!r} contains ',', ':' or '\\'")
    return f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work},userxattr"


_MOUNT_DATA_MAX = 4000  # mount(2) copies one page of options


def _mount_overlay(lowers: Sequence[str], upper: str, work: str, target: str) -> Mounted:
    fds: list[int] = []
    try:
        options = _overlay_options(lowers, upper, work)
        if len(options) > _MOUNT_DATA_MAX:
            # Many layers: name each by an fd of ours (~16 bytes, not ~90); the
            # kernel resolves the paths while mounting, so they may close after.
            fds = [os.open(p, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for p in lowers]
            options = _overlay_options([f"/proc/self/fd/{fd}" for fd in fds], upper, work)
            if len(options) > _MOUNT_DATA_MAX:
                raise DriverError(f"kernel overlayfs: {len(lowers)} layers are too many "
                                  "for one mount")
        sc.mount("overlay", target, "overlay", 0, options)
    except OSError as e:
        raise DriverError(f"kernel overlayfs: {e.strerror}") from None
    finally:
        for fd in fds:
            os.close(fd)
    return Mounted("overlay", target)


def _mount_fuse(lowers: Sequence[str], upper: str, work: str, target: str,
                serving: Serving | None = None) -> Mounted:
    import trio

    from fs import fuse, overlay  # deferred with trio: the fuse driver only

    try:
        ops = overlay.Overlay(lowers, upper, work)
    except overlay.LayerError as e:
        raise DriverError(str(e)) from None
    try:
        fd = fuse.mount(target)
    except OSError as e:
        ops.close()
        raise DriverError(f"fuse: {e.strerror}") from None
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the server
        code = 0
        try:
            # Held until trio listens for them: a stop request that comes while
            # the server is still starting must not be lost (nor meet a handler
            # inherited from the caller).
            signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
            for sig in _STOP_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            if serving is None:
                sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGTERM)
                if os.getppid() != parent:
                    os.kill(os.getpid(), signal.SIGTERM)
            else:
                sc.close_fds_except({fd, serving.life_fd, *ops.fds, ops.work_fd})
            os.umask(0)  # the kernel has applied the caller's umask already
            # A wakeup fd inherited from a forking event loop (a restart's launch runs
            # beside the supervisor's trio) names a descriptor closed above: trio would
            # restore it at exit and fail with EBADF, so the server exited 1 at stop.
            with contextlib.suppress(ValueError, OSError):
                signal.set_wakeup_fd(-1)
            trio.run(_serve_until_gone, fd, ops, target,
                     serving.life_fd if serving else None)
        except BaseException:
            # The mount's users see ENOTCONN; the reason goes to our stderr.
            import traceback
            traceback.print_exc()
            code = 1
        os._exit(code)
    os.close(fd)  # the server's copy must be the last one, or its death hangs users
    ops.close()
    return Mounted("fuse", target, pid)


async def _serve_until_gone(fd: int, ops: Overlay, target: str, life_fd: int | None) -> None:
    import trio

    from fs import fuse  # deferred with trio: the fuse driver only

    async with trio.open_nursery() as nursery:
        def stop() -> None:
            with contextlib.suppress(OSError):
                fuse.unmount(target)
            nursery.cancel_scope.cancel()

        async def on_signal() -> None:
            with trio.open_signal_receiver(*_STOP_SIGNALS) as it:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
                async for _ in it:
                    stop()

        async def on_parent_gone(life: int) -> None:
            await trio.lowlevel.wait_readable(life)  # EOF: nothing is ever written
            stop()

        nursery.start_soon(on_signal)
        if life_fd is not None:
            nursery.start_soon(on_parent_gone, life_fd)
        await fuse.serve(fd, ops)
        nursery.cancel_scope.cancel()


def _mount_fuse_overlayfs(lowers: Sequence[str], upper: str, work: str, target: str,
                          death_signal: int = signal.SIGTERM) -> Mounted:
    binary = shutil.which("fuse-overlayfs")
    if binary is None:
        raise DriverError("fuse-overlayfs is not installed (Debian package fuse-overlayfs)")
    before = _fuse_mounts_at(target)
    opts = _overlay_options(lowers, upper, work).replace(",userxattr", "")

    def child_setup() -> None:
        sc.prctl(sc.PR_SET_PDEATHSIG, death_signal)

    proc = subprocess.Popen([binary, "-f", "-o", opts, target], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=child_setup)
    deadline = time.monotonic() + 10
    while _fuse_mounts_at(target) == before:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            raise DriverError(f"fuse-overlayfs: {err.splitlines()[-1] if err else 'failed'}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise DriverError("fuse-overlayfs: no mount after 10 s")
        time.sleep(0.002)
    assert proc.stderr is not None
    proc.stderr.close()
    return Mounted("fuse-overlayfs", target, proc.pid, proc)


def _keep_serving(lowers: Sequence[str], upper: str, work: str, target: str,
                  serving: Serving) -> Mounted:
    """fuse-overlayfs under a small keeper process that stops it when the
    supervisor is gone (the binary itself knows nothing of rl's life pipe)."""
    r, w = os.pipe()
    keeper = os.fork()
    if keeper == 0:
        code = 1
        try:
            os.close(r)
            sc.close_fds_except({w, serving.life_fd})
            for sig in _STOP_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
            try:
                # Killed with its keeper: a keeper gone without unmounting
                # means nobody is left to stop the server.
                mounted = _mount_fuse_overlayfs(lowers, upper, work, target, signal.SIGKILL)
            except DriverError as e:
                os.write(w, str(e).encode())
                os._exit(1)
            os.close(w)  # "mounted"
            code = _keep(mounted, serving.life_fd)
            if code < 0:  # the server was killed: so is its keeper, for the supervisor to see
                if -code != signal.SIGKILL:
                    signal.signal(-code, signal.SIG_DFL)
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, [-code])
                os.kill(os.getpid(), -code)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        err = f.read().decode(errors="replace")
    if err:
        os.waitpid(keeper, 0)
        raise DriverError(err)
    return Mounted("fuse-overlayfs", target, keeper)


def _keep(mounted: Mounted, life_fd: int) -> int:
    """The keeper's loop: until a stop signal, the supervisor's death or the server's."""
    import select

    assert mounted._proc is not None
    pidfd = os.pidfd_open(mounted._proc.pid)
    sig_r, sig_w = os.pipe()
    os.set_blocking(sig_w, False)
    signal.set_wakeup_fd(sig_w)
    for sig in _STOP_SIGNALS:
        signal.signal(sig, lambda *_: None)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    ready: list[int] = []
    while not ready:
        with contextlib.suppress(InterruptedError):
            ready, _, _ = select.select([pidfd, life_fd, sig_r], [], [])
    if pidfd in ready:
        return mounted._proc.wait()  # the server died: its status (-N: signal N)
    mounted.unmount()
    return 0


def _fuse_mounts_at(target: str) -> int:
    """How many FUSE mounts sit on *target* (the mount table; stat could block)."""
    real = os.path.realpath(target)
    n = 0
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            point = parts[4].encode().decode("unicode_escape")
            if point == real and parts[sep + 1].startswith("fuse"):
                n += 1
    return n


def _mount_vfs(lowers: Sequence[str], upper: str, work: str, target: str) -> Mounted:
    marker = os.path.join(work, _VFS_MARKER)
    if not os.path.exists(marker):
        for lower in reversed(lowers):
            apply_layer(lower, upper)
        with open(marker, "w"):
            pass
    try:
        sc.mount(upper, target, None, sc.MS_BIND | sc.MS_REC)
    except OSError as e:
        raise DriverError(f"vfs: bind mount: {e.strerror}") from None
    return Mounted("vfs", target)


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def apply_layer(src: str, dest: str) -> None:
    """Lay one extracted layer over *dest*, honouring its whiteouts and opaque dirs.

    Iterative and relative to directory fds: a layer at PATH_MAX depth is as
    good as any. Hard links inside the layer stay links. A directory's own
    metadata is set once everything below it is in place.
    """
    from fs import walk  # deferred: vfs copies and image unpacking only, never `rl run`

    walk.allow_deep_trees()
    links: dict[tuple[int, int], str] = {}  # (dev, ino) in the layer -> path below dest
    src_root, dst_root = os.open(src, _DIR), os.open(dest, _DIR)
    # (layer dir fd, dest dir fd, path below dest, names left, (parent fds, name, stat))
    Frame = tuple[int, int, str, list[str],
                  tuple[int, int, str, os.stat_result] | None]
    stack: list[Frame] = [(src_root, dst_root, "", sorted(os.listdir(src_root)), None)]
    try:
        while stack:
            sfd, dfd, rel, names, own = stack[-1]
            if not names:
                stack.pop()
                os.close(sfd)
                os.close(dfd)
                if own is not None:
                    psfd, pdfd, name, st = own
                    os.chown(name, st.st_uid, st.st_gid, dir_fd=pdfd, follow_symlinks=False)
                    _copy_meta(psfd, pdfd, name, st)
                continue
            name = names.pop()
            st = os.lstat(name, dir_fd=sfd)
            sub = f"{rel}/{name}" if rel else name
            if layout.is_whiteout_stat(st):
                walk.remove(name, dir_fd=dfd)
                continue
            if stat.S_ISDIR(st.st_mode):
                try:
                    there = os.lstat(name, dir_fd=dfd)
                except FileNotFoundError:
                    there = None
                if there is not None and (not stat.S_ISDIR(there.st_mode)
                                          or layout.is_opaque(f"/proc/self/fd/{sfd}/{name}")):
                    walk.remove(name, dir_fd=dfd)
                    there = None
                if there is None:
                    os.mkdir(name, 0o700, dir_fd=dfd)
                child_s = os.open(name, _DIR, dir_fd=sfd)
                child_d = os.open(name, _DIR, dir_fd=dfd)
                stack.append((child_s, child_d, sub, sorted(os.listdir(child_s)),
                              (sfd, dfd, name, st)))
                continue
            walk.remove(name, dir_fd=dfd)
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in links:
                os.link(links[key], name, src_dir_fd=dst_root, dst_dir_fd=dfd,
                        follow_symlinks=False)
                continue
            links[key] = sub
            if stat.S_ISREG(st.st_mode):
                fi = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sfd)
                try:
                    fo = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, 0o600, dir_fd=dfd)
                    try:
                        copy_sparse(fi, fo, st.st_size)
                    finally:
                        os.close(fo)
                finally:
                    os.close(fi)
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(name, dir_fd=sfd), name, dir_fd=dfd)
            else:
                os.mknod(name, st.st_mode, st.st_rdev, dir_fd=dfd)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dfd, follow_symlinks=False)
            _copy_meta(sfd, dfd, name, st)
    finally:
        for sfd, dfd, *_ in stack:
            os.close(sfd)
            os.close(dfd)


def _copy_meta(sfd: int, dfd: int, name: str, st: os.stat_result) -> None:
    """Mode (after chown, which clears set-id bits), xattrs without the layer's own
    overlay marks, then times; a symlink has only times."""
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dfd)
        s_path, d_path = f"/proc/self/fd/{sfd}/{name}", f"/proc/self/fd/{dfd}/{name}"
        for attr in os.listxattr(s_path, follow_symlinks=False):
            if not attr.startswith("user.overlay."):
                os.setxattr(d_path, attr, os.getxattr(s_path, attr, follow_symlinks=False),
                            follow_symlinks=False)
    os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dfd, follow_symlinks=False)


# ----------------------------------------------------------------------
# Detection (for rl info and the default of --storage-driver)


def _probe_overlay(where: str | None) -> str | None:
    """Mount a tiny overlay in a throwaway user+mount namespace; None if it works.

    *where* is the directory the layers will live in: its file system must
    take an upper layer (user xattrs, whiteouts; NFS does not).
    """
    tmp = tempfile.mkdtemp(prefix=".rl-probe-", dir=where)
    for d in ("l", "u", "w", "m"):
        os.mkdir(os.path.join(tmp, d))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        msg = b""
        try:
            os.close(r)
            uid, gid = os.getuid(), os.getgid()
            sc.unshare(sc.CLONE_NEWUSER | sc.CLONE_NEWNS)
            for name, text in (("uid_map", f"0 {uid} 1"), ("setgroups", "deny"),
                               ("gid_map", f"0 {gid} 1")):
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(text)
            sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
            sc.mount("overlay", f"{tmp}/m", "overlay", 0,
                     f"lowerdir={tmp}/l,upperdir={tmp}/u,workdir={tmp}/w,userxattr")
        except OSError as e:
            msg = (e.strerror or str(e)).encode()
        except BaseException as e:
            msg = str(e).encode() or b"failed"
        os.write(w, msg)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode(errors="replace")
    os.waitpid(pid, 0)
    from fs import walk

    with contextlib.suppress(OSError):
        walk.remove(tmp)  # it opens up the mode-000 work/work the kernel leaves
    return out or None


def kernel_at_least(major: int, minor: int) -> bool:
    try:
        parts = platform.release().split(".")
        return (int(parts[0]), int(parts[1].split("-")[0])) >= (major, minor)
    except (IndexError, ValueError):
        return False


def fuse_usable() -> str | None:
    """None if /dev/fuse can be opened, else why not."""
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC))
    except OSError as e:
        return f"/dev/fuse: {e.strerror}"
    return None


def detect_default(where: str | None = None) -> Choice:
    """The driver ``rl run`` uses without --storage-driver, and why (probed in *where*)."""
    if not kernel_at_least(5, 11):
        why = f"kernel {platform.release()} < 5.11 has no overlayfs in user namespaces"
    else:
        failed = _probe_overlay(where)
        if failed is None:
            return Choice("overlay", "kernel overlayfs mounts in a user namespace (userxattr)")
        why = f"kernel overlayfs in a user namespace failed: {failed}"
    fuse_why = fuse_usable()
    if fuse_why is None:
        return Choice("fuse", f"{why}; /dev/fuse is usable, so rl's FUSE overlay")
    return Choice("vfs", f"{why}; {fuse_why}; copying layers (vfs)")

