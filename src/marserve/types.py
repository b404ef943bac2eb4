"""Domain types shared by every protocol: tensors, inference requests and responses over numpy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Open Inference Protocol datatypes -> numpy dtypes. BYTES tensors hold Python ``bytes`` objects
# in an ``object`` array; BF16 has no numpy dtype and travels as raw uint16 bit patterns.
NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BF16": np.dtype(np.uint16),
    "BYTES": np.dtype(object),
}

_DATATYPE_OF_KIND: dict[tuple[str, int], str] = {
    ("b", 1): "BOOL",
    ("u", 1): "UINT8",
    ("u", 2): "UINT16",
    ("u", 4): "UINT32",
    ("u", 8): "UINT64",
    ("i", 1): "INT8",
    ("i", 2): "INT16",
    ("i", 4): "INT32",
    ("i", 8): "INT64",
    ("f", 2): "FP16",
    ("f", 4): "FP32",
    ("f", 8): "FP64",
}


def datatype_of(array: np.ndarray[Any, Any]) -> str:
    """The v2 datatype name for a numpy array (strings and bytes become BYTES)."""
    kind = array.dtype.kind
    if kind in ("O", "S", "U"):
        return "BYTES"
    try:
        return _DATATYPE_OF_KIND[(kind, array.dtype.itemsize)]
    except KeyError:
        raise TypeError(f"no v2 datatype for numpy dtype {array.dtype}") from None


@dataclass(slots=True)
class Tensor:
    """A named n-dimensional array; ``data`` already has ``shape`` and the datatype's dtype."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray[Any, Any]
    parameters: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_array(cls, name: str, array: np.ndarray[Any, Any]) -> Tensor:
        return cls(name=name, datatype=datatype_of(array), shape=tuple(array.shape), data=array)


@dataclass(slots=True)
class RequestedOutput:
    """An output the client asked for; ``binary_data`` selects the v2 binary extension."""

    name: str
    binary_data: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    """A v2 (Open Inference Protocol) inference request, independent of REST or gRPC."""

    model_name: str
    inputs: list[Tensor]
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[RequestedOutput] = field(default_factory=list)


@dataclass(slots=True)
class InferResponse:
    """A v2 inference response, independent of REST or gRPC."""

    model_name: str
    outputs: list[Tensor]
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
