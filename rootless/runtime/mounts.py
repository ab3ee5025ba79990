"""The container's mount namespace: its mounts, pivot_root, masked and read-only paths.

Runs in the container's first process (PID 1 of its PID namespace, root of its
user namespace) before the command is executed. Every target path is resolved
inside the rootfs (secure_join), so a symlink in an untrusted rootfs can never
point a mount at the host.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable

from .. import syscalls as sc
from ..errors import InvalidArgument, RlError
from .spec import Mount, Spec

_FLAGS = {
    "ro": sc.MS_RDONLY, "rw": 0, "nosuid": sc.MS_NOSUID, "suid": 0, "nodev": sc.MS_NODEV,
    "dev": 0, "noexec": sc.MS_NOEXEC, "exec": 0, "sync": sc.MS_SYNCHRONOUS,
    "dirsync": sc.MS_DIRSYNC, "noatime": sc.MS_NOATIME, "nodiratime": sc.MS_NODIRATIME,
    "relatime": sc.MS_RELATIME, "strictatime": sc.MS_STRICTATIME, "bind": sc.MS_BIND,
    "rbind": sc.MS_BIND | sc.MS_REC,
}
_PROPAGATION = {"private", "rprivate", "slave", "rslave", "shared", "rshared"}

# statvfs flags that the kernel locks on a mount made in a less privileged
# namespace; a read-only remount must repeat them or it fails with EPERM.
_LOCKED = [
    (os.ST_NOSUID, sc.MS_NOSUID), (os.ST_NODEV, sc.MS_NODEV), (os.ST_NOEXEC, sc.MS_NOEXEC),
    (os.ST_NOATIME, sc.MS_NOATIME), (os.ST_NODIRATIME, sc.MS_NODIRATIME),
    (os.ST_RELATIME, sc.MS_RELATIME),
]


# rl's own bind option (a volume's): before the bind, an empty source gets a copy
# of what the rootfs has at the mount point, as docker fills a new volume.
COPY_UP = "rl-copy-up"


def parse_options(options: list[str]) -> tuple[int, str]:
    flags, data = 0, []
    for opt in options:
        if opt in _FLAGS:
            flags |= _FLAGS[opt]
        elif opt in _PROPAGATION or opt == COPY_UP:
            continue
        else:
            data.append(opt)
    return flags, ",".join(data)


def secure_join(root: str, unsafe: str) -> str:
    """root + unsafe with every symlink resolved as if root were '/'."""
    parts = [p for p in unsafe.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    budget = 255
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            budget -= 1
            if budget < 0:
                raise RlError(f"too many levels of symbolic links in {unsafe}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def container_path(path: str) -> str:
    """path as the kernel resolves it in the container: '.', '..', '//' and a
    trailing '/' folded (posixpath keeps a leading '//', the kernel does not)."""
    return "/" + os.path.normpath("/" + path).lstrip("/")


# Files under /proc a bind may replace: runc's checkProcMount list, the ones
# lxcfs emulates.
PROC_BINDABLE = frozenset({
    "/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
    "/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid", "/proc/sys/crypto/fips_enabled",
})


def refused_destination(dest: str) -> str | None:
    """Why a user's mount may not go at dest (in container_path form).

    Over / it would replace the root; over /proc, or anything in it, it would
    replace procfs or escape the masks that are applied after the mounts; over
    /dev it would take the place of rl's tmpfs, in which rl writes its /dev
    symlinks (into the host's directory, for a bind).
    """
    if dest == "/":
        return "invalid specification: destination can't be '/'"
    if dest == "/proc":
        return '"/proc" cannot be mounted because it is not of type proc'
    if dest.startswith("/proc/") and dest not in PROC_BINDABLE:
        return f'"{dest}" cannot be mounted because it is inside /proc'
    if dest == "/dev":
        return ('"/dev" cannot be mounted over: it is the container\'s own tmpfs of '
                "device nodes (mount below it instead, e.g. /dev/shm)")
    return None


def _in_root(root_fd: int, rel: str, flags: int = os.O_PATH) -> int:
    """rel opened below root_fd, every symlink resolved inside it (openat2)."""
    return sc.openat2(root_fd, rel or ".", flags, sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS)


def _make_target(root_fd: int, rel: str, is_dir: bool) -> None:
    """The mount point rel (and its parents) below root_fd, where missing.

    Each step is made relative to a directory fd resolved inside the root:
    a container that shares a directory with this one (a volume) and swaps
    a component for a symlink while this one starts can never make rl
    create anything outside the root.
    """
    parts = [p for p in rel.split("/") if p]
    for i, part in enumerate(parts):
        try:
            os.close(_in_root(root_fd, "/".join(parts[:i + 1])))
            continue
        except FileNotFoundError:
            pass
        parent = _in_root(root_fd, "/".join(parts[:i]), os.O_PATH | os.O_DIRECTORY)
        try:
            if is_dir or i < len(parts) - 1:
                os.mkdir(part, dir_fd=parent)
            else:
                os.close(os.open(part, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, 0o644, dir_fd=parent))
        except FileExistsError:
            pass
        finally:
            os.close(parent)


def _open_target(root_fd: int, rel: str, expected: str) -> int:
    """An O_PATH fd of the mount point, which must still be where secure_join
    found it (and the refused-destination check passed it)."""
    fd = _in_root(root_fd, rel)
    actual = os.readlink(f"/proc/self/fd/{fd}")
    if actual != expected:
        os.close(fd)
        raise RlError(f"the mount point {expected} changed while the container was "
                      f"starting (it now leads to {actual})")
    return fd


def locked_flags(path: str) -> int:
    f_flag = os.statvfs(path).f_flag
    return sum(ms for st_flag, ms in _LOCKED if f_flag & st_flag)


def remount_readonly(path: str, extra: int = 0) -> None:
    flags = sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | extra | locked_flags(path)
    sc.mount(None, path, None, flags)


def _unescape(field: str) -> str:
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def remount_readonly_recursive(target: str) -> None:
    """Read-only for target and every mount below it (a bind's top mount alone is not enough)."""
    with open("/proc/self/mountinfo") as f:
        points = [_unescape(line.split()[4]) for line in f]
    prefix = target.rstrip("/") + "/"
    for point in [p for p in points if p == target or p.startswith(prefix)]:
        try:
            remount_readonly(point)
        except OSError:
            # A mount we cannot touch (locked by a more privileged namespace)
            # must not stay writable: hide it instead.
            sc.mount("tmpfs", point, "tmpfs", sc.MS_RDONLY, "size=0")


def _bind(m: Mount, root_fd: int, rel: str, target: str, flags: int) -> None:
    assert m.source is not None
    if not os.path.exists(m.source):
        raise InvalidArgument(f"bind source path does not exist: {m.source}")
    _make_target(root_fd, rel, os.path.isdir(m.source))
    fd = _open_target(root_fd, rel, target)
    try:
        if COPY_UP in m.options:
            _copy_up(fd, m.source)
        sc.mount(m.source, f"/proc/self/fd/{fd}", None, sc.MS_BIND | (flags & sc.MS_REC))
    finally:
        os.close(fd)
    extra = flags & ~(sc.MS_BIND | sc.MS_REC | sc.MS_RDONLY)
    if not flags & sc.MS_RDONLY and not extra:
        return
    # Opened again, so that the fd is the new mount's root: the remount must
    # reach the bind just made, whatever happened to the path since.
    fd = _open_target(root_fd, rel, target)
    try:
        here = f"/proc/self/fd/{fd}"
        if flags & sc.MS_RDONLY and flags & sc.MS_REC:
            remount_readonly_recursive(target)
        elif flags & sc.MS_RDONLY:
            remount_readonly(here, extra)
        else:
            sc.mount(None, here, None, sc.MS_BIND | sc.MS_REMOUNT | extra | locked_flags(here))
    finally:
        os.close(fd)


def _copy_up(target_fd: int, volume: str) -> None:
    """An empty volume gets the tree at the mount point: owners, modes, times and
    symlinks as they are (root of the userns, every id mapped). Walked through
    directory fds with no symlink followed, so the image's tree cannot lead the
    copy out of it; fifos, sockets and devices are left out."""
    if os.listdir(volume):
        return
    try:
        src = os.open(f"/proc/self/fd/{target_fd}", os.O_RDONLY | os.O_DIRECTORY)
    except NotADirectoryError:
        return
    dst = os.open(volume, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        st = os.fstat(src)
        os.fchown(dst, st.st_uid, st.st_gid)
        os.fchmod(dst, stat.S_IMODE(st.st_mode))
        _copy_dir(src, dst)
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    finally:
        os.close(src)
        os.close(dst)


def _copy_dir(src: int, dst: int) -> None:
    for name in os.listdir(src):
        st = os.lstat(name, dir_fd=src)
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(name, 0o700, dir_fd=dst)
            s = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=src)
            d = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dst)
            try:
                _copy_dir(s, d)
                os.fchown(d, st.st_uid, st.st_gid)
                os.fchmod(d, mode)
                os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(s)
                os.close(d)
        elif stat.S_ISREG(st.st_mode):
            s = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=src)
            d = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                        dir_fd=dst)
            try:
                while os.sendfile(d, s, None, 1 << 20):
                    pass
                os.fchown(d, st.st_uid, st.st_gid)
                os.fchmod(d, mode)  # after chown, which clears setuid bits
                os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(s)
                os.close(d)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=src), name, dir_fd=dst)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dst, follow_symlinks=False)


