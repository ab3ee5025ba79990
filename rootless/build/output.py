"""`rl build --output`: where a build's result goes instead of the store.

docker's (buildx's) exporters: `type=local,dest=DIR` (the target stage's
files), `type=tar,dest=FILE|-` (the same as one tar), `type=oci,dest=FILE`
and `type=docker,dest=FILE` (image archives, as `rl save` writes them, so
`rl load` and `podman load` read them); `type=image` and `type=docker`
without a dest store the image as a plain build does. Several outputs are
each written, as buildx 0.13+ does. `-o DIR` is
`type=local,dest=DIR` and `-o -` is `type=tar,dest=-`, as in docker.

Only the face knows stdout: it passes the stream a dest of "-" writes to.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO

from rootless.build import reproducible
from rootless.errors import InvalidArgument
from rootless.image import archive
from rootless.image.progress import Silent
from rootless.image.store import Image, Store

TYPES = ("local", "tar", "oci", "docker", "image")
_ARCHIVES = {"oci": "oci-archive", "docker": "docker-archive"}


@dataclass(frozen=True)
class Output:
    type: str
    dest: str = ""  # "" none, "-" the face's stream
    attrs: dict[str, str] = field(default_factory=dict)

    @property
    def stores(self) -> bool:
        """Whether the image goes into the store and gets its tags (no export)."""
        return self.type == "image" or (self.type == "docker" and not self.dest)

    @property
    def has_image_id(self) -> bool:
        """Whether docker prints an image ID for this output (images, not file trees)."""
        return self.type in ("oci", "docker", "image")


def parse(spec: str) -> Output:
    """One `--output` value: docker's CSV of key=value, or the DIR / "-" shorthand."""
    if "=" not in spec:
        if not spec:
            raise InvalidArgument("invalid output: an empty value")
        return Output("tar", "-") if spec == "-" else Output("local", spec)
    fields: dict[str, str] = {}
    try:  # a CSV record, as buildx reads it: `type=image,"name=a:1,b:2"`
        parts = next(csv.reader([spec]))
    except (csv.Error, StopIteration):
        raise InvalidArgument(f"invalid output {spec!r}: not a CSV of key=value") from None
    for part in parts:
        key, eq, value = part.partition("=")
        key = key.strip().lower()
        if not eq or not key:
            raise InvalidArgument(f"invalid value {part!r} in --output {spec!r}: "
                                  "key=value is expected")
        fields[key] = value
    kind = fields.pop("type", "")
    if not kind:
        raise InvalidArgument(f"invalid output {spec!r}: type is required")
    if kind not in TYPES:
        raise InvalidArgument(f"invalid output {spec!r}: unsupported type {kind!r} "
                              f"(rl supports {', '.join(TYPES)})")
    dest = fields.pop("dest", "")
    if kind in ("local", "tar", "oci") and not dest:
        raise InvalidArgument(f"invalid output {spec!r}: dest is required for the {kind} "
                              "exporter")
    if kind == "image" and dest:
        raise InvalidArgument(f"invalid output {spec!r}: the image exporter takes no dest")
    known = {"name"} if kind in ("oci", "docker", "image") else set()
    if kind == "oci":
        known.add("compression")
        if fields.get("compression", "uncompressed") not in ("uncompressed", "gzip"):
            raise InvalidArgument(f"invalid output {spec!r}: unsupported compression "
                                  f"{fields['compression']!r} (rl writes gzip or uncompressed)")
    extra = sorted(set(fields) - known)
    if extra:
        raise InvalidArgument(f"invalid output {spec!r}: unsupported attribute "
                              f"{extra[0]!r} for the {kind} exporter")
    return Output(kind, dest, fields)


def parse_all(specs: Sequence[str]) -> list[Output]:
    """Every `--output`, as buildx (0.13+) takes several: each parsed, one given twice
    kept once; two writing to stdout refused (one stream cannot carry both)."""
    outs: list[Output] = []
    for spec in specs:
        out = parse(spec)
        if out not in outs:
            outs.append(out)
    if sum(1 for o in outs if o.dest == "-") > 1:
        raise InvalidArgument("invalid outputs: only one of them can write to stdout (dest=-)")
    return outs


