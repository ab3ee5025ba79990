"""What the `rl build` tests share: the busybox base they build on, contexts, and
reading results back (a pytest plugin: a test module loads it with
`pytest_plugins = ["buildtools"]` and marks itself with
`pytestmark = pytest.mark.usefixtures("build_host")`).

Its fixtures are registered for the whole session once a module loads it, so
none of them is autouse: `build_host` skips (or, under CI, fails) where the
host lacks what a build needs.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest
from imagetools import rootfs_tar

import support
from support import RlRunner

_counter: Iterator[int] = count()


@pytest.fixture
def build_host() -> None:
    """A real build needs user namespaces, newuidmap and the busybox rootfs."""
    support.require_userns()
    support.require_newidmap()
    support.require_busybox()


@pytest.fixture(scope="session")
def busybox_tgz(rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rootfs_tar(rootfs, tmp_path_factory.mktemp("tars") / "busybox.tar.gz")


@pytest.fixture
def bb(rl: RlRunner, busybox_tgz: Path) -> str:
    """A freshly imported busybox image; its name. Cmd sh, and an Env of its own:
    FROM_BASE=yes and BASE=<its name>, so its ID is its own and no other test's
    cache records are over it."""
    name = f"bbuild{next(_counter)}-{os.getpid()}"
    rl("import", "-c", 'CMD ["sh"]', "-c", "ENV FROM_BASE=yes", "-c", f"ENV BASE={name}",
       busybox_tgz, name, check=True)
    return name


def context(tmp_path: Path, dockerfile: str, files: dict[str, bytes | str] | None = None,
            modes: dict[str, int] | None = None, name: str = "ctx") -> Path:
    """A build context under *tmp_path*: the Dockerfile, *files* (path: content) and
    their *modes*."""
    ctx = tmp_path / name
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    for rel, data in (files or {}).items():
        path = ctx / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    for rel, mode in (modes or {}).items():
        (ctx / rel).chmod(mode)
    return ctx


def leftovers(rl: RlRunner) -> tuple[str, list[str]]:
    """`rl ps -a`'s rows and the IDs of nameless images (what a build must not leave)."""
    ps = rl("ps", "-a", "-q", check=True).stdout
    rows = rl("images", "--format", "{{.Repository}} {{.ID}}", check=True).stdout.splitlines()
    return ps, [r for r in rows if r.startswith("<none>")]


def saved_config(rl: RlRunner, ref: str, tmp_path: Path) -> dict[str, object]:
    """The image's whole config (history included), as `rl save` writes it."""
    out = tmp_path / "saved.tar"
    rl("save", "-o", out, ref, check=True)
    with tarfile.open(out) as tf:
        def member(name: str) -> bytes:
            f = tf.extractfile(name)
            assert f is not None
            return f.read()

        manifest = json.loads(member("manifest.json"))
        config = json.loads(member(manifest[0]["Config"]))
    out.unlink()
    assert isinstance(config, dict)
    return config


STEP = re.compile(r"^#\d+ (\d+\.\d+ )?")  # buildx's plain progress: "#2 0.214 "


def plain(stderr: str) -> list[str]:
    """buildx's plain progress without its step numbers and times ("#2 0.214 ran" is
    "ran", "#2 CACHED" is "CACHED"), so the lines read as the steps say them."""
    return [STEP.sub("", line) for line in stderr.splitlines()]
