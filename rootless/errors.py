"""rl's error type and its kinds, each carrying docker's exit status and HTTP status.

The kind says what went wrong, so a face maps it without reading the
message: the CLI exits with `exit_code`, a Docker Engine API answers
`http_status` (as dockerd's errdefs do). A raise site may still give its
own exit code (docker's `run` says 125 where `rename` says 1 for the same
name in use); the class's code is only the default.

125: rl's own error (bad flag, missing rootfs, name in use).
126: the command cannot be executed (not executable, unknown user).
127: the command was not found.
1:   a failing management command (no such container, not running).
"""

from __future__ import annotations

EXIT_RL = 125
EXIT_CANNOT_EXEC = 126
EXIT_NOT_FOUND = 127

# The statuses dockerd's API answers errors with (errdefs/http_helpers.go).
HTTP_STATUSES = frozenset({400, 401, 403, 404, 409, 500, 501, 503})


class RlError(Exception):
    """An error with a one-line message meant for the user.

    The base class is the system error: rl itself failed (500, exit 125).
    """

    exit_code: int = EXIT_RL
    http_status: int = 500  # an instance may narrow it (a registry's 401, a vanished record)

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self.args[0])


class NotFound(RlError):
    """No such container, image or object."""

    exit_code = 1
    http_status = 404


class Conflict(RlError):
    """The request contradicts the state: name in use, image in use, container running."""

    exit_code = 1
    http_status = 409


class NotRunning(Conflict):
    """The container is not running (docker answers 409 for it)."""


class InvalidArgument(RlError):
    """A bad flag, value or reference: the caller's mistake."""

    exit_code = EXIT_RL
    http_status = 400


class Unauthorized(RlError):
    """A registry wants credentials rl does not have or that it refused."""

    exit_code = EXIT_RL
    http_status = 401


class Unavailable(RlError):
    """Something rl needs is not there: a registry unreachable, a host feature missing."""

    exit_code = EXIT_RL
    http_status = 503


class CannotExecute(RlError):
    """The container's command cannot be executed (permission denied, unknown user).

    The CLI exits 126; HTTP says 400, as dockerd does (its start answers an
    OCI runtime's "permission denied" or "executable file not found" as an
    invalid parameter: the command is part of the container's config). Not
    an InvalidArgument all the same: its exit code is the command's, not rl's.
    """

    exit_code = EXIT_CANNOT_EXEC
    http_status = 400


class CommandNotFound(CannotExecute):
    """The container's command was not found (exit 127; HTTP 400, as CannotExecute)."""

    exit_code = EXIT_NOT_FOUND


# The kinds, by name: what crosses a process boundary (the supervisor's
# events, the user-namespace helper) besides message and code.
KINDS: dict[str, type[RlError]] = {k.__name__: k for k in (
    RlError, NotFound, Conflict, NotRunning, InvalidArgument, Unauthorized, Unavailable,
    CannotExecute, CommandNotFound)}


def kind_of(exc: RlError) -> str:
    """The name of the most specific kind an error is of (a subclass's own name is not)."""
    for cls in type(exc).__mro__:
        if cls.__name__ in KINDS and KINDS[cls.__name__] is cls:
            return cls.__name__
    return "RlError"


def rebuild(message: str, exit_code: int, kind: str = "") -> RlError:
    """The error another process reported: of its kind, else of the kind its code means."""
    if kind in KINDS:
        return KINDS[kind](message, exit_code)
    if exit_code == EXIT_CANNOT_EXEC:
        return CannotExecute(message, exit_code)
    if exit_code == EXIT_NOT_FOUND:
        return CommandNotFound(message, exit_code)
    return RlError(message, exit_code)


class NeedsFullCli(Exception):
    """`rl run`'s quick path (entry.py) hands over to click: help, a usage error, a pull."""


class NoSuchImage(NotFound):
    def __init__(self, ref: str, exit_code: int = 1) -> None:
        super().__init__(f"no such image: {ref}", exit_code)
        self.ref = ref


class NoSuchContainer(NotFound):
    def __init__(self, ref: str) -> None:
        super().__init__(f"no such container: {ref}", 1)
