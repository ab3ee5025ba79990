"""docker's management spellings (`rl container ...`, `rl system ...`), container
prune, and `rl version`: real containers, real records."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import pytest
from imagetools import rootfs_tar

import support
from support import RlRunner, RlState


@pytest.fixture(autouse=True)
def _needs_userns() -> None:
    support.require_userns()


def test_container_group_is_the_same_commands(rl: RlRunner, rootfs: Path) -> None:
    out = rl("container", "run", "--name", "grp", "--rootfs", rootfs, "echo", "via-group",
             check=True)
    assert out.stdout == "via-group\n"
    ls = rl("container", "ls", "-a", "--format", "{{.Names}} {{.State}}", check=True).stdout
    assert "grp exited" in ls.splitlines()
    assert rl("container", "list", "-aq", check=True).stdout == rl("ps", "-aq",
                                                                 check=True).stdout
    assert rl("container", "logs", "grp", check=True).stdout == "via-group\n"
    info = json.loads(rl("container", "inspect", "grp", check=True).stdout)[0]
    assert info["Name"] == "/grp"
    # container inspect is containers only: an image name is no container
    r = rl("container", "inspect", "nosuch")
    assert r.returncode == 1 and "no such container" in r.stderr.lower()
    rl("container", "rm", "grp", check=True)
    assert "grp" not in rl("ps", "-a", check=True).stdout


def test_container_prune_removes_only_stopped_ones(rl: RlRunner, rootfs: Path,
                                                   rl_state: RlState) -> None:
    created = rl("create", "--rootfs", rootfs, "true", check=True).stdout.strip()
    exited = rl("run", "-d", "--rootfs", rootfs, "true", check=True).stdout.strip()
    assert rl("wait", exited, check=True).stdout.strip() == "0"
    running = rl("run", "-d", "--rootfs", rootfs, "sleep", "100", check=True).stdout.strip()
    # a damaged record is left alone and blocks nothing
    damaged = rl_state.data_home / "rl" / "containers" / ("d" * 64)
    damaged.mkdir()
    (damaged / "config.json").write_text("{not json")
    try:
        out = rl("container", "prune", "-f", check=True).stdout.splitlines()
        assert out[0] == "Deleted Containers:"
        assert sorted(out[1:3]) == sorted([created, exited]) and out[3] == ""
        assert out[-1].startswith("Total reclaimed space: ")
        left = rl("ps", "-aq", "--no-trunc", check=True).stdout.split()
        assert running in left and created not in left and exited not in left
        assert rl("container", "prune", "-f", check=True).stdout.startswith(
            "Total reclaimed space: ")
    finally:
        rl("rm", "-f", running)
        rl("rm", "-f", "d" * 64)


def test_system_prune_takes_containers_then_dangling_images(rl: RlRunner, rootfs: Path,
                                                            tmp_path: Path) -> None:
    rl("import", rootfs_tar(rootfs, tmp_path / "bb.tar"), "prunable:1", check=True)
    iid = rl("image", "inspect", "-f", "{{.Id}}", "prunable:1", check=True).stdout.strip()
    cid = rl("create", "prunable:1", "true", check=True).stdout.strip()
    rl("rmi", "-f", "prunable:1", check=True)  # nameless now, kept for its container
    out = rl("system", "prune", "-f", check=True).stdout
    assert out.startswith(f"Deleted Containers:\n{cid}\n\nDeleted Images:\n"), out
    assert out.splitlines()[-1].startswith("Total reclaimed space: ")
    assert iid not in rl("images", "-q", "--no-trunc", check=True).stdout
    assert rl("system", "info", "--format", "{{.host.arch}}", check=True).stdout.strip() == \
        platform.machine()


def test_version(rl: RlRunner) -> None:
    import rootless

    text = rl("version", check=True).stdout
    assert text.startswith("Client: rl\n Version:") and rootless.__version__ in text
    data = json.loads(rl("version", "--format", "json", check=True).stdout)
    assert data["Client"]["Version"] == rootless.__version__
    assert data["Client"]["Os"] == "linux"
    assert rl("version", "-f", "{{.Client.Version}}", check=True).stdout.strip() == \
        rootless.__version__
    r = rl("version", "-f", "{{.Nope")
    assert r.returncode == 125 and r.stderr.startswith("Error: ")


def _complete(rl_path: Path, rl_state: RlState, words: str) -> list[str]:
    env = {**os.environ, **rl_state.env(), "_RL_COMPLETE": "bash_complete",
           "COMP_WORDS": words, "COMP_CWORD": str(len(words.split(" ")) - 1)}
    r = subprocess.run([str(rl_path)], env=env, capture_output=True, text=True, timeout=60,
                       check=True)
    return [v for line in r.stdout.splitlines() if (v := line.partition(",")[2])]


def test_completion_of_container_and_image_names(rl: RlRunner, rl_path: Path,
                                                 rl_state: RlState, rootfs: Path,
                                                 tmp_path: Path) -> None:
    script = rl("completion", "bash", check=True).stdout
    loaded = subprocess.run(["bash", "-c", f'{script}\ncomplete -p rl'], capture_output=True,
                            text=True, check=True)
    assert "_rl_completion" in loaded.stdout
    for shell in ("zsh", "fish"):
        assert "_RL_COMPLETE" in rl("completion", shell, check=True).stdout
    rl("create", "--name", "webby", "--rootfs", rootfs, "true", check=True)
    rl("import", rootfs_tar(rootfs, tmp_path / "bb.tar"), "complete-me:2", check=True)
    try:
        assert _complete(rl_path, rl_state, "rl rm we") == ["webby"]
        assert _complete(rl_path, rl_state, "rl container stop we") == ["webby"]
        assert _complete(rl_path, rl_state, "rl rmi comp") == ["complete-me:2"]
        assert _complete(rl_path, rl_state, "rl tag comp") == ["complete-me:2"]
        both = _complete(rl_path, rl_state, "rl inspect ")
        assert "webby" in both and "complete-me:2" in both
        assert _complete(rl_path, rl_state, "rl rm zz") == []
    finally:
        rl("rm", "webby")
        rl("rmi", "complete-me:2")
