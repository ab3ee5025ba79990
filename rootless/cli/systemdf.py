"""`rl system df [-v]`: the click face over engine/diskuse.py, in docker's columns."""

from __future__ import annotations

import json
import time

import click

from ..engine.humanize import duration, human_size
from .format import select
from .tables import table


def _reclaimable(n: int, total: int, percent: bool = True) -> str:
    if not percent:
        return human_size(n)
    return f"{human_size(n)} ({round(100 * n / total) if total else 0}%)"


def _ago(ts: float) -> str:
    return f"{duration(time.time() - ts)} ago" if ts else "N/A"


@click.command("df")
@click.option("-v", "--verbose", is_flag=True, help="Show detailed information on space usage.")
@click.option("--format", "fmt", help="'table', 'json' or a Go template.")
def df(verbose: bool, fmt: str | None) -> None:
    """Show rl disk usage."""
    from ..engine import diskuse
    from .images import _ago as image_ago

    shape = select(fmt)
    du = diskuse.gather()
    rows = du.summary()
    shown: list[dict[str, str]] = []
    for r in rows:
        size, free = int(str(r["Size"])), int(str(r["Reclaimable"]))
        shown.append({"Type": str(r["Type"]), "TotalCount": str(r["TotalCount"]),
                      "Active": str(r["Active"]), "Size": human_size(size),
                      "Reclaimable": _reclaimable(free, size, r["Type"] != "Build Cache")})
    if shape.json:
        for s in shown:
            click.echo(json.dumps(s))
        return
    if shape.template is not None:
        for s in shown:
            click.echo(shape.template.render(s))
        return
    if not verbose:
        click.echo(table([["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
                          *([r["Type"], r["TotalCount"], r["Active"], r["Size"],
                             r["Reclaimable"]] for r in shown)]))
        return
    click.echo("Images space usage:\n")
    lines = [["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE", "UNIQUE SIZE",
              "CONTAINERS"]]
    for i in du.images:
        for name in i.names or ["<none>:<none>"]:
            repo, _, tag = name.rpartition(":")
            lines.append([repo, tag, i.id[7:19], image_ago(i.created), human_size(i.size),
                          human_size(i.shared), human_size(i.size - i.shared),
                          str(i.containers)])
    click.echo(table(lines))
    click.echo("\nContainers space usage:\n")
    lines = [["CONTAINER ID", "IMAGE", "COMMAND", "LOCAL VOLUMES", "SIZE", "CREATED", "STATUS",
              "NAMES"]]
    for c in du.containers:
        cmd = c.command if len(c.command) <= 20 else c.command[:19] + "…"
        lines.append([c.id[:12], c.image, f'"{cmd}"', str(c.volumes), human_size(c.size),
                      _ago(c.created), c.status, c.name])
    click.echo(table(lines))
    click.echo("\nLocal Volumes space usage:\n")
    click.echo(table([["VOLUME NAME", "LINKS", "SIZE"],
                      *([v.name, str(v.links), human_size(v.size)] for v in du.volumes)]))
    click.echo(f"\nBuild cache usage: {human_size(sum(b.size for b in du.build_cache))}\n")
    click.echo(table([["CACHE ID", "CACHE TYPE", "SIZE", "CREATED", "LAST USED", "USAGE",
                       "SHARED"],
                      *([b.id, b.kind, human_size(b.size), _ago(b.created), _ago(b.last_used),
                         "1" if b.in_use else "0", str(b.shared).lower()]
                        for b in du.build_cache)]))
