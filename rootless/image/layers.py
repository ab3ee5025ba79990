"""Layer tars: safe unpacking into a layer directory, and applying layers onto a rootfs.

`unpack` runs inside a user namespace (rootless.userns) so chown gives files
the image's owners through the subordinate-id map. It never trusts a member
name: absolute names and `..` are refused, every parent directory is opened
component by component with O_NOFOLLOW relative to the layer's root fd, so a
symlink in the layer (or a directory replaced by one) cannot redirect a write,
and hard links must name a file already inside the layer. Whiteouts are
stored the way kernel overlayfs writes them in a user namespace (fs.layout:
a `.wh.NAME` member becomes a 0/0 character device NAME, `.wh..wh..opq` the
xattr user.overlay.opaque=y on its directory), so a layer directory serves
as a lower layer of every storage driver as it is. Other device nodes cannot
be created rootless: they are skipped with a note.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

from fs import diff, drivers, layout, walk

from .. import output
from ..errors import RlError

# Decompressors are imported here, not when a layer is opened: layers are
# unpacked in a forked child (userns.run), where a first import could
# deadlock on an import lock held by a download thread of the parent.
_zstd: Any
try:
    import zstandard as _zstd
except ImportError:  # pragma: no cover - optional
    _zstd = None

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class LayerError(RlError):
    """A layer that is malformed or hostile; nothing of it is kept."""


@dataclass
class UnpackResult:
    diff_id: str
    size: int  # uncompressed bytes
    notes: list[str] = field(default_factory=list)


class _HashingReader:
    """A read-only stream that hashes what passes through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.hash.update(data)
        self.count += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def compression(head: bytes) -> str:
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return ""


def open_decompressed(f: BinaryIO) -> IO[bytes]:
    """The uncompressed stream of a gzip, zstd or plain layer blob."""
    head = f.read(4)
    f.seek(0)
    kind = compression(head)
    if kind == "gzip":
        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
    if kind == "zstd":
        if _zstd is None:
            raise LayerError("zstd layers need the zstandard Python package")
        return _zstd.ZstdDecompressor().stream_reader(f, read_across_frames=True)  # type: ignore[no-any-return]
    return f


def _components(name: str, what: str = "path") -> list[str]:
    if name.startswith("/"):
        raise LayerError(f"refusing layer entry with an absolute {what}: {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"refusing layer entry whose {what} leaves the layer: {name!r}")
    if parts and parts[-1].startswith(WHITEOUT) and parts[-1] != OPAQUE \
            and parts[-1][len(WHITEOUT):] in ("", ".", ".."):
        # ".wh.." would white out the directory's parent, ".wh.." itself.
        raise LayerError(f"refusing layer entry with a whiteout of no name: {name!r}")
    return parts


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _Tree:
    """The layer directory being written, reached only through directory fds."""

    def __init__(self, root: str) -> None:
        self.root_fd = os.open(root, _DIR_FLAGS)
        self.cache: tuple[tuple[str, ...], int] | None = None

    def close(self) -> None:
        if self.cache:
            os.close(self.cache[1])
        os.close(self.root_fd)

    def parent(self, parts: list[str], name: str) -> int:
        """An fd of the directory that holds parts[-1], creating missing directories."""
        key = tuple(parts[:-1])
        if self.cache and self.cache[0] == key:
            return self.cache[1]
        fd = os.dup(self.root_fd)
        try:
            for comp in key:
                try:
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ENOTDIR, errno.ELOOP):
                        raise LayerError(f"refusing layer entry {name!r}: {comp!r} on its "
                                         "path is not a directory (a symlink?)") from None
                    raise
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        if self.cache:
            os.close(self.cache[1])
        self.cache = (key, fd)
        return fd

    def clear(self, pfd: int, name: str, keep_dir: bool) -> None:
        """Remove what is at name (a later tar entry replaces an earlier one)."""
        try:
            st = os.lstat(name, dir_fd=pfd)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return
            walk.remove(name, dir_fd=pfd)
        else:
            os.unlink(name, dir_fd=pfd)


