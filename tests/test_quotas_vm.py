"""The quota tests on a real cgroup v2 kernel: one qemu boot runs tests/guest/guest_quotas.py.

Each in-guest test shows up here as one host test that passes only if it
passed in the guest (failed, skipped or not run there all fail here). No
qemu or no kernel package: skipped with the reason (a failure under CI).
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from vm import guest

import support

CHECKOUT = Path(__file__).resolve().parent.parent
GUEST_MODULE = CHECKOUT / "tests" / "guest" / "guest_quotas.py"
# The first test pays for the boot and the whole in-guest run (about 2 minutes
# on an idle machine, nearly 5 on a loaded one).
pytestmark = pytest.mark.timeout(420)

GUEST_TESTS = [n.name for n in ast.parse(GUEST_MODULE.read_text()).body
               if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]


@pytest.fixture(scope="module")
def guest_run() -> Iterator[guest.GuestResult]:
    why = guest.missing_requirements()
    support.require(not why, f"the cgroup v2 guest cannot boot: {why}")
    support.require((CHECKOUT / ".venv" / "bin" / "rl").exists(),
                    f"{CHECKOUT}/.venv has no rl (the guest runs the checkout's virtualenv)")
    yield guest.run_pytest(CHECKOUT, [str(GUEST_MODULE.relative_to(CHECKOUT))],
                           timeout=float(os.environ.get("RL_GUEST_TIMEOUT", "360")))


def test_guest_ran_the_quota_suite(guest_run: guest.GuestResult) -> None:
    assert guest_run.exit_status is not None, (
        f"the guest never reported (timeout or boot failure) after {guest_run.elapsed:.0f} s; "
        f"console:\n{guest_run.console[-4000:]}")
    assert "RL-GUEST: delegated" in guest_run.console, guest_run.console[-4000:]
    assert guest_run.outcomes, f"no results from the guest:\n{guest_run.pytest_log[-4000:]}"


@pytest.mark.parametrize("name", GUEST_TESTS)
def test_in_guest(guest_run: guest.GuestResult, name: str) -> None:
    outcome = guest_run.outcomes.get(name)
    if outcome is None:
        pytest.fail(f"{name} did not run in the guest; pytest said:\n"
                    f"{guest_run.pytest_log[-4000:]}\nconsole:\n{guest_run.console[-2000:]}")
    assert outcome == "passed", f"{name} {outcome} in the guest:\n{guest_run.messages[name]}"


def test_a_missing_kernel_is_named(tmp_path: Path) -> None:
    kernel, why = guest.find_kernel(tmp_path)
    assert kernel is None and f"no kernel in {tmp_path}/boot" in why
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / "vmlinuz-6.1.0-0-amd64").write_bytes(b"")
    kernel, why = guest.find_kernel(tmp_path)
    assert kernel is None and "kernel modules missing" in why and "9pnet_virtio" in why
