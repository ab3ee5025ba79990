"""Typed options and the spec generator (issue 11), in-process.

The golden records in tests/golden/specgen.json were written by the
build_config that specgen replaced (RL_RECORD_SPECS=1), from the same `rl
run` arguments: the generator must give the same record byte for byte.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from rootless import paths
from rootless.cli import app as cli_mod
from rootless.engine import containers as api
from rootless.engine import store
from rootless.runtime import cgroups, idmap, seccomp
from rootless.runtime.spec import IDMapping

GOLDEN = Path(__file__).parent / "golden" / "specgen.json"
RECORD = os.environ.get("RL_RECORD_SPECS") == "1"
CID = "5eed" * 16

# `rl run` arguments (after "run"), from a directory holding rootfs/, data/,
# envf and profile.json; {abs} is that directory. Each with a console size.
CASES: dict[str, tuple[list[str], tuple[int, int] | None]] = {
    "minimal": (["--rootfs", "{abs}/rootfs", "true"], None),
    "busy": ([
        "--rootfs", "--name", "busy1", "-e", "A=1", "-e", "FROM_ENV",
        "-e", "UNSET_KEY", "--env-file", "./envf", "-e", "OVERRIDDEN=flag", "-w", "/srv",
        "-u", "1000:1000", "--entrypoint", "/bin/sh -c", "-h", "myhost",
        "-v", "./data:/data:ro", "-v", "{abs}/data:/abs:rslave,z", "--tmpfs", "/run:exec,size=1m",
        "--tmpfs", "/tmp2", "--read-only", "--cap-add", "NET_ADMIN", "--cap-drop", "CHOWN",
        "-t", "-i", "--network", "none", "--ulimit", "nofile=100:200",
        "--ulimit", "nproc=unlimited", "--security-opt", "no-new-privileges",
        "--stop-signal", "INT", "--stop-timeout", "3", "-l", "a=b", "-l", "c",
        "--group-add", "10", "--rm", "./rootfs", "echo hi", "there"], (24, 80)),
    "profile": (["--rootfs", "--security-opt", "seccomp=./profile.json",
                 "--network", "host", "--init", "./rootfs", "sh"], None),
    "network": (["--rootfs", "--security-opt", "seccomp=unconfined",
                 "-p", "8080:80", "-p", "127.0.0.1::53/udp", "--expose", "90-91", "-P",
                 "--dns", "1.1.1.1", "--add-host", "h:1.2.3.4", "--network-bandwidth",
                 "10mbit", "--network", "slirp4netns:mtu=1500", "-t", "{abs}/rootfs", "true"],
                None),
    "cgroups-off": (["--rootfs", "--cgroups", "disabled", "--stop-timeout", "-1",
                     "--security-opt", "no-new-privileges:false", "{abs}/rootfs", "true"],
                    None),
    "limits": (["--rootfs", "-m", "64m", "--pids-limit", "50", "--memory-swap", "-1",
                "{abs}/rootfs", "true"], None),
}

# Options with an image's defaults (no command line makes these: rl run IMAGE does).
IMAGE_CASES: dict[str, dict[str, Any]] = {
    "image-defaults": {"command": []},
    "image-override": {"command": ["ls", "-l"], "entrypoint": "", "env": ["PATH=/mine"],
                       "user": "nobody", "workdir": "/w", "stop_signal": "9",
                       "publish_all": True},
}
IMAGE = {"entrypoint": ["/entry"], "cmd": ["--serve"], "env": ["PATH=/img", "IMG=1"],
         "workdir": "/app", "user": "app", "stop_signal": "SIGQUIT", "exposed": ["80/tcp"]}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The directory the cases name, and a fixed id, time and id map for the record."""
    (tmp_path / "rootfs" / "etc").mkdir(parents=True)
    (tmp_path / "rootfs" / "etc" / "hosts").write_text("")
    (tmp_path / "data").mkdir()
    (tmp_path / "envf").write_text("# comment\nFROM_FILE=1\n\nOVERRIDDEN=file\n")
    (tmp_path / "profile.json").write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mknod"], "action": "SCMP_ACT_ERRNO"}]}))
    monkeypatch.setattr(store, "new_id", lambda: CID)
    maps = [IDMapping(0, 1000, 1), IDMapping(1, 100000, 65536)]
    monkeypatch.setattr(idmap, "plan", lambda: idmap.IdMapPlan("subuid", "", maps, maps))
    # Limits are checked against the host's cgroups: not this test's subject.
    monkeypatch.setattr(cgroups, "probe", lambda: None)
    monkeypatch.setattr(cgroups, "require", lambda *_a, **_k: None)
    return tmp_path


def _normal(cfg: store.ContainerConfig, base: Path, profile: Path) -> Any:
    """The record as JSON, with what differs between runs replaced by markers."""
    caps = cfg.spec.process.capabilities.bounding
    d = cfg.to_dict()
    d["created"] = 0
    sc = d["spec"]["linux"].get("seccomp")
    if sc is not None:
        from rootless.runtime.spec import to_json

        if sc == to_json(seccomp.default_profile(caps)):
            d["spec"]["linux"]["seccomp"] = "<default>"
        elif sc == to_json(seccomp.load_profile(str(profile), caps)):
            d["spec"]["linux"]["seccomp"] = "<profile.json>"
    text = json.dumps(d, sort_keys=True)
    text = text.replace(str(paths.container_run_dir(CID)), "<run>").replace(str(base), "<tmp>")
    return json.loads(text)


def _generate_argv(argv: list[str], size: tuple[int, int] | None, base: Path,
                   monkeypatch: pytest.MonkeyPatch, warnings: list[str]
                   ) -> store.ContainerConfig:
    # The old code resolved -e KEY, --env-file and relative paths in the
    # calling process: its environment and working directory.
    monkeypatch.chdir(base)
    monkeypatch.setenv("FROM_ENV", "yes")
    monkeypatch.delenv("UNSET_KEY", raising=False)
    opts, _flags = cli_mod.parse_run(argv, size)
    return api.build_config(api.RunOptions(**opts), warnings.append)


def _generate_image(change: dict[str, Any], base: Path, warnings: list[str]
                    ) -> store.ContainerConfig:
    opts = api.RunOptions(rootfs=str(base / "rootfs"), image="example/img",
                          image_defaults=api.ImageDefaults(**IMAGE), **change)
    return api.build_config(opts, warnings.append)


def _check(name: str, got: Any) -> None:
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    if RECORD:
        golden[name] = got
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
        return
    assert got == golden[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_record_of_rl_run_arguments(name: str, workdir: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    argv, size = CASES[name]
    argv = [a.replace("{abs}", str(workdir)) for a in argv]
    warnings: list[str] = []
    cfg = _generate_argv(argv, size, workdir, monkeypatch, warnings)
    _check(name, {"record": _normal(cfg, workdir, workdir / "profile.json"),
                  "warnings": warnings})


@pytest.mark.parametrize("name", sorted(IMAGE_CASES))
def test_the_record_of_image_defaults(name: str, workdir: Path) -> None:
    warnings: list[str] = []
    cfg = _generate_image(IMAGE_CASES[name], workdir, warnings)
    _check(name, {"record": _normal(cfg, workdir, workdir / "profile.json"),
                  "warnings": warnings})
