"""Image references: docker's grammar and normalisation."""

from __future__ import annotations

import pytest

from rootless.errors import RlError
from rootless.image import reference


@pytest.mark.parametrize(("text", "expected"), [
    ("busybox", "busybox"),
    ("busybox:1.36", "busybox:1.36"),
    ("docker.io/busybox", "docker.io/library/busybox"),
    ("docker.io/library/busybox:latest", "docker.io/library/busybox:latest"),
    ("docker.io/me/app", "docker.io/me/app"),
    ("127.0.0.1:5000/me/app:v1", "127.0.0.1:5000/me/app:v1"),
    ("localhost/app", "localhost/app"),
    ("quay.io/a/b/c@sha256:" + "0" * 64, "quay.io/a/b/c@sha256:" + "0" * 64),
])
def test_parse_and_normalise(text: str, expected: str) -> None:
    assert str(reference.parse(text)) == expected


def test_short_names_gain_library_on_docker_hub_only() -> None:
    assert str(reference.parse("busybox").with_domain("docker.io")) == "docker.io/library/busybox"
    assert str(reference.parse("busybox").with_domain("quay.io")) == "quay.io/busybox"


@pytest.mark.parametrize("text", ["", "UPPER/case", "a//b", "a:b:c", "/abs", "x@sha256:12",
                                  "a" * 300])
def test_invalid_references_are_one_line_errors(text: str) -> None:
    with pytest.raises(RlError) as e:
        reference.parse(text)
    assert "invalid reference format" in e.value.message
    assert "\n" not in e.value.message
