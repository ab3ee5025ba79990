"""Shell completion: `rl completion bash|zsh|fish` prints click's script for the
shell, and container and image arguments complete to the names in the store.

Names come from the same listing `rl ps -a` and `rl images` read (no more is
imported than those do). They are attached in one pass over the finished
command tree, by argument name, so each command keeps its plain decorators and
a new command with a `container` argument completes without a line here.
"""

from __future__ import annotations

import click
from click.shell_completion import CompletionItem, get_completion_class


def container_names(ctx: click.Context, param: click.Parameter,
                    incomplete: str) -> list[CompletionItem]:
    from ..engine import listing

    del ctx, param
    try:
        entries = listing.list_containers(True)
    except Exception:  # a completion never prints a traceback into a prompt
        return []
    names = [e.name for e in entries] + [e.id[:12] for e in entries]
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def image_names(ctx: click.Context, param: click.Parameter,
                incomplete: str) -> list[CompletionItem]:
    from ..image.images import list_images

    del ctx, param
    try:
        rows = list_images()
    except Exception:  # as above
        return []
    names = []
    for r in rows:
        if r.repository == "<none>":
            continue
        full = f"{r.repository}:{r.tag}"
        # what users type for their own images: localhost/ is implied
        names.append(full.removeprefix("localhost/"))
    return [CompletionItem(n) for n in dict.fromkeys(names) if n.startswith(incomplete)]


def volume_names(ctx: click.Context, param: click.Parameter,
                 incomplete: str) -> list[CompletionItem]:
    from ..engine import volumes

    del ctx, param
    try:
        return [CompletionItem(v.name) for v in volumes.list_volumes()
                if v.name.startswith(incomplete)]
    except Exception:  # as above
        return []


def network_names(ctx: click.Context, param: click.Parameter,
                  incomplete: str) -> list[CompletionItem]:
    from ..engine import networks

    del ctx, param
    try:
        return [CompletionItem(n.name) for n in networks.list_networks()[0]
                if n.name.startswith(incomplete)]
    except Exception:  # as above
        return []


def _both(ctx: click.Context, param: click.Parameter,
          incomplete: str) -> list[CompletionItem]:
    return container_names(ctx, param, incomplete) + image_names(ctx, param, incomplete)


_BY_PARAM = {"container": container_names, "containers": container_names,
             "image": image_names, "images": image_names}
# where the argument's name does not say it
_BY_COMMAND = {("tag", "source"): image_names, ("rename", "old"): container_names,
               ("inspect", "containers"): _both}
# a group's NAMES arguments: `rl volume rm NAMES`, `rl network inspect NAMES`
_BY_GROUP = {"volume": volume_names, "network": network_names}


def attach(group: click.Group) -> None:
    """Give every container, image, volume and network argument in group's tree its names."""
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            attach(cmd)
            continue
        for p in cmd.params:
            if isinstance(p, click.Argument) and p.name is not None:
                func = ((_BY_GROUP.get(group.name or "") if p.name == "names" else None)
                        or _BY_COMMAND.get((name, p.name)) or _BY_PARAM.get(p.name))
                if func is not None:
                    # click keeps the shell_complete= callback here; set after the
                    # fact so the decorators stay as they are
                    p._custom_shell_complete = func


@click.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script: eval "$(rl completion bash)"."""
    root = ctx.find_root().command
    cls = get_completion_class(shell)
    assert cls is not None  # the Choice above holds only click's shells
    click.echo(cls(root, {}, "rl", "_RL_COMPLETE").source())
