"""Untrusted JSON in and out: depth limit, duplicate keys, parse errors, numpy-aware encoding.

Parsing (``parse_json``):

- Counting is cheapest: a body with no more ``[`` and ``{`` than ``max_json_depth`` cannot nest
  deeper, and one with no more ``:`` than the keys the caller walked cannot repeat a key, so most
  bodies need nothing else (``bytes.count`` is a fraction of a microsecond; the scan below costs
  about 25 us even on a small body, which was a tenth of the front's CPU for a v1 request).
- Otherwise one C-speed pass (``bytes.translate``) keeps only ``[ ] { } " :`` of the body;
  numpy then finds, outside strings, the deepest bracket and the number of ``:`` (= the number
  of object keys).
  The depth is checked *before* orjson parses (orjson's own limit is 1024 and its error is
  generic): deeper than ``max_json_depth`` is ``InvalidInput("JSON nesting depth exceeds
  maximum allowed limit (N)")``.
- orjson rejects what strict JSON rejects: ``NaN``/``Infinity`` tokens, numbers that overflow to
  infinity (``1e999``), invalid UTF-8, lone surrogates, a byte order mark, an empty body. All of
  these become ``InvalidInput("Unrecognized request format: ...")``.
- Duplicate object keys are rejected (orjson silently keeps the last one): when the body has more
  keys than the parsed objects the caller walked (``count_keys``), the body is re-read with a
  duplicate-detecting hook, which names the key. That slow path only runs for duplicates or for
  objects the caller chose not to walk (e.g. inside v2 tensor ``data``, which is invalid anyway).

Encoding (``encode_json``): orjson with numpy support and non-string keys. NaN and +/-Infinity
(Python floats or numpy) are written as ``null`` so that every response is valid JSON; bytes are
written as UTF-8 text when they decode, else as standard base64; objects with ``tolist()`` (numpy
scalars, torch tensors) are converted with it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import orjson

from marserve.errors import InternalError, InvalidInput

_KEEP = b'[]{}":'
_DELETE = bytes(sorted(set(range(256)) - set(_KEEP)))
_STEP = np.zeros(256, dtype=np.int8)
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1
_QUOTE = ord('"')
_COLON = ord(":")

_ENCODE_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class Structure(NamedTuple):
    """What one scan of a JSON body finds outside its strings (``exact``), or upper bounds of
    both counted over the whole body, strings included (not ``exact``)."""

    depth: int
    keys: int
    exact: bool = True


def bounds(body: bytes) -> Structure:
    """Upper bounds of the depth and key count of ``body``, from byte counts alone."""
    return Structure(body.count(b"[") + body.count(b"{"), body.count(b":"), exact=False)


def scan(body: bytes) -> Structure:
    """Nesting depth and number of object keys in ``body``, ignoring what is inside strings."""
    if b"\\" in body:
        # In JSON a backslash escapes exactly one character: drop escaped backslashes first,
        # then escaped quotes, so every quote left delimits a string.
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = np.frombuffer(body.translate(None, _DELETE), dtype=np.uint8)
    if marks.size == 0:
        return Structure(0, 0)
    inside = (np.cumsum(marks == _QUOTE) & 1).astype(bool)
    steps = _STEP[marks]
    steps[inside] = 0
    depth = int(np.cumsum(steps, dtype=np.int64).max(initial=0))
    keys = int(np.count_nonzero((marks == _COLON) & ~inside))
    return Structure(depth, keys)


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays/objects in ``body``, ignoring brackets inside strings."""
    return scan(body).depth


def loads(body: bytes, *, max_depth: int) -> tuple[Any, Structure]:
    """Depth-check then parse ``body``; malformed or too deep JSON is ``InvalidInput`` (400)."""
    structure = bounds(body)
    if structure.depth > max_depth:  # it might nest too deep: look outside the strings
        structure = scan(body)
    if structure.depth > max_depth:
        raise InvalidInput(f"JSON nesting depth exceeds maximum allowed limit ({max_depth})")
    try:
        return orjson.loads(body), structure
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"Unrecognized request format: {exc}") from None


def count_keys(value: Any, skip: frozenset[str] = frozenset()) -> int:
    """Keys in every object reachable from ``value`` (not descending into keys in ``skip``).

    Lists are only walked when their first element is a container, so numeric data is never
    iterated; objects hidden behind a scalar first element are simply not counted, which makes
    the duplicate check fall back to its exact (slow) path.
    """
    if isinstance(value, dict):
        total = len(value)
        for key, item in value.items():
            if key not in skip and isinstance(item, (dict, list)):
                total += count_keys(item, skip)
        return total
    if isinstance(value, list) and value and isinstance(value[0], (dict, list)):
        return sum(count_keys(item, skip) for item in value if isinstance(item, (dict, list)))
    return 0


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise InvalidInput(f"duplicate key '{key}' in JSON object")
        seen[key] = value
    return seen


def reject_duplicate_keys(body: bytes, structure: Structure, keys_seen: int) -> None:
    """Raise ``InvalidInput`` if some object in ``body`` repeats a key.

    ``keys_seen`` is the number of keys the caller found in the parsed document (see
    ``count_keys``); ``body`` must already have passed ``loads`` (so its depth is bounded).
    """
    if structure.keys <= keys_seen:
        return
    if not structure.exact and scan(body).keys <= keys_seen:  # the extra ``:`` were in strings
        return
    json.loads(body, object_pairs_hook=_no_duplicates)


def parse_json(body: bytes, *, max_depth: int, skip: frozenset[str] = frozenset()) -> Any:
    """Parse an untrusted JSON body: depth limit, strict syntax, no duplicate keys."""
    value, structure = loads(body, max_depth=max_depth)
    if structure.keys:
        reject_duplicate_keys(body, structure, count_keys(value, skip))
    return value


def bytes_to_text(value: bytes) -> str:
    """UTF-8 text when ``value`` decodes, else standard padded base64."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(value).decode("ascii")


def _default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes_to_text(bytes(obj))
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    tolist: Callable[[], Any] | None = getattr(obj, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(type(obj).__name__)


def encode_json(obj: Any, *, indent: bool = False) -> bytes:
    """Serialize ``obj`` (JSON types, numpy, bytes) to JSON; see the module docstring."""
    option = _ENCODE_OPTIONS | orjson.OPT_INDENT_2 if indent else _ENCODE_OPTIONS
    try:
        return orjson.dumps(obj, default=_default, option=option)
    except orjson.JSONEncodeError as exc:
        raise InternalError(f"Invalid handler output: not JSON serializable ({exc})") from None
