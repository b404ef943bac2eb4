"""Kubernetes' protobuf envelope, pure: enough to read the core objects kubectl creates.

kubectl's typed clients (``kubectl create namespace``) send ``application/vnd.kubernetes.protobuf``:
the magic ``k8s\\0`` then a ``runtime.Unknown`` (typeMeta, raw). Answers stay JSON, which
those clients also accept."""

from __future__ import annotations

from typing import Any

from marserve.controlplane.errors import BadRequest, UnsupportedMediaType

MAGIC = b"k8s\x00"
Fields = dict[int, list[bytes | int]]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise BadRequest("protobuf: truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def fields(data: bytes) -> Fields:
    """Field number -> values (bytes for length-delimited, int for varints)."""
    out: Fields = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: bytes | int
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise BadRequest("protobuf: truncated field")
            value, pos = data[pos : pos + size], pos + size
        elif wire in (1, 5):
            step = 8 if wire == 1 else 4
            value, pos = int.from_bytes(data[pos : pos + step], "little"), pos + step
        else:
            raise BadRequest(f"protobuf: unsupported wire type {wire}")
        out.setdefault(number, []).append(value)
    return out


def _text(f: Fields, number: int) -> str | None:
    values = [v for v in f.get(number, []) if isinstance(v, bytes)]
    return values[-1].decode() if values else None


def _map(f: Fields, number: int) -> dict[str, str]:
    out = {}
    for entry in f.get(number, []):
        if isinstance(entry, bytes):
            kv = fields(entry)
            out[_text(kv, 1) or ""] = _text(kv, 2) or ""
    return out


def _object_meta(raw: bytes) -> dict[str, Any]:
    f = fields(raw)
    meta: dict[str, Any] = {}
    for number, key in ((1, "name"), (2, "generateName"), (3, "namespace")):
        if (value := _text(f, number)) is not None:
            meta[key] = value
    for number, key in ((11, "labels"), (12, "annotations")):
        if values := _map(f, number):
            meta[key] = values
    return meta


def decode(data: bytes) -> dict[str, Any]:
    """A protobuf-encoded object as JSON-shaped data (metadata, and a Namespace's finalizers)."""
    if not data.startswith(MAGIC):
        raise BadRequest("protobuf: missing the k8s envelope")
    envelope = fields(data[len(MAGIC) :])
    type_meta = fields(next((v for v in envelope.get(1, []) if isinstance(v, bytes)), b""))
    api_version, kind = _text(type_meta, 1), _text(type_meta, 2)
    raw = next((v for v in envelope.get(2, []) if isinstance(v, bytes)), b"")
    if kind != "Namespace":
        raise UnsupportedMediaType(f"protobuf bodies are accepted for Namespace only, not {kind}")
    obj = fields(raw)
    out: dict[str, Any] = {"apiVersion": api_version or "v1", "kind": kind}
    meta = next((v for v in obj.get(1, []) if isinstance(v, bytes)), None)
    out["metadata"] = _object_meta(meta) if meta is not None else {}
    spec = next((v for v in obj.get(2, []) if isinstance(v, bytes)), None)
    if spec is not None:
        finalizers = [v.decode() for v in fields(spec).get(1, []) if isinstance(v, bytes)]
        out["spec"] = {"finalizers": finalizers} if finalizers else {}
    return out
