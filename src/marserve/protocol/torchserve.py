"""TorchServe ``/predictions`` bodies <-> the per-request input dict handlers receive, and back.

Input (what TorchServe's frontend + Python backend hand a handler, one dict per request):

- query-string parameters first, each as ``name -> bytes`` (TorchServe sends them without a
  content type, so the backend passes raw bytes);
- ``multipart/form-data``: one key per part. Parts with a ``filename`` (file uploads) are decoded
  by their own content type (default ``application/octet-stream``); plain fields are ``bytes``;
- ``application/x-www-form-urlencoded``: one key per field, values as ``bytes`` (so
  ``curl -d @file.json`` without ``-H 'Content-Type: application/json'`` does *not* yield the
  JSON document, exactly as with TorchServe);
- any other body is ``{"body": value}``: ``application/json`` -> the parsed JSON (depth limit,
  strict syntax; malformed JSON is 400 where TorchServe forwarded the raw bytes), ``text/*`` ->
  ``str`` (raw bytes if it is not UTF-8, as TorchServe), anything else, or no content type ->
  ``bytes``.
- Pickle content types are refused (415): marserve never unpickles request data.

Output: ``bytes`` as-is (``application/octet-stream``), ``str`` as UTF-8 (``text/plain``),
anything else as JSON pretty-printed with two-space indents like TorchServe's
``json.dumps(value, indent=2)`` (``application/json``); NaN/Infinity become ``null``. TorchServe
itself sends no Content-Type unless the handler sets one; a handler's choice overrides ours.
Errors: TorchServe's ``{"code", "type", "message"}`` pretty-printed with a trailing newline.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from typing import Any

import orjson
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from marserve.errors import InvalidInput, UnsupportedMediaType
from marserve.protocol.jsonbody import encode_json, parse_json
from marserve.protocol.limits import DecodeLimits

__all__ = [
    "PICKLE_CONTENT_TYPES",
    "decode_prediction_body",
    "decode_value",
    "encode_prediction_result",
    "encode_ts_error",
]

PICKLE_CONTENT_TYPES = frozenset(
    {
        "application/x-python-pickle",
        "application/python-pickle",
        "application/x-pickle",
        "application/pickle",
        "application/vnd.python.pickle",
    }
)
_FILE_DEFAULT_TYPE = "application/octet-stream"


def _media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    if not content_type:
        return "", {}
    mime, raw = parse_options_header(content_type)
    params = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in raw.items()}
    return mime.decode("latin-1").strip().lower(), params


def _refuse_pickle(mime: str) -> None:
    if mime in PICKLE_CONTENT_TYPES or "pickle" in mime:
        raise UnsupportedMediaType(
            f"Content type '{mime}' is not accepted: pickled data is never deserialized"
        )


def decode_value(value: bytes, content_type: str | None, *, limits: DecodeLimits) -> Any:
    """One input value as TorchServe's Python backend decodes it for its content type."""
    mime, _ = _media_type(content_type)
    _refuse_pickle(mime)
    if mime == "application/json":
        return parse_json(value, max_depth=limits.max_json_depth)
    if mime.startswith("text"):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


def decode_prediction_body(
    body: bytes,
    content_type: str | None,
    *,
    limits: DecodeLimits,
    query: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """The input dict for one ``/predictions`` request; see the module docstring."""
    mime, params = _media_type(content_type)
    _refuse_pickle(mime)
    inputs: dict[str, Any] = {name: value.encode("utf-8") for name, value in query}
    if mime == "multipart/form-data":
        inputs.update(_decode_multipart(body, params.get("boundary"), limits))
    elif mime == "application/x-www-form-urlencoded" and _is_utf8(body):
        inputs.update(_decode_urlencoded(body, limits))
    elif mime == "application/x-www-form-urlencoded":
        # `curl --data-binary @image.png` labels binary data as a form: it is the raw body
        inputs["body"] = body
    else:
        inputs["body"] = decode_value(body, content_type, limits=limits)
    return inputs


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _decode_urlencoded(body: bytes, limits: DecodeLimits) -> dict[str, bytes]:
    try:
        text = body.decode("utf-8")
        pairs = urllib.parse.parse_qsl(
            text, keep_blank_values=True, max_num_fields=limits.max_inputs, errors="strict"
        )
    except UnicodeDecodeError:
        raise InvalidInput("invalid form body: not valid UTF-8") from None
    except ValueError:
        raise InvalidInput(f"invalid form body: more than {limits.max_inputs} fields") from None
    return {name: value.encode("utf-8") for name, value in pairs}


class _Part:
    __slots__ = ("data", "headers")

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.data = bytearray()


class _PartCollector:
    """Callbacks for python-multipart's streaming parser, collecting whole parts."""

    def __init__(self, max_parts: int) -> None:
        self.parts: list[_Part] = []
        self.max_parts = max_parts
        self.finished = False
        self._field = bytearray()
        self._value = bytearray()

    def on_part_begin(self) -> None:
        if len(self.parts) >= self.max_parts:
            raise InvalidInput(f"invalid multipart body: more than {self.max_parts} parts")
        self.parts.append(_Part())

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self.parts[-1].data += data[start:end]

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        name = self._field.decode("latin-1").strip().lower()
        self.parts[-1].headers[name] = self._value.decode("latin-1").strip()
        self._field.clear()
        self._value.clear()

    def on_end(self) -> None:
        self.finished = True


def _parse_parts(body: bytes, boundary: str, limits: DecodeLimits) -> list[_Part]:
    collector = _PartCollector(limits.max_inputs)
    callbacks: Any = {
        "on_part_begin": collector.on_part_begin,
        "on_part_data": collector.on_part_data,
        "on_header_field": collector.on_header_field,
        "on_header_value": collector.on_header_value,
        "on_header_end": collector.on_header_end,
        "on_end": collector.on_end,
    }
    parser = MultipartParser(boundary, callbacks)
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise InvalidInput(f"invalid multipart body: {exc}") from None
    if not collector.finished:
        raise InvalidInput("invalid multipart body: missing the closing boundary")
    return collector.parts


def _decode_multipart(body: bytes, boundary: str | None, limits: DecodeLimits) -> dict[str, Any]:
    if not boundary:
        raise UnsupportedMediaType("multipart/form-data request without a boundary")
    fields: dict[str, Any] = {}
    for part in _parse_parts(body, boundary, limits):
        disposition, options = parse_options_header(part.headers.get("content-disposition", ""))
        name = options.get(b"name")
        if disposition.lower() != b"form-data" or name is None:
            raise InvalidInput("invalid multipart body: a part has no form-data name")
        value = bytes(part.data)
        if b"filename" in options:
            content_type = part.headers.get("content-type") or _FILE_DEFAULT_TYPE
            fields[name.decode("utf-8", "replace")] = decode_value(
                value, content_type, limits=limits
            )
        else:
            fields[name.decode("utf-8", "replace")] = value
    return fields


def encode_prediction_result(result: Any, content_type: str | None = None) -> tuple[bytes, str]:
    """One request's handler output as (body, content type); see the module docstring."""
    if isinstance(result, (bytes, bytearray, memoryview)):
        body, default = bytes(result), "application/octet-stream"
    elif isinstance(result, str):
        body, default = result.encode("utf-8"), "text/plain; charset=utf-8"
    else:
        body, default = encode_json(result, indent=True), "application/json"
    return body, content_type or default


def encode_ts_error(status: int, type_: str, message: str) -> bytes:
    """TorchServe's error body: ``{"code", "type", "message"}``, indented, newline-terminated."""
    doc = {"code": status, "type": type_, "message": message}
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
