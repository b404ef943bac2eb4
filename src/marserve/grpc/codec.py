"""Open Inference Protocol (v2) gRPC messages <-> InferRequest/InferResponse.

Requests: each input's data comes either from ``raw_input_contents`` (one entry per input, in
input order, the same little-endian layout as the REST binary extension) or from its typed
``contents`` field, never both in one request. The typed field must be the one that matches the
datatype (``fp32_contents`` for FP32, ``int_contents`` for INT8/INT16/INT32, ...); FP16 and BF16
only travel raw. Shapes, element counts, ranges and the decode budget follow the REST rules in
``marserve.protocol.v2_tensors``. BYTES elements from ``contents.bytes_contents`` reach handlers
like REST JSON strings do (text when UTF-8); raw BYTES elements stay ``bytes``.

Responses: raw outputs (``raw_output_contents``) when the request sent raw inputs or an output
has no typed field (FP16, BF16), else typed ``contents`` (as KServe's own server answers).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from marserve.errors import InvalidInput
from marserve.grpc.protos import grpc_predict_v2_pb2 as pb
from marserve.protocol.limits import DecodeBudget, DecodeLimits
from marserve.protocol.v2_tensors import (
    array_from_raw,
    bytes_elements,
    declared_count,
    object_array,
    output_array,
    parse_shape,
    raw_from_array,
    resolve_shape,
)
from marserve.types import NUMPY_DTYPES, InferRequest, InferResponse, RequestedOutput, Tensor

# datatype -> (typed contents field, numpy dtype of that repeated field)
CONTENTS: dict[str, tuple[str, np.dtype[Any]]] = {
    "BOOL": ("bool_contents", np.dtype(np.bool_)),
    "INT8": ("int_contents", np.dtype(np.int32)),
    "INT16": ("int_contents", np.dtype(np.int32)),
    "INT32": ("int_contents", np.dtype(np.int32)),
    "INT64": ("int64_contents", np.dtype(np.int64)),
    "UINT8": ("uint_contents", np.dtype(np.uint32)),
    "UINT16": ("uint_contents", np.dtype(np.uint32)),
    "UINT32": ("uint_contents", np.dtype(np.uint32)),
    "UINT64": ("uint64_contents", np.dtype(np.uint64)),
    "FP32": ("fp32_contents", np.dtype(np.float32)),
    "FP64": ("fp64_contents", np.dtype(np.float64)),
    "BYTES": ("bytes_contents", np.dtype(object)),
}
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
# Marks raw BYTES inputs so the data plane hands their elements over as bytes.
BINARY_MARK = "binary_data_size"


def parameters_of(entries: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    """A protobuf parameter map as a plain dict (unset values are ``None``)."""
    out: dict[str, Any] = {}
    for key, parameter in entries.items():
        choice = parameter.WhichOneof("parameter_choice")
        out[key] = None if choice is None else getattr(parameter, choice)
    return out


def set_parameters(target: Any, values: Mapping[str, Any]) -> None:
    """Fill a protobuf ``map<string, InferParameter>`` from plain values."""
    for key, value in values.items():
        parameter = target[key]
        if isinstance(value, bool):
            parameter.bool_param = value
        elif isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX:
            parameter.int64_param = value
        elif isinstance(value, int) and 0 <= value < (1 << 64):
            parameter.uint64_param = value
        elif isinstance(value, float):
            parameter.double_param = value
        else:
            parameter.string_param = str(value)


def _datatype(what: str, value: str) -> str:
    if value in NUMPY_DTYPES:
        return value
    hint = ""
    if value.upper() in NUMPY_DTYPES:
        hint = f" (datatypes are upper case: '{value.upper()}')"
    raise InvalidInput(f"{what}: invalid datatype {value[:40]!r}{hint}")


def _typed_array(
    what: str,
    datatype: str,
    shape: tuple[int, ...],
    contents: pb.InferTensorContents,
    budget: DecodeBudget,
) -> np.ndarray[Any, Any]:
    spec = CONTENTS.get(datatype)
    if spec is None:
        raise InvalidInput(f"{what}: {datatype} data must be sent in raw_input_contents")
    field, field_dtype = spec
    for descriptor, _ in contents.ListFields():
        if descriptor.name != field:
            raise InvalidInput(
                f"{what}: {datatype} data belongs in contents.{field}, not {descriptor.name}"
            )
    values = getattr(contents, field)
    budget.check_elements(what, declared_count(shape))
    resolved = resolve_shape(what, shape, len(values))
    if datatype == "BYTES":
        items = list(values)
        budget.charge(what, len(items), sum(map(len, items)))
        return object_array(items).reshape(resolved)
    dtype = NUMPY_DTYPES[datatype]
    budget.charge(what, len(values), len(values) * dtype.itemsize)
    array = np.array(values, dtype=field_dtype)
    if dtype != field_dtype:
        info = np.iinfo(dtype)
        if array.size and (int(array.min()) < info.min or int(array.max()) > info.max):
            raise InvalidInput(f"{what}: value out of range for {datatype}")
        array = array.astype(dtype)
    return array.reshape(resolved)


def _input_tensor(
    index: int,
    message: pb.ModelInferRequest.InferInputTensor,
    raw: bytes | None,
    budget: DecodeBudget,
) -> Tensor:
    if not message.name:
        raise InvalidInput(f"input {index}: 'name' must be a non-empty string")
    what = f"input '{message.name}'"
    datatype = _datatype(what, message.datatype)
    shape = parse_shape(what, list(message.shape))
    parameters = parameters_of(message.parameters)
    if raw is None:
        array = _typed_array(what, datatype, shape, message.contents, budget)
    else:
        if message.contents.ListFields():  # an empty contents message is as good as none
            raise InvalidInput(f"{what}: has both contents and raw_input_contents")
        array = array_from_raw(what, datatype, shape, raw, budget)
        if datatype == "BYTES":
            parameters[BINARY_MARK] = len(raw)
    return Tensor(
        name=message.name,
        datatype=datatype,
        shape=tuple(array.shape),
        data=array,
        parameters=parameters,
    )


def _inputs(message: pb.ModelInferRequest, limits: DecodeLimits) -> list[Tensor]:
    count = len(message.inputs)
    if count == 0:
        raise InvalidInput("'inputs' must be a non-empty list")
    if count > limits.max_inputs:
        raise InvalidInput(f"too many inputs: {count} (maximum {limits.max_inputs})")
    raws: Sequence[bytes | None] = [None] * count
    if message.raw_input_contents:
        if len(message.raw_input_contents) != count:
            raise InvalidInput(
                f"raw_input_contents has {len(message.raw_input_contents)} entries "
                f"for {count} inputs: give one per input, in input order"
            )
        raws = list(message.raw_input_contents)
    budget = DecodeBudget(limits)
    tensors: list[Tensor] = []
    seen: set[str] = set()
    for index, (item, raw) in enumerate(zip(message.inputs, raws, strict=True)):
        tensor = _input_tensor(index, item, raw, budget)
        if tensor.name in seen:
            raise InvalidInput(f"duplicate input name '{tensor.name}'")
        seen.add(tensor.name)
        tensors.append(tensor)
    return tensors


def _requested(
    items: Iterable[pb.ModelInferRequest.InferRequestedOutputTensor], limits: DecodeLimits
) -> list[RequestedOutput]:
    outputs: list[RequestedOutput] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        if index >= limits.max_outputs:
            raise InvalidInput(f"too many requested outputs (maximum {limits.max_outputs})")
        if not item.name:
            raise InvalidInput(f"output {index}: 'name' must be a non-empty string")
        if item.name in seen:
            raise InvalidInput(f"duplicate output name '{item.name}'")
        seen.add(item.name)
        outputs.append(RequestedOutput(name=item.name, parameters=parameters_of(item.parameters)))
    return outputs


def decode_infer_request(message: pb.ModelInferRequest, limits: DecodeLimits) -> InferRequest:
    """The domain request for a ``ModelInferRequest``; see the module docstring."""
    return InferRequest(
        model_name=message.model_name,
        inputs=_inputs(message, limits),
        model_version=message.model_version or None,
        id=message.id or None,
        parameters=parameters_of(message.parameters),
        outputs=_requested(message.outputs, limits),
    )


def wants_raw_outputs(message: pb.ModelInferRequest) -> bool:
    """Whether the response should carry raw outputs: when the request sent raw inputs."""
    return len(message.raw_input_contents) > 0


def _select(response: InferResponse, requested: Sequence[RequestedOutput]) -> list[Tensor]:
    if not requested:
        return list(response.outputs)
    by_name = {tensor.name: tensor for tensor in response.outputs}
    selected: list[Tensor] = []
    for wanted in requested:
        tensor = by_name.get(wanted.name)
        if tensor is None:
            raise InvalidInput(
                f"output '{wanted.name}' was requested but the model has no such output"
            )
        selected.append(tensor)
    return selected


def encode_infer_response(
    response: InferResponse, requested: Sequence[RequestedOutput], *, raw: bool
) -> pb.ModelInferResponse:
    """A ``ModelInferResponse`` with the requested outputs (all when none were named)."""
    tensors = _select(response, requested)
    raw = raw or any(tensor.datatype not in CONTENTS for tensor in tensors)
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version or "",
        id=response.id or "",
    )
    set_parameters(message.parameters, response.parameters)
    for tensor in tensors:
        flat = output_array(tensor.name, tensor.datatype, tensor.shape, tensor.data)
        output = message.outputs.add(
            name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape)
        )
        set_parameters(output.parameters, tensor.parameters)
        if raw:
            message.raw_output_contents.append(raw_from_array(tensor.name, tensor.datatype, flat))
        elif tensor.datatype == "BYTES":
            output.contents.bytes_contents.extend(bytes_elements(tensor.name, flat))
        else:
            field, _ = CONTENTS[tensor.datatype]
            getattr(output.contents, field).extend(flat.tolist())
    return message
