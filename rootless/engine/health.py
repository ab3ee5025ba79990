"""Healthchecks: the image's HEALTHCHECK and --health-*, run by the container's supervisor.

The configuration is docker's HealthConfig (Test, Interval, Timeout, Retries,
StartPeriod, StartInterval; durations in nanoseconds), the image's merged
under the flags at create as docker merges them. The supervisor probes on
its event loop (monitor): each probe is an exec (execute.start, the same
machinery as `rl exec`: every namespace of PID 1, its cgroup, the
container's user, capabilities, seccomp and environment), its stdout and
stderr together the entry's Output (4096 bytes at most), killed at the
timeout. The rules are docker's daemon/health.go: the first probe an
interval after the start (the start interval within the start period while
still starting), a success makes it healthy and resets FailingStreak, a
failure counts unless it is starting within the start period, Retries
failures in a row make it unhealthy; the last 5 results are kept. The
status lives in state.json (State.Health) and shows in ps: "(healthy)".

--health-on-failure (podman's): what the supervisor does once it turns
unhealthy: none, kill (SIGKILL; the restart policy applies), restart (start
it again at once, whatever the policy) or stop (as `rl stop`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from ..errors import InvalidArgument, NotRunning, RlError

if TYPE_CHECKING:
    from .store import Container, ContainerConfig, State

# A Supervisor (supervisor.py imports this module, so it is not named here).
Supervisor = Any

SECOND = 10**9
DEFAULT_INTERVAL = 30 * SECOND
DEFAULT_TIMEOUT = 30 * SECOND
DEFAULT_START_INTERVAL = 5 * SECOND
DEFAULT_RETRIES = 3
MIN_DURATION = 10**6  # docker refuses a non-zero duration under 1 ms
MAX_LOG = 5
MAX_OUTPUT = 4096
ACTIONS = ("none", "kill", "restart", "stop")
STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"

_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 10**6, "s": SECOND, "m": 60 * SECOND,
          "h": 3600 * SECOND}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str, flag: str) -> int:
    """A Go duration ("30s", "1m30s", "500ms", "0") in nanoseconds, as docker's flags take."""
    if text == "0":
        return 0
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise InvalidArgument(f'invalid argument "{text}" for "{flag}" flag: time: invalid '
                              f'duration "{text}"')
    return int(sum(float(n) * _UNITS[u] for n, u in parts))


@dataclass
class HealthFlags:
    """--health-* and --no-healthcheck as given (None: not given)."""

    cmd: str | None = None
    interval: str | None = None
    timeout: str | None = None
    retries: int | None = None
    start_period: str | None = None
    start_interval: str | None = None
    none: bool = False
    on_failure: str | None = None

    def given(self) -> bool:
        return any(v is not None for v in (self.cmd, self.interval, self.timeout, self.retries,
                                           self.start_period, self.start_interval))


def from_flags(flags: HealthFlags) -> dict[str, Any]:
    """docker's HealthConfig from the flags ({}: none given), with docker's checks."""
    if flags.none:
        if flags.given():
            raise InvalidArgument("--no-healthcheck conflicts with --health-* options")
        return {"Test": ["NONE"]}
    out: dict[str, Any] = {}
    if flags.cmd is not None:
        out["Test"] = ["CMD-SHELL", flags.cmd] if flags.cmd else []
    for key, flag, text in (("Interval", "--health-interval", flags.interval),
                            ("Timeout", "--health-timeout", flags.timeout),
                            ("StartPeriod", "--health-start-period", flags.start_period),
                            ("StartInterval", "--health-start-interval", flags.start_interval)):
        if text is None:
            continue
        if text.startswith("-"):
            raise InvalidArgument(f"{flag} cannot be negative")
        value = parse_duration(text, flag)
        if 0 < value < MIN_DURATION:
            raise InvalidArgument(f"{key} in Healthcheck cannot be less than 1ms")
        out[key] = value
    if flags.retries is not None:
        if flags.retries < 0:
            raise InvalidArgument("--health-retries cannot be negative")
        out["Retries"] = flags.retries
    return out


def merge(image: dict[str, Any] | None, given: dict[str, Any]) -> dict[str, Any]:
    """The container's healthcheck: the flags' fields over the image's (docker's merge:
    a field the flags leave zero is the image's); {} when there is none."""
    if given.get("Test") == ["NONE"]:
        return {"Test": ["NONE"]}
    out = {k: v for k, v in (image or {}).items()
           if k in ("Test", "Interval", "Timeout", "Retries", "StartPeriod", "StartInterval")}
    out.update({k: v for k, v in given.items() if v})
    test = out.get("Test") or []
    if not test or test[0] == "NONE":
        return {"Test": ["NONE"]} if test else {}
    return out


def create_fields(flags: HealthFlags) -> dict[str, Any]:
    """The record's healthcheck (the flags' part; the image's is merged in by images.py)
    and --health-on-failure, checked."""
    action = flags.on_failure or "none"
    if action not in ACTIONS:
        raise InvalidArgument(f'invalid on-failure action "{action}" for health check: '
                              "supported actions are: none, kill, restart, stop")
    return {"healthcheck": from_flags(flags), "health_on_failure": action}


