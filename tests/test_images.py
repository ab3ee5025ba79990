"""Images: the store, import/export/commit, rl run IMAGE, and the image management commands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from imagetools import add_entry, add_file, layer_tar, rootfs_tar, storage, store_files

import support
from support import RlRunner, RlState


@pytest.fixture(autouse=True)
def _host() -> None:
    support.require_userns()
    support.require_newidmap()
    support.require_busybox()


@pytest.fixture(scope="session")
def rootfs_tgz(rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    def extra(tf: tarfile.TarFile) -> None:
        add_file(tf, "./usr/bin/suid-file", b"#!/bin/sh\n", mode=0o4755)
        add_file(tf, "./home/user/owned", b"mine\n", uid=1000, gid=1000)
        add_file(tf, "./etc/motd", b"hello\n")
        add_entry(tf, "./etc/motd-link", tarfile.LNKTYPE, "./etc/motd")

    return rootfs_tar(rootfs, tmp_path_factory.mktemp("tars") / "busybox.tar.gz", extra=extra)


_counter = iter(range(10_000))


@pytest.fixture
def bb(rl: RlRunner, rootfs_tgz: Path) -> str:
    """A freshly imported busybox image with a default command; its name."""
    name = f"bb{next(_counter)}-{os.getpid()}"
    rl("import", "-c", 'CMD ["echo", "default", "cmd"]', "-c", "ENV FROM_IMAGE=yes",
       rootfs_tgz, name, check=True)
    return name


def one_line_error(r: object, code: int) -> str:
    assert isinstance(r, subprocess.CompletedProcess)
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    return str(lines[0])


# -- rl run IMAGE ----------------------------------------------------------------------


def test_run_image_uses_cmd_env_and_overrides(rl: RlRunner, bb: str) -> None:
    r = rl("run", "--rm", bb, check=True)
    assert r.stdout == "default cmd\n"
    r = rl("run", "--rm", "-e", "EXTRA=1", bb, "sh", "-c", "echo $FROM_IMAGE $EXTRA $PATH",
           check=True)
    assert r.stdout.split()[:2] == ["yes", "1"]
    assert "/usr/bin" in r.stdout
    r = rl("run", "--rm", "-e", "FROM_IMAGE=overridden", bb, "sh", "-c", "echo $FROM_IMAGE",
           check=True)
    assert r.stdout == "overridden\n"


def test_entrypoint_workdir_user_stopsignal_from_image(rl: RlRunner, bb: str) -> None:
    name = f"{bb}-ep"
    rl("commit", "-c", 'ENTRYPOINT ["echo", "ep"]', "-c", 'CMD ["c1"]', "-c", "WORKDIR /tmp",
       "-c", "USER 1000", "-c", "STOPSIGNAL SIGUSR1",
       rl("create", bb, check=True).stdout.strip(), name, check=True)
    assert rl("run", "--rm", name, check=True).stdout == "ep c1\n"
    assert rl("run", "--rm", name, "a", "b", check=True).stdout == "ep a b\n"
    # --entrypoint replaces the image's Entrypoint and drops its Cmd.
    r = rl("run", "--rm", "--entrypoint", "sh", name, "-c", "pwd; id -u", check=True)
    assert r.stdout.split() == ["/tmp", "1000"]
    r = rl("run", "--rm", "--entrypoint", "pwd", "-w", "/", "-u", "0", name, check=True)
    assert r.stdout == "/\n"
    cid = rl("create", name, check=True).stdout.strip()
    info = json.loads(rl("inspect", cid, check=True).stdout)[0]
    assert info["Config"]["StopSignal"] == "SIGUSR1"
    assert info["Config"]["User"] == "1000"
    assert info["Config"]["Entrypoint"] == ["echo", "ep"]
    assert info["Image"] == name
    rl("rm", cid, check=True)


def test_owners_setuid_and_hardlinks_survive(rl: RlRunner, bb: str, rl_state: RlState) -> None:
    r = rl("run", "--rm", bb, "sh", "-c",
           "stat -c '%u:%g %a' /home/user/owned /usr/bin/suid-file; "
           "stat -c %i /etc/motd /etc/motd-link", check=True)
    lines = r.stdout.split("\n")
    assert lines[0] == "1000:1000 644"
    assert lines[1] == "0:0 4755"
    assert lines[2] == lines[3]  # one inode: the hard link survived unpack and copy
    # On the host the layer's files belong to the subordinate range.
    start = support.subid_ranges("uid")[0].start
    owned = list(storage(rl_state.data_home).glob("layers/*/home/user/owned"))
    assert owned and all(p.stat().st_uid == start + 999 for p in owned)


@pytest.mark.parametrize("driver,top", [("overlay", "diff"), ("vfs", "rootfs")])
def test_rm_removes_the_container_storage(rl: RlRunner, bb: str, rl_state: RlState,
                                          driver: str, top: str) -> None:
    cid = rl("run", "-d", "--storage-driver", driver, bb, "sh", "-c",
             "touch /home/user/x; chown 1000 /home/user/x", check=True).stdout.strip()
    rl("wait", cid, check=True)
    own = storage(rl_state.data_home) / "containers" / cid
    assert (own / top / "home/user/x").exists()
    rl("rm", cid, check=True)
    assert not own.exists()
    r = rl("run", "--rm", "--storage-driver", driver, bb, "true", check=True)
    assert r.returncode == 0
    own_dir = storage(rl_state.data_home) / "containers"
    assert cid not in os.listdir(own_dir)
    # (the --rm run's storage goes right after its exit was reported)
    assert support.wait_until(lambda: not [n for n in os.listdir(own_dir) if n[0] == "."])


def test_run_wrong_uses(rl: RlRunner, bb: str, rl_state: RlState) -> None:
    assert "no such image: nosuchimage" in one_line_error(
        rl("run", "--pull=never", "nosuchimage"), 125)
    assert "invalid reference format" in one_line_error(rl("run", "UPPER:x:y"), 125)
    one_line_error(rl("create", "bad//ref"), 125)
    # An image without a command, and none given: nothing is left behind.
    cid = rl("create", bb, "true", check=True).stdout.strip()
    rl("commit", "-c", "CMD []", cid, f"{bb}-nocmd", check=True)
    rl("rm", cid, check=True)
    own_dir = storage(rl_state.data_home) / "containers"
    before = set(os.listdir(own_dir))
    assert "no command specified" in one_line_error(rl("run", f"{bb}-nocmd"), 125)
    one_line_error(rl("run", "--workdir", "relative", bb), 125)
    assert "invalid storage driver 'zfs'" in one_line_error(
        rl("run", "--storage-driver", "zfs", bb, "true"), 125)
    assert set(os.listdir(own_dir)) == before
    one_line_error(rl("run", "--rootfs", "/nonexistent", "true"), 125)


# -- import, export, commit ------------------------------------------------------------


def test_import_plain_and_stdin_and_export_roundtrip(rl: RlRunner, rootfs: Path,
                                                     tmp_path: Path) -> None:
    plain = rootfs_tar(rootfs, tmp_path / "plain.tar", compress="")
    name = f"plain{os.getpid()}"
    image_id = rl("import", plain, name, check=True).stdout.strip()
    assert image_id.startswith("sha256:")
    r = rl("import", "-", f"{name}-stdin", input=plain.read_bytes(), check=True)
    # Same content, same diff_id, same config apart from the time: layers are shared.
    stdin_id = r.stdout.strip()
    a = json.loads(rl("image", "inspect", name, check=True).stdout)[0]
    b = json.loads(rl("image", "inspect", stdin_id, check=True).stdout)[0]
    assert a["RootFS"]["Layers"] == b["RootFS"]["Layers"]
    # docker's history of an import: no CREATED BY, "Imported from -", never
    # the temporary file stdin went through
    rows = rl("history", "--no-trunc", stdin_id, check=True).stdout.splitlines()
    assert len(rows) == 2 and rows[1].rstrip().endswith("Imported from -"), rows
    assert "rl-import-" not in rows[1] and "tmp" not in rows[1]
    cid = rl("create", name, "true", check=True).stdout.strip()
    out = tmp_path / "fs.tar"
    rl("export", "-o", out, cid, check=True)
    with tarfile.open(out) as tf:
        members = {m.name: m for m in tf.getmembers()}
    assert members["bin/busybox"].isreg() and members["bin/busybox"].mode & 0o111
    assert members["home/user"].uid == 1000
    assert "etc/hosts" in members
    rl("rm", cid, check=True)


def test_no_unmapped_users_warning_with_a_subuid_range(rl: RlRunner, bb: str) -> None:
    support.require_newidmap()
    r = rl("run", "--rm", bb, "true", check=True)
    assert "cannot hold" not in r.stderr, r.stderr


def test_commit_records_changes_and_deletions(rl: RlRunner, bb: str) -> None:
    cid = rl("run", "-d", bb, "sh", "-c",
             "echo new > /new-file; rm /etc/motd; rm -r /var/log; mkdir -p /opt/x",
             check=True).stdout.strip()
    assert rl("wait", cid, check=True).stdout.strip() == "0"
    name = f"{bb}-committed"
    rl("commit", "-m", "my change", cid, name, check=True)
    r = rl("run", "--rm", name, "sh", "-c",
           "cat /new-file; ls /etc/motd /var/log 2>&1; test -d /opt/x && echo dir; "
           "cat /etc/motd-link", check=True)
    assert r.stdout.splitlines()[0] == "new"
    assert "No such file" in r.stdout and "dir" in r.stdout
    assert "hello" in r.stdout  # the other hard link still has the content
    hist = rl("history", name, check=True).stdout.splitlines()
    assert len(hist) == 3 and "my change" in hist[1] and "rl commit" in hist[1]
    rl("rm", cid, check=True)
    one_line_error(rl("commit", "nosuchcontainer", "x"), 1)


def test_commit_of_rootfs_container_is_refused(rl: RlRunner, rootfs: Path) -> None:
    cid = rl("create", "--rootfs", rootfs, "true", check=True).stdout.strip()
    assert "not created from an image" in one_line_error(rl("commit", cid, "x"), 125)
    rl("rm", cid, check=True)


def test_import_wrong_uses(rl: RlRunner, tmp_path: Path) -> None:
    one_line_error(rl("import", tmp_path / "missing.tar", "x"), 125)
    one_line_error(rl("import", tmp_path, "x"), 125)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar at all" * 100)
    one_line_error(rl("import", junk, "x"), 125)
    (tmp_path / "ok.tar").write_bytes(b"")
    one_line_error(rl("import", "-c", "FROB x", tmp_path / "ok.tar", "x"), 125)
    one_line_error(rl("import", "-c", "CMD [not json", tmp_path / "ok.tar", "x"), 125)
    one_line_error(rl("import", tmp_path / "ok.tar", "Bad Name"), 125)


# -- names, listing, removal ---------------------------------------------------------------


def test_images_tag_inspect_history(rl: RlRunner, bb: str) -> None:
    rl("tag", bb, f"{bb}:v2", f"example.com/me/{bb}:v3", check=True)
    r = rl("images", check=True)
    lines = [ln.split() for ln in r.stdout.splitlines()]
    assert lines[0][:3] == ["REPOSITORY", "TAG", "IMAGE"]
    mine = {(ln[0], ln[1]) for ln in lines[1:] if bb in ln[0]}
    assert mine == {(f"localhost/{bb}", "latest"), (f"localhost/{bb}", "v2"),
                    (f"example.com/me/{bb}", "v3")}
    ids = {ln[2] for ln in lines[1:] if bb in ln[0]}
    assert len(ids) == 1
    info = json.loads(rl("image", "inspect", f"{bb}:v2", check=True).stdout)[0]
    assert info["Id"].removeprefix("sha256:").startswith(ids.pop())
    assert sorted(info["RepoTags"]) == sorted([f"localhost/{bb}:latest", f"localhost/{bb}:v2",
                                               f"example.com/me/{bb}:v3"])
    assert info["Config"]["Cmd"] == ["echo", "default", "cmd"]
    assert rl("image", "inspect", "-f", "{{.Os}}", bb, check=True).stdout == "linux\n"
    q = rl("images", "-q", check=True).stdout.split()
    assert len(q) == len(set(q))
    r = rl("images", "--format", "json", check=True)  # docker: an object a line
    assert any(json.loads(line)["Repository"] == f"localhost/{bb}"
               for line in r.stdout.splitlines())
    tab = rl("images", "--format", "table {{.Repository}}\t{{.ID}}", bb, check=True)
    head, *body = tab.stdout.splitlines()
    assert head.split() == ["REPOSITORY", "IMAGE", "ID"] and head.index("IMAGE ID") > 0
    assert len(body) == 3 and all(bb in line.split()[0] for line in body)
    assert body[0].index(info["Id"][7:19]) == head.index("IMAGE ID")
    assert rl("history", "-q", bb, check=True).stdout.split()[0] == info["Id"][7:19]
    # `rl inspect` tries containers, then images, as docker's does.
    assert json.loads(rl("inspect", bb, check=True).stdout)[0]["Id"] == info["Id"]
    assert rl("inspect", "--type", "image", "-f", "{{.Id}}", bb, check=True).stdout.strip() \
        == info["Id"]
    assert "no such container: nosuch" in one_line_error(rl("inspect", "nosuch"), 1)
    one_line_error(rl("inspect", "--type", "container", bb), 1)


def test_rmi_untags_then_deletes_and_frees_exactly(rl: RlRunner, bb: str,
                                                   rl_state: RlState) -> None:
    before_other = store_files(rl_state.data_home)
    rl("tag", bb, f"{bb}:two", check=True)
    r = rl("rmi", f"{bb}:two", check=True)
    assert r.stdout.strip() == f"Untagged: localhost/{bb}:two"
    # Another image sharing the layer: removing one must keep what the other uses.
    cid = rl("create", bb, "true", check=True).stdout.strip()
    child = f"{bb}-child"
    rl("commit", "-c", "ENV X=1", cid, child, check=True)
    rl("rm", cid, check=True)
    r = rl("rmi", bb, check=True)
    assert f"Untagged: localhost/{bb}:latest" in r.stdout and "Deleted: sha256:" in r.stdout
    assert rl("run", "--rm", child, "cat", "/etc/motd", check=True).stdout == "hello\n"
    rl("rmi", child, check=True)
    # Nothing new remains, and the shared layer was freed with its last image unless an
    # image of another test uses it too. (A --rm container's storage goes right after
    # its exit was reported, as it is unlisted: wait for it.)
    assert support.wait_until(lambda: store_files(rl_state.data_home) <= before_other), (
        store_files(rl_state.data_home) - before_other)


def test_rmi_refuses_image_in_use_and_wrong_uses(rl: RlRunner, bb: str) -> None:
    cid = rl("create", bb, "true", check=True).stdout.strip()
    assert "in use by container" in one_line_error(rl("rmi", bb), 1)
    rl("rm", cid, check=True)
    rl("rmi", bb, check=True)
    one_line_error(rl("rmi", "nosuch"), 1)
    one_line_error(rl("tag", "nosuch", "x"), 1)
    usage = rl("tag", "nosuch")
    assert usage.returncode == 125 and usage.stderr.startswith("Error: Missing argument")
    one_line_error(rl("history", "nosuch"), 1)
    one_line_error(rl("image", "inspect", "nosuch"), 1)
    one_line_error(rl("image", "inspect", "sha256:" + "0" * 64), 1)


def test_prune_removes_dangling_only(rl: RlRunner, bb: str, rl_state: RlState) -> None:
    image_id = json.loads(rl("image", "inspect", bb, check=True).stdout)[0]["Id"]
    # Moving the name to a new image leaves the old one dangling.
    cid = rl("create", bb, "true", check=True).stdout.strip()
    rl("commit", cid, bb, check=True)
    rl("rm", cid, check=True)
    rows = [ln.split() for ln in rl("images", check=True).stdout.splitlines()]
    assert ["<none>", "<none>", image_id[7:19]] in [r[:3] for r in rows]
    r = rl("image", "prune", check=True)
    assert f"deleted: {image_id}" in r.stdout
    assert rl("run", "--rm", bb, "true").returncode == 0
    assert image_id[7:19] not in rl("images", check=True).stdout


def test_corrupt_blob_is_detected(rl: RlRunner, bb: str, rl_state: RlState) -> None:
    info = json.loads(rl("image", "inspect", bb, check=True).stdout)[0]
    blob = storage(rl_state.data_home) / "blobs/sha256" / info["Id"][7:]
    blob.write_text(blob.read_text().replace("default", "DEFAULT"))
    msg = one_line_error(rl("run", "--rm", bb), 125)
    assert "corrupt" in msg
    assert "corrupt" in one_line_error(rl("image", "inspect", bb), 1)


def test_concurrent_imports_of_one_layer(rl_path: Path, rootfs_tgz: Path,
                                         rl_state: RlState) -> None:
    procs = [subprocess.Popen([str(rl_path), "import", str(rootfs_tgz), f"conc{i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    root = storage(rl_state.data_home)
    assert not [n for n in os.listdir(root / "layers") if n.startswith(".tmp")]
    assert not [n for n in os.listdir(root / "blobs/sha256") if n.startswith(".tmp")]
    layer_ids = {json.loads(subprocess.run(
        [str(rl_path), "image", "inspect", f"conc{i}"], capture_output=True, text=True,
        check=True).stdout)[0]["RootFS"]["Layers"][0] for i in range(4)}
    assert len(layer_ids) == 1
    assert (root / "layers" / layer_ids.pop()[7:]).is_dir()


# -- hostile layers -----------------------------------------------------------------------


def _dotdot(tf: tarfile.TarFile) -> None:
    add_file(tf, "ok", b"x")
    add_file(tf, "../../../../../../tmp/rl-pwned-dotdot", b"pwned")


def _whiteout_parent(tf: tarfile.TarFile) -> None:
    add_file(tf, "dir/ok", b"x")
    add_file(tf, "dir/.wh...", b"")  # "white out ..": the layer's parent (storage/vfs)


def _whiteout_self(tf: tarfile.TarFile) -> None:
    add_file(tf, "dir/.wh..", b"")


def _whiteout_empty(tf: tarfile.TarFile) -> None:
    add_file(tf, ".wh.", b"")


def _absolute(tf: tarfile.TarFile) -> None:
    add_file(tf, "/tmp/rl-pwned-abs", b"pwned")


def _symlink_write(tf: tarfile.TarFile) -> None:
    add_entry(tf, "escape", tarfile.SYMTYPE, "/tmp")
    add_file(tf, "escape/rl-pwned-symlink", b"pwned")


def _relative_symlink_write(tf: tarfile.TarFile) -> None:
    add_entry(tf, "up", tarfile.SYMTYPE, "../../../../../../../tmp")
    add_file(tf, "up/rl-pwned-relsymlink", b"pwned")


def _hardlink_out(tf: tarfile.TarFile) -> None:
    add_entry(tf, "passwd", tarfile.LNKTYPE, "../../../../../../etc/passwd")


def _hardlink_abs(tf: tarfile.TarFile) -> None:
    add_entry(tf, "passwd", tarfile.LNKTYPE, "/etc/passwd")


def _hardlink_through_symlink(tf: tarfile.TarFile) -> None:
    add_entry(tf, "etc", tarfile.SYMTYPE, "/etc")
    add_entry(tf, "passwd", tarfile.LNKTYPE, "etc/passwd")


def _dir_then_symlink(tf: tarfile.TarFile) -> None:
    add_entry(tf, "d", tarfile.DIRTYPE)
    add_file(tf, "d/harmless", b"x")
    add_entry(tf, "d", tarfile.SYMTYPE, "/tmp")
    add_file(tf, "d/rl-pwned-dirsym", b"pwned")


HOSTILE = {
    "dotdot": (_dotdot, "leaves the layer"),
    "absolute": (_absolute, "absolute"),
    "symlink-write": (_symlink_write, "not a directory"),
    "relative-symlink-write": (_relative_symlink_write, "not a directory"),
    "hardlink-outside": (_hardlink_out, "leaves the layer"),
    "hardlink-absolute": (_hardlink_abs, "absolute"),
    "hardlink-through-symlink": (_hardlink_through_symlink, "not a directory"),
    "dir-replaced-by-symlink": (_dir_then_symlink, "not a directory"),
    "whiteout-parent": (_whiteout_parent, "whiteout of no name"),
    "whiteout-self": (_whiteout_self, "whiteout of no name"),
    "whiteout-empty": (_whiteout_empty, "whiteout of no name"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layer(rl: RlRunner, tmp_path: Path, rl_state: RlState, case: str) -> None:
    build, expected = HOSTILE[case]
    tar = layer_tar(tmp_path / f"{case}.tar", build)
    before = store_files(rl_state.data_home)
    msg = one_line_error(rl("import", tar, f"hostile-{case}"), 125)
    assert expected in msg, msg
    assert store_files(rl_state.data_home) == before
    for p in Path("/tmp").glob("rl-pwned-*"):
        pytest.fail(f"a hostile layer wrote {p}")
    assert "hostile" not in rl("images", check=True).stdout


def test_huge_size_over_short_stream(rl: RlRunner, tmp_path: Path, rl_state: RlState) -> None:
    info = tarfile.TarInfo("big")
    info.size = 10 * 1024**3
    tar = tmp_path / "short.tar"
    tar.write_bytes(info.tobuf(tarfile.PAX_FORMAT) + b"x" * 5000)
    before = store_files(rl_state.data_home)
    msg = one_line_error(rl("import", tar, "hostile-short"), 125)
    assert "truncated" in msg or "unexpected end" in msg, msg
    assert store_files(rl_state.data_home) == before


def test_truncated_gzip(rl: RlRunner, rootfs_tgz: Path, tmp_path: Path,
                        rl_state: RlState) -> None:
    data = rootfs_tgz.read_bytes()
    tar = tmp_path / "cut.tar.gz"
    tar.write_bytes(data[: len(data) // 2])
    before = store_files(rl_state.data_home)
    msg = one_line_error(rl("import", tar, "hostile-cut"), 125)
    assert "truncated" in msg or "corrupt" in msg, msg
    assert store_files(rl_state.data_home) == before
    bad = bytearray(data)
    bad[len(bad) // 2: len(bad) // 2 + 64] = b"\0" * 64
    tar.write_bytes(bytes(bad))
    one_line_error(rl("import", tar, "hostile-garbled"), 125)
    assert store_files(rl_state.data_home) == before


def test_device_nodes_skipped_with_a_note(rl: RlRunner, rootfs: Path, tmp_path: Path) -> None:
    def extra(tf: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("./dev/sda")
        info.type = tarfile.BLKTYPE
        info.devmajor, info.devminor = 8, 0
        tf.addfile(info)
        fifo = tarfile.TarInfo("./run-fifo")
        fifo.type = tarfile.FIFOTYPE
        tf.addfile(fifo)

    tar = rootfs_tar(rootfs, tmp_path / "dev.tar", compress="", extra=extra)
    r = rl("import", tar, "withdev", check=True)
    assert "note: skipped device node /dev/sda" in r.stderr
    out = rl("run", "--rm", "withdev", "sh", "-c", "test -p /run-fifo && echo fifo",
             check=True).stdout
    assert out == "fifo\n"


def test_long_names_and_xattrs(rl: RlRunner, rootfs: Path, tmp_path: Path,
                               rl_state: RlState) -> None:
    long = "./opt/" + "/".join(["d" * 60] * 5) + "/" + "f" * 120

    def extra(tf: tarfile.TarFile) -> None:
        add_file(tf, long, b"long\n")
        add_file(tf, "./opt/xattr", b"x", pax_headers={"SCHILY.xattr.user.rl": "yes"})

    for fmt, tag in ((tarfile.PAX_FORMAT, "pax"), (tarfile.GNU_FORMAT, "gnu")):
        tar = tmp_path / f"{tag}.tar"
        with tarfile.open(tar, "w", format=fmt) as tf:
            tf.add(str(rootfs), arcname=".")
            extra(tf)
        rl("import", tar, f"names-{tag}", check=True)
        r = rl("run", "--rm", f"names-{tag}", "cat", long[1:], check=True)
        assert r.stdout == "long\n"
    # The store lives on /tmp here: tmpfs keeps user.* xattrs (PAX can carry them).
    layer = json.loads(rl("image", "inspect", "names-pax", check=True).stdout)[0]
    path = storage(rl_state.data_home) / "layers" / layer["RootFS"]["Layers"][0][7:] / "opt/xattr"
    assert os.getxattr(path, "user.rl") == b"yes"


def test_zstd_and_sparse_layers(rl: RlRunner, rootfs: Path, tmp_path: Path) -> None:
    zstandard = pytest.importorskip("zstandard")
    support.require(shutil.which("tar") is not None, "GNU tar missing")
    # A sparse file in a GNU sparse tar, made by GNU tar itself.
    src = tmp_path / "src"
    support.copy_tree(rootfs, src)
    with open(src / "sparse", "wb") as f:
        f.seek(8 << 20)
        f.write(b"end\n")
    tar = tmp_path / "sparse.tar"
    subprocess.run(["tar", "--sparse", "--numeric-owner", "--owner=0", "--group=0", "-C",
                    str(src), "-cf", str(tar), "."], check=True)
    zst = tmp_path / "sparse.tar.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(tar.read_bytes()))
    for path, name in ((tar, "sparse-plain"), (zst, "sparse-zstd")):
        rl("import", path, name, check=True)
        r = rl("run", "--rm", name, "sh", "-c", "wc -c < /sparse; tail -c 4 /sparse", check=True)
        assert r.stdout.split() == [str((8 << 20) + 4), "end"]
    info = json.loads(rl("image", "inspect", "sparse-zstd", check=True).stdout)[0]
    plain = json.loads(rl("image", "inspect", "sparse-plain", check=True).stdout)[0]
    assert info["RootFS"] == plain["RootFS"]  # same diff_id through either compression


def test_concurrent_creates_keep_every_copy(rl: RlRunner, bb: str, rl_path: Path,
                                            rl_state: RlState) -> None:
    env = {**os.environ, **rl_state.env()}
    script = f"for i in 1 2 3 4; do {rl_path} create {bb} true || exit 1; done"
    procs = [subprocess.Popen(["sh", "-c", script], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    ids = [i for out, _ in outs for i in out.split()]
    assert len(ids) == 12
    own_dir = storage(rl_state.data_home) / "containers"
    for cid in ids:
        assert (own_dir / cid / "diff").is_dir()
    # rmi/prune collect only storage nothing owns.
    rl("image", "prune", check=True)
    assert all((own_dir / cid).is_dir() for cid in ids)
    rl("rm", *ids, check=True)
    assert not any((own_dir / cid).exists() for cid in ids)


def test_single_id_mode_squashes_owners(rl_path: Path, rootfs_tgz: Path,
                                        tmp_path: Path) -> None:
    data = tmp_path / "single-data"
    run_dir = Path(f"/tmp/rl-single-{os.getpid()}")
    run_dir.mkdir(mode=0o700)
    env = {**os.environ, "RL_IDMAP": "single", "XDG_DATA_HOME": str(data),
           "XDG_RUNTIME_DIR": str(run_dir)}

    def rl1(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(rl_path), *map(str, args)], env=env, capture_output=True,
                              text=True, timeout=120)

    try:
        assert rl1("import", "-c", 'CMD ["true"]', rootfs_tgz, "single").returncode == 0
        r = rl1("run", "--rm", "single", "stat", "-c", "%u:%g %a", "/home/user/owned",
                "/usr/bin/suid-file")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split("\n")[:2] == ["0:0 644", "0:0 4755"]
        # said once, at run, not later in apt's words: the users one id cannot hold
        warning = [ln for ln in r.stderr.splitlines() if "cannot hold" in ln]
        assert len(warning) == 1 and "(1 id mapped)" in warning[0], r.stderr
        assert "user (1000)" in warning[0] and "nobody (65534)" in warning[0]
        assert "root (0)" not in warning[0]
        limits = rl1("info", "--format", "{{.idmap.limits}}")
        assert "setgroups is denied" in limits.stdout, limits
        owned = list((data / "rl/storage/layers").glob("*/home/user/owned"))
        assert owned and owned[0].stat().st_uid == os.getuid()
        assert rl1("rmi", "single").returncode == 0
    finally:
        for pidfile in run_dir.rglob("*.pid"):
            try:
                os.kill(int(pidfile.read_text().split()[0]), 9)
            except (OSError, ValueError):
                pass
        support.remove_tree(run_dir)
        support.remove_tree(data)


def test_more_wrong_uses(rl: RlRunner, bb: str, tmp_path: Path) -> None:
    one_line_error(rl("export", "nosuch"), 1)
    one_line_error(rl("export", "-o", tmp_path / "x.tar", "nosuch"), 1)
    assert not (tmp_path / "x.tar").exists()
    cid = rl("create", bb, "true", check=True).stdout.strip()
    one_line_error(rl("commit", cid, "Bad:Name:x"), 125)
    one_line_error(rl("commit", "-c", "BOGUS x", cid, "fine"), 125)
    assert "No such file" in one_line_error(rl("export", "-o", tmp_path / "no/dir/x.tar", cid),
                                            125)
    rl("rm", cid, check=True)
    one_line_error(rl("images", "--format", "{{.Nope}}"), 125)
    unreadable = tmp_path / "secret.tar"
    unreadable.write_bytes(b"x")
    unreadable.chmod(0)
    assert "Permission denied" in one_line_error(rl("import", unreadable, "x"), 125)
    assert "Permission denied" in one_line_error(rl("load", "-i", unreadable), 125)
    one_line_error(rl("save", "-o", tmp_path / "no/dir/x.tar", bb), 125)
    for args in (["history"], ["rmi"], ["image", "inspect"], ["save"], ["pull"], ["push"],
                 ["login"], ["tag", bb]):
        r = rl(*args)
        assert r.returncode == 125 and r.stderr.startswith("Error: "), (args, r.stderr)
    one_line_error(rl("tag", bb, "Not Valid"), 125)
    one_line_error(rl("tag", bb, "x@sha256:" + "a" * 64), 125)


def test_kill_9_during_create_leaves_nothing_behind(rl: RlRunner, rl_path: Path,
                                                    rootfs: Path, tmp_path: Path,
                                                    rl_state: RlState) -> None:
    import signal
    import time

    def extra(tf: tarfile.TarFile) -> None:
        for i in range(12):
            add_file(tf, f"./blob{i}", os.urandom(5 << 20))

    tar = rootfs_tar(rootfs, tmp_path / "fat.tar", compress="", extra=extra)
    rl("import", tar, "fat", check=True)
    vfs_dir = storage(rl_state.data_home) / "containers"
    before = set(os.listdir(vfs_dir))
    env = {**os.environ, **rl_state.env()}
    # vfs: the create copies 60 MB, so there is a copy to kill half-way
    proc = subprocess.Popen([str(rl_path), "create", "--storage-driver", "vfs", "fat", "true"],
                            env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if set(os.listdir(vfs_dir)) - before:
            break
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # The next commands work; the next prune collects the orphaned copy.
    assert rl("run", "--rm", "fat", "sh", "-c", "ls /blob11", check=True).stdout == "/blob11\n"
    records = set(rl("ps", "-aq", "--no-trunc", check=True).stdout.split())
    rl("image", "prune", check=True)
    assert set(os.listdir(vfs_dir)) <= before | records
    # (If the kill came after the record was written, that container is complete.)
    for cid in records:
        if json.loads(rl("inspect", cid, check=True).stdout)[0]["Image"] == "fat":
            rl("rm", cid, check=True)
    rl("rmi", "fat", check=True)


def test_kill_9_during_rmi_leaves_no_partial_layer(rl: RlRunner, rl_path: Path, rootfs: Path,
                                                   tmp_path: Path, rl_state: RlState) -> None:
    """A layer is renamed away before it is deleted: a removal killed half-way never
    leaves a partial directory under the layer's name, which the next import (and
    every overlay container) would trust as complete."""
    import signal
    import time

    def extra(tf: tarfile.TarFile) -> None:
        for i in range(20000):
            add_file(tf, f"./many/f{i}", b"x")

    tar = rootfs_tar(rootfs, tmp_path / "many.tar", compress="", extra=extra)
    rl("import", tar, "manyfiles", check=True, timeout=180)
    layers = storage(rl_state.data_home) / "layers"
    info = json.loads(rl("image", "inspect", "manyfiles", check=True).stdout)[0]
    ours = [d.removeprefix("sha256:") for d in info["RootFS"]["Layers"]]
    env = {**os.environ, **rl_state.env()}
    proc = subprocess.Popen([str(rl_path), "rmi", "manyfiles"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    many = layers / ours[-1] / "many"

    def deleting() -> bool:
        try:
            return len(os.listdir(many)) < 20000
        except FileNotFoundError:
            return True

    while time.monotonic() < deadline and proc.poll() is None:
        if deleting():
            break  # its deletion has begun: kill it half-way
        time.sleep(0.001)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if (layers / ours[-1]).exists():  # a layer still named is whole
        n = sum(len(files) for _, _, files in os.walk(layers / ours[-1]))
        assert n > 20000, n
    rl("import", tar, "manyfiles2", check=True, timeout=180)
    r = rl("run", "--rm", "manyfiles2", "sh", "-c", "ls /many | wc -l", check=True)
    assert r.stdout.strip() == "20000"
    rl("rmi", "manyfiles2", check=True, timeout=120)


def test_a_store_of_the_old_layer_format_is_migrated(rl: RlRunner, bb: str,
                                                      rl_state: RlState) -> None:
    """Stores written before layers kept overlayfs' whiteouts held the tar's .wh.
    files: the first command converts them, so their images still delete what
    they deleted."""
    cid = rl("run", "-d", bb, "rm", "/etc/motd", check=True).stdout.strip()
    rl("wait", cid, check=True)
    rl("commit", cid, f"{bb}-deleted", check=True)
    rl("rm", cid, check=True)
    info = json.loads(rl("image", "inspect", f"{bb}-deleted", check=True).stdout)[0]
    top = storage(rl_state.data_home) / "layers" / info["RootFS"]["Layers"][-1][7:]
    # Back to the old form: the whiteout as a .wh. marker file, no format marker.
    (top / "etc" / "motd").unlink()
    (top / "etc" / ".wh.motd").write_text("")
    (storage(rl_state.data_home) / "layers-format").unlink()
    r = rl("run", "--rm", f"{bb}-deleted", "sh", "-c", "cat /etc/motd 2>&1; ls -a /etc")
    assert "No such file" in r.stdout and ".wh.motd" not in r.stdout, r.stdout
    assert (storage(rl_state.data_home) / "layers-format").exists()
    st = os.stat(top / "etc" / "motd", follow_symlinks=False)
    assert st.st_mode & 0o170000 == 0o020000 and st.st_rdev == 0  # a 0/0 character device
