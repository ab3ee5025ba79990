"""Image references: `[domain/]path[:tag][@sha256:hex]`, parsed and normalised.

The grammar is the distribution project's (lower-case path components,
separators `.`, `_`, `__`, `-`; tags of up to 128 word characters). A first
component with a dot, a colon or equal to `localhost` is a registry domain;
without one the name is *short* and is resolved later (locally, or through
the search list for pulls).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from ..errors import InvalidArgument

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_RE = (r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
              r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(?::[0-9]+)?")


@functools.cache
def _pattern(kind: str) -> re.Pattern[str]:
    """Compiled on first use: listing images never needs them (start-up time)."""
    return re.compile({
        "path": rf"{_COMPONENT}(?:/{_COMPONENT})*",
        "domain": _DOMAIN_RE,
        "tag": r"[\w][\w.-]{0,127}",
        "digest": r"sha256:[a-f0-9]{64}",
        "id": r"(?:sha256:)?[a-f0-9]{1,64}",
    }[kind])

DEFAULT_TAG = "latest"
DOCKER_HUB = "docker.io"


@dataclass(frozen=True)
class Reference:
    domain: str  # "" for a short name
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def __str__(self) -> str:
        out = self.repository
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    def with_domain(self, domain: str) -> Reference:
        path = self.path
        if domain == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        return Reference(domain, path, self.tag, self.digest)

    def tagged(self) -> Reference:
        """Tag 'latest' when neither a tag nor a digest was given."""
        if self.tag or self.digest:
            return self
        return Reference(self.domain, self.path, DEFAULT_TAG)


def parse(text: str) -> Reference:
    """Parse a reference; an invalid one is a one-line RlError (exit 125)."""
    err = InvalidArgument(f"invalid reference format: {text!r}")
    if not text or len(text) > 4096 or text != text.strip():
        raise err
    rest, digest = text, ""
    if "@" in rest:
        rest, _, digest = rest.partition("@")
        if not _pattern("digest").fullmatch(digest):
            raise err
    tag = ""
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _pattern("tag").fullmatch(tag):
            raise err
    domain = ""
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        if not _pattern("domain").fullmatch(first):
            raise err
        domain, rest = first, remainder
    if not _pattern("path").fullmatch(rest):
        if rest.lower() != rest and _pattern("path").fullmatch(rest.lower()):
            raise InvalidArgument(f"invalid reference format: repository name must be lowercase: "
                                  f"{text!r}")
        raise err
    if len(domain) + len(rest) > 255:
        raise InvalidArgument(f"invalid reference format: repository name too long: {text!r}")
    if domain == DOCKER_HUB and "/" not in rest:
        rest = f"library/{rest}"  # docker.io/busybox is docker.io/library/busybox
    return Reference(domain, rest, tag, digest)


def valid_domain(text: str) -> bool:
    return _pattern("domain").fullmatch(text) is not None


def looks_like_id(text: str) -> bool:
    return _pattern("id").fullmatch(text) is not None
