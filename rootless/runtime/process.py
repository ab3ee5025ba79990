"""Turn the current (forked, single-threaded) process into the container's process.

Shared by the container's first process and by `rl exec`: resolve the user,
apply rlimits, groups, ids, capabilities and no_new_privs, clean signal state
and file descriptors, then exec. Runs after fork in a process that must do
nothing but syscalls before exec (see docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
from dataclasses import dataclass

from .. import syscalls as sc
from ..errors import (
    EXIT_CANNOT_EXEC,
    EXIT_NOT_FOUND,
    EXIT_RL,
    CannotExecute,
    CommandNotFound,
    InvalidArgument,
    RlError,
)

# Everything this module needs is imported at the top: it runs after
# pivot_root or setns(mnt), where rl's own files are no longer visible, so a
# lazy import there fails.
from . import capabilities, seccomp, users
from .spec import Process, Seccomp


@dataclass
class IdMaps:
    """/proc/self's uid_map, gid_map and setgroups (None: unreadable).

    `rl exec` reads them in E1 before it joins the container's mount
    namespace: a container with CAP_SYS_ADMIN may have mounted anything over
    its own /proc (a FIFO there hung the exec), and the three are the same
    for every process of the user namespace.
    """

    uid_map: str | None
    gid_map: str | None
    setgroups: str | None

    @classmethod
    def read(cls) -> IdMaps:
        def text(name: str) -> str | None:
            try:
                with open(f"/proc/self/{name}") as f:
                    return f.read()
            except OSError:
                return None
        return cls(text("uid_map"), text("gid_map"), text("setgroups"))


def resolve_user(proc: Process, user_spec: str, ids: IdMaps | None = None) -> str:
    """Fill proc.user from `-u`; returns the user's home directory."""
    resolved = users.resolve(user_spec or "0")
    proc.user.uid = resolved.uid
    proc.user.gid = resolved.gid
    # Groups listed in /etc/group only apply where setgroups is allowed: in
    # single-id mode (setgroups denied) they are dropped, as they could never
    # be mapped; groups asked for with --group-add still fail loudly.
    if ((ids or IdMaps.read()).setgroups or "").strip() != "deny":
        proc.user.additional_gids = sorted(set(proc.user.additional_gids) | set(
            resolved.additional_gids))
    return resolved.home


def env_with_defaults(env: list[str], home: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in env:
        key, sep, value = item.partition("=")
        if sep:
            out[key] = value
    out.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    out.setdefault("HOME", home or "/")
    return out


def reset_signals() -> None:
    """Python ignores SIGPIPE and SIGXFSZ; the container's command must not inherit that."""
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _apply_rlimits(proc: Process) -> None:
    for rl in proc.rlimits:
        name = rl.type if rl.type.startswith("RLIMIT_") else "RLIMIT_" + rl.type.upper()
        res = getattr(resource, name, None)
        if res is None:
            raise RlError(f"unknown rlimit {rl.type}")
        try:
            resource.setrlimit(res, (rl.soft, rl.hard))
        except (ValueError, OSError) as e:
            raise RlError(f"setting {name} to {rl.soft}:{rl.hard}: {e}") from e


def _is_mapped(ident: int, map_text: str | None) -> bool:
    if map_text is None:
        return True
    rows = [tuple(map(int, line.split())) for line in map_text.splitlines() if line.strip()]
    return any(first <= ident < first + count for first, _, count in rows)


# crun's annotation (podman's --group-add keep-groups): no setgroups, the process keeps
# the caller's supplementary groups (unmapped inside, shown as the overflow gid, but the
# kernel's checks use them: a video or render group's devices stay usable)
KEEP_GROUPS = "run.oci.keep_original_groups"


def keep_groups(annotations: dict[str, str]) -> bool:
    return annotations.get(KEEP_GROUPS) == "1"


def switch_identity(proc: Process, ids: IdMaps | None = None, keep: bool = False) -> None:
    u = proc.user
    caps = proc.capabilities
    ids = ids or IdMaps.read()
    for ident, kind, text in ((u.uid, "uid", ids.uid_map), (u.gid, "gid", ids.gid_map)):
        if not _is_mapped(ident, text):
            raise RlError(
                f"{kind} {ident} is not mapped in the container's user namespace "
                "(see `rl info`: without a subordinate id range only root exists)"
            )
    capabilities.drop_bounding(caps.bounding)
    try:
        if not keep:
            os.setgroups(u.additional_gids)
    except PermissionError:
        # setgroups is denied in single-id mode; only an empty list is possible there.
        if u.additional_gids:
            raise RlError("supplementary groups need a subordinate gid range "
                          "(rl runs in single-id mode)") from None
    os.setresgid(u.gid, u.gid, u.gid)
    os.setresuid(u.uid, u.uid, u.uid)
    if u.uid == 0:
        capabilities.set_process_caps(caps.effective, caps.permitted, caps.inheritable)
    if proc.no_new_privileges:
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)


