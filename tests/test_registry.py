"""rl pull / push / login / logout against Debian's docker-registry on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from imagetools import rootfs_tar, storage, store_files
from test_images import one_line_error

import support
from support import RlRunner, RlState

REGISTRY = "/usr/bin/docker-registry"


@pytest.fixture(autouse=True)
def _host() -> None:
    support.require_userns()
    support.require_newidmap()
    support.require_busybox()
    support.require(os.access(REGISTRY, os.X_OK), "docker-registry not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    host: str
    data: Path
    proc: subprocess.Popen[bytes]

    def url(self, path: str) -> str:
        return f"http://{self.host}{path}"

    def blob_file(self, digest: str) -> Path:
        hexpart = digest.removeprefix("sha256:")
        return self.data / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"


def start_registry(base: Path, htpasswd: Path | None = None) -> Registry:
    port = free_port()
    base.mkdir(parents=True, exist_ok=True)
    auth = ""
    if htpasswd:
        auth = f"auth:\n  htpasswd:\n    realm: rl-test\n    path: {htpasswd}\n"
    config = base / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {base / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n{auth}")
    proc = subprocess.Popen([REGISTRY, "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=open(base / "log", "wb"))  # noqa: SIM115
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1)
            break
        except httpx.HTTPError:
            if proc.poll() is not None:
                pytest.fail(f"docker-registry exited: {(base / 'log').read_text()}")
            time.sleep(0.05)
    return Registry(f"127.0.0.1:{port}", base / "data", proc)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    if not os.access(REGISTRY, os.X_OK):
        pytest.skip("docker-registry not installed")
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.proc.kill()
    reg.proc.wait()


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    support.require(shutil.which("htpasswd") is not None, "htpasswd missing (apache2-utils)")
    base = tmp_path_factory.mktemp("authreg")
    htpasswd = base / "htpasswd"
    out = subprocess.run(["htpasswd", "-Bbn", "alice", "s3cret"], capture_output=True,
                         text=True, check=True).stdout
    htpasswd.write_text(out)
    reg = start_registry(base, htpasswd)
    yield reg
    reg.proc.kill()
    reg.proc.wait()


@pytest.fixture(scope="module")
def image_tar(rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rootfs_tar(rootfs, tmp_path_factory.mktemp("regtar") / "bb.tar.gz")


_n = iter(range(1000))


@pytest.fixture
def local(rl: RlRunner, image_tar: Path) -> str:
    name = f"regimg{next(_n)}"
    rl("import", "-c", 'CMD ["echo", "from registry"]', image_tar, name, check=True)
    return name


def test_push_pull_run_roundtrip(rl: RlRunner, registry: Registry, local: str) -> None:
    dest = f"{registry.host}/me/{local}:v1"
    r = rl("push", "--tls-verify=false", local, dest, check=True)
    assert "Writing manifest" in r.stderr
    digest = r.stdout.strip()
    # The registry holds what rl computed: the manifest under the same digest.
    m = httpx.get(registry.url(f"/v2/me/{local}/manifests/v1"), headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert m.status_code == 200 and "sha256:" + hashlib.sha256(m.content).hexdigest() == digest
    rl("rmi", local, check=True)
    r = rl("pull", "--tls-verify=false", dest, check=True)
    assert "Copying blob" in r.stderr and r.stdout.startswith("sha256:")
    assert rl("run", "--rm", dest, check=True).stdout == "from registry\n"
    info = json.loads(rl("image", "inspect", dest, check=True).stdout)[0]
    assert info["RepoDigests"] == [f"{registry.host}/me/{local}@{digest}"]
    # A second push to another repository mounts the blobs instead of uploading them.
    r = rl("push", "--tls-verify=false", dest, f"{registry.host}/other/{local}:v2", check=True)
    assert r.stderr.count("mounted from me/") == 2, r.stderr
    r = rl("push", "--tls-verify=false", dest, f"{registry.host}/other/{local}:v3", check=True)
    assert r.stderr.count("skipped: already exists") == 2


def test_run_pulls_a_missing_image(rl: RlRunner, registry: Registry, local: str) -> None:
    dest = f"{registry.host}/auto/{local}:v1"
    rl("push", "--tls-verify=false", local, dest, check=True)
    rl("rmi", local, check=True)
    # --pull=never (and a plain typo of a name) stays an error, nothing pulled.
    r = rl("run", "--rm", "--pull=never", dest)
    assert r.returncode == 125 and f"no such image: {dest}" in r.stderr
    assert rl("image", "inspect", dest).returncode == 1
    # missing (the default): docker's notice, the pull's progress, then the run.
    r = rl("run", "--rm", "--tls-verify=false", dest, check=True)
    assert r.stdout == "from registry\n"
    assert f"Unable to find image '{dest}' locally" in r.stderr and "Copying blob" in r.stderr
    # Present now: no pull at all.
    r = rl("run", "--rm", "--tls-verify=false", dest, check=True)
    assert r.stdout == "from registry\n" and "Unable to find" not in r.stderr
    # always: pulls (the blobs are there: the pull only checks them) and runs.
    r = rl("create", "--pull=always", "--tls-verify=false", dest, check=True)
    assert f"Pulling {dest}" in r.stderr and "skipped: already exists" in r.stderr
    rl("rm", r.stdout.strip(), check=True)
    # A missing image on a registry that does not have it: the pull's error, 125.
    r = rl("run", "--rm", "--tls-verify=false", f"{registry.host}/auto/nosuch:v1")
    assert r.returncode == 125 and "Unable to find image" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("Error: ")
    r = rl("run", "--pull=sometimes", dest)
    assert r.returncode == 125


def test_chunked_upload(rl: RlRunner, registry: Registry, local: str, rl_path: Path,
                        rl_state: RlState) -> None:
    dest = f"{registry.host}/chunked/{local}:1"
    env = {**os.environ, **rl_state.env(), "RL_PUSH_CHUNK_SIZE": "65536"}
    subprocess.run([str(rl_path), "push", "-q", "--tls-verify=false", local, dest], env=env,
                   check=True, capture_output=True)
    info = json.loads(rl("image", "inspect", local, check=True).stdout)[0]
    layer = httpx.get(registry.url(f"/v2/chunked/{local}/manifests/1"), headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json"}).json()["layers"][0]
    assert layer["size"] > 65536 * 4
    blob = httpx.get(registry.url(f"/v2/chunked/{local}/blobs/{layer['digest']}")).content
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == layer["digest"]
    assert info["RootFS"]["Layers"]


def test_short_names_use_the_search_list(rl: RlRunner, registry: Registry, local: str,
                                         rl_state: RlState) -> None:
    rl("push", "-q", "--tls-verify=false", local, f"{registry.host}/lib/{local}:s", check=True)
    conf = rl_state.config_home / "containers" / "registries.conf"
    conf.parent.mkdir(exist_ok=True)
    conf.write_text(f'unqualified-search-registries = ["127.0.0.1:1", "{registry.host}"]\n')
    try:
        r = rl("pull", "--tls-verify=false", f"lib/{local}:s", check=True)
        assert f"trying {registry.host}/lib/{local}:s" in r.stderr  # never silent
        assert f"trying 127.0.0.1:1/lib/{local}:s" in r.stderr
        assert rl("run", "--rm", f"lib/{local}:s", check=True).stdout == "from registry\n"
        conf.write_text("unqualified-search-registries = []\n")
        one_line_error(rl("pull", "--tls-verify=false", f"lib/{local}:s"), 125)
    finally:
        conf.unlink()


def _put_blob(reg: Registry, repo: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    loc = httpx.post(reg.url(f"/v2/{repo}/blobs/uploads/")).headers["Location"]
    url = str(httpx.URL(reg.url("/")).join(loc))
    r = httpx.put(f"{url}{'&' if '?' in url else '?'}digest={digest}", content=data)
    assert r.status_code == 201, r.text
    return digest


def _put_manifest(reg: Registry, repo: str, ref: str, doc: dict[str, object],
                  media_type: str) -> str:
    body = json.dumps(doc).encode()
    r = httpx.put(reg.url(f"/v2/{repo}/manifests/{ref}"), content=body,
                  headers={"Content-Type": media_type})
    assert r.status_code == 201, r.text
    return "sha256:" + hashlib.sha256(body).hexdigest()


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _arch() -> str:
    import platform

    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def test_index_platform_selection(rl: RlRunner, registry: Registry, local: str) -> None:
    repo = f"multi/{local}"
    rl("push", "-q", "--tls-verify=false", local, f"{registry.host}/{repo}:single", check=True)
    m = httpx.get(registry.url(f"/v2/{repo}/manifests/single"), headers={"Accept": OCI_MANIFEST})
    desc = {"mediaType": OCI_MANIFEST, "size": len(m.content),
            "digest": "sha256:" + hashlib.sha256(m.content).hexdigest()}
    _put_manifest(registry, repo, "multi", {
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {**desc, "platform": {"os": "linux", "architecture": "s390x"}},
            {**desc, "platform": {"os": "linux", "architecture": _arch()}}]}, OCI_INDEX)
    ref = f"{registry.host}/{repo}:multi"
    rl("pull", "-q", "--tls-verify=false", ref, check=True)
    rl("pull", "-q", "--tls-verify=false", "--platform", f"linux/{_arch()}", ref, check=True)
    r = rl("run", "--rm", ref, check=True)
    assert r.stdout == "from registry\n", r
    msg = one_line_error(rl("pull", "-q", "--tls-verify=false", "--platform", "linux/mips",
                            ref), 125)
    assert "no image for platform linux/mips" in msg and "s390x" in msg
    one_line_error(rl("pull", "-q", "--tls-verify=false", "--platform", "bogus", ref), 125)
    # A plain manifest for another platform than the one asked for.
    msg = one_line_error(rl("pull", "-q", "--tls-verify=false", "--platform", "linux/s390x",
                            f"{registry.host}/{repo}:single"), 125)
    assert f"is for linux/{_arch()}, not linux/s390x" in msg


def test_pull_errors_leave_nothing(rl: RlRunner, registry: Registry, local: str,
                                   rl_state: RlState, image_tar: Path) -> None:
    repo = f"bad/{local}"
    rl("push", "-q", "--tls-verify=false", local, f"{registry.host}/{repo}:good", check=True)
    good = httpx.get(registry.url(f"/v2/{repo}/manifests/good"),
                     headers={"Accept": OCI_MANIFEST}).json()
    layer = good["layers"][0]
    cfg_ok = good["config"]
    odd = {**good, "layers": [{**layer, "mediaType": "application/x-frobnicated"}]}
    _put_manifest(registry, repo, "odd-type", odd, OCI_MANIFEST)
    bad_cfg = _put_blob(registry, repo, b"{this is not json")
    _put_manifest(registry, repo, "bad-config", {**good, "config": {
        **cfg_ok, "digest": bad_cfg, "size": 17}}, OCI_MANIFEST)
    # A layer the registry stores corrupted (same size) and one it stores truncated.
    data = image_tar.read_bytes()
    corrupt = data[:-100] + bytes(100) + b""
    corrupt_digest = _put_blob(registry, repo, data[:1000] + b"\0" + data[1001:])
    registry.blob_file(corrupt_digest).write_bytes(corrupt[:len(data)])
    _put_manifest(registry, repo, "corrupt", {**good, "layers": [
        {**layer, "digest": corrupt_digest, "size": len(data)}]}, OCI_MANIFEST)
    trunc_digest = _put_blob(registry, repo, data + b"\0" * 1024)
    registry.blob_file(trunc_digest).write_bytes(data[:5000])
    _put_manifest(registry, repo, "truncated", {**good, "layers": [
        {**layer, "digest": trunc_digest, "size": len(data) + 1024}]}, OCI_MANIFEST)
    rl("rmi", local, check=True)
    before = store_files(rl_state.data_home)
    cases = {
        "missing-tag": ("nope", "manifest unknown"),
        "odd-type": ("odd-type", "unsupported layer media type"),
        "bad-config": ("bad-config", "malformed image config"),
        "corrupt": ("corrupt", "digest mismatch"),
        "truncated": ("truncated", "truncated blob"),
    }
    for case, (tag, expected) in cases.items():
        msg = one_line_error(rl("pull", "-q", "--tls-verify=false",
                                f"{registry.host}/{repo}:{tag}"), 125)
        assert expected in msg, (case, msg)
        assert store_files(rl_state.data_home) == before, case
    assert not [p for p in (storage(rl_state.data_home) / "blobs/sha256").iterdir()
                if p.name.startswith(".partial") and "corrupt" in p.name]
    msg = one_line_error(rl("pull", "-q", "--tls-verify=false", f"{registry.host}/no/such:1"),
                         125)
    assert "manifest unknown" in msg or "not found" in msg
    port = free_port()
    assert "cannot reach registry" in one_line_error(
        rl("pull", "-q", "--tls-verify=false", f"127.0.0.1:{port}/x:1"), 125)
    for bad in ("UPPER/case", "a//b", "x:y:z", "x@sha256:123"):
        assert "invalid reference" in one_line_error(rl("pull", bad), 125)
    one_line_error(rl("pull", "--tls-verify=maybe", "x"), 125)
    one_line_error(rl("push", "nosuchimage", f"{registry.host}/x:1"), 1)
    one_line_error(rl("push", "--tls-verify=false", "sha256:" + "0" * 64, "x"), 1)


def test_push_needs_a_registry(rl: RlRunner, local: str) -> None:
    assert "no registry" in one_line_error(rl("push", local), 125)
    assert "no registry" in one_line_error(rl("push", local, "plain/name:1"), 125)


def test_registry_500(rl: RlRunner, registry: Registry, local: str) -> None:
    rl("push", "-q", "--tls-verify=false", local, f"{registry.host}/broken/{local}:1", check=True)
    repos = registry.data / "docker/registry/v2/repositories/broken"
    repos.chmod(0)
    try:
        msg = one_line_error(rl("pull", "-q", "--tls-verify=false",
                                f"{registry.host}/broken/{local}:1"), 125)
        assert "500" in msg or "unknown" in msg.lower()
    finally:
        repos.chmod(0o755)


def test_resume_partial_download(rl: RlRunner, registry: Registry, local: str,
                                 rl_state: RlState) -> None:
    # A layer of its own (the base layer is shared with the other tests' images).
    cid = rl("create", local, "sh", "-c", f"head -c 300000 /dev/urandom > /r; echo {local}",
             check=True).stdout.strip()
    rl("start", "-a", cid, check=True)
    rl("commit", cid, f"{local}-r", check=True)
    rl("rm", cid, check=True)
    ref = f"{registry.host}/resume/{local}:1"
    rl("push", "-q", "--tls-verify=false", f"{local}-r", ref, check=True)
    layer = httpx.get(registry.url(f"/v2/resume/{local}/manifests/1"),
                      headers={"Accept": OCI_MANIFEST}).json()["layers"][-1]
    data = httpx.get(registry.url(f"/v2/resume/{local}/blobs/{layer['digest']}")).content
    rl("rmi", f"{local}-r", check=True)
    blobs = storage(rl_state.data_home) / "blobs/sha256"
    assert not (blobs / layer["digest"][7:]).exists()
    partial = blobs / f".partial-{layer['digest'][7:]}"
    # A wrong first half proves the download resumed from it rather than restarting...
    partial.write_bytes(bytes(len(data) // 2))
    assert "digest mismatch" in one_line_error(rl("pull", "-q", "--tls-verify=false", ref), 125)
    assert not partial.exists()
    # ...and a right one completes into the verified blob.
    partial.write_bytes(data[: len(data) // 2])
    rl("pull", "-q", "--tls-verify=false", ref, check=True)
    assert not partial.exists()
    assert (blobs / layer["digest"][7:]).read_bytes() == data
    r = rl("run", "--rm", ref, "sh", "-c", "wc -c < /r", check=True)
    assert r.stdout.strip() == "300000"


def test_concurrent_pulls(rl: RlRunner, registry: Registry, local: str, rl_path: Path,
                          rl_state: RlState) -> None:
    ref = f"{registry.host}/conc/{local}:1"
    rl("push", "-q", "--tls-verify=false", local, ref, check=True)
    rl("rmi", local, check=True)
    env = {**os.environ, **rl_state.env()}
    procs = [subprocess.Popen([str(rl_path), "pull", "-q", "--tls-verify=false", ref], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert len({o[0] for o in outs}) == 1
    root = storage(rl_state.data_home)
    assert not [n for n in os.listdir(root / "blobs/sha256") if n.startswith(".")]
    assert not [n for n in os.listdir(root / "layers") if n.startswith(".")]


class GatedProxy:
    """An HTTP proxy in front of a registry that holds chosen blob GETs until released.

    `gate(repo, digest, corrupt)` holds GET /v2/<repo>/blobs/<digest> until
    `release(repo, digest)`; with corrupt, the body then comes with one byte
    changed (same length). `seen` lists every (method, path) in arrival order.
    """

    def __init__(self, upstream: Registry) -> None:
        import http.server
        import threading

        self.upstream = upstream
        self.seen: list[tuple[str, str]] = []
        self.gates: dict[str, tuple[threading.Event, bool]] = {}
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._forward(body=False)

            def do_GET(self) -> None:
                self._forward(body=True)

            def _forward(self, body: bool) -> None:
                proxy.seen.append((self.command, self.path))
                gate = proxy.gates.get(self.path)
                if gate:
                    gate[0].wait(120)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("accept", "range", "authorization")}
                r = httpx.request(self.command, proxy.upstream.url(self.path), headers=headers,
                                  timeout=60)
                data = r.content
                if gate and gate[1] and data:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                self.send_response(r.status_code)
                for k in ("Content-Type", "Docker-Content-Digest", "Content-Range",
                          "Docker-Distribution-Api-Version", "WWW-Authenticate"):
                    if k in r.headers:
                        self.send_header(k, r.headers[k])
                self.send_header("Content-Length",
                                 str(len(data) if body else r.headers.get("Content-Length", 0)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def gate(self, repo: str, digest: str, corrupt: bool = False) -> None:
        import threading

        self.gates[f"/v2/{repo}/blobs/{digest}"] = (threading.Event(), corrupt)

    def release(self, repo: str, digest: str) -> None:
        self.gates[f"/v2/{repo}/blobs/{digest}"][0].set()

    def asked(self, repo: str, digest: str) -> bool:
        return ("GET", f"/v2/{repo}/blobs/{digest}") in self.seen

    def close(self) -> None:
        for event, _ in self.gates.values():
            event.set()
        self.server.shutdown()
        self.server.server_close()


def _layer(name: str, size: int) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo(name)
        info.size = size
        tf.addfile(info, io.BytesIO(os.urandom(size)))
    return buf.getvalue()


def test_failed_pull_spares_what_a_concurrent_pull_skipped(
        rl: RlRunner, registry: Registry, local: str, rl_path: Path, rl_state: RlState,
        tmp_path: Path) -> None:
    """Pull A adds layer S, then fails; pull B, under way, found S and skipped it.

    A's rollback must not delete S (blob or unpacked layer) under B's feet: B
    names it only when it records its image. What A leaves goes with the next
    collect (image prune).
    """
    import tarfile

    from test_archive import docker_archive

    base = json.loads(rl("image", "inspect", local, check=True).stdout)[0]["RootFS"]["Layers"]
    rl("save", "-o", tmp_path / "base.tar", local, check=True)
    with tarfile.open(tmp_path / "base.tar") as tf:
        base_layer = tf.extractfile(f"{base[0][7:]}.tar").read()  # type: ignore[union-attr]
    shared, only_a, only_b = _layer("shared", 1 << 20), _layer("a", 4096), _layer("b", 4096)
    repos = {"a": f"race/a-{local}", "b": f"race/b-{local}"}
    for key, top in (("a", only_a), ("b", only_b)):
        name = f"race{key}{local}:1"
        rl("load", "-q", "-i", docker_archive(tmp_path / f"{key}.tar", [base_layer, shared, top],
                                              [name]), check=True)
        rl("push", "-q", "--tls-verify=false", name, f"{registry.host}/{repos[key]}:1",
           check=True)
        rl("rmi", name, check=True)
    manifests = {k: httpx.get(registry.url(f"/v2/{r}/manifests/1"),
                              headers={"Accept": OCI_MANIFEST}).json() for k, r in repos.items()}
    shared_digest = manifests["a"]["layers"][1]["digest"]
    assert shared_digest == manifests["b"]["layers"][1]["digest"]
    top = {k: m["layers"][2]["digest"] for k, m in manifests.items()}
    root = storage(rl_state.data_home)
    shared_dir = root / "layers" / hashlib.sha256(shared).hexdigest()
    assert not shared_dir.exists() and not (root / "blobs/sha256" / shared_digest[7:]).exists()

    proxy = GatedProxy(registry)
    env = {**os.environ, **rl_state.env()}

    def pull(key: str) -> subprocess.Popen[str]:
        return subprocess.Popen([str(rl_path), "pull", "-q", "--tls-verify=false",
                                 f"{proxy.host}/{repos[key]}:1"], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)

    procs: list[subprocess.Popen[str]] = []
    try:
        proxy.gate(repos["a"], top["a"], corrupt=True)
        proxy.gate(repos["b"], top["b"])
        procs.append(a := pull("a"))
        assert support.wait_until(lambda: shared_dir.is_dir() and proxy.asked(repos["a"], top["a"]),
                                  60), proxy.seen
        procs.append(b := pull("b"))
        assert support.wait_until(lambda: proxy.asked(repos["b"], top["b"]), 60), proxy.seen
        assert not proxy.asked(repos["b"], shared_digest)  # B skipped S: A's copy was there
        proxy.release(repos["a"], top["a"])
        _, err = a.communicate(timeout=60)
        assert a.returncode == 125 and "digest mismatch" in err, err
        proxy.release(repos["b"], top["b"])
        _, err = b.communicate(timeout=60)
        assert b.returncode == 0, err
    finally:
        proxy.close()
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait()
    ref_b = f"{proxy.host}/{repos['b']}:1"
    r = rl("run", "--rm", ref_b, "sh", "-c", "wc -c < /shared; wc -c < /b", check=True)
    assert r.stdout.split() == [str(1 << 20), "4096"]
    # A's leftovers (its config; S is B's now) go with the next collect.
    a_config = root / "blobs/sha256" / manifests["a"]["config"]["digest"][7:]
    assert a_config.exists()
    rl("image", "prune", check=True)
    assert not a_config.exists()
    assert rl("run", "--rm", ref_b, "wc", "-c", "/shared", check=True).stdout.split()[0] == \
        str(1 << 20)


def test_login_logout_with_htpasswd(rl: RlRunner, auth_registry: Registry, local: str,
                                    rl_state: RlState) -> None:
    host = auth_registry.host
    ref = f"{host}/private/{local}:1"
    msg = one_line_error(rl("push", "-q", "--tls-verify=false", local, ref), 125)
    assert "rl login" in msg
    msg = one_line_error(rl("login", "--tls-verify=false", "-u", "alice", "--password-stdin",
                            host, input="wrong\n"), 125)
    assert "invalid username or password" in msg
    r = rl("login", "--tls-verify=false", "-u", "alice", "--password-stdin", host,
           input="s3cret\n", check=True)
    assert r.stdout == "Login Succeeded!\n"
    auth = json.loads((rl_state.runtime_dir / "containers/auth.json").read_text())
    assert host in auth["auths"]
    rl("push", "-q", "--tls-verify=false", local, ref, check=True)
    rl("rmi", local, check=True)
    rl("pull", "-q", "--tls-verify=false", ref, check=True)
    assert rl("run", "--rm", ref, check=True).stdout == "from registry\n"
    assert rl("logout", host, check=True).stdout == f"Removed login credentials for {host}\n"
    assert "not logged in" in one_line_error(rl("logout", host), 125)
    assert "rl login" in one_line_error(rl("pull", "-q", "--tls-verify=false", ref), 125)
    one_line_error(rl("login", "-u", "alice", host), 125)  # no password and no terminal
    one_line_error(rl("login", "-u", "a", "-p", "b", "bad host!"), 125)
    one_line_error(rl("logout"), 125)
    # docker's config.json is read too.
    docker_cfg = rl_state.base / "dockercfg"
    docker_cfg.mkdir(exist_ok=True)
    import base64

    (docker_cfg / "config.json").write_text(json.dumps({"auths": {host: {
        "auth": base64.b64encode(b"alice:s3cret").decode()}}}))
    env = {**os.environ, **rl_state.env(), "DOCKER_CONFIG": str(docker_cfg)}
    r = subprocess.run([str(rl("--version").args[0]), "pull", "-q", "--tls-verify=false", ref],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# -- Bearer tokens: docker-registry with token auth, and a token server of the test's own ----


def _b64url(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """The auth service of the token specification: Basic credentials in, a signed JWT out."""

    def __init__(self, base: Path) -> None:
        import datetime
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rl-test-token")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .sign(self.key, hashes.SHA256()))
        self.cert_path = base / "token.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                import base64
                from urllib.parse import parse_qs, urlparse

                q = parse_qs(urlparse(self.path).query)
                server.requests.append(self.path)
                auth = self.headers.get("Authorization", "")
                ok = auth == "Basic " + base64.b64encode(b"bob:hunter2").decode()
                if not ok:
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"token": server.token(q.get("scope", []))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def token(self, scopes: list[str]) -> str:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        der = self.cert.public_bytes(serialization.Encoding.DER)
        import base64

        header = {"alg": "ES256", "typ": "JWT", "x5c": [base64.b64encode(der).decode()]}
        claims = {"iss": "rl-test-issuer", "sub": "bob", "aud": "rl-test", "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing = (_b64url(json.dumps(header).encode()) + "."
                   + _b64url(json.dumps(claims).encode()))
        r, s = decode_dss_signature(self.key.sign(signing.encode(), ec.ECDSA(hashes.SHA256())))
        return signing + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def close(self) -> None:
        self.httpd.shutdown()


def test_bearer_token_auth(rl: RlRunner, local: str, tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    tokens = TokenServer(tmp_path)
    port = free_port()
    base = tmp_path / "tokreg"
    base.mkdir()
    config = base / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {base / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        f"auth:\n  token:\n    realm: {tokens.url}\n    service: rl-test\n"
        f"    issuer: rl-test-issuer\n    rootcertbundle: {tokens.cert_path}\n")
    proc = subprocess.Popen([REGISTRY, "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=open(base / "log", "wb"))  # noqa: SIM115
    try:
        for _ in range(200):
            try:
                httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        host = f"127.0.0.1:{port}"
        ref = f"{host}/tok/{local}:1"
        assert "token server refused" in one_line_error(
            rl("push", "-q", "--tls-verify=false", local, ref), 125)
        rl("login", "--tls-verify=false", "-u", "bob", "--password-stdin", host,
           input="hunter2\n", check=True)
        rl("push", "-q", "--tls-verify=false", local, ref, check=True)
        rl("push", "--tls-verify=false", local, f"{host}/tok2/{local}:1", check=True)
        rl("rmi", local, check=True)
        rl("pull", "-q", "--tls-verify=false", ref, check=True)
        assert rl("run", "--rm", ref, check=True).stdout == "from registry\n"
        # The token requests carried service and scopes, one parameter each.
        assert any("scope=repository%3Atok%2F" in r and "service=rl-test" in r
                   for r in tokens.requests), tokens.requests
        assert any(r.count("scope=") == 2 for r in tokens.requests), tokens.requests
        rl("logout", host, check=True)
    finally:
        proc.kill()
        proc.wait()
        tokens.close()


def test_kill_9_during_pull_breaks_nothing(rl: RlRunner, registry: Registry, local: str,
                                           rl_path: Path, rl_state: RlState,
                                           tmp_path: Path) -> None:
    import io
    import signal
    import tarfile

    from test_archive import docker_archive

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("big")
        info.size = 80 << 20
        tf.addfile(info, io.BytesIO(os.urandom(info.size)))
    base = json.loads(rl("image", "inspect", local, check=True).stdout)[0]["RootFS"]["Layers"]
    assert len(base) == 1
    rl("save", "-o", tmp_path / "base.tar", local, check=True)
    with tarfile.open(tmp_path / "base.tar") as tf:
        base_layer = tf.extractfile(f"{base[0][7:]}.tar").read()  # type: ignore[union-attr]
    arch = docker_archive(tmp_path / "big.tar", [base_layer, buf.getvalue()],
                          [f"killme{local}:1"])
    rl("load", "-q", "-i", arch, check=True)
    ref = f"{registry.host}/kill/{local}:1"
    rl("push", "-q", "--tls-verify=false", f"killme{local}:1", ref, check=True)
    rl("rmi", f"killme{local}:1", check=True)
    root = storage(rl_state.data_home)
    env = {**os.environ, **rl_state.env()}
    proc = subprocess.Popen([str(rl_path), "pull", "-q", "--tls-verify=false", ref], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    busy: list[str] = []
    while time.monotonic() < deadline and proc.poll() is None:
        busy = [n for d in ("blobs/sha256", "layers") for n in os.listdir(root / d)
                if n.startswith((".partial", ".tmp"))]
        if busy:
            break
        time.sleep(0.002)
    assert busy, "the pull ended before it could be killed half-way"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)  # an orphaned unpack child notices its parent is gone
    r = rl("pull", "-q", "--tls-verify=false", ref, check=True)
    assert r.stdout.startswith("sha256:")
    out = rl("run", "--rm", ref, "sh", "-c", "wc -c < /big", check=True).stdout
    assert out.strip() == str(80 << 20)
    rl("rmi", ref, check=True)
    rl("image", "prune", check=True)
    left = [n for d in ("blobs/sha256", "layers", "containers") for n in os.listdir(root / d)
            if n.startswith(".")]
    assert not left


def test_progress_bars_on_a_terminal(rl: RlRunner, registry: Registry, local: str,
                                     rl_path: Path) -> None:
    from test_tty import Terminal

    # A layer of its own, so that the pull must download it.
    cid = rl("create", local, "sh", "-c", "head -c 200000 /dev/urandom > /r",
             check=True).stdout.strip()
    rl("start", "-a", cid, check=True)
    rl("commit", cid, f"{local}-bars", check=True)
    rl("rm", cid, check=True)
    ref = f"{registry.host}/bars/{local}:1"
    r = rl("push", "--tls-verify=false", f"{local}-bars", ref, check=True)
    assert "━" not in r.stderr  # not a terminal: plain lines
    assert "Copying blob" in r.stderr
    rl("rmi", f"{local}-bars", check=True)

    def everything(argv: list[str]) -> bytes:
        term = Terminal(argv)
        out = b""
        while True:
            try:
                chunk = os.read(term.fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            out += chunk
        assert term.wait() == 0, out
        return out

    out = everything([str(rl_path), "pull", "--tls-verify=false", ref])
    assert "━".encode() in out and b"Copying blob" in out and b"done" in out
    assert b"\nsha256:" in out
    rl("rmi", ref, check=True)
    out = everything([str(rl_path), "pull", "-q", "--tls-verify=false", ref])
    assert b"Copying" not in out and out.startswith(b"sha256:")
