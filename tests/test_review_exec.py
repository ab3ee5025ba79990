"""Review of `rl exec` (the h-stdio branch), attacked from inside the container."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import support
from support import RlRunner


@pytest.fixture(autouse=True)
def _needs_userns() -> None:
    support.require_userns()


@pytest.fixture
def admin_ctr(rl: RlRunner, rootfs: Path) -> Iterator[str]:
    """A running container whose root may mount (CAP_SYS_ADMIN)."""
    name = "rv-admin"
    rl("run", "-d", "--name", name, "--cap-add", "SYS_ADMIN", "--tmpfs", "/tmp",
       "--rootfs", rootfs, "sleep", "1000", check=True)
    yield name
    rl("rm", "-f", name)


def test_exec_does_not_read_the_containers_own_proc(rl: RlRunner, admin_ctr: str) -> None:
    # The joining process checked setgroups and the id maps through the
    # container's /proc, which its root may cover with anything: FIFOs there
    # hung every later `rl exec` (as the FIFO at /etc/passwd did), and other
    # contents would have decided which ids count as mapped.
    r = rl("exec", admin_ctr, "sh", "-c",
           "mkdir -p /tmp/fake/self && mkfifo /tmp/fake/self/setgroups "
           "/tmp/fake/self/uid_map /tmp/fake/self/gid_map && mount --bind /tmp/fake /proc",
           timeout=30)
    assert r.returncode == 0, r.stderr
    r = rl("exec", admin_ctr, "echo", "joined", timeout=30)
    assert (r.returncode, r.stdout) == (0, "joined\n"), r.stderr
    r = rl("exec", "-u", "1000:1000", admin_ctr, "id", "-u", timeout=30)
    assert (r.returncode, r.stdout) == (0, "1000\n"), r.stderr
