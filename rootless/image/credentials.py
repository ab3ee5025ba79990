"""Registry credentials in the files podman and docker use.

Read, first match wins: $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json
(podman's default), $XDG_CONFIG_HOME/containers/auth.json, ~/.docker/config.json
(docker's; $DOCKER_CONFIG/config.json). `rl login` writes to the first of
$REGISTRY_AUTH_FILE or $XDG_RUNTIME_DIR/containers/auth.json, as podman
login does. Entries are {"auths": {"host[:port]": {"auth": base64(user:pass)}}};
credential helpers are not run.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from ..errors import RlError


def auth_files() -> list[Path]:
    files = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    if os.environ.get("XDG_RUNTIME_DIR"):
        files.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    files.append(Path(config) / "containers" / "auth.json")
    docker = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    files.append(Path(docker) / "config.json")
    return files


def write_file() -> Path:
    return auth_files()[0]


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise RlError(f"reading credentials {path}: {e}") from None
    return data if isinstance(data, dict) else {}


def _keys(registry: str) -> list[str]:
    # docker writes Docker Hub as its v1 URL.
    keys = [registry, f"https://{registry}", f"http://{registry}"]
    if registry in ("docker.io", "registry-1.docker.io"):
        keys.append("https://index.docker.io/v1/")
    return keys


def lookup(registry: str) -> tuple[str, str] | None:
    """(user, password) for a registry host, or None."""
    for path in auth_files():
        auths = _read(path).get("auths") or {}
        for key in _keys(registry):
            entry = auths.get(key)
            if isinstance(entry, dict) and entry.get("auth"):
                try:
                    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    raise RlError(f"{path}: malformed credentials for {registry}") from None
                return user, password
    return None


def store(registry: str, user: str, password: str) -> Path:
    path = write_file()
    data = _read(path)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    data.setdefault("auths", {})[registry] = {"auth": token}
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write(path, data)
    return path


def _write(path: Path, data: dict[str, Any]) -> None:
    """Replace the auth file atomically, readable by its owner only (it holds passwords)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def remove(registry: str | None) -> bool:
    """Forget one registry's credentials (None: all) in rl's auth file; True if any went."""
    path = write_file()
    data = _read(path)
    auths = data.get("auths") or {}
    if registry is None:
        gone = bool(auths)
        data["auths"] = {}
    else:
        gone = False
        for key in _keys(registry):
            if key in auths:
                del auths[key]
                gone = True
    if gone:
        _write(path, data)
    return gone
