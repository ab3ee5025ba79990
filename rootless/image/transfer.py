"""rl pull, rl push, rl login/logout: moving images between the store and a registry.

Pull: the manifest (or the index's manifest for the platform) is checked
against its digest, the config is verified and validated, then the layers
download in parallel threads while the main thread unpacks each one as it
arrives (unpacking forks a user-namespace child, so it stays on one thread).
A blob downloads to blobs/sha256/.partial-<hex> under a per-blob lock: a
second pull of the same layer waits and then finds it, and a pull that was
interrupted resumes with a Range request. Only a verified blob is renamed
into place.

Push: each blob is skipped if the registry has it, mounted across
repositories if rl knows another repository on that registry holding it
(storage/blob-sources.json, filled by pulls and pushes), else uploaded:
in one PUT up to the chunk size (RL_PUSH_CHUNK_SIZE, default 16 MiB), in
PATCH chunks above it. Then the manifest, unchanged, so its digest stays.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import InvalidArgument, RlError, Unauthorized
from ..runtime import userns
from . import (
    credentials,
    # Unused by name: _pull_one's userns.Worker, forked before the download threads,
    # unpickles layers.unpack in its children, which must not import after the fork.
    layers,  # noqa: F401
    reference,
)
from .archive import check_config, select_platform
from .images import go_arch, lookup, open_store
from .progress import BlobProgress, ProgressSink
from .registries import search_registries
from .registry import Client, RegistryError
from .store import (
    CONFIG_TYPES,
    INDEX_TYPES,
    LAYER_TYPES,
    MANIFEST_TYPES,
    BlobError,
    Image,
    Store,
    check_digest,
    sha256_file,
)

PARALLEL = 4
RESUME_ATTEMPTS = 3


def _chunk_size() -> int:
    try:
        return max(1024, int(os.environ.get("RL_PUSH_CHUNK_SIZE", 16 << 20)))
    except ValueError:
        raise RlError("RL_PUSH_CHUNK_SIZE must be a number of bytes") from None


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as e:  # RecursionError: nested too deeply
        raise RlError(f"malformed {what}: {e}") from None
    if not isinstance(doc, dict):
        raise RlError(f"malformed {what}: not a JSON object")
    return doc


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- blob sources (for cross-repository mounts) --------------------------------------


def _sources_path(store: Store) -> str:
    return str(store.root / "blob-sources.json")


def _read_sources(store: Store) -> dict[str, list[str]]:
    try:
        with open(_sources_path(store)) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (FileNotFoundError, ValueError):
        return {}


def _record_sources(store: Store, repo: str, digests: list[str]) -> None:
    lock = os.open(store.root / "index.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = _read_sources(store)
        for d in digests:
            repos = data.setdefault(d, [])
            if repo not in repos:
                repos.append(repo)
                del repos[:-8]
        tmp = f"{_sources_path(store)}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, _sources_path(store))
    finally:
        os.close(lock)


# -- pull ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PullOptions:
    """docker pull's settings (and the Engine API's POST /images/create's)."""

    platform: str | None = None  # os/arch[/variant]; None: this machine's
    tls_verify: bool = True


@dataclass(frozen=True)
class PushOptions:
    tls_verify: bool = True


def pull(text: str, opts: PullOptions, progress: ProgressSink) -> Image:
    ref = reference.parse(text)
    if ref.domain:
        tries = [ref.tagged()]
    else:
        domains = search_registries()
        if not domains:
            raise RlError(f"short name {text!r} and no unqualified-search-registries in "
                          "registries.conf: give the registry, e.g. HOST/{text}")
        tries = [ref.with_domain(d).tagged() for d in domains]
    failures = []
    for i, candidate in enumerate(tries):
        if not ref.domain:
            progress.message(f"Resolved short name {text!r}: trying {candidate}")
        try:
            return _pull_one(candidate, opts.platform, opts.tls_verify, progress)
        except RegistryError as e:
            if i + 1 < len(tries) and e.status in (0, 401, 404):
                failures.append(e.message)
                continue
            if failures:
                raise RlError(f"{e.message} (also tried: {'; '.join(failures)})") from None
            raise
    raise RlError("; ".join(failures))


