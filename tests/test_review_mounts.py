"""Review of issue 10: a mount point that changes while a container starts.

A container sharing a volume with another one can swap a directory of it for
a symlink between rl's check of a mount destination (secure_join) and the
mount itself. Before the fix rl then created the mount point by its path,
following the symlink out of the root into the host's file system, and
mounted there (the refused /proc, /dev targets were bypassed the same way).
The race is made deterministic here: secure_join swaps the component right
after resolving it, in a user and mount namespace of the test's own.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import os, sys
    from rootless.runtime import mounts
    from rootless.errors import RlError
    from rootless.runtime.spec import Mount

    root, outside, source, dest, swap_to = sys.argv[1:6]
    original = mounts.secure_join

    def racing(rootfs, unsafe):
        resolved = original(rootfs, unsafe)
        if unsafe == dest:  # the attacker wins the race, right after the check
            sub = os.path.join(rootfs, "data/sub")
            os.rename(sub, sub + ".old")
            os.symlink(swap_to, sub)
        return resolved

    mounts.secure_join = racing
    try:
        mounts.apply_mount(root, Mount(dest, "bind", source, ["bind"]))
    except (RlError, OSError) as e:  # setup() makes an OSError one Error line
        print("refused:", e)
    else:
        print("mounted")
""")


def _race(tmp_path: Path, dest: str, swap_to: str) -> tuple[str, Path]:
    root = tmp_path / "root"
    (root / "data/sub").mkdir(parents=True)
    (root / "proc/sys").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    source = tmp_path / "source"
    if dest == "/data/sub":
        source.mkdir()
    else:
        source.write_text("volume\n")
    swap = swap_to.replace("OUTSIDE", str(outside))
    out = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-c", SCRIPT,
         str(root), str(outside), str(source), dest, swap],
        capture_output=True, text=True, cwd=Path(__file__).parent.parent, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout, outside


def test_a_swapped_parent_never_makes_rl_write_outside_the_root(tmp_path: Path) -> None:
    stdout, outside = _race(tmp_path, "/data/sub/x", "OUTSIDE")
    assert list(outside.iterdir()) == []  # before: outside/x, created on the host
    assert stdout.startswith("refused:")


@pytest.mark.parametrize("swap_to", ["../proc/sys", "/proc/sys"])
def test_a_swapped_target_cannot_lead_a_mount_into_proc(tmp_path: Path, swap_to: str) -> None:
    stdout, _ = _race(tmp_path, "/data/sub", swap_to)
    assert stdout.startswith("refused:")  # before: "mounted", over the rootfs's /proc/sys
    assert "changed while the container was starting" in stdout
