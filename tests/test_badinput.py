"""Bad input and hostile surroundings: stdio closed, full or a pipe nobody reads;
image configs of the wrong shape; templates that do not parse; commands execve refuses.

Whatever happens, rl answers with one `Error:` line and docker's status, or
ends quietly (a reader that left), never with a traceback.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import httpx
import pytest
from imagetools import rootfs_tar, store_files
from test_images import one_line_error
from test_registry import OCI_MANIFEST, Registry, _put_blob, _put_manifest, registry

import support
from rootless.cli.app import cli
from support import RlRunner, RlState

ENOSPC_LINE = "Error: write /dev/stdout: no space left on device"
__all__ = ["registry"]  # test_registry's fixture, used here


@pytest.fixture(autouse=True)
def _host() -> None:
    support.require_userns()
    support.require_newidmap()
    support.require_busybox()


@pytest.fixture(scope="module")
def base_tar(rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rootfs_tar(rootfs, tmp_path_factory.mktemp("badinput") / "base.tar", compress="")


@pytest.fixture(scope="module")
def image(rl_path: Path, rl_state: RlState, base_tar: Path) -> str:
    name = f"badinput-{os.getpid()}"
    _rl(rl_path, rl_state, ["import", "-c", 'CMD ["sh"]', str(base_tar), name], check=True)
    return name


@pytest.fixture(scope="module")
def ctr(rl_path: Path, rl_state: RlState, image: str) -> str:
    """An exited container with output in its log and a change to diff and export."""
    name = f"badinput-ctr-{os.getpid()}"
    _rl(rl_path, rl_state, ["run", "--name", name, image, "sh", "-c", "echo out; echo x > /new"],
        check=True)
    return name


def _rl(rl_path: Path, rl_state: RlState, args: list[str], stdout: int | None = None,
        stderr: int | None = None, shell_redirect: str = "",
        check: bool = False) -> subprocess.CompletedProcess[str]:
    """rl ARGS with the given stdout/stderr fds (default: captured); shell_redirect,
    e.g. '>&-', is applied by sh right before exec, to close a standard fd."""
    cmd = [str(rl_path), *args]
    if shell_redirect:
        cmd = ["sh", "-c", f'exec "$0" "$@" {shell_redirect}', *cmd]
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE if stdout is None else stdout,
                       stderr=subprocess.PIPE if stderr is None else stderr,
                       env={**os.environ, **rl_state.env()}, timeout=90, check=False)
    out = r.stdout.decode(errors="replace") if isinstance(r.stdout, bytes) else ""
    err = r.stderr.decode(errors="replace") if isinstance(r.stderr, bytes) else ""
    result = subprocess.CompletedProcess(cmd, r.returncode, out, err)
    if check:
        assert r.returncode == 0, (args, r.returncode, out, err)
    return result


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[list[str]]:
    """Every command of rl's click group, subgroups included, as argv prefixes."""
    for name in sorted(group.commands):
        sub = group.commands[name]
        yield [*prefix, name]
        if isinstance(sub, click.Group):
            yield from _command_paths(sub, (*prefix, name))


def _invocations(image: str, ctr: str) -> list[list[str]]:
    """Every command's help, and real runs of the commands that print something."""
    helps = [[*path, "--help"] for path in _command_paths(cli)]
    assert len(helps) > 30 and ["run", "--help"] in helps and ["image", "ls", "--help"] in helps
    real = [
        [], ["--version"], ["ps"], ["ps", "-a", "--format", "{{.Names}} {{.Status}}"],
        ["images"], ["image", "ls"], ["info"], ["inspect", ctr], ["image", "inspect", image],
        ["logs", ctr], ["export", ctr], ["diff", ctr], ["history", image], ["wait", ctr],
        ["save", "-q", image], ["run", "--rm", image, "echo", "hi"],
        ["run", "-d", "--rm", image, "true"],
    ]
    return helps + real


@pytest.mark.parametrize("condition", ["closed", "full", "pipe"])
def test_every_command_with_stdout_closed_full_or_unread(
        rl_path: Path, rl_state: RlState, image: str, ctr: str, condition: str) -> None:
    """closed (>&-): as /dev/null, the command's own status. /dev/full: exactly
    `Error: write /dev/stdout: no space left on device`, 125. A pipe whose reader
    has gone: ended by SIGPIPE, without a word (as cat, docker and podman end)."""

    def one(args: list[str]) -> str | None:
        if condition == "closed":
            r = _rl(rl_path, rl_state, args, shell_redirect=">&-")
            ok = r.returncode == 0 and r.stderr == ""
        elif condition == "full":
            with open("/dev/full", "wb") as full:
                r = _rl(rl_path, rl_state, args, stdout=full.fileno())
            ok = r.returncode == 125 and r.stderr == ENOSPC_LINE + "\n"
        else:
            read_end, write_end = os.pipe()
            os.close(read_end)
            try:
                r = _rl(rl_path, rl_state, args, stdout=write_end)
            finally:
                os.close(write_end)
            ok = r.returncode == -signal.SIGPIPE and r.stderr == ""
        return None if ok else f"rl {' '.join(args)}: {r.returncode} {r.stderr!r}"

    with ThreadPoolExecutor(max_workers=3) as pool:
        failures = [f for f in pool.map(one, _invocations(image, ctr)) if f]
    assert not failures, "\n".join(failures)


