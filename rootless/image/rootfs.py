"""A container's root filesystem, made from its image's layers by a storage driver.

Each container made from an image owns storage/containers/<id>/:

    vfs:                       rootfs/   a full copy of the layers, made at create
    overlay, fuse,             init/     the mount points rl adds (/proc, /etc/hosts…),
    fuse-overlayfs:                      a lower layer above the image's, as docker's
                                         "-init" layer: they never show in rl diff
                               diff/     the writable (upper) layer
                               work/     the overlay's scratch directory
                               merged/   the mount point; the mount itself exists
                                         only in the container's mount namespaces

The overlay drivers mount at start, in the container's first process (see
container.py), never on the host: nothing is left mounted if any rl process
is killed. Layer directories are shared, read-only, by every container of the
image (Store.collect keeps them while a container uses them).

A create prepares everything at storage/containers/.tmp-*, renames it to the
container's id once the record is about to exist, and a removal renames it
to .rm-<id> before deleting it inside the user namespace; collect_garbage
finishes what a killed rl left (Store.collect, under the exclusive gc lock).
The driver is chosen once per boot
(fs.drivers.detect_default, with a probe mount on the storage's own file
system) and cached in the runtime directory; --storage-driver or
RL_STORAGE_DRIVER override it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fs import diff, drivers, walk
from fs.drivers import DRIVERS, OVERLAYS

from .. import paths
from .. import syscalls as sc
from ..errors import InvalidArgument, NotFound, RlError

# Function-level imports of userns and layers: creating an overlay container,
# as `rl run IMAGE` does, needs neither (~2 ms and ~3 ms in the warm fork server).

if TYPE_CHECKING:
    from ..runtime.idmap import IdMapPlan
    from .store import Image, Store


def containers_root() -> Path:
    return paths.data_dir() / "storage" / "containers"


def choose_driver(requested: str | None) -> str:
    """--storage-driver, else RL_STORAGE_DRIVER, else what this machine does best."""
    wanted = requested or os.environ.get("RL_STORAGE_DRIVER", "")
    if wanted:
        if wanted not in DRIVERS:
            raise InvalidArgument(f"invalid storage driver {wanted!r}: expected one of "
                                  f"{', '.join(DRIVERS)}")
        if wanted in ("fuse", "fuse-overlayfs"):
            why = drivers.fuse_usable()
            if why is not None:
                raise RlError(f"storage driver {wanted}: {why} (FUSE is not usable here; "
                              "try --storage-driver=overlay or vfs)")
            if wanted == "fuse-overlayfs" and shutil.which("fuse-overlayfs") is None:
                raise RlError("storage driver fuse-overlayfs: fuse-overlayfs is not "
                              "installed (Debian package fuse-overlayfs)")
        return wanted
    return default_driver()[0]


def default_driver() -> tuple[str, str]:
    """(driver, why), probed once per boot and data directory, then read from a cache."""
    root = containers_root()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    cache = paths.runtime_dir() / "storage-driver"
    key = f"{os.uname().release} {root}"
    with contextlib.suppress(OSError, ValueError):
        k, driver, why = cache.read_text().split("\n", 2)
        if k == key and driver in DRIVERS:
            return driver, why
    # In storage/, beside containers/: an rmi's garbage collection there must
    # never take the probe's directory away mid-probe.
    choice = drivers.detect_default(str(root.parent))
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
    with contextlib.suppress(OSError):
        tmp.write_text(f"{key}\n{choice.driver}\n{choice.reason}")
        os.rename(tmp, cache)
    return choice.driver, choice.reason


@dataclass
class Storage:
    """A container's storage as its record keeps it: made here (finish), kept by
    the engine in the record, handed back here for diff, commit and export."""

    driver: str  # "vfs" or an overlay driver (fs.drivers.OVERLAYS)
    rootfs: str
    layers: list[str] = field(default_factory=list)  # overlay: init layer, then the image's
    upper: str = ""
    work: str = ""
    created_mountpoints: list[str] = field(default_factory=list)  # vfs: made in the copy
    image_id: str = ""
    owner: str = ""  # the container's name, for messages


@dataclass
class Shift:
    """Owners for another id map (--userns=keep-id over an image): each segment is
    (from, to, count) in the ids the store's files have (the user namespace's of
    userns.run: image ids as they are); ids outside every segment stay. key names the
    mapping in the cache."""

    uids: list[tuple[int, int, int]]
    gids: list[tuple[int, int, int]]
    # rl's usual mount points (destination, is a directory), made in the shifted tree
    # where the image lacks them, owned as its root: no container of it then needs an
    # init layer of its own, nor the fork that would make one owned for the map
    mount_points: list[tuple[str, bool]] = field(default_factory=list)

    @property
    def key(self) -> str:
        import hashlib

        text = repr((self.uids, self.gids)).encode()
        return hashlib.sha256(text).hexdigest()[:16]

    def uid_of(self, ident: int) -> int:
        return _through(ident, self.uids)

    def gid_of(self, ident: int) -> int:
        return _through(ident, self.gids)


def _through(ident: int, segments: list[tuple[int, int, int]]) -> int:
    for start, to, count in segments:
        if start <= ident < start + count:
            return to + ident - start
    return ident


def shifted_dir(store: Store, image: Image, shift: Shift) -> Path:
    """Where the image's layers, composed and shifted for this mapping, are kept."""
    return store.root / "idmapped" / f"{image.id.partition(':')[2]}-{shift.key}"


