"""`rl build --check` and a build's check warnings, printed as docker buildx prints them."""

from __future__ import annotations

from ..build.checks import Result, Warning


def source(filename: str, text: str, start: int, end: int) -> list[str]:
    """BuildKit's source excerpt: the lines of [start, end] marked `>>>`, with context
    (four lines around a single line, two around a range), as errdefs prints it."""
    lines = text.split("\n")
    if start < 1 or start > len(lines):
        return []
    end = min(end, len(lines))
    first, last = start, end
    pad = 4 if start == end else 2
    p = 0
    while p < pad:
        if first > 1:
            first -= 1
            p += 1
        if last != len(lines):
            last += 1
            p += 1
        p += 1
    out = [f"{filename}:{start}", "-" * 20]
    for i in range(first, last + 1):
        mark = ">>>" if start <= i <= end else "   "
        out.append(f" {i:3d} | {mark} {lines[i - 1]}")
    out.append("-" * 20)
    return out


def report(result: Result, filename: str, text: str) -> str:
    """The whole `--check` output (stdout)."""
    n = len(result.warnings)
    if not n:
        return "Check complete, no warnings found.\n"
    head = "1 warning has been found!" if n == 1 else f"{n} warnings have been found!"
    out = [f"Check complete, {head}"]
    for w in result.warnings:
        out += ["", f"WARNING: {w.rule} - {w.url}", w.detail,
                *source(filename, text, w.start_line, w.end_line)]
    return "\n".join(out) + "\n"


def summary(warnings: list[Warning]) -> str:
    """After an ordinary build (stderr): one line per warning, as buildx prints them."""
    n = len(warnings)
    word = "warning" if n == 1 else "warnings"
    lines = [f" {n} {word} found (use docker --debug to expand):"]
    lines += [f" - {w.rule}: {w.detail} (line {w.start_line})" for w in warnings]
    return "\n".join(lines) + "\n"