def apply_mount(rootfs: str, m: Mount) -> None:
    target = secure_join(rootfs, m.destination)
    # Checked at create against the path as given (api); a symlink in the
    # rootfs may still lead it to /proc or /dev, which only shows here.
    resolved = target[len(rootfs):] or "/"
    if resolved != container_path(m.destination):
        why = refused_destination(resolved)
        if why is not None:
            raise InvalidArgument(f"mounting {m.source or m.type} on {m.destination} (which is "
                                  f"{resolved} in the rootfs): {why}")
    # From here on the path is only reached through fds resolved inside the
    # root, and must still be the one checked (a shared volume may change).
    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        rel = resolved.lstrip("/")
        real = os.path.realpath(rootfs)
        _apply_at(m, root_fd, rel, os.path.join(real, rel) if rel else real)
    finally:
        os.close(root_fd)


def _apply_at(m: Mount, root_fd: int, rel: str, target: str) -> None:
    flags, data = parse_options(m.options)
    if m.type == "bind" or flags & sc.MS_BIND:
        _bind(m, root_fd, rel, target, flags)
        return
    _make_target(root_fd, rel, True)
    fd = _open_target(root_fd, rel, target)
    try:
        _mount_fs(m, f"/proc/self/fd/{fd}", target, flags, data)
    finally:
        os.close(fd)


