"""rl's command line: a thin click shell over the engine (rootless.engine).

Flags, output shapes and exit codes follow docker's: 125 for rl's own errors
(bad flags included), 126/127 when the command cannot be run or found,
the container's own status otherwise, 1 for a failing management command.

A command converts its flags into the engine's options (engine/options.py),
resolving what only the caller knows first (cli/resolve.py: -e KEY,
--env-file, relative paths), and calls the engine. `rl run` here is the
fallback of entry.py's quick path: it sends its resolved options to the
fork server, whose warm, forked supervisor validates them, creates the
record and starts the container (containers.create there). Every other
command imports the engine when it runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from .. import __version__
from ..defaults import DEFAULT_NETWORK
from ..engine.options import CreateOptions, ExecOptions
from ..errors import EXIT_RL, InvalidArgument, NoSuchContainer, RlError
from ..runtime.resources import LimitFlags
from . import build, builder, groups, images, monitor, netflags, resolve, restarts, views
from .cp import cp as cp_cmd
from .format import error, parse_template, print_inspect, render, select, truncate

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..engine.store import Container

_RUN_SETTINGS = {"allow_interspersed_args": False, "help_option_names": ["--help"]}


def _fail(msg: str, code: int) -> NoReturn:
    error(msg)
    sys.exit(code)


def _supervisor_died() -> NoReturn:
    from .. import paths

    _fail("the container's supervisor died; see "
          f"{paths.runtime_dir() / 'forkserver.log'}", EXIT_RL)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name="rl")
def cli() -> None:
    """rl: rootless containers, the docker way."""


# -- shared flag sets ----------------------------------------------------------------

def limit_options(f: Callable[..., Any], cgroups: bool) -> Callable[..., Any]:
    """docker's resource flags, shared by run, create and update."""
    opts = [
        click.option("-m", "--memory", help="Memory limit (e.g. 512m, 1g)."),
        click.option("--memory-swap",
                     help="Memory plus swap limit; -1 for unlimited swap."),
        click.option("--memory-reservation", help="Memory soft limit (memory.low)."),
        click.option("--cpus", help="Number of CPUs (e.g. 1.5)."),
        click.option("--cpu-period", type=int, help="CFS period in microseconds."),
        click.option("--cpu-quota", type=int, help="CFS quota in microseconds per period."),
        click.option("-c", "--cpu-shares", type=int, help="CPU shares (relative weight)."),
        click.option("--pids-limit", type=int, help="Process limit (-1 for unlimited)."),
        click.option("--cpuset-cpus", help="CPUs allowed (0-3, 0,1)."),
        click.option("--cpuset-mems", help="Memory nodes allowed (0-3, 0,1)."),
        click.option("--blkio-weight", type=int, help="Block IO weight, 10 to 1000."),
        click.option("--blkio-weight-device", multiple=True, help="DEVICE:WEIGHT."),
        click.option("--device-read-bps", multiple=True, help="DEVICE:RATE (e.g. 10mb)."),
        click.option("--device-write-bps", multiple=True, help="DEVICE:RATE."),
        click.option("--device-read-iops", multiple=True, help="DEVICE:IOPS."),
        click.option("--device-write-iops", multiple=True, help="DEVICE:IOPS."),
    ]
    if cgroups:
        opts.append(click.option("--cgroups", type=click.Choice(["enabled", "disabled"]),
                                 help="disabled: no cgroup, no limits (default: "
                                      "$RL_CGROUPS or enabled)."))
    for o in reversed(opts):
        f = o(f)
    return f


