"""The architecture's contracts (pyproject.toml, [tool.importlinter]) bite.

scripts/test runs lint-imports on the tree; these tests show that each kind
of contract fails when broken, on a copy of the tree with one bad import
added, so that a contract that can no longer fail (a typo in a module name,
a layer left out) is noticed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).parent / "lint-imports"


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not LINT.exists():
        pytest.fail(f"{LINT} is missing: import-linter is one of the test extras")
    dest = tmp_path_factory.mktemp("tree")
    for pkg in ("rootless", "netstack", "fs"):
        shutil.copytree(REPO / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", dest)
    return dest


def test_the_tree_keeps_its_contracts(tree: Path) -> None:
    r = _lint(tree)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


@pytest.mark.parametrize(("module", "line", "contract", "says"), [
    # The runtime reaching up into the engine, in a function: deferred imports count.
    ("rootless/runtime/spec.py", "def _up() -> None:\n    from ..engine import store  # noqa\n",
     "Layers", "rootless.runtime is not allowed to import rootless.engine"),
    ("rootless/engine/store.py", "import click  # noqa\n",
     "click and rich only in the faces", "rootless.engine is not allowed to import click"),
    ("netstack/ports.py", "import rich  # noqa\n",
     "click and rich only in the faces", "netstack is not allowed to import rich"),
    # rl-oci is runc: it keeps no docker records and knows no images.
    ("rootless/oci/records.py", "def _up() -> None:\n    from ..engine import store  # noqa\n",
     "rl-oci is a face over the runtime only",
     "rootless.oci is not allowed to import rootless.engine"),
    # Two modules of one package importing each other, one of them lazily.
    ("rootless/runtime/report.py", "def _late() -> None:\n    from . import container  # noqa\n",
     "No import cycles", "No cycles are allowed in rootless.runtime"),
])
def test_a_broken_contract_fails(tree: Path, module: str, line: str, contract: str,
                                 says: str) -> None:
    path = tree / module
    before = path.read_text()
    try:
        path.write_text(before + "\n\n" + line)
        r = _lint(tree)
    finally:
        path.write_text(before)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{contract}" in r.stdout and "BROKEN" in r.stdout, r.stdout
    assert says in r.stdout, r.stdout
