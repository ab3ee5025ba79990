"""`rl build`: the click face over rootless.build's executor.

The face resolves what the builder must not read itself: the context and
-f paths against the working directory, and bare `--build-arg K` from the
environment. Progress goes to stderr; the image ID to stdout, as docker.
"""

from __future__ import annotations

import csv
import os
from typing import TYPE_CHECKING

import click

from ..errors import InvalidArgument, RlError

if TYPE_CHECKING:
    from ..build.runmounts import Secret


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
@click.option("--secret", "secrets", multiple=True,
              help="Secret to expose to the build (id=ID,src=PATH or id=ID,env=VAR).")
@click.argument("context")
def build_cmd(tags: tuple[str, ...], file: str | None, build_args: tuple[str, ...],
              target: str | None, quiet: bool, iidfile: str | None, labels: tuple[str, ...],
              network: str, pull_policy: str, secrets: tuple[str, ...], context: str) -> None:
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
        secrets=_secrets(secrets))

    def progress(line: str) -> None:
        if not quiet:
            click.echo(line, err=True)

    img = executor.build(opts, progress, _pull)
    if iidfile:
        with open(iidfile, "w", encoding="utf-8") as f:
            f.write(img.id)
    click.echo(img.id)


def _secrets(items: tuple[str, ...]) -> dict[str, Secret]:
    """docker's --secret: id=ID[,type=file|env][,src=PATH|source=PATH][,env=VAR].

    Without src or env, the variable named ID if it is set, else the file ID
    (BuildKit's secretsprovider). A file is checked here, as docker does
    before the build starts; its content is read only by the RUN that mounts it.
    """
    from ..build.runmounts import MAX_SECRET, Secret

    out: dict[str, Secret] = {}
    for item in items:
        try:
            (fields,) = list(csv.reader([item], strict=True)) or [[]]
        except csv.Error as e:
            raise InvalidArgument(f"failed to parse secret: {e}") from None
        sid = src = env = kind = ""
        for f in fields:
            k, eq, v = f.partition("=")
            k = k.strip().lower()
            if not eq:
                raise InvalidArgument(f"invalid field '{f}' must be a key=value pair")
            if k == "id":
                sid = v
            elif k == "type":
                if v not in ("file", "env"):
                    raise InvalidArgument(f'unsupported secret type "{v}"')
                kind = v
            elif k in ("src", "source"):
                src = v
            elif k == "env":
                env = v
            else:
                raise InvalidArgument(f"unexpected key '{k}' in '{f}'")
        if kind == "env" and src:
            env, src = src, ""
        if not sid:
            raise InvalidArgument("secret missing ID")
        if not src and not env:
            if sid in os.environ:
                env = sid
            else:
                src = sid
        if env:
            value = os.environ.get(env)
            if value is None:
                raise RlError(f"secret {sid}: environment variable {env} is not set", 1)
            out[sid] = Secret(sid, value=os.fsencode(value))
            continue
        path = os.path.abspath(os.path.expanduser(src))
        try:
            size = os.stat(path).st_size
        except OSError as e:
            raise RlError(f"failed to stat {src}: stat {src}: "
                          f"{os.strerror(e.errno or 0).lower()}", 1) from None
        if size > MAX_SECRET:
            raise RlError(f"secret {sid} too big. max size 500KB", 1)
        out[sid] = Secret(sid, path=path)
    return out


def _pull(image: str) -> None:
    from ..image.transfer import PullOptions, pull
    from .progress import Progress

    click.echo(f"Unable to find image '{image}' locally", err=True)
    with Progress(False) as progress:
        pull(image, PullOptions(), progress)


def register(cli: click.Group) -> None:
    cli.add_command(build_cmd)