def _plain(kw: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The flags whose destinations are these field names; click's tuples as lists."""
    return {n: list(kw[n]) if isinstance(kw[n], tuple) else kw[n] for n in names}


def _limit_kw(kw: dict[str, Any]) -> dict[str, Any]:
    """The limit flags as resources.LimitFlags' fields (their destinations are those names)."""
    return _plain(kw, (f.name for f in dataclasses.fields(LimitFlags)))


def hpc_options() -> list[Callable[..., Any]]:
    """HPC and workstation mode's flags (engine/hpc.py)."""
    return [
        click.option("--userns", help="User namespace: keep-id[:uid=N,gid=N] runs you as "
                     "yourself."),
        click.option("--uidmap", multiple=True, help="Map container uids: CONTAINER:HOST:SIZE "
                     "(HOST: 0 is you, 1.. your subordinate range, as podman's)."),
        click.option("--gidmap", multiple=True, help="Map container gids as --uidmap does."),
        click.option("--subuidname", help="Map container uids to this /etc/subuid name's "
                     "range."),
        click.option("--subgidname", help="Map container gids to this /etc/subgid name's "
                     "range."),
        click.option("--device", "devices", multiple=True,
                     help="Add a host device HOST[:CONTAINER][:PERMS]."),
        click.option("--ipc", help="IPC mode: private, shareable, none or host."),
        click.option("--pid", help="PID mode: private or host."),
        click.option("--uts", help="UTS mode: private or host."),
        click.option("--shm-size", help="Size of /dev/shm (default 64m)."),
        click.option("--privileged", is_flag=True,
                     help="Every capability, no seccomp, the host's devices you may open "
                     "(rootless: still confined to your user)."),
        click.option("--sysctl", "sysctls", multiple=True,
                     help="Namespaced kernel parameters (net.*, kernel.shm*...): KEY=VALUE."),
        click.option("--tz", help="Timezone inside: local (the host's) or an IANA name."),
        click.option("--env-host", is_flag=True,
                     help="Pass your whole environment into the container."),
        click.option("--http-proxy", type=click.BOOL, default=False,
                     help="true: pass your http_proxy, https_proxy, ftp_proxy, no_proxy "
                     "(default false)."),
    ]


def run_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--rootfs", is_flag=True,
                     help="The first argument is a root filesystem directory, not an image."),
        click.option("--name", help="Assign a name to the container."),
        click.option("-e", "--env", multiple=True, help="Set environment variables."),
        click.option("--env-file", multiple=True, help="Read in a file of environment variables."),
        click.option("-w", "--workdir", help="Working directory inside the container."),
        click.option("-u", "--user", help="Username or UID (format: <name|uid>[:<group|gid>])."),
        click.option("--entrypoint", help="Overwrite the default ENTRYPOINT."),
        click.option("-h", "--hostname", help="Container host name."),
        click.option("-v", "--volume", "volumes", multiple=True,
                     help="Bind mount HOST:CONTAINER[:ro]."),
        click.option("--tmpfs", multiple=True, help="Mount a tmpfs directory PATH[:OPTIONS]."),
        click.option("--mount", "mounts", multiple=True, help="Attach a filesystem mount: "
                     "type=bind|volume|tmpfs,src=...,dst=...[,ro]..."),
        click.option("--volumes-from", multiple=True,
                     help="Mount volumes from the specified container(s): CTR[:ro|rw]."),
        click.option("--read-only", is_flag=True, help="Mount the root filesystem read-only."),
        click.option("--init", is_flag=True, help="Run an init inside the container."),
        click.option("--cap-add", multiple=True, help="Add Linux capabilities."),
        click.option("--cap-drop", multiple=True, help="Drop Linux capabilities."),
        click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY."),
        click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open."),
        click.option("--network", "--net", "network", multiple=True,
                     help=f"Network mode: slirp4netns[:options], pasta, host, none, "
                     f"container:NAME, or networks' names (default: {DEFAULT_NETWORK})."),
        click.option("--ulimit", "ulimits", multiple=True,
                     help="Ulimit options (name=soft[:hard])."),
        click.option("--security-opt", multiple=True, help="Security options."),
        click.option("--stop-signal", help="Signal to stop the container."),
        click.option("--stop-timeout", type=int, help="Timeout (in seconds) to stop."),
        click.option("-l", "--label", "labels", multiple=True,
                     help="Set metadata on the container."),
        click.option("--group-add", multiple=True, help="Additional groups to join."),
        *hpc_options(),  # issue 18: --userns, --device, --ipc, --pid, --uts, --shm-size
        click.option("--rm", is_flag=True, help="Remove the container when it exits."),
        click.option("--storage-driver", help="How the image becomes the container's root: "
                     "overlay, fuse, fuse-overlayfs or vfs (default: see rl info)."),
        click.option("--pull", "pull_policy", default="missing", show_default=True,
                     type=click.Choice(["always", "missing", "never"]),
                     help="Pull the image before running."),
        click.option("--tls-verify", default="true",
                     help="Pulling: false talks plain HTTP (loopback registries)."),
        click.argument("image"),
        click.argument("command", nargs=-1, type=click.UNPROCESSED),
    ]
    for o in reversed(opts):
        f = o(f)
    return limit_options(netflags.options(restarts.options(f)), cgroups=True)


