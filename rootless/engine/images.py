"""Images as containers meet them: the engine's half of the image API.

The image layer (rootless.image) knows nothing of containers. What joins the
two lives here: which containers hold an image or a layer (read from the
records, for rmi, prune and the store's garbage collection), a container's
rootfs made from an image, and its storage handed to diff, export and commit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import NotFound, RlError
from ..image import images as imagelib
from ..image import rootfs
from ..image.images import NewLayer, Removed
from ..image.store import MT_OCI_LAYER, Holds, Image, Store
from ..runtime import idmap
from . import events, health, hpc, specgen, store
from .store import Container, ContainerConfig

if TYPE_CHECKING:
    from .options import CreateOptions


# -- what containers hold ------------------------------------------------------------


def holds() -> Holds:
    """Images, layer directories and storage the container records hold."""
    out = Holds()
    for c in store.all_containers():
        out.containers.add(c.id)
        try:
            raw = c.raw_config
            name = c.name
        except (OSError, ValueError):  # damaged or vanished: it holds its storage only
            continue
        if not isinstance(raw, dict):
            continue
        image_id, layers = raw.get("image_id"), raw.get("layers") or []
        if isinstance(image_id, str) and image_id:  # a damaged record may hold anything
            out.images.setdefault(image_id, []).append(name)
        with contextlib.suppress(TypeError):
            out.layers.update("sha256:" + os.path.basename(d) for d in layers)
    return out


def remove(refs: list[str], force: bool) -> tuple[list[Removed], list[RlError]]:
    """`rl rmi`: what each reference's removal did, and the errors of those that
    failed (NotFound, Conflict, InvalidArgument); then frees what nothing holds."""
    st = imagelib.open_store()
    users = holds().images
    removed: list[Removed] = []
    errors: list[RlError] = []
    for text in refs:
        try:
            removed += imagelib.remove(st, text, force, users)
        except RlError as e:
            errors.append(e)
    st.collect(holds)
    events.image_removed(removed)
    return removed, errors


def prune(all_: bool) -> tuple[list[str], int]:
    """`rl image prune`: the IDs deleted and the bytes freed."""
    return imagelib.prune(all_, holds)


# -- containers from images ----------------------------------------------------------


def create_container(opts: CreateOptions, warn: Callable[[str], None] | None) -> Container:
    """A container from an image: its storage (rootfs.py), then the record
    (specgen, over the options with the rootfs and the image's defaults filled in)."""
    assert opts.image is not None
    st = imagelib.open_store()
    driver = rootfs.choose_driver(opts.storage_driver)
    with st.writing():
        img = imagelib.lookup(st, opts.image, exit_code=125)
        prepared = rootfs.prepare(st, img, driver, hpc.image_shift(opts))
        try:
            cfg = specgen.generate(dataclasses.replace(
                opts, rootfs=str(prepared.rootfs), image_defaults=imagelib.defaults(img)), warn)
            cfg.image = opts.image
            cfg.image_id = img.id
            health.inherit(cfg, img.config)
            # Below an earlier mount (/dev/pts in /dev's tmpfs): made in that mount at
            # start. Below a later one (/etc/hosts under -v DIR:/etc): in the init layer.
            dests = [m.destination.rstrip("/") for m in cfg.spec.mounts]
            points = [(m.destination, _is_dir_mount(m)) for i, m in enumerate(cfg.spec.mounts)
                      if not any(m.destination.startswith(d + "/") for d in dests[:i])]
            _record_storage(cfg, rootfs.finish(prepared, cfg.id, points))
            if warn is not None:
                _warn_unmapped_users(st, img, idmap.mapped_size(cfg.spec.linux.uid_mappings),
                                     warn)
        except BaseException:
            rootfs.discard(prepared.tmp)
            raise
        try:
            return store.create(cfg)
        except BaseException:
            rootfs.remove(cfg.id)
            raise


def _image_passwd(st: Store, img: Image) -> str:
    """The image's /etc/passwd, from the top-most layer holding one; "" if none.

    Read beneath each layer directory with no symlink followed: a hostile
    image's etc/passwd -> /home/me/... must not make rl read the user's files."""
    for diff_id in reversed(img.diff_ids):
        try:
            top = os.open(st.layer_dir(diff_id), os.O_PATH | os.O_DIRECTORY)
        except (OSError, RlError):
            continue
        try:
            etc = os.open("etc", os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
        except OSError:
            continue
        finally:
            os.close(top)
        try:
            fd = os.open("passwd", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=etc)
        except OSError:
            continue
        finally:
            os.close(etc)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return ""
            return f.read(1 << 20).decode(errors="replace")
    return ""


def _warn_unmapped_users(st: Store, img: Image, mapped: int,
                         warn: Callable[[str], None]) -> None:
    """Once, at create: the image's users the id map cannot hold (single-id mode
    maps root only), which apt and USER need; they fail later with their own words."""
    names = []
    for line in _image_passwd(st, img).splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[2].isdigit() and int(fields[2]) >= mapped:
            names.append(f"{fields[0]} ({fields[2]})")
    if names:
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        warn(f"the image has users this id map cannot hold ({mapped} id"
             f"{'s' if mapped != 1 else ''} mapped): {shown}; switching to them fails "
             "(apt-get's setgroups/seteuid): see `rl info`")


def _is_dir_mount(m: Any) -> bool:
    if m.type == "bind" or "bind" in m.options or "rbind" in m.options:
        return m.source is None or os.path.isdir(m.source)
    return True


def _record_storage(cfg: ContainerConfig, storage: rootfs.Storage) -> None:
    """Point the record at the storage rootfs.finish made."""
    cfg.storage_driver = storage.driver
    if storage.driver != "vfs":
        cfg.created_mountpoints = []  # an overlay has them in its init layer
        cfg.layers = storage.layers
        cfg.upper = storage.upper
        cfg.work = storage.work
    cfg.rootfs = storage.rootfs
    cfg.spec.root.path = cfg.rootfs


def storage_of(cfg: ContainerConfig) -> rootfs.Storage:
    """The record's account of its storage, as rootfs.py reads it."""
    return rootfs.Storage(cfg.storage_driver, cfg.rootfs, list(cfg.layers), cfg.upper,
                          cfg.work, list(cfg.created_mountpoints), cfg.image_id, cfg.name)


# -- images from containers ----------------------------------------------------------


def _own_plan(cfg: ContainerConfig) -> idmap.IdMapPlan | None:
    """keep-id over an image: its files are owned for the container's own map (the
    shifted copy, hpc.image_shift), so they are read through that map."""
    if hpc.PASSWD_KEY not in cfg.spec.annotations or cfg.idmap_mode != "subuid" \
            or not cfg.image_id:
        return None
    return idmap.plan_for(cfg.idmap_mode, cfg.spec.linux.uid_mappings,
                          cfg.spec.linux.gid_mappings)


def export(ctr: Container, out_fd: int) -> None:
    """`rl export`: the container's file system as a tar on out_fd (read in the userns)."""
    rootfs.write_tree(storage_of(ctr.config), out_fd, _own_plan(ctr.config))


def diff(ctr: Container) -> list[tuple[str, str]]:
    """`rl diff`: what the container changed in its image, as (A|C|D, path)."""
    cfg = ctr.config
    if not cfg.image_id:
        raise RlError(f"container {cfg.name} was not created from an image (--rootfs): "
                      "it has no image to compare with", 125)
    return rootfs.changes(storage_of(cfg), imagelib.open_store(), _own_plan(cfg))


def commit(ctr: Container, name: str | None, changes: list[str], message: str,
           author: str) -> Image:
    """`rl commit`: the container's changes against its image, as a new top layer."""
    cfg = ctr.config
    if not cfg.image_id:
        raise RlError(f"container {cfg.name} was not created from an image (--rootfs); "
                      "use rl export and rl import", 125)
    names = [imagelib.qualify(name)] if name else []
    st = imagelib.open_store()
    with st.writing():
        base = next((i for i in st.images() if i.id == cfg.image_id), None)
        if base is None:
            raise NotFound(f"the image of container {cfg.name} ({cfg.image_id[7:19]}) is gone",
                           125)
        new = commit_layer(ctr, st, f"rl commit {cfg.name}")
        container_config = dict(base.config.get("config") or {})
        imagelib.apply_changes(container_config, changes)
        return imagelib.write_image(st, base, [new], container_config, names, message, author)


def commit_layer(ctr: Container, st: Store, created_by: str = "",
                 rewrite: Callable[[str], None] | None = None) -> NewLayer:
    """The container's changes against its image as a layer blob in *st* (unpacked
    there too), to be put on an image; the caller holds st.writing(). *rewrite*
    may change the tar (by its path) before it enters the store (rl build's
    reproducible mode)."""
    tmp = st.blobs / f".tmp-{os.getpid()}-{os.urandom(6).hex()}.tar"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            rootfs.write_diff(storage_of(ctr.config), st, fd, _own_plan(ctr.config))
        finally:
            os.close(fd)
        if rewrite is not None:
            rewrite(str(tmp))
        digest, size = st.put_file(tmp)
    finally:
        tmp.unlink(missing_ok=True)
    diff_id, _ = st.ensure_layer(digest, digest)
    return NewLayer(digest, size, MT_OCI_LAYER, diff_id, created_by)
