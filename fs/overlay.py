"""An overlay file system served with pyfuse3: read-only lower layers, one upper dir.

Semantics follow kernel overlayfs in a user namespace (``userxattr``), which
the test suite uses as the reference:

* a name is looked up from the top layer down; a whiteout hides it, a
  non-directory ends the search, directories merge until an opaque one;
* anything that changes a lower entry copies it up first (data, mode, owner,
  times, xattrs), through a temporary file in the work dir so that a crash
  never leaves a half-copied file in the upper dir;
* a removed lower name becomes a whiteout, a directory created over a removed
  one is made opaque (layout.py has the on-disk forms);
* renaming a directory that has lower parts gives EXDEV, as overlayfs does
  without ``redirect_dir`` (which ``userxattr`` excludes): ``mv`` copies.

The file system is only ever changed through this server, so the kernel may
cache entries, attributes and page contents for long (see TIMEOUT); every
operation that changes something answers with fresh attributes.

Nodes are identified by path (parent + name, walked up on use), so renaming
a directory needs no fix-up below it. A node whose last name goes while the
kernel still knows it (an open file, a cwd) keeps an O_PATH fd on its backing
file instead, until the kernel forgets it: the POSIX life of an unlinked open
file. Open files are served by the fd opened for them, and those opened on a
lower file move to the upper copy when it is copied up.

Inode numbers come from the backing file's (st_dev, st_ino), remembered
across copy-up, so they stay stable for the life of the mount even after the
kernel forgets a node, and the hard links of a lower layer are one inode, as
in the kernel. The kernel (without ``index=on``) parts them on copy-up; here
they are one kernel inode with one page cache, so a copy-up copies the file
once and links it at every name the merged view shows.

All work is done synchronously on the trio thread: the calls are short local
syscalls, and a copy-up must not interleave with other changes to the same
node.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import stat
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from fs import layout
from fs._sys import RENAME_EXCHANGE, RENAME_NOREPLACE, renameat2
from fs.copy import copy_sparse

TIMEOUT = 3600.0  # seconds the kernel may trust entries and attributes
UPPER = 0
_TMP_PREFIX = b"#rl-copyup-"
_OPEN_FLAGS_DROP = os.O_CREAT | os.O_EXCL | os.O_NOCTTY

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


class LayerError(Exception):
    """A layer is missing or unusable; raised before anything is mounted."""


def _fuse_errors(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Turn OSError into the FUSEError pyfuse3 passes to the kernel."""

    @wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except Exception:
            # A bug must cost one request, not the whole mount.
            log.exception("%s failed", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


class Node:
    """One inode the kernel knows about."""

    __slots__ = ("aliases", "attr", "children", "dlayers", "fd", "ino", "layer", "listing",
                 "lookups", "lower_fhs", "name", "parent")

    def __init__(self, ino: int, parent: Node | None, name: bytes, layer: int,
                 dlayers: list[int] | None) -> None:
        self.ino = ino
        self.parent = parent
        self.name = name
        self.layer = layer        # topmost layer holding it (UPPER = 0)
        self.dlayers = dlayers    # directories: the layers that merge into it, top first
        self.lookups = 0
        self.children: dict[bytes, Node] = {}
        self.aliases: list[tuple[Node, bytes]] = []  # further hard links
        self.fd = -1  # once nameless (parent None): an O_PATH fd on the backing file
        self.lower_fhs: dict[int, int] | None = None  # open on the lower file: fh -> flags
        # readdir's caches, valid while Overlay._gen is unchanged
        self.attr: tuple[int, pyfuse3.EntryAttributes] | None = None
        self.listing: tuple[int, list[bytes]] | None = None


@dataclass
class _Found:
    layer: int
    st: os.stat_result
    dlayers: list[int] | None


def _join(parent: bytes, name: bytes) -> bytes:
    return name if parent == b"." else parent + b"/" + name


class Overlay(pyfuse3.Operations):
    enable_writeback_cache = False  # keeps ENOSPC on write(2), where users look for it

    def __init__(self, lowers: Sequence[str], upper: str, work: str) -> None:
        super().__init__()
        if not lowers:
            raise LayerError("at least one lower layer is needed")
        self.fds: list[int] = []
        try:
            for kind, path in [("upper", upper), *(("lower", lo) for lo in lowers)]:
                self.fds.append(_open_layer(kind, path))
            self.work_fd = _open_layer("work", work)
            if os.fstat(self.work_fd).st_dev != os.fstat(self.fds[UPPER]).st_dev:
                raise LayerError(f"work dir {work} is not on the upper dir's file system")
        except BaseException:
            self.close()
            raise
        self._clean_work()
        self._next_ino = itertools.count(pyfuse3.ROOT_INODE + 1)
        self._next_tmp = itertools.count()
        self.inos: dict[tuple[int, int], int] = {}
        dl = [UPPER]
        if not layout.is_opaque(self._xpath(UPPER, b".")):
            for i in range(1, len(self.fds)):
                dl.append(i)
                if layout.is_opaque(self._xpath(i, b".")):
                    break
        self.root = Node(pyfuse3.ROOT_INODE, None, b"", UPPER, dl)
        self.root.lookups = 1
        self.nodes: dict[int, Node] = {pyfuse3.ROOT_INODE: self.root}
        self.dirs: dict[int, tuple[Node, list[bytes]]] = {}
        self.lower_fh: dict[int, Node] = {}  # open files on a lower file (Node.lower_fhs)
        # Bumped by every change made through the mount (writes included), so
        # readdir may reuse listings and attributes while nothing changed: a
        # warm walk then costs no syscalls here. (Only atime can move unseen.)
        self._gen = 0
        self._next_dh = itertools.count(1)

    def close(self) -> None:
        for fd in [*self.fds, getattr(self, "work_fd", -1)]:
            if fd >= 0:
                os.close(fd)
        self.fds = []
        self.work_fd = -1

    def _clean_work(self) -> None:
        """Remove copy-up temporaries a killed server left behind."""
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.work_fd)
        try:
            names = os.listdir(fd)
        finally:
            os.close(fd)
        for name in names:
            if os.fsencode(name).startswith(_TMP_PREFIX):
                try:
                    os.unlink(name, dir_fd=self.work_fd)
                except OSError:
                    pass

    # ------------------------------------------------------------------
    # Paths and layers

    def _rel(self, node: Node) -> bytes:
        parts = []
        n = node
        while n.parent is not None:
            parts.append(n.name)
            n = n.parent
        if n is not self.root:
            raise pyfuse3.FUSEError(errno.ENOENT)  # nameless: only its fd reaches it
        if not parts:
            return b"."
        parts.reverse()
        return b"/".join(parts)

    def _xpath(self, layer: int, rel: bytes) -> str:
        """A path for calls without dir_fd (xattrs), through /proc."""
        return f"/proc/self/fd/{self.fds[layer]}/{os.fsdecode(rel)}"

    def _node_xpath(self, node: Node, layer: int) -> tuple[str, bool]:
        """An xattr path for *node* in *layer*, and whether calls must follow it:
        a nameless node is reached through the /proc link of its fd."""
        if node.fd >= 0:
            return f"/proc/self/fd/{node.fd}", True
        return self._xpath(layer, self._rel(node)), False

    def _resolve(self, parent: Node, prel: bytes, name: bytes) -> _Found | None:
        rel = _join(prel, name)
        assert parent.dlayers is not None
        found: _Found | None = None
        for i, layer in enumerate(parent.dlayers):
            try:
                st = os.lstat(rel, dir_fd=self.fds[layer])
            except (FileNotFoundError, NotADirectoryError):
                continue
            is_wh = layout.is_whiteout_stat(st)
            if found is None:
                if is_wh:
                    return None
                found = _Found(layer, st, None)
                if not stat.S_ISDIR(st.st_mode):
                    return found
                found.dlayers = [layer]
                if i + 1 == len(parent.dlayers) or layout.is_opaque(self._xpath(layer, rel)):
                    return found
                continue
            # below the directory that was found: merge while directories go on
            if is_wh or not stat.S_ISDIR(st.st_mode):
                return found
            assert found.dlayers is not None
            found.dlayers.append(layer)
            if layout.is_opaque(self._xpath(layer, rel)):
                return found
        return found

    def _lower_has(self, parent: Node, rel: bytes) -> bool:
        """Whether a layer under the upper one shows *rel* (so removing it needs a whiteout)."""
        assert parent.dlayers is not None
        for layer in parent.dlayers:
            if layer == UPPER:
                continue
            try:
                st = os.lstat(rel, dir_fd=self.fds[layer])
            except (FileNotFoundError, NotADirectoryError):
                continue
            return not layout.is_whiteout_stat(st)
        return False

    def _ino_for(self, st: os.stat_result) -> int:
        key = (st.st_dev, st.st_ino)
        ino = self.inos.get(key)
        if ino is None:
            ino = self.inos[key] = next(self._next_ino)
        return ino

    def _child(self, parent: Node, name: bytes) -> tuple[Node, os.stat_result] | None:
        """The node for *name* in *parent* and its current stat, without counting a lookup."""
        node = parent.children.get(name)
        prel = self._rel(parent)
        if node is not None:
            return node, os.lstat(_join(prel, name), dir_fd=self.fds[node.layer])
        found = self._resolve(parent, prel, name)
        if found is None:
            return None
        ino = self._ino_for(found.st)
        node = self.nodes.get(ino)
        if node is None:
            node = Node(ino, parent, name, found.layer, found.dlayers)
            self.nodes[ino] = node
        elif node.fd >= 0:  # nameless, and here is a name of it the kernel has not seen
            os.close(node.fd)
            node.fd = -1
            node.parent, node.name = parent, name
        elif node.parent is not parent or node.name != name:
            node.aliases.append((parent, name))  # another hard link to a known inode
        parent.children[name] = node
        return node, found.st

    def _lookup_node(self, parent: Node, name: bytes) -> Node:
        got = self._child(parent, name)
        if got is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return got[0]

    def _node(self, ino: int) -> Node:
        try:
            return self.nodes[ino]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ESTALE) from None

    def _entry(self, node: Node, st: os.stat_result) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = node.ino
        e.generation = 0
        e.entry_timeout = TIMEOUT
        e.attr_timeout = TIMEOUT
        e.st_mode = st.st_mode
        e.st_nlink = st.st_nlink
        e.st_uid = st.st_uid
        e.st_gid = st.st_gid
        e.st_rdev = st.st_rdev
        e.st_size = st.st_size
        e.st_blksize = st.st_blksize
        e.st_blocks = st.st_blocks
        e.st_atime_ns = st.st_atime_ns
        e.st_mtime_ns = st.st_mtime_ns
        e.st_ctime_ns = st.st_ctime_ns
        return e

    def _stat(self, node: Node) -> os.stat_result:
        if node.fd >= 0:
            return os.stat(node.fd)
        return os.lstat(self._rel(node), dir_fd=self.fds[node.layer])

    def _reply(self, node: Node, st: os.stat_result | None = None) -> pyfuse3.EntryAttributes:
        """Attributes for a reply that counts as a lookup."""
        node.lookups += 1
        return self._entry(node, self._stat(node) if st is None else st)

    # ------------------------------------------------------------------
    # Copy-up

    def _copy_up(self, node: Node) -> None:
        if node.layer == UPPER:
            return
        if node.fd >= 0:
            # A lower file whose name is gone: the kernel fails alike (its
            # copy-up finds the name taken by the whiteout).
            raise pyfuse3.FUSEError(errno.EEXIST)
        self._gen += 1
        assert node.parent is not None
        self._copy_up(node.parent)
        rel = self._rel(node)
        src = self.fds[node.layer]
        st = os.lstat(rel, dir_fd=src)
        up = self.fds[UPPER]
        links: list[tuple[Node, bytes]] = []
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(rel, 0o700, dir_fd=up)
            self._copy_meta(node.layer, rel, up, rel, st)
            assert node.dlayers is not None
            node.dlayers.insert(0, UPPER)
        else:
            if st.st_nlink > 1:
                links = self._other_names(node, rel, st)
            tmp = _TMP_PREFIX + b"%d" % next(self._next_tmp)
            wfd = self.work_fd
            try:
                if stat.S_ISREG(st.st_mode):
                    _copy_data(src, rel, wfd, tmp, st.st_size)
                elif stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(rel, dir_fd=src), tmp, dir_fd=wfd)
                else:
                    os.mknod(tmp, st.st_mode, st.st_rdev, dir_fd=wfd)
                self._copy_meta(node.layer, rel, wfd, tmp, st)
                renameat2(wfd, tmp, up, rel, RENAME_NOREPLACE)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=wfd)
                except OSError:
                    pass
                raise
        new = os.lstat(rel, dir_fd=up)
        self.inos[(new.st_dev, new.st_ino)] = node.ino
        node.layer = UPPER
        for parent, name in links:  # the same file under its other names
            self._copy_up(parent)
            os.link(rel, _join(self._rel(parent), name), src_dir_fd=up, dst_dir_fd=up,
                    follow_symlinks=False)
        if node.lower_fhs:
            # Its open files now read the copy, as the kernel's do (the
            # handles are the fds, so the new file takes the old number).
            for fh, flags in node.lower_fhs.items():
                fd = os.open(rel, flags | os.O_CLOEXEC, dir_fd=up)
                try:
                    os.dup2(fd, fh, inheritable=False)
                finally:
                    os.close(fd)
                del self.lower_fh[fh]
            node.lower_fhs = None

    def _other_names(self, node: Node, rel: bytes, st: os.stat_result) -> list[tuple[Node, bytes]]:
        """Where else the merged view shows the lower file *node* (hard links in its layer).

        Found by walking the layer until all st_nlink names are seen: a copy-up
        of a file with hard links is rare, and the kernel's index (which this
        overlay has none of) is what would make it cheap.
        """
        out: list[tuple[Node, bytes]] = []
        seen = 1
        todo = [b"."]
        while todo and seen < st.st_nlink:
            d = todo.pop()
            try:
                fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                             dir_fd=self.fds[node.layer])
            except OSError:
                continue
            try:
                with os.scandir(fd) as it:
                    entries = [(os.fsencode(e.name), e.inode(), e.is_dir(follow_symlinks=False))
                               for e in it]
            finally:
                os.close(fd)
            for name, ino, is_dir in entries:
                path = _join(d, name)
                if is_dir:
                    todo.append(path)
                elif ino == st.st_ino and path != rel:
                    seen += 1
                    where = self._shown_at(path, node)
                    if where is not None:
                        out.append(where)
        return out

    def _shown_at(self, rel: bytes, node: Node) -> tuple[Node, bytes] | None:
        """The parent and name of *rel* if the merged view shows *node* there."""
        *dirs, name = rel.split(b"/")
        parent = self.root
        for d in dirs:
            got = self._child(parent, d)
            if got is None or got[0].dlayers is None:
                return None
            parent = got[0]
        got = self._child(parent, name)
        return (parent, name) if got is not None and got[0] is node else None

    def _copy_meta(self, layer: int, rel: bytes, dfd: int, drel: bytes,
                   st: os.stat_result) -> None:
        is_link = stat.S_ISLNK(st.st_mode)
        os.chown(drel, st.st_uid, st.st_gid, dir_fd=dfd, follow_symlinks=False)
        if not is_link:
            os.chmod(drel, stat.S_IMODE(st.st_mode), dir_fd=dfd)
            src = self._xpath(layer, rel)
            dst = f"/proc/self/fd/{dfd}/{os.fsdecode(drel)}"
            try:
                names = os.listxattr(src, follow_symlinks=False)
            except OSError:
                names = []
            for name in names:
                if name.startswith("user.overlay."):
                    continue
                try:
                    os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False),
                                follow_symlinks=False)
                except OSError as e:
                    if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EACCES):
                        raise
        os.utime(drel, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dfd, follow_symlinks=False)

    def _prepare_new(self, parent: Node, name: bytes) -> tuple[bytes, bool]:
        """Make room for a new upper entry *name*: its path and whether it hides a lower one."""
        if len(name) > 255:
            raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
        self._copy_up(parent)
        rel = _join(self._rel(parent), name)
        up = self.fds[UPPER]
        try:
            st = os.lstat(rel, dir_fd=up)
        except FileNotFoundError:
            return rel, self._lower_has(parent, rel)
        if not layout.is_whiteout_stat(st):
            raise pyfuse3.FUSEError(errno.EEXIST)
        os.unlink(rel, dir_fd=up)
        return rel, True

    def _owner(self, parent: Node, rel: bytes, ctx: pyfuse3.RequestContext,
               is_dir: bool) -> None:
        """Give a new entry the caller's ids (the group of a setgid parent)."""
        pst = os.lstat(self._rel(parent), dir_fd=self.fds[UPPER])
        gid = pst.st_gid if pst.st_mode & stat.S_ISGID else ctx.gid
        if ctx.uid != os.geteuid() or gid != os.getegid():
            os.chown(rel, ctx.uid, gid, dir_fd=self.fds[UPPER], follow_symlinks=False)
        if is_dir and pst.st_mode & stat.S_ISGID:
            st = os.lstat(rel, dir_fd=self.fds[UPPER])
            os.chmod(rel, stat.S_IMODE(st.st_mode) | stat.S_ISGID, dir_fd=self.fds[UPPER])

    def _new_node(self, parent: Node, name: bytes, rel: bytes, is_dir: bool,
                  st: os.stat_result | None = None) -> tuple[Node, os.stat_result]:
        if st is None:
            st = os.lstat(rel, dir_fd=self.fds[UPPER])
        ino = self._ino_for(st)
        node = Node(ino, parent, name, UPPER, [UPPER] if is_dir else None)
        self.nodes[ino] = node
        parent.children[name] = node
        return node, st

    def _hold(self, node: Node) -> int:
        """Before a name of *node* goes: an O_PATH fd on its backing file if
        that is the last name it is known by and the kernel knows the node
        (for _drop_name), else -1."""
        if node.aliases or node.lookups <= 0:
            return -1
        return os.open(self._rel(node), os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC,
                       dir_fd=self.fds[node.layer])

    def _drop_name(self, parent: Node, name: bytes, node: Node, hold: int = -1) -> None:
        """Forget that *name* in *parent* leads to *node* (unlinked or renamed over).

        If it was the last name known, the node lives on, nameless, on the fd
        *hold* until the kernel forgets it (an open file, a cwd); with no fd,
        nothing can reach it any more.
        """
        if parent.children.get(name) is node:
            del parent.children[name]
        if node.parent is parent and node.name == name:
            if node.aliases:
                node.parent, node.name = node.aliases.pop()
            else:
                node.parent, node.name, node.fd = None, b"", hold
                if hold < 0 and self.nodes.get(node.ino) is node:
                    del self.nodes[node.ino]
                return
        else:
            try:
                node.aliases.remove((parent, name))
            except ValueError:
                pass
        if hold >= 0:
            os.close(hold)

    def _merged_names(self, node: Node) -> list[bytes]:
        rel = self._rel(node)
        seen: set[bytes] = set()
        out: list[bytes] = []
        assert node.dlayers is not None
        for layer in node.dlayers:
            fd = os.open(rel, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
                         dir_fd=self.fds[layer])
            try:
                with os.scandir(fd) as it:
                    for ent in it:
                        name = os.fsencode(ent.name)
                        if name in seen:
                            continue
                        seen.add(name)
                        if (not (ent.is_file(follow_symlinks=False)
                                 or ent.is_dir(follow_symlinks=False)
                                 or ent.is_symlink())
                                and layout.is_whiteout_stat(ent.stat(follow_symlinks=False))):
                            continue
                        out.append(name)
            finally:
                os.close(fd)
        return out

    # ------------------------------------------------------------------
    # Operations: lookup and attributes

    @_fuse_errors
    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        if name == b".":
            return self._reply(parent)
        if name == b"..":
            return self._reply(parent.parent or parent)
        got = self._child(parent, name)
        if got is None:
            e = pyfuse3.EntryAttributes()  # st_ino 0: the kernel caches the miss
            e.entry_timeout = TIMEOUT
            return e
        return self._reply(*got)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, n in inode_list:
            node = self.nodes.get(ino)
            if node is None or node is self.root:
                continue
            node.lookups -= n
            if node.lookups <= 0:
                del self.nodes[ino]
                if node.fd >= 0:
                    os.close(node.fd)
                    node.fd = -1
                if node.parent is not None and node.parent.children.get(node.name) is node:
                    del node.parent.children[node.name]
                for p, name in node.aliases:
                    if p.children.get(name) is node:
                        del p.children[name]

    @_fuse_errors
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        return self._entry(node, self._stat(node))

    @_fuse_errors
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._gen += 1
        node = self._node(inode)
        self._copy_up(node)
        up = self.fds[UPPER]
        # through the open file, else the fd of a nameless node, else the path
        where: int | bytes
        kw: dict[str, Any] = {}
        if fh is not None:
            where = fh
        elif node.fd >= 0:
            where = b"/proc/self/fd/%d" % node.fd
        else:
            where = self._rel(node)
            kw = {"dir_fd": up, "follow_symlinks": False}
        if fields.update_size:
            if isinstance(where, bytes) and kw:
                fd = os.open(where, os.O_WRONLY | os.O_CLOEXEC, dir_fd=up)
                try:
                    os.ftruncate(fd, attr.st_size)
                finally:
                    os.close(fd)
            else:
                os.truncate(where, attr.st_size)
        if fields.update_uid or fields.update_gid:
            uid = attr.st_uid if fields.update_uid else -1
            gid = attr.st_gid if fields.update_gid else -1
            os.chown(where, uid, gid, **kw)
        if fields.update_mode:
            # (chmod follows symlinks: Linux can't change a symlink's mode)
            os.chmod(where, stat.S_IMODE(attr.st_mode), dir_fd=up if kw else None)
        if fields.update_atime or fields.update_mtime:
            cur = os.stat(where, **kw)
            ns = (attr.st_atime_ns if fields.update_atime else cur.st_atime_ns,
                  attr.st_mtime_ns if fields.update_mtime else cur.st_mtime_ns)
            os.utime(where, ns=ns, **kw)
        return self._entry(node, os.stat(where, **kw))

    @_fuse_errors
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self._node(inode)
        if node.fd >= 0:
            return os.readlink(b"", dir_fd=node.fd)
        return os.readlink(self._rel(node), dir_fd=self.fds[node.layer])

    @_fuse_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = os.fstatvfs(self.fds[UPPER])
        d = pyfuse3.StatvfsData()
        d.f_bsize = s.f_bsize
        d.f_frsize = s.f_frsize
        d.f_blocks = s.f_blocks
        d.f_bfree = s.f_bfree
        d.f_bavail = s.f_bavail
        d.f_files = s.f_files
        d.f_ffree = s.f_ffree
        d.f_favail = s.f_favail
        d.f_namemax = 255
        return d

    # ------------------------------------------------------------------
    # Creating and removing names

    @_fuse_errors
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._gen += 1
        parent = self._node(parent_inode)
        rel, _ = self._prepare_new(parent, name)
        os.mknod(rel, mode, rdev, dir_fd=self.fds[UPPER])
        self._owner(parent, rel, ctx, False)
        return self._reply(*self._new_node(parent, name, rel, False))

    @_fuse_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._gen += 1
        parent = self._node(parent_inode)
        rel, lower = self._prepare_new(parent, name)
        os.mkdir(rel, mode, dir_fd=self.fds[UPPER])
        try:
            if lower:  # over a removed directory: must not merge with the lower one
                layout.set_opaque(self._xpath(UPPER, rel))
            self._owner(parent, rel, ctx, True)
        except BaseException:
            os.rmdir(rel, dir_fd=self.fds[UPPER])
            raise
        return self._reply(*self._new_node(parent, name, rel, True))

    @_fuse_errors
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._gen += 1
        parent = self._node(parent_inode)
        rel, _ = self._prepare_new(parent, name)
        os.symlink(target, rel, dir_fd=self.fds[UPPER])
        self._owner(parent, rel, ctx, False)
        return self._reply(*self._new_node(parent, name, rel, False))

    @_fuse_errors
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo,
                                                           pyfuse3.EntryAttributes]:
        self._gen += 1
        parent = self._node(parent_inode)
        rel, _ = self._prepare_new(parent, name)
        fd = os.open(rel, (flags & ~_OPEN_FLAGS_DROP) | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                     mode, dir_fd=self.fds[UPPER])
        try:
            self._owner(parent, rel, ctx, False)
            node, st = self._new_node(parent, name, rel, False, os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
        return pyfuse3.FileInfo(fh=fd), self._reply(node, st)

    @_fuse_errors
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._gen += 1
        node = self._node(inode)
        parent = self._node(new_parent_inode)
        self._copy_up(node)
        rel, _ = self._prepare_new(parent, new_name)
        if node.fd >= 0:  # nameless, but with links the kernel has not looked up
            os.link(b"/proc/self/fd/%d" % node.fd, rel, dst_dir_fd=self.fds[UPPER])
        else:
            os.link(self._rel(node), rel, src_dir_fd=self.fds[UPPER],
                    dst_dir_fd=self.fds[UPPER], follow_symlinks=False)
        node.aliases.append((parent, new_name))
        parent.children[new_name] = node
        return self._reply(node)

    def _remove_name(self, parent: Node, name: bytes, node: Node, is_dir: bool) -> None:
        """unlink/rmdir of name: the backing file is held first, so an fd still
        open on it keeps working once the name is gone (see _hold)."""
        hold = self._hold(node)
        try:
            self._remove_upper_or_whiteout(parent, name, node, is_dir)
        except BaseException:
            _close(hold)
            raise
        self._drop_name(parent, name, node, hold)

    def _remove_upper_or_whiteout(self, parent: Node, name: bytes, node: Node,
                                  is_dir: bool) -> None:
        rel = _join(self._rel(parent), name)
        up = self.fds[UPPER]
        lower = self._lower_has(parent, rel)
        if node.layer == UPPER:
            if is_dir:
                _remove_whiteouts(up, rel)
                os.rmdir(rel, dir_fd=up)
            else:
                os.unlink(rel, dir_fd=up)
        else:
            self._copy_up(parent)
        if lower:
            layout.make_whiteout(up, rel)

    @_fuse_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._gen += 1
        parent = self._node(parent_inode)
        node = self._lookup_node(parent, name)
        st = self._stat(node)
        self._remove_name(parent, name, node, False)
        if node.layer == UPPER and st.st_nlink <= 1:
            self.inos.pop((st.st_dev, st.st_ino), None)  # gone: its number may come back

    @_fuse_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._gen += 1
        parent = self._node(parent_inode)
        node = self._lookup_node(parent, name)
        st = self._stat(node)
        if not stat.S_ISDIR(st.st_mode):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if self._merged_names(node):
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        self._remove_name(parent, name, node, True)
        self.inos.pop((st.st_dev, st.st_ino), None)

    @_fuse_errors
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        self._gen += 1
        if flags & RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        old_parent = self._node(parent_inode_old)
        new_parent = self._node(parent_inode_new)
        node = self._lookup_node(old_parent, name_old)
        is_dir = node.dlayers is not None
        if is_dir and node.dlayers != [UPPER]:
            raise pyfuse3.FUSEError(errno.EXDEV)  # merged or lower directory
        target_got = self._child(new_parent, name_new)
        if target_got is not None:
            target, tst = target_got
            if target is node:
                return
            if flags & RENAME_NOREPLACE:
                raise pyfuse3.FUSEError(errno.EEXIST)
            t_dir = stat.S_ISDIR(tst.st_mode)
            if is_dir and not t_dir:
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            if t_dir and not is_dir:
                raise pyfuse3.FUSEError(errno.EISDIR)
            if t_dir and self._merged_names(target):
                raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        self._copy_up(node)
        old_rel = _join(self._rel(old_parent), name_old)
        old_lower = self._lower_has(old_parent, old_rel)
        up = self.fds[UPPER]
        hold = self._hold(target_got[0]) if target_got is not None else -1
        try:
            new_rel, new_lower = self._prepare_target(new_parent, name_new, target_got)
            os.rename(old_rel, new_rel, src_dir_fd=up, dst_dir_fd=up)
        except BaseException:
            _close(hold)
            raise
        if target_got is not None:
            target, tst = target_got
            self._drop_name(new_parent, name_new, target, hold)
            if target.layer == UPPER and (tst.st_nlink <= 1 or stat.S_ISDIR(tst.st_mode)):
                self.inos.pop((tst.st_dev, tst.st_ino), None)
        if old_lower:
            layout.make_whiteout(up, old_rel)
        assert new_parent.dlayers is not None
        if is_dir and (new_lower or len(new_parent.dlayers) > 1):
            # as the kernel does: a moved dir must not merge with what a lower
            # layer of its new parent has (or may get) under that name
            layout.set_opaque(self._xpath(UPPER, new_rel))
        if old_parent.children.get(name_old) is node:
            del old_parent.children[name_old]
        if node.parent is old_parent and node.name == name_old:
            node.parent, node.name = new_parent, name_new
        else:  # one of its other names
            try:
                node.aliases.remove((old_parent, name_old))
            except ValueError:
                pass
            node.aliases.append((new_parent, name_new))
        new_parent.children[name_new] = node

    def _prepare_target(self, parent: Node, name: bytes,
                        target: tuple[Node, os.stat_result] | None) -> tuple[bytes, bool]:
        """Clear the way in the upper dir for a rename onto *name*."""
        if target is None:
            return self._prepare_new(parent, name)
        node, st = target
        self._copy_up(parent)
        rel = _join(self._rel(parent), name)
        up = self.fds[UPPER]
        lower = self._lower_has(parent, rel)
        if node.layer == UPPER and stat.S_ISDIR(st.st_mode):
            _remove_whiteouts(up, rel)  # rename(2) replaces only an empty directory
            os.rmdir(rel, dir_fd=up)
        return rel, lower

    # ------------------------------------------------------------------
    # Files

    @_fuse_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            self._copy_up(node)
        if flags & os.O_TRUNC:
            self._gen += 1  # the size changes here: readdir's cached attributes are stale
        flags = (flags & ~_OPEN_FLAGS_DROP) | os.O_CLOEXEC
        if node.fd >= 0:  # nameless: the /proc link reopens even an unlinked file
            fd = os.open(b"/proc/self/fd/%d" % node.fd, flags)
        else:
            fd = os.open(self._rel(node), flags, dir_fd=self.fds[node.layer])
        if node.layer != UPPER:  # for _copy_up to move it to the copy
            if node.lower_fhs is None:
                node.lower_fhs = {}
            node.lower_fhs[fd] = flags
            self.lower_fh[fd] = node
        return pyfuse3.FileInfo(fh=fd)

    # read and write are the hot path: no decorator layer
    async def read(self, fh: int, off: int, size: int) -> bytes:
        try:
            return os.pread(fh, size, off)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        self._gen += 1
        try:
            return os.pwrite(fh, buf, off)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None

    async def flush(self, fh: int) -> None:
        # Nothing to do at close(2); ENOSYS makes the kernel stop sending FLUSH,
        # one round trip less for every file closed.
        raise pyfuse3.FUSEError(errno.ENOSYS)

    @_fuse_errors
    async def release(self, fh: int) -> None:
        node = self.lower_fh.pop(fh, None)
        if node is not None and node.lower_fhs is not None:
            del node.lower_fhs[fh]
        os.close(fh)

    @_fuse_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        if datasync:
            os.fdatasync(fh)
        else:
            os.fsync(fh)

    # ------------------------------------------------------------------
    # Directories

    @_fuse_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self._node(inode)
        if node.dlayers is None:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        dh = next(self._next_dh)
        if node.fd >= 0:  # removed, but still someone's cwd: empty, as the kernel has it
            self.dirs[dh] = (node, [])
            return dh
        if node.listing is None or node.listing[0] != self._gen:
            node.listing = (self._gen, self._merged_names(node))
        self.dirs[dh] = (node, node.listing[1])
        return dh

    @_fuse_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        node, names = self.dirs[fh]
        if start_id >= len(names):
            return
        prel = self._rel(node)
        fds = self.fds
        gen = self._gen
        for i in range(start_id, len(names)):
            name = names[i]
            child = node.children.get(name)
            if child is not None and child.attr is not None and child.attr[0] == gen:
                entry = child.attr[1]
            else:
                if child is not None:
                    st = os.lstat(_join(prel, name), dir_fd=fds[child.layer])
                else:
                    got = self._child(node, name)
                    if got is None:
                        continue  # removed since opendir
                    child, st = got
                entry = self._entry(child, st)
                child.attr = (gen, entry)
            if not pyfuse3.readdir_reply(token, name, entry, i + 1):
                break
            child.lookups += 1

    async def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh, None)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        pass

    # ------------------------------------------------------------------
    # Extended attributes (overlay's own are hidden, as the kernel does)

    @_fuse_errors
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if name.startswith(layout.XATTR_PREFIX):
            raise pyfuse3.FUSEError(errno.ENODATA)
        node = self._node(inode)
        path, follow = self._node_xpath(node, node.layer)
        return os.getxattr(path, name, follow_symlinks=follow)

    @_fuse_errors
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        node = self._node(inode)
        path, follow = self._node_xpath(node, node.layer)
        names = os.listxattr(path, follow_symlinks=follow)
        return [n for n in map(os.fsencode, names) if not n.startswith(layout.XATTR_PREFIX)]

    @_fuse_errors
    async def setxattr(self, inode: int, name: bytes, value: bytes,
                       ctx: pyfuse3.RequestContext) -> None:
        self._gen += 1
        if name.startswith(layout.XATTR_PREFIX):
            raise pyfuse3.FUSEError(errno.EPERM)
        node = self._node(inode)
        self._copy_up(node)
        path, follow = self._node_xpath(node, UPPER)
        os.setxattr(path, name, value, follow_symlinks=follow)

    @_fuse_errors
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._gen += 1
        if name.startswith(layout.XATTR_PREFIX):
            raise pyfuse3.FUSEError(errno.ENODATA)
        node = self._node(inode)
        self._copy_up(node)
        path, follow = self._node_xpath(node, UPPER)
        os.removexattr(path, name, follow_symlinks=follow)


def _close(fd: int) -> None:
    if fd >= 0:
        os.close(fd)


def _open_layer(kind: str, path: str) -> int:
    try:
        return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise LayerError(f"{kind} layer {path}: no such directory") from None
    except NotADirectoryError:
        raise LayerError(f"{kind} layer {path}: not a directory") from None
    except OSError as e:
        raise LayerError(f"{kind} layer {path}: {e.strerror}") from None


def _remove_whiteouts(dir_fd: int, rel: bytes) -> None:
    """Empty an upper directory whose merged view is empty (it holds only whiteouts)."""
    fd = os.open(rel, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        for name in os.listdir(fd):
            os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)


def _copy_data(sfd: int, srel: bytes, dfd: int, drel: bytes, size: int) -> None:
    src = os.open(srel, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sfd)
    try:
        dst = os.open(drel, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600,
                      dir_fd=dfd)
        try:
            copy_sparse(src, dst, size)
        finally:
            os.close(dst)
    finally:
        os.close(src)
