"""COPY and ADD beyond plain context files: owners by name, symbolic modes,
--exclude, --parents and --link, heredoc files, COPY --from's tree of a stage
or an image, the destination resolved in the stage, ADD's extraction of a
local tar and its fetch of a URL (docs/decisions.md, "COPY and ADD").

Each piece either answers what a step brings (the sources, their owners and
modes: what a cache key is computed from) or writes members into the
step's layer tar; the two are kept apart so a key fits between them.
"""

from __future__ import annotations

import copy
import os
import posixpath
import re
import stat
import tarfile
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

import zstandard  # imported here, not in a forked child (image/layers.py says why)

if TYPE_CHECKING:
    from _typeshed import SupportsRead

from rootless.build import ignore
from rootless.build.context import MAX_BYTES, MAX_MEMBERS, Source
from rootless.build.dockerfile import Heredoc, Instruction
from rootless.errors import InvalidArgument

WHITEOUT = ".wh."  # a layer tar's deletion marker: never a name COPY may write


def history_text(ins: Instruction) -> str:
    """A COPY/ADD layer's created_by, as BuildKit's (dockerfile2llb/convert_copy.go):
    --parents, --chown and --chmod (not the other flags), the sources, each heredoc
    as `<<NAME`, the destination."""
    words = [ins.kind]
    if ins.flag("parents") is True:
        words.append("--parents")
    for flag in ("chown", "chmod"):
        value = ins.flag(flag)
        if isinstance(value, str) and value:
            words.append(f"--{flag}={value}")
    words += [*ins.sources(), *(f"<<{doc.name}" for doc in ins.heredocs), ins.dest()]
    return " ".join(words) + " # buildkit"


# -- --chown ----------------------------------------------------------------------------


def _db_lookup(data: bytes | None, name: str) -> list[str] | None:
    """The fields of *name*'s line in a passwd/group file's text, if it has one."""
    if data is None:
        return None
    for line in data.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name:
            return fields
    return None


def chown(value: object, read: Callable[[str], bytes | None], where: str) -> tuple[int, int]:
    """--chown=USER[:GROUP], numeric or by name in the stage's /etc/passwd and
    /etc/group (*read* gives a file of the destination stage); (-1, -1) when absent.

    A name the files lack fails the step, in the classic builder's words
    (docs/decisions.md, COPY and ADD 2).
    """
    if not isinstance(value, str) or not value:
        return -1, -1
    user, sep, group = value.partition(":")
    if user.isdigit():
        uid, gid = int(user), int(user)
    elif user == "root" and _db_lookup(read("/etc/passwd"), "root") is None:
        uid = gid = 0  # BuildKit's llb knows root without a passwd file
    else:
        fields = _db_lookup(read("/etc/passwd"), user)
        if fields is None or len(fields) < 4 or not (fields[2].isdigit() and fields[3].isdigit()):
            raise InvalidArgument(f"{where}unable to convert uid/gid chown string to host "
                                  f"mapping: can't find uid for user {user}: no such user: "
                                  f"{user}")
        uid, gid = int(fields[2]), int(fields[3])
    if sep and group:
        if group.isdigit():
            gid = int(group)
        else:
            gfields = _db_lookup(read("/etc/group"), group)
            if gfields is None or not gfields[2].isdigit():
                raise InvalidArgument(f"{where}unable to convert uid/gid chown string to host "
                                      f"mapping: can't find gid for group {group}: no such "
                                      f"group: {group}")
            gid = int(gfields[2])
    return uid, gid


# -- --chmod ----------------------------------------------------------------------------

_SYMBOLIC = re.compile(r"^([ugoa]*)([-+=])([rwxXst]*)$")


