"""Named and anonymous volumes: `rl volume ...`, `-v NAME:/path`, `-v /path`, their
first-use copy of the image's files, removal through the user namespace, and a
container's attempt to reach the host through a volume's copy."""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from imagetools import add_file, rootfs_tar

import support
from support import RlRunner, RlState


@pytest.fixture(autouse=True)
def _needs_userns(rl: RlRunner) -> Iterator[None]:
    support.require_userns()
    # The state is the session's: start from no volumes whatever other modules left
    # (a `create` + `rm` without -v keeps an image's anonymous volumes, as docker's).
    rl("volume", "prune", "-a", "-f")
    yield
    rl("volume", "prune", "-a", "-f")  # the state is shared by the module's tests


def one_error(r: object, code: int) -> str:
    import subprocess

    assert isinstance(r, subprocess.CompletedProcess)
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    return str(lines[0])


def test_volume_commands(rl: RlRunner, rl_state: RlState) -> None:
    assert rl("volume", "create", "--label", "a=b", "data", check=True).stdout == "data\n"
    assert rl("volume", "create", "data", check=True).stdout == "data\n"  # idempotent
    info = json.loads(rl("volume", "inspect", "data", check=True).stdout)[0]
    assert info["Name"] == "data" and info["Driver"] == "local"
    assert info["Labels"] == {"a": "b"} and info["Anonymous"] is False
    assert info["Mountpoint"] == str(rl_state.data_home / "rl/volumes/data/_data")
    assert Path(info["Mountpoint"]).is_dir()
    table = rl("volume", "ls", check=True).stdout.splitlines()
    assert table[0].split() == ["DRIVER", "VOLUME", "NAME"]
    assert table[1].split() == ["local", "data"]
    assert rl("volume", "ls", "-q", check=True).stdout == "data\n"
    assert rl("volume", "inspect", "-f", "{{.Mountpoint}}", "data",
              check=True).stdout.strip() == info["Mountpoint"]
    anon = rl("volume", "create", check=True).stdout.strip()
    assert len(anon) == 64
    # a damaged record is skipped, never an error for the others
    damaged = rl_state.data_home / "rl/volumes/broken"
    damaged.mkdir()
    (damaged / "volume.json").write_text("{oops")
    assert sorted(rl("volume", "ls", "-q", check=True).stdout.split()) == sorted([anon, "data"])
    # `ls` and `ls -q` take the click-free path (rootless/quickvolumes.py); a --format
    # goes through click: the same lines either way
    quick = rl("volume", "ls", check=True).stdout
    assert quick == rl("volume", "ls", "--format", "table {{.Driver}}\t{{.Name}}",
                       check=True).stdout
    assert sorted(quick.splitlines()[1:]) == sorted([f"local    {anon}", "local    data"])
    assert rl("volume", "list", "--quiet", check=True).stdout == rl(
        "volume", "ls", "--format", "{{.Name}}", check=True).stdout
    bogus = rl("volume", "ls", "--bogus")  # click's own message and docker's status
    assert bogus.returncode == 125 and "No such option '--bogus'" in bogus.stderr
    assert rl("volume", "rm", "data", anon, check=True).stdout.split() == ["data", anon]
    assert "no such volume" in one_error(rl("volume", "rm", "data"), 1)
    assert rl("volume", "rm", "-f", "data").returncode == 0
    assert "no such volume" in one_error(rl("volume", "inspect", "data"), 1)
    (damaged / "volume.json").unlink()
    damaged.rmdir()


@pytest.mark.parametrize("name", ["a/b", "..", "_x", "x", "a b", "é"])
def test_bad_volume_names(rl: RlRunner, rootfs: Path, name: str) -> None:
    assert "invalid characters" in one_error(rl("volume", "create", name), 125)
    if "/" not in name and not name.startswith("."):
        r = rl("run", "--rm", "-v", f"{name}:/d", "--rootfs", rootfs, "true")
        assert r.returncode == 125 and r.stderr.startswith("Error: ")
    assert rl("volume", "ls", "-q", check=True).stdout == ""


def test_named_volume_outlives_containers_and_needs_them_gone(rl: RlRunner, rootfs: Path,
                                                              rl_state: RlState) -> None:
    support.require_newidmap()
    rl("run", "--name", "writer", "-v", "shared:/data", "--rootfs", rootfs, "sh", "-c",
       "echo root > /data/r && "
       "mkdir /data/sub && echo x > /data/sub/f && chown -R 1000:1000 /data/sub && "
       "chmod 700 /data/sub", check=True)
    out = rl("run", "--rm", "-v", "shared:/data:ro", "--rootfs", rootfs, "sh", "-c",
             "cat /data/r; stat -c %u /data/sub; touch /data/no 2>&1 || echo refused",
             check=True).stdout.splitlines()
    assert out[0] == "root" and out[1] == "1000" and out[-1] == "refused"
    # in use by a stopped container: refused, naming it, and nothing removed
    cid = rl("inspect", "-f", "{{.Id}}", "writer", check=True).stdout.strip()
    msg = one_error(rl("volume", "rm", "shared"), 1)
    assert "volume is in use" in msg and cid in msg
    assert rl("volume", "prune", "-a", "-f", check=True).stdout.startswith("Total")
    rl("rm", "-v", "writer", check=True)  # -v takes anonymous volumes only
    mountpoint = rl_state.data_home / "rl/volumes/shared/_data"
    assert (mountpoint / "r").read_text() == "root\n"
    rl("volume", "rm", "shared", check=True)  # subuid-owned files go too
    assert not (rl_state.data_home / "rl/volumes/shared").exists()
    assert not [p for p in (rl_state.data_home / "rl/volumes").iterdir()
                if p.name.startswith(".")]  # no trash left


