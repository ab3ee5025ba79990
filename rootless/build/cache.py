"""`rl build`'s cache: records keyed on content, in the user's image store.

A step's key is the sha256 of its parent's key (the base image's manifest
digest, or the previous step's key) and what the step reads: the expanded
instruction, its flags, the variables a RUN sees and its network; for COPY
and ADD the content hash of every file read (context.sources_digest: name,
type, mode, link target, bytes; never times). A record holds the stage's
whole image state after the step (layer descriptors, diff_ids, config with
its history), so a hit restores it byte for byte and a fully cached rebuild
gives the same image ID.

Layout, under `<store>/build-cache/`:

    <hex>.json       one record, written to a `.tmp-*` name and renamed; one
                     that does not parse, names another key, has an invalid
                     config or whose blobs or layers are gone is a miss
    build.lock       held shared by every running build, exclusive by prune:
                     a build may hold a record's layers in memory only
    builds/<id>.lock a running build's flock (its liveness) and
    builds/<id>.json the containers and intermediate images it has made,
                     for whoever cleans up after it died (its reaper, or
                     the next build or prune)

Store.collect keeps the blobs and layers records name (Store.cache_holds),
so they outlive the intermediates of the build.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import select
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rootless.errors import RlError
from rootless.image.imageconfig import validate
from rootless.image.store import LAYER_TYPES, Image, Store

if TYPE_CHECKING:  # the engine is imported where needed: a cached build never is
    from rootless.engine.store import Container

CACHE_DIR = "build-cache"
_ID = re.compile(r"[0-9a-f]{64}")
INTERMEDIATE = "rl.build.intermediate"  # config key: the journal whose intermediate it is
MOUNTS_DIR = "build-mounts"  # RUN --mount=type=cache directories (made by the RUN code)


def key(parent: str, *parts: object) -> str:
    """The key of a step over *parent*: a stable hash of *parts* (JSON-able; other
    values, such as the parser's frozen dataclasses, by their repr)."""
    data = json.dumps([parent, *parts], sort_keys=True, separators=(",", ":"),
                      default=repr).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Record:
    layers: list[dict[str, Any]]
    diff_ids: list[str]
    config: dict[str, Any]


def _dir(store: Store) -> Path:
    return store.root / CACHE_DIR


def _path(store: Store, k: str) -> Path:
    return _dir(store) / (k.partition(":")[2] + ".json")


def load(store: Store, k: str) -> Record | None:
    """The record of *k*, or None: absent, damaged, or its blobs/layers were freed."""
    try:
        doc = json.loads(_path(store, k).read_bytes())
        layers, diff_ids, config = doc["layers"], doc["diff_ids"], doc["config"]
        if doc.get("key") != k or not (isinstance(layers, list) and isinstance(diff_ids, list)
                                       and len(layers) == len(diff_ids)):
            return None
        validate(config, len(layers))
        if config["rootfs"]["diff_ids"] != diff_ids:
            return None
        for layer, diff_id in zip(layers, diff_ids, strict=True):
            if not (isinstance(layer, dict) and layer.get("mediaType") in LAYER_TYPES):
                return None
            # The blob as the descriptor says (a stat, not a hash: blobs are checked
            # when they enter the store) and its unpacked layer.
            if store.blob_path(layer["digest"]).stat().st_size != layer.get("size") \
                    or not store.layer_dir(diff_id).is_dir():
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RlError):
        return None
    return Record(layers, diff_ids, config)


def save(store: Store, k: str, rec: Record) -> None:
    """Write *k*'s record atomically (temp file in the same directory, then rename).
    The caller holds store.writing(): collect() takes `.tmp-*` files for a dead writer's."""
    directory = _dir(store)
    directory.mkdir(mode=0o700, exist_ok=True)
    data = json.dumps({"key": k, "layers": rec.layers, "diff_ids": rec.diff_ids,
                       "config": rec.config}, separators=(",", ":")).encode()
    tmp = directory / f".tmp-{os.getpid()}-{os.urandom(6).hex()}"
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, _path(store, k))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def touch(store: Store, k: str) -> None:
    """Mark *k*'s record used now (its mtime is its last use, for --filter until=)."""
    with contextlib.suppress(OSError):
        os.utime(_path(store, k))