def test_stderr_closed_or_full_keeps_the_status(rl_path: Path, rl_state: RlState,
                                                image: str, ctr: str) -> None:
    """With stderr closed (2>&-) or full, every failure still has its status, and a
    socket rl opens can never become its fd 2 (the container's stderr went there)."""
    cases = [
        (["inspect", "nosuch-ctr"], 1),
        (["ps", "--format", "{{"], 125),
        (["run", "--rm", image, "sh", "-c", "exit 3"], 3),
        (["run", "--rm", image, "nosuch-command"], 127),
        (["logs", ctr], 0),
    ]
    for args, code in cases:
        r = _rl(rl_path, rl_state, args, shell_redirect="2>&-")
        assert r.returncode == code, (args, r.returncode, r.stdout)
        with open("/dev/full", "wb") as full:
            r = _rl(rl_path, rl_state, args, stderr=full.fileno())
        assert r.returncode == code, (args, r.returncode, r.stdout)
    r = _rl(rl_path, rl_state, ["run", "--rm", image, "sh", "-c", "echo err >&2; echo out"],
            shell_redirect="2>&-")
    assert (r.returncode, r.stdout) == (0, "out\n")
    r = _rl(rl_path, rl_state, ["run", "--rm", image, "echo", "hi"], shell_redirect="<&- >&-")
    assert (r.returncode, r.stderr) == (0, "")


def test_a_reader_that_leaves_ends_rl_run_quietly(rl: RlRunner, rl_path: Path,
                                                 rl_state: RlState, image: str) -> None:
    """`rl run … | head -1`: rl leaves at its next write, by SIGPIPE and without a
    word, and the container goes on without a client (its output still in the log),
    as docker's does."""
    proc = subprocess.Popen(
        [str(rl_path), "run", "--name", "quitter", image, "sh", "-c",
         "echo one; until [ -e /go ]; do sleep 0.1; done; echo two; sleep 60"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, **rl_state.env()})
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"one\n"
        proc.stdout.close()  # the reader leaves; only then is "two" written
        rl("exec", "quitter", "touch", "/go", check=True)
        try:
            proc.wait(timeout=30)  # unfixed, rl stays until the container exits
        except subprocess.TimeoutExpired:
            pytest.fail("rl run went on after its reader left")
        assert proc.returncode == -signal.SIGPIPE
        assert proc.stderr is not None and proc.stderr.read() == b""
        state = rl("inspect", "-f", "{{.State.Status}}", "quitter", check=True).stdout
        assert state == "running\n"
        assert support.wait_until(lambda: "two" in rl("logs", "quitter").stdout)
    finally:
        proc.kill()
        proc.wait()
        rl("rm", "-f", "quitter")


# -- item 13: what execve refuses, templates, image configs -----------------------------


def test_an_empty_command_is_not_found(rl: RlRunner, base_tar: Path, image: str) -> None:
    """docker (runc): exec: "": executable file not found in $PATH, 127."""
    want = 'Error: exec: "": executable file not found in $PATH'
    assert one_line_error(rl("run", "--rm", image, ""), 127) == want
    rl("import", "-c", 'ENTRYPOINT [""]', base_tar, "empty-entrypoint", check=True)
    assert one_line_error(rl("run", "--rm", "empty-entrypoint"), 127) == want
    cid = rl("run", "-d", image, "sleep", "60", check=True).stdout.strip()
    try:
        assert one_line_error(rl("exec", cid, ""), 127) == want
    finally:
        rl("rm", "-f", cid)


@pytest.mark.parametrize("args", [
    ["ps", "--format", "{{"], ["ps", "-a", "--format", "table {{.ID"], ["images", "--format", "{{"],
    ["inspect", "--format", "{{.State", "nosuch"], ["image", "inspect", "-f", "{{", "x"],
    ["info", "--format", "{{"], ["stats", "--no-stream", "--format", "{{"],
])
def test_a_template_that_does_not_parse_is_an_error(rl: RlRunner, args: list[str]) -> None:
    """docker: `template parsing error: template: :1: unclosed action`, before any data."""
    assert one_line_error(rl(*args), 125) == (
        "Error: template parsing error: template: :1: unclosed action")


