"""How the CLI's commands print: docker's tables, the --format switch
(table, json or a Go template), inspect's output and the one `Error:` line.

Shared by cli/app.py and cli/images.py, so that neither imports the other
for its output (app only registers images' commands).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import click

from ..output import one_line
from .tables import table

if TYPE_CHECKING:
    from .template import Template


def error(msg: str) -> None:
    """`Error: msg` on stderr, one line whatever msg quotes (output.one_line)."""
    click.echo(f"Error: {one_line(msg)}", err=True)


def truncate(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def template_of(fmt: str) -> str:
    """The Go template of a --format value ("table {{.X}}" prints it without a header)."""
    return fmt.removeprefix("table ").strip() if fmt.startswith("table ") else fmt


def parse_template(fmt: str) -> Template:
    """A --format template, parsed before any data is read (cli/template.py)."""
    # Deferred: `rl --help` and the fallback `rl run` (both load this module)
    # never parse a template.
    from .template import parse

    return parse(fmt)


class Format:
    """What a --format value asks for: JSON, a template, or (neither) the command's own view."""

    # A plain class: a frozen dataclass would cost `rl --help`, which loads this module, ~0.6 ms.
    __slots__ = ("json", "table", "template")

    def __init__(self, json: bool = False, template: Template | None = None,
                 table: bool = False) -> None:
        self.json = json
        self.template = template
        self.table = table  # "table TEMPLATE": a header line, cells split on tabs

    @property
    def default(self) -> bool:
        return not self.json and self.template is None


def select(fmt: str | None, table_keyword: bool = True) -> Format:
    """--format's choice, its template parsed now, before any data is read (a template
    that does not parse fails first). With table_keyword, as ps, images and stats read
    it: "table" is the default view and "table TEMPLATE" the template; without it (info),
    only "json" is a keyword."""
    if not fmt or (table_keyword and fmt == "table"):
        return Format()
    if fmt == "json":
        return Format(json=True)
    if table_keyword and fmt.startswith("table "):
        return Format(template=parse_template(template_of(fmt)), table=True)
    return Format(template=parse_template(fmt))


def render(shape: Format, rows: Sequence[dict[str, Any]],
           view: Callable[[Sequence[dict[str, Any]]], list[list[str]]],
           headers: Mapping[str, str] | None = None) -> Iterator[str]:
    """The lines a listing prints: a JSON object per row (docker's json for ps and
    images alike), a template per row, or the table view(rows) builds (header first).
    "table TEMPLATE" prints, as docker, the template over *headers* (a row's key
    maps to its column name; others to the key in capitals) above the rows, and
    aligns the cells its tabs separate. Lazily, except a table, so that a caller
    printing each line shows the rows before one that fails."""
    if shape.json:
        yield from (json.dumps(r) for r in rows)
    elif shape.template is not None and shape.table:
        names = dict(headers or {})
        keys = list(rows[0]) if rows else list(names)
        head = {k: names.get(k, k.upper()) for k in keys}
        lines = [shape.template.render(r).split("\t") for r in [head, *rows]]
        width = max(len(cells) for cells in lines)
        yield table([cells + [""] * (width - len(cells)) for cells in lines])
    elif shape.template is not None:
        yield from (shape.template.render(r) for r in rows)
    else:
        yield table(view(rows))


def print_inspect(results: list[Any], fmt: str | None, failed: bool) -> None:
    """docker inspect's output: a JSON array, or one template line per object; 1 on a miss."""
    if fmt:
        tmpl = parse_template(fmt)
        for r in results:
            click.echo(tmpl.render(r))
    else:
        click.echo(json.dumps(results, indent=4))
    if failed:
        sys.exit(1)
