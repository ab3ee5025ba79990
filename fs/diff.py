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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO

from fs import layout

WH_PREFIX = ".wh."
WH_OPAQUE = ".wh..wh..opq"


@dataclass(frozen=True, order=True)
class Change:
    path: str  # absolute inside the container, e.g. "/etc/passwd"
    kind: str  # "A" added, "C" changed, "D" deleted

    def __str__(self) -> str:  # the line docker diff prints
        return f"{self.kind} {self.path}"


def _lower_visible(rel: str, lowers: Sequence[str]) -> bool:
    """Whether *rel* exists in the merged view of *lowers* (top first)."""
    parts = rel.split("/")
    for lower in lowers:
        hidden_below = False
        # an opaque or whited-out ancestor in this layer hides every layer below it
        for i in range(1, len(parts)):
            anc = os.path.join(lower, *parts[:i])
            try:
                st = os.lstat(anc)
            except FileNotFoundError:
                break
            if not stat.S_ISDIR(st.st_mode) or _opaque(anc):
                hidden_below = True
                break
        try:
            st = os.lstat(os.path.join(lower, rel))
        except (FileNotFoundError, NotADirectoryError):
            if hidden_below:
                return False
            continue
        return not layout.is_whiteout_stat(st)
    return False


def _walk(upper: str, rel: str = "") -> Iterator[tuple[str, os.stat_result]]:
    """Every entry of the upper dir below *rel*, parents first, names sorted."""
    base = os.path.join(upper, rel) if rel else upper
    for name in sorted(os.listdir(base)):
        if name == WH_OPAQUE:
            continue  # a marker, read by _opaque
        r = f"{rel}/{name}" if rel else name
        st = os.lstat(os.path.join(upper, r))
        yield r, st
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(upper, r)


def changes(upper: str, lowers: Sequence[str]) -> list[Change]:
    """docker diff's list for an upper dir over *lowers* (top first), sorted by path."""
    out: list[Change] = []
    for rel, st in _walk(upper):
        full = os.path.join(upper, rel)
        in_lower = _lower_visible(rel, lowers)
        if layout.is_whiteout_stat(st):
            if in_lower:
                out.append(Change("/" + rel, "D"))
            continue
        out.append(Change("/" + rel, "C" if in_lower else "A"))
        if stat.S_ISDIR(st.st_mode) and in_lower and _opaque(full):
            # an opaque dir replaced the lower one: its lower entries are gone
            present = set(os.listdir(full)) - {WH_OPAQUE}
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


def _xattrs(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for name in names:
        if name.startswith("user.overlay."):
            continue
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        out[f"SCHILY.xattr.{name}"] = value.decode("utf-8", "surrogateescape")
    return out


def write_layer(upper: str, dest: str) -> Layer:
    """Write *upper* as an OCI layer tar at *dest* (atomically: a temp file, then rename)."""
    tmp = f"{dest}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as raw:
            hashing = _Hashing(raw)
            with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                              encoding="utf-8", errors="surrogateescape") as tar:
                links: dict[tuple[int, int], str] = {}
                for rel, st in _walk(upper):
                    _add(tar, upper, rel, st, links)
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


def _add(tar: tarfile.TarFile, upper: str, rel: str, st: os.stat_result,
         links: dict[tuple[int, int], str]) -> None:
    full = os.path.join(upper, rel)
    head, name = os.path.split(rel)
    if layout.is_whiteout_stat(st):
        ti = tarfile.TarInfo(os.path.join(head, WH_PREFIX + name))
        ti.mtime = st.st_mtime
        tar.addfile(ti)
        return
    ti = tarfile.TarInfo(rel)
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.uid, ti.gid = st.st_uid, st.st_gid
    ti.uname = ti.gname = ""
    ti.mtime = st.st_mtime
    ti.pax_headers = _xattrs(full)
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
        with open(full, "rb") as f:
            tar.addfile(ti, f)
        return
    if stat.S_ISDIR(st.st_mode):
        ti.type = tarfile.DIRTYPE
        tar.addfile(ti)
        if _opaque(full):
            wh = tarfile.TarInfo(f"{rel}/{WH_OPAQUE}")
            wh.mtime = st.st_mtime
            tar.addfile(wh)
        return
    if stat.S_ISLNK(st.st_mode):
        ti.type = tarfile.SYMTYPE
        ti.linkname = os.readlink(full)
    elif stat.S_ISFIFO(st.st_mode):
        ti.type = tarfile.FIFOTYPE
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        ti.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
        ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    else:
        return  # sockets have no tar form (docker skips them too)
    tar.addfile(ti)
