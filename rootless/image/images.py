"""rl's image API: lookup, import, tag, rmi, prune, inspect, history, and the
pieces of commit (write_image, apply_changes).

What concerns containers (which of them use an image) comes in as an
argument: the engine (rootless.engine.images) reads its records and passes
it, and makes containers from images and images from containers.

Names are stored fully qualified (`localhost/NAME:TAG` for local images, as
podman does); a short name given by the user is matched against the stored
names through the search list (rootless.registries order, then localhost).
The image ID is the config digest, as in docker and podman.
"""

from __future__ import annotations

import datetime
import json
import platform
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import Conflict, InvalidArgument, NoSuchImage, RlError
from . import reference
from .imageconfig import ImageDefaults, validate
from .registries import search_registries
from .store import (
    MT_OCI_CONFIG,
    MT_OCI_LAYER,
    MT_OCI_LAYER_GZIP,
    MT_OCI_LAYER_ZSTD,
    MT_OCI_MANIFEST,
    Holds,
    Image,
    Store,
)

LOCAL_DOMAIN = "localhost"
DEFAULT_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def open_store() -> Store:
    return Store()


def now_iso(ts: float | None = None) -> str:
    dt = datetime.datetime.fromtimestamp(time.time() if ts is None else ts, datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def go_arch() -> str:
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(m, m)


def qualify(text: str) -> str:
    """The stored name for a user-given name: domain added (localhost), tag added."""
    ref = reference.parse(text)
    if ref.digest:
        raise InvalidArgument(f"{text}: a name with a digest cannot be used as a tag")
    if not ref.domain:
        ref = ref.with_domain(LOCAL_DOMAIN)
    return str(ref.tagged())


def search_domains() -> list[str]:
    return [LOCAL_DOMAIN, *search_registries()]


def candidates(ref: reference.Reference) -> list[str]:
    """Stored names a reference may mean, most likely first."""
    ref = ref.tagged()
    if ref.domain:
        return [str(ref)]
    return [str(ref.with_domain(d)) for d in search_domains()]


def lookup(store: Store, text: str, exit_code: int = 1) -> Image:
    """An image by name, short name, full or short ID, or name@digest."""
    images = store.images()
    if reference.looks_like_id(text):
        hexpart = text.removeprefix("sha256:")
        found = [i for i in images if i.id.removeprefix("sha256:").startswith(hexpart)]
        ids = {i.id for i in found}
        if len(ids) == 1:
            return found[0]
        if len(ids) > 1 and len(hexpart) < 64:
            raise InvalidArgument(f"{text}: ambiguous image ID prefix", exit_code)
        if text.startswith("sha256:"):
            raise NoSuchImage(text, exit_code)
    try:
        ref = reference.parse(text)
    except RlError as e:
        raise InvalidArgument(e.message, exit_code) from None
    if ref.digest:
        repo_names = candidates(reference.Reference(ref.domain, ref.path))
        repos = {n.rpartition(":")[0] for n in repo_names}
        for img in images:
            if img.manifest_digest == ref.digest and (
                    not img.names or any(n.rpartition(":")[0] in repos for n in img.names)):
                return img
        raise NoSuchImage(text, exit_code)
    names = candidates(ref)
    for name in names:
        for img in images:
            if name in img.names:
                return img
        if name in store.damaged:
            raise RlError(f"image {text}: {store.damaged[name]}", exit_code)
    if not ref.domain:
        # Any registry's image with that path and tag (podman matches short names so too).
        want = "/" + str(ref.tagged())
        for img in images:
            for n in img.names:
                if n.endswith(want) or n.endswith("/library" + want):
                    return img
    raise NoSuchImage(text, exit_code)


# -- configs -----------------------------------------------------------------------


_CHANGE_KEYS = ("CMD", "ENTRYPOINT", "ENV", "WORKDIR", "USER", "STOPSIGNAL", "LABEL",
                "EXPOSE", "VOLUME")


def apply_changes(cfg: dict[str, Any], changes: list[str]) -> None:
    """Dockerfile instructions given with --change, applied to a config's "config"."""
    for change in changes:
        word, _, rest = change.strip().partition(" ")
        key = word.upper()
        rest = rest.strip()
        if key not in _CHANGE_KEYS or not rest:
            raise InvalidArgument(f"invalid --change {change!r}: expected one of "
                                  f"{', '.join(_CHANGE_KEYS)} and a value")
        if key in ("CMD", "ENTRYPOINT", "VOLUME"):
            if rest.startswith("["):
                try:
                    value = json.loads(rest)
                except ValueError:
                    raise InvalidArgument(f"invalid --change {change!r}: bad JSON array") from None
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise InvalidArgument(
                        f"invalid --change {change!r}: expected an array of strings")
            else:
                value = ["/bin/sh", "-c", rest] if key != "VOLUME" else [rest]
            if key == "VOLUME":
                cfg.setdefault("Volumes", {}).update({v: {} for v in value})
            else:
                cfg["Cmd" if key == "CMD" else "Entrypoint"] = value
        elif key == "ENV":
            name, sep, val = rest.partition("=")
            if not sep:
                name, _, val = rest.partition(" ")
            if not name.strip():
                raise InvalidArgument(f"invalid --change {change!r}: ENV names can not be blank")
            env = [e for e in cfg.get("Env") or [] if e.partition("=")[0] != name]
            cfg["Env"] = [*env, f"{name}={val.strip()}"]
        elif key == "LABEL":
            for item in shlex.split(rest):
                k, _, v = item.partition("=")
                cfg.setdefault("Labels", {})[k] = v
        elif key == "EXPOSE":
            for port in rest.split():
                cfg.setdefault("ExposedPorts", {})[port if "/" in port else f"{port}/tcp"] = {}
        else:
            cfg[{"WORKDIR": "WorkingDir", "USER": "User", "STOPSIGNAL": "StopSignal"}[key]] = rest


@dataclass
class NewLayer:
    digest: str
    size: int
    media_type: str
    diff_id: str
    created_by: str = ""


def layer_media_type(path: str) -> str:
    # Deferred: layers (tarfile, gzip) stays out of `rl run IMAGE` (~3 ms).
    from .layers import compression

    with open(path, "rb") as f:
        kind = compression(f.read(4))
    return {"gzip": MT_OCI_LAYER_GZIP, "zstd": MT_OCI_LAYER_ZSTD}.get(kind, MT_OCI_LAYER)


def write_image(store: Store, base: Image | None, new_layers: list[NewLayer],
                container_config: dict[str, Any], names: list[str], comment: str = "",
                author: str = "") -> Image:
    """Write config + manifest for base's layers plus new_layers, and name it."""
    created = now_iso()
    config: dict[str, Any] = {
        "created": created,
        "architecture": base.config.get("architecture", go_arch()) if base else go_arch(),
        "os": "linux",
        "config": container_config,
        "rootfs": {"type": "layers",
                   "diff_ids": (base.diff_ids if base else []) + [x.diff_id for x in new_layers]},
        "history": list(base.config.get("history", [])) if base else [],
    }
    if author:
        config["author"] = author
    for layer in new_layers:
        entry = {"created": created, "created_by": layer.created_by}
        if comment:
            entry["comment"] = comment
        config["history"].append(entry)
    return put_image(store, config, (base.layers if base else []) + [
        {"mediaType": x.media_type, "digest": x.digest, "size": x.size} for x in new_layers],
        names)


def put_image(store: Store, config: dict[str, Any], layers: list[dict[str, Any]],
              names: list[str]) -> Image:
    """Store a whole image config and a manifest over *layers* (descriptors whose
    blobs are in the store), named *names*; the config is validated first."""
    # import, commit and build make configs (--change, Dockerfiles): they enter checked.
    validate(config, len(layers))
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    config_digest = store.put_bytes(config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": {"mediaType": MT_OCI_CONFIG, "digest": config_digest,
                   "size": len(config_bytes)},
        "layers": layers,
    }
    manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
    digest = store.put_bytes(manifest_bytes)
    store.add_image(digest, MT_OCI_MANIFEST, len(manifest_bytes), names)
    return Image(digest, manifest, config, list(names))


