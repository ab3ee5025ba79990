"""Restart policies without a daemon: docker's --restart, kept by the container's supervisor.

The policy is parsed at create (docker's messages) and kept in the record
(`rl update --restart` rewrites it). When PID 1 exits, the supervisor asks
Restarts.decide() whether to start it again, with docker's restart manager's
rules: no | always | unless-stopped (not once the user stopped it) |
on-failure[:N] (a non-zero exit, at most N times); a delay of 100 ms doubling
per restart up to a minute, back to 100 ms once a run lasted 10 s. A restart
is a fresh container process set up as the first (container.launch on the
same record): the root, the runtime directory, the log, the cgroup and the
published host ports stay with the supervisor; the network helpers, which
serve one network namespace, are started again for the new one.

`rl stop` and `rl kill` end the restarts (docker's ExitOnNext): any signal
when the container has the default stop signal, else SIGKILL or its stop
signal. Nothing restarts once the supervisor itself is gone (kill -9), and
nothing starts at boot: `rl start --all-restartable` (the user's login or a
systemd --user unit) starts what dockerd would have started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument

if TYPE_CHECKING:
    import trio

    from ..runtime import container
    from .options import CreateOptions
    from .store import ContainerConfig, State

POLICIES = ("no", "always", "on-failure", "unless-stopped")
FIRST_DELAY = 0.1  # docker's restartmanager: defaultTimeout
MAX_DELAY = 60.0  # maxRestartTimeout
RESET_AFTER = 10.0  # a run this long resets the delay


@dataclass(frozen=True)
class Policy:
    name: str = "no"
    maximum_retry_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"Name": self.name, "MaximumRetryCount": self.maximum_retry_count}

    @classmethod
    def of(cls, cfg: ContainerConfig) -> Policy:
        raw = cfg.restart_policy or {}
        name = raw.get("Name") or "no"
        count = raw.get("MaximumRetryCount") or 0
        if name not in POLICIES or not isinstance(count, int):
            return cls()  # a record of a newer rl: never restarted by this one
        return cls(name, count)

    @property
    def restartable(self) -> bool:
        """What dockerd starts at its own start: always and unless-stopped."""
        return self.name in ("always", "unless-stopped")


def parse(text: str | None) -> Policy:
    """--restart's value, checked as docker's CLI and daemon check it."""
    if text is None or text == "":
        return Policy()
    name, colon, count_text = text.partition(":")
    if colon and not name:
        raise InvalidArgument("invalid restart policy format: no policy provided before colon")
    count = 0
    if count_text:
        try:
            count = int(count_text)
        except ValueError:
            raise InvalidArgument("invalid restart policy format: maximum retry count must "
                                  "be an integer") from None
    if name not in POLICIES:
        raise InvalidArgument(f"invalid restart policy: unknown policy '{name}'; use one of "
                              "'no', 'always', 'on-failure', or 'unless-stopped'")
    if name != "on-failure" and count != 0:
        msg = "invalid restart policy: maximum retry count can only be used with 'on-failure'"
        raise InvalidArgument(msg + (" and cannot be negative" if count < 0 else ""))
    if count < 0:
        raise InvalidArgument("invalid restart policy: maximum retry count cannot be negative")
    return Policy(name, count)


def create_fields(opts: CreateOptions) -> dict[str, Any]:
    """The record's restart policy and healthcheck for `run`/`create` (specgen's): docker
    refuses a policy with --rm."""
    from . import health

    policy = parse(opts.restart)
    if opts.rm and policy.name != "no":
        raise InvalidArgument("conflicting options: cannot specify both --restart and --rm")
    flags = health.HealthFlags(
        cmd=opts.health_cmd, interval=opts.health_interval, timeout=opts.health_timeout,
        retries=opts.health_retries, start_period=opts.health_start_period,
        start_interval=opts.health_start_interval, none=opts.no_healthcheck,
        on_failure=opts.health_on_failure)
    return {"restart_policy": policy.to_dict(), **health.create_fields(flags)}


def ends_restarts(signum: int, stop_signal: int) -> bool:
    """Whether rl kill/stop with signum is the user ending the container (docker's
    ExitOnNext): every signal for the default stop signal, else SIGKILL or its own."""
    return signum in (signal.SIGKILL, stop_signal) or stop_signal == signal.SIGTERM


class Restarts:
    """One supervisor's restart manager (docker's restartmanager, per container)."""

    def __init__(self, policy: Policy, count: int = 0) -> None:
        self.policy = policy
        self.count = count  # restarts since the last manual start (RestartCount)
        self.delay = 0.0
        self.ended = False  # rl stop / rl kill: this exit is the last
        self.forced = False  # --health-on-failure=restart: restart once, whatever the policy
        self.waiting: trio.Event | None = None  # set: the backoff ends (rl stop/kill)

    def decide(self, exit_code: int, ran_for: float, manually_stopped: bool) -> float | None:
        """The delay before the next start, or None: the container stays exited."""
        if self.ended:
            return None
        if self.forced:
            self.forced = False
            self.count += 1
            return 0.0
        if self.policy.name == "no":
            return None
        if ran_for >= RESET_AFTER:
            self.delay = 0.0
        self.delay = FIRST_DELAY if self.delay == 0 else min(self.delay * 2, MAX_DELAY)
        name, limit = self.policy.name, self.policy.maximum_retry_count
        if name == "always":
            again = True
        elif name == "unless-stopped":
            again = not manually_stopped
        else:  # on-failure
            again = exit_code != 0 and (limit == 0 or self.count < limit)
        if not again:
            return None
        self.count += 1
        return self.delay


def release_netns(net: Any) -> None:
    """Stop a NetStack's helpers of the old network namespace (slirp4netns or pasta,
    the connector), keeping its host listeners: the published ports stay bound
    across a restart, and net.attach(pid) serves the new namespace with them."""
    chan = net.connector_chan
    if chan is not None:
        chan.close()
        net.connector_chan = None
    if net.connector_pid:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(net.connector_pid, signal.SIGKILL)
            os.waitpid(net.connector_pid, 0)
        net.connector_pid = 0
    for attr in ("slirp", "pasta"):
        helper = getattr(net, attr)
        if helper is not None:
            helper.stop()
            setattr(net, attr, None)


def mark_restarting(st: State, exit_code: int, count: int) -> None:
    """The record between two runs: docker's State.Restarting, still "running"."""
    st.restarting = True
    st.exit_code = exit_code
    st.finished_at = time.time()
    st.pid = 0
    st.restart_count = count