def _shifted_root(store: Store, image: Image, shift: Shift, bottom_first: list[str]) -> str:
    """The image's layers as one tree owned for shift's map: made once per (image,
    mapping), at a temporary name renamed into place, and reused; Store.collect drops
    it with its image once no container uses it."""
    from ..runtime import userns
    from . import layers

    final = shifted_dir(store, image, shift)
    if final.is_dir():
        return str(final)
    final.parent.mkdir(mode=0o700, exist_ok=True)
    tmp = final.parent / f".tmp-{os.getpid()}-{os.urandom(6).hex()}"
    tmp.mkdir(mode=0o755)

    def compose() -> None:
        from fs.shift import shift_tree

        for d in bottom_first:
            layers.apply(d, str(tmp))
        _populate_init(str(tmp), [str(tmp)], shift.mount_points, as_root=True)
        shift_tree(str(tmp), shift.uid_of, shift.gid_of)

    try:
        userns.run(compose)
        os.rename(tmp, final)
    except OSError:
        userns.remove_tree(tmp)
        if not final.is_dir():  # not another create's, made meanwhile
            raise
    except BaseException:
        userns.remove_tree(tmp)
        raise
    return str(final)


@dataclass
class Prepared:
    """Storage made for a container that has no record yet (at a temporary name)."""

    driver: str
    tmp: Path
    image_layers: list[str]  # the image's layer directories, top first

    @property
    def rootfs(self) -> Path:
        return self.tmp / ("rootfs" if self.driver == "vfs" else "merged")


def prepare(store: Store, image: Image, driver: str, shift: Shift | None = None
            ) -> Prepared:
    """The container's storage at a temporary name; the caller finishes or discards it.
    shift: the owners another id map needs (vfs: shifted in the copy; an overlay: the
    cached shifted tree is its one image layer, its upper's root the image root's)."""
    from ..runtime import userns
    from . import layers

    for layer, diff_id in zip(image.layers, image.diff_ids, strict=False):
        store.ensure_layer(layer["digest"], diff_id)
    root = containers_root()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = root / f".tmp-{os.getpid()}-{os.urandom(6).hex()}"
    tmp.mkdir(mode=0o700)
    bottom_first = [str(store.layer_dir(d)) for d in image.diff_ids]
    prepared = Prepared(driver, tmp, bottom_first[::-1])
    try:
        if driver == "vfs":
            rootfs = prepared.rootfs
            rootfs.mkdir(mode=0o755)

            def compose() -> None:
                for d in bottom_first:
                    layers.apply(d, str(rootfs))
                if shift is not None:
                    from fs.shift import shift_tree

                    shift_tree(str(rootfs), shift.uid_of, shift.gid_of)

            userns.run(compose)
        else:
            for name in ("init", "diff", "work", "merged"):
                (tmp / name).mkdir(mode=0o755)
            if shift is not None:
                prepared.image_layers = [_shifted_root(store, image, shift, bottom_first)]
    except BaseException:
        discard(tmp)
        raise
    return prepared


