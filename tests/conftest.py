"""Fixtures shared by rl's tests.  Helpers that aren't fixtures live in support.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import support
from support import RlRunner, RlState

pytest.register_assert_rewrite("buildtools")  # the build tests' plugin, imported by name too

_SUPERVISOR_CRASHES: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for text in _SUPERVISOR_CRASHES:
        terminalreporter.section("rl fork server / supervisor log (it holds a traceback)")
        terminalreporter.write(text[-20000:])


def pytest_sessionstart(session: pytest.Session) -> None:
    if support.IN_CI and os.geteuid() == 0:
        pytest.exit(
            "the suite must run as an unprivileged user (CI=true and euid is 0); "
            "run it through .ci/run or as a normal user with scripts/test",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


# --------------------------------------------------------------------------
# Isolated state


@pytest.fixture(scope="session", autouse=True)
def rl_state() -> Iterator[RlState]:
    """Point rl's state at fresh dirs for the whole session; clean up afterwards.

    At the end every process recorded in $XDG_RUNTIME_DIR/rl/*.pid is killed and
    the dirs are removed (including files a container chowned to sub-ids).
    """
    base = Path(tempfile.mkdtemp(prefix="rl-", dir="/tmp"))
    state = RlState(base, base / "run", base / "data", base / "config")
    for d in (state.runtime_dir, state.data_home, state.config_home):
        d.mkdir(mode=0o700)
        d.chmod(0o700)
    saved = {k: os.environ.get(k) for k in state.env()}
    os.environ.update(state.env())
    try:
        yield state
    finally:
        # A supervisor's crash shows only in the fork server's log: keep it for
        # the run's summary before the directory goes.
        log = state.runtime_dir / "rl" / "forkserver.log"
        if log.exists() and "Traceback" in log.read_text(errors="replace"):
            _SUPERVISOR_CRASHES.append(log.read_text(errors="replace"))
        support.kill_recorded_pids(state.runtime_dir)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        support.remove_tree(base)


# --------------------------------------------------------------------------
# Root filesystems


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox root filesystem shared by the session: don't modify it."""
    return support.busybox_rootfs(tmp_path_factory.mktemp("rootfs") / "rootfs")


@pytest.fixture
def fresh_rootfs(rootfs: Path, tmp_path: Path) -> Path:
    """A private copy of the busybox root filesystem, free to modify."""
    return support.copy_tree(rootfs, tmp_path / "rootfs")


# --------------------------------------------------------------------------
# Running the rl command


class RlError(subprocess.CalledProcessError):
    """rl exited non-zero with check=True; str() shows its output."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"




@pytest.fixture(scope="session")
def rl_path() -> Path:
    """The installed ``rl`` console script of this environment."""
    path = Path(sys.executable).parent / "rl"
    support.require(path.exists(), f"{path} not installed (pip install -e .)")
    return path


@pytest.fixture
def rl(rl_path: Path, rl_state: RlState) -> RlRunner:
    """``rl(*args, input=None, timeout=60, check=False)`` runs the rl command.

    Output is captured as text.  The command runs in its own session; on
    timeout the whole process group is SIGKILLed and the test fails with the
    output seen so far.
    """

    def run(
        *args: str | os.PathLike[str],
        input: str | bytes | None = None,
        timeout: float = 60,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(rl_path), *map(str, args)]
        data = input.encode() if isinstance(input, str) else input
        env = {**os.environ, **rl_state.env()}
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            out, err = proc.communicate()
            pytest.fail(
                f"{cmd} timed out after {timeout}s\n--- stdout ---\n"
                f"{out.decode(errors='replace')}\n--- stderr ---\n"
                f"{err.decode(errors='replace')}",
                pytrace=False,
            )
        result = subprocess.CompletedProcess(
            cmd, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
        )
        if check and result.returncode != 0:
            raise RlError(result.returncode, cmd, result.stdout, result.stderr)
        return result

    return run
