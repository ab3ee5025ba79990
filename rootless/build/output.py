"""`rl build --output`: where a build's result goes instead of the store.

docker's (buildx's) exporters: `type=local,dest=DIR` (the target stage's
files), `type=tar,dest=FILE|-` (the same as one tar), `type=oci,dest=FILE`
and `type=docker,dest=FILE` (image archives, as `rl save` writes them, so
`rl load` and `podman load` read them); `type=image` and `type=docker`
without a dest store the image as a plain build does. `-o DIR` is
`type=local,dest=DIR` and `-o -` is `type=tar,dest=-`, as in docker.

Only the face knows stdout: it passes the stream a dest of "-" writes to.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
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
    for part in spec.split(","):
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
    extra = sorted(set(fields) - known)
    if extra:
        raise InvalidArgument(f"invalid output {spec!r}: unsupported attribute "
                              f"{extra[0]!r} for the {kind} exporter")
    return Output(kind, dest, fields)


def export(out: Output, img: Image, store: Store, names: list[str],
           tree: Callable[[Image, int], None], stream: IO[bytes] | None,
           epoch: int | None) -> None:
    """Write *img* (in the store) as *out* asks; *tree(img, fd)* writes its files as a
    tar; *stream* is where "-" goes; *names* (qualified) go into an image archive."""
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
