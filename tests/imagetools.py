"""Helpers for the image tests: tars built with tarfile, and looking into rl's store."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path


def owners(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """A tarfile filter for the busybox rootfs: root's, /home/user 1000:1000's."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if info.name == "./home/user" or info.name.startswith("./home/user/"):
        info.uid = info.gid = 1000
    return info


def rootfs_tar(rootfs: Path, dest: Path, compress: str = "gz",
               extra: Callable[[tarfile.TarFile], None] | None = None) -> Path:
    """A tar of the busybox rootfs owned by root, plus /home/user owned by 1000:1000."""
    mode = {"gz": "w:gz", "": "w", "xz": "w:xz"}[compress]
    with tarfile.open(dest, mode, format=tarfile.PAX_FORMAT) as tf:
        tf.add(str(rootfs), arcname=".", filter=owners)
        if extra:
            extra(tf)
    return dest


def add_file(tf: tarfile.TarFile, name: str, data: bytes = b"", mode: int = 0o644,
             uid: int = 0, gid: int = 0, **attrs: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.mtime = 1_700_000_000
    for k, v in attrs.items():
        setattr(info, k, v)
    tf.addfile(info, io.BytesIO(data) if info.isreg() else None)


def add_entry(tf: tarfile.TarFile, name: str, type_: bytes, linkname: str = "",
              mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type = type_
    info.linkname = linkname
    info.mode = mode
    info.mtime = 1_700_000_000
    tf.addfile(info)


def layer_tar(dest: Path, build: Callable[[tarfile.TarFile], None], gz: bool = False,
              fmt: int = tarfile.PAX_FORMAT) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        build(tf)
    data = buf.getvalue()
    dest.write_bytes(gzip.compress(data) if gz else data)
    return dest


def storage(data_home: Path) -> Path:
    return data_home / "rl" / "storage"


def store_files(data_home: Path) -> set[str]:
    """Every entry in the store's blobs, layers and containers directories (relative names)."""
    root = storage(data_home)
    out = set()
    for sub in ("blobs/sha256", "layers", "containers"):
        d = root / sub
        if d.is_dir():
            out.update(f"{sub}/{n}" for n in os.listdir(d))
    return out