def export(out: Output, img: Image, store: Store, names: list[str],
           tree: Callable[[Image, int], None], stream: IO[bytes] | None,
           epoch: int | None) -> None:
    """Write *img* (in the store) as *out* asks; *tree(img, fd)* writes its files as a
    tar; *stream* is where "-" goes; *names* (qualified) go into an image archive."""
    if out.type == "oci" and out.attrs.get("compression") == "gzip":
        _to_dest(out.dest, stream, lambda f: _oci_gzip(store, img, [*names, *_names(out)], f))
        return
    if out.type in _ARCHIVES:
        chosen = [(img, [*names, *_names(out)])]
        _to_dest(out.dest, stream, lambda f: archive.write_archive(
            store, chosen, _ARCHIVES[out.type], f, False, Silent()))
        return
    with tempfile.TemporaryDirectory(prefix="rl-build-out-") as tmp:
        tar_path = os.path.join(tmp, "tree.tar")
        fd = os.open(tar_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            tree(img, fd)
        finally:
            os.close(fd)
        if epoch is not None:
            reproducible.normalise_layer(tar_path, epoch)
        if out.type == "tar":
            def copy(f: IO[bytes]) -> None:
                with open(tar_path, "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 20)
            _to_dest(out.dest, stream, copy)
        else:
            _extract(tar_path, out.dest)


def _oci_gzip(store: Store, img: Image, names: list[str], out: IO[bytes]) -> None:
    """An OCI archive whose layers are gzip streams (BuildKit's default compression),
    written reproducibly (no name, time 0); the config and so the image ID are the
    stored image's."""
    from rootless.image.layers import open_decompressed
    from rootless.image.store import MT_OCI_INDEX, MT_OCI_LAYER_GZIP, MT_OCI_MANIFEST, REF_NAME

    with tempfile.TemporaryDirectory(prefix="rl-build-oci-") as tmp, \
            tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        def add(name: str, path: str | None = None, data: bytes = b"") -> None:
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            if path is None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                return
            info.size = os.path.getsize(path)
            with open(path, "rb") as f:
                tf.addfile(info, f)

        add("oci-layout", data=json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add(f"blobs/sha256/{img.id.partition(':')[2]}", str(store.blob_path(img.id)))
        layers = []
        for i, layer in enumerate(img.layers):
            path = os.path.join(tmp, f"layer{i}")
            with open(store.blob_path(layer["digest"]), "rb") as blob, open(path, "wb") as raw:
                hashing = _Hashing(raw)
                with reproducible.gzip_writer(hashing) as gz:
                    shutil.copyfileobj(open_decompressed(blob), gz, 1 << 20)
            digest = "sha256:" + hashing.h.hexdigest()
            add(f"blobs/sha256/{digest.partition(':')[2]}", path)
            layers.append({"mediaType": MT_OCI_LAYER_GZIP, "digest": digest,
                           "size": hashing.size})
        manifest = json.dumps({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
                               "config": img.manifest["config"], "layers": layers},
                              separators=(",", ":")).encode()
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        add(f"blobs/sha256/{digest.partition(':')[2]}", data=manifest)
        desc = {"mediaType": MT_OCI_MANIFEST, "digest": digest, "size": len(manifest)}
        index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX,
                 "manifests": [{**desc, "annotations": {REF_NAME: n}} for n in names] or
                 [desc]}
        add("index.json", data=json.dumps(index).encode())


class _Hashing:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.h = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.h.update(data)
        self.size += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def _names(out: Output) -> list[str]:
    from rootless.image.images import qualify

    return [qualify(n) for n in out.attrs.get("name", "").split(",") if n]


def _to_dest(dest: str, stream: IO[bytes] | None, write: Callable[[IO[bytes]], None]) -> None:
    """*write* into the file *dest* (whole or not at all: a temp file renamed) or *stream*."""
    if dest == "-":
        if stream is None:
            raise InvalidArgument("an output to - needs a stream (stdout)")
        write(stream)
        stream.flush()
        return
    path = os.path.abspath(dest)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".rl-output-", dir=os.path.dirname(path))
    except OSError as e:
        raise InvalidArgument(f"failed to write {dest}: {os.strerror(e.errno or 0)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _member(m: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """A member of the image's tree as DIR receives it: modes kept, owners not set
    (an unprivileged user cannot), device nodes skipped (nor make them, as with
    BuildKit's rootless local exporter), symlinks kept whatever their target (an
    image's absolute links are normal); but no member is written through a link
    out of DIR, nor hard-linked to a file outside it: refused in one line."""
    if m.ischr() or m.isblk():
        return None
    root = os.path.realpath(dest)
    name = m.name.lstrip("/")

    def inside(path: str) -> bool:
        real = os.path.realpath(os.path.join(root, path))
        return os.path.commonpath([root, real]) == root

    if not name:
        return None
    if not inside(name):
        raise InvalidArgument(f"refusing to write {m.name!r}: it would land outside {dest}")
    if m.islnk() and not inside(m.linkname.lstrip("/")):
        raise InvalidArgument(f"refusing to link {m.name!r} to {m.linkname!r} outside {dest}")
    m.name = name
    return m


def _extract(tar_path: str, dest: str) -> None:
    try:
        os.makedirs(dest, exist_ok=True)
    except OSError as e:
        raise InvalidArgument(f"failed to create {dest}: {os.strerror(e.errno or 0)}") from None
    # Member by member through _member (Debian 12's Python 3.11.2 has no extraction
    # filters); directories get their modes and times last, as extractall does, so a
    # read-only one does not stop its own files.
    dirs: list[tarfile.TarInfo] = []
    with tarfile.open(tar_path, "r:", encoding="utf-8", errors="surrogateescape") as tf:
        try:
            for m in tf:
                checked = _member(m, dest)
                if checked is None:
                    continue
                if checked.isdir():
                    dirs.append(checked)
                tf.extract(checked, dest, set_attrs=not checked.isdir(), numeric_owner=True)
            for d in sorted(dirs, key=lambda m: m.name, reverse=True):
                path = os.path.join(dest, d.name)
                os.chmod(path, d.mode & 0o7777)
                os.utime(path, (d.mtime, d.mtime))
        except (OSError, tarfile.TarError) as e:
            raise InvalidArgument(f"failed to write into {dest}: {e}") from None