def _pull_one(ref: reference.Reference, platform: str | None, tls_verify: bool,
              progress: ProgressSink) -> Image:
    store = open_store()
    # Forked before the first thread (the download pool) exists: see userns.Worker.
    with userns.Worker() as worker:
        client = Client(ref.domain, tls_verify)
        try:
            with store.writing():
                try:
                    return _pull_locked(store, client, ref, platform, progress, worker)
                except BaseException:
                    store.rollback()
                    raise
        finally:
            client.close()


def _fetch_manifest(client: Client, repo: str, ref: str, expect: str) -> tuple[bytes, str,
                                                                                dict[str, Any]]:
    body, media_type, header_digest = client.get_manifest(repo, ref)
    digest = _sha(body)
    if expect and digest != expect:
        raise BlobError(f"manifest digest mismatch: expected {expect}, got {digest}")
    if header_digest and header_digest.startswith("sha256:") and header_digest != digest:
        raise BlobError(f"manifest digest mismatch: the registry says {header_digest}, "
                        f"the content is {digest}")
    doc = _json_object(body, "manifest")
    return body, str(doc.get("mediaType") or media_type), doc


def _pull_locked(store: Store, client: Client, ref: reference.Reference, platform: str | None,
                 progress: ProgressSink, worker: userns.Worker) -> Image:
    repo = ref.path
    body, media_type, doc = _fetch_manifest(client, repo, ref.digest or ref.tag, ref.digest)
    if media_type in INDEX_TYPES:
        desc = select_platform(doc, platform)
        body, media_type, doc = _fetch_manifest(client, repo, str(desc.get("digest")),
                                                str(desc.get("digest")))
    if media_type not in MANIFEST_TYPES:
        raise RlError(f"unsupported manifest media type {media_type!r}")
    config_desc = doc.get("config")
    layer_descs = doc.get("layers")
    if not isinstance(config_desc, dict) or not isinstance(layer_descs, list):
        raise RlError("malformed manifest: no config or layers")
    if config_desc.get("mediaType") not in CONFIG_TYPES:
        raise RlError(f"unsupported config media type {config_desc.get('mediaType')!r}")
    for layer in layer_descs:
        if not isinstance(layer, dict) or layer.get("mediaType") not in LAYER_TYPES:
            mt = layer.get("mediaType") if isinstance(layer, dict) else layer
            raise RlError(f"unsupported layer media type {mt!r}")
        check_digest(str(layer.get("digest")))
    config_digest = str(config_desc.get("digest"))
    check_digest(config_digest)
    if not store.has_blob(config_digest):
        r = client.request("GET", f"/v2/{repo}/blobs/{config_digest}", f"repository:{repo}:pull")
        store.put_bytes(r.content, expect=config_digest)
    config = check_config(_json_object(store.read_blob(config_digest), "image config"),
                          len(layer_descs))
    want = (platform or f"linux/{go_arch()}").split("/")
    have = [str(config.get("os", "")), str(config.get("architecture", ""))]
    if platform and have != want[:2]:
        raise RlError(f"image {ref} is for {'/'.join(have)}, not {platform}")
    progress.message(f"Pulling {ref} from {client.base}")
    _download_and_unpack(store, client, repo, layer_descs, config["rootfs"]["diff_ids"],
                         progress, worker)
    progress.message(f"Copying config {config_digest} done")
    manifest_digest = store.put_bytes(body)
    name = str(reference.Reference(ref.domain, ref.path, ref.tag or "latest")) \
        if not ref.digest else ""
    store.add_image(manifest_digest, media_type, len(body), [name] if name else [])
    _record_sources(store, f"{ref.domain}/{repo}", [d["digest"] for d in layer_descs])
    return Image(manifest_digest, doc, config, [name] if name else [])