# CreateOptions' fields that flags of the same name do not give as they are.
_DERIVED = {"rootfs", "image", "env", "host_env", "volumes", "mounts", "security_opt",
            "console_size", "image_defaults", "image_volumes", "limits", "network",
            "extra_networks"}


def _options(kw: dict[str, Any], environ: Mapping[str, str], cwd: str) -> CreateOptions:
    """The flags as the engine's CreateOptions: a flag's destination is its field's name;
    the caller's environment and cwd resolve -e KEY, --env-file and relative paths."""
    names = [f.name for f in dataclasses.fields(CreateOptions) if f.name not in _DERIVED]
    rootfs = ""
    if kw["rootfs"]:
        # An error of --storage-driver's comes first, as the engine checks it first.
        rootfs = (resolve.rootfs(kw["image"], cwd) if kw["storage_driver"] is None
                  else resolve.path(kw["image"], cwd))
    return CreateOptions(
        rootfs=rootfs, image=None if kw["rootfs"] else kw["image"],
        env=resolve.env(kw["env"], environ, kw["env_file"], cwd),
        host_env=resolve.host_env(environ, kw["env_host"], kw["http_proxy"]),
        volumes=[resolve.bind(v, cwd) for v in kw["volumes"]],
        mounts=[resolve.mount(m, cwd) for m in kw["mounts"]],
        security_opt=[resolve.security_opt(so, cwd) for so in kw["security_opt"]],
        network=kw["network"][0] if kw["network"] else DEFAULT_NETWORK,
        extra_networks=list(kw["network"][1:]),
        limits=LimitFlags(**_limit_kw(kw)), **_plain(kw, names))


# -- run / create / start -------------------------------------------------------------

@cli.command(context_settings=_RUN_SETTINGS)
@click.option("-d", "--detach", is_flag=True, help="Run in the background, print its ID.")
@run_options
def run(detach: bool, **kw: Any) -> None:
    """Create and run a container: rl run [OPTIONS] --rootfs DIR COMMAND [ARG...]"""
    from ..engine import client
    from . import attach

    opts = _options(kw, os.environ, resolve.current_dir())
    if opts.tty and not detach:
        opts.console_size = attach.terminal_size()
    stdin = opts.interactive and not detach
    plain = dataclasses.asdict(opts)  # it travels to the fork server as JSON
    session = _pulling(kw, lambda: client.run_container(plain, attach=not detach, stdin=stdin))
    if detach:
        session.close()
        click.echo(session.event["id"])
        return
    code = attach.run(session, tty=opts.tty, stdin=opts.interactive,
                      detach_keys=attach.default_detach_keys(opts.tty, opts.interactive))
    session.close()
    code = 0 if code == attach.DETACHED else code
    if code is None:
        _supervisor_died()
    # Nothing is left to clean up: skip the interpreter's teardown (~10 ms).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def parse_run(argv: list[str], console_size: tuple[int, int] | None,
              environ: Mapping[str, str] | None = None, cwd: str | None = None
              ) -> tuple[CreateOptions, dict[str, Any]]:
    """`rl run ARGV` parsed as `run` above would, for the supervisor (entry.py), with the
    client's environment and working directory (default: this process's):
    (CreateOptions, flags: detach tty interactive pull_policy rootfs).

    NeedsFullCli where the user must hear from click or see a pull: help, a
    usage error, --pull=always.
    """
    from ..errors import NeedsFullCli

    try:
        ctx = run.make_context("run", list(argv))
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise NeedsFullCli from None
    kw = dict(ctx.params)
    detach = kw.pop("detach")
    if kw["pull_policy"] == "always":
        raise NeedsFullCli
    opts = _options(kw, os.environ if environ is None else environ,
                    resolve.current_dir() if cwd is None else cwd)
    if opts.tty and not detach:
        opts.console_size = console_size
    flags = {"detach": detach, "tty": opts.tty, "interactive": opts.interactive,
             "pull_policy": kw["pull_policy"], "rootfs": kw["rootfs"]}
    return opts, flags


