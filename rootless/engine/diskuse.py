"""`rl system df`: what images, containers, volumes and the build cache take on disk.

Sizes, as docker's: an image's is its layers' (compressed, as stored), a
layer shared by several counted once in the total; a container's is its
writable layer (the overlay upper, a vfs copy's whole tree; nothing for a
--rootfs directory, the user's own); a volume's its tree. Trees that
containers wrote hold subordinate-owned directories the user cannot read,
so they are measured in one user-namespace helper. The build cache (its
records and RUN cache mounts, build/cache.py's directories in the image
store) is read here by name: the engine sits below rl build.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from dataclasses import dataclass, field

from . import store, volumes

CACHE_DIR = "build-cache"  # build/cache.py's
MOUNTS_DIR = "build-mounts"


@dataclass
class ImageUse:
    id: str
    names: list[str]
    created: str
    size: int
    shared: int  # what other images hold too
    containers: int


@dataclass
class ContainerUse:
    id: str
    name: str
    image: str
    command: str
    created: float
    state: str
    status: str
    size: int
    volumes: int


@dataclass
class VolumeUse:
    name: str
    links: int
    size: int


@dataclass
class CacheUse:
    id: str
    kind: str  # "regular" (a step's record) or "exec.cachemount"
    size: int
    created: float
    last_used: float
    in_use: bool = False
    shared: bool = False


@dataclass
class DiskUsage:
    images: list[ImageUse] = field(default_factory=list)
    containers: list[ContainerUse] = field(default_factory=list)
    volumes: list[VolumeUse] = field(default_factory=list)
    build_cache: list[CacheUse] = field(default_factory=list)
    images_size: int = 0  # shared layers once
    images_reclaimable: int = 0  # layers no image in use holds

    def summary(self) -> list[dict[str, object]]:
        """docker's four rows: Type, TotalCount, Active, Size, Reclaimable (bytes)."""
        active_images = [i for i in self.images if i.containers]
        running = [c for c in self.containers if c.state == "running"]
        used_vols = [v for v in self.volumes if v.links]
        return [
            {"Type": "Images", "TotalCount": len(self.images), "Active": len(active_images),
             "Size": self.images_size, "Reclaimable": self.images_reclaimable},
            {"Type": "Containers", "TotalCount": len(self.containers), "Active": len(running),
             "Size": sum(c.size for c in self.containers),
             "Reclaimable": sum(c.size for c in self.containers if c.state != "running")},
            {"Type": "Local Volumes", "TotalCount": len(self.volumes), "Active": len(used_vols),
             "Size": sum(v.size for v in self.volumes),
             "Reclaimable": sum(v.size for v in self.volumes if not v.links)},
            {"Type": "Build Cache", "TotalCount": len(self.build_cache),
             "Active": sum(1 for b in self.build_cache if b.in_use),
             "Size": sum(b.size for b in self.build_cache),
             "Reclaimable": sum(b.size for b in self.build_cache if not b.in_use)},
        ]


def tree_size(path: str) -> int:
    """Bytes a tree takes (blocks), never following a symlink; 0 if it is gone."""
    from fs.walk import walk

    try:
        top = os.lstat(path)
    except OSError:
        return 0
    total = top.st_blocks * 512
    with contextlib.suppress(OSError):
        for e in walk(path):
            total += e.st.st_blocks * 512
    return total


def _sizes(trees: list[str]) -> list[int]:
    """Each tree's size, measured in the user namespace (subordinate-owned dirs)."""
    if not trees:
        return []
    from ..runtime import userns

    try:
        return userns.run(lambda: [tree_size(t) for t in trees])
    except Exception:  # no user namespace: what the user alone can read
        return [tree_size(t) for t in trees]


def gather() -> DiskUsage:
    from ..image import images as imagelib

    out = DiskUsage()
    st = imagelib.open_store()
    ctrs = []
    for c in store.all_containers():
        with contextlib.suppress(store.RecordError, OSError):
            ctrs.append((c, c.config, c.state()))
    used_by: dict[str, int] = {}
    for _, cfg, _ in ctrs:
        if cfg.image_id:
            used_by[cfg.image_id] = used_by.get(cfg.image_id, 0) + 1
    imgs = list(st.images())
    holders: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for img in imgs:
        for layer in {lay["digest"]: lay for lay in img.layers}.values():
            holders[layer["digest"]] = holders.get(layer["digest"], 0) + 1
            sizes[layer["digest"]] = int(layer.get("size", 0))
    active_layers = {lay["digest"] for img in imgs if used_by.get(img.id)
                     for lay in img.layers}
    out.images_size = sum(sizes.values())
    out.images_reclaimable = sum(s for d, s in sizes.items() if d not in active_layers)
    for img in imgs:
        digests = {lay["digest"] for lay in img.layers}
        out.images.append(ImageUse(img.id, list(img.names), str(img.config.get("created", "")),
                                   sum(sizes[d] for d in digests),
                                   sum(sizes[d] for d in digests if holders[d] > 1),
                                   used_by.get(img.id, 0)))
    in_use = volumes.users()
    vols = list(volumes.list_volumes())
    trees = [cfg.upper if cfg.upper else cfg.rootfs if cfg.storage_driver == "vfs" else ""
             for _, cfg, _ in ctrs]
    mounts_dir = st.root / MOUNTS_DIR
    cache_mounts = sorted(mounts_dir.iterdir()) if mounts_dir.is_dir() else []
    measured = _sizes([t for t in trees if t] + [v.mountpoint for v in vols]
                      + [str(p) for p in cache_mounts])
    it = iter(measured)
    from .humanize import status

    for (c, cfg, state), tree in zip(ctrs, trees, strict=True):
        mine = sum(1 for users in in_use.values() if c.id in users)
        out.containers.append(ContainerUse(
            c.id, cfg.name, cfg.image, shlex.join(cfg.spec.process.args), cfg.created,
            state.status, status(state.status, state.exit_code, state.started_at,
                                 state.finished_at),
            next(it) if tree else 0, mine))
    for v in vols:
        out.volumes.append(VolumeUse(v.name, len(in_use.get(v.mountpoint, [])), next(it)))
    held = {lay["digest"] for img in imgs for lay in img.layers}
    cache_dir = st.root / CACHE_DIR
    for rec in sorted(cache_dir.glob("*.json")) if cache_dir.is_dir() else []:
        with contextlib.suppress(OSError):
            rst = rec.stat()
            size = rst.st_size + _record_own_blobs(rec, held, st.blobs)
            out.build_cache.append(CacheUse(rec.stem[:25], "regular", size, rst.st_ctime,
                                            rst.st_mtime))
    for p in cache_mounts:
        with contextlib.suppress(OSError):
            pst = p.lstat()
            out.build_cache.append(CacheUse(p.name[:25], "exec.cachemount", next(it),
                                            pst.st_ctime, pst.st_mtime))
    return out


def _record_own_blobs(rec: os.PathLike[str], held: set[str], blobs: os.PathLike[str]) -> int:
    """The bytes of the layer blobs a cache record holds that no image does."""
    import json

    try:
        with open(rec, "rb") as f:
            doc = json.loads(f.read())
        total = 0
        for layer in doc.get("layers", []):
            d = str(layer.get("digest", ""))
            if d and d not in held:
                with contextlib.suppress(OSError):
                    total += os.stat(os.path.join(blobs, d.partition(":")[2])).st_size
        return total
    except (OSError, ValueError, AttributeError):
        return 0
