"""`rl volume ls [-q]` without click (see entry.py): scripts list volumes often,
and click with every command's declarations costs as much as reading a
thousand volume records. Any other flag (--format, --filter, help, a typo)
returns to the full CLI, which prints the same table through cli.volumes."""

from __future__ import annotations

import sys

from . import output


def run(argv: list[str]) -> None:
    """List the volumes and exit; return if the full CLI must do it."""
    if not argv or argv[0] not in ("ls", "list") or any(
            a not in ("-q", "--quiet") for a in argv[1:]):
        return
    quiet = len(argv) > 1
    from .cli.tables import table
    from .engine import volumes

    def work() -> None:
        names = [v.name for v in volumes.list_volumes()]
        text = "\n".join(names) if quiet else table(
            [["DRIVER", "VOLUME NAME"], *(["local", n] for n in names)])
        if text:
            sys.stdout.write(text + "\n")

    output.run_quick(work)