@cli.command(context_settings=_RUN_SETTINGS)
@run_options
def create(**kw: Any) -> None:
    """Create a container without starting it; prints its ID."""
    from ..engine import containers as api

    opts = _options(kw, os.environ, resolve.current_dir())
    ctr = _pulling(kw, lambda: api.create(opts,
                                          warn=lambda m: click.echo(f"WARNING: {m}", err=True)))
    click.echo(ctr.id)


T = TypeVar("T")


def _pulling(kw: dict[str, Any], create: Callable[[], T]) -> T:
    """docker's --pull: 'missing' pulls an image that is not in the store and
    tries again, 'always' pulls first, 'never' leaves the error as it is."""
    from ..errors import NoSuchImage

    policy, image = kw["pull_policy"], kw["image"]
    if kw["rootfs"]:
        return create()
    if policy == "always":
        _pull(image, kw["tls_verify"])
        return create()
    try:
        return create()
    except NoSuchImage as e:
        from ..image.reference import looks_like_id

        if policy != "missing" or looks_like_id(image) or e.ref != image:
            raise
    click.echo(f"Unable to find image '{image}' locally", err=True)
    _pull(image, kw["tls_verify"])
    return create()


def _pull(image: str, tls_verify: str) -> None:
    from ..image.transfer import PullOptions, pull
    from .progress import Progress

    with Progress(False) as progress:
        pull(image, PullOptions(tls_verify=images.parse_tls_verify(tls_verify)), progress)


@cli.command()
@click.option("-a", "--attach", "attach_", is_flag=True, help="Attach STDOUT/STDERR.")
@click.option("-i", "--interactive", is_flag=True, help="Attach STDIN.")
@click.argument("containers", nargs=-1)
@restarts.start_option
def start(attach_: bool, interactive: bool, containers: tuple[str, ...],
          all_restartable: bool = False) -> None:
    """Start one or more created or stopped containers."""
    from ..engine import containers as api
    from ..engine import store
    from . import attach

    if all_restartable:
        if containers:
            raise click.UsageError("--all-restartable takes no container names")
        return restarts.start_all()
    if not containers:
        raise click.UsageError("Missing argument 'CONTAINERS...'.")
    if attach_ and len(containers) > 1:
        raise InvalidArgument("you cannot start and attach multiple containers at once", 1)
    failed = False
    for ref in containers:
        try:
            ctr = store.lookup(ref)
            session = api.start(ctr, attach=attach_, stdin=interactive)
        except RlError as e:
            error(e.message)
            failed = True
            continue
        if session is None:
            click.echo(ref)
            continue
        code = attach.run(session, tty=ctr.config.tty, stdin=interactive,
                          detach_keys=attach.default_detach_keys(ctr.config.tty, interactive))
        code = 0 if code == attach.DETACHED else code
        if code is None:
            _supervisor_died()
        sys.exit(code)
    if failed:
        sys.exit(1)


# -- stop / kill / rm / wait / rename ---------------------------------------------------

def _each(refs: Iterable[str], action: Callable[[Container], None], echo: bool = True) -> None:
    from ..engine import store

    failed = False
    for ref in refs:
        try:
            action(store.lookup(ref))
            if echo:
                click.echo(ref)
        except RlError as e:
            error(e.message)
            failed = True
    if failed:
        sys.exit(1)


