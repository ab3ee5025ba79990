"""`rl run` without click in the client (see entry.py): the same behaviour as
cli.run, with the flags parsed by the supervisor."""

from __future__ import annotations

import os
import sys

from . import output
from .cli import attach
from .engine import client
from .errors import EXIT_RL, NeedsFullCli, RlError

TYPE_CHECKING = False  # not `import typing`: this is the start path (see client.py)
if TYPE_CHECKING:
    from typing import NoReturn


def run(argv: list[str]) -> None:
    """Run the container and exit with its status; return if the full CLI must do it."""
    try:
        _run(argv)
    except output.OutputError as e:
        # The container goes on without this client, as after a kill of rl
        # (its output is in the log; --rm still applies when it exits).
        output.fail(e)


def _run(argv: list[str]) -> None:
    size = attach.terminal_size()  # used with -t only, as cli.run does
    try:
        session = client.run_argv(argv, size)
    except NeedsFullCli:
        return
    except RlError as e:
        _fail(e.message, e.exit_code)
    event = session.event
    if event.get("detach"):
        session.close()
        output.write_all(1, f"{event['id']}\n".encode())
        sys.exit(0)
    tty, interactive = bool(event.get("tty")), bool(event.get("interactive"))
    code = attach.run(session, tty=tty, stdin=interactive,
                      detach_keys=attach.default_detach_keys(tty, interactive))
    session.close()
    code = 0 if code == attach.DETACHED else code
    if code is None:
        from . import paths  # deferred: only a supervisor that died needs it (start path)

        _fail("the container's supervisor died; see "
              f"{paths.runtime_dir() / 'forkserver.log'}", EXIT_RL)
    # Nothing is left to clean up: skip the interpreter's teardown (~10 ms).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _fail(message: str, code: int) -> NoReturn:
    sys.stdout.flush()
    output.error_line(message)
    sys.exit(code)
