"""A model's v2 signature: the inputs and outputs its model-config.yaml declares, or that it was
seen to take and return (the first dimension, the batch, becomes -1)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from marserve.types import Tensor

V2_DATATYPES = frozenset(
    {
        "BOOL",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "FP16",
        "FP32",
        "FP64",
        "BF16",
        "BYTES",
    }
)
# What marserve accepts for any handler before it has seen a request: BYTES rows.
DEFAULT_INPUTS = ({"name": "input-0", "datatype": "BYTES", "shape": [-1]},)

TensorSpec = dict[str, Any]
_Key = tuple[tuple[str, str, tuple[int, ...]], ...]


def declared(yaml_config: Mapping[str, Any], key: str) -> list[TensorSpec] | None:
    """``inputs``/``outputs`` from model-config.yaml (each ``{name, datatype, shape}``), or None
    when the file does not declare them or declares them in a form that is not a v2 tensor list."""
    entries = yaml_config.get(key)
    if not isinstance(entries, list) or not entries:
        return None
    specs: list[TensorSpec] = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            return None
        name, datatype, shape = entry.get("name"), entry.get("datatype"), entry.get("shape")
        if not isinstance(name, str) or str(datatype).upper() not in V2_DATATYPES:
            return None
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape
        ):
            return None
        specs.append({"name": name, "datatype": str(datatype).upper(), "shape": list(shape)})
    return specs


def _key(tensors: Sequence[Tensor]) -> _Key:
    return tuple((t.name, t.datatype, tuple(t.shape[1:])) for t in tensors)


def _specs(key: _Key) -> list[TensorSpec]:
    return [{"name": n, "datatype": d, "shape": [-1, *rest]} for n, d, rest in key]


class Signature:
    """One model version's inputs and outputs: declared ones win, else the latest seen."""

    __slots__ = ("_inputs", "_outputs", "_seen_in", "_seen_out")

    def __init__(self, yaml_config: Mapping[str, Any]) -> None:
        self._inputs = declared(yaml_config, "inputs")
        self._outputs = declared(yaml_config, "outputs")
        self._seen_in: _Key = ()
        self._seen_out: _Key = ()

    def observe(self, inputs: Sequence[Tensor], outputs: Sequence[Tensor]) -> None:
        """A prediction took ``inputs`` and returned ``outputs`` (cheap when nothing changed)."""
        if self._inputs is None and inputs:
            self._seen_in = _key(inputs)
        if self._outputs is None and outputs:
            self._seen_out = _key(outputs)

    @property
    def inputs(self) -> list[TensorSpec]:
        if self._inputs is not None:
            return [dict(s) for s in self._inputs]
        return _specs(self._seen_in) if self._seen_in else [dict(s) for s in DEFAULT_INPUTS]

    @property
    def outputs(self) -> list[TensorSpec]:
        if self._outputs is not None:
            return [dict(s) for s in self._outputs]
        return _specs(self._seen_out)
