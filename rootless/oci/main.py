"""rl-oci's command line: runc's verbs and global flags, click in, runc's output out.

Errors are one line on stderr in runc's (logrus') form and exit status 1;
`run` and `exec` in the foreground exit with the container process's status
(128+N when a signal N killed it). --log appends the same lines (and, with
--debug, what rl-oci decided) to a file, in text or JSON (--log-format).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, NoReturn

import click

from .. import __version__
from ..errors import RlError
from ..runtime.spec import OCI_VERSION
from . import control, defaults, lifecycle
from .log import Globals, fail
from .records import Root, default_root, state_json


def _g(ctx: click.Context) -> Globals:
    g = ctx.find_object(Globals)
    assert g is not None
    return g


def _version() -> str:
    return f"rl-oci version {__version__}\nspec: {OCI_VERSION}\n"


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(_version(), nl=False)
        ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", "root_dir", default=None,
              help="state directory (default $XDG_RUNTIME_DIR/rl-oci)")
@click.option("--log", "log_file", default=None, help="append log lines to this file")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text")
@click.option("--debug", is_flag=True, help="log what rl-oci decides")
@click.option("--systemd-cgroup", is_flag=True,
              help="accepted; rl-oci has no systemd cgroup manager")
@click.option("--rootless", type=click.Choice(["auto", "true", "false"]), default="auto")
@click.option("--criu", default=None, hidden=True)
@click.option("-v", "--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="print the version")
@click.pass_context
def cli(ctx: click.Context, root_dir: str | None, log_file: str | None, log_format: str,
        debug: bool, systemd_cgroup: bool, rootless: str, criu: str | None) -> None:
    """rl's runtime as an OCI runtime (runc's command line)."""
    ctx.obj = Globals(Root(root_dir or default_root()), log_file, log_format, debug, rootless)
    if systemd_cgroup:
        ctx.obj.debug_log("--systemd-cgroup: rl-oci has no systemd cgroup manager; ignored")


def _bundle_options(f: Any) -> Any:
    for opt in reversed([
        click.option("-b", "--bundle", default=".", help="the bundle directory"),
        click.option("--pid-file", default=None, help="write PID 1's pid here"),
        click.option("--console-socket", default=None,
                     help="unix socket to send the pty master to"),
        click.option("--no-new-keyring", is_flag=True,
                     help="accepted: rl gives each process a new session keyring regardless"),
        click.option("--no-pivot", is_flag=True, hidden=True),
        click.option("--preserve-fds", type=click.IntRange(0), default=0,
                     help="pass fds 3..3+N-1 to the container"),
    ]):
        f = opt(f)
    return f


def _options(g: Globals, bundle: str, pid_file: str | None, console_socket: str | None,
             preserve_fds: int, foreground: bool = False) -> lifecycle.Options:
    # LISTEN_FDS (systemd socket activation) counts as preserved, as in runc.
    listen = os.environ.get("LISTEN_FDS", "")
    extra = int(listen) if listen.isdigit() else 0
    return lifecycle.Options(bundle, pid_file, console_socket, preserve_fds + extra,
                             g.rootless, foreground)


@cli.command()
@click.argument("container_id")
@_bundle_options
@click.pass_context
def create(ctx: click.Context, container_id: str, bundle: str, pid_file: str | None,
           console_socket: str | None, no_new_keyring: bool, no_pivot: bool,
           preserve_fds: int) -> None:
    """Create a container that waits for `start`."""
    g = _g(ctx)
    created = lifecycle.create(g.root, container_id,
                               _options(g, bundle, pid_file, console_socket, preserve_fds),
                               g.debug_log)
    created.close()


@cli.command()
@click.argument("container_id")
@_bundle_options
@click.option("-d", "--detach", is_flag=True, help="do not wait for the container")
@click.option("--keep", is_flag=True, help="keep the state after the container exits")
@click.pass_context
def run(ctx: click.Context, container_id: str, bundle: str, pid_file: str | None,
        console_socket: str | None, no_new_keyring: bool, no_pivot: bool,
        preserve_fds: int, detach: bool, keep: bool) -> None:
    """Create and start a container; in the foreground, wait and exit with its status."""
    g = _g(ctx)
    opts = _options(g, bundle, pid_file, console_socket, preserve_fds, foreground=not detach)
    ctx.exit(lifecycle.run(g.root, container_id, opts, g.debug_log))


@cli.command()
@click.argument("container_id")
@click.pass_context
def start(ctx: click.Context, container_id: str) -> None:
    """Start a created container."""
    control.start(_g(ctx).root, container_id)


@cli.command()
@click.argument("container_id")
@click.pass_context
def state(ctx: click.Context, container_id: str) -> None:
    """Print the container's state (the OCI runtime spec's JSON)."""
    click.echo(json.dumps(control.state(_g(ctx).root, container_id), indent=2))


@cli.command()
@click.option("-a", "--all", "all_", is_flag=True, help="signal every process of it")
@click.argument("container_id")
@click.argument("signal_", metavar="[SIGNAL]", default="SIGTERM")
@click.pass_context
def kill(ctx: click.Context, all_: bool, container_id: str, signal_: str) -> None:
    """Send a signal (a name or number; SIGTERM by default) to the container."""
    control.kill(_g(ctx).root, container_id, control.parse_signal(signal_), all_)


@cli.command()
@click.option("-f", "--force", is_flag=True, help="kill a running container first")
@click.argument("container_id")
@click.pass_context
def delete(ctx: click.Context, force: bool, container_id: str) -> None:
    """Delete a container's state (and the container, if created, or with -f)."""
    control.delete(_g(ctx).root, container_id, force)


