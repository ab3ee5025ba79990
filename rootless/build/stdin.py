"""`rl build -` and `-f -`: what arrives on a stream, told apart as docker's CLI does.

A context of "-" is either a tar (plain or compressed: the context, the
Dockerfile inside it) or a bare Dockerfile (no context at all). docker
decides from the first bytes: a compression magic, or a first tar header
that parses; the stream is then read on from the start, prefix included.
"""

from __future__ import annotations

import io
import tarfile
from typing import IO, TYPE_CHECKING

from rootless.errors import InvalidArgument

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

_MAGICS = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")
HEAD = 1024  # docker's CLI peeks this much
MAX_DOCKERFILE = 16 << 20  # a Dockerfile on stdin is read into memory: bounded


def is_archive(head: bytes) -> bool:
    """Whether the stream starting with *head* is a (possibly compressed) tar."""
    if head.startswith(_MAGICS):
        return True
    if len(head) < tarfile.BLOCKSIZE:
        return False
    try:
        tarfile.TarInfo.frombuf(head[:tarfile.BLOCKSIZE], "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


class _Prefixed(io.RawIOBase):
    """*head* and then the rest of *rest*, as one readable stream."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        buf = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buf))
        buf[:len(data)] = data
        return len(data)


def read_head(stream: IO[bytes]) -> bytes:
    head = b""
    while len(head) < HEAD:
        chunk = stream.read(HEAD - len(head))
        if not chunk:
            break
        head += chunk
    return head


def split(stream: IO[bytes]) -> tuple[IO[bytes] | None, str | None]:
    """A "-" context: (the tar stream, None) or (None, the Dockerfile's text)."""
    head = read_head(stream)
    if is_archive(head):
        return io.BufferedReader(_Prefixed(head, stream), 1 << 20), None
    return None, dockerfile_text(head + stream.read(MAX_DOCKERFILE))


def dockerfile_text(data: bytes) -> str:
    if len(data) > MAX_DOCKERFILE:
        raise InvalidArgument(f"the Dockerfile on stdin is larger than {MAX_DOCKERFILE >> 20} MiB")
    return data.decode("utf-8", errors="surrogateescape")


def read_dockerfile(stream: IO[bytes]) -> str:
    """`-f -`: the Dockerfile's text from *stream*."""
    return dockerfile_text(stream.read(MAX_DOCKERFILE + 1))
