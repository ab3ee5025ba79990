"""`rl info`: what the host offers, checked against the host itself."""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path

import support
from support import RlRunner


def test_info_reports_the_host(rl: RlRunner) -> None:
    data = json.loads(rl("info", "--format", "json", check=True).stdout)
    assert data["host"]["kernel"] == platform.release()
    assert data["host"]["uid"] == os.getuid()
    assert data["host"]["rootless"] is (os.geteuid() != 0)
    assert data["userns"]["unprivileged"] is support.userns_works()
    ranges = [[r.start, r.count] for r in support.subid_ranges("uid")]
    assert data["idmap"]["subuid"] == ranges
    expected_mode = "subuid" if ranges and support.have_newidmap() else "single"
    assert data["idmap"]["mode"] == expected_mode
    assert data["idmap"]["uid_map"][0] == f"0:{os.getuid()}:1"
    assert data["idmap"]["newuidmap"] == shutil.which("newuidmap")
    assert data["fuse"]["dev_fuse"] is support.dev_openable_rw("/dev/fuse")
    assert data["network"]["slirp4netns"] == shutil.which("slirp4netns")
    assert data["store"]["runtime_dir"] == os.path.join(os.environ["XDG_RUNTIME_DIR"], "rl")
    assert data["store"]["data_dir"] == os.path.join(os.environ["XDG_DATA_HOME"], "rl")
    with open("/proc/self/mounts") as f:
        has_v1 = any(line.split()[2] == "cgroup" for line in f)
    assert data["cgroups"]["version"] in (("hybrid", "v1") if has_v1 else ("v2",))


def test_info_counts_container_records_not_the_lock(rl: RlRunner, rootfs: Path) -> None:
    def count() -> int:
        return int(rl("info", "--format", "{{.store.containers}}", check=True).stdout)

    before = count()
    rl("create", "--name", "counted", "--rootfs", rootfs, "true", check=True)
    try:
        # the store's containers.lock exists now: it is no container
        assert count() == before + 1
    finally:
        rl("rm", "counted", check=True)
    assert count() == before


def test_info_text_and_template(rl: RlRunner) -> None:
    text = rl("info", check=True).stdout
    assert text.startswith("host:\n  kernel: ")
    assert "idmap:\n  mode: " in text
    assert rl("info", "--format", "{{.host.arch}}", check=True).stdout.strip() == \
        platform.machine()
    r = rl("info", "--format", "{{.nope}}")
    assert r.returncode == 125 and "can't evaluate field nope" in r.stderr