def _mount_fs(m: Mount, here: str, target: str, flags: int, data: str) -> None:
    """A file system of m's type on here (target's mount point, as a /proc/self/fd path)."""
    if m.type == "sysfs":
        try:
            sc.mount("sysfs", here, "sysfs", flags, data or None)
        except OSError as e:
            if e.errno != errno.EPERM:
                raise
            # No network namespace of our own: the kernel refuses a fresh
            # sysfs, so show the host's, read-only.
            sc.mount("/sys", here, None, sc.MS_BIND | sc.MS_REC)
            remount_readonly_recursive(target)
        return
    try:
        sc.mount(m.source or m.type, here, m.type, flags, data or None)
    except OSError as e:
        if m.type == "cgroup2" and e.errno == errno.EBUSY:
            # The same cgroup2 superblock (there is one) is mounted right there
            # (--network host: the host's /sys, bound read-only), and the kernel
            # refuses to stack a file system on its own mount point: put an empty
            # read-only tmpfs in between.
            sc.mount("tmpfs", here, "tmpfs", sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV
                     | sc.MS_NOEXEC, "size=0,mode=755")
            sc.mount(m.source or m.type, here, m.type, flags, data or None)
            return
        if m.type == "mqueue" and e.errno == errno.EPERM:
            return  # an mqueue needs an IPC namespace of ours: skip it, as runc does
        raise


