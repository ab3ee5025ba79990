"""The engine's options: one dataclass per operation, what every face converts into.

The CLI's click flags convert into these (rootless/cli/app.py), and the
Docker API's JSON bodies will. Their values are resolved: the engine never
reads its caller's environment or working directory (it may run in a
long-lived process on another's behalf), so a face turns `-e KEY` into
KEY=VALUE, reads --env-file and makes relative paths absolute first.
Validation of the values themselves is the engine's (specgen.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..defaults import DEFAULT_NETWORK
from ..errors import InvalidArgument
from ..image.imageconfig import ImageDefaults  # image data, in CreateOptions
from ..runtime.resources import LimitFlags


@dataclass
class Bind:
    """A bind mount in docker's HOST:CONTAINER[:OPTS] syntax (-v, HostConfig.Binds).

    text stays as the user wrote it: messages quote it and inspect's Binds
    show it. source is the host path made absolute by the face where text's
    is relative; None: text's own host path, which must then be absolute.
    """

    text: str
    source: str | None = None


@dataclass
class CreateOptions:
    """docker run/create: what the container is made of, as plain, resolved data."""

    rootfs: str  # absolute; an image's prepared root when image is set
    command: list[str] = field(default_factory=list)
    name: str | None = None
    env: list[str] = field(default_factory=list)  # KEY=VALUE, --env-file's lines first
    # the caller's environment the user asked for (--env-host, --http-proxy), resolved by
    # the face: over the image's Env, under env
    host_env: list[str] = field(default_factory=list)
    workdir: str | None = None
    user: str | None = None
    entrypoint: str | None = None
    hostname: str | None = None
    volumes: list[Bind] = field(default_factory=list)
    tmpfs: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)  # --mount, a bind's relative src made absolute
    volumes_from: list[str] = field(default_factory=list)  # CTR[:ro|rw]
    read_only: bool = False
    init: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    tty: bool = False
    interactive: bool = False
    rm: bool = False
    network: str = DEFAULT_NETWORK
    extra_networks: list[str] = field(default_factory=list)  # further --network NAMEs
    # netstack (issue 5): -p, -P, --expose, --dns, --add-host, --network-bandwidth
    publish: list[str] = field(default_factory=list)
    publish_all: bool = False
    expose: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    add_hosts: list[str] = field(default_factory=list)
    network_bandwidth: str | None = None
    network_aliases: list[str] = field(default_factory=list)  # issue 14: --network-alias
    ip: str | None = None  # --ip on a user-defined network
    ulimits: list[str] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=list)  # seccomp=PATH: PATH absolute
    stop_signal: str | None = None
    stop_timeout: int | None = None
    labels: list[str] = field(default_factory=list)
    group_add: list[str] = field(default_factory=list)
    console_size: tuple[int, int] | None = None
    image: str | None = None  # an image reference instead of a rootfs (rootless.image)
    image_defaults: ImageDefaults | None = None
    # False for the builder's RUN: BuildKit mounts no volume at an image's VOLUME there
    # (what a RUN writes below it stays in the layer)
    image_volumes: bool = True
    # --memory, --cpus, ... (resources.py) and --cgroups=enabled|disabled (quotas.py)
    limits: LimitFlags = field(default_factory=LimitFlags)
    cgroups: str | None = None
    storage_driver: str | None = None  # overlay | fuse | fuse-overlayfs | vfs (rootfs.py)
    # --restart (restart.py) and the healthcheck flags (health.py); None: not given
    restart: str | None = None
    health_cmd: str | None = None
    health_interval: str | None = None
    health_timeout: str | None = None
    health_retries: int | None = None
    health_start_period: str | None = None
    health_start_interval: str | None = None
    no_healthcheck: bool = False
    health_on_failure: str | None = None

    # issue 18 (engine/hpc.py): --userns, --uidmap/--gidmap, --device, --ipc/--pid/--uts, --shm-size
    userns: str | None = None
    uidmap: list[str] = field(default_factory=list)
    gidmap: list[str] = field(default_factory=list)
    subuidname: str | None = None
    subgidname: str | None = None
    devices: list[str] = field(default_factory=list)
    ipc: str | None = None
    pid: str | None = None
    uts: str | None = None
    shm_size: str | None = None
    sysctls: list[str] = field(default_factory=list)  # --sysctl KEY=VALUE
    privileged: bool = False
    tz: str | None = None  # --tz: local or an IANA name

    def __post_init__(self) -> None:
        # The CLI's `rl run` sends its options to the fork server as JSON
        # (dataclasses.asdict): rebuild the nested parts from their plain form.
        limits: Any = self.limits
        if isinstance(limits, dict):
            self.limits = LimitFlags(**limits)
        self.volumes = [Bind(**v) if isinstance(v, dict) else v for v in self.volumes]
        defaults: Any = self.image_defaults
        if isinstance(defaults, dict):
            self.image_defaults = ImageDefaults(**defaults)
        if self.console_size is not None:
            rows, cols = self.console_size
            self.console_size = (rows, cols)


def rootfs_missing(shown: str) -> InvalidArgument:
    """The error for a --rootfs that is no directory (shown as the user gave it: the face
    checks a relative one before it makes it absolute)."""
    return InvalidArgument(f"rootfs {shown!r} does not exist or is not a directory")



@dataclass
class ExecOptions:
    """docker exec: a command to run in a running container."""

    command: list[str]
    env: list[str] = field(default_factory=list)  # KEY=VALUE over the container's; no bare KEY
    workdir: str | None = None
    user: str | None = None
    tty: bool = False
    interactive: bool = False
    detach: bool = False
    console_size: tuple[int, int] | None = None  # -t: the pty's (rows, cols) from the start

    def __post_init__(self) -> None:
        # Checked where the options are made: before the container is looked up.
        if self.workdir is not None and not self.workdir.startswith("/"):
            raise InvalidArgument(f"the working directory '{self.workdir}' is invalid, it "
                                  "needs to be an absolute path")


@dataclass
class StopOptions:
    """docker stop: the grace period (None: the container's) and signal (None: its own)."""

    timeout: int | None = None
    signal: int | None = None

    def __post_init__(self) -> None:
        if self.timeout is not None and self.timeout < -1:
            raise InvalidArgument(f"invalid value for --time: {self.timeout}")