# -- --cache-from: an image's history as a source of hits -------------------------


def seeded(seeds: Iterable[Image], diff_ids: list[str], history: list[dict[str, Any]],
           created_by: str) -> tuple[dict[str, Any], str, dict[str, Any]] | None:
    """The layer a --cache-from image has for a step adding a layer *created_by*
    over the state (*diff_ids*, *history*): (descriptor, diff_id, history entry).

    A seed fits when its layers begin with the state's and its history with the
    state's entries (created_by and empty_layer; times are not compared), and
    its next entry is this step. Only steps whose result the history pins down
    ask (RUN, WORKDIR): a COPY's history does not say what it copied.
    """
    for img in seeds:
        nxt = _next(img, diff_ids, history)
        if nxt is None or _entry(nxt) != (created_by, False) \
                or len(img.diff_ids) <= len(diff_ids):
            continue
        return img.layers[len(diff_ids)], img.diff_ids[len(diff_ids)], nxt
    return None


def seeded_entry(seeds: Iterable[Image], diff_ids: list[str], history: list[dict[str, Any]],
                 made: dict[str, Any]) -> dict[str, Any] | None:
    """A seed's history entry for a config step that just made *made* (no layer)
    over the state: the seed's, with its time, if it has this step next."""
    for img in seeds:
        nxt = _next(img, diff_ids, history)
        if nxt is not None and _entry(nxt) == _entry(made):
            return nxt
    return None


def _next(img: Image, diff_ids: list[str], history: list[dict[str, Any]]
          ) -> dict[str, Any] | None:
    """The seed's history entry after the state's, if the seed begins with the state."""
    theirs = img.config.get("history") or []
    if len(theirs) <= len(history) or img.diff_ids[:len(diff_ids)] != diff_ids:
        return None
    if any(_entry(a) != _entry(b) for a, b in zip(theirs, history, strict=False)):
        return None
    nxt = theirs[len(history)]
    return dict(nxt) if isinstance(nxt, dict) else None


def _entry(h: Any) -> tuple[str, bool]:
    if not isinstance(h, dict):
        return ("", True)
    return (str(h.get("created_by", "")), bool(h.get("empty_layer")))


# -- running builds: the lock prune waits for, and what a killed build leaves --------


