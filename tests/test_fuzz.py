"""Fuzzing what rl parses: its command line, image configs and layer tars.

The property is the same everywhere: a one-line error with a docker exit
status, or success; never a traceback, never a Python exception's name.
Every test is bounded (fixed example counts, derandomized, no deadline), so
a run costs the same on a loaded machine and fails the same way twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from imagetools import rootfs_tar

import support
from rootless.cli import app as cli_mod
from rootless.errors import NeedsFullCli, RlError
from rootless.image import imageconfig, layers
from rootless.runtime import process, userns
from support import RlRunner, RlState

_BASE = settings(deadline=None, database=None, derandomize=True,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])


def fuzz(examples: int) -> settings:
    return settings(_BASE, max_examples=examples)


# What a user must never see: Python talking instead of rl.
PYTHONISMS = re.compile(r"Traceback|\b[A-Z]\w*(Error|Exception)\b|\[Errno|object has no "
                        r"attribute|NoneType|unhashable|not subscriptable")


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], click.Command]]:
    for name in sorted(group.commands):
        cmd = group.commands[name]
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))


COMMANDS = list(_commands(cli_mod.cli))
OPTIONS = sorted({o for _, c in COMMANDS for p in c.params for o in (*p.opts, *p.secondary_opts)})
WORDS = [*OPTIONS, "--", "-", "", "--help", "-h", "{{", "{{.ID}}", "=", "a=b", "-1", "0", "1.5",
         "99999999999999999999", "always", "never", "true", "false", "json", "table",
         "80:80", "/tmp", "./rel", "sha256:", "sha256:" + "0" * 64, "a/b:c", "UPPER", "x@y"]
token = st.one_of(st.sampled_from(WORDS), st.text(max_size=12))


def _usage_error_ok(err: str) -> bool:
    lines = err.strip().splitlines()
    return (1 <= len(lines) <= 2 and lines[0].startswith("Error: ")
            and all(ln.startswith("See '") for ln in lines[1:]))


@pytest.fixture
def parse_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command's body replaced by nothing: what is left is click's parsing
    and rl's handling of what it raises."""
    for _, cmd in COMMANDS:
        if not isinstance(cmd, click.Group) and cmd.callback is not None:
            monkeypatch.setattr(cmd, "callback", lambda **_kw: None)


