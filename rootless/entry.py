"""The `rl` command's entry point.

`rl run` is the command whose start-up users feel, and click (with rl's flag
declarations) costs ~25 ms to import. So `rl run` first sends its raw
arguments to the fork server, where click is already imported: the
supervisor parses them exactly as the CLI would (cli.parse_run) and goes on.
Anything that needs the CLI itself — help, a usage error, a pull — comes
back as "needs the full CLI", and the command then runs through click as
every other command does (nothing was created meanwhile).

Before anything, stdio is made safe to use (rootless.output): a closed
standard fd becomes /dev/null, and writes to stdout and stderr follow
rl's rules for a full disk or a pipe nobody reads.
"""

from __future__ import annotations

import sys


def main() -> None:
    from . import output

    output.ensure_stdio()
    output.install()
    if len(sys.argv) > 1 and sys.argv[1] == "run":
        from .quickrun import run

        run(sys.argv[2:])  # exits, unless the full CLI must take over
    if len(sys.argv) > 1 and sys.argv[1] == "events":
        from .quickevents import run as events

        events(sys.argv[2:])  # exits, unless the full CLI must take over
    if len(sys.argv) > 2 and sys.argv[1] == "volume":
        from .quickvolumes import run as volumes

        volumes(sys.argv[2:])  # exits, unless the full CLI must take over
    from .cli.app import main as cli_main

    cli_main()