def import_tarball(source: str, name: str | None, changes: list[str],
                   message: str = "") -> tuple[Image, list[str]]:
    """`rl import`: a root filesystem tar (gzip, zstd or plain) as a one-layer image."""
    names = [qualify(name)] if name else []
    cfg: dict[str, Any] = {"Env": [DEFAULT_ENV]}
    apply_changes(cfg, changes)
    store = open_store()
    with store.writing():
        try:
            digest, size = store.put_file(source)
        except FileNotFoundError:
            raise RlError(f"open {source}: no such file or directory") from None
        except IsADirectoryError:
            raise RlError(f"{source} is a directory, not a tar archive") from None
        except OSError as e:
            raise RlError(f"open {source}: {e.strerror}") from None
        try:
            diff_id, notes = store.ensure_layer(digest, "")
            layer = NewLayer(digest, size, layer_media_type(str(store.blob_path(digest))),
                             diff_id, "")
            # docker's record: no CREATED BY; the comment is -m or "Imported
            # from -" (its CLI streams a file too), never a local path
            img = write_image(store, None, [layer], cfg, names,
                              comment=message or "Imported from -")
        except BaseException:
            store.rollback()
            raise
    return img, notes


# -- views -------------------------------------------------------------------------


@dataclass
class ImageRow:
    repository: str
    tag: str
    id: str
    created: str
    size: int
    digest: str
    names: list[str] = field(default_factory=list)


