"""The protobuf envelope kubectl's typed clients send (``kubectl create namespace``)."""

from __future__ import annotations

import pytest

from marserve.controlplane.errors import BadRequest, UnsupportedMediaType
from marserve.controlplane.protobuf import MAGIC, decode


def field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (sizes below 128 fit one varint byte)."""
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


def envelope(kind: bytes, raw: bytes) -> bytes:
    type_meta = field(1, b"v1") + field(2, kind)
    return MAGIC + field(1, type_meta) + field(2, raw) + field(3, b"") + field(4, b"")


def test_namespace() -> None:
    labels = field(11, field(1, b"team") + field(2, b"ml"))
    meta = field(1, b"kserve-test") + labels
    spec = field(1, b"kubernetes")
    assert decode(envelope(b"Namespace", field(1, meta) + field(2, spec))) == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "kserve-test", "labels": {"team": "ml"}},
        "spec": {"finalizers": ["kubernetes"]},
    }


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"{}", BadRequest),
        (MAGIC + b"\x0a\x7f", BadRequest),
        (MAGIC + b"\x0f", BadRequest),
        (envelope(b"Pod", b""), UnsupportedMediaType),
    ],
)
def test_bad_bodies(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode(data)