def inherit(cfg: ContainerConfig, image_config: dict[str, Any]) -> None:
    """Merge the image's HEALTHCHECK (as rl build and docker record it) into cfg's."""
    hc = (image_config.get("config") or {}).get("Healthcheck")
    cfg.healthcheck = merge(hc if isinstance(hc, dict) else None, cfg.healthcheck)


def configured(cfg: ContainerConfig) -> bool:
    test = cfg.healthcheck.get("Test") or []
    return bool(test) and test[0] in ("CMD", "CMD-SHELL")


def command(test: list[str]) -> list[str]:
    """The argv a Test runs: CMD's own, CMD-SHELL's through /bin/sh -c (docker's default
    shell; rl keeps no SHELL of the image)."""
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", test[1] if len(test) > 1 else ""]
    return list(test[1:])


def _ns(cfg: ContainerConfig, key: str, default: int) -> float:
    value = cfg.healthcheck.get(key)
    return (value if isinstance(value, int) and value > 0 else default) / SECOND


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


def fresh(cfg: ContainerConfig) -> dict[str, Any]:
    """State.Health at each start of a container with a healthcheck."""
    return {"Status": STARTING, "FailingStreak": 0, "Log": []} if configured(cfg) else {}


def stop_signal_of(cfg: ContainerConfig) -> int:
    """The record's stop signal ("SIGTERM", "TERM", "15", "SIGRTMIN+3"), SIGTERM if odd."""
    text = cfg.stop_signal.upper().removeprefix("SIG")
    if text.isdigit():
        return int(text)
    base, plus, offset = text.partition("+")
    if base in ("RTMIN", "RTMAX"):
        n = signal.SIGRTMIN if base == "RTMIN" else signal.SIGRTMAX
        return int(n) + (int(offset) if plus and offset.isdigit() else 0) * (
            1 if base == "RTMIN" else -1)
    try:
        return int(signal.Signals["SIG" + text])
    except KeyError:
        return int(signal.SIGTERM)


def status_text(health: dict[str, Any]) -> str:
    """docker's Health.String() for ps: "health: starting", "healthy", "unhealthy"."""
    st = str(health.get("Status", ""))
    return "health: starting" if st == STARTING else st


# -- in the supervisor -------------------------------------------------------------------


def _kill_tree(e1: int) -> None:
    """A probe past its timeout: the exec'd process (E1's child, which E1 has not reaped,
    so its pid is still its own), then E1."""
    with contextlib.suppress(OSError), open(f"/proc/{e1}/task/{e1}/children") as f:
        for pid in f.read().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


