"""`rl cp`: docker's path rules both ways, running and stopped containers, tars on
stdin/stdout, -a and -L, docker's errors, and containers that attack the copy
with symlinks (planted, and swapped while it runs)."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from imagetools import add_entry, add_file, rootfs_tar

import support
from support import RlRunner

IMAGE = "cpbox"


def one_error(r: subprocess.CompletedProcess[str], code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def image(rootfs: Path, tmp_path_factory: pytest.TempPathFactory,
          rl_path: Path) -> str:
    support.require_userns()

    def extra(tf: tarfile.TarFile) -> None:
        add_entry(tf, "./data", tarfile.DIRTYPE)
        add_entry(tf, "./data/sub", tarfile.DIRTYPE)
        add_file(tf, "./data/a.txt", b"alpha\n")
        add_file(tf, "./data/sub/b.txt", b"beta\n", mode=0o600)
        add_file(tf, "./data/owned", b"mine\n", uid=1000, gid=1000, mode=0o640)
        add_entry(tf, "./data/link", tarfile.SYMTYPE, linkname="a.txt")

    tar = rootfs_tar(rootfs, tmp_path_factory.mktemp("cpimg") / "img.tar", extra=extra)
    subprocess.run([str(rl_path), "import", "-c", 'CMD ["sh"]', str(tar), IMAGE], check=True,
                   capture_output=True)
    return IMAGE


@pytest.fixture
def stopped(rl: RlRunner, image: str) -> Iterator[str]:
    name = f"cps-{os.urandom(3).hex()}"
    rl("create", "--name", name, image, "true", check=True)
    yield name
    rl("rm", "-f", name)


@pytest.fixture
def running(rl: RlRunner, image: str) -> Iterator[str]:
    name = f"cpr-{os.urandom(3).hex()}"
    rl("run", "-d", "--name", name, image, "sleep", "1000", check=True)
    yield name
    rl("rm", "-f", name)


def test_out_of_a_stopped_container_by_docker_rules(rl: RlRunner, stopped: str,
                                                     tmp_path: Path) -> None:
    # a file to a new name, into a directory, onto a file
    rl("cp", f"{stopped}:/data/a.txt", tmp_path / "new.txt", check=True)
    assert (tmp_path / "new.txt").read_text() == "alpha\n"
    (tmp_path / "into").mkdir()
    rl("cp", f"{stopped}:data/a.txt", tmp_path / "into", check=True)  # no leading / needed
    assert (tmp_path / "into/a.txt").read_text() == "alpha\n"
    rl("cp", f"{stopped}:/data/sub/b.txt", tmp_path / "new.txt", check=True)
    assert (tmp_path / "new.txt").read_text() == "beta\n"
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "new.txt").stat().st_uid == os.getuid()  # the caller's, without -a
    # a file to a missing directory given with a trailing /
    assert "must exist" in one_error(rl("cp", f"{stopped}:/data/a.txt",
                                        f"{tmp_path}/nodir/"), 1)
    # a directory to a new name: made, with the contents
    rl("cp", f"{stopped}:/data", tmp_path / "copy", check=True)
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == [
        "a.txt", "link", "owned", "sub"]
    assert os.readlink(tmp_path / "copy/link") == "a.txt"  # a link stays a link
    # into an existing directory: nested; with /. only the contents
    rl("cp", f"{stopped}:/data", tmp_path / "into", check=True)
    assert (tmp_path / "into/data/sub/b.txt").read_text() == "beta\n"
    (tmp_path / "flat").mkdir()
    rl("cp", f"{stopped}:/data/.", tmp_path / "flat", check=True)
    assert (tmp_path / "flat/sub/b.txt").read_text() == "beta\n"
    # a directory onto a file; a file named with a trailing /
    assert "directory to a file" in one_error(rl("cp", f"{stopped}:/data",
                                                 tmp_path / "new.txt"), 1)
    assert "not a directory" in one_error(rl("cp", f"{stopped}:/data/a.txt/",
                                             tmp_path), 1)
    # -L copies what a link points to, under the link's name
    rl("cp", "-L", f"{stopped}:/data/link", tmp_path / "followed", check=True)
    assert (tmp_path / "followed").read_text() == "alpha\n"


def test_docker_errors(rl: RlRunner, stopped: str, tmp_path: Path) -> None:
    line = one_error(rl("cp", f"{stopped}:/nope", tmp_path), 1)
    assert line == f"Error: Could not find the file /nope in container {stopped}"
    assert one_error(rl("cp", "nosuchctr:/etc", tmp_path), 1) == (
        "Error: no such container: nosuchctr")
    assert "at least one container" in one_error(rl("cp", tmp_path, "./rel"), 1)
    assert "between containers" in one_error(rl("cp", f"{stopped}:/a", f"{stopped}:/b"), 1)
    assert "no such file" in one_error(rl("cp", tmp_path / "missing", f"{stopped}:/tmp"), 1)
    assert "Could not find" in one_error(
        rl("cp", tmp_path, f"{stopped}:/no/such/parent"), 1)


def test_into_a_stopped_container_then_out_again(rl: RlRunner, stopped: str,
                                                 tmp_path: Path) -> None:
    src = tmp_path / "tree"
    (src / "deep/er").mkdir(parents=True)
    (src / "deep/er/f").write_text("deep\n")
    (src / "top").write_text("top\n")
    os.chmod(src / "top", 0o751)
    rl("cp", src, f"{stopped}:/data", check=True)  # existing dir: into it, as tree/
    rl("cp", f"{src}/.", f"{stopped}:/data/sub", check=True)  # contents only
    rl("cp", src / "top", f"{stopped}:/data/a.txt", check=True)  # onto a file
    rl("cp", src, f"{stopped}:/newdir", check=True)  # a new name: the contents there
    out = tmp_path / "back"
    rl("cp", f"{stopped}:/", out, check=True)
    assert (out / "data/tree/deep/er/f").read_text() == "deep\n"
    assert (out / "data/sub/deep/er/f").read_text() == "deep\n"
    assert (out / "data/sub/b.txt").read_text() == "beta\n"  # merged, not replaced
    assert (out / "data/a.txt").read_text() == "top\n"
    assert (out / "data/a.txt").stat().st_mode & 0o777 == 0o751
    assert (out / "newdir/top").read_text() == "top\n"
    # the container sees them as its root's when it starts
    r = rl("start", "-a", stopped)
    assert r.returncode == 0, r.stderr


def test_running_container_both_ways(rl: RlRunner, running: str, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("from host\n")
    rl("cp", tmp_path / "in.txt", f"{running}:/tmp/", check=True)
    out = rl("exec", running, "sh", "-c", "cat /tmp/in.txt; stat -c '%u:%g' /tmp/in.txt",
             check=True).stdout
    assert out == "from host\n0:0\n"
    rl("exec", running, "sh", "-c", "mkdir -p /tmp/made && echo live > /tmp/made/f", check=True)
    rl("cp", f"{running}:/tmp/made", tmp_path / "made", check=True)
    assert (tmp_path / "made/f").read_text() == "live\n"


def test_tar_on_stdout_and_stdin(rl: RlRunner, running: str, tmp_path: Path,
                                 rl_path: Path) -> None:
    out = subprocess.run([str(rl_path), "cp", f"{running}:/data", "-"], capture_output=True,
                         check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(out)) as tf:
        names = tf.getnames()
        assert "data/sub/b.txt" in names and "data" in names
        member = tf.extractfile("data/a.txt")
        assert member is not None and member.read() == b"alpha\n"
        assert tf.getmember("data/owned").uid == 1000  # the container's ids
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        add_entry(tf, "pkg", tarfile.DIRTYPE)
        add_file(tf, "pkg/conf", b"streamed\n", uid=1000, gid=1000)
        add_entry(tf, "pkg/hard", tarfile.LNKTYPE, linkname="pkg/conf")
    subprocess.run([str(rl_path), "cp", "-", f"{running}:/tmp"], input=buf.getvalue(),
                   check=True, capture_output=True)
    subprocess.run([str(rl_path), "cp", "-a", "-", f"{running}:/data"], input=buf.getvalue(),
                   check=True, capture_output=True)
    got = rl("exec", running, "sh", "-c", "cat /tmp/pkg/hard; stat -c '%u %h' /tmp/pkg/conf "
             "/data/pkg/conf", check=True).stdout.split("\n")
    assert got[:3] == ["streamed", "0 2", "1000 2"]
    # a tar that climbs out is refused
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tf:
        add_file(tf, "../../escape", b"x")
    r = subprocess.run([str(rl_path), "cp", "-", f"{running}:/tmp"], input=evil.getvalue(),
                       capture_output=True, text=False)
    assert r.returncode == 1 and b"leads out" in r.stderr


def test_archive_mode_keeps_owners(rl: RlRunner, stopped: str, tmp_path: Path) -> None:
    support.require_newidmap()
    base = support.subid_ranges("uid")[0].start
    rl("cp", f"{stopped}:/data/owned", tmp_path / "plain", check=True)
    assert (tmp_path / "plain").stat().st_uid == os.getuid()
    rl("cp", "-a", f"{stopped}:/data/owned", tmp_path / "kept", check=True)
    st = (tmp_path / "kept").stat()
    assert st.st_uid == base + 999  # container uid 1000 is subordinate id 1000-1
    assert st.st_mode & 0o777 == 0o640


# -- attacks from inside ------------------------------------------------------------------


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "host-canary"
    d.mkdir()
    (d / "secret").write_text("HOST SECRET\n")
    before = sorted(os.listdir(d))
    yield d
    assert sorted(os.listdir(d)) == before, "rl cp wrote outside the container"
    assert (d / "secret").read_text() == "HOST SECRET\n"


def test_planted_symlinks_resolve_inside_the_root(rl: RlRunner, running: str, canary: Path,
                                                  tmp_path: Path) -> None:
    # /evil leads to the host's canary directory by its host path, /up climbs
    rl("exec", running, "sh", "-c", f"ln -s {canary} /evil; ln -s ../../../../.. /data/up",
       check=True)
    (tmp_path / "payload").write_text("payload\n")
    r = rl("cp", tmp_path / "payload", f"{running}:/evil/payload")
    assert r.returncode == 1 and "Could not find" in r.stderr  # no such dir in the container
    r = rl("cp", f"{running}:/evil/secret", tmp_path / "stolen")
    assert r.returncode == 1 and not (tmp_path / "stolen").exists()
    # through /data/up: the container's own root
    rl("cp", tmp_path / "payload", f"{running}:/data/up/tmp/", check=True)
    assert rl("exec", running, "cat", "/tmp/payload", check=True).stdout == "payload\n"
    rl("cp", f"{running}:/data/up/etc/passwd", tmp_path / "passwd", check=True)
    assert "root:" in (tmp_path / "passwd").read_text()
    # the link itself copied out is a link, and copying out through it stays inside
    rl("cp", f"{running}:/evil", tmp_path / "evil", check=True)
    assert os.readlink(tmp_path / "evil") == str(canary)


def test_swapping_symlinks_while_rl_copies(rl: RlRunner, image: str, canary: Path,
                                           tmp_path: Path) -> None:
    # The container swaps /x, and /data/sub inside a tree being copied, between a real
    # directory and symlinks to / and to the host's canary directory, as fast as it can.
    name = f"cpswap-{os.urandom(3).hex()}"
    loop = ("while :; do rm -rf /x; mkdir -p /x; echo inside > /x/secret; rm -rf /x; "
            f"ln -sfn / /x; rm -f /x; ln -s {canary} /x; "
            "rm -rf /data/sub; mkdir /data/sub; echo in > /data/sub/secret; rm -rf /data/sub; "
            f"ln -s {canary} /data/sub; done")
    rl("run", "-d", "--name", name, image, "sh", "-c", loop, check=True)
    try:
        src = tmp_path / "src"
        (src / "sub").mkdir(parents=True)
        (src / "secret").write_text("overwrite\n")
        (src / "sub/secret").write_text("overwrite\n")
        results = []
        for i in range(25):
            out = tmp_path / f"out{i}"
            results.append(rl("cp", f"{name}:/x/secret", out).returncode)
            if out.exists() and not out.is_symlink():
                assert "HOST SECRET" not in out.read_text()
            tree = tmp_path / f"tree{i}"
            rl("cp", f"{name}:/data", tree)
            for p in tree.rglob("*") if tree.exists() else []:
                if p.is_file() and not p.is_symlink():
                    assert "HOST SECRET" not in p.read_text()
            rl("cp", src / "secret", f"{name}:/x/secret")
            rl("cp", f"{src}/.", f"{name}:/x")
            rl("cp", src, f"{name}:/data/sub")
            rl("cp", f"{src}/.", f"{name}:/data")
        assert set(results) <= {0, 1}  # failed or copied inside, never anything else
    finally:
        rl("rm", "-f", name)


def test_a_stopped_containers_volume_is_written(rl: RlRunner, image: str,
                                                tmp_path: Path) -> None:
    name = f"cpv-{os.urandom(3).hex()}"
    rl("create", "--name", name, "-v", f"{name}:/vol", image, "true", check=True)
    try:
        (tmp_path / "f").write_text("into the volume\n")
        rl("cp", tmp_path / "f", f"{name}:/vol/f", check=True)
        out = rl("run", "--rm", "-v", f"{name}:/vol", image, "cat", "/vol/f", check=True).stdout
        assert out == "into the volume\n"
    finally:
        rl("rm", "-f", name)
        rl("volume", "rm", name)


def test_the_resolver_without_openat2_stays_in_the_root(tmp_path: Path) -> None:
    # the fallback for kernels before 5.6, on a real tree: absolute and climbing links
    from rootless.engine.copy import _walk_in_root

    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/inside").write_text("in\n")
    (tmp_path / "outside").write_text("out\n")
    os.symlink("/", root / "abs")
    os.symlink("../../../../..", root / "etc/up")
    os.symlink(str(tmp_path), root / "host")
    rfd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        for path in ("abs/etc/inside", "etc/up/etc/inside", "../../etc/inside"):
            fd = _walk_in_root(rfd, path, os.O_RDONLY)
            with os.fdopen(fd) as f:
                assert f.read() == "in\n"
        for path in ("host/outside", "abs/../outside", "etc/up/outside"):
            with pytest.raises(FileNotFoundError):
                os.close(_walk_in_root(rfd, path, os.O_RDONLY))
    finally:
        os.close(rfd)


def test_vfs_storage_and_the_container_spelling(rl: RlRunner, image: str,
                                               tmp_path: Path) -> None:
    name = f"cpvfs-{os.urandom(3).hex()}"
    rl("create", "--storage-driver", "vfs", "--name", name, image, "cat", "/data/in", check=True)
    try:
        (tmp_path / "in").write_text("vfs\n")
        rl("container", "cp", tmp_path / "in", f"{name}:/data/in", check=True)
        assert rl("start", "-a", name, check=True).stdout == "vfs\n"
        rl("container", "cp", f"{name}:/data/sub", tmp_path / "sub", check=True)
        assert (tmp_path / "sub/b.txt").read_text() == "beta\n"
        diff = rl("diff", name, check=True).stdout.split("\n")
        assert "A /data/in" in diff and not any("/dev/" in line for line in diff)
    finally:
        rl("rm", "-f", name)