def decorate_inspect(cfg: ContainerConfig, st: State, out: dict[str, Any]) -> dict[str, Any]:
    """containers.inspect's answer with docker's restart and health fields."""
    from . import health

    state = out["State"]
    if st.status == "running" and st.restarting:
        state["Status"] = "restarting"
    state["Restarting"] = st.status == "running" and st.restarting
    if health.configured(cfg):
        h = st.health or {}
        state["Health"] = {"Status": h.get("Status", health.STARTING if state["Running"]
                                           else health.UNHEALTHY),
                           "FailingStreak": int(h.get("FailingStreak", 0)),
                           "Log": list(h.get("Log") or [])}
    out["RestartCount"] = st.restart_count
    out["HostConfig"]["RestartPolicy"] = Policy.of(cfg).to_dict()
    return out


def config_fields(cfg: ContainerConfig) -> dict[str, Any]:
    """inspect's Config.Healthcheck, as docker shows it (only when there is one)."""
    return {"Healthcheck": dict(cfg.healthcheck)} if cfg.healthcheck else {}


def ps_state(st: State) -> str:
    """ps's State column: docker's "restarting" between two runs."""
    return "restarting" if st.status == "running" and st.restarting else st.status


def ps_health(st: State) -> str:
    """ps's "(healthy)" part of Status while it runs."""
    from . import health

    if st.status != "running" or st.restarting or not st.health:
        return ""
    return health.status_text(st.health)


def update(ctr: Any, text: str) -> Policy:
    """`rl update --restart POLICY`: the record's policy; a running supervisor reads it
    at the next exit of PID 1 (docker's daemon applies it at once, as here)."""
    from . import store

    policy = parse(text)
    with store.registry_lock():
        cfg = store.Container(ctr.id).config
        if cfg.auto_remove and policy.name != "no":
            raise InvalidArgument("Restart policy cannot be updated because AutoRemove is "
                                  "enabled for the container")
        cfg.restart_policy = policy.to_dict()
        store.write_json_atomic(ctr.dir / "config.json", cfg.to_dict())
    return policy


def restartable(ctr: Any) -> bool:
    """Whether `rl start --all-restartable` starts ctr: an exited (never a created,
    never started) always, or unless-stopped that the user did not stop."""
    from . import store

    try:
        st = ctr.state()
        if st.status != "exited":
            return False
        policy = Policy.of(ctr.config)
    except store.RecordError:
        return False
    if policy.name == "always":
        return True
    return policy.name == "unless-stopped" and not st.manually_stopped


