"""Typed options and the spec generator (issue 11), in-process.

The golden records in tests/golden/specgen.json were written by the
build_config that specgen replaced (commit d6ae830, RL_RECORD_SPECS=1), from
the same `rl run` arguments, which it resolved in its own process: the face
and the generator must give the same record byte for byte.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rootless import paths
from rootless.cli import app as cli_mod
from rootless.cli import resolve
from rootless.engine import containers as api
from rootless.engine import specgen, store
from rootless.engine.options import Bind, CreateOptions, ExecOptions, StopOptions
from rootless.errors import InvalidArgument, RlError
from rootless.image.imageconfig import ImageDefaults
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
    # The face resolves -e KEY, --env-file and relative paths with the
    # environment and cwd it is given; this process's are elsewhere.
    monkeypatch.chdir("/")
    monkeypatch.delenv("FROM_ENV", raising=False)
    monkeypatch.setenv("UNSET_KEY", "not the client's")
    opts, _flags = cli_mod.parse_run(argv, size, {"FROM_ENV": "yes"}, str(base))
    return specgen.generate(opts, warnings.append)


def _generate_image(change: dict[str, Any], base: Path, warnings: list[str]
                    ) -> store.ContainerConfig:
    opts = CreateOptions(rootfs=str(base / "rootfs"), image="example/img",
                         image_defaults=ImageDefaults(**IMAGE), **change)
    return specgen.generate(opts, warnings.append)


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


# -- the face resolves; the engine refuses what is unresolved -------------------------


def test_the_face_resolves_env_and_paths_from_what_it_is_given(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")
    monkeypatch.setenv("HOME_KEY", "this process's")
    argv = ["-e", "HOME_KEY", "-e", "GONE", "-e", "X=1", "--env-file", "envf",
            "-v", "./data:/d", "-v", "/abs:/a", "--security-opt", "seccomp=profile.json",
            "--security-opt", "seccomp=unconfined", "--rootfs", "rootfs", "true"]
    opts, flags = cli_mod.parse_run(argv, None, {"HOME_KEY": "client's"}, str(workdir))
    assert opts.env == ["FROM_FILE=1", "OVERRIDDEN=file", "HOME_KEY=client's", "X=1"]
    assert opts.rootfs == str(workdir / "rootfs")
    assert opts.volumes == [Bind("./data:/d", str(workdir / "data")), Bind("/abs:/a")]
    assert opts.security_opt == [f"seccomp={workdir / 'profile.json'}", "seccomp=unconfined"]
    assert flags == {"detach": False, "tty": False, "interactive": False,
                     "pull_policy": "missing", "rootfs": True}
    # What the full CLI sends to the fork server comes back the same.
    assert CreateOptions(**json.loads(json.dumps(dataclasses.asdict(opts)))) == opts


def test_the_face_keeps_the_users_words_in_its_errors(workdir: Path) -> None:
    with pytest.raises(RlError) as exc:
        cli_mod.parse_run(["--rootfs", "./nope", "true"], None, {}, str(workdir))
    assert exc.value.message == "rootfs './nope' does not exist or is not a directory"
    with pytest.raises(RlError) as exc:
        cli_mod.parse_run(["--env-file", "missing", "--rootfs", "rootfs", "true"], None, {},
                          str(workdir))
    assert exc.value.message == "open missing: No such file or directory"
    assert exc.value.exit_code == 125


def test_exec_env_is_resolved_by_the_face() -> None:
    assert resolve.env(["A", "B", "C=3", "", "=x"], {"A": "1"}) == ["A=1", "C=3", "", "=x"]


@pytest.mark.parametrize(("change", "message"), [
    ({"env": ["BARE"]}, "invalid environment variable: BARE: no value"),
    ({"env": ["=x"]}, "invalid environment variable: =x"),
    ({"rootfs": "rootfs"}, "rootfs 'rootfs' is not an absolute path"),
    ({"volumes": [Bind("./data:/d")]}, "invalid volume specification: './data:/d': the host "
                                       "path must be absolute"),
    ({"volumes": [Bind("da/ta:/d")]}, 'create da/ta: "da/ta" includes invalid characters'),
    ({"security_opt": ["seccomp=p.json"]}, "invalid --security-opt: seccomp=p.json: the "
                                           "profile path must be absolute"),
    ({"stop_timeout": -2}, "invalid stop timeout: -2"),
    ({"group_add": ["wheel"]}, "--group-add wheel: only numeric group ids are supported"),
    ({"network": "container:"}, "--network container: needs a container name"),
])
def test_the_engine_refuses_bad_values_without_the_cli(workdir: Path, change: dict[str, Any],
                                                       message: str) -> None:
    opts = CreateOptions(rootfs=str(workdir / "rootfs"), command=["true"])
    for k, v in change.items():
        setattr(opts, k, v)
    with pytest.raises(InvalidArgument) as exc:
        specgen.generate(opts)
    assert exc.value.message.startswith(message), exc.value.message
    assert (exc.value.exit_code, exc.value.http_status) == (125, 400)


def test_exec_and_stop_options_check_themselves() -> None:
    with pytest.raises(InvalidArgument, match="the working directory 'w' is invalid"):
        ExecOptions(["true"], workdir="w")
    with pytest.raises(InvalidArgument, match="invalid value for --time: -2"):
        StopOptions(timeout=-2)
    assert StopOptions(-1, 9) == StopOptions(timeout=-1, signal=9)


def test_every_create_option_is_a_run_flag_of_its_name() -> None:
    """The flag's destination is the field's name (the kw -> field map is generic)."""
    params = {p.name for p in cli_mod.run.params}
    fields = {f.name for f in dataclasses.fields(CreateOptions)}
    assert fields - params <= cli_mod._DERIVED, fields - params - cli_mod._DERIVED
    limits = {f.name for f in dataclasses.fields(api.LimitFlags)}
    assert limits <= params, limits - params


def test_the_engine_loads_no_face() -> None:
    code = ("import sys, rootless.engine.containers, rootless.engine.supervisor, "
            "rootless.engine.specgen; print(' '.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    loaded = [m for m in out if m.split(".")[0] in ("click", "rich")
              or m.startswith(("rootless.cli", "netstack.cli")) or m == "rootless.forkserver"]
    assert loaded == []
