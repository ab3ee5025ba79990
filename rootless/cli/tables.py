"""docker's plain tables, without click: rootless/quickvolumes.py prints them too."""

from __future__ import annotations


def table(rows: list[list[str]]) -> str:
    """docker's columns: each but the last padded to its widest cell, three spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.ljust(widths[i]) if i < len(r) - 1 else c for i, c in enumerate(r)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)