@cli.command()
@click.option("-t", "--time", "timeout", type=int, help="Seconds to wait before killing it.")
@click.option("-s", "--signal", "sig", help="Signal to send instead of the stop signal.")
@click.argument("containers", nargs=-1, required=True)
def stop(timeout: int | None, sig: str | None, containers: tuple[str, ...]) -> None:
    """Stop running containers: the stop signal, then SIGKILL after a grace period."""
    from ..engine import containers as api

    opts = api.StopOptions(timeout)  # the timeout is checked before the signal
    opts.signal = api.parse_signal(sig) if sig else None
    _each(containers, lambda c: api.stop(c, opts))


@cli.command()
@click.option("-s", "--signal", "sig", default="KILL", show_default=True)
@click.argument("containers", nargs=-1, required=True)
def kill(sig: str, containers: tuple[str, ...]) -> None:
    """Send a signal to running containers."""
    from ..engine import containers as api

    signum = api.parse_signal(sig)
    _each(containers, lambda c: api.kill(c, signum))


@cli.command()
@click.option("-f", "--force", is_flag=True, help="Kill and remove a running container.")
@click.option("-v", "--volumes", is_flag=True, help="Remove its anonymous volumes too.")
@click.argument("containers", nargs=-1, required=True)
def rm(force: bool, volumes: bool, containers: tuple[str, ...]) -> None:
    """Remove containers."""
    from ..engine import containers as api

    _each(containers, lambda c: api.remove(c, force, volumes))


@cli.command()
@click.argument("containers", nargs=-1, required=True)
def wait(containers: tuple[str, ...]) -> None:
    """Block until containers stop, then print their exit codes."""
    from ..engine import containers as api

    _each(containers, lambda c: click.echo(api.wait(c)), echo=False)


@cli.command()
@click.argument("old")
@click.argument("new")
def rename(old: str, new: str) -> None:
    """Rename a container."""
    from ..engine import containers as api
    from ..engine import store

    api.rename(store.lookup(old), new)


# -- exec ---------------------------------------------------------------------------

@cli.command("exec", context_settings=_RUN_SETTINGS)
@click.option("-i", "--interactive", is_flag=True)
@click.option("-t", "--tty", is_flag=True)
@click.option("-e", "--env", multiple=True)
@click.option("-w", "--workdir")
@click.option("-u", "--user")
@click.option("-d", "--detach", is_flag=True, help="Run the command in the background.")
@click.argument("container")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(interactive: bool, tty: bool, env: tuple[str, ...], workdir: str | None,
          user: str | None, detach: bool, container: str, command: tuple[str, ...]) -> None:
    """Run a command in a running container."""
    from ..engine import store
    from . import execterm

    # -d: no terminal and no input (docker allocates a tty nobody reads).
    opts = ExecOptions(list(command), resolve.env(env, os.environ), workdir, user,
                       tty and not detach, interactive and not detach, detach)
    code = execterm.run(store.lookup(container), opts)
    sys.exit(code)


# -- views ---------------------------------------------------------------------------

