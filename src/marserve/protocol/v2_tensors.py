"""v2 tensor payloads <-> numpy: declared shapes, JSON ``data``, raw little-endian bytes.

Shared by the REST codec (JSON ``data`` and the binary tensor extension) and the gRPC codec
(``raw_input_contents`` use the same raw layout). Policies:

- A shape is a list of at most 64 integers, each ``0 <= d <= 2**63 - 1``. One ``-1`` is accepted
  as a wildcard resolved from the element count (KServe's own ``mnist_v2_bytes.json`` sample
  sends ``"shape": [-1]``); any other negative dimension, a second ``-1``, or ``-1`` beside a
  zero dimension is rejected.
- JSON data may be flat or nested (nesting need not match the shape; only the element count
  must). Numbers are converted with one ``np.asarray`` and checked with vectorised range and
  finiteness tests; integer types refuse floats, booleans and strings; floating types refuse
  booleans and strings; BOOL takes ``true``/``false`` (and the integers 0 and 1). FP16 is
  accepted as JSON; BF16 only as binary.
- BYTES JSON elements must be strings; they are UTF-8 encoded and kept as ``bytes`` in an
  ``object`` array (NUL bytes survive). Raw BYTES are ``<u4 length><bytes>`` repeated.
- Arrays decoded from raw bytes are copies unless the buffer is writable (a ``bytearray``), in
  which case they are zero-copy views; either way they are writable.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np

from marserve.errors import InternalError, InvalidInput
from marserve.protocol.limits import DecodeBudget
from marserve.types import NUMPY_DTYPES

MAX_DIMS = 64
MAX_DIM = (1 << 63) - 1
_LENGTH = np.dtype("<u4")


def parse_shape(what: str, value: Any) -> tuple[int, ...]:
    """Validate a declared shape (see the module docstring); ``-1`` stays as the wildcard."""
    if not isinstance(value, list):
        raise InvalidInput(f"{what}: 'shape' must be a list of integers")
    if len(value) > MAX_DIMS:
        raise InvalidInput(f"{what}: shape has {len(value)} dimensions (maximum {MAX_DIMS})")
    if not all(type(dim) is int for dim in value):
        raise InvalidInput(
            f"{what}: invalid shape {_show(value)}: dimensions must be non-negative integers"
        )
    wildcards = value.count(-1)
    if any(dim < -1 for dim in value) or wildcards > 1 or (wildcards and 0 in value):
        raise InvalidInput(
            f"{what}: invalid shape {_show(value)}: dimensions must be non-negative integers"
        )
    if any(dim > MAX_DIM for dim in value):
        raise InvalidInput(f"{what}: invalid shape {_show(value)}: dimension too large")
    return tuple(value)


def declared_count(shape: tuple[int, ...]) -> int:
    """Elements implied by ``shape``; with a wildcard, the product of the other dimensions."""
    return math.prod(dim for dim in shape if dim != -1)


def resolve_shape(what: str, shape: tuple[int, ...], count: int) -> tuple[int, ...]:
    """``shape`` with its wildcard resolved, after checking it holds ``count`` elements."""
    known = declared_count(shape)
    if -1 not in shape:
        if count != known:
            raise InvalidInput(f"{what}: expected {known} elements, got {count}")
        return shape
    if count % known:
        raise InvalidInput(f"{what}: {count} elements do not fit shape {list(shape)}")
    return tuple(count // known if dim == -1 else dim for dim in shape)


def array_from_json(
    what: str, datatype: str, shape: tuple[int, ...], data: Any, budget: DecodeBudget
) -> np.ndarray[Any, Any]:
    """The tensor held in a JSON ``data`` field, shaped and typed, charged to ``budget``."""
    if not isinstance(data, list):
        raise InvalidInput(f"{what}: 'data' must be a list")
    if datatype == "BF16":
        raise InvalidInput(f"{what}: BF16 data must be sent as binary data (binary_data_size)")
    dtype = NUMPY_DTYPES[datatype]
    budget.check_elements(what, declared_count(shape))
    if datatype == "BYTES":
        flat = _bytes_from_json(what, data)
        nbytes = sum(map(len, flat.tolist()))
    else:
        budget.check_bytes(what, declared_count(shape) * dtype.itemsize)
        flat = _numbers_from_json(what, datatype, dtype, data)
        nbytes = flat.nbytes
    resolved = resolve_shape(what, shape, flat.size)
    budget.charge(what, flat.size, nbytes)
    return flat.reshape(resolved)


def _numbers_from_json(
    what: str, datatype: str, dtype: np.dtype[Any], data: list[Any]
) -> np.ndarray[Any, Any]:
    try:
        raw = np.asarray(data)
    except ValueError as exc:
        if "maximum number of dimension" in str(exc):
            raise InvalidInput(f"{what}: 'data' nests more than {MAX_DIMS} levels") from None
        raise InvalidInput(
            f"{what}: 'data' is ragged: nested lists must have equal lengths"
        ) from None
    raw = raw.reshape(-1)
    if raw.size == 0:
        return np.empty(0, dtype=dtype)
    if dtype.kind in "iu":
        return _integers(what, datatype, dtype, raw, data)
    kind = raw.dtype.kind
    if dtype.kind == "b":
        if kind == "b":
            return raw
        if kind in "iu":
            if int(raw.min()) < 0 or int(raw.max()) > 1:
                raise InvalidInput(f"{what}: value out of range for BOOL")
            return raw.astype(np.bool_)
        raise InvalidInput(_kind_error(what, datatype, kind))
    if kind not in "iuf":
        raise InvalidInput(_kind_error(what, datatype, kind))
    with np.errstate(over="ignore", invalid="ignore"):
        out = raw.astype(dtype, copy=False)
    if not np.isfinite(out).all():
        raise InvalidInput(f"{what}: value out of range for {datatype}")
    return out


def _integers(
    what: str, datatype: str, dtype: np.dtype[Any], raw: np.ndarray[Any, Any], data: list[Any]
) -> np.ndarray[Any, Any]:
    kind = raw.dtype.kind
    if kind in "fO":
        # numpy infers float64 (or object) when Python ints do not share one integer dtype,
        # e.g. [0, 2**64 - 1]: only then look at the elements themselves.
        cells = np.asarray(data, dtype=object).reshape(-1).tolist()
        if not all(type(value) is int for value in cells):
            raise InvalidInput(_kind_error(what, datatype, kind))
        try:
            return np.asarray(cells, dtype=dtype)
        except OverflowError:
            raise InvalidInput(f"{what}: value out of range for {datatype}") from None
    if kind not in "iu":
        raise InvalidInput(_kind_error(what, datatype, kind))
    info = np.iinfo(dtype)
    if int(raw.min()) < info.min or int(raw.max()) > info.max:
        raise InvalidInput(f"{what}: value out of range for {datatype}")
    return raw.astype(dtype, copy=False)


def _kind_error(what: str, datatype: str, kind: str) -> str:
    wanted = "integers" if datatype.startswith(("INT", "UINT")) else "numbers"
    if datatype == "BOOL":
        wanted = "booleans"
    got = {
        "f": "floating-point values",
        "b": "booleans",
        "U": "strings",
        "S": "strings",
        "i": "integers",
        "u": "integers",
    }.get(kind)
    if got is None:
        return (
            f"{what}: invalid value for {datatype} "
            "(null, objects, mixed types or integers out of range)"
        )
    return f"{what}: expected {wanted} for {datatype}, got {got}"


def _bytes_from_json(what: str, data: list[Any]) -> np.ndarray[Any, Any]:
    try:
        cells = np.asarray(data, dtype=object).reshape(-1)
    except ValueError:
        raise InvalidInput(
            f"{what}: 'data' is ragged: nested lists must have equal lengths"
        ) from None
    try:
        items = [text.encode("utf-8") for text in cells.tolist()]
    except (AttributeError, UnicodeEncodeError):
        raise InvalidInput(
            f"{what}: BYTES data must be strings (nested lists of equal length)"
        ) from None
    return object_array(items)


def object_array(items: list[bytes]) -> np.ndarray[Any, Any]:
    """A 1-D ``object`` array holding exactly ``items`` (no numpy string conversion)."""
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def array_from_raw(
    what: str, datatype: str, shape: tuple[int, ...], raw: bytes | memoryview, budget: DecodeBudget
) -> np.ndarray[Any, Any]:
    """The tensor held in ``raw`` (binary extension / ``raw_input_contents``), shaped and typed."""
    known = declared_count(shape)
    budget.check_elements(what, known)
    if datatype == "BYTES":
        limit = budget.elements_left if -1 in shape else known
        items = split_bytes_elements(
            what, raw, expected=None if -1 in shape else known, limit=limit
        )
        resolved = resolve_shape(what, shape, len(items))
        budget.charge(what, len(items), len(raw) - 4 * len(items))
        return object_array(items).reshape(resolved)
    dtype = NUMPY_DTYPES[datatype]
    size = len(raw)
    if -1 in shape:
        if size % dtype.itemsize:
            raise InvalidInput(f"{what}: {size} bytes is not a whole number of {datatype} elements")
        count = size // dtype.itemsize
    else:
        count = known
        if size != count * dtype.itemsize:
            raise InvalidInput(f"{what}: expected {count * dtype.itemsize} bytes, got {size}")
    resolved = resolve_shape(what, shape, count)
    budget.charge(what, count, size)
    if datatype == "BOOL" and size and int(np.frombuffer(raw, dtype=np.uint8).max()) > 1:
        raise InvalidInput(f"{what}: value out of range for BOOL")
    array = np.frombuffer(raw, dtype=dtype.newbyteorder("<"), count=count)
    if not array.flags.writeable or array.dtype != dtype:
        array = array.astype(dtype)
    return array.reshape(resolved)


def split_bytes_elements(
    what: str, raw: bytes | memoryview, *, expected: int | None, limit: int
) -> list[bytes]:
    """Split raw BYTES data (``<u4 length><bytes>`` repeated) into its elements."""
    view = memoryview(raw)
    end = len(view)
    pos = 0
    items: list[bytes] = []
    while pos < end:
        if end - pos < 4:
            raise InvalidInput(f"{what}: BYTES element length prefix is truncated")
        length = int.from_bytes(view[pos : pos + 4], "little")
        pos += 4
        if length > end - pos:
            raise InvalidInput(
                f"{what}: BYTES element of {length} bytes runs past the end of the tensor data"
            )
        if len(items) >= limit:
            raise InvalidInput(_count_error(what, expected, len(items) + 1, limit))
        items.append(bytes(view[pos : pos + length]))
        pos += length
    if expected is not None and len(items) != expected:
        raise InvalidInput(f"{what}: expected {expected} string elements, got {len(items)}")
    return items


def _count_error(what: str, expected: int | None, got: int, limit: int) -> str:
    if expected is not None:
        return f"{what}: expected {expected} string elements, got at least {got}"
    return f"{what}: element count exceeds maximum {limit}"


def output_array(
    name: str, datatype: str, shape: tuple[int, ...], data: Any
) -> np.ndarray[Any, Any]:
    """A model output as a flat, C-contiguous array of its datatype's dtype (BYTES: as given)."""
    what = f"output '{name}'"
    if datatype not in NUMPY_DTYPES:
        raise InternalError(f"{what}: unknown datatype '{datatype}'")
    array = np.asarray(data)
    if array.size != math.prod(shape):
        raise InternalError(f"{what}: {array.size} elements do not match shape {list(shape)}")
    flat = array.reshape(-1)
    if datatype == "BYTES":
        return flat
    dtype = NUMPY_DTYPES[datatype]
    if flat.dtype != dtype:
        with np.errstate(over="ignore", invalid="ignore"):
            flat = flat.astype(dtype)
    return np.ascontiguousarray(flat)


