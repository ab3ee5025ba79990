"""The content-addressed image store under $XDG_DATA_HOME/rl/storage.

Layout (an OCI image layout plus rl's own directories):

    oci-layout, index.json    one descriptor per (manifest, name); a manifest
                              without a name has one descriptor without the
                              org.opencontainers.image.ref.name annotation
    blobs/sha256/<hex>        manifests, configs, layer tars (as pulled)
    layers/<hex of diff_id>/  the unpacked layer, whiteouts as overlayfs writes them
    containers/<id>/          a container's own storage (rootfs.py)
    locks/                    per-layer unpack locks
    gc.lock, index.lock

Every write goes to a `.tmp-*` name and is renamed into place. A blob is
hashed on its way in and again before it is used. Writers (import, pull,
load, commit, container creation) hold gc.lock shared; rmi and prune take it
exclusive, so they never free what a writer is about to reference, and
anything `.tmp-*` they find belongs to a dead writer. Reference counts are
computed, not stored: an image holds its manifest, config and layer blobs
and its layer directories; a container holds its image, and the layer
directories its overlay mounts. So a crash can never leave a count wrong.

A failed writer rolls back (`rollback`) only when it is the store's sole
writer: a concurrent pull may have found a blob or layer this one added and
be about to name it. Otherwise what it added stays until the next
`collect()` (rmi, image prune).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from fs import layout

from .. import paths
from ..errors import RlError
from ..runtime import idmap

# Function-level imports of userns and layers: `rl run IMAGE` whose layers are
# unpacked already never needs them (~2 ms and ~3 ms in the warm fork server).

if TYPE_CHECKING:
    from ..runtime.userns import Worker

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_GZIP = MT_OCI_LAYER + "+gzip"
MT_OCI_LAYER_ZSTD = MT_OCI_LAYER + "+zstd"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MT_DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_TYPES = (MT_OCI_MANIFEST, MT_DOCKER_MANIFEST)
INDEX_TYPES = (MT_OCI_INDEX, MT_DOCKER_LIST)
LAYER_TYPES = (MT_OCI_LAYER, MT_OCI_LAYER_GZIP, MT_OCI_LAYER_ZSTD, MT_DOCKER_LAYER,
               "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
               MT_DOCKER_LAYER_FOREIGN)
CONFIG_TYPES = (MT_OCI_CONFIG, MT_DOCKER_CONFIG)
REF_NAME = "org.opencontainers.image.ref.name"


class BlobError(RlError):
    pass


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


_HEX = frozenset("0123456789abcdef")


def check_digest(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not _HEX.issuperset(hexpart):
        raise BlobError(f"invalid or unsupported digest: {digest!r}")
    return hexpart


@dataclass
class Image:
    """One image: a manifest in the store with its config and names."""

    manifest_digest: str
    manifest: dict[str, Any]
    config: dict[str, Any]
    names: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.manifest["config"]["digest"])

    @property
    def layers(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("layers", []))

    @property
    def diff_ids(self) -> list[str]:
        return list(self.config.get("rootfs", {}).get("diff_ids", []))

    @property
    def size(self) -> int:
        return sum(int(layer.get("size", 0)) for layer in self.layers)


@dataclass
class Holds:
    """What containers hold in the store. The engine reads it from its records;
    collect() asks for it under the exclusive gc lock, when no create is in flight."""

    images: dict[str, list[str]] = field(default_factory=dict)  # image id -> container names
    layers: set[str] = field(default_factory=set)  # diff_ids an overlay container mounts
    containers: set[str] = field(default_factory=set)  # ids of every container record


def no_holds() -> Holds:
    """For a store no container uses (tests, tools)."""
    return Holds()


LAYERS_FORMAT = "layers-format"  # what a layer directory holds deletions as
LAYERS_FORMAT_V2 = b"overlay-whiteouts\n"  # 0/0 devices and user.overlay.opaque (fs.layout)


class Store:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or paths.data_dir() / "storage"
        self.blobs = self.root / "blobs" / "sha256"
        self.layers = self.root / "layers"
        self.containers = self.root / "containers"
        self.locks = self.root / "locks"
        self.damaged: dict[str, str] = {}  # name or digest -> why images() skipped it
        self.new_blobs: set[str] = set()  # what this process added, for rollback()
        self.new_layers: set[str] = set()
        self.verified: set[str] = set()  # blobs this process hashed itself on their way in
        self._new_lock = threading.Lock()
        self._writing_fds: list[int] = []  # this process's shared holds of gc.lock
        if not (self.root / "oci-layout").exists():
            for d in (self.blobs, self.layers, self.containers, self.locks):
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._write_atomic(self.root / LAYERS_FORMAT, LAYERS_FORMAT_V2)
            self._write_atomic(self.root / "oci-layout",
                               json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        elif not (self.root / LAYERS_FORMAT).exists():
            self._migrate_layers()

    def _migrate_layers(self) -> None:
        """A store written before layers kept overlayfs' own whiteouts (rl before
        session 2 kept the tar's .wh. marker files): convert its layer
        directories in place, once, under the gc lock."""
        from ..runtime import userns

        with self.collecting():
            if (self.root / LAYERS_FORMAT).exists():
                return  # another rl did it meanwhile
            self.containers.mkdir(mode=0o700, exist_ok=True)
            dirs = [str(p) for p in self.layers.iterdir() if not p.name.startswith(".")] \
                if self.layers.is_dir() else []

            def convert() -> None:
                for d in dirs:
                    layout.convert_oci_whiteouts(d)

            if dirs:
                userns.run(convert)
            self._write_atomic(self.root / LAYERS_FORMAT, LAYERS_FORMAT_V2)

    # -- locks -------------------------------------------------------------------

    def _flock(self, path: Path, shared: bool) -> contextlib.AbstractContextManager[None]:
        return paths.locked(path, shared)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Held (shared) while adding to the store: rmi/prune wait for it."""
        fd = os.open(self.root / "gc.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            self._writing_fds.append(fd)
            try:
                yield
            finally:
                self._writing_fds.remove(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _sole_writer(self) -> Iterator[bool]:
        """Yields True while this process holds gc.lock exclusively, else False.

        Never waits for another writer. Inside writing(), the shared hold is
        converted in place (another open of gc.lock would conflict with it) and
        turned back into a shared one afterwards. A refused conversion drops
        the shared hold (Linux removes the old lock before it tries the new
        one), so it is taken again, waiting if a collector got in between.
        """
        if len(self._writing_fds) > 1:
            yield False  # nested writing(): our own other hold blocks us
            return
        if self._writing_fds:
            fd = self._writing_fds[0]
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fcntl.flock(fd, fcntl.LOCK_SH)
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_SH)
            return
        fd = os.open(self.root / "gc.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def collecting(self) -> contextlib.AbstractContextManager[None]:
        return self._flock(self.root / "gc.lock", shared=False)

    @contextlib.contextmanager
    def _gc_exclusive(self, wait: bool) -> Iterator[bool]:
        if wait:
            with self.collecting():
                yield True
            return
        fd = os.open(self.root / "gc.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def _index_lock(self) -> contextlib.AbstractContextManager[None]:
        return self._flock(self.root / "index.lock", shared=False)

    # -- blobs -------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blobs / check_digest(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def _tmp(self, directory: Path) -> Path:
        return directory / f".tmp-{os.getpid()}-{os.urandom(6).hex()}"

    def _write_atomic(self, path: Path, data: bytes) -> None:
        tmp = self._tmp(path.parent)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def put_bytes(self, data: bytes, expect: str = "") -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if expect and expect != digest:
            raise BlobError(f"digest mismatch: expected {expect}, got {digest}")
        path = self.blob_path(digest)
        if not path.exists():
            self._write_atomic(path, data)
            self.new_blobs.add(digest)
        return digest

    def put_stream(self, src: IO[bytes], expect: str = "", size: int = -1) -> tuple[str, int]:
        """Copy a stream into the store, hashing it; a mismatch keeps nothing."""
        tmp = self._tmp(self.blobs)
        h = hashlib.sha256()
        count = 0
        try:
            with open(tmp, "wb") as f:
                while chunk := src.read(1 << 20):
                    h.update(chunk)
                    f.write(chunk)
                    count += len(chunk)
            digest = "sha256:" + h.hexdigest()
            if size >= 0 and count != size:
                raise BlobError(f"blob {expect or digest}: expected {size} bytes, got {count}")
            if expect and expect != digest:
                raise BlobError(f"digest mismatch: expected {expect}, got {digest}")
            # Renaming over an identical blob a concurrent writer put there is harmless.
            with self._new_lock:
                if not self.blob_path(digest).exists():
                    self.new_blobs.add(digest)
                self.verified.add(digest)
            os.replace(tmp, self.blob_path(digest))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return digest, count

    def put_file(self, path: str | Path, expect: str = "") -> tuple[str, int]:
        with open(path, "rb") as f:
            return self.put_stream(f, expect)

    def read_blob(self, digest: str) -> bytes:
        """A blob's bytes, verified against its digest."""
        try:
            data = self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobError(f"blob {digest} is missing from the store") from None
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise BlobError(f"blob {digest} is corrupt (its content does not match)")
        return data

    def read_json(self, digest: str) -> dict[str, Any]:
        try:
            value = json.loads(self.read_blob(digest))
        except (ValueError, RecursionError) as e:  # RecursionError: nested too deeply
            raise BlobError(f"blob {digest} is not valid JSON: {e}") from None
        if not isinstance(value, dict):
            raise BlobError(f"blob {digest} is not a JSON object")
        return value

    def verify_blob(self, digest: str) -> None:
        if digest in self.verified and self.has_blob(digest):
            return  # hashed on its way in, moments ago, by this very process
        if not self.has_blob(digest):
            raise BlobError(f"blob {digest} is missing from the store")
        if sha256_file(self.blob_path(digest)) != digest:
            raise BlobError(f"blob {digest} is corrupt (its content does not match)")

    # -- layers ------------------------------------------------------------------

    def layer_dir(self, diff_id: str) -> Path:
        return self.layers / check_digest(diff_id)

    def ensure_layer(self, blob_digest: str, diff_id: str = "",
                     worker: Worker | None = None) -> tuple[str, list[str]]:
        """Unpack a layer blob once, keyed by diff_id; returns (diff_id, notes for the user).

        Without a diff_id (an imported tar) it is learnt while unpacking. Threaded
        callers pass a userns.Worker, so that they never fork themselves.
        """
        from ..runtime import userns
        from . import layers

        if diff_id and self.layer_dir(diff_id).is_dir():
            return diff_id, []
        lock = (self._flock(self.locks / f"{check_digest(diff_id)}.lock", shared=False)
                if diff_id else contextlib.nullcontext())
        with lock:
            if diff_id and self.layer_dir(diff_id).is_dir():
                return diff_id, []  # a concurrent writer unpacked it meanwhile
            self.verify_blob(blob_digest)
            tmp = self._tmp(self.layers)
            tmp.mkdir(mode=0o755)
            plan = idmap.plan()
            blob = str(self.blob_path(blob_digest))
            squash = plan.mode != "subuid"
            remove = worker.remove_tree if worker else userns.remove_tree
            try:
                if worker:
                    result = worker.call(layers.unpack, blob, str(tmp), squash, diff_id)
                else:
                    result = userns.run(lambda: layers.unpack(blob, str(tmp), squash, diff_id),
                                        plan)
                final = self.layer_dir(result.diff_id)
                try:
                    os.rename(tmp, final)
                    with self._new_lock:
                        self.new_layers.add(result.diff_id)
                except OSError:
                    if not final.is_dir():
                        raise
                    remove(tmp)  # the same content is already there
            except BaseException:
                remove(tmp)
                raise
        return result.diff_id, result.notes

    # -- index -------------------------------------------------------------------

    def _load_index(self) -> list[dict[str, Any]]:
        try:
            data = json.loads((self.root / "index.json").read_bytes())
        except FileNotFoundError:
            return []
        except ValueError as e:
            raise RlError(f"the image index {self.root / 'index.json'} is corrupt: {e}") from None
        return list(data.get("manifests", []))

    def _save_index(self, entries: list[dict[str, Any]]) -> None:
        doc = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": entries}
        self._write_atomic(self.root / "index.json", json.dumps(doc, indent=1).encode())

    def images(self) -> list[Image]:
        """Every image, with its names; entries whose blobs are damaged are skipped."""
        by_digest: dict[str, Image] = {}
        for entry in self._load_index():
            digest = entry.get("digest", "")
            name = entry.get("annotations", {}).get(REF_NAME)
            img = by_digest.get(digest)
            if img is None:
                try:
                    manifest = self.read_json(digest)
                    config = self.read_json(manifest["config"]["digest"])
                except (RlError, KeyError, TypeError) as e:
                    why = e.message if isinstance(e, RlError) else f"malformed manifest {digest}"
                    self.damaged[name or digest] = why
                    continue
                img = by_digest[digest] = Image(digest, manifest, config)
            if name and name not in img.names:
                img.names.append(name)
        return list(by_digest.values())

    def add_image(self, manifest_digest: str, media_type: str, size: int,
                  names: list[str]) -> None:
        """Record a manifest (already in blobs) under names; the names move to it."""
        def name(e: dict[str, Any]) -> str | None:
            value = e.get("annotations", {}).get(REF_NAME)
            return str(value) if value is not None else None

        with self._index_lock():
            before = self._load_index()
            # One image, one row (docker keys images by config): a manifest of an
            # image already here (podman's docker- and oci-archive of one image
            # differ only in layer compression) gives its names to the one kept.
            twin = self._twin(manifest_digest, before)
            if twin is not None:
                manifest_digest, media_type, size = (
                    twin["digest"], twin.get("mediaType", media_type), twin.get("size", size))
            # The names leave what they named; a named manifest needs no nameless entry.
            entries = [e for e in before if name(e) not in names and not (
                names and e["digest"] == manifest_digest and name(e) is None)]
            desc = {"mediaType": media_type, "digest": manifest_digest, "size": size}
            if names:
                entries += [{**desc, "annotations": {REF_NAME: n}} for n in names]
            elif not any(e["digest"] == manifest_digest for e in entries):
                entries.append(desc)
            self._save_index(self._keep_nameless(entries, before))

    def config_of(self, manifest_digest: str) -> str | None:
        """The config digest (the image ID) a stored manifest names; None if damaged."""
        try:
            return str(self.read_json(manifest_digest)["config"]["digest"])
        except (RlError, KeyError, TypeError):
            return None

    def _twin(self, manifest_digest: str,
              entries: list[dict[str, Any]]) -> dict[str, Any] | None:
        """An entry of another manifest of the same image as manifest_digest."""
        config = self.config_of(manifest_digest)
        if config is None:
            return None
        for e in entries:
            if e["digest"] != manifest_digest and self.config_of(e["digest"]) == config:
                return e
        return None

    @staticmethod
    def _keep_nameless(entries: list[dict[str, Any]],
                       before: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A manifest whose last name moved away stays, without a name (dangling)."""
        present = {e["digest"] for e in entries}
        for e in before:
            if e["digest"] not in present:
                entries.append({k: v for k, v in e.items() if k != "annotations"})
                present.add(e["digest"])
        return entries

    def untag(self, name: str) -> None:
        with self._index_lock():
            before = self._load_index()
            entries = [e for e in before if e.get("annotations", {}).get(REF_NAME) != name]
            self._save_index(self._keep_nameless(entries, before))

    def delete_image(self, manifest_digest: str) -> None:
        with self._index_lock():
            self._save_index([e for e in self._load_index() if e["digest"] != manifest_digest])

    def _remove_layer(self, path: Path) -> None:
        """Delete a layer directory, first taking its name away: a removal killed
        half-way must never leave a partial layer that is trusted as complete
        (ensure_layer takes an existing directory as unpacked; containers mount it)."""
        from ..runtime import userns

        if path.name.startswith((".tmp-", ".rm-")):
            userns.remove_tree(path)  # no name to take away
        else:
            userns.remove_renamed(path, path.with_name(f".rm-{path.name}-{os.urandom(4).hex()}"))

    def rollback(self) -> bool:
        """After a failed import/load/pull: drop what it added that no image references.

        Only as the store's sole writer: while another writer holds gc.lock it
        may have found one of our blobs or layers and skipped fetching it, and
        it names it only when it records its image. Then nothing is removed
        here; collect() frees it later if no image came to reference it.
        Returns whether it rolled back.
        """

        with self._sole_writer() as sole:
            if sole:
                keep_blobs: set[str] = set()
                keep_layers: set[str] = set()
                for entry in self._load_index():
                    keep_blobs.add(entry["digest"])
                for img in self.images():
                    keep_blobs.update([img.manifest_digest, img.id,
                                       *(x["digest"] for x in img.layers)])
                    keep_layers.update(img.diff_ids)
                for digest in self.new_blobs - keep_blobs:
                    self.blob_path(digest).unlink(missing_ok=True)
                for diff_id in self.new_layers - keep_layers:
                    self._remove_layer(self.layer_dir(diff_id))
        self.new_blobs.clear()
        self.new_layers.clear()
        return sole

    # -- garbage -----------------------------------------------------------------

    def collect(self, holds: Callable[[], Holds], wait: bool = True) -> tuple[int, int]:
        """Free blobs and layer directories no image references; holds the gc lock.

        holds() is called under the lock: read any earlier, a create finishing
        meanwhile could lose its layers. Returns (blobs freed, bytes freed).
        wait=False: do nothing, rather than wait, while a writer holds the lock
        (a build ending beside a running one: the next collection frees it).
        """

        with self._gc_exclusive(wait) as got:
            if not got:
                return 0, 0
            keep_blobs: set[str] = set()
            keep_layers: set[str] = set()
            for entry in self._load_index():
                keep_blobs.add(entry["digest"])
            for img in self.images():
                keep_blobs.add(img.manifest_digest)
                keep_blobs.add(img.id)
                keep_blobs.update(layer["digest"] for layer in img.layers)
                keep_layers.update(img.diff_ids)
            held = holds()
            # An overlay container reads its layers for as long as it exists,
            # even once `rmi -f` took its image away.
            keep_layers.update(held.layers)
            cache_blobs, cache_layers = self.cache_holds()
            keep_blobs.update(cache_blobs)
            keep_layers.update(cache_layers)
            freed = count = 0
            for path in self.blobs.iterdir():
                if f"sha256:{path.name}" not in keep_blobs:
                    with contextlib.suppress(FileNotFoundError):
                        freed += path.stat().st_size
                        path.unlink()
                        count += 1
            hexes = {d.partition(":")[2] for d in keep_layers}
            for path in self.layers.iterdir():
                if path.name not in hexes:
                    self._remove_layer(path)
            for path in self.locks.iterdir():
                if path.name.removesuffix(".lock") not in hexes:
                    path.unlink(missing_ok=True)
            for path in self.root.glob(".tmp-*"):
                path.unlink(missing_ok=True)
            for path in (self.root / "build-cache").glob(".tmp-*"):
                path.unlink(missing_ok=True)  # a killed build's half-written record
            self._collect_container_storage(held.containers)
            self._collect_idmapped({i.id.partition(":")[2] for i in self.images()},
                                   {d.partition(":")[2] for d in held.layers})
        return count, freed

    def _collect_idmapped(self, images: set[str], held: set[str]) -> None:
        """keep-id's shifted trees (rootfs.shifted_dir): each goes with its image, once
        no container's overlay reads it; a killed create's .tmp-* goes at once."""
        from ..runtime import userns

        directory = self.root / "idmapped"
        if not directory.is_dir():
            return
        for entry in directory.iterdir():
            if entry.name.startswith(".tmp-") or (
                    entry.name.partition("-")[0] not in images and entry.name not in held):
                userns.remove_tree(entry)

    def cache_holds(self) -> tuple[set[str], set[str]]:
        """The blobs and diff_ids build-cache records (rootless.build.cache) name; a
        damaged record holds nothing and stops no collection."""
        blobs: set[str] = set()
        layers: set[str] = set()
        directory = self.root / "build-cache"
        if not directory.is_dir():
            return blobs, layers
        for path in directory.glob("*.json"):
            try:
                doc = json.loads(path.read_bytes())
                blobs.update(str(d["digest"]) for d in doc["layers"])
                layers.update(str(d) for d in doc["diff_ids"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return blobs, layers

    def _collect_container_storage(self, container_ids: set[str]) -> None:
        """Storage without a container record, and what a killed create or rm left behind.

        Runs only under the exclusive gc lock (collect): every create holds it
        shared from preparing until its record exists, so nothing found here
        is in flight, except a removal (`.rm-*`), left alone for a minute
        after its rename (a rename updates the ctime). The layout of each
        entry is rootfs.py's.
        """
        from ..runtime import userns

        legacy = self.root / "vfs"  # copies made before rootfs.py
        if legacy.is_dir():
            for entry in legacy.iterdir():
                if entry.name not in container_ids:
                    userns.remove_tree(entry)
        if not self.containers.is_dir():
            return
        for entry in self.containers.iterdir():
            if entry.name.startswith(".rm-"):
                try:
                    stale = time.time() - entry.lstat().st_ctime > 60
                except FileNotFoundError:
                    continue  # its remover just finished
                if stale:
                    userns.remove_tree(entry)
            elif entry.name.startswith(".tmp-") or entry.name not in container_ids:
                userns.remove_tree(entry)