def test_first_use_copies_the_image_tree(rl: RlRunner, fresh_rootfs: Path) -> None:
    support.require_newidmap()
    app = fresh_rootfs / "opt/volapp"
    app.mkdir(parents=True)
    (app / "conf").write_text("from-image\n")
    os.symlink("conf", app / "link")
    out = rl("run", "--rm", "-v", "appvol:/opt/volapp", "--rootfs", fresh_rootfs, "sh", "-c",
             "cat /opt/volapp/conf; readlink /opt/volapp/link; echo changed > /opt/volapp/conf",
             check=True).stdout.splitlines()
    assert out == ["from-image", "conf"]
    # not empty any more: the second container sees its own change, no new copy
    out = rl("run", "--rm", "-v", "appvol:/opt/volapp", "--rootfs", fresh_rootfs, "cat",
             "/opt/volapp/conf", check=True).stdout
    assert out == "changed\n"
    # nocopy: an empty volume stays empty
    out = rl("run", "--rm", "-v", "empty:/opt/volapp:nocopy", "--rootfs", fresh_rootfs, "ls",
             "-A", "/opt/volapp", check=True).stdout
    assert out == ""


def test_first_use_keeps_the_images_owners(rl: RlRunner, rootfs: Path, tmp_path: Path) -> None:
    support.require_newidmap()

    def extra(tf: tarfile.TarFile) -> None:
        add_file(tf, "./srv/owned", b"mine\n", uid=1000, gid=1000, mode=0o4750)

    rl("import", rootfs_tar(rootfs, tmp_path / "img.tar", extra=extra), "withowner",
       check=True)
    out = rl("run", "--rm", "-v", "srvvol:/srv", "withowner", "stat", "-c", "%u:%g %a",
             "/srv/owned", check=True).stdout
    assert out.strip() == "1000:1000 4750"


def test_copy_up_never_follows_the_images_symlinks_to_the_host(rl: RlRunner,
                                                                fresh_rootfs: Path,
                                                                tmp_path: Path) -> None:
    # The copy runs before pivot_root, where / is still the host's: a symlink in
    # the image at or below the mount point must be copied as a link, and a mount
    # point that is a symlink resolves inside the rootfs.
    secret = tmp_path / "host-secret"
    secret.mkdir()
    (secret / "key").write_text("host only\n")
    data = fresh_rootfs / "vdata"
    data.mkdir()
    os.symlink(str(secret), data / "escape")
    os.symlink(str(secret), fresh_rootfs / "pointer")
    out = rl("run", "--rm", "-v", "v1:/vdata", "-v", "v2:/pointer", "--rootfs", fresh_rootfs,
             "sh", "-c", "readlink /vdata/escape; ls -A /pointer; cat /vdata/escape/key 2>&1 "
             "| head -1", check=True).stdout.splitlines()
    assert out[0] == str(secret)
    assert "key" not in out[1:2]  # the volume at /pointer is the rootfs's, empty
    assert "host only" not in "".join(out)
    assert (secret / "key").read_text() == "host only\n"


def test_anonymous_volumes_go_with_rm_v_and_run_rm(rl: RlRunner, rootfs: Path) -> None:
    rl("run", "--name", "anon", "-v", "/scratch", "-v", "kept:/kept", "--rootfs", rootfs,
       "sh", "-c", "echo hi > /scratch/f", check=True)
    vols = rl("volume", "ls", "-q", check=True).stdout.split()
    anon = [v for v in vols if v != "kept"]
    assert len(anon) == 1 and len(anon[0]) == 64
    info = json.loads(rl("volume", "inspect", anon[0], check=True).stdout)[0]
    assert info["Anonymous"] is True
    rl("rm", "-v", "anon", check=True)
    assert rl("volume", "ls", "-q", check=True).stdout.split() == ["kept"]
    rl("run", "--rm", "-v", "/scratch", "--rootfs", rootfs, "true", check=True)
    assert rl("volume", "ls", "-q", check=True).stdout.split() == ["kept"]
    # a bad later -v leaves no anonymous volume behind
    r = rl("run", "--rm", "-v", "/scratch", "-v", "bad/name:/x", "--rootfs", rootfs, "true")
    assert r.returncode == 125
    assert rl("volume", "ls", "-q", check=True).stdout.split() == ["kept"]
    rl("create", "--name", "leftover", "-v", "/scratch", "--rootfs", rootfs, "true",
       check=True)
    rl("rm", "leftover", check=True)  # without -v: it stays, unused and anonymous
    assert len(rl("volume", "ls", "-q", check=True).stdout.split()) == 2
    pruned = rl("volume", "prune", "-f", check=True).stdout.splitlines()
    assert pruned[0] == "Deleted Volumes:" and len(pruned[1]) == 64
    assert rl("volume", "ls", "-q", check=True).stdout.split() == ["kept"]
    assert rl("volume", "prune", "-a", "-f", check=True).stdout.splitlines()[1] == "kept"