@contextlib.contextmanager
def running(store: Store) -> Iterator[None]:
    """Held (shared) for a whole build: prune waits for running builds."""
    _dir(store).mkdir(mode=0o700, exist_ok=True)
    fd = os.open(_dir(store) / "build.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


class _Tracked(list["Container"]):
    """The build's containers: the journal follows every change."""

    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self._journal = journal

    def append(self, ctr: Container) -> None:
        super().append(ctr)
        self._journal.write()

    def remove(self, ctr: Container) -> None:
        super().remove(ctr)
        self._journal.write()

    def clear(self) -> None:
        super().clear()
        self._journal.write()


class _TrackedSet(set[str]):
    """The build's intermediate images (manifest digests), journalled."""

    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self._journal = journal

    def add(self, digest: str) -> None:
        super().add(digest)
        self._journal.write()

    def discard(self, digest: object) -> None:
        super().discard(digest)
        self._journal.write()

    def clear(self) -> None:
        super().clear()
        self._journal.write()


class Journal:
    """What one running build made that must not outlive it.

    The build holds `builds/<id>.lock` exclusively; `builds/<id>.json` lists its
    containers and intermediate images. A reaper process, forked when the
    journal opens, waits for the build to end (a pidfd); if the build was
    killed (kill -9) it removes what the journal lists. Should the reaper die
    too, the next build or prune finds the lock free and does the same.
    """

    def __init__(self, store: Store, prefix: str = "") -> None:
        self.store = store
        self.dir = _dir(store) / "builds"
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not prefix:
            sweep(store)
        self.name = f"{prefix}{os.getpid()}-{os.urandom(4).hex()}"
        self.containers = _Tracked(self)
        self.images = _TrackedSet(self)
        # Locked under a temporary name, then renamed: a sweeper never finds the
        # lock unheld while the build is alive.
        tmp = self.dir / f".tmp-{self.name}.lock"
        self._fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self.write()
        os.rename(tmp, self.dir / f"{self.name}.lock")
        _reaper(store)

    def write(self) -> None:
        doc = {"containers": [c.id for c in self.containers], "images": sorted(self.images)}
        path = self.dir / f"{self.name}.json"
        tmp = self.dir / f".tmp-{self.name}.json"
        tmp.write_bytes(json.dumps(doc).encode())
        os.replace(tmp, path)

    def close(self) -> None:
        """The build cleaned up after itself: nothing for anyone to reap."""
        (self.dir / f"{self.name}.json").unlink(missing_ok=True)
        (self.dir / f"{self.name}.lock").unlink(missing_ok=True)
        os.close(self._fd)


def sweep(store: Store) -> int:
    """Clean up after builds that died: every journal whose lock nobody holds.
    Returns how many it cleaned."""
    directory = _dir(store) / "builds"
    if not directory.is_dir():
        return 0
    cleaned = 0
    for lock in directory.glob("*.lock"):
        if lock.name.startswith("."):
            # pathlib's * matches dot-names: a .tmp- lock may be one a build just made
            # and has not flocked yet (the loop below waits 60 s for those).
            continue
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live build
            journal = lock.with_suffix(".json")
            _clean(store, journal, lock.stem)
            journal.unlink(missing_ok=True)
            (directory / f".tmp-{journal.name}").unlink(missing_ok=True)
            lock.unlink(missing_ok=True)
            cleaned += 1
        finally:
            os.close(fd)
    for tmp in directory.glob(".tmp-*.lock"):
        # A build killed between creating its lock and renaming it. One just
        # starting may not hold it yet (open, then flock): only old ones go.
        with contextlib.suppress(OSError):
            if time.time() - tmp.lstat().st_ctime < 60:
                continue
            fd = os.open(tmp, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                (directory / f"{tmp.name.removesuffix('.lock')}.json").unlink(missing_ok=True)
                tmp.unlink()
            except BlockingIOError:
                pass
            finally:
                os.close(fd)
    return cleaned


def _clean(store: Store, journal: Path, name: str) -> None:
    from rootless.engine import containers
    from rootless.engine.store import Container

    ids: list[str] = []
    images: list[str] = []
    try:
        doc = json.loads(journal.read_bytes())
        # Container IDs only (64 hex digits): a damaged journal names no path.
        ids = [str(c) for c in doc.get("containers", []) if _ID.fullmatch(str(c))]
        images = [str(d) for d in doc.get("images", [])]
    except (OSError, ValueError, TypeError, AttributeError):
        pass  # damaged: its containers' storage is collected as unreferenced later
    # Also those put but not journalled yet when the build was killed.
    with contextlib.suppress(RlError, OSError):
        images += [i.manifest_digest for i in store.images()
                   if i.config.get(INTERMEDIATE) == name]
    for cid in ids:
        with contextlib.suppress(RlError, OSError):
            containers.remove(Container(cid), force=True)
    if images:
        # No collection here: it would wait for every running build. Their blobs
        # go at the next one (any build's end, rmi, prune).
        with store.writing():
            for digest in images:
                with contextlib.suppress(RlError, OSError, ValueError):
                    store.delete_image(digest)


def _reaper(store: Store) -> None:
    """Fork a process that outlives a killed build and sweeps after it.

    It leaves the build's session (Ctrl-C and a kill of the process group miss
    it), keeps only stderr (so whoever reads the build's stderr to its end
    waits for the sweep) and waits on a pidfd of the build, not a pipe: the
    containers the build starts would inherit a pipe and keep it open.
    """
    parent = os.getpid()
    try:
        pidfd = os.pidfd_open(parent)
    except OSError:
        return  # without pidfds, the next build or prune sweeps
    try:
        pid = os.fork()
    except OSError:
        os.close(pidfd)
        return
    if pid:
        os.close(pidfd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)  # the first child exits at once (see below)
        return
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        keep = {0, 1, 2, pidfd}
        for fd in _open_fds():
            if fd not in keep:
                with contextlib.suppress(OSError):
                    os.close(fd)
        # Detach from the build's exit: a grandchild does the waiting, so the
        # build has no zombie child left when it ends.
        if os.fork():
            os._exit(0)
        select.select([pidfd], [], [])
        sweep(store)
    except BaseException:
        pass
    finally:
        os._exit(0)


def _open_fds() -> list[int]:
    try:
        return [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:
        return list(range(3, 256))


# -- rl builder prune --------------------------------------------------------------


@dataclass
class Pruned:
    records: list[str]  # the keys removed
    mounts: list[str]  # the cache mount directories removed
    freed: int  # bytes: records, blobs and mounts
    errors: list[str]  # cache mounts that could not be removed, why


def prune(store: Store, all_: bool = False, until: float | None = None) -> Pruned:
    """`rl builder prune`: remove records (only those last used more than *until*
    seconds ago, if given), then collect what only they held.

    Without *all_* only dangling records go: those holding a blob or layer no
    image holds (a record over an image's own layers frees nothing). With it
    every record goes, and the RUN cache mounts under `<store>/build-mounts/`
    too. Waits for running builds: they may hold a record's layers.
    """
    from rootless.engine import images as engine_images

    sweep(store)
    directory = _dir(store)
    out = Pruned([], [], 0, [])
    cutoff = None if until is None else time.time() - until
    directory.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(directory / "build.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with store.writing():
            held_blobs: set[str] = set()
            for img in store.images():
                held_blobs.update(layer["digest"] for layer in img.layers)
            for path in directory.glob("*.json"):
                try:
                    st = path.stat()
                    if cutoff is not None and st.st_mtime >= cutoff:
                        continue
                    if not all_ and not _dangling(path, held_blobs):
                        continue
                    path.unlink()
                except FileNotFoundError:
                    continue
                out.records.append("sha256:" + path.stem)
                out.freed += st.st_size
        _, freed = store.collect(engine_images.holds)
        out.freed += freed
        if all_:
            out.freed += _prune_mounts(store.root / MOUNTS_DIR, cutoff, out)
    finally:
        os.close(fd)
    return out


def _dangling(path: Path, held_blobs: set[str]) -> bool:
    try:
        doc = json.loads(path.read_bytes())
        return any(layer["digest"] not in held_blobs for layer in doc["layers"])
    except (OSError, ValueError, KeyError, TypeError):
        return True  # damaged: holds nothing useful


def _prune_mounts(directory: Path, cutoff: float | None, out: Pruned) -> int:
    """Remove the cache mount directories (last changed before *cutoff*, if given).

    Their files belong to subordinate IDs (a RUN wrote them), so they are
    removed in the user namespace; a mount in use by a running build is in
    its own flock'd directory the RUN code owns: removal happens only with
    every build stopped (prune holds build.lock exclusively).
    """
    if not directory.is_dir():
        return 0
    from rootless.runtime import userns

    size = 0
    for entry in directory.iterdir():
        try:
            if cutoff is not None and entry.lstat().st_mtime >= cutoff:
                continue
            size += _tree_size(entry)
            if entry.is_dir() and not entry.is_symlink():
                userns.remove_tree(entry)
            else:
                entry.unlink()
        except (OSError, RlError) as e:
            out.errors.append(f"{entry.name}: {e}")
            continue
        out.mounts.append(entry.name)
    return size


def _tree_size(path: Path) -> int:
    total = 0
    try:
        if not path.is_dir() or path.is_symlink():
            return path.lstat().st_size
        for root, _dirs, files in os.walk(path, onerror=lambda e: None):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(root, name)).st_size
    except OSError:
        pass
    return total