class Mode:
    """--chmod's value: octal (absolute) or chmod(1)'s symbolic clauses (dockerfile 1.14)."""

    def __init__(self, value: str, where: str) -> None:
        self.octal: int | None = None
        self.clauses: list[tuple[str, str, str]] = []
        bad = InvalidArgument(f"{where}invalid chmod parameter: {value}")
        if value and value[0].isdigit():
            # BuildKit's words for anything that looks numeric.
            if not all(c in "01234567" for c in value) or int(value, 8) > 0o7777:
                raise InvalidArgument(f"{where}invalid chmod parameter: '{value}'. it should "
                                      "be octal string and between 0 and 07777")
            self.octal = int(value, 8)
            return
        for clause in value.split(","):
            m = _SYMBOLIC.match(clause)
            if m is None:
                raise bad
            self.clauses.append((m.group(1) or "a", m.group(2), m.group(3)))

    def apply(self, mode: int, is_dir: bool) -> int:
        if self.octal is not None:
            return self.octal
        for who, op, perms in self.clauses:
            bits = 0
            for p in perms:
                if p == "r":
                    bits |= _spread(who, 0o4)
                elif p == "w":
                    bits |= _spread(who, 0o2)
                elif p == "x" or (p == "X" and (is_dir or mode & 0o111)):
                    bits |= _spread(who, 0o1)
                elif p == "s":
                    bits |= (stat.S_ISUID if "u" in who or who == "a" else 0) | \
                        (stat.S_ISGID if "g" in who or who == "a" else 0)
                elif p == "t":
                    bits |= stat.S_ISVTX
            if op == "+":
                mode |= bits
            elif op == "-":
                mode &= ~bits
            else:
                mode = (mode & ~_spread(who, 0o7)) | bits
        return mode & 0o7777


def _spread(who: str, bits: int) -> int:
    out = 0
    if "u" in who or "a" in who:
        out |= bits << 6
    if "g" in who or "a" in who:
        out |= bits << 3
    if "o" in who or "a" in who:
        out |= bits
    return out


def chmod(value: object, where: str) -> Mode | None:
    if not isinstance(value, str) or not value:
        return None
    return Mode(value, where)


# -- --exclude --------------------------------------------------------------------------


def exclude(sources: list[Source], patterns: object, where: str) -> list[Source]:
    """The sources that no --exclude pattern matches; a pattern is .dockerignore's
    kind, matched against the name under the destination (relative to the source)."""
    if not isinstance(patterns, tuple) or not patterns:
        return sources
    matcher = ignore.Matcher(ignore.parse("\n".join(patterns), "--exclude"),
                             f"{where}--exclude")
    return [s for s in sources if s.name == "" or not matcher.excluded(s.name)]


# -- heredocs ---------------------------------------------------------------------------


def heredoc_member(doc: Heredoc, name: str, uid: int, gid: int,
                   mode: Mode | None) -> tuple[tarfile.TarInfo, bytes]:
    """A `COPY <<EOF` file: its text (already expanded unless quoted), mode 0644."""
    data = doc.content.encode("utf-8", "surrogateescape")
    info = tarfile.TarInfo(name.strip("/"))
    info.size, info.mtime = len(data), int(time.time())
    info.uid, info.gid = max(uid, 0), max(gid, 0)
    info.mode = mode.apply(0o644, False) if mode else 0o644
    return info, data


def check_name(name: str, where: str) -> None:
    if posixpath.basename(name).startswith(WHITEOUT):
        raise InvalidArgument(f"{where}{posixpath.basename(name)}: a name beginning with "
                              f"{WHITEOUT} cannot be stored in an image layer (it means a "
                              "deletion there)")


# -- ADD of a local tar -----------------------------------------------------------------


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _decompressed(f: IO[bytes]) -> IO[bytes]:
    """*f* itself, or a zstd frame's decompressed stream (moby's DecompressStream knows
    zstd too; tarfile does not): tarfile's `r|*` finds gzip, bzip2 and xz itself."""
    head = f.read(4)
    f.seek(0)
    if head != _ZSTD_MAGIC:
        return f
    return zstandard.ZstdDecompressor().stream_reader(
        f, read_across_frames=True)


def is_archive(f: IO[bytes]) -> bool:
    """Whether ADD unpacks this file: a tar (plain or compressed) with a first member,
    as moby's isArchive (an empty tar is copied as a file)."""
    try:
        with tarfile.open(fileobj=_decompressed(f), mode="r|*") as tar:
            return tar.next() is not None
    except (tarfile.TarError, EOFError, OSError, ValueError, zstandard.ZstdError):
        return False


