"""Reproducible build output: SOURCE_DATE_EPOCH as BuildKit applies it.

With an epoch, what a build writes carries no time of its own and nothing
of the host it ran on: every new layer tar is rewritten with member times
clamped to the epoch (files a RUN touched have now-times), owner names
dropped (numeric ids only), per-member pax times (atime, ctime, a
fractional mtime) dropped; the member order is already fixed by the layer
writers (sorted walks). The config's `created` is the epoch and every
history entry later than it is clamped to it (a base image's older
entries keep theirs, as BuildKit does). Gzip streams rl writes for an
output carry neither a file name nor a time.

The builder calls `normalise_layer` on each layer tar before it enters
the store and `apply_config` on the final config; nothing here knows
about steps.
"""

from __future__ import annotations

import datetime
import gzip
import os
import tarfile
from collections.abc import Mapping
from typing import Any, Protocol

from rootless.errors import InvalidArgument

ENV = "SOURCE_DATE_EPOCH"
_PAX_DROPPED = ("mtime", "atime", "ctime", "uname", "gname")


def parse_epoch(text: str, what: str = ENV) -> int:
    """A SOURCE_DATE_EPOCH value: whole seconds since 1970, as BuildKit accepts it."""
    value = text.strip()
    if not value.isdigit() or len(value) > 12:
        raise InvalidArgument(f"invalid {what} {text!r}: a whole number of seconds since "
                              "1970-01-01 is needed")
    return int(value)


def choose(flag: str | None, build_args: Mapping[str, str],
           environ: Mapping[str, str]) -> int | None:
    """The epoch of a build: --source-date-epoch, else the build arg, else the
    environment (buildx passes $SOURCE_DATE_EPOCH on as the build arg); None: off.
    An empty value means unset, as in BuildKit."""
    if flag is not None and flag != "":
        return parse_epoch(flag, "--source-date-epoch")
    for source in (build_args, environ):
        text = source.get(ENV)
        if text:
            return parse_epoch(text)
    return None


def iso(epoch: int) -> str:
    """The epoch in the config's time format (RFC 3339, UTC, as BuildKit writes it)."""
    dt = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(text: str) -> float | None:
    try:
        dt = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return dt.timestamp()


def apply_config(config: dict[str, Any], epoch: int) -> None:
    """The image config's times: `created` the epoch, history entries clamped to it."""
    stamp = iso(epoch)
    config["created"] = stamp
    for entry in config.get("history") or []:
        if not isinstance(entry, dict):
            continue
        when = _seconds(str(entry.get("created", "")))
        if when is None or when > epoch:
            entry["created"] = stamp


def _normal(member: tarfile.TarInfo, epoch: int) -> tarfile.TarInfo:
    member.mtime = min(int(member.mtime), epoch)
    member.uname = member.gname = ""
    member.pax_headers = {k: v for k, v in member.pax_headers.items()
                          if k not in _PAX_DROPPED}
    return member


def normalise_layer(path: str, epoch: int) -> None:
    """Rewrite the layer tar at *path* (uncompressed) in place: member times clamped
    to *epoch*, owner names and pax times gone; member order and content kept."""
    tmp = f"{path}.repro-{os.getpid()}"
    try:
        with tarfile.open(path, "r:", encoding="utf-8", errors="surrogateescape") as src, \
                open(tmp, "wb") as raw, \
                tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT,
                             encoding="utf-8", errors="surrogateescape") as out:
            for member in src:
                data = src.extractfile(member) if member.isreg() else None
                out.addfile(_normal(member, epoch), data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...

    def flush(self) -> object: ...


def gzip_writer(out: Writable) -> gzip.GzipFile:
    """A gzip stream over *out* with no name and a zero time in its header, so the
    same bytes in give the same bytes out."""
    return gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0)