def _members(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while True:
        try:
            info = tf.next()
        except tarfile.ReadError as e:
            raise LayerError(f"malformed layer tar: {e}") from None
        if info is None:
            return
        yield info


def unpack(blob: str, dest: str, squash_ids: bool, expect_diff_id: str = "") -> UnpackResult:
    """Extract the layer blob into the empty directory dest; runs inside the user namespace."""
    notes: list[str] = []
    dirs: dict[str, int] = {}  # directory (relative path) -> its mtime in ns
    with open(blob, "rb") as f:
        try:
            reader = _HashingReader(open_decompressed(f))
            tree = _Tree(dest)
            try:
                with tarfile.open(fileobj=reader, mode="r|") as tf:  # type: ignore[call-overload]
                    for info in _members(tf):
                        _extract(tf, tree, info, squash_ids, notes, dirs)
                    reader.drain()
                # Directory times last: creating entries inside changed them.
                # (One walk, not an fd per directory: a layer has thousands.)
                if dirs:
                    for e in walk.walk(dest):
                        mtime = dirs.get(e.rel)
                        if mtime is not None and stat.S_ISDIR(e.st.st_mode):
                            os.utime(e.name, ns=(mtime, mtime), dir_fd=e.dir_fd,
                                     follow_symlinks=False)
            finally:
                tree.close()
        except LayerError:
            raise
        except (EOFError, tarfile.TarError) as e:
            raise LayerError(f"truncated or malformed layer: {e or type(e).__name__}") from None
        except OSError as e:
            if e.errno is None:  # gzip/zstd decoding errors are OSErrors without errno
                raise LayerError(f"corrupt compressed layer: {e}") from None
            raise LayerError(f"unpacking the layer: {e.strerror}: {e.filename or ''}") from None
        except Exception as e:  # zlib.error, zstd errors
            raise LayerError(f"corrupt layer: {e}") from None
    diff_id = "sha256:" + reader.hash.hexdigest()
    if expect_diff_id and diff_id != expect_diff_id:
        raise LayerError(f"layer content {diff_id} does not match its diff_id {expect_diff_id}")
    return UnpackResult(diff_id, reader.count, notes)


def _extract(tf: tarfile.TarFile, tree: _Tree, info: tarfile.TarInfo, squash_ids: bool,
             notes: list[str], dirs: dict[str, int]) -> None:
    parts = _components(info.name)
    if not parts:
        return  # "./": the layer's root directory itself
    pfd = tree.parent(parts, info.name)
    name = parts[-1]
    if name == OPAQUE:
        # The directory holding the marker hides what lower layers have in it.
        os.setxattr(f"/proc/self/fd/{pfd}", layout.OPAQUE_XATTR, b"y")
        return
    if name.startswith(WHITEOUT):
        victim = name[len(WHITEOUT):]
        tree.clear(pfd, victim, keep_dir=False)
        layout.make_whiteout(pfd, os.fsencode(victim))
        return
    if info.ischr() or info.isblk():
        notes.append(f"skipped device node /{'/'.join(parts)} (rootless cannot create it)")
        return
    tree.clear(pfd, name, keep_dir=info.isdir())
    if info.isdir():
        try:
            os.mkdir(name, 0o700, dir_fd=pfd)
        except FileExistsError:
            pass
    elif info.isreg():
        src = tf.extractfile(info)
        assert src is not None
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=pfd)
        try:
            left = info.size
            while left > 0:
                chunk = src.read(min(left, 1 << 20))
                if not chunk:
                    raise LayerError(f"truncated layer: {info.name!r} claims {info.size} bytes "
                                     "but the stream ends early")
                os.write(fd, chunk)
                left -= len(chunk)
        finally:
            os.close(fd)
    elif info.issym():
        os.symlink(info.linkname, name, dir_fd=pfd)
    elif info.islnk():
        target = _components(info.linkname, "link target")
        if not target:
            raise LayerError(f"refusing hard link {info.name!r} to the layer's root")
        tfd = os.dup(tree.parent(target, info.linkname))
        pfd = tree.parent(parts, info.name)
        try:
            os.link(target[-1], name, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            raise LayerError(f"refusing hard link {info.name!r}: its target "
                             f"{info.linkname!r} is not in the layer") from None
        finally:
            os.close(tfd)
        return  # a hard link shares its target's metadata
    elif info.isfifo():
        os.mkfifo(name, 0o600, dir_fd=pfd)
    else:
        notes.append(f"skipped /{'/'.join(parts)}: unsupported tar entry type {info.type!r}")
        return
    _metadata(pfd, name, info, squash_ids, notes)
    if info.isdir():
        dirs["/".join(parts)] = int(info.mtime * 1e9)
    elif not info.issym():
        os.utime(name, ns=(int(info.mtime * 1e9),) * 2, dir_fd=pfd, follow_symlinks=False)


def _metadata(pfd: int, name: str, info: tarfile.TarInfo, squash_ids: bool,
              notes: list[str]) -> None:
    if not squash_ids:
        try:
            os.chown(name, info.uid, info.gid, dir_fd=pfd, follow_symlinks=False)
        except OSError as e:
            if e.errno == errno.EINVAL:
                raise LayerError(
                    f"{info.name!r} is owned by {info.uid}:{info.gid}, outside the ids "
                    "this user may map (see /etc/subuid and /etc/subgid)") from None
            raise
    if not info.issym():
        # After chown, which clears setuid/setgid bits.
        os.chmod(name, info.mode & 0o7777, dir_fd=pfd)
    for key, value in info.pax_headers.items():
        if not key.startswith("SCHILY.xattr."):
            continue
        attr = key[len("SCHILY.xattr."):]
        if attr.startswith(("user.overlay.", "trusted.overlay.")):
            # Only rl's own whiteouts may speak to the overlay driver.
            notes.append(f"xattr {attr} of {info.name} not kept: reserved for overlayfs")
            continue
        try:
            os.setxattr(f"/proc/self/fd/{pfd}/{name}", attr,
                        value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
        except OSError as e:
            notes.append(f"xattr {attr} of {info.name} not kept: {e.strerror}")


# -- composing a rootfs from layer directories (vfs) -----------------------------


def apply(layer_dir: str, dest: str) -> None:
    """Apply one unpacked layer onto dest (inside the user namespace): its
    whiteouts remove, its opaque directories replace, the rest is copied."""
    drivers.apply_layer(layer_dir, dest)


# -- writing tars (export, commit) -------------------------------------------------


def _stream(out_fd: int) -> IO[bytes]:
    # A failed write says what it was writing ("write /dev/full: no space left
    # on device"), not "[Errno 28]", when it reaches the user through userns.run.
    name = "/dev/stdout" if out_fd == 1 else ""
    return io.BufferedWriter(output.Sink(os.dup(out_fd), closefd=True, name=name), 1 << 20)


def write_tree_tar(root: str, out_fd: int, skip: set[str]) -> None:
    """The whole tree as a PAX tar on out_fd (inside the user namespace).

    Walked with fs.walk (directory fds, O_NOFOLLOW): a running container
    cannot redirect the walk out of its tree.
    """
    links: dict[tuple[int, int], str] = {}
    with _stream(out_fd) as out, tarfile.open(fileobj=out, mode="w|",
                                              format=tarfile.PAX_FORMAT) as tf:
        for e in walk.walk(root):
            if "/" + e.rel not in skip:
                diff.add_entry(tf, e, links, skip_devices=True)


def _lower_view(lowers: list[str]) -> dict[str, os.stat_result]:
    """path -> stat of the file system the lower layers (bottom first) compose to."""
    view: dict[str, os.stat_result] = {}
    for layer in lowers:
        for e in walk.walk(layer):
            arc = e.rel
            if layout.is_whiteout_stat(e.st) or (
                    stat.S_ISDIR(e.st.st_mode)
                    and e.xattrs().get(layout.OPAQUE_XATTR) == b"y"):
                below = arc + "/"
                for k in [k for k in view if k == arc or k.startswith(below)]:
                    del view[k]
            if not layout.is_whiteout_stat(e.st):
                view[arc] = e.st
    return view


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    same_meta = (a.st_mode == b.st_mode and a.st_uid == b.st_uid and a.st_gid == b.st_gid)
    if stat.S_ISDIR(a.st_mode):
        return same_meta
    return same_meta and a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns


def _naive_diff(lowers: list[str], tree: str, skip: set[str]
                ) -> tuple[dict[str, os.stat_result], list[str], list[str]]:
    """(lower view, changed or added paths, deleted paths) of a full copy against its layers.

    Files are compared by type, mode, owner, size and mtime (the vfs copy keeps
    them), as containers/storage's naive differ does.
    """
    view = _lower_view(lowers)
    seen: set[str] = set()
    changed: list[str] = []
    for e in walk.walk(tree):
        if "/" + e.rel in skip:
            continue
        seen.add(e.rel)
        old = view.get(e.rel)
        if old is None or not _same(old, e.st):
            changed.append(e.rel)
    deleted = []
    for arc in sorted(view):
        parent = arc.rpartition("/")[0]
        if arc in seen or (parent and parent not in seen):
            continue  # kept, or below a directory already deleted
        deleted.append(arc)
    return view, changed, deleted


def changes(lowers: list[str], tree: str, skip: set[str]) -> list[tuple[str, str]]:
    """docker diff's (kind, path) list for a vfs copy; a directory holding a change
    counts as changed, as docker's naive differ has it."""
    view, changed, deleted = _naive_diff(lowers, tree, skip)
    out = {arc: ("C" if arc in view else "A") for arc in changed}
    out.update({arc: "D" for arc in deleted})
    for arc in list(out):
        parent = arc.rpartition("/")[0]
        while parent and parent not in out:
            out[parent] = "C"
            parent = parent.rpartition("/")[0]
    return sorted((kind, "/" + arc) for arc, kind in out.items())


def write_diff_tar(lowers: list[str], tree: str, out_fd: int, skip: set[str]) -> None:
    """The changes of a full copy against its layers (bottom first), as a layer tar."""
    _, changed, deleted = _naive_diff(lowers, tree, skip)
    want = set(changed)
    links: dict[tuple[int, int], str] = {}
    with _stream(out_fd) as out, tarfile.open(fileobj=out, mode="w|",
                                              format=tarfile.PAX_FORMAT) as tf:
        for e in walk.walk(tree):
            if e.rel in want:
                diff.add_entry(tf, e, links, skip_devices=True)
        for arc in deleted:
            parent, _, name = arc.rpartition("/")
            tf.addfile(tarfile.TarInfo((parent + "/" if parent else "") + WHITEOUT + name))
