"""The vfs storage driver: each container gets its own full copy of its image's layers.

Portable (no overlay, no FUSE) and simple; the price is the copy at create.
The copy is made inside the user namespace (so owners survive) at
storage/vfs/.tmp-*, renamed to storage/vfs/<container id> once the record
exists, and deleted inside the user namespace when the container is removed.
A driver is three functions: `prepare` (layers -> a rootfs directory),
`commit_path` (where that rootfs is) and `remove`; overlay drivers can
provide the same.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .imagestore import Image, Store


def prepare(store: Store, image: Image) -> Path:
    """A fresh rootfs copy of image at a temporary name; the caller renames or removes it."""
    from . import layers, userns

    for layer, diff_id in zip(image.layers, image.diff_ids, strict=False):
        store.ensure_layer(layer["digest"], diff_id)
    tmp = store.vfs / f".tmp-{os.getpid()}-{os.urandom(6).hex()}"
    tmp.mkdir(mode=0o755)
    dirs = [str(store.layer_dir(d)) for d in image.diff_ids]

    def compose() -> None:
        for d in dirs:
            layers.apply(d, str(tmp))

    try:
        userns.run(compose)
    except BaseException:
        userns.remove_tree(tmp)
        raise
    return tmp


def rootfs_path(store: Store, cid: str) -> Path:
    return store.vfs / cid


def remove(cid: str) -> None:
    """Delete a container's rootfs copy, if it has one (called from store.remove_files)."""
    from . import paths, userns

    path = paths.data_dir() / "storage" / "vfs" / cid
    trash = path.with_name(f".rm-{cid}")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return  # never had one, or a concurrent rmi/prune collected it
    userns.remove_tree(trash)


def collect_garbage(store: Store, container_ids: set[str]) -> None:
    """Copies without a container record, and copies a killed create or rm left behind.

    Runs only under the store's exclusive gc lock (rmi, prune): every create
    holds it shared from the copy until its record exists, so nothing found
    here is in flight, except a removal (`.rm-*`), left alone for a minute
    after its rename (a rename updates the ctime).
    """
    from . import userns

    for entry in store.vfs.iterdir():
        if entry.name.startswith(".rm-"):
            if time.time() - entry.lstat().st_ctime > 60:
                userns.remove_tree(entry)
        elif entry.name.startswith(".tmp-") or entry.name not in container_ids:
            userns.remove_tree(entry)