def _dev_symlinks(rootfs: str, dev_id: int | None) -> None:
    """/dev/fd and friends, in rl's /dev tmpfs (st_dev dev_id) and nowhere else:
    never in a directory a mount brought in."""
    dev = secure_join(rootfs, "/dev")
    if dev_id is None or os.stat(dev).st_dev != dev_id:
        return
    links = {
        "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
        "stderr": "/proc/self/fd/2", "core": "/proc/kcore", "ptmx": "pts/ptmx",
    }
    for name, target in links.items():
        with contextlib.suppress(FileExistsError):
            os.symlink(target, os.path.join(dev, name))


def pivot(rootfs: str) -> None:
    """pivot_root into rootfs and detach the old root (runc's '.' '.' trick: no temp dir)."""
    old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new_root = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(new_root)
        sc.pivot_root(".", ".")
        os.fchdir(old_root)
        # The old root is stacked on '.', make it private so the unmount
        # cannot propagate to the host, then let it go.
        sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC)
        sc.umount2(".", sc.MNT_DETACH)
        os.chdir("/")
    finally:
        os.close(old_root)
        os.close(new_root)


def mask_paths(paths: list[str]) -> None:
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            sc.mount("tmpfs", p, "tmpfs", sc.MS_RDONLY, "size=0")
        else:
            sc.mount("/dev/null", p, None, sc.MS_BIND)


def readonly_paths(paths: list[str]) -> None:
    for p in paths:
        if not os.path.exists(p):
            continue
        sc.mount(p, p, None, sc.MS_BIND | sc.MS_REC)
        remount_readonly(p)


# docker's /sys/fs/cgroup on cgroup v2 (cgroupns=private, not privileged): the
# container's own cgroup, the root of its cgroup namespace, read-only.
CGROUPFS = Mount("/sys/fs/cgroup", "cgroup2", "cgroup2",
                 ["nosuid", "noexec", "nodev", "relatime", "ro"])


def with_cgroupfs(mounts: list[Mount]) -> list[Mount]:
    """mounts with CGROUPFS right after the /sys mount, as docker orders them.

    Unchanged when there is no sysfs to put it on, or when a mount (the
    user's -v) already targets /sys/fs/cgroup, /sys or /sys/fs: that one wins.
    """
    dests = [container_path(m.destination) for m in mounts]
    sysfs = [i for i, m in enumerate(mounts) if dests[i] == "/sys" and m.type == "sysfs"]
    if not sysfs or CGROUPFS.destination in dests:
        return mounts
    # A user's mount on /sys or /sys/fs replaces the tree the mount point
    # would be made in: making it would write into their source.
    if any(d in ("/sys", "/sys/fs") for i, d in enumerate(dests) if i != sysfs[-1]):
        return mounts
    i = sysfs[-1] + 1
    return [*mounts[:i], CGROUPFS, *mounts[i:]]


def setup(spec: Spec, cgroupfs: bool = False,
          before_pivot: Callable[[], None] | None = None) -> None:
    """Build the container's filesystem view and pivot_root into it.

    cgroupfs: mount the container's cgroup (the root of its own cgroup
    namespace) read-only at /sys/fs/cgroup (CGROUPFS). before_pivot runs
    once everything is mounted, while the host's tree is still `/` (OCI
    hooks: createRuntime, createContainer).
    """
    rootfs = os.path.realpath(spec.root.path)
    if not os.path.isdir(rootfs):
        raise RlError(f"rootfs does not exist: {spec.root.path}")
    # Nothing we mount may propagate back to the host's namespaces (slave:
    # host mounts made later still show, as with runc's default rslave).
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_SLAVE)
    sc.mount(rootfs, rootfs, None, sc.MS_BIND | sc.MS_REC)
    dev_id = None
    for m in with_cgroupfs(spec.mounts) if cgroupfs else spec.mounts:
        try:
            apply_mount(rootfs, m)
            if container_path(m.destination) == "/dev":  # rl's tmpfs: users' are refused
                dev_id = os.stat(secure_join(rootfs, "/dev")).st_dev
        except OSError as e:
            raise RlError(f"mounting {m.source or m.type} on {m.destination}: "
                          f"{os.strerror(e.errno or 0)}") from e
    _dev_symlinks(rootfs, dev_id)
    if before_pivot is not None:
        before_pivot()
    pivot(rootfs)
    mask_paths(spec.linux.masked_paths)
    readonly_paths(spec.linux.readonly_paths)
    if spec.root.readonly:
        remount_readonly("/")