def _element_bytes(what: str, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise InternalError(f"{what}: BYTES elements must be bytes or str, got {type(value).__name__}")


def bytes_elements(name: str, flat: np.ndarray[Any, Any]) -> list[bytes]:
    """The elements of a flat BYTES output as ``bytes``."""
    what = f"output '{name}'"
    return [_element_bytes(what, value) for value in flat.tolist()]


def raw_from_array(name: str, datatype: str, flat: np.ndarray[Any, Any]) -> bytes:
    """Raw little-endian bytes of a flat output (BYTES: length-prefixed elements)."""
    if datatype == "BYTES":
        items = bytes_elements(name, flat)
        parts: list[bytes] = []
        for item in items:
            parts.append(len(item).to_bytes(4, "little"))
            parts.append(item)
        return b"".join(parts)
    return flat.astype(flat.dtype.newbyteorder("<"), copy=False).tobytes()


def json_data_from_array(
    name: str, datatype: str, flat: np.ndarray[Any, Any]
) -> tuple[Any, dict[str, Any]]:
    """JSON ``data`` for a flat output, and parameters to add to the output.

    BYTES elements become UTF-8 strings; if any element is not valid UTF-8, every element of
    that output is base64-encoded instead and the output carries ``"content_type": "base64"``
    (the convention MLServer's codecs use). BF16 is widened exactly to FP32 numbers.
    """
    if datatype == "BYTES":
        items = bytes_elements(name, flat)
        try:
            return [item.decode("utf-8") for item in items], {}
        except UnicodeDecodeError:
            encoded = [base64.b64encode(item).decode("ascii") for item in items]
            return encoded, {"content_type": "base64"}
    if datatype == "BF16":
        return (flat.astype(np.uint32) << 16).view(np.float32), {}
    return flat, {}


def _show(value: list[Any]) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
