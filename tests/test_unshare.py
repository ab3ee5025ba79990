"""`rl unshare` (podman's): the user's command as root of rl's user namespace, where
what a container's subordinate ids wrote can be removed; exit statuses as a shell's."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import support
from support import RlRunner


@pytest.fixture(autouse=True)
def _needs_userns() -> None:
    support.require_userns()


def test_unshare_is_root_with_the_maps(rl: RlRunner) -> None:
    support.require_newidmap()
    out = rl("unshare", "sh", "-c", "id -u; cat /proc/self/uid_map", check=True).stdout
    lines = out.splitlines()
    assert lines[0] == "0"
    rows = [tuple(map(int, ln.split())) for ln in lines[1:]]
    assert rows[0] == (0, os.getuid(), 1)
    sub = support.subid_ranges("uid")[0]
    assert rows[1] == (1, sub.start, sub.count)


def test_unshare_removes_what_a_container_wrote_as_a_subuid(rl: RlRunner, rootfs: Path,
                                                            tmp_path: Path) -> None:
    support.require_newidmap()
    vol = tmp_path / "vol"
    vol.mkdir()
    rl("run", "--rm", "-v", f"{vol}:/v", "--rootfs", rootfs, "sh", "-c",
       "mkdir /v/d && echo x > /v/d/f && chown -R 1000:1000 /v/d && chmod 700 /v/d",
       check=True)
    owner = (vol / "d").stat().st_uid
    assert owner != os.getuid()  # a subordinate id: the user alone cannot remove it
    r = subprocess.run(["rm", "-rf", str(vol / "d")], capture_output=True, check=False)
    assert r.returncode != 0 and (vol / "d").exists()
    rl("unshare", "rm", "-rf", str(vol / "d"), check=True)
    assert not (vol / "d").exists()


def test_unshare_exit_statuses(rl: RlRunner) -> None:
    assert rl("unshare", "sh", "-c", "exit 7").returncode == 7
    assert rl("unshare", "sh", "-c", "kill -TERM $$").returncode == 128 + 15
    r = rl("unshare", "no-such-command-here")
    assert r.returncode == 127 and r.stderr.startswith("Error: ")

def test_unshare_runs_the_users_shell_by_default(rl: RlRunner,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELL", "/bin/sh")
    r = rl("unshare", input="id -u; echo $0\n")
    assert r.returncode == 0 and r.stdout.split() == ["0", "/bin/sh"]