def fetch_config(text: str, platform: str | None = None) -> dict[str, Any]:
    """The image config of *text* from its registry, and nothing else: the manifest
    (an index's for *platform*, default this machine's) and the config blob, each
    checked against its digest, nothing stored, no layer fetched (what BuildKit's
    metadata resolver gives `--check`). A short name tries the search registries,
    as pull does. A loopback registry is spoken to over plain HTTP: dockerd counts
    127.0.0.0/8 as an insecure registry by default."""
    ref = reference.parse(text)
    tries = [ref.tagged()] if ref.domain else \
        [ref.with_domain(d).tagged() for d in search_registries()]
    if not tries:
        raise RlError(f"short name {text!r} and no unqualified-search-registries")
    failures: list[str] = []
    for candidate in tries:
        client = Client(candidate.domain, tls_verify=not _loopback(candidate.domain))
        try:
            repo = candidate.path
            _, media_type, doc = _fetch_manifest(client, repo, candidate.digest or
                                                 candidate.tag, candidate.digest)
            if media_type in INDEX_TYPES:
                desc = select_platform(doc, platform)
                digest = str(desc.get("digest"))
                _, media_type, doc = _fetch_manifest(client, repo, digest, digest)
            config_desc = doc.get("config")
            if media_type not in MANIFEST_TYPES or not isinstance(config_desc, dict) or \
                    not isinstance(doc.get("layers"), list):
                raise RlError(f"{candidate}: unsupported or malformed manifest")
            config_digest = str(config_desc.get("digest"))
            check_digest(config_digest)
            r = client.request("GET", f"/v2/{repo}/blobs/{config_digest}",
                               f"repository:{repo}:pull")
            if _sha(r.content) != config_digest:
                raise BlobError(f"config digest mismatch: expected {config_digest}, "
                                f"got {_sha(r.content)}")
            return check_config(_json_object(r.content, "image config"), len(doc["layers"]))
        except RegistryError as e:
            failures.append(e.message)
        finally:
            client.close()
    raise RlError("; ".join(failures))


def _loopback(domain: str) -> bool:
    host = domain.rsplit(":", 1)[0] if not domain.startswith("[") else \
        domain[1:].partition("]")[0]
    return host == "localhost" or host == "::1" or host.startswith("127.")


def _download_and_unpack(store: Store, client: Client, repo: str,
                         layer_descs: list[dict[str, Any]], diff_ids: list[str],
                         progress: ProgressSink, worker: userns.Worker) -> None:
    """Download in parallel; unpack each layer as soon as its blob is complete.

    Unpacks run in parallel too, in the worker's children (so on every core).
    """
    def unpack(digest: str, diff_id: str, task: BlobProgress) -> None:
        _, notes = store.ensure_layer(digest, diff_id, worker)
        task.done()
        for n in notes:
            progress.note(n)

    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as downloads, \
            concurrent.futures.ThreadPoolExecutor(PARALLEL) as unpacks:
        fetching = {}
        for desc, diff_id in zip(layer_descs, diff_ids, strict=True):
            digest = str(desc["digest"])
            if store.layer_dir(diff_id).is_dir() and store.has_blob(digest):
                progress.message(f"Copying blob {digest[:19]} skipped: already exists")
                continue
            task = progress.blob(digest, int(desc.get("size", 0)))
            fut = downloads.submit(_download, store, client, repo, digest,
                                   int(desc.get("size", -1)), task)
            fetching[fut] = (digest, diff_id, task)
        unpacking = []
        try:
            for fut in concurrent.futures.as_completed(fetching):
                fut.result()
                unpacking.append(unpacks.submit(unpack, *fetching[fut]))
            for u in concurrent.futures.as_completed(unpacking):
                u.result()
        except BaseException:
            for f in [*fetching, *unpacking]:
                f.cancel()
            raise


