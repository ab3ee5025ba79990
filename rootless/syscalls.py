"""The few Linux syscalls Python 3.11's os module lacks, wrapped with ctypes.

Kept in one small module so that the rest of rl reads as plain Python and a
later Python (3.12 has os.unshare/os.setns) can replace pieces one by one.
Every wrapper raises OSError with errno set, like the os module does.
"""

from __future__ import annotations

import ctypes
import errno
import os

_libc = ctypes.CDLL(None, use_errno=True)

# <linux/sched.h>
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# <linux/mount.h>
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

MNT_DETACH = 2

# <linux/prctl.h>
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

# <linux/close_range.h>
CLOSE_RANGE_CLOEXEC = 4

# <fcntl.h>
AT_SYMLINK_NOFOLLOW = 0x100

# <linux/openat2.h>
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

_SYSCALLS = {
    "x86_64": {"pivot_root": 155, "close_range": 436, "execveat": 322, "openat2": 437,
               "keyctl": 250},
    "aarch64": {"pivot_root": 41, "close_range": 436, "execveat": 281, "openat2": 437,
                "keyctl": 219},
}
KEYCTL_JOIN_SESSION_KEYRING = 1
# os.uname, not platform.machine: platform costs rl-oci ~10 ms of imports.
_NR = _SYSCALLS.get(os.uname().machine, _SYSCALLS["x86_64"])

_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [
    ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p,
]


def _check(ret: int, what: str, path: str | None = None) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return ret


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    ret = _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data))
    _check(ret, f"mount {fstype or source or ''} on {target}", target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), ctypes.c_int(flags)), f"umount {target}", target)


def join_new_session_keyring() -> None:
    """A new anonymous session keyring for this process (runc's): else a container's
    process inherits the user's own session keyring, and its keys, from whoever
    started it. ENOSYS (a kernel without keys) leaves nothing to inherit."""
    ret = _libc.syscall(ctypes.c_long(_NR["keyctl"]), ctypes.c_long(KEYCTL_JOIN_SESSION_KEYRING),
                        ctypes.c_void_p(None))
    if ret < 0:
        err = ctypes.get_errno()
        if err == errno.ENOSYS:
            return
        raise OSError(err, f"joining a new session keyring: {os.strerror(err)}"
                      + (" (raise kernel.keys.maxkeys: each running container holds one key "
                         "of its user's quota)" if err == errno.EDQUOT else ""))


def pivot_root(new_root: str, put_old: str) -> None:
    ret = _libc.syscall(ctypes.c_long(_NR["pivot_root"]), _b(new_root), _b(put_old))
    _check(ret, "pivot_root", new_root)


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    args = (ctypes.c_ulong(a) for a in (arg2, arg3, arg4, arg5))
    return _check(_libc.prctl(ctypes.c_int(option), *args), "prctl")


def close_range_cloexec(first: int) -> None:
    """Mark every fd >= first close-on-exec (Linux >= 5.11), else walk /proc/self/fd."""
    ret = _libc.syscall(
        ctypes.c_long(_NR["close_range"]), ctypes.c_uint(first), ctypes.c_uint(0xFFFFFFFF),
        ctypes.c_uint(CLOSE_RANGE_CLOEXEC),
    )
    if ret == 0:
        return
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd >= first:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass


def execveat(dirfd: int, name: str, argv: list[str], env: dict[str, str],
             flags: int = 0) -> None:
    """Execute *name* relative to the directory *dirfd* (returns only on failure).

    Unlike fexecve, the kernel names the new program after *name* (comm), not
    after the fd's number.
    """
    def strings(items: list[str]) -> ctypes.Array[ctypes.c_char_p]:
        return (ctypes.c_char_p * (len(items) + 1))(*[os.fsencode(i) for i in items], None)

    c_argv = strings(argv)
    c_env = strings([f"{k}={v}" for k, v in env.items()])
    _check(_libc.syscall(ctypes.c_long(_NR["execveat"]), ctypes.c_int(dirfd),
                         os.fsencode(name), c_argv, c_env, ctypes.c_int(flags)), "execveat", name)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    """openat2(2): *path* opened relative to *dirfd* under the *resolve* rules."""
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    return _check(_libc.syscall(ctypes.c_long(_NR["openat2"]), ctypes.c_int(dirfd),
                                os.fsencode(path), ctypes.byref(how),
                                ctypes.c_size_t(ctypes.sizeof(how))), f"open {path}", path)


# <linux/magic.h>: file systems whose files describe processes and the kernel
PROC_SUPER_MAGIC = 0x9FA0
SYSFS_MAGIC = 0x62656572


def fs_type(fd: int) -> int:
    """The f_type of fstatfs(2) on fd (the file system's magic number)."""
    buf = ctypes.create_string_buffer(256)  # struct statfs: f_type is its first word
    _check(_libc.fstatfs(ctypes.c_int(fd), buf), "fstatfs")
    return ctypes.c_long.from_buffer(buf).value


def close_fds_except(keep: set[int]) -> None:
    """Close every descriptor but stdio and *keep*: for a forked process that
    must hold nothing of its parent's (a lock, a socket, a pipe somebody
    waits on for EOF)."""
    start = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, 1 << 20)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set this thread's capability sets; each argument is a 64-bit mask."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def capget(pid: int = 0) -> tuple[int, int, int]:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    eff = data[0].effective | (data[1].effective << 32)
    perm = data[0].permitted | (data[1].permitted << 32)
    inh = data[0].inheritable | (data[1].inheritable << 32)
    return eff, perm, inh