def test_templates_parse_as_go_does(rl: RlRunner, ctr: str) -> None:
    assert rl("ps", "--format", "{{foo}}").stderr == (
        'Error: template parsing error: template: :1: function "foo" not defined\n')
    assert "missing value for command" in one_line_error(rl("ps", "--format", "{{ }}"), 125)
    assert "cannot render {{range .Mounts}}" in one_line_error(
        rl("inspect", "-f", "{{range .Mounts}}{{end}}", ctr), 125)
    out = rl("inspect", "-f", "{{- /* state */ -}}  {{.State.Status -}} \n!", ctr, check=True)
    assert out.stdout == "exited!\n"
    assert rl("ps", "-a", "--format", "}} {{json .Names}}", "--filter", f"name={ctr}",
              check=True).stdout == f'}}}} "{ctr}"\n'


def image_files(rl_state: RlState) -> set[str]:
    """The store's blobs and layers (containers/ changes as --rm containers go)."""
    return {f for f in store_files(rl_state.data_home) if not f.startswith("containers/")}


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def docker_archive(dest: Path, layer: bytes, config: object, tag: str) -> Path:
    cfg = json.dumps(config).encode()
    with tarfile.open(dest, "w") as tf:
        _add(tf, f"{_sha(cfg)[7:]}.json", cfg)
        _add(tf, "layer.tar", layer)
        _add(tf, "manifest.json", json.dumps([{
            "Config": f"{_sha(cfg)[7:]}.json", "RepoTags": [tag],
            "Layers": ["layer.tar"]}]).encode())
    return dest