def extract_into(out: tarfile.TarFile, archive: IO[bytes], shown: str, dest: str,
                 owner: tuple[int, int], where: str) -> None:
    """ADD's unpacking of a local tar: its members re-rooted at *dest* in the layer.

    As moby's Untar: an absolute name is joined to the destination; a name
    or a link that climbs out of it with `..` is refused; a hardlink must name
    an earlier file of the archive; devices are skipped (a rootless docker
    cannot make them either); nothing below a symlink member is accepted
    (it would land wherever the link points).
    """
    dest_rel = dest.strip("/")
    files: set[str] = set()
    links: set[str] = set()
    count = size = 0
    uid, gid = owner

    def refuse(name: str, why: str) -> InvalidArgument:
        return InvalidArgument(f"{where}ADD {shown}: member {ignore.quote(name)}: {why}")

    try:
        with tarfile.open(fileobj=_decompressed(archive), mode="r|*") as tar:
            for m in tar:
                count += 1
                size += m.size if m.isreg() else 0
                if count > MAX_MEMBERS or size > MAX_BYTES or m.size < 0:
                    raise refuse(m.name, "archive larger than rl unpacks "
                                 f"({MAX_MEMBERS} members, {MAX_BYTES >> 30} GiB)")
                clean = posixpath.normpath("/" + m.name).lstrip("/")
                if posixpath.normpath(m.name.lstrip("/")).startswith("../") or \
                        posixpath.normpath(m.name.lstrip("/")) == "..":
                    raise refuse(m.name, f"is outside of {ignore.quote(dest)}")
                if m.ischr() or m.isblk():
                    continue
                if not clean or clean == ".":
                    continue  # the destination itself, made already
                parts = clean.split("/")
                if any("/".join(parts[:i]) in links for i in range(1, len(parts))):
                    raise refuse(m.name, "a parent directory is a symlink of the archive")
                check_name(clean, f"{where}ADD {shown}: ")
                name = posixpath.join(dest_rel, clean) if dest_rel else clean
                info = tarfile.TarInfo(name)
                info.mode, info.mtime = m.mode & 0o7777, m.mtime
                info.uid, info.gid = (uid, gid) if uid >= 0 else (m.uid, m.gid)
                if m.issym():
                    target = posixpath.normpath(posixpath.join(posixpath.dirname(clean),
                                                               m.linkname))
                    if not m.linkname.startswith("/") and (target == ".." or
                                                           target.startswith("../")):
                        raise refuse(m.name, f"invalid symlink -> {ignore.quote(m.linkname)}")
                    info.type, info.linkname = tarfile.SYMTYPE, m.linkname
                    links.add(clean)
                    out.addfile(info)
                elif m.islnk():
                    target = posixpath.normpath("/" + m.linkname).lstrip("/")
                    if posixpath.normpath(m.linkname.lstrip("/")).startswith("..") or \
                            target not in files:
                        raise refuse(m.name, f"invalid hardlink -> {ignore.quote(m.linkname)}"
                                     " (not an earlier file of the archive)")
                    info.type = tarfile.LNKTYPE
                    info.linkname = posixpath.join(dest_rel, target) if dest_rel else target
                    files.add(clean)
                    out.addfile(info)
                elif m.isdir():
                    info.type = tarfile.DIRTYPE
                    out.addfile(info)
                elif m.isfifo():
                    info.type = tarfile.FIFOTYPE
                    out.addfile(info)
                elif m.isreg():
                    info.size = m.size
                    out.addfile(info, tar.extractfile(m))
                    files.add(clean)
                else:
                    raise refuse(m.name, "unsupported member type")
                if not m.issym():
                    links.discard(clean)  # a later member replaced the link
    except InvalidArgument:
        raise
    except (tarfile.TarError, OSError, EOFError, ValueError, zstandard.ZstdError) as e:
        raise InvalidArgument(f"{where}ADD {shown}: corrupt or unsupported archive: {e}") \
            from None


# -- ADD of a URL -----------------------------------------------------------------------

