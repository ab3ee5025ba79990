"""What the face resolves before it calls the engine: the caller's environment and cwd.

The engine never reads them (it may serve another process: `rl run`'s
arguments are parsed in a forked supervisor, with the client's environment
and working directory sent along). Here, given both explicitly: `-e KEY`
and --env-file's bare names take their value from env (dropped when unset,
as docker does), --env-file is read, and relative host paths (--rootfs DIR,
-v ./x:/y, --security-opt seccomp=./p.json) are made absolute against cwd.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..engine.options import Bind, rootfs_missing
from ..errors import InvalidArgument, RlError


def current_dir() -> str:
    """This process's working directory, "" if it was removed (then only a relative
    path fails, as Go's filepath.Abs does in docker's CLI)."""
    try:
        return os.getcwd()
    except FileNotFoundError:
        return ""


def path(p: str, cwd: str) -> str:
    """os.path.abspath, against cwd instead of this process's."""
    if not cwd and not os.path.isabs(p):
        raise InvalidArgument(f"{p}: getwd: no such file or directory")
    return os.path.normpath(os.path.join(cwd, p))


def env(items: Iterable[str], environ: Mapping[str, str], env_files: Iterable[str] = (),
        cwd: str = "/") -> list[str]:
    """--env-file's lines (relative to cwd), then -e's, with bare names resolved; an item
    without a name is left for the engine to refuse."""
    out: list[str] = []
    for name in env_files:
        try:
            lines = Path(path(name, cwd)).read_text().splitlines()
        except OSError as e:
            raise RlError(f"open {name}: {e.strerror}") from e
        out += [ln for ln in (x.strip() for x in lines) if ln and not ln.startswith("#")]
    out += items
    resolved = []
    for item in out:
        key, sep, _ = item.partition("=")
        if key and not sep:
            if key in environ:
                resolved.append(f"{key}={environ[key]}")
            continue
        resolved.append(item)
    return resolved


# podman's --http-proxy list: both cases of each
PROXY_VARS = tuple(n for base in ("http_proxy", "https_proxy", "ftp_proxy", "no_proxy")
                   for n in (base, base.upper()))


def host_env(environ: Mapping[str, str], env_host: bool, http_proxy: bool) -> list[str]:
    """The caller's environment a container gets, only when asked: all of it with
    --env-host, the proxy variables with --http-proxy=true (rl's default is false)."""
    if env_host:
        return [f"{k}={v}" for k, v in environ.items() if k and "=" not in k]
    if http_proxy:
        return [f"{k}={environ[k]}" for k in PROXY_VARS if k in environ]
    return []


def bind(text: str, cwd: str) -> Bind:
    """-v HOST:CONTAINER[:OPTS]; a relative HOST (./data) is made absolute."""
    parts = text.split(":")
    if 2 <= len(parts) <= 3 and parts[0].startswith("."):
        return Bind(text, path(parts[0], cwd))
    return Bind(text)


def mount(text: str, cwd: str) -> str:
    """--mount with a source of `.` or `./...` made absolute (docker's CLI does so)."""
    import csv
    import io

    try:
        fields = next(csv.reader([text]), [])
    except csv.Error:
        return text  # the engine says what is wrong with it
    out, changed = [], False
    for f in fields:
        key, eq, val = f.partition("=")
        if eq and key.lower() in ("source", "src") and (val == "." or val.startswith("./")):
            f, changed = f"{key}={path(val, cwd)}", True
        out.append(f)
    if not changed:
        return text
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(out)
    return buf.getvalue()


def security_opt(so: str, cwd: str) -> str:
    """seccomp=PROFILE with PROFILE made absolute."""
    if so.startswith(("seccomp=", "seccomp:")) and so[len("seccomp="):] != "unconfined":
        return so[:len("seccomp=")] + path(so[len("seccomp="):], cwd)
    return so


def rootfs(text: str, cwd: str) -> str:
    """--rootfs DIR, absolute; refused here when it is no directory, so that the message
    names it as the user wrote it."""
    resolved = path(text, cwd)
    if not os.path.isdir(resolved):
        raise rootfs_missing(text)
    return resolved
