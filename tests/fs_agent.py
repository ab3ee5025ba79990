"""A helper for test_fs.py and benchmarks/fs.py, run as root of a user namespace.

    unshare --map-root-user --map-auto --mount python fs_agent.py

It reads one JSON request per line on stdin and answers one JSON line on
stdout, so a test (running as the plain user) can mount every driver in a
namespace of its own and act on the mounts as root or as another id. Paths
travel as str with surrogate escapes (JSON keeps lone surrogates).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import subprocess
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fs import drivers

mounts: dict[str, drivers.Mounted] = {}
held: dict[int, int] = {}
named: dict[tuple[str, str], int] = {}  # (mount, key): fds the fd_* fsops act on


def _fd(root: str, key: str) -> int:
    try:
        return named[(root, key)]
    except KeyError:
        raise OSError(errno.EBADF, f"no fd {key!r}") from None


def fd_op(root: str, name: str, args: list[Any]) -> Any:
    """An operation through an fd kept open under a name, so that a test can
    give both mounts the same call (their fds differ) and act on a file after
    its name is gone."""
    if name == "close_all":
        for k in [k for k in named if k[0] == root]:
            os.close(named.pop(k))
        return None
    fd = _fd(root, args[0])
    if name == "close":
        os.close(named.pop((root, args[0])))
        return None
    if name == "fd_read":  # key: the whole file, from offset 0
        return os.pread(fd, 1 << 16, 0).decode(errors="surrogateescape")
    if name == "fd_write":  # key, offset, text
        return os.pwrite(fd, args[2].encode(), args[1])
    if name == "fd_truncate":
        os.ftruncate(fd, args[1])
        return None
    if name == "fd_stat":
        st = os.fstat(fd)
        out = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid, "ino": st.st_ino}
        if not stat.S_ISDIR(st.st_mode):  # a merged dir's size and links are the driver's
            out.update(size=st.st_size, nlink=st.st_nlink)
        return out
    if name == "fd_mmap_write":  # key, offset, text: a shared mapping of the fd
        import mmap
        with mmap.mmap(fd, 0) as mm:
            data = args[2].encode()
            mm[args[1]:args[1] + len(data)] = data
            mm.flush()
        return None
    if name == "fd_mmap_read":
        import mmap
        with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as mm:
            return mm[:].decode(errors="surrogateescape")
    if name == "reopen_read":  # `cat /proc/self/fd/N`: a new open of the fd's inode
        with open(f"/proc/self/fd/{fd}", "rb") as f:
            return f.read().decode(errors="surrogateescape")
    raise ValueError(f"unknown fsop {name}")


def _b(p: str) -> bytes:
    return os.fsencode(p)


def fsop(root: str, name: str, args: list[Any]) -> Any:
    """One file system operation on a path under *root*; returns a JSON-able result."""
    def p(i: int) -> bytes:
        return os.path.join(_b(root), _b(args[i])) if args[i] else _b(root)

    if name == "write":  # path, text, offset|None (None: create/truncate)
        off = args[2]
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if off is None else 0)
        fd = os.open(p(0), flags, 0o644)
        try:
            data, pos = args[1].encode(), off or 0
            while data:  # a short write is how a full disk starts
                n = os.pwrite(fd, data, pos)
                data, pos = data[n:], pos + n
        finally:
            os.close(fd)
        return None
    if name == "append":
        with open(p(0), "ab") as f:
            f.write(args[1].encode())
        return None
    if name == "read":
        with open(p(0), "rb") as f:
            return f.read().decode(errors="surrogateescape")
    if name == "truncate":
        os.truncate(p(0), args[1])
        return None
    if name == "mkdir":
        os.mkdir(p(0), args[1] if len(args) > 1 else 0o755)
        return None
    if name == "rmdir":
        os.rmdir(p(0))
        return None
    if name == "unlink":
        os.unlink(p(0))
        return None
    if name == "rename":
        os.rename(p(0), p(1))
        return None
    if name == "link":
        os.link(p(0), p(1), follow_symlinks=False)
        return None
    if name == "symlink":
        os.symlink(_b(args[0]), p(1))
        return None
    if name == "mkfifo":
        os.mkfifo(p(0), 0o644)
        return None
    if name == "whiteout":
        os.mknod(p(0), stat.S_IFCHR, 0)
        return None
    if name == "sparse":  # path, size, tail text written at the end
        with open(p(0), "wb") as f:
            f.truncate(args[1])
            f.seek(args[1] - len(args[2]))
            f.write(args[2].encode())
        return None
    if name == "pread":
        with open(p(0), "rb") as f:
            f.seek(args[1])
            return f.read(args[2]).decode(errors="surrogateescape")
    if name == "mmap_write":  # path, offset, text: through a shared mapping, then msync
        import mmap
        with open(p(0), "r+b") as f:
            with mmap.mmap(f.fileno(), 0) as mm:
                data = args[2].encode()
                mm[args[1]:args[1] + len(data)] = data
                mm.flush()
            os.fsync(f.fileno())
        return None
    if name == "mmap_read":
        import mmap
        with open(p(0), "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
            return mm[:].decode(errors="surrogateescape")
    if name == "fsync":
        fd = os.open(p(0), os.O_RDONLY)
        try:
            os.fsync(fd)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        return None
    if name == "mksock":
        os.mknod(p(0), stat.S_IFSOCK | 0o755)
        return None
    if name == "chmod":
        os.chmod(p(0), args[1])
        return None
    if name == "chown":
        os.chown(p(0), args[1], args[2], follow_symlinks=False)
        return None
    if name == "utime":
        os.utime(p(0), ns=(args[1], args[2]), follow_symlinks=False)
        return None
    if name == "setxattr":
        os.setxattr(p(0), args[1], args[2].encode(), follow_symlinks=False)
        return None
    if name == "removexattr":
        os.removexattr(p(0), args[1], follow_symlinks=False)
        return None
    if name == "getxattr":
        return os.getxattr(p(0), args[1], follow_symlinks=False).decode()
    if name == "listxattr":
        return sorted(os.listxattr(p(0), follow_symlinks=False))
    if name == "listdir":
        return sorted(os.fsdecode(n) for n in os.listdir(p(0)))
    if name == "stat":
        st = os.lstat(p(0))
        return {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid, "size": st.st_size,
                "nlink": st.st_nlink, "ino": st.st_ino, "mtime_ns": st.st_mtime_ns,
                "atime_ns": st.st_atime_ns, "rdev": st.st_rdev}
    if name == "statvfs":
        s = os.statvfs(p(0))
        return {"bsize": s.f_bsize, "blocks": s.f_blocks, "namemax": s.f_namemax}
    if name == "open":  # path, key, "r" | "rw": keep an fd for the fd_* fsops
        fd = os.open(p(0), os.O_RDONLY if args[2] == "r" else os.O_RDWR)
        old = named.pop((root, args[1]), None)
        if old is not None:
            os.close(old)
        named[(root, args[1])] = fd
        return None
    if name in ("close", "close_all") or name.startswith(("fd_", "reopen_")):
        return fd_op(root, name, args)
    if name == "hold":  # open and keep an fd (busy mount)
        fd = os.open(p(0), os.O_RDONLY)
        held[fd] = fd
        return fd
    if name == "release":
        os.close(held.pop(args[0]))
        return None
    if name == "read_held":
        return os.pread(args[0], 100, 0).decode(errors="surrogateescape")
    raise ValueError(f"unknown fsop {name}")


def tree(root: str) -> list[Any]:
    """Everything observable about the tree under *root*, in a comparable form."""
    out: list[Any] = []
    inodes: dict[int, list[str]] = {}
    rb = _b(root)

    def walk(rel: bytes) -> None:
        path = os.path.join(rb, rel) if rel else rb
        for name in sorted(os.listdir(path)):
            r = os.path.join(rel, name) if rel else name
            full = os.path.join(rb, r)
            st = os.lstat(full)
            item: dict[str, Any] = {"path": os.fsdecode(r), "mode": oct(st.st_mode),
                                    "uid": st.st_uid, "gid": st.st_gid}
            if stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:  # head and tail: sparse files are huge
                    data = f.read(1 << 16)
                    if st.st_size > 1 << 16:
                        f.seek(max(1 << 16, st.st_size - (1 << 16)))
                        data += f.read()
                item["sha"] = hashlib.sha256(data).hexdigest()[:16]
                item["size"] = st.st_size
            elif stat.S_ISLNK(st.st_mode):
                item["target"] = os.fsdecode(os.readlink(full))
            if not stat.S_ISLNK(st.st_mode):
                item["xattrs"] = {n: os.getxattr(full, n).decode(errors="replace")
                                  for n in sorted(os.listxattr(full)) if n.startswith("user.")}
            if not stat.S_ISDIR(st.st_mode):
                item["nlink"] = st.st_nlink
                inodes.setdefault(st.st_ino, []).append(os.fsdecode(r))
            out.append(item)
            if stat.S_ISDIR(st.st_mode):
                walk(r)

    walk(b"")
    links = sorted(sorted(v) for v in inodes.values() if len(v) > 1)
    out.append({"hardlinks": links})
    return out


def upper_layout(upper: str) -> list[Any]:
    """The upper dir as the kernel would read it: entries, whiteouts, opaque marks."""
    out: list[Any] = []
    for dirpath, dirnames, filenames in os.walk(_b(upper)):
        dirnames.sort()
        rel = os.path.relpath(dirpath, _b(upper))
        try:
            opaque = os.getxattr(dirpath, "user.overlay.opaque") == b"y"
        except OSError:
            opaque = False
        out.append([os.fsdecode(rel), "dir", opaque])
        for name in sorted(filenames):
            st = os.lstat(os.path.join(dirpath, name))
            kind = ("whiteout" if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
                    else stat.filemode(st.st_mode)[0])
            out.append([os.fsdecode(os.path.join(rel, name)), kind])
    return out


def handle(req: dict[str, Any]) -> Any:
    op = req["op"]
    if op == "mount":
        m = drivers.mount(req["driver"], req["lowers"], req["upper"], req["work"],
                          req["target"])
        mounts[req["target"]] = m
        return m.pid
    if op == "server_error":
        return mounts[req["target"]].server_error()
    if op == "unmount":
        mounts.pop(req["target"]).unmount()
        return None
    if op == "fsop":
        if req.get("as"):
            return _as_user(req)
        return fsop(req["root"], req["name"], req["args"])
    if op == "tree":
        return tree(req["root"])
    if op == "upper":
        return upper_layout(req["upper"])
    if op == "sh":
        r = subprocess.run(req["cmd"], shell=True, capture_output=True, cwd=req.get("cwd"))
        return {"rc": r.returncode, "out": r.stdout.decode(errors="replace"),
                "err": r.stderr.decode(errors="replace")}
    if op == "mountinfo":
        with open("/proc/self/mountinfo") as f:
            return f.read()
    if op == "convert":
        from fs import layout
        return layout.convert_oci_whiteouts(req["dir"])
    if op == "detect":
        c = drivers.detect_default()
        return [c.driver, c.reason]
    raise ValueError(f"unknown op {op}")


def _as_user(req: dict[str, Any]) -> Any:
    """Run the fsop in a child with other ids (permission checks of the mount)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            uid, gid = req["as"]
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            res: dict[str, Any] = {"ok": fsop(req["root"], req["name"], req["args"])}
        except OSError as e:
            res = {"errno": errno.errorcode.get(e.errno or 0, str(e.errno))}
        os.write(w, json.dumps(res).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = json.loads(f.read())
    os.waitpid(pid, 0)
    if "errno" in data:
        raise OSError(getattr(errno, data["errno"], errno.EIO), data["errno"])
    return data["ok"]


def main() -> None:
    # Mounts made here stay here: private propagation for the whole namespace.
    from rootless import syscalls as sc
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    os.umask(0o022)
    for line in sys.stdin:
        req = json.loads(line)
        try:
            res: dict[str, Any] = {"ok": handle(req)}
        except OSError as e:
            res = {"errno": errno.errorcode.get(e.errno or 0, str(e.errno)),
                   "msg": str(e)}
        except drivers.DriverError as e:
            res = {"error": str(e)}
        except Exception as e:
            res = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()
    for m in list(mounts.values()):
        m.unmount()


if __name__ == "__main__":
    main()
