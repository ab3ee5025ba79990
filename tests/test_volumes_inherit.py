"""Mounts a container inherits: --volumes-from CTR[:ro|rw], the image's VOLUME entries as
anonymous volumes (removed by rm -v and --rm), and inspect's Mounts as docker shows them."""

from __future__ import annotations

import json
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from imagetools import add_file, rootfs_tar

import support
from support import RlRunner


@pytest.fixture(autouse=True)
def _needs_userns() -> Iterator[None]:
    support.require_userns()
    yield


@pytest.fixture(scope="module")
def volimage(rootfs: Path, tmp_path_factory: pytest.TempPathFactory, rl_path: Path) -> str:
    support.require_userns()

    def extra(tf: tarfile.TarFile) -> None:
        add_file(tf, "./srv/seed", b"from the image\n")

    tar = rootfs_tar(rootfs, tmp_path_factory.mktemp("volimg") / "img.tar", extra=extra)
    subprocess.run([str(rl_path), "import", "-c", "VOLUME /srv", "-c", 'CMD ["sh"]', str(tar),
                    "volimage"], check=True, capture_output=True)
    return "volimage"


def vols(rl: RlRunner) -> set[str]:
    return set(rl("volume", "ls", "-q", check=True).stdout.split())


def test_image_volume_is_an_anonymous_volume(rl: RlRunner, volimage: str) -> None:
    before = vols(rl)
    rl("run", "--name", "iv", volimage, "sh", "-c", "cat /srv/seed; echo more > /srv/new",
       check=True)
    try:
        made = vols(rl) - before
        assert len(made) == 1
        (name,) = made
        info = json.loads(rl("inspect", "iv", check=True).stdout)[0]
        mounts = [m for m in info["Mounts"] if m["Destination"] == "/srv"]
        assert mounts and mounts[0]["Type"] == "volume" and mounts[0]["Name"] == name
        assert mounts[0]["Driver"] == "local" and mounts[0]["RW"] is True
        src = Path(mounts[0]["Source"])
        assert (src / "seed").read_text() == "from the image\n"  # copied up, docker's way
        assert (src / "new").read_text() == "more\n"
        # an explicit mount at the same place wins; no anonymous volume then
        rl("run", "--rm", "-v", "ivnamed:/srv", volimage, "true", check=True)
        assert vols(rl) - before == {name, "ivnamed"}
    finally:
        rl("rm", "-v", "iv", check=True)
        rl("volume", "rm", "ivnamed")
    assert vols(rl) == before  # rm -v took the image's volume
    rl("run", "--rm", volimage, "true", check=True)
    assert vols(rl) == before  # and so does --rm


def test_volumes_from(rl: RlRunner, rootfs: Path, tmp_path: Path) -> None:
    rl("create", "--name", "vsrc", "-v", "vfshared:/shared", "-v", f"{tmp_path}:/hostdir:ro",
       "--rootfs", rootfs, "true", check=True)
    try:
        out = rl("run", "--rm", "--volumes-from", "vsrc", "--rootfs", rootfs, "sh", "-c",
                 "echo hi > /shared/f && cat /shared/f; echo x > /hostdir/y",)
        assert out.stdout == "hi\n" and "Read-only" in out.stderr  # its own mode: ro
        r = rl("run", "--rm", "--volumes-from", "vsrc:ro", "--rootfs", rootfs, "sh", "-c",
               "cat /shared/f; echo x > /shared/g")
        assert r.stdout == "hi\n" and "Read-only" in r.stderr
        rl("create", "--name", "vdst", "--volumes-from", "vsrc:rw", "--rootfs", rootfs, "true",
           check=True)
        info = json.loads(rl("inspect", "vdst", check=True).stdout)[0]
        by_dest = {m["Destination"]: m for m in info["Mounts"]}
        assert by_dest["/shared"]["Type"] == "volume" and by_dest["/shared"]["Name"] == "vfshared"
        assert by_dest["/hostdir"] == {"Type": "bind", "Source": str(tmp_path),
                                       "Destination": "/hostdir", "Mode": "", "RW": True,
                                       "Propagation": "rprivate"}
        # in use by both: refused
        assert rl("volume", "rm", "vfshared").returncode == 1
        r = rl("run", "--rm", "--volumes-from", "nosuch", "--rootfs", rootfs, "true")
        assert r.returncode == 125 and "no such container: nosuch" in r.stderr
        r = rl("run", "--rm", "--volumes-from", "vsrc:bogus", "--rootfs", rootfs, "true")
        assert r.returncode == 125 and "invalid mode: bogus" in r.stderr
    finally:
        rl("rm", "-f", "vdst")
        rl("rm", "-f", "vsrc")
        rl("volume", "rm", "vfshared")
