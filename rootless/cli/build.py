"""`rl build`: the click face over rootless.build's executor.

The face resolves what the builder must not read itself: the context and
-f paths against the working directory, and bare `--build-arg K` from the
environment. Progress goes to stderr; the image ID to stdout, as docker.
"""

from __future__ import annotations

import os

import click

from ..errors import InvalidArgument


def _labels(items: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"invalid label {item!r}: the name is empty")
        out[key] = value
    return out


@click.command("build")
@click.option("-t", "--tag", "tags", multiple=True, help="Name and optionally a tag (name:tag).")
@click.option("-f", "--file", "file", help="Name of the Dockerfile (default: CONTEXT/Dockerfile).")
@click.option("--build-arg", "build_args", multiple=True, help="Set a build-time variable.")
@click.option("--target", help="Set the target build stage to build.")
@click.option("-q", "--quiet", is_flag=True, help="Suppress the build output; print the image ID.")
@click.option("--iidfile", help="Write the image ID to the file.")
@click.option("--label", "labels", multiple=True, help="Set metadata for an image.")
@click.option("--network", default="default", show_default=True,
              type=click.Choice(["default", "none", "host"]),
              help="Networking mode for the RUN instructions.")
@click.option("--pull", "pull_policy", default="missing", show_default=True,
              type=click.Choice(["missing", "never"]),
              help="Pull a missing base image (missing) or never.")
# -- the build cache (issue 12, part 6) --
@click.option("--no-cache", is_flag=True, help="Do not use cache when building the image.")
@click.option("--no-cache-filter", "no_cache_filter", multiple=True,
              help="Do not cache specified stages.")
@click.option("--cache-from", "cache_from", multiple=True,
              help="Images in the local store to use as cache sources (IMAGE or "
                   "type=registry,ref=IMAGE).")
@click.argument("context")
def build_cmd(tags: tuple[str, ...], file: str | None, build_args: tuple[str, ...],
              target: str | None, quiet: bool, iidfile: str | None, labels: tuple[str, ...],
              network: str, pull_policy: str, no_cache: bool,
              no_cache_filter: tuple[str, ...], cache_from: tuple[str, ...],
              context: str) -> None:
    """Build an image from a Dockerfile."""
    from ..build import executor, scope
    from ..image import images as imagelib

    if context == "-":
        raise InvalidArgument("a context on stdin is not supported yet")
    ctx = os.path.abspath(context)
    if file == "-":
        raise InvalidArgument("a Dockerfile on stdin is not supported yet")
    dockerfile = os.path.abspath(file) if file else os.path.join(ctx, "Dockerfile")
    for tag in tags:
        imagelib.qualify(tag)  # a bad name fails before any step runs
    opts = executor.BuildOptions(
        context=ctx, dockerfile=dockerfile, tags=list(tags),
        build_args=scope.build_args(build_args, os.environ), target=target,
        labels=_labels(labels), network=network, pull=pull_policy == "missing",
        no_cache=no_cache,
        no_cache_filter=[s for item in no_cache_filter for s in item.split(",") if s],
        cache_from=[_cache_from(item) for item in cache_from])

    def progress(line: str) -> None:
        if not quiet:
            click.echo(line, err=True)

    img = executor.build(opts, progress, _pull)
    if iidfile:
        with open(iidfile, "w", encoding="utf-8") as f:
            f.write(img.id)
    click.echo(img.id)


def _cache_from(item: str) -> str:
    """--cache-from's image: IMAGE, or docker's type=registry,ref=IMAGE (the image is
    looked up in the local store: rl has no cache import from a registry)."""
    if "=" not in item:
        return item
    fields = dict(f.partition("=")[::2] for f in item.split(","))
    kind = fields.get("type", "registry")
    if kind != "registry" or not fields.get("ref"):
        raise InvalidArgument(f"--cache-from {item}: only an image in the local store "
                              "(IMAGE or type=registry,ref=IMAGE) is supported")
    return fields["ref"]


def _pull(image: str) -> None:
    from ..image.transfer import PullOptions, pull
    from .progress import Progress

    click.echo(f"Unable to find image '{image}' locally", err=True)
    with Progress(False) as progress:
        pull(image, PullOptions(), progress)


def register(cli: click.Group) -> None:
    cli.add_command(build_cmd)