def oci_archive(dest: Path, layer: bytes, config: object, ref: str) -> Path:
    blob = gzip.compress(layer)
    cfg = json.dumps(config).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _sha(cfg), "size": len(cfg)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _sha(blob), "size": len(blob)}]}).encode()
    with tarfile.open(dest, "w") as tf:
        _add(tf, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        for data in (cfg, blob, manifest):
            _add(tf, f"blobs/sha256/{_sha(data)[7:]}", data)
        _add(tf, "index.json", json.dumps({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": _sha(manifest), "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": ref}}]}).encode())
    return dest


def image_config(layer: bytes, **changes: object) -> dict[str, object]:
    """A valid config; changes: top-level fields, or `config_X` for config.X (None: deleted)."""
    cfg: dict[str, object] = {"architecture": "amd64", "os": "linux",
                              "created": "2024-01-02T03:04:05.123456789Z",
                              "config": {"Cmd": ["sh"], "Env": ["PATH=/bin:/usr/bin"]},
                              "rootfs": {"type": "layers", "diff_ids": [_sha(layer)]},
                              "history": [{"created_by": "test"}]}
    inner = cfg["config"]
    assert isinstance(inner, dict)
    for key, value in changes.items():
        target, field = (inner, key[7:]) if key.startswith("config_") else (cfg, key)
        if value is None:
            target.pop(field, None)
        else:
            target[field] = value
    return cfg


BAD_CONFIGS: dict[str, tuple[dict[str, object], str]] = {
    "cmd-dict": ({"config_Cmd": {"a": 1}},
                 "config.Cmd: expected an array of strings, got an object"),
    "env-string": ({"config_Env": "PATH=/bin"},
                   "config.Env: expected an array of strings, got a string"),
    "user-int": ({"config_User": 0}, "config.User: expected a string, got a number"),
    "env-novalue": ({"config_Env": ["PATH=/bin", "=novalue"]},
                    'config.Env[1]: "=novalue" is not NAME=VALUE'),
    "entrypoint-nul": ({"config_Entrypoint": ["/bin/sh\u0000"]},
                       "config.Entrypoint[0]: contains a NUL byte"),
    "cmd-numbers": ({"config_Cmd": ["echo", 1]},
                    "config.Cmd: expected an array of strings, got an array holding a number"),
    "labels": ({"config_Labels": {"a": 1}}, 'config.Labels["a"]: expected a string'),
    "ports": ({"config_ExposedPorts": {"80/tcp": "yes"}},
              'config.ExposedPorts["80/tcp"]: expected an object, got a string'),
    "args-escaped": ({"config_ArgsEscaped": "no"}, "config.ArgsEscaped: expected a boolean"),
    "config-list": ({"config": []}, "config: expected an object, got an array"),
    "created": ({"created": "yesterday"}, 'created: "yesterday" is not an RFC 3339 date-time'),
    "no-os": ({"os": None}, "os: missing (a required field)"),
    "no-rootfs": ({"rootfs": None}, "rootfs: missing (a required field)"),
    "arch-number": ({"architecture": 64}, "architecture: expected a string, got a number"),
    "rootfs-type": ({"rootfs": {"type": "tarball", "diff_ids": []}},
                    'rootfs.type: "tarball" is not "layers"'),
    "diff-id": ({"rootfs": {"type": "layers", "diff_ids": ["sha256:abc"]}},
                'rootfs.diff_ids[0]: "sha256:abc" is not a sha256 digest'),
    "history": ({"history": [{"empty_layer": "true"}]},
                "history[0].empty_layer: expected a boolean, got a string"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_load_refuses_a_config_of_the_wrong_shape(rl: RlRunner, base_tar: Path, tmp_path: Path,
                                                  rl_state: RlState, case: str) -> None:
    """Caught at load, one line naming the field (docker-archive and oci-archive),
    nothing kept; not at run (`rl run` would have met a dict as its command)."""
    layer = base_tar.read_bytes()
    changes, expected = BAD_CONFIGS[case]
    config = image_config(layer, **changes)
    before = image_files(rl_state)
    for path in (docker_archive(tmp_path / "d.tar", layer, config, f"bad/{case}:d"),
                 oci_archive(tmp_path / "o.tar", layer, config, f"bad/{case}:o")):
        msg = one_line_error(rl("load", "-q", "-i", path), 125)
        assert msg.startswith(f"Error: malformed image config: {expected}"), (case, msg)
        assert image_files(rl_state) == before, case


def test_configs_with_nulls_and_extra_fields_load_and_run(rl: RlRunner, base_tar: Path,
                                                          tmp_path: Path) -> None:
    """`docker import` writes null for every unset field, docker adds its own keys:
    both are fine (Go's decoder takes them)."""
    layer = base_tar.read_bytes()
    config = image_config(layer, config_Env=None, config_Entrypoint=None, config_Labels=None,
                          config_Volumes=None, config_OnBuild=None, container_config={},
                          docker_version="24.0.5", config_Cmd=["echo", "nulls ok"])
    inner = config["config"]
    assert isinstance(inner, dict)
    inner.update(Env=None, Entrypoint=None, Labels=None, Volumes=None, OnBuild=None)
    rl("load", "-q", "-i", docker_archive(tmp_path / "n.tar", layer, config, "ok/nulls:1"),
       check=True)
    assert rl("run", "--rm", "ok/nulls:1", check=True).stdout == "nulls ok\n"


def test_import_and_commit_check_the_configs_they_make(rl: RlRunner, base_tar: Path,
                                                       image: str, rl_state: RlState) -> None:
    before = image_files(rl_state)
    msg = one_line_error(rl("import", "-c", "ENV =novalue", base_tar, "bad-env"), 125)
    assert msg == "Error: invalid --change 'ENV =novalue': ENV names can not be blank"
    assert image_files(rl_state) == before
    cid = rl("create", image, "true", check=True).stdout.strip()
    try:
        msg = one_line_error(rl("commit", "-c", 'ENTRYPOINT ["a\\u0000b"]', cid, "bad-ep"), 125)
        assert msg == "Error: malformed image config: config.Entrypoint[0]: contains a NUL byte"
    finally:
        rl("rm", cid)
    assert "bad-ep" not in rl("images", check=True).stdout


def test_pull_refuses_a_config_of_the_wrong_shape(rl: RlRunner, registry: Registry, image: str,
                                                 rl_state: RlState) -> None:
    repo = "bad/shape"
    rl("push", "-q", "--tls-verify=false", image, f"{registry.host}/{repo}:good", check=True)
    good = httpx.get(registry.url(f"/v2/{repo}/manifests/good"),
                     headers={"Accept": OCI_MANIFEST}).json()
    config = httpx.get(registry.url(f"/v2/{repo}/blobs/{good['config']['digest']}")).json()
    config["config"]["Cmd"] = {"a": 1}
    body = json.dumps(config).encode()
    digest = _put_blob(registry, repo, body)
    _put_manifest(registry, repo, "bad", {**good, "config": {
        **good["config"], "digest": digest, "size": len(body)}}, OCI_MANIFEST)
    before = image_files(rl_state)
    msg = one_line_error(rl("pull", "-q", "--tls-verify=false", f"{registry.host}/{repo}:bad"),
                         125)
    assert msg == ("Error: malformed image config: config.Cmd: expected an array of strings, "
                   "got an object")
    assert image_files(rl_state) == before
