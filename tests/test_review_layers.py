"""What an attacker's read of the layers change (issue 11) found, each held here.

- `rl run` and `rl create` from a working directory that was removed: only a
  relative path fails, with one Error line (it was a traceback).
- A command name that is not UTF-8 gets its Error line (the report pipe
  used to drop a message it could not encode).
- A seccomp profile that refuses read and close still runs `rl run` (rl's
  own launch has no gate, so PID 1 makes no syscall after the filter but
  the exec).
- A damaged record whose image_id is not a string does not break rmi or
  prune for the others.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from imagetools import rootfs_tar
from test_images import one_line_error

import support
from support import RlRunner, RlState


@pytest.fixture(autouse=True)
def _host() -> None:
    support.require_userns()
    support.require_newidmap()
    support.require_busybox()


def _in_removed_dir(rl_path: Path, rl_state: RlState, tmp_path: Path,
                    args: list[str]) -> subprocess.CompletedProcess[str]:
    gone = tmp_path / "gone"
    gone.mkdir()
    script = 'cd "$1" && rmdir "$1" && shift && exec "$@"'
    return subprocess.run(["sh", "-c", script, "sh", str(gone), str(rl_path), *args],
                          env={**os.environ, **rl_state.env()}, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.parametrize("verb", ["run", "create"])
def test_a_removed_working_directory_fails_only_relative_paths(
        rl_path: Path, rl_state: RlState, rootfs: Path, tmp_path: Path, verb: str) -> None:
    rm = ["--rm"] if verb == "run" else []
    ok = _in_removed_dir(rl_path, rl_state, tmp_path, [verb, *rm, "--rootfs", str(rootfs), "true"])
    assert ok.returncode == 0, ok.stderr
    assert "Traceback" not in ok.stderr
    bad = _in_removed_dir(rl_path, rl_state, tmp_path,
                          [verb, *rm, "-v", "./data:/data", "--rootfs", str(rootfs), "true"])
    assert one_line_error(bad, 125) == "Error: ./data: getwd: no such file or directory"
    if verb == "create":
        subprocess.run([str(rl_path), "rm", ok.stdout.strip()], env={**os.environ,
                       **rl_state.env()}, capture_output=True, check=True)


def test_a_command_name_that_is_not_utf8_has_its_error_line(
        rl_path: Path, rl_state: RlState, rootfs: Path) -> None:
    r = subprocess.run([str(rl_path), "run", "--rm", "--rootfs", str(rootfs), b"\xffnope"],
                       env={**os.environ, **rl_state.env()}, capture_output=True, timeout=60,
                       check=False)
    assert r.returncode == 127, r.stderr
    lines = r.stderr.decode(errors="replace").strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert "nope" in lines[0] and "executable file not found" in lines[0]


def test_a_profile_refusing_read_and_close_still_runs(rl: RlRunner, rootfs: Path,
                                                      tmp_path: Path) -> None:
    profile = tmp_path / "no-read.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["read", "close"], "action": "SCMP_ACT_ERRNO"}],
    }))
    r = rl("run", "--rm", "--security-opt", f"seccomp={profile}", "--rootfs", rootfs, "true")
    assert r.returncode == 0, r.stderr


def test_a_record_with_an_odd_image_id_blocks_no_image_command(
        rl: RlRunner, rl_state: RlState, rootfs: Path, tmp_path: Path) -> None:
    name = f"review-layers-{os.getpid()}"
    rl("import", rootfs_tar(rootfs, tmp_path / "base.tar", compress=""), name, check=True)
    cid = rl("create", name, "true", check=True).stdout.strip()
    cfg = rl_state.data_home / "rl" / "containers" / cid / "config.json"
    data = json.loads(cfg.read_text())
    data["image_id"] = ["not", "a", "string"]
    cfg.write_text(json.dumps(data))
    for args in (["image", "prune", "-a", "-f"], ["rmi", name]):
        r = rl(*args)
        assert r.returncode in (0, 1), (args, r.returncode, r.stderr)
        assert all(ln.startswith("Error: ") for ln in r.stderr.strip().splitlines()), r.stderr
    rl("rm", "-f", cid, check=True)
