"""What a container changed, read from its upper dir: ``rl diff`` and ``rl commit``.

Every driver but vfs leaves the same upper dir (layout.py), so one reader
serves them all. :func:`changes` gives docker diff's A/C/D list;
:func:`write_layer` turns the upper dir into an OCI layer tar, where a
whiteout becomes an empty ``.wh.NAME`` file and an opaque directory gets a
``.wh..wh..opq`` entry (OCI image spec, "Representing Changes").
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from fs import layout, walk

WH_PREFIX = ".wh."
WH_OPAQUE = ".wh..wh..opq"


@dataclass(frozen=True, order=True)
class Change:
    path: str  # absolute inside the container, e.g. "/etc/passwd"
    kind: str  # "A" added, "C" changed, "D" deleted

    def __str__(self) -> str:  # the line docker diff prints
        return f"{self.kind} {self.path}"


def lower_lstat(rel: str, lowers: Sequence[str]) -> os.stat_result | None:
    """The entry *rel* of the merged view of *lowers* (top first), or None if absent.

    Every layer is read with lstat, component by component: a symlink in a
    layer is never followed (its target would be a path of this host).
    """
    parts = rel.split("/")
    for lower in lowers:
        opaque_above = False  # an opaque ancestor in this layer hides the layers below
        for i in range(1, len(parts)):
            anc = os.path.join(lower, *parts[:i])
            try:
                st = os.lstat(anc)
            except FileNotFoundError:
                break
            if not stat.S_ISDIR(st.st_mode):
                return None  # a file, link or whiteout above it: no such path
            opaque_above = opaque_above or _opaque(anc)
        else:
            try:
                st = os.lstat(os.path.join(lower, rel))
            except FileNotFoundError:
                pass
            else:
                return None if layout.is_whiteout_stat(st) else st
        if opaque_above:
            return None
    return None


def _lower_visible(rel: str, lowers: Sequence[str]) -> bool:
    return lower_lstat(rel, lowers) is not None


def changes(upper: str, lowers: Sequence[str]) -> list[Change]:
    """docker diff's list for an upper dir over *lowers* (top first), sorted by path."""
    out: list[Change] = []
    for e in walk.walk(upper):
        if e.name == WH_OPAQUE:
            continue  # a marker, read by _opaque
        rel, st = e.rel, e.st
        in_lower = _lower_visible(rel, lowers)
        if layout.is_whiteout_stat(st):
            if in_lower:
                out.append(Change("/" + rel, "D"))
            continue
        out.append(Change("/" + rel, "C" if in_lower else "A"))
        if stat.S_ISDIR(st.st_mode) and in_lower and _entry_opaque(e):
            # an opaque dir replaced the lower one: its lower entries are gone
            present = set(_names(e)) - {WH_OPAQUE}
            for name in sorted(_lower_names(rel, lowers)):
                if name not in present:
                    out.append(Change(f"/{rel}/{name}", "D"))
    return sorted(out)


def _lower_names(rel: str, lowers: Sequence[str]) -> set[str]:
    names: set[str] = set()
    for lower in lowers:
        d = os.path.join(lower, rel)
        if not os.path.lexists(d):
            continue
        if not os.path.isdir(d) or os.path.islink(d) or layout.is_whiteout_stat(os.lstat(d)):
            break
        for name in os.listdir(d):
            if _lower_visible(f"{rel}/{name}", lowers):
                names.add(name)
        if _opaque(d):
            break
    return names


def _opaque(path: str) -> bool:
    # fuse-overlayfs marks opaque dirs with a .wh..wh..opq file when it can't
    # set trusted.* xattrs (as in a user namespace); read both forms
    return layout.is_opaque(path) or os.path.lexists(os.path.join(path, WH_OPAQUE))


@dataclass(frozen=True)
class Layer:
    path: str
    diff_id: str  # "sha256:..." of the uncompressed tar
    size: int


class _Hashing:
    """A write-only file that hashes what passes through it."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.h = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.h.update(data)
        self.size += len(data)
        return self.f.write(data)


def _write(upper: str, out: IO[bytes]) -> None:
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT,
                      encoding="utf-8", errors="surrogateescape") as tar:
        links: dict[tuple[int, int], str] = {}
        for e in walk.walk(upper):
            if e.name != WH_OPAQUE:  # a marker: add_entry writes its own
                add_entry(tar, e, links)


def write_layer_to(upper: str, out_fd: int) -> None:
    """Write *upper* as an OCI layer tar on *out_fd* (left open)."""
    with os.fdopen(os.dup(out_fd), "wb", buffering=1 << 20) as out:
        _write(upper, out)


def write_layer(upper: str, dest: str) -> Layer:
    """Write *upper* as an OCI layer tar at *dest* (atomically: a temp file, then rename)."""
    tmp = f"{dest}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as raw:
            hashing = _Hashing(raw)
            _write(upper, hashing)  # type: ignore[arg-type]
            raw.flush()
            os.fsync(raw.fileno())
        os.rename(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return Layer(dest, f"sha256:{hashing.h.hexdigest()}", hashing.size)


def _names(e: walk.Entry) -> list[str]:
    fd = os.open(e.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                 dir_fd=e.dir_fd)
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


def _entry_opaque(e: walk.Entry, xattrs: dict[str, bytes] | None = None) -> bool:
    if (e.xattrs() if xattrs is None else xattrs).get(layout.OPAQUE_XATTR) == b"y":
        return True
    try:
        return WH_OPAQUE in _names(e)
    except OSError:
        return False


def add_entry(tar: tarfile.TarFile, e: walk.Entry, links: dict[tuple[int, int], str],
              skip_devices: bool = False) -> None:
    """One walked entry as tar members: a whiteout becomes ``.wh.NAME``, an opaque
    directory gets ``.wh..wh..opq``, a second name of a file a hard link."""
    rel, st = e.rel, e.st
    head, name = os.path.split(rel)
    if layout.is_whiteout_stat(st):
        ti = tarfile.TarInfo(os.path.join(head, WH_PREFIX + name))
        ti.mtime = st.st_mtime
        tar.addfile(ti)
        return
    if skip_devices and (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        return
    ti = tarfile.TarInfo(rel)
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.uid, ti.gid = st.st_uid, st.st_gid
    ti.uname = ti.gname = ""  # numeric owners: names of this host mean nothing in an image
    ti.mtime = st.st_mtime
    xattrs = e.xattrs()
    ti.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                      for k, v in xattrs.items() if not k.startswith("user.overlay.")}
    key = (st.st_dev, st.st_ino)
    if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1 and key in links:
        ti.type = tarfile.LNKTYPE
        ti.linkname = links[key]
        tar.addfile(ti)
        return
    if not stat.S_ISDIR(st.st_mode):
        links[key] = rel
    if stat.S_ISREG(st.st_mode):
        ti.size = st.st_size
        fd = e.open()
        with os.fdopen(fd, "rb") as f:
            tar.addfile(ti, f)
        return
    if stat.S_ISDIR(st.st_mode):
        ti.type = tarfile.DIRTYPE
        tar.addfile(ti)
        if _entry_opaque(e, xattrs):
            wh = tarfile.TarInfo(f"{rel}/{WH_OPAQUE}")
            wh.mtime = st.st_mtime
            tar.addfile(wh)
        return
    if stat.S_ISLNK(st.st_mode):
        ti.type = tarfile.SYMTYPE
        ti.linkname = e.readlink()
    elif stat.S_ISFIFO(st.st_mode):
        ti.type = tarfile.FIFOTYPE
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        ti.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
        ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    else:
        return  # sockets have no tar form (docker skips them too)
    tar.addfile(ti)
