"""`rl cp` (and `rl container cp`): the click face over engine/copy.py."""

from __future__ import annotations

import os
import sys

import click

from ..errors import InvalidArgument
from . import resolve


def split(arg: str) -> tuple[str | None, str]:
    """(container, path) of a cp argument, docker's way: an absolute path, one
    without a colon, or one whose part before the colon starts with a dot is local."""
    if arg == "-" or arg.startswith("/"):
        return None, arg
    ctr, sep, path = arg.partition(":")
    if not sep or ctr.startswith("."):
        return None, arg
    return ctr, path


def _local(path: str) -> str:
    """Absolute, with a trailing `/` or `/.` kept (they carry docker's meaning)."""
    if os.path.isabs(path):
        return path
    cwd = resolve.current_dir()
    if not cwd:
        raise InvalidArgument(f"{path}: getwd: no such file or directory", 1)
    return os.path.join(cwd, path)


@click.command("cp")
@click.option("-a", "--archive", is_flag=True, help="Archive mode (copy all uid/gid information).")
@click.option("-L", "--follow-link", "follow", is_flag=True,
              help="Always follow symbol link in SRC_PATH.")
@click.option("-q", "--quiet", is_flag=True, help="Suppress progress output (rl shows none).")
@click.argument("src")
@click.argument("dest")
def cp(archive: bool, follow: bool, quiet: bool, src: str, dest: str) -> None:
    """Copy files/folders between a container and the local filesystem.

    \b
    rl cp [OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-
    rl cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH
    """
    from ..engine import copy, store

    del quiet
    sctr, spath = split(src)
    dctr, dpath = split(dest)
    if sctr is None and dctr is None:
        raise InvalidArgument("must specify at least one container source", 1)
    if sctr is not None and dctr is not None:
        raise InvalidArgument("copying between containers is not supported", 1)
    opts = copy.CopyOptions(archive=archive, follow=follow)
    if sctr is not None:
        if dpath == "-" and sys.stdout.isatty():
            raise InvalidArgument("cannot write a tar archive to a terminal "
                                  "(redirect the output)", 1)
        sys.stdout.flush()
        copy.copy_from_container(store.lookup(sctr), spath or "/",
                                 None if dpath == "-" else _local(dpath), opts)
        return
    assert dctr is not None
    copy.copy_to_container(store.lookup(dctr), None if spath == "-" else _local(spath),
                           dpath or "/", opts)
