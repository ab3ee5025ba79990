"""`rl events` without click (see entry.py): the command is read often by scripts
(`rl events --since 1h --until 0s`), and click with every command's declarations
costs more than reading a thousand events. Anything but its four flags (help,
a typo) returns to the full CLI, which says what click says."""

from __future__ import annotations

from . import output

_FLAGS = {"--since": "since", "--until": "until", "-f": "filter", "--filter": "filter",
          "--format": "format"}


def _parse(argv: list[str]) -> dict[str, list[str]] | None:
    got: dict[str, list[str]] = {"since": [], "until": [], "filter": [], "format": []}
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name not in _FLAGS or (name == "-f" and eq):
            return None
        if not eq:
            if i + 1 >= len(argv):
                return None
            value = argv[i + 1]
            i += 1
        got[_FLAGS[name]].append(value)
        i += 1
    return got


def run(argv: list[str]) -> None:
    """Stream the events and exit; return if the full CLI must do it."""
    got = _parse(argv)
    if got is None:
        return
    from .cli import eventstream

    def last(key: str) -> str | None:
        return got[key][-1] if got[key] else None

    output.run_quick(lambda: eventstream.stream(last("since"), last("until"), got["filter"],
                                                last("format")))
