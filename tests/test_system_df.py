"""`rl system df [-v]`: docker's four rows and -v's sections, with sizes that follow
what containers and volumes really hold (subordinate-owned files included)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from imagetools import rootfs_tar

import support
from support import RlRunner


def rows(rl: RlRunner) -> dict[str, dict[str, str]]:
    out = rl("system", "df", "--format", "json", check=True).stdout.splitlines()
    return {r["Type"]: r for r in map(json.loads, out)}


def test_system_df(rl: RlRunner, rootfs: Path, tmp_path: Path, rl_path: Path) -> None:
    support.require_userns()
    support.require_newidmap()
    tar = rootfs_tar(rootfs, tmp_path / "img.tar")
    subprocess.run([str(rl_path), "import", str(tar), "dfimage"], check=True,
                   capture_output=True)
    table = rl("system", "df", check=True).stdout.splitlines()
    assert table[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert [line[:13].strip() for line in table[1:]] == [
        "Images", "Containers", "Local Volumes", "Build Cache"]
    before = rows(rl)
    # a container whose non-root user writes 2 MB in its layer, and a volume with 3 MB
    rl("run", "--name", "dfc", "-v", "dfvol:/vol", "dfimage", "sh", "-c",
       "dd if=/dev/zero of=/vol/v bs=1M count=3 2>/dev/null; "
       "mkdir /home/user/d && chown 1000:1000 /home/user/d && chmod 700 /home/user/d && "
       "su -s /bin/sh user -c 'dd if=/dev/zero of=/home/user/d/f bs=1M count=2 2>/dev/null'",
       check=True)
    try:
        after = rows(rl)
        assert int(after["Containers"]["TotalCount"]) == int(before["Containers"]["TotalCount"]) + 1
        assert int(after["Local Volumes"]["TotalCount"]) >= 1
        assert int(after["Images"]["Active"]) >= 1
        v = rl("system", "df", "-v", check=True).stdout
        assert "Images space usage:" in v and "Containers space usage:" in v
        assert "Local Volumes space usage:" in v and "Build cache usage:" in v
        line = next(x for x in v.splitlines() if x.startswith("dfvol "))
        links, size = line.split()[1:]
        assert links == "1" and size.endswith("MB") and float(size[:-2]) >= 3.0, line
        ctr = next(x for x in v.splitlines() if x.rstrip().endswith(" dfc"))
        size = next(c for c in ctr.split("   ") if c.strip().endswith("MB")).strip()
        assert float(size[:-2]) >= 2.0, ctr  # the subuid-owned file is counted
        img = next(x for x in v.splitlines() if x.split()[:1] in (["dfimage"],
                                                                   ["localhost/dfimage"]))
        assert img.split()[-1] == "1"  # one container uses it
    finally:
        rl("rm", "-f", "dfc")
        rl("volume", "rm", "dfvol")
    final = rows(rl)
    assert final["Containers"]["TotalCount"] == before["Containers"]["TotalCount"]