def list_images(all_: bool = True, repository: str | None = None) -> list[ImageRow]:
    """`rl images [REPOSITORY]`: a row per name (one for a nameless image), newest first.

    repository keeps the rows of that repository, given in full or as its
    last components (`busybox` matches `docker.io/library/busybox`)."""
    rows = []
    for img in open_store().images():
        created = str(img.config.get("created", ""))
        base = ImageRow("<none>", "<none>", img.id, created, img.size, img.manifest_digest,
                        img.names)
        if not img.names:
            rows.append(base)
        for n in img.names:
            repo, _, tag = n.rpartition(":")
            rows.append(ImageRow(repo, tag, img.id, created, img.size, img.manifest_digest,
                                 img.names))
    if repository:
        rows = [r for r in rows if r.repository == repository
                or r.repository.endswith("/" + repository)]
    rows.sort(key=lambda r: r.created, reverse=True)
    return rows


def parse_time(text: str) -> float:
    """An RFC 3339 time (Go writes nanoseconds and offsets) as a timestamp; 0 if unreadable."""
    head, _, _frac = text.partition(".")
    zone = "+00:00"
    for sep in ("Z", "+", "-"):
        idx = _frac.find(sep) if _frac else -1
        if idx >= 0:
            zone = "+00:00" if sep == "Z" else _frac[idx:]
            break
    if not _frac:
        if head.endswith("Z"):
            head = head[:-1]
        elif len(head) > 19:
            head, zone = head[:19], head[19:]
    try:
        dt = datetime.datetime.fromisoformat(head[:19] + zone)
    except ValueError:
        return 0.0
    return dt.timestamp()


def inspect(img: Image) -> dict[str, Any]:
    cfg = img.config
    return {
        "Id": img.id,
        "Digest": img.manifest_digest,
        "RepoTags": list(img.names),
        "RepoDigests": sorted({f"{n.rpartition(':')[0]}@{img.manifest_digest}"
                               for n in img.names}),
        "Created": cfg.get("created", ""),
        "Author": cfg.get("author", ""),
        "Architecture": cfg.get("architecture", ""),
        "Os": cfg.get("os", ""),
        "Config": cfg.get("config", {}),
        "Size": img.size,
        "RootFS": {"Type": "layers", "Layers": img.diff_ids},
        "ManifestMediaType": img.manifest.get("mediaType", ""),
        "History": cfg.get("history", []),
    }


@dataclass
class HistoryRow:
    id: str
    created: str
    created_by: str
    size: int
    comment: str


def history(img: Image) -> list[HistoryRow]:
    rows = []
    sizes = [int(layer.get("size", 0)) for layer in img.layers]
    li = 0
    entries = img.config.get("history") or [{} for _ in sizes]
    for entry in entries:
        empty = bool(entry.get("empty_layer"))
        size = 0 if empty or li >= len(sizes) else sizes[li]
        if not empty:
            li += 1
        rows.append(HistoryRow("<missing>", str(entry.get("created", "")),
                               str(entry.get("created_by", "")), size,
                               str(entry.get("comment", ""))))
    rows.reverse()
    if rows:
        rows[0].id = img.id
    return rows


