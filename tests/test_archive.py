"""rl save / rl load: docker-archive and oci-archive, both ways with podman and skopeo."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from imagetools import add_entry, add_file, layer_tar, rootfs_tar, store_files
from test_images import one_line_error

import support
from support import RlRunner, RlState


@pytest.fixture(autouse=True)
def _host() -> None:
    support.require_userns()
    support.require_newidmap()
    support.require_busybox()


@pytest.fixture(scope="module")
def base_tar(rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rootfs_tar(rootfs, tmp_path_factory.mktemp("arch") / "base.tar", compress="")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def docker_archive(dest: Path, layers: list[bytes], tags: list[str],
                   config_extra: dict[str, object] | None = None) -> Path:
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Cmd": ["sh"], "Env": ["PATH=/bin:/usr/bin"]},
              "rootfs": {"type": "layers", "diff_ids": [sha(x) for x in layers]},
              **(config_extra or {})}
    cfg = json.dumps(config).encode()
    with tarfile.open(dest, "w") as tf:
        _add(tf, f"{sha(cfg)[7:]}.json", cfg)
        for x in layers:
            _add(tf, f"{sha(x)[7:]}/layer.tar", x)
        _add(tf, "manifest.json", json.dumps([{
            "Config": f"{sha(cfg)[7:]}.json", "RepoTags": tags,
            "Layers": [f"{sha(x)[7:]}/layer.tar" for x in layers]}]).encode())
    return dest


def oci_archive(dest: Path, layer: bytes, ref: str = "localhost/oci:latest",
                layer_type: str = "application/vnd.oci.image.layer.v1.tar+gzip",
                config_bytes: bytes | None = None, tamper: bool = False,
                platform: str | None = None) -> Path:
    blob = gzip.compress(layer)
    cfg = config_bytes if config_bytes is not None else json.dumps(
        {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
         "rootfs": {"type": "layers", "diff_ids": [sha(layer)]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(cfg), "size": len(cfg)},
        "layers": [{"mediaType": layer_type, "digest": sha(blob), "size": len(blob)}]}).encode()
    desc: dict[str, object] = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "digest": sha(manifest), "size": len(manifest),
                               "annotations": {"org.opencontainers.image.ref.name": ref}}
    blobs = {sha(cfg): cfg, sha(blob): blob if not tamper else blob[:-10] + b"0" * 10,
             sha(manifest): manifest}
    if platform:
        nested = json.dumps({"schemaVersion": 2,
                             "mediaType": "application/vnd.oci.image.index.v1+json",
                             "manifests": [{**desc, "platform": {
                                 "os": "linux", "architecture": platform}}]}).encode()
        blobs[sha(nested)] = nested
        desc = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha(nested),
                "size": len(nested), "annotations": {"org.opencontainers.image.ref.name": ref}}
    with tarfile.open(dest, "w") as tf:
        _add(tf, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        for d, data in blobs.items():
            _add(tf, f"blobs/sha256/{d[7:]}", data)
        _add(tf, "index.json", json.dumps({"schemaVersion": 2, "manifests": [desc]}).encode())
    return dest


def test_save_load_roundtrip_both_formats(rl: RlRunner, base_tar: Path, tmp_path: Path) -> None:
    rl("import", "-c", 'CMD ["echo", "round"]', base_tar, "roundtrip", check=True)
    for fmt, out in (("docker-archive", "d.tar"), ("oci-archive", "o.tar.gz")):
        path = tmp_path / out
        r = rl("save", "--format", fmt, "-o", path, "roundtrip", check=True)
        assert "Copying blob" in r.stderr
        if out.endswith(".gz"):
            assert path.read_bytes()[:2] == b"\x1f\x8b"
        rl("rmi", "roundtrip", check=True)
        r = rl("load", "-q", "-i", path, check=True)
        assert r.stdout == "Loaded image: localhost/roundtrip:latest\n"
        assert r.stderr == ""
        assert rl("run", "--rm", "roundtrip", check=True).stdout == "round\n"
    # stdin and stdout work too.
    data = subprocess.run([*rl("save", "--help").args[:1], "save", "roundtrip"],
                          capture_output=True, check=True).stdout
    rl("rmi", "roundtrip", check=True)
    assert rl("load", input=data, check=True).stdout == "Loaded image: localhost/roundtrip:latest\n"


def test_layers_whiteouts_and_opaque_dirs(rl: RlRunner, base_tar: Path, tmp_path: Path) -> None:
    def lower(tf: tarfile.TarFile) -> None:
        add_entry(tf, "a", tarfile.DIRTYPE)
        add_file(tf, "a/x", b"x")
        add_file(tf, "a/y", b"y")
        add_entry(tf, "b", tarfile.DIRTYPE)
        add_file(tf, "b/z", b"z")
        add_file(tf, "b/keep", b"k")
        add_file(tf, "c", b"file c")
        add_entry(tf, "lnk", tarfile.SYMTYPE, "b")

    def upper(tf: tarfile.TarFile) -> None:
        add_entry(tf, "a", tarfile.DIRTYPE)
        add_file(tf, "a/.wh..wh..opq")
        add_file(tf, "a/new", b"new")
        add_entry(tf, "b", tarfile.DIRTYPE)
        add_file(tf, "b/.wh.z")
        add_entry(tf, "c", tarfile.DIRTYPE)
        add_file(tf, "c/inner", b"inner")
        add_entry(tf, "lnk", tarfile.DIRTYPE)
        add_file(tf, "lnk/own", b"own")

    layers = [base_tar.read_bytes(), layer_tar(tmp_path / "l.tar", lower).read_bytes(),
              layer_tar(tmp_path / "u.tar", upper).read_bytes()]
    arch = docker_archive(tmp_path / "multi.tar", layers, ["multi:1"])
    assert rl("load", "-i", arch, check=True).stdout == "Loaded image: docker.io/library/multi:1\n"
    r = rl("run", "--rm", "multi:1", "sh", "-c",
           "ls /a; echo --; ls /b; echo --; cat /c/inner; echo; ls /lnk; "
           "test -L /lnk || echo notlink", check=True)
    assert r.stdout.split() == ["new", "--", "keep", "--", "inner", "own", "notlink"]
    assert len(rl("history", "multi:1", check=True).stdout.splitlines()) == 4


def test_podman_archives_load_in_rl_and_back(rl: RlRunner, base_tar: Path,
                                             tmp_path: Path) -> None:
    support.require(shutil.which("podman") is not None, "podman not installed")
    support.require(shutil.which("runc") is not None, "runc not installed")
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="rlpd-", dir="/tmp"))  # podman: runroot < 50 chars
    podman = ["podman", "--runtime=runc", "--root", str(root / "root"), "--runroot",
              str(root / "run"), "--storage-driver", "vfs", "--cgroup-manager=cgroupfs",
              "--events-backend=file"]
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "pcfg")}

    def pm(*args: str | Path) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([*podman, *map(str, args)], capture_output=True, text=True,
                           env=env, timeout=120, check=False)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r

    try:
        pm("import", "--change", "CMD echo from-podman", base_tar, "localhost/frompodman:v1")
        pm("save", "-o", tmp_path / "pd.tar", "localhost/frompodman:v1")
        pm("save", "--format", "oci-archive", "-o", tmp_path / "po.tar",
           "localhost/frompodman:v1")
        for arch in ("pd.tar", "po.tar"):
            r = rl("load", "-i", tmp_path / arch, check=True)
            assert r.stdout == "Loaded image: localhost/frompodman:v1\n"
            assert rl("run", "--rm", "frompodman:v1", check=True).stdout == "from-podman\n"
            rl("rmi", "frompodman:v1", check=True)
        # Both archives of one image, loaded one after the other: one image, one
        # row (their manifests differ in layer compression only), and rmi of its
        # ID leaves no <none> row behind.
        rl("load", "-i", tmp_path / "pd.tar", check=True)
        rl("tag", "frompodman:v1", "frompodman:other", check=True)
        rl("load", "-i", tmp_path / "po.tar", check=True)
        rows = rl("images", "--format", "{{.ID}} {{.Tag}}", "frompodman",
                  check=True).stdout.splitlines()
        iid = rows[0].split()[0]
        assert sorted(rows) == [f"{iid} other", f"{iid} v1"]
        out = rl("rmi", "-f", iid, check=True).stdout
        assert "Deleted: sha256:" in out
        assert rl("images", "-q", "--no-trunc", check=True).stdout.count(iid) == 0
        # skopeo converts formats; rl reads what it writes.
        if shutil.which("skopeo"):
            subprocess.run(["skopeo", "copy", "--quiet", f"docker-archive:{tmp_path / 'pd.tar'}",
                            f"oci-archive:{tmp_path / 'sk.tar'}:localhost/viaskopeo:1"],
                           check=True, capture_output=True, env=env, timeout=120)
            rl("load", "-i", tmp_path / "sk.tar", check=True)
            assert rl("run", "--rm", "viaskopeo:1", check=True).stdout == "from-podman\n"
        # And the other way: archives rl writes load and run in podman.
        rl("import", "-c", 'CMD ["echo", "from-rl"]', base_tar, "fromrl:v2", check=True)
        rl("save", "-o", tmp_path / "rd.tar", "fromrl:v2", check=True)
        rl("save", "--format", "oci-archive", "-o", tmp_path / "ro.tar.gz", "fromrl:v2",
           check=True)
        for arch in ("rd.tar", "ro.tar.gz"):
            assert "localhost/fromrl:v2" in pm("load", "-i", tmp_path / arch).stdout
            assert pm("run", "--rm", "--net=none", "localhost/fromrl:v2").stdout == "from-rl\n"
            pm("rmi", "localhost/fromrl:v2")
    finally:
        subprocess.run(["podman", "unshare", "rm", "-rf", str(root)], env=env,
                       capture_output=True, check=False)
        support.remove_tree(root)


def test_load_wrong_uses_leave_nothing(rl: RlRunner, base_tar: Path, tmp_path: Path,
                                       rl_state: RlState) -> None:
    layer = base_tar.read_bytes()
    good = oci_archive(tmp_path / "good.tar", layer)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"no tar here" * 1000)
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w") as tf:
        _add(tf, "README", b"hi")
    cases = {
        "missing": (tmp_path / "missing.tar", "no such file"),
        "junk": (junk, "not a tar archive"),
        "truncated": (cut, ""),
        "neither": (empty, "neither a docker-archive nor an oci-archive"),
        "wrong-digest": (oci_archive(tmp_path / "t.tar", layer, tamper=True), "digest"),
        "media-type": (oci_archive(tmp_path / "m.tar", layer, layer_type="text/plain"),
                       "unsupported layer media type"),
        "bad-config": (oci_archive(tmp_path / "c.tar", layer, config_bytes=b"{not json"),
                       "not valid JSON"),
        "platform": (oci_archive(tmp_path / "p.tar", layer, platform="s390x"),
                     "no image for platform"),
        "bad-diff-id": (docker_archive(tmp_path / "dd.tar", [layer], ["dd:1"], {
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]}}),
            "does not match its diff_id"),
    }
    before = store_files(rl_state.data_home)
    for name, (path, expected) in cases.items():
        msg = one_line_error(rl("load", "-q", "-i", path), 125)
        assert expected in msg, (name, msg)
        assert store_files(rl_state.data_home) == before, name
    one_line_error(rl("save", "-o", tmp_path / "x.tar", "nosuchimage"), 1)
    assert not (tmp_path / "x.tar").exists()
    rl("load", "-i", good, check=True)
    one_line_error(rl("save", "--format", "bogus", "-o", tmp_path / "x.tar", "oci"), 125)
    assert not list(tmp_path.glob("x.tar*"))