def finish(prepared: Prepared, cid: str, mount_points: list[tuple[str, bool]]) -> Storage:
    """Give the storage its container's id; what the record is to say of it.

    mount_points are (destination, is_dir) of the container's mounts: for an
    overlay they are made in its init layer, where neither rl diff nor rl
    commit sees them.
    """
    final = containers_root() / cid
    storage = Storage(prepared.driver, str(final / prepared.rootfs.name))
    if prepared.driver != "vfs":
        lowers = prepared.image_layers
        init = str(prepared.tmp / "init")
        try:
            # Usually every directory involved is the container root's, which
            # is this user: no user namespace (and no fork) is needed.
            _populate_init(init, lowers, mount_points, as_root=False)
        except _NeedsRoot:
            from ..runtime import userns

            for name in os.listdir(init):  # start over, as root of the namespace
                walk.remove(os.path.join(init, name))
            userns.run(lambda: _populate_init(init, lowers, mount_points, as_root=True))
        storage.layers = [str(final / "init"), *lowers]
        storage.upper = str(final / "diff")
        storage.work = str(final / "work")
    os.rename(prepared.tmp, final)
    return storage


class _NeedsRoot(Exception):
    """An init-layer directory must belong to another id than the container's root,
    or the image's directories deny this user: redo it as root of the namespace."""


def _populate_init(init: str, lowers: list[str], mount_points: list[tuple[str, bool]],
                   as_root: bool) -> None:
    """Create the mount points the image lacks (and their parents) in the init layer.

    A parent the image has is made with the image's owner, mode and times,
    since the init layer's directory is what the container sees there (mode
    and times set last, bottom up: a 0550 /root must still take /root/data).
    A destination the image routes through a symlink is left to the
    container's PID 1 to create safely at start (mounts.secure_join).
    """
    made: list[tuple[str, os.stat_result]] = []  # directories copied from the image
    uid, gid = os.getuid(), os.getgid()
    try:
        for dest, is_dir in mount_points:
            parts = [p for p in dest.split("/") if p]
            # The image's directories on the way, copied only if something below them
            # is missing (a point the image has needs nothing of the init layer).
            parents: list[tuple[str, os.stat_result]] = []
            for i in range(1, len(parts) + 1):
                rel = "/".join(parts[:i])
                last = i == len(parts)
                st = diff.lower_lstat(rel, lowers)
                path = os.path.join(init, rel)
                if st is not None:
                    if not stat.S_ISDIR(st.st_mode) or last:
                        break  # there already (or not a directory: resolved at start)
                    if not os.path.isdir(path):
                        parents.append((path, st))
                    continue
                for ppath, pst in parents:
                    if not as_root and (pst.st_uid, pst.st_gid) != (uid, gid):
                        raise _NeedsRoot
                    os.mkdir(ppath, 0o755)
                    made.append((ppath, pst))
                parents = []
                if last and not is_dir:
                    os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
                    os.chmod(path, 0o644)
                elif not os.path.isdir(path):
                    os.mkdir(path)
                    os.chmod(path, 0o755)
    except PermissionError:
        if as_root:
            raise
        raise _NeedsRoot from None
    for path, st in reversed(made):  # children first: their creation moved the times
        if as_root:
            os.lchown(path, st.st_uid, st.st_gid)
        os.chmod(path, stat.S_IMODE(st.st_mode))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def discard(tmp: Path) -> None:
    from ..runtime import userns

    userns.remove_tree(tmp)


def remove(cid: str) -> None:
    """Delete a container's storage, if it has some (called from store.remove_files)."""
    from ..runtime import userns

    # gone already: never had any, or a concurrent rmi/prune collected it
    path = containers_root() / cid
    userns.remove_renamed(path, path.with_name(f".rm-{cid}"))


