"""The `rl` command's entry point.

`rl run` is the command whose start-up users feel, and click (with rl's flag
declarations) costs ~25 ms to import. So `rl run` first sends its raw
arguments to the fork server, where click is already imported: the
supervisor parses them exactly as the CLI would (cli.parse_run) and goes on.
Anything that needs the CLI itself — help, a usage error, a pull — comes
back as "needs the full CLI", and the command then runs through click as
every other command does (nothing was created meanwhile).
"""

from __future__ import annotations

import os
import sys


def _open_stdio() -> None:
    """Make a closed fd 0, 1 or 2 /dev/null (docker reads a closed stdin as
    empty). Otherwise the first socket or pipe rl opens takes its number, and
    rl would relay its own supervisor's socket as the container's stdin."""
    fd = os.open(os.devnull, os.O_RDWR)
    while fd <= 2:
        os.set_inheritable(fd, True)
        stream = "stdin" if fd == 0 else "stdout" if fd == 1 else "stderr"
        if getattr(sys, stream) is None:  # Python found it closed at start-up
            mode = "r" if fd == 0 else "w"
            setattr(sys, stream, open(fd, mode, closefd=False))  # noqa: SIM115 (it lives on)
        fd = os.open(os.devnull, os.O_RDWR)
    os.close(fd)


def main() -> None:
    _open_stdio()
    if len(sys.argv) > 1 and sys.argv[1] == "run":
        from .quickrun import run

        run(sys.argv[2:])  # exits, unless the full CLI must take over
    from .cli import main as cli_main

    cli_main()
