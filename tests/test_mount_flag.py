"""`--mount type=bind|volume|tmpfs,...`: docker's parsing and messages, and mounts that
behave as the -v and --tmpfs ones they stand for."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import support
from support import RlRunner


@pytest.fixture(autouse=True)
def _needs_userns() -> Iterator[None]:
    support.require_userns()
    yield


def one_error(r: subprocess.CompletedProcess[str], code: int = 125) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    return lines[0]


def test_bind_mount(rl: RlRunner, rootfs: Path, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("host\n")
    out = rl("run", "--rm", "--mount", f"type=bind,source={tmp_path},target=/h",
             "--rootfs", rootfs, "sh", "-c", "cat /h/f; echo w > /h/new", check=True).stdout
    assert out == "host\n" and (tmp_path / "new").read_text() == "w\n"
    for ro in ("ro", "readonly", "readonly=true", "ro=1"):
        r = rl("run", "--rm", "--mount", f"type=bind,src={tmp_path},dst=/h,{ro}",
               "--rootfs", rootfs, "sh", "-c", "echo x > /h/ro")
        assert r.returncode != 0 and "Read-only" in r.stderr, (ro, r.stderr)
    rl("run", "--rm", "--mount", f"type=bind,src={tmp_path},dst=/h,readonly=false",
       "--rootfs", rootfs, "sh", "-c", "echo x > /h/rw", check=True)
    rl("run", "--rm", "--mount", f"type=bind,src={tmp_path},dst=/h,bind-propagation=rslave",
       "--rootfs", rootfs, "true", check=True)


def test_relative_bind_source_is_the_callers_directory(rl: RlRunner, rl_path: Path,
                                                        rootfs: Path, tmp_path: Path) -> None:
    (tmp_path / "here").write_text("cwd\n")
    r = subprocess.run([str(rl_path), "run", "--rm", "--mount", "type=bind,src=.,dst=/c",
                        "--rootfs", str(rootfs), "cat", "/c/here"], cwd=tmp_path,
                       capture_output=True, text=True, check=True)
    assert r.stdout == "cwd\n"


def test_volume_mounts(rl: RlRunner, rootfs: Path) -> None:
    name = "mountflagvol"
    try:
        rl("run", "--rm", "--mount", f"type=volume,src={name},dst=/v,volume-label=k=v",
           "--rootfs", rootfs, "sh", "-c", "echo kept > /v/f", check=True)
        out = rl("run", "--rm", "--mount", f"source={name},target=/v,ro",  # volume: default
                 "--rootfs", rootfs, "sh", "-c", "cat /v/f; echo x > /v/g", )
        assert out.stdout == "kept\n" and "Read-only" in out.stderr
        info = json.loads(rl("volume", "inspect", name, check=True).stdout)[0]
        assert info["Labels"] == {"k": "v"}
        # no source: an anonymous volume, which --rm takes with it
        before = set(rl("volume", "ls", "-q", check=True).stdout.split())
        rl("run", "--rm", "--mount", "type=volume,dst=/anon", "--rootfs", rootfs, "true",
           check=True)
        assert set(rl("volume", "ls", "-q", check=True).stdout.split()) == before
        # volume-nocopy: the image's files at the mount point are not copied in
        out = rl("run", "--rm", "--mount", "type=volume,src=nocopyvol,dst=/etc,volume-nocopy",
                 "--rootfs", rootfs, "ls", "-A", "/etc", check=True)
        assert out.stdout == ""
    finally:
        rl("volume", "rm", name, "nocopyvol")


def test_tmpfs_mount(rl: RlRunner, rootfs: Path) -> None:
    out = rl("run", "--rm", "--mount", "type=tmpfs,dst=/t,tmpfs-size=1m,tmpfs-mode=1770",
             "--rootfs", rootfs, "sh", "-c", "stat -c %a /t; grep ' /t ' /proc/mounts",
             check=True).stdout.splitlines()
    assert out[0] == "1770"
    assert "tmpfs" in out[1] and "size=1024k" in out[1]


@pytest.mark.parametrize(("flag", "message"), [
    ("type=bind,src=/tmp", 'invalid argument "type=bind,src=/tmp" for "--mount" flag: '
                           "target is required"),
    ("type=bind,dst=/x,bogus", "invalid field 'bogus' must be a key=value pair"),
    ("type=bind,dst=/x,color=red", "unexpected key 'color' in 'color=red'"),
    ("type=bind,src=/tmp,dst=/x,ro=maybe", "invalid value for ro: maybe"),
    ("type=tmpfs,dst=/x,tmpfs-size=lots", "invalid value for tmpfs-size: lots"),
    ("type=tmpfs,dst=/x,tmpfs-mode=999", "invalid value for tmpfs-mode: 999"),
    ("type=bind,src=/tmp,dst=/x,volume-nocopy",
     "cannot mix 'volume-*' options with mount type 'bind'"),
    ("type=volume,dst=/x,bind-propagation=rslave",
     "cannot mix 'bind-*' options with mount type 'volume'"),
    ("type=bind,dst=/x", 'invalid mount config for type "bind": field Source must not be empty'),
    ("type=bind,src=/no/such/dir,dst=/x",
     'invalid mount config for type "bind": bind source path does not exist: /no/such/dir'),
    ("type=tmpfs,src=/tmp,dst=/x",
     'invalid mount config for type "tmpfs": field Source must not be specified'),
    ("type=bind,src=/tmp,dst=rel", "mount path must be absolute"),
    ("type=foo,dst=/x", 'mount type unknown: "foo"'),
    ("type=volume,src=a/b,dst=/x", "includes invalid characters"),
    ("type=bind,src=/tmp,dst=/proc", "cannot be mounted"),
])
def test_bad_mount_flags(rl: RlRunner, rootfs: Path, flag: str, message: str) -> None:
    line = one_error(rl("run", "--rm", "--mount", flag, "--rootfs", rootfs, "true"))
    assert message in line, line
