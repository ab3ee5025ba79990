"""The build context: the files COPY and ADD may read, and their content hashes.

A context is a directory (walked through file descriptors, never following
a symlink) or a tar stream (`rl build -`), extracted into a private temp
directory first. `.dockerignore` (or `<Dockerfile>.dockerignore` beside a
named Dockerfile) filters it once, at the walk; `resolve` then answers a COPY
source with Docker's semantics and refuses what would leave the context;
`sources_digest` is the cache key's share of a COPY.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import posixpath
import stat
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import IO, Literal

from rootless import syscalls
from rootless.build import ignore
from rootless.build.ignore import quote
from rootless.errors import InvalidArgument

Kind = Literal["file", "dir", "symlink"]

# Opens inside the context: never above its root, never through a symlink
# (a symlink swapped in after the walk cannot redirect a read).
_BENEATH = syscalls.RESOLVE_BENEATH | syscalls.RESOLVE_NO_SYMLINKS | syscalls.RESOLVE_NO_MAGICLINKS
_MAX_LINKS = 40  # Linux's limit on symlinks followed in one lookup (ELOOP)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    """One file of the context, as the walk saw it."""

    path: str  # '/'-separated, relative to the context root
    kind: Kind
    mode: int  # permission bits, setuid/setgid/sticky included
    size: int
    target: str = ""  # a symlink's target


@dataclass(frozen=True)
class Source:
    """One file a COPY source brings: its name under the destination, and the entry.

    A directory source brings its contents; its own entry comes with name ""
    (its mode is the destination directory's when COPY creates it).
    """

    name: str
    entry: Entry


class Context:
    """The files of a build context, filtered by its ignore file.

    Use as a context manager: a context made from a tar removes its temp
    directory on close.
    """

    def __init__(self, root_fd: int, root: str, matcher: ignore.Matcher,
                 owned_tmp: str | None = None, modes: dict[str, int] | None = None) -> None:
        self.root_fd = root_fd
        self.root = root
        self.matcher = matcher
        self._owned_tmp = owned_tmp
        self._digests: dict[str, tuple[tuple[int, int, int, int], str]] = {}
        self._children: dict[str, list[str]] | None = None
        try:
            st = os.fstat(root_fd)
            modes = modes or {}
            self.root_entry = Entry("", "dir", modes.get(".", stat.S_IMODE(st.st_mode)), 0)
            self.entries: dict[str, Entry] = _walk(root_fd, matcher)
            # A tar's modes are kept aside where the copy on disk had to differ.
            for path, mode in modes.items():
                if path in self.entries:
                    self.entries[path] = replace(self.entries[path], mode=mode)
        except BaseException:
            self.close()
            raise

    # -- making one -------------------------------------------------------------

    @classmethod
    def directory(cls, path: str, dockerfile: str | None = None) -> Context:
        """The context at directory *path*; *dockerfile* as `-f` named it (for its ignore file).

        A relative *dockerfile* is relative to the context, as docker's `-f` is
        when the face has not resolved it.
        """
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise InvalidArgument(
                f"unable to prepare context: path {quote(path)} not found") from None
        except NotADirectoryError:
            raise InvalidArgument(
                f"unable to prepare context: context must be a directory: {quote(path)}") from None
        except OSError as e:  # unreadable, a symlink loop, a name too long
            raise InvalidArgument(
                f"unable to prepare context: {quote(path)}: {os.strerror(e.errno or 0)}") from None
        except ValueError:  # a NUL in the path
            raise InvalidArgument(
                f"unable to prepare context: {quote(path)}: embedded null byte") from None
        try:
            matcher = _matcher(fd, dockerfile)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, os.path.abspath(path), matcher)

    @classmethod
    def from_tar(cls, stream: IO[bytes], dockerfile: str | None = None,
                 tmpdir: str | None = None) -> Context:
        """The context sent as a tar stream (plain or compressed), extracted privately.

        A hostile member (absolute or `..` name, a link leaving the context,
        a device node or FIFO) is refused with one InvalidArgument line; the
        temp directory is then removed, and nothing is ever written outside it.
        """
        tmp = tempfile.mkdtemp(prefix="rl-build-context-", dir=tmpdir)  # mode 0700
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except BaseException:
            _remove_tree(tmp)
            raise
        try:
            modes, links = _extract(stream, fd)
            if links:
                _check_links(fd, links)
            matcher = _matcher(fd, dockerfile)
        except BaseException:
            os.close(fd)
            _remove_tree(tmp)
            raise
        return cls(fd, tmp, matcher, owned_tmp=tmp, modes=modes)

    def close(self) -> None:
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1
        if self._owned_tmp is not None:
            _remove_tree(self._owned_tmp)
            self._owned_tmp = None

    def __enter__(self) -> Context:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- reading it -------------------------------------------------------------

    def open(self, path: str) -> int:
        """A read-only fd on the context file *path*, opened beneath the root, no symlinks.

        Raises OSError if it cannot be opened, InvalidArgument if it is no
        longer a regular file (swapped for a directory or a FIFO since the walk).
        """
        if "\0" in path:  # ctypes would pass the name only up to it: another file
            raise InvalidArgument(f"error from sender: open {quote(path)}: embedded null byte")
        fd = syscalls.openat2(self.root_fd, path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK,
                              _BENEATH)
        try:
            _regular(fd, f"error from sender: open {quote(path)}")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def content_digest(self, entry: Entry) -> str:
        """sha256 of a regular file's bytes (cached while size, mtime, ctime and inode hold)."""
        try:
            fd = self.open(entry.path)
        except OSError as e:
            # Changed since the walk (removed, made a symlink) or unreadable.
            raise InvalidArgument(
                f"error from sender: open {quote(entry.path)}: {os.strerror(e.errno or 0)}"
            ) from None
        try:
            st = os.fstat(fd)
            key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            cached = self._digests.get(entry.path)
            if cached is not None and cached[0] == key:
                return cached[1]
            h = hashlib.sha256()
            try:
                while chunk := os.read(fd, _CHUNK):
                    h.update(chunk)
            except OSError as e:
                raise InvalidArgument(f"error from sender: read {quote(entry.path)}: "
                                      f"{os.strerror(e.errno or 0)}") from None
        finally:
            os.close(fd)
        digest = h.hexdigest()
        self._digests[entry.path] = (key, digest)
        return digest

    def entry_digest(self, name: str, entry: Entry, uid: int = 0, gid: int = 0) -> str:
        """The hash of one file as COPY puts it in the image: its name there, type,
        mode, owner in the image (*uid*:*gid*, from --chown; the context's own
        owner never reaches the image), link target and content. Times are
        not in it: docker's cache ignores them.
        """
        content = self.content_digest(entry) if entry.kind == "file" else ""
        record = "\0".join((name, entry.kind, f"{entry.mode:o}", str(uid), str(gid),
                            entry.target, content))
        return hashlib.sha256(os.fsencode(record)).hexdigest()

    def sources_digest(self, sources: list[Source], uid: int = 0, gid: int = 0,
                       progress: Callable[[int, int], None] | None = None) -> str:
        """The hash of a COPY source set: each file's entry_digest, in name order.

        *progress*, if given, is told (files done, content bytes done) every
        256 files and at the end: a 100,000-file context takes a while.
        """
        h = hashlib.sha256()
        done = size = 0
        for src in sorted(sources, key=lambda s: (s.name, s.entry.path)):
            h.update(self.entry_digest(src.name, src.entry, uid, gid).encode())
            h.update(b"\n")
            done += 1
            size += src.entry.size
            if progress is not None and done % 256 == 0:
                progress(done, size)
        if progress is not None:
            progress(done, size)
        return "sha256:" + h.hexdigest()

    def children(self, directory: str) -> list[str]:
        """The names in context directory *directory* ("" for the root), sorted."""
        if self._children is None:
            # Indexed once: a glob in a 100,000-file context must not rescan it per directory.
            index: dict[str, list[str]] = {}
            for path in self.entries:
                parent, _, name = path.rpartition("/")
                index.setdefault(parent, []).append(name)
            for names in index.values():
                names.sort()
            self._children = index
        return self._children.get(directory, [])

    def resolve(self, src: str, where: str = "") -> list[Source]:
        return resolve(self, src, where)


def resolve(context: Context, src: str, where: str = "") -> list[Source]:
    """The files a COPY/ADD source *src* brings from *context* (Docker's semantics).

    *src* may be a Go filepath.Match glob; each match that is a directory
    brings its contents (symlinks in it stay symlinks), a file or a symlink
    brings itself under its own name, read through symlinks that stay in the
    context. A source that is absolute, climbs out with `..`, or leads
    through a symlink out of the context is refused; *where* (say
    "Dockerfile:7: ") prefixes the message.
    """
    if src.startswith("/") or _escapes(posixpath.normpath(src)):
        raise InvalidArgument(f"{where}forbidden path outside the build context: {_show(src)}")
    clean = posixpath.normpath(src)
    matches = [clean] if clean == "." else _glob(context, clean, src, where)
    if not matches:
        raise InvalidArgument(
            f"{where}failed to compute cache key: {quote('/' + clean)}: not found")
    sources: list[Source] = []
    for match in matches:
        entry = _follow(context, match, src, where)
        if entry.kind == "dir":
            sources.extend(_contents(context, entry))
        else:
            sources.append(Source(posixpath.basename(match), entry))
    return sources


# -- resolving sources ------------------------------------------------------------


def _show(name: str) -> str:
    """*name* as docker prints it when that is one plain line, else quoted and escaped."""
    return name if name.isprintable() else quote(name)


def _escapes(path: str) -> bool:
    return path == ".." or path.startswith("../")


def _has_meta(part: str) -> bool:
    return any(c in part for c in "*?[\\")


def _glob(context: Context, clean: str, src: str, where: str) -> list[str]:
    """The context paths *clean* names: itself, or what each glob component matches."""
    found = [""]
    for part in clean.split("/"):
        nxt: list[str] = []
        for base in found:
            if not _has_meta(part):
                nxt.append(posixpath.join(base, part) if base else part)
                continue
            rx = ignore.compile_glob(part, where, double_star=False)
            # A glob below a symlinked directory globs its target's names.
            directory = _lookup(context.entries, context.root_entry, base, src, where,
                                follow_last=True) if base \
                else context.root_entry
            if directory is None or directory.kind != "dir":
                continue
            for name in context.children(directory.path):
                if rx.match(name):
                    nxt.append(posixpath.join(base, name) if base else name)
        found = nxt
    return [p for p in found
            if _lookup(context.entries, context.root_entry, p, src, where) is not None]


class _Escape(InvalidArgument):
    """A lookup that would leave the context (a loop is another matter)."""

    def __init__(self, message: str, via: str) -> None:
        super().__init__(message)
        self.via = via


def _lookup(entries: dict[str, Entry], root_entry: Entry, path: str, src: str, where: str,
            follow_last: bool = False) -> Entry | None:
    """The entry at context *path*, following symlinks on the way (all, or all
    but the last) without ever leaving the context; None if there is none."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    via = ""  # the last symlink followed, for the message
    while parts:
        part = parts.pop(0)
        if part == "..":
            if not done:
                raise _Escape(
                    f"{where}forbidden path outside the build context: {_show(src)}{via}", via)
            done.pop()
            continue
        here = "/".join([*done, part])
        entry = entries.get(here)
        if entry is None:
            return None
        if entry.kind == "symlink" and (parts or follow_last):
            hops += 1
            if hops > _MAX_LINKS:
                raise InvalidArgument(f"{where}{_show(src)}: too many levels of symbolic links")
            via = f" (symlink {_show(here)} -> {_show(entry.target)})"
            if entry.target.startswith("/"):
                # BuildKit would re-root it in the context; the link meant the host's path.
                raise _Escape(
                    f"{where}forbidden path outside the build context: {_show(src)}{via}", via)
            parts = [p for p in entry.target.split("/") if p not in ("", ".")] + parts
            continue
        if parts and entry.kind != "dir":
            return None
        done.append(part)
    return entries.get("/".join(done)) if done else root_entry


def _follow(context: Context, path: str, src: str, where: str) -> Entry:
    entry = _lookup(context.entries, context.root_entry, path, src, where, follow_last=True)
    if entry is None:
        raise InvalidArgument(f"{where}failed to compute cache key: {quote('/' + path)}: not found")
    return entry


def _contents(context: Context, directory: Entry) -> list[Source]:
    out = [Source("", directory)]
    prefix = directory.path + "/" if directory.path else ""
    for path, entry in context.entries.items():
        if path.startswith(prefix):
            out.append(Source(path[len(prefix):], entry))
    return out


# -- the walk ----------------------------------------------------------------------


def _matcher(root_fd: int, dockerfile: str | None) -> ignore.Matcher:
    """The context's ignore rules: `<Dockerfile>.dockerignore` beside a named
    Dockerfile wins over the context's `.dockerignore`."""
    candidates: list[tuple[str, bool]] = []
    if dockerfile is not None and dockerfile != "-":
        candidates.append((dockerfile + ".dockerignore", not os.path.isabs(dockerfile)))
    candidates.append((".dockerignore", True))
    for name, inside in candidates:
        if "\0" in name:  # ctypes would pass the name only up to it: another file
            raise InvalidArgument(f"error reading {quote(name)}: embedded null byte")
        # O_NONBLOCK: a FIFO named .dockerignore must not hang the build.
        try:
            if inside:
                fd = syscalls.openat2(root_fd, posixpath.normpath(name),
                                      os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, _BENEATH)
            else:
                fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                continue
            raise InvalidArgument(
                f"error reading {quote(name)}: {os.strerror(e.errno or 0)}") from None
        try:
            _regular(fd, f"error reading {quote(name)}")
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read()
        except OSError as e:
            raise InvalidArgument(
                f"error reading {quote(name)}: {os.strerror(e.errno or 0)}") from None
        finally:
            os.close(fd)
        return ignore.Matcher(ignore.parse(data, posixpath.basename(name)),
                              posixpath.basename(name))
    return ignore.Matcher([])


def _regular(fd: int, what: str) -> None:
    """Require *fd* (opened O_NONBLOCK or not) to be a regular file, then make it blocking."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise InvalidArgument(f"{what}: not a regular file")
    os.set_blocking(fd, True)


def _kind(st: os.stat_result) -> Kind | None:
    if stat.S_ISREG(st.st_mode):
        return "file"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    return None  # sockets, FIFOs, devices: nothing COPY can bring


def _unreadable(path: str, e: OSError) -> InvalidArgument:
    return InvalidArgument(f"error checking context: {quote(path)}: {os.strerror(e.errno or 0)}")


def _walk(root_fd: int, matcher: ignore.Matcher) -> dict[str, Entry]:
    """Every entry the ignore rules keep, through fds (O_NOFOLLOW at each level).

    A directory the rules exclude is still walked if an exception may match
    below it; it is then kept only if something under it is (as BuildKit
    sends the parents of what it sends).
    """
    out: dict[str, Entry] = {}

    def keep(entry: Entry, excluded_parents: list[Entry]) -> None:
        for parent in excluded_parents:
            out[parent.path] = parent
        out[entry.path] = entry

    # (a directory's path, its excluded ancestors still being walked). A
    # directory is opened only when popped, so one fd is open at a time
    # however many siblings wait (a node_modules has thousands).
    stack: list[tuple[str, list[Entry]]] = [("", [])]
    while stack:
        base, pending = stack.pop()
        try:
            fd = syscalls.openat2(root_fd, base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                                  _BENEATH) if base else os.dup(root_fd)
        except FileNotFoundError:
            continue  # gone since its parent's listing
        except OSError as e:
            raise _unreadable(base, e) from None
        try:
            try:
                with os.scandir(fd) as it:
                    names = sorted(e.name for e in it)
            except OSError as e:
                raise _unreadable(base or ".", e) from None
            for name in names:
                path = f"{base}/{name}" if base else name
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    kind = _kind(st)
                    target = os.readlink(name, dir_fd=fd) if kind == "symlink" else ""
                except FileNotFoundError:
                    continue  # gone since the listing: as if it never was
                except OSError as e:
                    raise _unreadable(path, e) from None
                if kind is None:
                    continue
                entry = Entry(path, kind, stat.S_IMODE(st.st_mode),
                              st.st_size if kind == "file" else 0, target)
                skip = bool(matcher) and matcher.excluded(path)
                if not skip:
                    keep(entry, pending)
                if kind != "dir" or (skip and not (
                        matcher.exclusions and matcher.may_include_below(path))):
                    continue
                stack.append((path, [*pending, entry] if skip else []))
        finally:
            os.close(fd)
    return out


# -- a tar context ---------------------------------------------------------------------


# A tar context's budget. docker sets none, but a 200 KB gzip inflates to
# gigabytes, and TMPDIR is often tmpfs (RAM): 10 GiB of files and a million
# members are more than any real context holds (a sparse file counts its
# full size: its zeros are still read).
MAX_BYTES = 10 << 30
MAX_MEMBERS = 1_000_000


def _refuse(name: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"invalid build context tar: member {quote(name)}: {why}")


def _tar_error(name: str, why: str) -> InvalidArgument:
    return _refuse(name, why) if name else InvalidArgument(f"invalid build context tar: {why}")


# Beyond the kernel's PATH_MAX a path cannot be opened in one call; docker's own
# walk fails on such a name too, so a member this long is refused at extraction.
_PATH_MAX = 4095
# A member's time is not in the cache key; one the platform cannot store
# (NaN, 2**70) is clamped rather than refused, as Go's time would carry it.
_TIME_LIMIT = 2**34


def _mtime(m: tarfile.TarInfo) -> float:
    t = m.mtime
    if not isinstance(t, (int, float)) or not math.isfinite(t):
        return 0.0
    return float(min(max(t, -_TIME_LIMIT), _TIME_LIMIT))


def _member_path(name: str) -> str:
    if len(os.fsencode(name)) > _PATH_MAX:
        raise _refuse(name[:64] + "...", f"path longer than {_PATH_MAX} bytes")
    if name.startswith("/"):
        raise _refuse(name, "absolute path")
    clean = posixpath.normpath(name)
    if _escapes(clean):
        raise _refuse(name, "path outside the build context")
    return clean


def _open_parent(root_fd: int, path: str, name: str) -> int:
    """An O_PATH fd on *path*'s parent directory, made (0755) where missing."""
    parent = posixpath.dirname(path)
    fd = os.dup(root_fd)
    try:
        for part in parent.split("/") if parent else []:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                sub = syscalls.openat2(fd, part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW,
                                       _BENEATH)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _refuse(name, "a parent is not a directory (a symlink?)") from None
                raise
            os.close(fd)
            fd = sub
    except BaseException:
        os.close(fd)
        raise
    return fd


def _clear(dir_fd: int, leaf: str, name: str) -> None:
    """Make room for a non-directory member: a later member replaces an earlier one."""
    try:
        st = os.stat(leaf, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise _refuse(name, "would replace a directory")
    os.unlink(leaf, dir_fd=dir_fd)


def _check_links(root_fd: int, links: set[str]) -> None:
    """Refuse a symlink that leads out of the context through other links.

    Each member's target was checked lexically, which cannot see that
    `u -> ../../..` in a/b/c makes `w -> u/../../../../etc/passwd` leave
    the context. Here every link is resolved over the extracted tree, every
    entry included, as `resolve` would: a consumer that follows links by
    path then still stays inside.
    """
    every = _walk(root_fd, ignore.Matcher([]))
    root = Entry("", "dir", 0o755, 0)
    for path in sorted(links):
        entry = every.get(path)
        if entry is None or entry.kind != "symlink":
            continue  # replaced by a later member
        try:
            _lookup(every, root, path, path, "", follow_last=True)
        except _Escape as e:
            raise _refuse(path, f"symlink pointing outside the build context{e.via}") from None
        except InvalidArgument:
            pass  # a loop reads nothing outside; resolve refuses it if a COPY names it


def _extract(stream: IO[bytes], root_fd: int) -> tuple[dict[str, int], set[str]]:
    """Extract the tar beneath *root_fd*: the members' modes where the disk's
    differ, and the symlinks made.

    On disk the owner (rl's user) keeps rw on files and rwx on directories,
    so a 0000 member can still be hashed and a 0555 directory filled and
    removed; the tar's own mode is what COPY puts in the image.
    """
    files: set[str] = set()  # regular files written, the only valid hardlink targets
    dirs: list[tuple[str, int, float]] = []
    modes: dict[str, int] = {}
    links: set[str] = set()
    current = ""  # the member being extracted, for the message
    count = size = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for m in tar:
                current = m.name
                count += 1
                if m.size < 0:  # base-256 lets a header say so; what follows is then garbage
                    raise _refuse(m.name, "negative size")
                size += m.size if m.isreg() else 0
                if count > MAX_MEMBERS:
                    raise _refuse(m.name, f"build context has more than {MAX_MEMBERS} members")
                if size > MAX_BYTES:
                    raise _refuse(m.name, f"build context larger than {MAX_BYTES >> 30} GiB")
                _extract_member(tar, m, root_fd, files, dirs, modes)
                if m.issym():
                    links.add(posixpath.normpath(m.name))
            current = ""
        # Directory modes and times last, deepest first: a 0555 directory must
        # still take its members, and writing into one moves its mtime.
        for path, mode, mtime in sorted(dirs, key=lambda d: d[0].count("/"), reverse=True):
            current = path
            fd = syscalls.openat2(root_fd, path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                                  _BENEATH)
            try:
                os.fchmod(fd, mode)
                os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)
    except InvalidArgument:
        raise
    except tarfile.TarError as e:
        raise _tar_error(current, str(e)) from None
    except OSError as e:
        raise _tar_error(current, e.strerror or str(e)) from None
    except (ValueError, OverflowError) as e:  # a NUL in a name, a mode out of range
        raise _tar_error(current, str(e)) from None
    except Exception as e:
        # tarfile's stream reader has bugs of its own on corrupt input (AttributeError,
        # TypeError from a bad gzip header; zlib.error, EOFError, lzma.LZMAError):
        # none of them is rl's, all mean the same thing to the user.
        raise _tar_error(current, f"corrupt or unsupported archive ({type(e).__name__})") \
            from None
    return modes, links


def _extract_member(tar: tarfile.TarFile, m: tarfile.TarInfo, root_fd: int,
                    files: set[str], dirs: list[tuple[str, int, float]],
                    modes: dict[str, int]) -> None:
    path = _member_path(m.name)
    mode = m.mode & 0o7777
    if not (m.islnk() and posixpath.normpath(m.linkname) == path):
        # Whatever this member is, it replaces that name (a link to itself leaves it).
        modes.pop(path, None)
        files.discard(path)
    if m.ischr() or m.isblk():
        raise _refuse(m.name, "device nodes are not allowed in a build context")
    if m.isfifo():
        raise _refuse(m.name, "FIFOs are not allowed in a build context")
    if path == ".":
        if m.isdir():
            modes["."] = mode  # the temp dir itself stays 0700: the context is private
            return
        raise _refuse(m.name, "not a directory")
    leaf = posixpath.basename(path)
    parent = _open_parent(root_fd, path, m.name)
    try:
        if m.isdir():
            try:
                os.mkdir(leaf, 0o755, dir_fd=parent)
            except FileExistsError:
                if not stat.S_ISDIR(os.stat(leaf, dir_fd=parent, follow_symlinks=False).st_mode):
                    raise _refuse(m.name, "replaces a file with a directory") from None
            dirs.append((path, mode | 0o700, _mtime(m)))
            if mode | 0o700 != mode:
                modes[path] = mode
        elif m.issym():
            target = m.linkname
            if target.startswith("/"):
                raise _refuse(m.name, f"symlink to an absolute path ({_show(target)})")
            if _escapes(posixpath.normpath(posixpath.join(posixpath.dirname(path), target))):
                raise _refuse(m.name, "symlink pointing outside the build context "
                              f"({_show(target)})")
            _clear(parent, leaf, m.name)
            os.symlink(target, leaf, dir_fd=parent)
        elif m.islnk():
            target = _member_path(m.linkname) if not m.linkname.startswith("/") else ""
            if target not in files:
                raise _refuse(m.name, f"hardlink to {quote(m.linkname)}, not an earlier file "
                              "of the context")
            if target != path:  # a link to itself is already there
                _clear(parent, leaf, m.name)
                os.link(target, leaf, src_dir_fd=root_fd, dst_dir_fd=parent,
                        follow_symlinks=False)
                # One inode, one mode: the file's, which the walk sees on disk
                # only as widened for rl's own reads.
                if target in modes:
                    modes[path] = modes[target]
                files.add(path)
        elif m.isreg():
            _clear(parent, leaf, m.name)
            fd = syscalls.openat2(parent, leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                  | os.O_NOFOLLOW, _BENEATH)
            try:
                data = tar.extractfile(m)
                assert data is not None  # a regular member always has data
                _copy_keeping_holes(data, fd)
                os.fchmod(fd, mode | 0o600)
                if mode | 0o600 != mode:
                    modes[path] = mode
                os.utime(fd, (_mtime(m), _mtime(m)))
            finally:
                os.close(fd)
            files.add(path)
        else:
            raise _refuse(m.name, "unsupported member type")
    finally:
        os.close(parent)


def _copy_keeping_holes(data: IO[bytes], fd: int) -> None:
    """Copy *data* to *fd*, a run of zeros skipped rather than written.

    A sparse member (1.5 KB of tar for 8 GiB of file) is read as zeros by
    tarfile; skipping them leaves holes, so it costs the budget's bytes
    of reading but not of disk.
    """
    size = 0
    while chunk := data.read(_CHUNK):
        if chunk.count(0) == len(chunk):
            os.lseek(fd, len(chunk), os.SEEK_CUR)
        else:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
        size += len(chunk)
    os.ftruncate(fd, size)


def _remove_tree(path: str) -> None:
    """rm -rf of a tree rl made, also where a directory's mode denies its owner.

    Iterative and one fd at a time (down by name, back up by ".."): a tar may
    nest thousands of levels, past Python's recursion limit and RLIMIT_NOFILE.
    The tree is rl's private temp dir, so nothing else renames it meanwhile.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        os.chmod(path, 0o700)
        fd = os.open(path, flags)
    except FileNotFoundError:
        return
    below: list[str] = []  # the names from *path* down to fd's directory
    try:
        while True:
            with os.scandir(fd) as it:
                listing = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
            sub = ""
            for name, is_dir in listing:
                if is_dir:
                    sub = sub or name
                else:
                    os.unlink(name, dir_fd=fd)
            if sub:
                os.chmod(sub, 0o700, dir_fd=fd)  # a 0000 member directory, still ours
                child = os.open(sub, flags, dir_fd=fd)
                os.close(fd)
                fd = child
                below.append(sub)
                continue
            if not below:
                break
            parent = os.open("..", flags, dir_fd=fd)
            os.close(fd)
            fd = parent
            os.rmdir(below.pop(), dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)
