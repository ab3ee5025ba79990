"""The image commands of rl's command line, a thin click shell over rootless.image
and rootless.engine.images (where images meet containers).

Kept apart from cli/app.py so `rl run --rootfs` never imports the image code:
every command imports what it needs when it runs. app registers these commands;
the output helpers both use are cli/format.py's, so this module never imports app.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import click

from ..errors import InvalidArgument, NotFound, RlError
from .format import error, parse_template, print_inspect, render, select, truncate
from .tables import table


def image_event(action: str, ident: str, name: str) -> None:
    """docker's image events (engine/events.py): the image library below the engine
    cannot write them, so the face that called it does, once it succeeded."""
    from ..engine import events

    events.emit("image", action, ident, {"name": name} if name else {})


def human_size(n: float) -> str:
    """docker's sizes: decimal units, three significant digits."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n}B"


def _ago(iso: str) -> str:
    import time

    from ..engine.humanize import duration
    from ..image.images import parse_time

    ts = parse_time(iso)
    return f"{duration(time.time() - ts)} ago" if ts else "N/A"


@contextlib.contextmanager
def _output_file(output: str) -> Iterator[int]:
    """An fd on a temporary name beside output, renamed onto it only if the body succeeds:
    a failed or interrupted export/save never leaves half a file under the asked name."""
    tmp = f"{output}.rl-tmp-{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise RlError(f"open {output}: {e.strerror}") from None
    try:
        try:
            yield fd
        finally:
            os.close(fd)
        os.replace(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _print_notes(notes: list[str]) -> None:
    for note in notes:
        click.echo(f"note: {note}", err=True)


# -- commands ------------------------------------------------------------------------


# docker's column names for `images --format 'table ...'`
_IMAGE_HEADERS = {"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID",
                  "Digest": "DIGEST", "CreatedAt": "CREATED AT", "CreatedSince": "CREATED",
                  "Size": "SIZE", "Names": "NAMES"}


@click.command("images")
@click.option("-a", "--all", "all_", is_flag=True, help="Show all images (the default).")
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("--digests", is_flag=True, help="Show digests.")
@click.option("--format", "fmt", help="'table', 'json' or a Go template.")
@click.argument("repository", required=False)
def images_cmd(all_: bool, quiet: bool, no_trunc: bool, digests: bool, fmt: str | None,
               repository: str | None) -> None:
    """List images."""
    from ..image.images import list_images

    shape = select(fmt)
    rows = list_images(repository=repository)

    def short(i: str) -> str:
        return i if no_trunc else i.removeprefix("sha256:")[:12]

    if quiet:
        seen = []
        for r in rows:
            if short(r.id) not in seen:
                seen.append(short(r.id))
        click.echo("\n".join(seen) + ("\n" if seen else ""), nl=False)
        return

    def as_dict(r: Any) -> dict[str, Any]:
        return {"Repository": r.repository, "Tag": r.tag, "ID": short(r.id),
                "Digest": r.digest, "CreatedAt": r.created, "CreatedSince": _ago(r.created),
                "Size": human_size(r.size), "Names": r.names}

    dicts = [as_dict(r) for r in rows]

    def view(dicts: Sequence[dict[str, Any]]) -> list[list[str]]:
        head = ["REPOSITORY", "TAG", *(["DIGEST"] if digests else []), "IMAGE ID", "CREATED",
                "SIZE"]
        return [head, *([r.repository, r.tag, *([r.digest] if digests else []), d["ID"],
                         d["CreatedSince"], d["Size"]] for r, d in zip(rows, dicts, strict=True))]

    for line in render(shape, dicts, view, _IMAGE_HEADERS):
        click.echo(line)


def inspect_image(ref: str, missing: str = "") -> dict[str, Any]:
    """One image's inspect view (for `rl inspect`, which tries containers first)."""
    from ..errors import NoSuchImage
    from ..image.images import inspect, lookup, open_store

    try:
        return inspect(lookup(open_store(), ref))
    except NoSuchImage:
        if missing:
            raise NotFound(missing, 1) from None
        raise


@click.command("inspect")
@click.option("-f", "--format", "fmt", help="Format the output using a Go template.")
@click.argument("images", nargs=-1, required=True)
def image_inspect(fmt: str | None, images: tuple[str, ...]) -> None:
    """Display detailed information on images."""
    from ..image.images import inspect, lookup, open_store

    if fmt:
        parse_template(fmt)  # a template that does not parse fails before any lookup
    store = open_store()
    results, failed = [], False
    for ref in images:
        try:
            results.append(inspect(lookup(store, ref)))
        except RlError as e:
            error(e.message)
            failed = True
    print_inspect(results, fmt, failed)


@click.command("history")
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("-H", "--human", default=True, type=bool, help="Human readable sizes.")
@click.argument("image")
def history_cmd(quiet: bool, no_trunc: bool, human: bool, image: str) -> None:
    """Show the history of an image."""
    from ..image.images import history, lookup, open_store

    rows = history(lookup(open_store(), image))
    ids = [r.id if no_trunc or r.id == "<missing>" else r.id[7:19] for r in rows]
    if quiet:
        for i in ids:
            click.echo(i)
        return
    lines = [["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]]
    for i, r in zip(ids, rows, strict=True):
        by = r.created_by if no_trunc else truncate(r.created_by, 45)
        lines.append([i, _ago(r.created), by, human_size(r.size) if human else str(r.size),
                      r.comment])
    click.echo(table(lines))


@click.command("tag")
@click.argument("source")
@click.argument("targets", nargs=-1, required=True)
def tag_cmd(source: str, targets: tuple[str, ...]) -> None:
    """Give an image another name: rl tag SOURCE TARGET..."""
    from ..image.images import tag

    for t in targets:
        tag(source, t)
        image_event("tag", source, t)


@click.command("rmi")
@click.option("-f", "--force", is_flag=True, help="Remove even if containers use it.")
@click.argument("images", nargs=-1, required=True)
def rmi_cmd(force: bool, images: tuple[str, ...]) -> None:
    """Remove images."""
    from ..engine.images import remove

    removed, errors = remove(list(images), force)
    for r in removed:
        click.echo(f"{r.action}: {r.ref}")
    for e in errors:
        error(e.message)
    if errors:
        sys.exit(1)


@click.command("prune")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove all unused images.")
@click.option("-f", "--force", is_flag=True, help="Do not prompt (rl never prompts).")
def prune_cmd(all_: bool, force: bool) -> None:
    """Remove unused images: those without a name, or with -a all no container uses."""
    from ..engine.images import prune

    deleted, freed = prune(all_)
    if deleted:
        click.echo("Deleted Images:")
        for d in deleted:
            click.echo(f"deleted: {d}")
    click.echo(f"Total reclaimed space: {human_size(freed)}")


@click.command("import")
@click.option("-c", "--change", multiple=True, help="Apply a Dockerfile instruction.")
@click.option("-m", "--message", default="", help="Commit message for the image.")
@click.argument("source")
@click.argument("name", required=False)
def import_cmd(change: tuple[str, ...], message: str, source: str, name: str | None) -> None:
    """Create an image from a root filesystem tar (gzip, zstd or plain); '-' is stdin."""
    from ..image.images import import_tarball

    if source == "-":
        import shutil
        import tempfile

        with tempfile.NamedTemporaryFile(prefix="rl-import-", suffix=".tar") as tmp:
            shutil.copyfileobj(sys.stdin.buffer, tmp)
            tmp.flush()
            img, notes = import_tarball(tmp.name, name, list(change), message)
    else:
        img, notes = import_tarball(source, name, list(change), message)
    image_event("import", img.id, name or "")
    _print_notes(notes)
    click.echo(img.id)


@click.command("export")
@click.option("-o", "--output", help="Write to a file instead of stdout.")
@click.argument("container")
def export_cmd(output: str | None, container: str) -> None:
    """Export a container's file system as a tar archive."""
    from ..engine import store
    from ..engine.images import export

    ctr = store.lookup(container)
    if output is None:
        if sys.stdout.isatty():
            raise InvalidArgument(
                "refusing to write a tar to a terminal: use -o FILE or a redirect")
        sys.stdout.flush()
        try:
            export(ctr, sys.stdout.fileno())
        except RlError:
            from ..output import die_of_sigpipe, reader_gone

            # The tar is written by a user-namespace child: its EPIPE comes back
            # as a message. A reader that left (`| head -c1`) ends rl quietly.
            if reader_gone(sys.stdout.fileno()):
                die_of_sigpipe()
            raise
        return
    with _output_file(output) as fd:
        export(ctr, fd)


@click.command("diff")
@click.argument("container")
def diff_cmd(container: str) -> None:
    """Inspect changes to files or directories on a container's filesystem."""
    from ..engine import store
    from ..engine.images import diff

    for kind, path in diff(store.lookup(container)):
        click.echo(f"{kind} {path}")


@click.command("commit")
@click.option("-c", "--change", multiple=True, help="Apply a Dockerfile instruction.")
@click.option("-m", "--message", default="", help="Commit message.")
@click.option("-a", "--author", default="", help="Author.")
@click.argument("container")
@click.argument("name", required=False)
def commit_cmd(change: tuple[str, ...], message: str, author: str, container: str,
               name: str | None) -> None:
    """Create a new image from a container's changes."""
    from ..engine import store
    from ..engine.images import commit

    img = commit(store.lookup(container), name, list(change), message, author)
    click.echo(img.id)


@click.command("save")
@click.option("-o", "--output", help="Write to a file instead of stdout.")
@click.option("--format", "fmt", default="docker-archive", show_default=True,
              help="docker-archive or oci-archive.")
@click.option("--gzip", "gz", is_flag=True, help="Compress (also implied by -o *.gz/*.tgz).")
@click.option("-q", "--quiet", is_flag=True, help="Suppress progress output.")
@click.argument("images", nargs=-1, required=True)
def save_cmd(output: str | None, fmt: str, gz: bool, quiet: bool,
             images: tuple[str, ...]) -> None:
    """Save images to a tar archive (docker-archive or oci-archive)."""
    from ..image.archive import save
    from .progress import Progress

    progress = Progress(quiet, bars=False)
    if output is None:
        if sys.stdout.isatty():
            raise InvalidArgument("refusing to write an archive to a terminal: use -o FILE or a "
                                  "redirect")
        save(list(images), fmt, sys.stdout.buffer, gz, progress)
    else:
        gz = gz or output.endswith((".gz", ".tgz"))
        with _output_file(output) as fd, os.fdopen(os.dup(fd), "wb") as f:
            save(list(images), fmt, f, gz, progress)
    for ref in images:
        image_event("save", ref, ref)


@click.command("load")
@click.option("-i", "--input", "input_", help="Read from a file instead of stdin.")
@click.option("-q", "--quiet", is_flag=True, help="Suppress progress output.")
def load_cmd(input_: str | None, quiet: bool) -> None:
    """Load images from a docker-archive or oci-archive (gzip or plain)."""
    from ..image.archive import load
    from .progress import Progress

    progress = Progress(quiet, bars=False)
    if input_ is None:
        if sys.stdin.isatty():
            raise InvalidArgument("no archive given: use -i FILE or redirect stdin")
        import shutil
        import tempfile

        with tempfile.NamedTemporaryFile(prefix="rl-load-", suffix=".tar") as tmp:
            shutil.copyfileobj(sys.stdin.buffer, tmp)
            tmp.flush()
            loaded = load(tmp.name, progress)
    else:
        loaded = load(input_, progress)
    for item in loaded:
        image_event("load", item.image.id, (item.names or [""])[0])
        if item.names:
            for n in item.names:
                click.echo(f"Loaded image: {n}")
        else:
            click.echo(f"Loaded image ID: {item.image.id}")


def parse_tls_verify(value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise InvalidArgument(f"invalid value for --tls-verify: {value!r} (true or false)")
    return value.lower() == "true"


@click.command("pull")
@click.option("--platform", help="os/arch[/variant] to pull from a multi-platform image.")
@click.option("-q", "--quiet", is_flag=True, help="Suppress progress output.")
@click.option("--tls-verify", default="true", help="false: plain HTTP (loopback registries).")
@click.argument("image")
def pull_cmd(platform: str | None, quiet: bool, tls_verify: str, image: str) -> None:
    """Pull an image from a registry."""
    from ..image.transfer import PullOptions, pull
    from .progress import Progress

    opts = PullOptions(platform, parse_tls_verify(tls_verify))
    with Progress(quiet) as progress:
        img = pull(image, opts, progress)
    image_event("pull", image, image.rsplit(":", 1)[0] if "/" not in image.rsplit(":", 1)[-1]
                else image)  # docker: the reference, and the repository as its name
    click.echo(img.id)


@click.command("push")
@click.option("-q", "--quiet", is_flag=True, help="Suppress progress output.")
@click.option("--tls-verify", default="true", help="false: plain HTTP (loopback registries).")
@click.argument("image")
@click.argument("destination", required=False)
def push_cmd(quiet: bool, tls_verify: str, image: str, destination: str | None) -> None:
    """Push an image to a registry: rl push IMAGE [HOST/NAME:TAG]"""
    from ..image.transfer import PushOptions, push
    from .progress import Progress

    opts = PushOptions(parse_tls_verify(tls_verify))
    with Progress(quiet) as progress:
        digest = push(image, destination, opts, progress)
    if not quiet:
        click.echo(digest)


@click.command("login")
@click.option("-u", "--username", help="Username.")
@click.option("-p", "--password", help="Password (prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--tls-verify", default="true", help="false: plain HTTP (loopback registries).")
@click.argument("registry")
def login_cmd(username: str | None, password: str | None, password_stdin: bool,
              tls_verify: str, registry: str) -> None:
    """Log in to a registry; credentials go to podman's auth.json."""
    from ..image.transfer import login

    tls = parse_tls_verify(tls_verify)
    if password_stdin:
        if password is not None:
            raise InvalidArgument("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.readline().rstrip("\n")
    if username is None:
        if not sys.stdin.isatty():
            raise InvalidArgument("no username given: use -u USER")
        username = click.prompt("Username")
    if password is None:
        if not sys.stdin.isatty():
            raise InvalidArgument("no password given: use -p or --password-stdin")
        password = click.prompt("Password", hide_input=True)
    login(registry, username, password, tls)
    click.echo("Login Succeeded!")


@click.command("logout")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove every stored credential.")
@click.argument("registry", required=False)
def logout_cmd(all_: bool, registry: str | None) -> None:
    """Log out of a registry (forget its credentials)."""
    from ..image.transfer import logout

    if not all_ and not registry:
        raise InvalidArgument("give a registry or --all")
    logout(None if all_ else registry)
    click.echo("Removed login credentials for " + ("all registries" if all_ else str(registry)))


def register(cli: click.Group) -> None:
    """Add the image commands to rl's command group (docker's names and podman's)."""
    for cmd in (images_cmd, history_cmd, tag_cmd, rmi_cmd, import_cmd, export_cmd,
                diff_cmd, commit_cmd, save_cmd, load_cmd, pull_cmd, push_cmd, login_cmd,
                logout_cmd):
        cli.add_command(cmd)

    @cli.group("image")
    def image() -> None:
        """Manage images."""

    image.add_command(images_cmd, "ls")
    image.add_command(images_cmd, "list")
    image.add_command(image_inspect, "inspect")
    image.add_command(history_cmd, "history")
    image.add_command(tag_cmd, "tag")
    image.add_command(rmi_cmd, "rm")
    image.add_command(prune_cmd, "prune")
    image.add_command(import_cmd, "import")
    image.add_command(save_cmd, "save")
    image.add_command(load_cmd, "load")
    image.add_command(pull_cmd, "pull")
    image.add_command(push_cmd, "push")
