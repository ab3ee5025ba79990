"""rl-oci's entry point: the calls engines make, parsed without click.

conmon, podman and Slurm exec a fresh rl-oci for every step of every
container (create, start, state, kill, delete; run for Slurm), and importing
click with rl-oci's declarations costs more than all a `state` does. So the
exact forms those callers use are parsed here, by a table of the very flags
main.py declares; anything else (help, a flag not in the table, a usage
error, the other verbs) goes to the click face, which has the last word on
what the flags mean. Both call the same functions.
"""

from __future__ import annotations

import gc
import os
import sys

from ..errors import RlError
from . import plainjson
from .log import Globals, fail
from .records import Root, default_root

# typing.TYPE_CHECKING without importing typing (mypy knows the name).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

# Flags that take a value (True) or not (False), per verb; "" is the global ones.
_FLAGS: dict[str, dict[str, bool]] = {
    "": {"--root": True, "--log": True, "--log-format": True, "--debug": False,
         "--systemd-cgroup": False, "--rootless": True},
    "create": {"--bundle": True, "-b": True, "--pid-file": True, "--console-socket": True,
               "--no-new-keyring": False, "--preserve-fds": True},
    "run": {"--bundle": True, "-b": True, "--pid-file": True, "--console-socket": True,
            "--no-new-keyring": False, "--preserve-fds": True, "-d": False,
            "--detach": False},
    "start": {}, "state": {}, "delete": {"-f": False, "--force": False},
    "kill": {"-a": False, "--all": False},
}
_POSITIONALS = {"create": 1, "run": 1, "start": 1, "state": 1, "delete": 1, "kill": 2}


def _parse(args: list[str], table: dict[str, bool], stop_at_word: bool
           ) -> tuple[dict[str, str | bool], list[str]] | None:
    """Flags and positionals, or None for anything not in the table."""
    flags: dict[str, str | bool] = {}
    words: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("-") and a != "-":
            name, eq, value = a.partition("=")
            if name not in table:
                return None
            if table[name]:
                if not eq:
                    i += 1
                    if i >= len(args):
                        return None
                    value = args[i]
                flags[name] = value
            elif eq:
                return None
            else:
                flags[name] = True
        else:
            words.append(a)
            if stop_at_word:
                words += args[i + 1:]
                return flags, words
        i += 1
    return flags, words


def _text(flags: dict[str, str | bool], *names: str) -> str | None:
    for n in names:
        v = flags.get(n)
        if isinstance(v, str):
            return v
    return None


def _fast(argv: list[str]) -> int | None:
    """The exit code of a call handled here; None: click's to handle."""
    top = _parse(argv, _FLAGS[""], stop_at_word=True)
    if top is None or not top[1]:
        return None
    gflags, (verb, *rest) = top
    if verb not in _POSITIONALS:
        return None
    parsed = _parse(rest, _FLAGS[verb], stop_at_word=False)
    if parsed is None:
        return None
    flags, words = parsed
    if not 1 <= len(words) <= _POSITIONALS[verb] or (verb != "kill" and len(words) != 1):
        return None
    fmt = _text(gflags, "--log-format") or "text"
    rootless = _text(gflags, "--rootless") or "auto"
    preserve = _text(flags, "--preserve-fds") or "0"
    if fmt not in ("text", "json") or rootless not in ("auto", "true", "false") \
            or not preserve.isdigit():
        return None  # click says what is wrong with it
    g = Globals(Root(_text(gflags, "--root") or default_root()), _text(gflags, "--log"),
                fmt, bool(gflags.get("--debug")), rootless)
    cid = words[0]
    try:
        if verb in ("create", "run"):
            from . import lifecycle  # the whole runtime: only for the verbs that need it

            listen = os.environ.get("LISTEN_FDS", "")
            opts = lifecycle.Options(
                _text(flags, "--bundle", "-b") or ".", _text(flags, "--pid-file"),
                _text(flags, "--console-socket"),
                int(preserve) + (int(listen) if listen.isdigit() else 0), rootless,
                foreground=verb == "run" and not (flags.get("-d") or flags.get("--detach")))
            if verb == "run":
                return lifecycle.run(g.root, cid, opts, g.debug_log)
            lifecycle.create(g.root, cid, opts, g.debug_log).close()
            return 0
        from . import control

        if verb == "start":
            control.start(g.root, cid)
        elif verb == "state":
            sys.stdout.write(plainjson.dumps(control.state(g.root, cid)) + "\n")
        elif verb == "delete":
            control.delete(g.root, cid, bool(flags.get("-f") or flags.get("--force")))
        else:
            sig = control.parse_signal(words[1] if len(words) > 1 else "SIGTERM")
            control.kill(g.root, cid, sig, bool(flags.get("-a") or flags.get("--all")))
        return 0
    except RlError as e:
        fail(g, e.message)
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        fail(g, f"{e.strerror or e}{where}")


def _exit(code: int) -> NoReturn:
    """Exit without the interpreter's teardown (freeing every module of the
    runtime: ~10-20 ms of a `run`); nothing is left to it but stdio's buffers."""
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            if code == 0 and f is sys.stdout:
                code = 120  # as the interpreter's own exit: lost output is a failure
    os._exit(code)


def main() -> NoReturn:
    # A call lives milliseconds and allocates mostly module objects that stay
    # (the runtime's classes, functions): a young-generation collection every
    # 700 allocations is wasted work (~15% of a create's CPU, measured); one
    # every 100,000 still bounds what a long `run` could gather in cycles.
    gc.set_threshold(100_000, 10, 10)
    try:
        code = _fast(sys.argv[1:])
    except KeyboardInterrupt:
        _exit(130)
    except SystemExit as e:  # log.fail's
        if not isinstance(e.code, int):
            raise
        _exit(e.code)
    if code is not None:
        _exit(code)
    from . import main as face  # click: everything _fast leaves

    face.main()