@cli.command(name="list")
@click.option("-f", "--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option("-q", "--quiet", is_flag=True, help="only the ids")
@click.pass_context
def list_(ctx: click.Context, fmt: str, quiet: bool) -> None:
    """List the containers under --root."""
    entries = list(_g(ctx).root.entries())
    if quiet:
        for e in entries:
            click.echo(e.id)
        return
    rows: list[dict[str, Any]] = []
    for e in entries:
        if e.record is None:  # damaged or half-made: listed, never in the way
            rows.append({"ociVersion": OCI_VERSION, "id": e.id, "pid": 0, "status": e.status,
                         "bundle": "", "rootfs": "", "created": "", "owner": ""})
        else:
            rows.append(state_json(e.record, e.status))
    if fmt == "json":
        click.echo(json.dumps(rows))
        return
    table = [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]]
    table += [[r["id"], str(r["pid"]), r["status"], r["bundle"], r["created"], r["owner"]]
              for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("-f", "--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.argument("container_id")
@click.argument("ps_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def ps(ctx: click.Context, fmt: str, container_id: str, ps_args: tuple[str, ...]) -> None:
    """The container's processes (JSON: their host pids; table: ps's)."""
    from ..errors import NotRunning

    rec, status = _g(ctx).root.get(container_id)
    pids = control.members(rec) if status in ("created", "running") else []
    if fmt == "json":
        click.echo(json.dumps(pids))
        return
    if status not in ("created", "running"):
        raise NotRunning("container not running")
    import subprocess

    out = subprocess.run(["ps", *(ps_args or ("-ef",))], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise RlError(f"ps: {out.stderr.strip()}")
    lines = out.stdout.splitlines()
    if not lines:
        return
    header = lines[0].split()
    col = header.index("PID") if "PID" in header else 1
    click.echo(lines[0])
    wanted = {str(p) for p in pids}
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > col and fields[col] in wanted:
            click.echo(line)


@cli.command()
@click.pass_context
def features(ctx: click.Context) -> None:
    """What this runtime supports (runc's JSON shape)."""
    click.echo(json.dumps(defaults.features(), indent=4))


@cli.command()
@click.option("--rootless", "rootless_spec", is_flag=True,
              help="a config for an unprivileged user")
@click.option("-b", "--bundle", default=".", help="where to write config.json")
@click.pass_context
def spec(ctx: click.Context, rootless_spec: bool, bundle: str) -> None:
    """Write a default config.json, as `runc spec`."""
    path = os.path.join(bundle, "config.json")
    data = json.dumps(defaults.default_spec(rootless_spec), indent=4) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except FileExistsError:
        raise RlError("File config.json exists. Remove it first") from None
    except OSError as e:
        raise RlError(f"{path}: {e.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(data)


@cli.command(name="exec", context_settings={"allow_interspersed_args": False})
@click.option("-p", "--process", "process_file", default=None,
              help="a process.json to run instead of ARGS")
@click.option("-d", "--detach", is_flag=True)
@click.option("-t", "--tty", is_flag=True)
@click.option("--console-socket", default=None)
@click.option("--pid-file", default=None)
@click.option("-e", "--env", multiple=True)
@click.option("--cwd", default=None)
@click.option("-u", "--user", default=None, help="uid[:gid]")
@click.option("--preserve-fds", type=click.IntRange(0), default=0)
@click.option("--no-new-privs", is_flag=True, hidden=True)
@click.option("--process-label", default=None, hidden=True)
@click.option("--apparmor", default=None, hidden=True)
@click.option("--cap", "-c", multiple=True, hidden=True)
@click.argument("container_id")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def exec_(ctx: click.Context, process_file: str | None, detach: bool, tty: bool,
          console_socket: str | None, pid_file: str | None, env: tuple[str, ...],
          cwd: str | None, user: str | None, preserve_fds: int, no_new_privs: bool,
          process_label: str | None, apparmor: str | None, cap: tuple[str, ...],
          container_id: str, args: tuple[str, ...]) -> None:
    """Run a process in a running container."""
    from . import execute

    opts = execute.ExecOptions(process_file, list(args), detach, tty, console_socket,
                               pid_file, list(env), cwd, user, preserve_fds)
    ctx.exit(execute.run(_g(ctx).root, container_id, opts))


def main(argv: list[str] | None = None) -> NoReturn:
    ctx: click.Context | None = None
    g: Globals | None = None
    try:
        args = list(sys.argv[1:] if argv is None else argv)
        # No arguments: the help on stdout and exit 0, as runc (not a usage error).
        ctx = cli.make_context("rl-oci", args or ["--help"])
        with ctx:
            code = cli.invoke(ctx)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        g = ctx.obj if ctx is not None else None
        fail(g, e.format_message())
    except RlError as e:
        fail(ctx.obj if ctx is not None else None, e.message)
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        fail(ctx.obj if ctx is not None else None, f"{e.strerror or e}{where}")
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