def image_layers(storage: Storage, store: Store) -> list[str]:
    """The container's image layer directories, bottom first (vfs: from its image)."""
    if storage.driver in OVERLAYS:
        return storage.layers[1:][::-1]
    img = next((i for i in store.images() if i.id == storage.image_id), None)
    if img is None:
        raise NotFound(f"the image of container {storage.owner} ({storage.image_id[7:19]}) "
                       "is gone", 125)
    for layer, diff_id in zip(img.layers, img.diff_ids, strict=False):
        store.ensure_layer(layer["digest"], diff_id)
    return [str(store.layer_dir(d)) for d in img.diff_ids]


def changes(storage: Storage, store: Store, plan: IdMapPlan | None = None
            ) -> list[tuple[str, str]]:
    """`rl diff`: (kind, path) for every change, sorted by path. plan: the container's
    own map, where its files are owned for it (keep-id over an image, overlay only)."""
    from ..runtime import userns
    from . import layers

    if storage.driver in OVERLAYS:
        upper, lowers = storage.upper, storage.layers
        found = userns.run(lambda: diff.changes(upper, lowers), plan)
        return [(c.kind, c.path) for c in found]
    _compared(plan)
    lowers = image_layers(storage, store)
    rootfs, skip = storage.rootfs, set(storage.created_mountpoints)
    return sorted(userns.run(lambda: layers.changes(lowers, rootfs, skip)),
                  key=lambda kc: kc[1])


def _compared(plan: IdMapPlan | None) -> None:
    if plan is not None:
        raise InvalidArgument("a --userns=keep-id container on the vfs storage driver has a "
                              "copy owned for its map, which cannot be compared with its "
                              "image (use the overlay driver for rl diff and rl commit)")


def write_diff(storage: Storage, store: Store, out_fd: int, plan: IdMapPlan | None = None
               ) -> None:
    """`rl commit`: the container's changes as an OCI layer tar on out_fd, read through
    plan (see changes)."""
    from ..runtime import userns
    from . import layers

    if storage.driver in OVERLAYS:
        upper = storage.upper
        userns.run(lambda: diff.write_layer_to(upper, out_fd), plan)
        return
    _compared(plan)
    lowers = image_layers(storage, store)
    rootfs, skip = storage.rootfs, set(storage.created_mountpoints)
    userns.run(lambda: layers.write_diff_tar(lowers, rootfs, out_fd, skip))


def write_tree(storage: Storage, out_fd: int, plan: IdMapPlan | None = None) -> None:
    """`rl export`: the container's whole file system as a tar on out_fd, read through
    plan (the container's own map, where its files are owned for it: keep-id).

    For an overlay, a read-only view (the upper layer on top of the others,
    all as lower layers) is mounted in a private mount namespace of the
    user-namespace helper, so it works whether the container runs or not.
    """
    from ..runtime import userns
    from . import layers

    skip = set(storage.created_mountpoints)
    if storage.driver not in OVERLAYS:
        rootfs = storage.rootfs
        userns.run(lambda: layers.write_tree_tar(rootfs, out_fd, skip), plan)
        return
    driver, upper = storage.driver, storage.upper
    lowers = [upper, *storage.layers[1:]]

    def export() -> None:
        sc.unshare(sc.CLONE_NEWNS)
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
        scratch = tempfile.mkdtemp(prefix=".export-", dir=os.path.dirname(upper))
        try:
            for d in ("upper", "work", "root"):
                os.mkdir(os.path.join(scratch, d))
            view = os.path.join(scratch, "root")
            with drivers.mount(driver, lowers, os.path.join(scratch, "upper"),
                               os.path.join(scratch, "work"), view):
                layers.write_tree_tar(view, out_fd, skip)
        finally:
            with contextlib.suppress(OSError):
                walk.remove(scratch)  # it opens up overlayfs' mode-000 work/work itself

    userns.run(export, plan)
