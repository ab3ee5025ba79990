"""Typed errors (issue 11): the library raises kinds a face maps without reading messages.

These call rl's library in-process (rootless.engine.containers, store, images), not the CLI:
a Docker Engine API or an OCI runtime face relies on the kind, its exit code,
its HTTP status, and the message, all four asserted here.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

import netstack
import rootless
import support
from rootless import errors
from rootless.engine import containers as api
from rootless.engine import images as engine_images
from rootless.engine import store
from rootless.errors import (
    CannotExecute,
    CommandNotFound,
    Conflict,
    InvalidArgument,
    NotFound,
    NotRunning,
    RlError,
    Unauthorized,
    Unavailable,
)
from rootless.image import images
from rootless.runtime import report
from support import RlRunner

# The documented mappings (docs/decisions.md, "Layers (issue 11)", entry 1).
DOCUMENTED = {
    RlError: (125, 500),
    NotFound: (1, 404),
    Conflict: (1, 409),
    NotRunning: (1, 409),
    InvalidArgument: (125, 400),
    Unauthorized: (125, 401),
    Unavailable: (125, 503),
    CannotExecute: (126, 400),
    CommandNotFound: (127, 400),
}


def _all_error_classes() -> set[type[RlError]]:
    found: set[type[RlError]] = set()
    for pkg in (rootless, netstack):
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            if info.name.endswith("__main__"):
                continue
            mod = importlib.import_module(info.name)
            for _, obj in inspect.getmembers(mod, inspect.isclass):
                if issubclass(obj, RlError):
                    found.add(obj)
    return found


def check(exc: pytest.ExceptionInfo[RlError], kind: type[RlError], code: int, status: int,
          message: str) -> None:
    e = exc.value
    assert isinstance(e, kind), f"{type(e).__name__} is not a {kind.__name__}: {e.message}"
    assert (e.exit_code, e.http_status, e.message) == (code, status, message)


# -- the kinds themselves ------------------------------------------------------


def test_each_kind_has_its_documented_codes() -> None:
    assert set(errors.KINDS.values()) == set(DOCUMENTED)
    for kind, (code, status) in DOCUMENTED.items():
        assert (kind.exit_code, kind.http_status) == (code, status), kind.__name__
        e = kind("m")
        assert (e.exit_code, e.http_status, e.message) == (code, status, "m")


def test_every_error_class_has_an_allowed_http_status() -> None:
    classes = _all_error_classes()
    assert {store.RecordError, images.NoSuchImage, errors.NoSuchContainer} <= classes
    for cls in classes:
        assert cls.http_status in errors.HTTP_STATUSES, cls.__name__
        assert any(issubclass(cls, k) for k in DOCUMENTED), cls.__name__


def test_an_explicit_exit_code_wins_over_the_kinds() -> None:
    assert RlError("m").exit_code == 125
    assert RlError("m", 1).exit_code == 1
    assert RlError("m", exit_code=1).exit_code == 1
    assert Conflict("name in use", 125).exit_code == 125
    assert InvalidArgument("bad", 1).exit_code == 1
    assert NotFound("gone", 125).exit_code == 125
    assert NotFound("gone").exit_code == 1


def test_kinds_cross_a_process_boundary() -> None:
    assert errors.kind_of(errors.NoSuchContainer("x")) == "NotFound"
    assert errors.kind_of(NotRunning("x")) == "NotRunning"
    assert errors.kind_of(store.RecordError("abc")) == "RlError"
    e = errors.rebuild("no such container: x", 1, "NotFound")
    assert isinstance(e, NotFound) and (e.exit_code, e.message) == (1, "no such container: x")
    assert isinstance(errors.rebuild("m", 125, "Conflict"), Conflict)
    assert type(errors.rebuild("m", 125, "NoSuchKind")) is RlError
    assert type(errors.rebuild("m", 1)) is RlError


def test_report_lines_are_reraised_of_the_kind_their_code_means() -> None:
    with pytest.raises(RlError) as exc:
        report.raise_error('E127 exec: "nope": executable file not found in $PATH')
    check(exc, CommandNotFound, 127, 400, 'exec: "nope": executable file not found in $PATH')
    with pytest.raises(RlError) as exc:
        report.raise_error('E126 exec: "/etc": permission denied')
    check(exc, CannotExecute, 126, 400, 'exec: "/etc": permission denied')
    with pytest.raises(RlError) as exc:
        report.raise_error("E125 mounting proc on /proc: EPERM")
    assert type(exc.value) is RlError and exc.value.exit_code == 125
    with pytest.raises(RlError) as exc:
        report.raise_error("Egarbage")
    assert type(exc.value) is RlError and exc.value.exit_code == 125


def test_registry_and_record_errors_narrow_their_http_status() -> None:
    from rootless.image.registry import RegistryError

    assert RegistryError("r: unauthorized", 401).http_status == 401
    assert RegistryError("r: manifest unknown", 404).http_status == 404
    assert RegistryError("cannot reach registry r").http_status == 500
    assert RegistryError("x").exit_code == 125
    gone = store.RecordError("abc")
    assert (gone.http_status, gone.exit_code, gone.message) == (404, 1, "no such container: abc")
    assert store.RecordError("abc", "bad json").http_status == 500


# -- no such container / image -------------------------------------------------


def test_no_such_container() -> None:
    for _ in ("inspect", "remove", "stop"):  # each looks the reference up first
        with pytest.raises(RlError) as exc:
            store.lookup("no-such-ctr")
        check(exc, NotFound, 1, 404, "no such container: no-such-ctr")
        assert isinstance(exc.value, errors.NoSuchContainer)


def test_no_such_image() -> None:
    with pytest.raises(RlError) as exc:
        images.lookup(images.open_store(), "no-such-image:1")
    check(exc, NotFound, 1, 404, "no such image: no-such-image:1")
    out, errs = engine_images.remove(["no-such-image:1"], force=False)
    assert (out, [e.message for e in errs]) == ([], ["no such image: no-such-image:1"])


def test_invalid_image_reference() -> None:
    with pytest.raises(RlError) as exc:
        images.lookup(images.open_store(), "UPPER")
    check(exc, InvalidArgument, 1, 400,
          "invalid reference format: repository name must be lowercase: 'UPPER'")


# -- invalid flag values at create ----------------------------------------------


@pytest.mark.parametrize(("change", "message"), [
    ({"limits": api.LimitFlags(memory="lots")},
     'invalid argument "lots" for "--memory" flag: invalid size: \'lots\''),
    ({"limits": api.LimitFlags(cpus="-1")},
     'invalid argument "-1" for "--cpus" flag: range of CPUs is from 0.01 to '),
    ({"tmpfs": ["/proc"]},
     'invalid mount config for type "tmpfs": "/proc" cannot be mounted because it is not '
     "of type proc"),
    ({"name": "-bad"},
     'invalid container name "-bad": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed'),
    ({"ulimits": ["nofile=2:1"]},
     "invalid ulimit: nofile=2:1: soft limit 2 exceeds hard limit 1"),
    ({"publish": ["99999:80"]}, "invalid port specification '99999:80': "),
])
def test_invalid_flags_at_create(rootfs: Path, change: dict[str, object], message: str) -> None:
    opts = api.CreateOptions(rootfs=str(rootfs), command=["true"], **change)  # type: ignore[arg-type]
    with pytest.raises(RlError) as exc:
        api.create(opts)
    e = exc.value
    assert isinstance(e, InvalidArgument), f"{type(e).__name__}: {e.message}"
    assert (e.exit_code, e.http_status) == (125, 400)
    assert e.message.startswith(message), e.message


def test_a_missing_rootfs_is_an_invalid_argument(tmp_path: Path) -> None:
    with pytest.raises(RlError) as exc:
        api.create(api.CreateOptions(rootfs=str(tmp_path / "none"), command=["true"]))
    check(exc, InvalidArgument, 125, 400,
          f"rootfs {str(tmp_path / 'none')!r} does not exist or is not a directory")


def test_a_signal_name_is_checked() -> None:
    with pytest.raises(RlError) as exc:
        api.parse_signal("SIGNOPE")
    check(exc, InvalidArgument, 125, 400, "invalid signal: SIGNOPE")


# -- with real containers ----------------------------------------------------------


@pytest.fixture
def stopped(rl: RlRunner, rootfs: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    support.require_userns()
    name = "err-" + request.node.name[:40].replace("[", "_").replace("]", "")
    rl("create", "--name", name, "--rootfs", rootfs, "true", check=True)
    yield name
    rl("rm", "-f", name)


@pytest.fixture
def running(rl: RlRunner, rootfs: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    support.require_userns()
    name = "err-run-" + request.node.name[:40].replace("[", "_").replace("]", "")
    rl("run", "-d", "--name", name, "--rootfs", rootfs, "sleep", "600", check=True)
    yield name
    rl("rm", "-f", name)


def test_name_already_in_use(stopped: str, rootfs: Path) -> None:
    other = store.lookup(stopped).id
    with pytest.raises(RlError) as exc:
        api.create(api.CreateOptions(rootfs=str(rootfs), command=["true"], name=stopped))
    check(exc, Conflict, 125, 409,
          f'the container name "/{stopped}" is already in use by container "{other}". '
          "You have to remove (or rename) that container to be able to reuse that name.")


def test_rename_to_a_name_in_use(stopped: str, running: str) -> None:
    other = store.lookup(running).id
    with pytest.raises(RlError) as exc:
        api.rename(store.lookup(stopped), running)
    check(exc, Conflict, 1, 409,
          f'the container name "/{running}" is already in use by container "{other}"')


def test_exec_and_kill_on_a_stopped_container(stopped: str) -> None:
    from rootless.engine import execute

    ctr = store.lookup(stopped)
    with pytest.raises(RlError) as exc:
        execute.run(ctr, api.ExecOptions(["true"]))
    check(exc, NotRunning, 1, 409, f"container {ctr.id[:12]} is not running")
    with pytest.raises(RlError) as exc:
        api.kill(ctr, signal.SIGTERM)
    check(exc, NotRunning, 1, 409,
          f"cannot kill container: {ctr.label}: container {ctr.id[:12]} is not running")
    with pytest.raises(RlError) as exc:
        api.top(ctr, [])
    check(exc, NotRunning, 1, 409, f"container {ctr.name} is not running")


def test_removing_or_starting_a_running_container(running: str) -> None:
    ctr = store.lookup(running)
    with pytest.raises(RlError) as exc:
        api.remove(ctr)
    check(exc, Conflict, 1, 409,
          f"cannot remove container {ctr.label}: container is running: stop the container "
          "before removing or force remove")
    with pytest.raises(RlError) as exc:
        api.start(ctr, attach=False, stdin=False)
    check(exc, Conflict, 1, 409, f"container {ctr.name} is already running")
    assert store.lookup(running).state().status == "running"


@pytest.mark.parametrize(("command", "kind", "code", "message"), [
    ("/no/such/cmd", CommandNotFound, 127,
     'exec: "/no/such/cmd": executable file not found in $PATH'),
    ("/etc/passwd", CannotExecute, 126, 'exec: "/etc/passwd": permission denied'),
])
def test_command_errors_at_start(rl: RlRunner, rootfs: Path, request: pytest.FixtureRequest,
                                 command: str, kind: type[RlError], code: int,
                                 message: str) -> None:
    support.require_userns()
    name = f"err-start-{code}"
    rl("create", "--name", name, "--rootfs", rootfs, command, check=True)
    try:
        ctr = store.lookup(name)
        with pytest.raises(RlError) as exc:
            api.start(ctr, attach=False, stdin=False)
        check(exc, kind, code, 400, message)
    finally:
        rl("rm", "-f", name)
