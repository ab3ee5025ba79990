"""The OCI image config, checked once: when it enters the store (load, pull,
import, commit), never on `rl run`'s path; and ImageDefaults, what a config
gives the containers made from it.

The rules are image-spec's schema/config-schema.json (with defs.json's
mapStringObject and mapStringString), field by field, plus:

* null is accepted for every optional field, as Go's decoder in docker,
  podman and containerd accepts it (`docker import` writes `"Env": null`);
* what execve(2) cannot take is refused here rather than at run: a NUL byte
  in Env, Entrypoint, Cmd, User or WorkingDir, and an Env entry that is not
  NAME=VALUE with a name (the spec's own words for Env);
* rootfs.diff_ids are sha256 digests (the only algorithm rl's store keeps),
  one per layer of the manifest.

Extra fields (docker's container_config, Healthcheck, ...) are ignored, as
the schema allows. The first problem found is the error, one line naming
the field: `malformed image config: config.Cmd: expected an array of
strings, got an object`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import RlError

# Go's time.RFC3339Nano, which encoding/json applies to `created`.
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass
class ImageDefaults:
    """What an image's config contributes to a container (docker's override rules apply):
    the fields of image-spec's ImageConfig that a container's process and ports take."""

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    workdir: str = ""
    user: str = ""
    stop_signal: str = ""
    exposed: list[str] = field(default_factory=list)  # ExposedPorts ("80/tcp"), for -P
    volumes: list[str] = field(default_factory=list)  # Volumes: anonymous volumes at run


class ConfigError(RlError):
    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"malformed image config: {where}: {problem}")


def _kind(v: Any) -> str:
    """The JSON type of a decoded value, in JSON Schema's words."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    return "an array" if isinstance(v, list) else "an object"


def _show(s: str) -> str:
    """A string as it can appear in a one-line message."""
    text = json.dumps(s)
    return text if len(text) <= 60 else text[:56] + '..."'


def _string(v: Any, where: str, nul_ok: bool = True) -> str:
    if not isinstance(v, str):
        raise ConfigError(where, f"expected a string, got {_kind(v)}")
    if not nul_ok and "\0" in v:
        raise ConfigError(where, "contains a NUL byte")
    return v


def _strings(v: Any, where: str, nul_ok: bool = True) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        got = _kind(v) if not isinstance(v, list) else "an array holding " + next(
            _kind(x) for x in v if not isinstance(x, str))
        raise ConfigError(where, f"expected an array of strings, got {got}")
    for i, x in enumerate(v):
        _string(x, f"{where}[{i}]", nul_ok)
    return v


def _map(v: Any, where: str, values: str) -> None:
    """defs.json's mapStringObject / mapStringString: non-empty keys to objects / strings."""
    if not isinstance(v, dict):
        raise ConfigError(where, f"expected an object, got {_kind(v)}")
    for key, value in v.items():
        if not key:
            raise ConfigError(where, "has an empty key")
        ok = isinstance(value, dict) if values == "object" else isinstance(value, str)
        if not ok:
            raise ConfigError(f"{where}[{_show(key)}]",
                              f"expected {'an' if values == 'object' else 'a'} {values}, "
                              f"got {_kind(value)}")


def _time(v: Any, where: str) -> None:
    if not _RFC3339.fullmatch(_string(v, where)):
        raise ConfigError(where, f"{_show(v)} is not an RFC 3339 date-time")


def _boolean(v: Any, where: str) -> None:
    if not isinstance(v, bool):
        raise ConfigError(where, f"expected a boolean, got {_kind(v)}")


def _object(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ConfigError(where, f"expected an object, got {_kind(v)}")
    return v


def _container_config(cfg: dict[str, Any]) -> None:
    """The "config" object: what a container of the image runs with by default."""
    checks: dict[str, Callable[[Any, str], object]] = {
        "User": lambda v, w: _string(v, w, nul_ok=False),
        "WorkingDir": lambda v, w: _string(v, w, nul_ok=False),
        "StopSignal": _string,
        "Entrypoint": lambda v, w: _strings(v, w, nul_ok=False),
        "Cmd": lambda v, w: _strings(v, w, nul_ok=False),
        "Env": _env,
        "ExposedPorts": lambda v, w: _map(v, w, "object"),
        "Volumes": lambda v, w: _map(v, w, "object"),
        "Labels": lambda v, w: _map(v, w, "string"),
        "ArgsEscaped": _boolean,
    }
    for key, check in checks.items():
        if cfg.get(key) is not None:
            check(cfg[key], f"config.{key}")


def _env(v: Any, where: str) -> None:
    for i, item in enumerate(_strings(v, where, nul_ok=False)):
        name, sep, _ = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"{where}[{i}]", f"{_show(item)} is not NAME=VALUE")


def validate(config: Any, layer_count: int | None = None) -> dict[str, Any]:
    """config (decoded JSON) if it is a valid image config, else ConfigError.

    layer_count: how many layers the manifest lists; rootfs.diff_ids must match.
    """
    if not isinstance(config, dict):
        raise RlError(f"malformed image config: expected an object, got {_kind(config)}")
    for key in ("architecture", "os", "rootfs"):
        if key not in config:
            raise ConfigError(key, "missing (a required field)")
    _string(config["architecture"], "architecture")
    _string(config["os"], "os")
    for key in ("author", "variant", "os.version"):
        if config.get(key) is not None:
            _string(config[key], key)
    if config.get("created") is not None:
        _time(config["created"], "created")
    if config.get("os.features") is not None:
        _strings(config["os.features"], "os.features")
    if config.get("config") is not None:
        _container_config(_object(config["config"], "config"))
    rootfs = _object(config["rootfs"], "rootfs")
    for key in ("type", "diff_ids"):
        if key not in rootfs:
            raise ConfigError(f"rootfs.{key}", "missing (a required field)")
    if _string(rootfs["type"], "rootfs.type") != "layers":
        raise ConfigError("rootfs.type", f'{_show(rootfs["type"])} is not "layers"')
    diff_ids = _strings(rootfs["diff_ids"], "rootfs.diff_ids")
    for i, d in enumerate(diff_ids):
        if not _DIGEST.fullmatch(d):
            raise ConfigError(f"rootfs.diff_ids[{i}]",
                              f"{_show(d)} is not a sha256 digest (sha256:<64 hex digits>)")
    if layer_count is not None and len(diff_ids) != layer_count:
        raise ConfigError("rootfs.diff_ids", f"{len(diff_ids)} of them for {layer_count} "
                          f"layer{'s' if layer_count != 1 else ''}")
    history = config.get("history")
    if history is not None:
        if not isinstance(history, list):
            raise ConfigError("history", f"expected an array, got {_kind(history)}")
        for i, entry in enumerate(history):
            where = f"history[{i}]"
            _object(entry, where)
            for key in ("author", "created_by", "comment"):
                if entry.get(key) is not None:
                    _string(entry[key], f"{where}.{key}")
            if entry.get("created") is not None:
                _time(entry["created"], f"{where}.created")
            if entry.get("empty_layer") is not None:
                _boolean(entry["empty_layer"], f"{where}.empty_layer")
    return config