def _download(store: Store, client: Client, repo: str, digest: str, size: int,
              task: BlobProgress) -> None:
    hexpart = check_digest(digest)
    if store.has_blob(digest):
        return
    partial = store.blobs / f".partial-{hexpart}"
    lock_fd = os.open(store.locks / f"blob-{hexpart}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                      0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        if store.has_blob(digest):
            return  # a concurrent pull fetched it while we waited
        last_error = ""
        for _attempt in range(RESUME_ATTEMPTS + 1):
            offset = partial.stat().st_size if partial.exists() else 0
            if size >= 0 and offset > size:
                offset = 0
            if size >= 0 and offset == size:
                break
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            try:
                with client.stream(f"/v2/{repo}/blobs/{digest}", f"repository:{repo}:pull",
                                   headers) as resp:
                    if offset and resp.status_code != 206:
                        offset = 0  # the registry ignored the range: start over
                    task.restart(offset)
                    with open(partial, "ab" if offset else "wb") as f:
                        for chunk in resp.iter_bytes(1 << 20):
                            f.write(chunk)
                            task.advance(len(chunk))
                            if size >= 0 and f.tell() > size:
                                raise BlobError(f"blob {digest}: the registry sent more than "
                                                f"its {size} bytes")
            except (httpx.TransportError, httpx.StreamError) as e:
                last_error = str(e) or type(e).__name__
                continue
            got = partial.stat().st_size
            if size < 0 or got == size:
                break
            last_error = f"got {got} of {size} bytes"
        got = partial.stat().st_size if partial.exists() else 0
        if size >= 0 and got != size:
            # Retries exhausted: the registry itself serves it short. (A partial file
            # survives only an interrupted rl, for the next pull to resume.)
            partial.unlink(missing_ok=True)
            raise BlobError(f"truncated blob {digest}: {last_error or f'got {got} of {size}'}")
        actual = sha256_file(partial)
        if actual != digest:
            partial.unlink()
            raise BlobError(f"digest mismatch for blob {digest}: the content is {actual}")
        os.replace(partial, store.blob_path(digest))
        with store._new_lock:
            store.new_blobs.add(digest)
            store.verified.add(digest)
    finally:
        os.close(lock_fd)


# -- push ----------------------------------------------------------------------------


def push(source: str, dest: str | None, opts: PushOptions, progress: ProgressSink) -> str:
    """Push an image; returns the manifest digest."""
    store = open_store()
    img = lookup(store, source)
    target = dest or source
    ref = reference.parse(target)
    if not ref.domain or ref.domain == "localhost":
        if dest is None and ref.domain == "" and img.names:
            ref = reference.parse(img.names[0])
        if not ref.domain or ref.domain == "localhost":
            raise InvalidArgument(f"no registry in {target!r}: push to HOST[:PORT]/NAME[:TAG]")
    if ref.digest:
        raise InvalidArgument(f"{target}: cannot push to a digest reference")
    ref = ref.tagged()
    client = Client(ref.domain, opts.tls_verify)
    repo = ref.path
    sources = _read_sources(store)
    chunk = _chunk_size()
    try:
        progress.message(f"Pushing {source} to {ref}")
        for desc in [*img.layers, img.manifest["config"]]:
            _push_blob(store, client, repo, ref.domain, desc, sources, chunk, progress)
        body = store.read_blob(img.manifest_digest)
        media_type = str(img.manifest.get("mediaType") or MANIFEST_TYPES[0])
        client.put_manifest(repo, ref.tag, body, media_type)
        progress.message(f"Writing manifest {img.manifest_digest} to {ref}")
    finally:
        client.close()
    _record_sources(store, f"{ref.domain}/{repo}",
                    [x["digest"] for x in img.layers] + [img.id])
    return img.manifest_digest


def _push_blob(store: Store, client: Client, repo: str, domain: str, desc: dict[str, Any],
               sources: dict[str, list[str]], chunk: int, progress: ProgressSink) -> None:
    digest = str(desc["digest"])
    label = f"Copying blob {digest[:19]}"
    if client.has_blob(repo, digest, push=True):
        progress.message(f"{label} skipped: already exists")
        return
    store.verify_blob(digest)
    url = None
    for src in sources.get(digest, []):
        host, _, src_repo = src.partition("/")
        if host == domain and src_repo != repo:
            with contextlib.suppress(RegistryError):
                url = client.mount_blob(repo, digest, src_repo)
                if url is None:
                    progress.message(f"{label} mounted from {src_repo}")
                    return
                break
    if url is None:
        url = client.start_upload(repo)
    path = store.blob_path(digest)
    size = path.stat().st_size
    task = progress.blob(digest, size)
    with open(path, "rb") as f:
        if size <= chunk:
            client.finish_upload(repo, url, digest, f.read())
        else:
            offset = 0
            while data := f.read(chunk):
                url = client.upload_chunk(repo, url, data, offset)
                offset += len(data)
                task.advance(len(data))
            client.finish_upload(repo, url, digest)
    task.done()


# -- login / logout -------------------------------------------------------------------


def login(registry: str, user: str, password: str, tls_verify: bool) -> str:
    host = _registry_host(registry)
    client = Client(host, tls_verify, creds=(user, password))
    try:
        client.ping()
    except RegistryError as e:
        if e.status == 401:
            raise Unauthorized(f"logging in to {host}: invalid username or password") from None
        raise
    finally:
        client.close()
    return str(credentials.store(host, user, password))


def _registry_host(text: str) -> str:
    host = text.removeprefix("https://").removeprefix("http://").rstrip("/").split("/")[0]
    if not host or not reference.valid_domain(host):
        raise InvalidArgument(f"invalid registry {text!r}")
    return host


def logout(registry: str | None) -> None:
    host = _registry_host(registry) if registry else None
    if not credentials.remove(host) and host:
        raise RlError(f"not logged in to {host}")
