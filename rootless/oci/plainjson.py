"""json.loads and json.dumps(indent=2) for rl-oci's start, state, kill and delete,
without importing json.

Those calls are a fresh process each (conmon and podman make three or four
per container) and import little else: json's modules compile regular
expressions at import, which brings in re and enum, ~10 ms of a call that
otherwise costs ~15. This uses the same C scanner json.loads uses (_json,
CPython's accelerator of json itself) with json's defaults, so what it
accepts and returns is json.loads'; a malformed text is given to json.loads
itself, for its JSONDecodeError (a ValueError), on that path only. dumps
writes what json.dumps(obj, indent=2) writes for the plain data a state is
(dicts, lists, strings, ints, bools, None), and asks json itself for
anything else.
"""

from __future__ import annotations

import _json

# typing.TYPE_CHECKING without importing typing (mypy knows the name).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
_SPACE = " \t\n\r"  # JSON's whitespace, which json.loads skips around the value


class _Context:
    """What _json's scanner reads off a json.JSONDecoder: its defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


_scan = _json.make_scanner(_Context())  # type: ignore[arg-type]  # (typeshed: a decoder)


def loads(text: str | bytes) -> Any:
    """json.loads(text)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")  # json.loads' encoding detection: rl-oci writes UTF-8
    start = len(text) - len(text.lstrip(_SPACE))
    try:
        obj, end = _scan(text, start)
    except Exception:
        # Not a value at all, or malformed: json's own error. (The scanner's
        # own error needs json.decoder loaded, or it raises SystemError.)
        return _with_json(text)
    if text[end:].strip(_SPACE):
        return _with_json(text)  # extra data
    return obj


def _with_json(text: str) -> Any:
    import json

    return json.loads(text)


def dumps(obj: Any, indent: int = 2) -> str:
    """json.dumps(obj, indent=indent)."""
    out: list[str] = []
    if not _write(obj, out, indent, 0):
        import json

        return json.dumps(obj, indent=indent)
    return "".join(out)


def _write(obj: Any, out: list[str], indent: int, depth: int) -> bool:
    """Append obj's text; False for a value json itself must write (a float, say)."""
    if isinstance(obj, str):
        out.append(_json.encode_basestring_ascii(obj))
    elif obj is None or obj is True or obj is False:
        out.append({None: "null", True: "true", False: "false"}[obj])
    elif type(obj) is int:
        out.append(int.__repr__(obj))
    elif isinstance(obj, (dict, list)):
        if not obj:
            out.append("{}" if isinstance(obj, dict) else "[]")
            return True
        pad = "\n" + " " * (indent * (depth + 1))
        out.append("{" if isinstance(obj, dict) else "[")
        first = True
        for item in obj.items() if isinstance(obj, dict) else obj:
            out.append(pad if first else "," + pad)
            first = False
            if isinstance(obj, dict):
                key, item = item
                if not isinstance(key, str):
                    return False
                out.append(_json.encode_basestring_ascii(key) + ": ")
            if not _write(item, out, indent, depth + 1):
                return False
        out.append("\n" + " " * (indent * depth) + ("}" if isinstance(obj, dict) else "]"))
    else:
        return False
    return True