_MAX_REDIRECTS = 10  # Go's http client stops after 10, and BuildKit says so


def is_url(word: str) -> bool:
    return word.startswith(("http://", "https://"))


def is_git(word: str) -> bool:
    """A source BuildKit would clone: git@..., git://..., or a URL of a .git repository."""
    base = word.split("#", 1)[0]
    return word.startswith(("git@", "git://")) or (is_url(word) and base.endswith(".git"))


_DIGESTS = {"sha256": 64, "sha384": 96, "sha512": 128}  # go-digest's algorithms


def checksum(value: object, where: str) -> str | None:
    """--checksum's digest, checked as go-digest's Parse does (its words)."""
    if not isinstance(value, str) or not value:
        return None
    algo, sep, hexpart = value.partition(":")
    if not sep or not algo or not hexpart:
        raise InvalidArgument(f"{where}invalid checksum digest format")
    if algo not in _DIGESTS:
        raise InvalidArgument(f"{where}unsupported digest algorithm")
    if len(hexpart) != _DIGESTS[algo]:
        raise InvalidArgument(f"{where}invalid checksum digest length")
    if not all(c in "0123456789abcdef" for c in hexpart):
        raise InvalidArgument(f"{where}invalid checksum digest format")
    return value


def download(url: str, directory: str, expect: str | None,
             where: str) -> tuple[str, str, float]:
    """Fetch *url* into a file of *directory*: (its path, the file name ADD gives
    it, its mtime). Redirects are followed (10 at most); an answer that is not
    2xx, a body past the size budget or a --checksum mismatch is refused."""
    import email.utils
    import hashlib

    import httpx

    path = os.path.join(directory, f"url-{os.urandom(6).hex()}")
    algo = expect.partition(":")[0] if expect else "sha256"
    h = hashlib.new(algo)
    size = 0
    try:
        with httpx.Client(follow_redirects=True, max_redirects=_MAX_REDIRECTS,
                          timeout=httpx.Timeout(30.0)) as client, \
                client.stream("GET", url) as resp:
            if not 200 <= resp.status_code < 300:
                raise InvalidArgument(f"{where}failed to load cache key: invalid response "
                                      f"status {resp.status_code}")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as f:
                for chunk in resp.iter_bytes(1 << 20):
                    size += len(chunk)
                    if size > MAX_BYTES:
                        raise InvalidArgument(f"{where}{url}: larger than "
                                              f"{MAX_BYTES >> 30} GiB")
                    h.update(chunk)
                    f.write(chunk)
            name = url_name(url)
            mtime = time.time()
            modified = resp.headers.get("last-modified")
            if modified:
                try:
                    mtime = email.utils.parsedate_to_datetime(modified).timestamp()
                except (TypeError, ValueError):
                    pass
    except httpx.TooManyRedirects:
        raise InvalidArgument(f'{where}failed to load cache key: Get "{url}": stopped after '
                              f"{_MAX_REDIRECTS} redirects") from None
    except httpx.HTTPError as e:
        raise InvalidArgument(f'{where}failed to load cache key: Get "{url}": {e}') from None
    got = f"{algo}:{h.hexdigest()}"
    if expect is not None and got != expect:
        raise InvalidArgument(f"{where}digest mismatch {got}: {expect}")
    return path, name, mtime


def url_name(url: str) -> str:
    """The file name ADD gives a URL: the last element of the URL's own path (not of
    a redirect's, nor Content-Disposition's), `__unnamed__` when it has none (BuildKit)."""
    import urllib.parse

    try:
        path = urllib.parse.urlsplit(url).path
    except ValueError:
        return "__unnamed__"
    path = urllib.parse.unquote(path, errors="surrogateescape")
    base = posixpath.basename(path.rstrip("/")) if path.strip("/") else ""
    return base if base not in ("", ".", "..") and "\0" not in base else "__unnamed__"


# -- COPY --from: a stage's or an image's tree ------------------------------------------

_MAX_LINKS = 40  # Linux's MAXSYMLINKS


def has_meta(text: str) -> bool:
    return any(c in text for c in "*?[\\")