@cli.command()
@click.option("-a", "--all", "all_", is_flag=True, help="Show all containers.")
@click.option("-q", "--quiet", is_flag=True, help="Only display container IDs.")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("--format", "fmt", help="'table', 'json' or a Go template.")
@click.option("-f", "--filter", "filters", multiple=True, help="name=, status=, id=")
@click.option("-l", "--latest", is_flag=True, help="Show the latest created container.")
@click.option("-n", "--last", type=int, default=-1, help="Show n last created containers.")
def ps(all_: bool, quiet: bool, no_trunc: bool, fmt: str | None, filters: tuple[str, ...],
       latest: bool, last: int) -> None:
    """List containers."""
    import time

    from ..engine import listing

    shape = select(fmt)
    entries = listing.list_containers(all_, listing.Filters.parse(filters),
                                      1 if latest else (last if last >= 0 else None))
    now = time.time()
    if quiet:
        for e in entries:
            click.echo(e.id if no_trunc else e.id[:12])
        return
    rows = [views.ps_row(e, now, no_trunc) for e in entries]

    def view(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
        table = [["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]]
        for e, d in zip(entries, rows, strict=True):
            cmd = e.command if no_trunc else truncate(e.command, 20)
            table.append([d["ID"], e.image, f'"{cmd}"', d["RunningFor"], d["Status"],
                          d["Ports"], e.name])
        return table

    for line in render(shape, rows, view, views.PS_HEADERS):
        click.echo(line)


@cli.command()
@click.option("-f", "--follow", is_flag=True, help="Follow log output.")
@click.option("-n", "--tail", default="all", help="Number of lines from the end.")
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps.")
@click.argument("container")
def logs(follow: bool, tail: str, timestamps: bool, container: str) -> None:
    """Fetch the logs of a container."""
    from ..engine import containers as api
    from ..engine import store

    if tail != "all" and not tail.lstrip("-").isdigit():
        raise InvalidArgument(f"invalid value for --tail: {tail}")
    n = None if tail == "all" or int(tail) < 0 else int(tail)
    ctr = store.lookup(container)
    out = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    for rec in api.logs(ctr, follow=follow, tail=n):
        f = out.get(rec.stream, sys.stdout.buffer)
        text = rec.text.encode()
        if timestamps:
            text = rec.time.encode() + b" " + text
        f.write(text)
        if follow:
            f.flush()
    sys.stdout.flush()


@cli.command()
@click.option("-f", "--format", "fmt", help="Format the output using a Go template.")
@click.option("--type", "type_", default="", help="container or image (default: either).")
@click.argument("containers", nargs=-1, required=True)
def inspect(fmt: str | None, type_: str, containers: tuple[str, ...]) -> None:
    """Display detailed information on containers or images."""
    from ..engine import containers as api
    from ..engine import store

    if type_ not in ("", "container", "image"):
        raise InvalidArgument(f'"{type_}" is not a valid value for --type')
    if fmt:
        parse_template(fmt)  # a template that does not parse fails before any lookup
    results, failed = [], False
    for ref in containers:
        try:
            if type_ == "image":
                results.append(images.inspect_image(ref))
                continue
            try:
                results.append(api.inspect(store.lookup(ref)))
            except NoSuchContainer:
                if type_:
                    raise
                # As docker: not a container, so maybe an image.
                results.append(images.inspect_image(ref, f"no such container: {ref}"))
        except RlError as e:
            error(e.message)
            failed = True
    print_inspect(results, fmt, failed)


@cli.command(context_settings=_RUN_SETTINGS)
@click.argument("container")
@click.argument("ps_args", nargs=-1, type=click.UNPROCESSED)
def top(container: str, ps_args: tuple[str, ...]) -> None:
    """Display the running processes of a container."""
    from ..engine import containers as api
    from ..engine import store

    lines = api.top(store.lookup(container), list(ps_args)).lines
    click.echo("".join(line + "\n" for line in lines), nl=False)


@cli.command()
@click.argument("container")
@click.argument("private_port", required=False)
def port(container: str, private_port: str | None) -> None:
    """List a container's port mappings, or the host addresses of PRIVATE_PORT[/PROTO]."""
    from ..engine import listing

    ports = listing.port(container, private_port)
    for line in views.port_lines(ports, addresses_only=private_port is not None):
        click.echo(line)


@cli.command(context_settings=_RUN_SETTINGS)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def unshare(command: tuple[str, ...]) -> None:
    """Run a command (default: your $SHELL) as root of rl's user namespace."""
    from ..engine import containers as api

    argv = list(command) or [os.environ.get("SHELL") or "/bin/sh"]
    sys.stdout.flush()
    sys.exit(api.unshare(argv, dict(os.environ)))


@cli.command()
@click.option("-f", "--format", "fmt", help="'json' or a Go template.")
def info(fmt: str | None) -> None:
    """What the kernel and host offer rl, and where its state lives."""
    from ..engine import info as info_mod

    shape = select(fmt, table_keyword=False)
    data = info_mod.gather()
    if shape.template is not None:
        click.echo(shape.template.render(data))
    elif shape.json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(views.render_info(data), nl=False)


# Image commands live in their own module (cli/images.py), rl build in cli/build.py.
images.register(cli)
build.register(cli)
builder.register(cli)
restarts.register(cli)


# -- resource limits: flags, stats, update (rootless/quotas.py) -------------------------

@cli.command()
@click.argument("containers", nargs=-1, required=True)
def update(containers: tuple[str, ...], **kw: Any) -> None:
    """Change the resource limits of containers (at once if they run)."""
    from ..engine import quotas
    from ..runtime.resources import LimitFlags

    policy = kw.pop("restart", None)
    flags = LimitFlags(**_limit_kw(kw))

    def one(ctr: Container) -> None:
        if policy is not None:
            from ..engine import restart

            restart.update(ctr, policy)
        if policy is None or flags.given():
            quotas.update(ctr, flags)

    _each(containers, one)


update = restarts.update_option(limit_options(update, cgroups=False))  # type: ignore[assignment]


@cli.command()
@click.option("-a", "--all", "all_", is_flag=True, help="Accepted for docker compatibility.")
@click.option("--no-stream", is_flag=True, help="Print one result and exit.")
@click.option("--format", "fmt", help="'table', 'json' or a Go template.")
@click.option("--interval", type=float, default=1.0, show_default=True,
              help="Seconds between samples.")
@click.argument("containers", nargs=-1)
def stats(all_: bool, no_stream: bool, fmt: str | None, interval: float,
          containers: tuple[str, ...]) -> None:
    """Live CPU, memory, pids, block and network I/O of running containers."""
    from ..engine import quotas

    del all_
    if interval <= 0:
        raise InvalidArgument(f"invalid --interval {interval}: must be positive")
    clear = not no_stream and sys.stdout.isatty() and fmt in (None, "table")
    shape = select(fmt)
    first, noted = True, False
    while True:
        found = quotas.stats(list(containers), interval, strict=first)
        rows = [views.stats_row(s) for s in found]
        first = False
        blind = [s.name for s in found if not s.available]
        if blind and not noted:  # once: the columns would otherwise say "--" unexplained
            noted = True
            click.echo(f"note: {', '.join(blind)}: no cgroup of its own (rl info tells why): "
                       "CPU, memory and block I/O are unknown; PIDs and network I/O come "
                       "from /proc", err=True)
        out = "\n".join(render(shape, rows, _stats_table, views.STATS_HEADERS))
        if clear:
            click.echo("\033[2J\033[H", nl=False)
        if out:
            click.echo(out)
        sys.stdout.flush()
        if no_stream or (containers and not rows):
            return


def _stats_table(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O",
             "BLOCK I/O", "PIDS"],
            *([r["Container"], r["Name"], r["CPUPerc"], r["MemUsage"], r["MemPerc"], r["NetIO"],
               r["BlockIO"], r["PIDs"]] for r in rows)]


# docker's management spellings (rl container ls, rl system prune) and rl version,
# over every command defined above.
monitor.register(cli)  # events, attach, pause, unpause
cli.add_command(cp_cmd)  # rl cp, before groups adds `rl container cp`
groups.register(cli)


def main() -> None:
    from .. import output

    try:
        try:
            _main()
        finally:
            # Here, not at the interpreter's exit, where a failure is a traceback.
            sys.stdout.flush()
    except output.OutputError as e:
        output.fail(e)


def _main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:
        click.echo(e.ctx.get_help() if e.ctx else str(e))
        sys.exit(0)
    except click.UsageError as e:
        error(e.format_message())
        if e.ctx is not None:
            click.echo(f"See '{e.ctx.command_path} --help'.", err=True)
        sys.exit(EXIT_RL)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        sys.exit(130)
    except click.ClickException as e:
        _fail(e.format_message(), EXIT_RL)
    except RlError as e:
        _fail(e.message, e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