@fuzz(400)
@given(path=st.sampled_from([p for p, _ in COMMANDS] + [()]), args=st.lists(token, max_size=6))
def test_the_command_line_parses_or_says_why_in_one_line(parse_only: None,
                                                        path: tuple[str, ...],
                                                        args: list[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = ["rl", *path, *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli_mod.main()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = saved
    assert "Traceback" not in err.getvalue()
    if code == 0:
        assert "Error:" not in err.getvalue(), err.getvalue()
    else:
        assert code == 125 and _usage_error_ok(err.getvalue()), (code, err.getvalue())


@fuzz(300)
@given(args=st.lists(token, max_size=8))
def test_the_supervisors_run_parser_returns_or_hands_over(args: list[str]) -> None:
    """cli.parse_run (rl run's arguments, parsed in the supervisor): options, or
    NeedsFullCli (click must speak), or an RlError of one line; nothing else."""
    try:
        opts, flags = cli_mod.parse_run(args, None)
    except NeedsFullCli:
        return
    except RlError as e:
        assert "\n" not in e.message and not PYTHONISMS.search(e.message)
        return
    json.dumps([dataclasses.asdict(opts), flags])  # `rl run`'s full CLI sends it as JSON


# -- the real command line ---------------------------------------------------------------


@pytest.fixture(scope="module")
def names(rl_path: Path, rl_state: RlState, rootfs: Path,
          tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """An image and an exited container, so that fuzzed arguments can name real objects."""
    support.require_userns()
    support.require_newidmap()
    support.require_busybox()
    env = {**os.environ, **rl_state.env()}
    tar = rootfs_tar(rootfs, tmp_path_factory.mktemp("fuzz") / "b.tar.gz")
    image = f"fuzzimg{os.getpid()}"
    subprocess.run([str(rl_path), "import", str(tar), image], env=env, check=True,
                   capture_output=True)
    ctr = f"fuzzctr{os.getpid()}"
    subprocess.run([str(rl_path), "run", "--name", ctr, image, "sh", "-c", "echo hi > /f"],
                   env=env, check=True, capture_output=True)
    return [image, ctr]


# Commands that only read, and end by themselves whatever their arguments (not wait,
# top or logs -f: a fuzzed id prefix may name a running container of another test).
SAFE = [["ps"], ["images"], ["inspect"], ["image", "inspect"], ["history"], ["diff"], ["logs"],
        ["port"], ["info"], ["image", "ls"]]


@fuzz(40)
@given(cmd=st.sampled_from(SAFE), data=st.data())
def test_real_commands_answer_in_docker_style(rl: RlRunner, names: list[str],
                                              cmd: list[str], data: st.DataObject) -> None:
    """The real rl, arguments naming real and missing objects, non-UTF-8 bytes
    included: success, or `Error:` lines and 1 or 125."""
    words = st.one_of(token, st.sampled_from(names),
                      st.binary(min_size=1, max_size=6).map(os.fsdecode))
    args = [a for a in data.draw(st.lists(words, max_size=5)) if a not in ("-f", "--follow")
            and "\0" not in a]
    if cmd == ["logs"]:
        args = [a for a in args if not a.startswith("-f")]
    r = rl(*cmd, *args, timeout=60)
    assert "Traceback" not in r.stderr, r.stderr
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines()
        assert r.returncode in (1, 125), (args, r.returncode, r.stderr)
        assert lines and all(ln.startswith(("Error: ", "See '")) for ln in lines), r.stderr
        assert not PYTHONISMS.search(r.stderr), r.stderr


# -- image configs -----------------------------------------------------------------------

json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12)
strings = st.lists(st.one_of(st.text(max_size=8), st.sampled_from(
    ["PATH=/bin", "=x", "A=", "A", "sh", "\0", "a\0b", ""])), max_size=4)
CONFIG_FIELDS = {
    "User": st.one_of(st.text(max_size=8), json_value), "WorkingDir": st.text(max_size=8),
    "Env": strings, "Entrypoint": strings, "Cmd": strings, "StopSignal": json_value,
    "Labels": json_value, "ExposedPorts": json_value, "Volumes": json_value,
    "ArgsEscaped": json_value,
}
TOP_FIELDS = {
    "created": st.one_of(st.sampled_from(["2024-01-01T00:00:00Z", "2024-01-01T00:00:00.5+01:00",
                                          "yesterday", ""]), json_value),
    "architecture": json_value, "os": json_value, "author": json_value, "history": json_value,
    "rootfs": json_value, "os.features": json_value, "config": json_value,
}
DIFF_ID = "sha256:" + "a" * 64


@st.composite
def configs(draw: st.DrawFn) -> Any:
    """Mostly valid image configs with a few fields of any JSON shape, and now and then
    any JSON value at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_value)
    inner: dict[str, Any] = {"Cmd": ["sh"]}
    for key in draw(st.lists(st.sampled_from(sorted(CONFIG_FIELDS)), max_size=4, unique=True)):
        inner[key] = draw(CONFIG_FIELDS[key])
    cfg: dict[str, Any] = {"architecture": "amd64", "os": "linux", "config": inner,
                           "rootfs": {"type": "layers", "diff_ids": [DIFF_ID]}}
    for key in draw(st.lists(st.sampled_from(sorted(TOP_FIELDS)), max_size=2, unique=True)):
        if draw(st.booleans()):
            cfg.pop(key, None)
        else:
            cfg[key] = draw(TOP_FIELDS[key])
    return cfg


@fuzz(500)
@given(config=configs())
def test_image_configs_are_valid_or_refused_in_one_line(config: Any) -> None:
    """validate() refuses in one line, or what it lets in is what `rl run` needs:
    lists of strings where execve wants them, NAME=VALUE environment entries."""
    from rootless.image.images import defaults
    from rootless.image.store import Image

    try:
        imageconfig.validate(config, 1)
    except RlError as e:
        event("refused")
        assert e.message.startswith("malformed image config: "), e.message
        assert "\n" not in e.message and not PYTHONISMS.search(e.message), e.message
        return
    img = Image("sha256:" + "0" * 64, {"config": {"digest": DIFF_ID}, "layers": []}, config)
    d = defaults(img)
    for value in (*d.entrypoint, *d.cmd, *d.env, d.user, d.workdir, d.stop_signal):
        assert isinstance(value, str) and "\0" not in value
    env = process.env_with_defaults(d.env, "/")
    assert all(k and "=" not in k for k in env)
    json.dumps(config)  # what was stored can be stored again


@fuzz(8)
@given(config=configs())
def test_loading_fuzzed_configs_then_running_them(rl: RlRunner, names: list[str],
                                                  tmp_path: Path, config: Any) -> None:
    """End to end: rl load says yes or one line; what it took runs, or fails in one
    line with docker's status (127/126/125)."""
    del names  # only its checks of the host
    config = json.loads(json.dumps(config))  # a copy to adjust
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tf:
        info = tarfile.TarInfo("f")
        tf.addfile(info, io.BytesIO(b""))
    data = layer.getvalue()
    import hashlib

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if isinstance(config, dict) and isinstance(config.get("rootfs"), dict) and \
            config["rootfs"].get("diff_ids") == [DIFF_ID]:
        config["rootfs"]["diff_ids"] = [digest]
    cfg = json.dumps(config).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tf:
        for name, body in ((cfg_name, cfg), ("l.tar", data), ("manifest.json", json.dumps(
                [{"Config": cfg_name, "RepoTags": ["fuzz/cfg:1"], "Layers": ["l.tar"]}]).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
    r = rl("load", "-q", "-i", archive)
    event(f"load {r.returncode}")
    if r.returncode != 0:
        assert r.returncode == 125 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not PYTHONISMS.search(r.stderr), r.stderr
        return
    r = rl("run", "--rm", "--network", "none", "fuzz/cfg:1", timeout=60)
    event(f"run {r.returncode}")
    assert "Traceback" not in r.stderr
    if r.returncode in (125, 126, 127):
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
        assert not PYTHONISMS.search(r.stderr), r.stderr


# -- layer tars --------------------------------------------------------------------------

COMPONENTS = ["a", "b", "..", ".", "", ".wh.a", ".wh..wh..opq", ".wh.", "dev", "x" * 300]
member_name = st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=4).map("/".join) | \
    st.text(max_size=10)
PAX_KEYS = ["SCHILY.xattr.user.x", "SCHILY.xattr.user.overlay.opaque",
            "SCHILY.xattr.security.capability", "path", "size", "linkpath", "uid"]
TYPES = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
         tarfile.FIFOTYPE, tarfile.BLKTYPE, tarfile.CONTTYPE]


@st.composite
def layer_tars(draw: st.DrawFn) -> bytes:
    """A tar of hostile and odd members, then maybe compressed, cut short or scribbled on."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for _ in range(draw(st.integers(0, 6))):
            info = tarfile.TarInfo(draw(member_name) or ".")
            info.type = draw(st.sampled_from(TYPES))
            info.linkname = draw(member_name)
            info.mode = draw(st.integers(0, 0o7777))
            info.uid = draw(st.sampled_from([0, 1000, 65534, 10**6]))
            info.gid = draw(st.sampled_from([0, 1000, 65534]))
            info.mtime = draw(st.sampled_from([0, 1_700_000_000, 2**33]))
            if draw(st.booleans()):
                key = draw(st.sampled_from(PAX_KEYS))
                info.pax_headers = {key: draw(st.text(max_size=5))}
            body = draw(st.binary(max_size=64)) if info.isreg() else b""
            info.size = len(body)
            with contextlib.suppress(ValueError, tarfile.TarError):
                tf.addfile(info, io.BytesIO(body) if info.isreg() else None)
    data = buf.getvalue()
    if draw(st.booleans()):
        import gzip

        data = gzip.compress(data)
    how = draw(st.sampled_from(["as is", "cut", "scribble"]))
    if how == "cut" and data:
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif how == "scribble" and data:
        pos = draw(st.integers(0, len(data) - 1))
        data = data[:pos] + draw(st.binary(min_size=1, max_size=8)) + data[pos + 8:]
    return data


def _unpack_classified(blob: str, dest: str) -> tuple[str, str]:
    """layers.unpack in the user namespace; ("ok"|"refused"|"crash", detail). Run as
    userns.run's func, so that an exception other than RlError is seen as what it is."""
    try:
        result = layers.unpack(blob, dest, False)
        return "ok", result.diff_id
    except RlError as e:
        return "refused", e.message
    except BaseException:
        return "crash", traceback.format_exc()


@fuzz(60)
@given(data=layer_tars())
def test_layer_tars_unpack_or_are_refused_in_one_line(data: bytes) -> None:
    support.require_userns()
    support.require_newidmap()
    base = Path(tempfile.mkdtemp(prefix="rl-fuzz-", dir="/tmp"))
    try:
        blob, dest = base / "layer", base / "dest"
        blob.write_bytes(data)
        dest.mkdir()
        kind, detail = userns.run(lambda: _unpack_classified(str(blob), str(dest)))
        event(kind if kind != "refused" else detail.partition(":")[0])
        assert kind != "crash", detail
        if kind == "refused":
            assert "\n" not in detail and not PYTHONISMS.search(detail), detail
    finally:
        support.remove_tree(base)


@fuzz(6)
@given(data=layer_tars())
def test_rl_import_of_fuzzed_tars(rl: RlRunner, names: list[str], tmp_path: Path,
                                  data: bytes) -> None:
    del names  # only its checks of the host
    path = tmp_path / "layer.tar"
    path.write_bytes(data)
    r = rl("import", path, timeout=60)
    event(f"import {r.returncode}")
    lines = [ln for ln in r.stderr.strip().splitlines() if not ln.startswith("note: ")]
    if r.returncode != 0:
        assert r.returncode == 125 and len(lines) == 1 and lines[0].startswith("Error: "), \
            r.stderr
        assert not PYTHONISMS.search(r.stderr), r.stderr
    else:
        assert not lines, r.stderr