class LayerTree:
    """The files of a stage or an image as COPY --from reads them, straight from
    its layer directories (bottom first; read inside the user namespace, where
    their owners are the image's): whiteouts, opaque directories and
    non-directories hiding what is below, as overlayfs composes them. Symlinks
    are followed inside that root only (an absolute one from its root, `..`
    stopping there); globs are Go's filepath.Match per path element. A layer is
    hostile input: every directory is opened from its layer's root with
    RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, every name reached from that fd.
    Only the directories on the requested paths are listed, never the tree."""

    def __init__(self, layers: list[str], where: str) -> None:
        self.where = where
        self.roots: list[int] = []  # top layer first
        try:
            for layer in reversed(layers):
                self.roots.append(os.open(layer, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
        except OSError:
            self.close()
            raise
        root = tarfile.TarInfo(".")
        root.type, root.mode = tarfile.DIRTYPE, 0o755
        self._members: dict[str, tarfile.TarInfo] = {"": root}
        # rel -> (layer index, lstat) of the entry that shows; directories also get
        # the layers whose directory of that name merges into it.
        self._entries: dict[str, tuple[int, os.stat_result]] = {}
        self._dirs: dict[str, list[int]] = {"": list(range(len(self.roots)))}
        self._children: dict[str, list[str]] = {}

    def close(self) -> None:
        for fd in self.roots:
            os.close(fd)
        self.roots = []

    def __enter__(self) -> LayerTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, layer: int, rel: str, flags: int) -> int:
        from rootless import syscalls

        return syscalls.openat2(self.roots[layer], rel or ".", flags | os.O_CLOEXEC,
                                syscalls.RESOLVE_BENEATH | syscalls.RESOLVE_NO_SYMLINKS)

    def _list(self, directory: str) -> list[str]:
        """The names in a directory of the composed tree (which must be one)."""
        names = self._children.get(directory)
        if names is not None:
            return names
        found: dict[str, tuple[int, os.stat_result]] = {}
        merged: dict[str, list[int]] = {}
        done: set[str] = set()  # names whose lower layers no longer count
        for layer in self._dirs[directory]:
            try:
                fd = self._open(layer, directory, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                continue  # not a directory there after all (it was checked by lstat)
            try:
                for name in os.listdir(fd):
                    if name in done:
                        continue
                    try:
                        st = os.lstat(name, dir_fd=fd)
                    except (FileNotFoundError, NotADirectoryError):
                        continue
                    if _is_whiteout(st):
                        done.add(name)
                        continue
                    top = found.setdefault(name, (layer, st))[1]
                    if not stat.S_ISDIR(st.st_mode) or not stat.S_ISDIR(top.st_mode):
                        done.add(name)  # a non-directory hides what lies below it
                        continue
                    merged.setdefault(name, []).append(layer)
                    if _opaque(f"/proc/self/fd/{fd}/{name}"):
                        done.add(name)
            finally:
                os.close(fd)
        prefix = directory + "/" if directory else ""
        names = []
        for name in sorted(found):
            layer, st = found[name]
            if stat.S_ISSOCK(st.st_mode):
                continue  # no tar form (an export skips it too)
            names.append(name)
            self._entries[prefix + name] = (layer, st)
            if name in merged:
                self._dirs[prefix + name] = merged[name]
        self._children[directory] = names
        return names

    def _entry(self, rel: str) -> tuple[int, os.stat_result] | None:
        """*rel*'s entry (no symlink on it followed), or None when nothing is there."""
        if rel in self._entries:
            return self._entries[rel]
        parts = rel.split("/")
        for i in range(len(parts)):
            parent = "/".join(parts[:i])
            if parent not in self._dirs:
                return None
            self._list(parent)
        return self._entries.get(rel)

    def _isdir(self, rel: str) -> bool:
        entry = self._entry(rel) if rel else None
        return rel == "" or (entry is not None and stat.S_ISDIR(entry[1].st_mode))

    def _readlink(self, rel: str, layer: int) -> str:
        parent, _, name = rel.rpartition("/")
        fd = self._open(layer, parent, os.O_PATH | os.O_DIRECTORY)
        try:
            return os.readlink(name, dir_fd=fd)
        finally:
            os.close(fd)

    def member(self, rel: str) -> tarfile.TarInfo:
        """The tar member of an entry that lookup() found, as `rl export` writes it."""
        m = self._members.get(rel)
        if m is not None:
            return m
        entry = self._entry(rel)
        assert entry is not None
        layer, st = entry
        m = tarfile.TarInfo(rel)
        m.mode = stat.S_IMODE(st.st_mode)
        m.uid, m.gid, m.uname, m.gname = st.st_uid, st.st_gid, "", ""
        m.mtime = st.st_mtime
        if stat.S_ISLNK(st.st_mode):
            m.type, m.linkname = tarfile.SYMTYPE, self._readlink(rel, layer)
        else:
            parent, _, name = rel.rpartition("/")
            fd = self._open(layer, parent, os.O_PATH | os.O_DIRECTORY)
            try:
                m.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                                 for k, v in _xattrs(f"/proc/self/fd/{fd}/{name}").items()
                                 if not k.startswith("user.overlay.")}
            finally:
                os.close(fd)
            if stat.S_ISREG(st.st_mode):
                m.size = st.st_size
            elif stat.S_ISDIR(st.st_mode):
                m.type = tarfile.DIRTYPE
            elif stat.S_ISFIFO(st.st_mode):
                m.type = tarfile.FIFOTYPE
            else:  # a device: COPY skips it
                m.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
                m.devmajor, m.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        self._members[rel] = m
        return m

    def link_key(self, rel: str) -> tuple[int, int] | str:
        """What the names of one file (its hard links in one layer) share."""
        entry = self._entry(rel)
        assert entry is not None
        st = entry[1]
        return (st.st_dev, st.st_ino) if st.st_nlink > 1 else rel

    def data(self, rel: str) -> IO[bytes]:
        """A regular file's contents (never a file swapped in since it was listed)."""
        entry = self._entry(rel)
        assert entry is not None
        layer, st = entry
        fd = self._open(layer, rel, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or now.st_ino != st.st_ino:
            os.close(fd)
            raise InvalidArgument(f"{self.where}/{rel} changed while it was copied")
        return os.fdopen(fd, "rb")

    def lookup(self, path: str, follow_last: bool = True) -> str | None:
        """The entry path *path* leads to, or None when nothing is there."""
        parts = [p for p in path.split("/") if p not in ("", ".")]
        done: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if done:
                    done.pop()
                continue
            here = "/".join([*done, part])
            entry = self._entry(here)
            if entry is None:
                return None
            st = entry[1]
            if stat.S_ISLNK(st.st_mode) and (parts or follow_last):
                hops += 1
                if hops > _MAX_LINKS:
                    return None
                target = self.member(here).linkname
                if target.startswith("/"):
                    done = []
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                continue
            if parts and not stat.S_ISDIR(st.st_mode):
                return None
            done.append(part)
        return "/".join(done)

    def glob(self, path: str) -> list[str]:
        """The paths (as written, not resolved) that *path* names."""
        found = [""]
        for part in [p for p in path.split("/") if p not in ("", ".")]:
            nxt: list[str] = []
            for base in found:
                if not has_meta(part):
                    nxt.append(posixpath.join(base, part) if base else part)
                    continue
                directory = self.lookup(base)
                if directory is None or not self._isdir(directory):
                    continue
                rx = ignore.compile_glob(part, self.where, double_star=False)
                nxt.extend(posixpath.join(base, n) if base else n
                           for n in self._list(directory) if rx.match(n))
            found = nxt
        return [p for p in found if self.lookup(p) is not None]

    def below(self, directory: str) -> list[tuple[str, str]]:
        """A directory's entries under it: (name relative to it, entry path), parents
        first, names sorted."""
        out: list[tuple[str, str]] = []
        stack = [""]
        while stack:
            rel = stack.pop()
            full = posixpath.join(directory, rel) if rel else directory
            for name in reversed(self._list(full)):
                sub = posixpath.join(rel, name) if rel else name
                path = posixpath.join(full, name) if full else name
                out.append((sub, path))
                if path in self._dirs:
                    stack.append(sub)
        out.sort(key=lambda item: item[0].split("/"))
        return out


def exclude_names(items: list[tuple[str, str]], patterns: object,
                  where: str) -> list[tuple[str, str]]:
    """--exclude over (name under the destination, entry) pairs, as exclude()."""
    if not isinstance(patterns, tuple) or not patterns:
        return items
    matcher = ignore.Matcher(ignore.parse("\n".join(patterns), "--exclude"),
                             f"{where}--exclude")
    return [(n, m) for n, m in items if n == "" or not matcher.excluded(n)]


def copy_from_tree(out: tarfile.TarFile, tree: LayerTree, srcs: tuple[str, ...],
                   dest: str, as_dir: bool, is_dir: Callable[[str], bool],
                   owner: tuple[int, int, Mode | None], flags: tuple[bool, object],
                   where: str) -> None:
    """COPY --from's members into the layer tar: docker's naming (a directory brings
    its contents, a file its own name in a directory destination), --parents
    keeping each path from the root or from a `/./` pivot, --exclude, the
    stage's hard links kept among the copied files (else copied as files)."""
    parents, patterns = flags
    picked: list[tuple[str, str]] = []  # (absolute name in the layer, entry of the tree)
    many = len(srcs) > 1
    matches: list[tuple[str, str, list[str]]] = []
    for src in srcs:
        pivot, sep, rest = src.partition("/./") if parents else (src, "", "")
        text = posixpath.join(pivot, rest) if sep else src
        found = tree.glob(text)
        if not found:  # as the context's sources (rootless/build/context.py)
            raise InvalidArgument(f"{where}failed to compute cache key: "
                                  f'"{posixpath.normpath("/" + text)}": not found')
        many = many or (has_meta(text) and len(found) > 1)
        matches.append((src, pivot.strip("/") if sep else "", found))
    if many and not as_dir:
        raise InvalidArgument(f"{where}When using COPY with more than one source file, "
                              "the destination must be a directory and end with a /")
    for _src, pivot, found in matches:
        for path in found:
            real = tree.lookup(path)
            assert real is not None  # glob() keeps only paths that lead somewhere
            top = tree.member(real)
            if parents:
                rel = posixpath.relpath(path, pivot) if pivot else path
                if rel == ".." or rel.startswith("../"):
                    continue
                base = posixpath.join(dest, rel)
                parts = rel.split("/")
                for i in range(1, len(parts)):
                    up = tree.lookup(posixpath.join(pivot, *parts[:i]))
                    picked.append((posixpath.join(dest, *parts[:i]), up or ""))
            elif top.isdir():
                base = dest
            else:
                into = as_dir or many or is_dir(dest)
                base = posixpath.join(dest, posixpath.basename(path)) if into else dest
            items = [("", real)] + (tree.below(real) if top.isdir() else [])
            for name, entry in exclude_names(items, patterns, where):
                picked.append((posixpath.join(base, name) if name else base, entry))
    uid, gid, chmod = owner
    first: dict[tuple[int, int] | str, str] = {}  # a file -> the layer name it was first written as
    names: set[str] = set()
    for name, entry in picked:
        m = tree.member(entry)
        name = posixpath.normpath(name)
        if name in names or (name == dest and m.isdir() and is_dir(name)):
            continue  # an existing destination directory keeps its own metadata
        names.add(name)
        check_name(name, where)
        if m.ischr() or m.isblk():
            continue
        copied = copy.copy(m)
        copied.pax_headers = dict(m.pax_headers)
        copied.name = name.lstrip("/") or "."
        if uid >= 0:
            copied.uid, copied.gid, copied.uname, copied.gname = uid, gid, "", ""
        if chmod is not None and not m.issym():
            copied.mode = chmod.apply(m.mode, m.isdir())
        if not m.isfile():
            out.addfile(copied)
            continue
        # Hard links of the stage stay links among the copied names, whichever
        # of them comes first; the first is written as the file.
        key = tree.link_key(entry)
        if key in first:
            copied.type, copied.linkname, copied.size = tarfile.LNKTYPE, first[key], 0
            out.addfile(copied)
            continue
        first[key] = copied.name
        with tree.data(entry) as data:
            out.addfile(copied, data)


# -- a stage's own files, read from its layer directories ------------------------------


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _xattrs(path: str) -> dict[str, bytes]:
    """An entry's extended attributes (*path*'s last component not followed)."""
    out = {}
    try:
        attrs = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    for attr in attrs:
        try:
            out[attr] = os.getxattr(path, attr, follow_symlinks=False)
        except OSError:
            continue
    return out


def _opaque(path: str) -> bool:
    try:
        return os.getxattr(path, "user.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def _child(sources: list[str], rel: str) -> tuple[tuple[str, os.stat_result] | None, list[str]]:
    """The entry *rel* as the layers (top first, each holding its parent as a
    directory) compose it, and the layers that hold it as a directory."""
    found: tuple[str, os.stat_result] | None = None
    below: list[str] = []
    for layer in sources:
        path = os.path.join(layer, rel)
        st = _lstat(path)
        if st is None:
            continue
        if _is_whiteout(st):
            break
        if found is None:
            found = (layer, st)
        if not stat.S_ISDIR(st.st_mode) or not stat.S_ISDIR(found[1].st_mode):
            break  # a non-directory hides what lies below it
        below.append(layer)
        if _opaque(path):
            break
    return found, below


def stage_lstat(layers: list[str], path: str) -> tuple[str, os.stat_result] | None:
    """*path*'s entry as the stage's layer directories (bottom first) compose it:
    whiteouts, opaque directories and non-directories hiding what is below;
    the layer that holds it, and its lstat."""
    parts = [p for p in path.split("/") if p]
    sources, entry = layers[::-1], None
    for i in range(len(parts)):
        entry, sources = _child(sources, "/".join(parts[: i + 1]))
        if entry is None:
            return None
    return entry


def resolve_dest(layers: list[str], path: str) -> str:
    """*path* (absolute, clean) with the stage's symlinks on it followed, each
    kept inside the root, as BuildKit resolves a COPY destination without
    --link (a missing tail is kept as it is written)."""
    parts = [p for p in path.split("/") if p]
    done: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        here = "/".join([*done, part])
        found = stage_lstat(layers, here)
        if found is None or not stat.S_ISLNK(found[1].st_mode):
            done.append(part)
            continue
        hops += 1
        if hops > 40:  # Linux's MAXSYMLINKS
            raise InvalidArgument(f"too many levels of symbolic links: {path}")
        target = os.readlink(os.path.join(found[0], here))
        if target.startswith("/"):
            done = []
        parts = [p for p in target.split("/") if p not in ("", ".")] + parts
    return "/" + "/".join(done)


# -- parent directories the step makes ------------------------------------------------


class ParentsTar(tarfile.TarFile):
    """A layer tar that holds the directories above its members that the stage
    lacks, made 0755 and owned as --chown says, as BuildKit's copy makes the
    destination's parents (not root-owned when --chown names another user).

    For `COPY --link` nothing of the stage counts (*exists* says no): BuildKit
    copies onto an empty tree and merges that over the stage, so every
    directory above a member is in the layer, a symlink of the stage on the
    destination path is replaced, not followed, and those directories'
    modes are the layer's (docs/decisions.md, COPY and ADD 3)."""

    owner: tuple[int, int] = (0, 0)
    exists: Callable[[str], bool] = staticmethod(lambda path: False)

    def addfile(self, tarinfo: tarfile.TarInfo,
                fileobj: SupportsRead[bytes] | None = None) -> None:
        made: set[str] = self.__dict__.setdefault("_made", set())
        parts = tarinfo.name.strip("/").split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in made or parent in (".", ""):
                continue
            made.add(parent)
            if self.exists("/" + parent):
                continue
            info = tarfile.TarInfo(parent)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
            info.uid, info.gid = self.owner
            super().addfile(info)
        made.add(tarinfo.name.strip("/"))
        super().addfile(tarinfo, fileobj)
