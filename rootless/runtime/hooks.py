"""OCI hooks (config.md "POSIX-platform Hooks"): host programs run at points of
the lifecycle with the container's state JSON on their stdin.

Where each kind runs (the process that forks the hook decides its namespaces):

    prestart, createRuntime  the creator, in the runtime's namespaces, once PID 1
                             has made its mounts and before its pivot_root
    createContainer          PID 1, in the container's namespaces, right before
                             pivot_root (its path resolves in the host's tree)
    startContainer           PID 1 after the gate, right before the command's
                             exec (its path resolves in the container's root)
    poststart                `start`, once the gate is released
    poststop                 `delete` (and a foreground `run`), once the
                             container's state is gone

A hook's argv is `args` (or just its path), its environment exactly `env`
(nothing of the runtime's own), and it is killed after `timeout` seconds.
Its stdout and stderr go to a memfd, not a pipe: a hook that leaves a
daemon holding them must not hang the runtime; what it wrote ends the error.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable

from ..errors import RlError
from .spec import Hook, Hooks

# The kinds in the spec's order; prestart first, as runc runs it.
CREATE_RUNTIME = ("prestart", "createRuntime")
_ATTR = {"prestart": "prestart", "createRuntime": "create_runtime",
         "createContainer": "create_container", "startContainer": "start_container",
         "poststart": "poststart", "poststop": "poststop"}

# (status, host pid) -> the state JSON a hook reads.
StateFn = Callable[[str, int], bytes]


class HookFailed(RlError):
    """A hook exited non-zero, was killed, timed out or could not be executed."""


def of(hooks: Hooks | None, *kinds: str) -> list[tuple[str, Hook]]:
    """The hooks of these kinds, in order, each with its kind's name."""
    if hooks is None:
        return []
    return [(k, h) for k in kinds for h in getattr(hooks, _ATTR[k])]


def _output(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode(errors="replace").strip()
    return " ".join(text.split())[:400]


def run_one(kind: str, index: int, hook: Hook, state: bytes) -> None:
    """Run one hook to its end; HookFailed saying which and why."""
    where = f"{kind} hook #{index} ({hook.path})"
    out = os.memfd_create("rl-hook-output", os.MFD_CLOEXEC)
    r, w = os.pipe()
    try:
        # The state is far below a pipe's buffer: written whole before the
        # hook starts, it never blocks on a hook that does not read it.
        os.write(w, state)
        os.close(w)
        w = -1
        try:
            proc = subprocess.Popen(
                hook.args or [hook.path], executable=hook.path, stdin=r, stdout=out,
                stderr=out, env=dict(e.split("=", 1) for e in hook.env if "=" in e),
                close_fds=True, start_new_session=True, cwd="/")
        except OSError as e:
            raise HookFailed(f"{where}: cannot be executed: {e.strerror}") from None
        os.close(r)
        r = -1
        try:
            code = proc.wait(timeout=hook.timeout)
        except subprocess.TimeoutExpired:
            # Its session: a shell hook's children die with it.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            raise HookFailed(f"{where}: timed out after {hook.timeout} s") from None
        if code != 0:
            why = (f"killed by signal {-code}" if code < 0 else f"exit status {code}")
            said = _output(out)
            raise HookFailed(f"{where}: {why}" + (f": {said}" if said else ""))
    finally:
        for fd in (r, w, out):
            if fd >= 0:
                os.close(fd)


def run(hooks: Hooks | None, kinds: tuple[str, ...], state: StateFn, status: str,
        pid: int) -> None:
    """Run these kinds' hooks in order; the first failure raises (create's kinds)."""
    index = {k: 0 for k in kinds}
    for kind, hook in of(hooks, *kinds):
        run_one(kind, index[kind], hook, state(status, pid))
        index[kind] += 1


def run_warning(hooks: Hooks | None, kind: str, state: bytes) -> list[str]:
    """Run every hook of kind (poststart, poststop); the failures as warnings."""
    warnings = []
    for i, (_, hook) in enumerate(of(hooks, kind)):
        try:
            run_one(kind, i, hook, state)
        except HookFailed as e:
            warnings.append(e.message)
    return warnings


# The hooks of a later call (start's poststart, delete's poststop), kept in the
# container's state directory at create: runc keeps its config in its state
# for the same reason (the bundle may have changed or gone since).
SAVED = "hooks.json"


def save(state_dir: str, hooks: Hooks | None) -> None:
    """Keep hooks' poststart and poststop in state_dir, if it has any."""
    if hooks is None or not (hooks.poststart or hooks.poststop):
        return
    import json

    from . import spec

    data = spec.to_json(Hooks(poststart=hooks.poststart, poststop=hooks.poststop))
    tmp = os.path.join(state_dir, f".{SAVED}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, os.path.join(state_dir, SAVED))


def saved(state_dir: str) -> Hooks | None:
    """The hooks save() kept; None if none (or the file is damaged: a damaged
    record never blocks delete)."""
    import json

    from . import spec

    try:
        with open(os.path.join(state_dir, SAVED)) as f:
            data = json.load(f)
        spec.check(Hooks, data, "hooks")
        return spec.from_json(Hooks, data)
    except (OSError, ValueError, RecursionError):
        return None
