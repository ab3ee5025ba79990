"""`rl build`: the click face over rootless.build's executor.

The face resolves what the builder must not read itself: the context and
-f paths against the working directory, and bare `--build-arg K` from the
environment. Progress goes to stderr; the image ID to stdout, as docker.
"""

from __future__ import annotations

import csv
import os
import sys
from typing import TYPE_CHECKING, Any

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
@click.option("--source-date-epoch", "epoch", metavar="SECONDS",
              help="Reproducible output: times clamped to this (default: $SOURCE_DATE_EPOCH).")
@click.option("-o", "--output", "outputs", multiple=True, metavar="SPEC",
              help="Output destination (type=local|tar|oci|docker|image,dest=PATH; DIR; -); "
                   "repeatable, each exported.")
@click.option("--progress", "progress_mode", default="auto", show_default=True,
              type=click.Choice(["auto", "plain", "tty", "quiet", "rawjson"]),
              help="Type of progress output (quiet as -q).")
@click.option("--check", "check_only", is_flag=True,
              help="Run the build checks (parse, resolve, lint) and exit; no step runs.")
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
              network: str, pull_policy: str, epoch: str | None, outputs: tuple[str, ...],
              progress_mode: str, check_only: bool, secrets: tuple[str, ...],
              no_cache: bool, no_cache_filter: tuple[str, ...], cache_from: tuple[str, ...],
              context: str) -> None:
    """Build an image from a Dockerfile."""
    from ..build import executor, output, reproducible, scope
    from ..build import stdin as from_stdin
    from ..image import images as imagelib

    text: str | None = None
    tar = None
    if context == "-":
        if file == "-":
            raise InvalidArgument("invalid argument: can't use stdin for both build context "
                                  "and dockerfile")
        tar, text = from_stdin.split(sys.stdin.buffer)
        ctx = ""
        # In a tar the Dockerfile is named relative to the context, as docker's -f.
        dockerfile = file or "Dockerfile"
    else:
        ctx = os.path.abspath(context)
        if file == "-":
            text = from_stdin.read_dockerfile(sys.stdin.buffer)
            dockerfile = "-"
        else:
            dockerfile = os.path.abspath(file) if file else os.path.join(ctx, "Dockerfile")
    for tag in tags:
        imagelib.qualify(tag)  # a bad name fails before any step runs
    outs = output.parse_all(outputs)
    to_stdout = any(o.dest == "-" for o in outs)
    if to_stdout and sys.stdout.isatty():
        raise InvalidArgument("refusing to write the output to a terminal: "
                              "redirect stdout or give dest=FILE")
    for out in outs:
        if out.stores:  # type=image|docker,name=A,B tags as -t does
            tags = (*tags, *[n for n in out.attrs.get("name", "").split(",") if n])
    for tag in tags:
        imagelib.qualify(tag)
    args = scope.build_args(build_args, os.environ)
    source_date_epoch = reproducible.choose(epoch, args, os.environ)
    if source_date_epoch is not None and reproducible.ENV not in args:
        args[reproducible.ENV] = str(source_date_epoch)  # as buildx passes it on
    opts = executor.BuildOptions(
        context=ctx, dockerfile=dockerfile, tags=list(tags), build_args=args, target=target,
        labels=_labels(labels), network=network, pull=pull_policy == "missing",
        source_date_epoch=source_date_epoch, dockerfile_text=text, context_tar=tar,
        outputs=outs, output_stream=sys.stdout.buffer if to_stdout else None,
        secrets=_secrets(secrets), no_cache=no_cache,
        no_cache_filter=[s for item in no_cache_filter for s in item.split(",") if s],
        cache_from=[_cache_from(item) for item in cache_from])

    from . import buildcheck
    from .buildprogress import renderer

    if check_only:
        _check(opts, dockerfile)
        return
    warnings: list[Any] = []
    shown = renderer(progress_mode, quiet)
    try:
        img = executor.build(opts, shown, _pull, warnings.extend)
    finally:
        shown.close()
        if warnings and not quiet:
            click.echo(buildcheck.summary(warnings), err=True, nl=False)
    if outs and not any(o.has_image_id for o in outs):
        return  # a file tree has no image ID (docker prints none, nor writes --iidfile)
    if iidfile:
        with open(iidfile, "w", encoding="utf-8") as f:
            f.write(img.id)
    if not to_stdout:
        click.echo(img.id)


def _check(opts: Any, dockerfile: str) -> None:
    """`--check`: docker's report on stdout; exit 1 when a check fails or the
    Dockerfile does not parse or resolve (docker's status for both)."""
    from ..build import executor
    from ..errors import RlError
    from . import buildcheck

    try:
        result, text = executor.check(opts)
    except RlError as e:
        raise type(e)(e.message, exit_code=1) from None
    name = "Dockerfile" if dockerfile == "-" else os.path.basename(dockerfile)
    for note in result.notes:  # on stderr: the report on stdout stays buildx's
        click.echo(f"WARNING: {note}", err=True)
    click.echo(buildcheck.report(result, name, text), nl=False)
    if result.warnings:
        sys.exit(1)


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