# -- tag / rmi / prune ------------------------------------------------------------------


def tag(source: str, target: str) -> None:
    store = open_store()
    img = lookup(store, source)
    name = qualify(target)
    store.add_image(img.manifest_digest, img.manifest.get("mediaType", MT_OCI_MANIFEST),
                    len(store.read_blob(img.manifest_digest)), [name])


@dataclass(frozen=True)
class Removed:
    """One thing rmi did: a name went (Untagged) or the image went (Deleted, by ID).
    Docker's DELETE /images/NAME answers the same pairs."""

    action: Literal["Untagged", "Deleted"]
    ref: str


def remove(store: Store, text: str, force: bool,
           users: Mapping[str, Sequence[str]]) -> list[Removed]:
    """`rl rmi` of one reference: untag a name, delete an image with its last one.

    users maps an image ID to the containers created from it. Raises NotFound
    (no such image), Conflict (in use, or named in several repositories and
    given by ID, without force). Frees nothing: the caller runs store.collect.
    """
    img = lookup(store, text)
    by_id = reference.looks_like_id(text) and not any(
        n in img.names for n in _names_for(text))
    in_use = list(users.get(img.id, []))
    if by_id and len(img.names) > 1 and not force:
        raise Conflict(f"unable to delete {img.id[7:19]} (must be forced) - image is "
                       "referenced in multiple repositories")
    if not by_id and len(img.names) > 1:
        name = _match(img, text)
        store.untag(name)
        return [Removed("Untagged", name)]
    if in_use and not force:
        raise Conflict(f"image {text} is in use by container {in_use[0]}: remove the "
                       "container first or use --force")
    out = [Removed("Untagged", n) for n in img.names]
    if in_use:
        for n in img.names:
            store.untag(n)  # kept, nameless, while its containers exist
        return out
    # every manifest of this ID goes (a store from before add_image kept one
    # image one row may hold twins): rmi removes what it says it removed
    twins = [i for i in store.images()
             if i.id == img.id and i.manifest_digest != img.manifest_digest]
    for twin in twins:
        out += [Removed("Untagged", n) for n in twin.names if n not in img.names]
        store.delete_image(twin.manifest_digest)
    store.delete_image(img.manifest_digest)
    return [*out, Removed("Deleted", img.id)]


def _names_for(text: str) -> list[str]:
    try:
        return candidates(reference.parse(text))
    except RlError:
        return []


def _match(img: Image, text: str) -> str:
    """Which of the image's names the user's text means."""
    for n in _names_for(text):
        if n in img.names:
            return n
    want = str(reference.parse(text).tagged())
    for n in img.names:
        if n.endswith("/" + want) or n == want:
            return n
    return img.names[0]


def prune(all_: bool, holds: Callable[[], Holds]) -> tuple[list[str], int]:
    """Images without a name (or, with all_, every image) that no container uses.

    Returns the IDs deleted and the bytes freed."""
    store = open_store()
    used = holds().images
    deleted = []
    for img in store.images():
        if img.id in used or (img.names and not all_):
            continue
        for n in img.names:
            store.untag(n)
        store.delete_image(img.manifest_digest)
        deleted.append(img.id)
    _, freed = store.collect(holds)
    return deleted, freed


def defaults(img: Image) -> ImageDefaults:
    """What the image gives a container made from it."""
    cfg = img.config.get("config") or {}
    return ImageDefaults(
        entrypoint=list(cfg.get("Entrypoint") or []),
        cmd=list(cfg.get("Cmd") or []),
        env=list(cfg.get("Env") or []),
        workdir=str(cfg.get("WorkingDir") or ""),
        user=str(cfg.get("User") or ""),
        stop_signal=str(cfg.get("StopSignal") or ""),
        exposed=list(cfg.get("ExposedPorts") or {}),
        volumes=sorted(str(v) for v in cfg.get("Volumes") or {}),
    )