# -- in the supervisor -------------------------------------------------------------------


def on_start(st: State) -> None:
    """A start by the user (run, start, restart): docker resets the count and the stop."""
    st.restart_count = 0
    st.restarting = False
    st.manually_stopped = False


def on_kill(sup: Any, signum: int) -> None:
    """rl kill / rl stop reached the supervisor (its "kill" op); sup: a Supervisor."""
    from . import health

    sup.state.manually_stopped = True
    if ends_restarts(signum, health.stop_signal_of(sup.cfg)):
        sup.restarts.ended = True
        if sup.restarts.waiting is not None:
            sup.restarts.waiting.set()  # in the backoff: this is the end
    with contextlib.suppress(OSError):
        sup.ctr.write_state(sup.state)


async def again(sup: Any, nursery: trio.Nursery, net_scope: trio.CancelScope,
                net_done: trio.Event, recreate: Callable[[Any], container.Created]
                ) -> tuple[trio.CancelScope, trio.Event, trio.CancelScope] | None:
    """After PID 1 exited: start the container again if its policy says so, after the
    backoff; None when it stays exited (the supervisor then finishes as before).
    sup is the Supervisor, recreate(sup) makes the fresh container up to its gate
    (container.create). Returns the network's and the storage watcher's new
    cancel scopes."""
    import trio

    from ..runtime import container
    from . import store, wire

    assert sup.exit_code is not None
    st = sup.state
    with contextlib.suppress(store.RecordError):  # `rl update --restart` meanwhile
        sup.restarts.policy = Policy.of(store.Container(sup.ctr.id).config)
    delay = sup.restarts.decide(sup.exit_code, time.time() - st.started_at,
                                st.manually_stopped)
    if delay is None or sup.cfg.auto_remove:
        return None
    mark_restarting(st, sup.exit_code, sup.restarts.count)
    with contextlib.suppress(OSError):
        sup.ctr.write_state(st)
    from . import events

    events.died(sup.cfg, sup.exit_code, False)  # docker's die, then start, per restart
    # Attached clients hear this run's end, as docker's attach does; waiters (rl stop,
    # rl wait) wait on for the container's last exit.
    for client in list(sup.clients):
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await client.send(wire.control({"event": "exit", "exit_code": sup.exit_code}))
    sup.clients.clear()
    deadline = trio.current_time() + delay
    net_scope.cancel()
    await net_done.wait()
    if sup.net is not None:
        release_netns(sup.net)
    # The new container is made during the delay, up to its gate (its command has not
    # started: nothing of it is seen but its processes), and started once the delay
    # is over: the restart then costs the delay and an exec, not a whole launch.
    try:
        # In a worker thread: its fork (C1) is then no copy of a running trio loop, which
        # the fuse driver's server (a trio program of its own, forked from C1) needs.
        created = await trio.to_thread.run_sync(recreate, sup)
    except Exception as exc:  # recorded, never lost: it stays exited with the reason
        _failed(st, exc)
        return None
    sup.restarts.waiting = trio.Event()
    with trio.move_on_at(deadline):
        await sup.restarts.waiting.wait()
    sup.restarts.waiting = None
    if sup.restarts.ended:
        created.abandon()
        st.restarting = False
        return None
    try:
        container.start(created.state_dir)
        launched = container.wait_started(created)  # abandons it if it fails
    except Exception as exc:
        _failed(st, exc)
        return None
    sup.relaunched(launched)
    st.status = "running"
    st.restarting = False
    st.pid = launched.pid
    st.started_at = time.time()
    st.error = ""
    from . import health

    st.health = health.fresh(sup.cfg)
    with contextlib.suppress(OSError):
        sup.ctr.write_state(st)
    scope, done = trio.CancelScope(), trio.Event()
    nursery.start_soon(sup._serve_net, scope, done)
    storage_scope = trio.CancelScope()
    if launched.storage_pid is not None:
        nursery.start_soon(_watch_storage, sup, storage_scope, launched.storage_pid)
    return scope, done, storage_scope


def _failed(st: State, exc: Exception) -> None:
    st.restarting = False
    st.error = f"restarting the container: {getattr(exc, 'message', exc)}"


async def _watch_storage(sup: Any, scope: trio.CancelScope, pid: int) -> None:
    with scope:
        await sup.watch_storage(pid)

