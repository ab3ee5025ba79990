"""Which registries a short name may mean: registries.conf's search list.

Read as podman does: $XDG_CONFIG_HOME/containers/registries.conf, else
/etc/containers/registries.conf, key `unqualified-search-registries`. Without
either, docker.io (what docker users expect). RL_REGISTRIES (comma separated)
overrides both.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import RlError


def config_files() -> list[Path]:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return [Path(base) / "containers" / "registries.conf",
            Path("/etc/containers/registries.conf")]


def search_registries() -> list[str]:
    env = os.environ.get("RL_REGISTRIES")
    if env is not None:
        return [r.strip() for r in env.split(",") if r.strip()]
    import tomllib

    for path in config_files():
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            continue
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise RlError(f"{path}: {e}") from None
        value = data.get("unqualified-search-registries")
        if isinstance(value, list):
            return [str(v) for v in value]
    return ["docker.io"]