async def probe(ctr: Container, cfg: ContainerConfig) -> dict[str, Any]:
    """Run the check once in the running container: its Log entry."""
    from ..runtime import container as runtime
    from . import execute
    from .options import ExecOptions

    started = time.time()
    timeout = _ns(cfg, "Timeout", DEFAULT_TIMEOUT)
    try:
        ex = execute.start(ctr, ExecOptions(command=command(cfg.healthcheck["Test"])))
    except RlError as e:
        return {"Start": _iso(started), "End": _iso(time.time()), "ExitCode": -1,
                "Output": e.message}
    output = bytearray()
    fds, ex.outputs = list(ex.outputs), {}
    streams = [trio.lowlevel.FdStream(fd) for fd in fds]

    async def read(stream: trio.lowlevel.FdStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            while data := await stream.receive_some(65536):
                output.extend(data[:max(MAX_OUTPUT - len(output), 0)])

    timed_out = False
    try:
        with trio.move_on_after(timeout) as scope:
            await trio.lowlevel.wait_readable(ex.pidfd)
        if scope.cancelled_caught:
            timed_out = True
            _kill_tree(ex.e1)
            with trio.move_on_after(2):
                await trio.lowlevel.wait_readable(ex.pidfd)
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(ex.pidfd, signal.SIGKILL)
        _, status = os.waitpid(ex.e1, 0)
        # Whatever it left behind holding the pipes gets a moment, not the check's slot.
        async with trio.open_nursery() as nursery:
            nursery.cancel_scope.deadline = trio.current_time() + 1
            for s in streams:
                nursery.start_soon(read, s)
    finally:
        for s in streams:
            await s.aclose()
        ex.close()
    if timed_out:
        return {"Start": _iso(started), "End": _iso(time.time()), "ExitCode": -1,
                "Output": f"Health check exceeded timeout ({_go_seconds(timeout)})"}
    return {"Start": _iso(started), "End": _iso(time.time()),
            "ExitCode": runtime.exit_code(status), "Output": output.decode(errors="replace")}


def _go_seconds(seconds: float) -> str:
    """A duration as Go's time.Duration prints it, for the whole seconds and ms docker shows."""
    if seconds >= 1 and float(seconds).is_integer():
        return f"{int(seconds)}s"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    return f"{seconds:g}s"


def record(st: State, cfg: ContainerConfig, entry: dict[str, Any]) -> bool:
    """docker's handleProbeResult on st.health; whether it just turned unhealthy."""
    h = st.health or fresh(cfg)
    before = h.get("Status")
    log = [*list(h.get("Log") or []), entry][-MAX_LOG:]
    h["Log"] = log
    if entry["ExitCode"] == 0:
        h["FailingStreak"] = 0
        h["Status"] = HEALTHY
    else:
        counts = True
        if h.get("Status") == STARTING:
            start_period = _ns(cfg, "StartPeriod", 0)
            counts = time.time() - st.started_at >= start_period
        if counts:
            h["FailingStreak"] = int(h.get("FailingStreak", 0)) + 1
            retries = cfg.healthcheck.get("Retries") or DEFAULT_RETRIES
            if h["FailingStreak"] >= retries:
                h["Status"] = UNHEALTHY
    st.health = h
    return h["Status"] == UNHEALTHY and before != UNHEALTHY


def _interval(cfg: ContainerConfig, st: State) -> float:
    """docker's getInterval: the start interval while starting within the start period."""
    interval = _ns(cfg, "Interval", DEFAULT_INTERVAL)
    if time.time() - st.started_at >= _ns(cfg, "StartPeriod", 0):
        return interval
    if (st.health or {}).get("Status") == STARTING:
        return _ns(cfg, "StartInterval", DEFAULT_START_INTERVAL)
    return interval


async def check_once(sup: Supervisor) -> dict[str, Any]:
    """One probe, recorded, its action taken: the entry ({}: none, the container is
    paused), for the monitor and `rl healthcheck run`; one probe at a time."""
    async with sup.checks.lock:
        if frozen(sup.state.cgroup):
            # Paused: an exec would freeze in the cgroup, and the supervisor with it.
            return {}
        entry = await probe(sup.ctr, sup.cfg)
        if sup.exit_code is not None:
            return entry  # the container ended meanwhile: its record is finish()'s
        before = (sup.state.health or {}).get("Status")
        turned = record(sup.state, sup.cfg, entry)
        after = (sup.state.health or {}).get("Status")
        if after != before and after is not None:
            from . import events

            events.health_status(sup.cfg, str(after))
        with contextlib.suppress(OSError):
            sup.ctr.write_state(sup.state)
        if turned:
            act(sup)
        return entry


def frozen(cgroup: str) -> bool:
    """Whether the container's cgroup is frozen (rl pause): no probe then, as docker's."""
    if not cgroup:
        return False
    try:
        with open(os.path.join(cgroup, "cgroup.freeze")) as f:
            return f.read().strip() == "1"
    except OSError:
        return False


class Checks:
    """A supervisor's probing: one probe at a time; on-failure=stop's deadline."""

    def __init__(self) -> None:
        self.lock = trio.Lock()
        self.stop_deadline: float | None = None


def act(sup: Supervisor) -> None:
    """--health-on-failure, once the container turned unhealthy."""
    action = sup.cfg.health_on_failure
    pid = sup.launched.pid
    if action == "none" or sup.exit_code is not None:
        return
    if action == "restart":
        sup.restarts.forced = True
    if action == "stop":
        sup.restarts.ended = True
        sup.state.manually_stopped = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, stop_signal_of(sup.cfg))
        sup.checks.stop_deadline = time.monotonic() + sup.cfg.stop_timeout
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


async def monitor(sup: Supervisor) -> None:
    """The supervisor's probe loop for one run of PID 1 (returns when it exits)."""
    cfg = sup.cfg
    if not configured(cfg):
        return
    while True:
        with trio.move_on_after(_interval(cfg, sup.state)):
            await sup.exited.wait()
        if sup.exited.is_set():
            return
        await check_once(sup)
        deadline = sup.checks.stop_deadline
        if deadline is not None:  # on-failure=stop: SIGKILL once its stop timeout is over
            with trio.move_on_after(max(deadline - time.monotonic(), 0)):
                await sup.exited.wait()
            if not sup.exited.is_set():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(sup.launched.pid, signal.SIGKILL)
            sup.checks.stop_deadline = None
            return


async def serve_run(sup: Supervisor) -> dict[str, Any]:
    """The supervisor's answer to `rl healthcheck run`."""
    if not configured(sup.cfg):
        return {"error": f"container {sup.ctr.id[:12]} has no defined healthcheck"}
    if sup.exit_code is not None or sup.state.restarting:
        return {"error": f"container {sup.ctr.id[:12]} is not running"}
    if not await check_once(sup):
        return {"error": f"container {sup.ctr.id[:12]} is paused"}
    return {"status": sup.state.health.get("Status", "")}


def run(ctr: Container) -> str:
    """`rl healthcheck run CTR` (podman's): the status after one probe, which the
    container's supervisor runs and records. InvalidArgument if it has none."""
    from . import client, store

    if not configured(ctr.config):
        raise InvalidArgument(f"container {ctr.id[:12]} has no defined healthcheck")
    store.running_or_error(ctr)
    timeout = _ns(ctr.config, "Timeout", DEFAULT_TIMEOUT) + 30
    answer = client.control(ctr, {"op": "healthcheck"}, timeout=timeout)
    if "error" in answer:
        raise NotRunning(str(answer["error"]))
    return str(answer.get("status", ""))