def _make_cwd(cwd: str) -> None:
    """docker makes a missing working directory as the container's root (0755),
    before switching user: `-w /srv/app -u nobody` works. What cannot be made
    is left to prepare_cwd, which reports it as the user sees it."""
    with contextlib.suppress(OSError):
        os.makedirs(cwd, 0o755, exist_ok=True)


def prepare_cwd(cwd: str) -> None:
    try:
        os.chdir(cwd)
    except FileNotFoundError:
        # docker creates a missing working directory.
        os.makedirs(cwd, exist_ok=True)
        os.chdir(cwd)
    except NotADirectoryError:
        # The caller's config, not rl, is wrong (as the relative -w build_config refuses).
        raise InvalidArgument(f"working directory {cwd} is not a directory") from None


def prepare(proc: Process, seccomp_profile: Seccomp | None = None,
            ids: IdMaps | None = None, keep: bool = False) -> None:
    """rlimits, seccomp, user, groups, capabilities, umask, working directory.

    The seccomp filter goes in while the process is still root of its user
    namespace with every capability (the kernel wants CAP_SYS_ADMIN or
    no_new_privs for it); nothing that follows is a syscall it refuses.
    """
    _apply_rlimits(proc)
    try:  # before the filter, which may refuse keyctl
        sc.join_new_session_keyring()
    except OSError as e:
        raise RlError(str(e.strerror)) from None
    if seccomp_profile is not None:
        seccomp.install(seccomp_profile)
    _make_cwd(proc.cwd)
    switch_identity(proc, ids, keep)
    if proc.user.umask is not None:
        os.umask(proc.user.umask)
    prepare_cwd(proc.cwd)


def not_found(argv0: str) -> CommandNotFound:
    """runc's words for a command that is not there (docker: 127)."""
    return CommandNotFound(f'exec: "{argv0}": executable file not found in $PATH',
                           EXIT_NOT_FOUND)


def permission_denied(argv0: str) -> CannotExecute:
    """runc's words for a command that cannot be executed (docker: 126)."""
    return CannotExecute(f'exec: "{argv0}": permission denied', EXIT_CANNOT_EXEC)


def execute(proc: Process, env: dict[str, str], preserve_fds: int = 0) -> None:
    """Reset signals, close every fd above 2 (and the preserved 3..2+preserve_fds) on
    exec, exec; raises RlError on failure."""
    reset_signals()
    for fd in range(3, 3 + preserve_fds):  # an OCI caller's --preserve-fds
        os.set_inheritable(fd, True)
    sc.close_range_cloexec(3 + preserve_fds)
    argv0 = proc.args[0]
    if not argv0:
        raise not_found(argv0)  # what runc says of an empty command, not Python's ValueError
    try:
        os.execvpe(argv0, proc.args, env)
    except ValueError as e:
        # A NUL byte in an argument or variable, or an empty variable name:
        # nothing execve(2) can be given. (Image configs are refused at load.)
        raise RlError(f'exec: "{argv0}": {e}') from None
    except FileNotFoundError:
        raise not_found(argv0) from None
    except PermissionError:
        raise permission_denied(argv0) from None
    except OSError as e:
        code = EXIT_CANNOT_EXEC if e.errno in (errno.ENOEXEC, errno.EISDIR) else EXIT_RL
        raise RlError(f'exec: "{argv0}": {os.strerror(e.errno or 0)}', code) from None
