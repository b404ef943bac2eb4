"""Open Inference Protocol (v2) REST bodies <-> InferRequest/InferResponse, incl. binary tensors.

Requests: a JSON object (or, with ``Inference-Header-Content-Length: N``, N bytes of JSON followed
by the binary data of the inputs that declare ``parameters.binary_data_size``, in input order).
Every rule is enforced before anything large is allocated; errors are ``InvalidInput`` (400) or
``PayloadTooLarge`` (413) with a message naming the field. Tensor data rules (shapes, datatypes,
ranges, BYTES) are in ``marserve.protocol.v2_tensors``; JSON parsing rules (depth, duplicate
keys, strict syntax) in ``marserve.protocol.jsonbody``.

Responses: ``{"model_name", "model_version"?, "id"?, "parameters"?, "outputs": [...]}`` with each
output ``{"name", "datatype", "shape", "parameters"?, "data"}`` and flat ``data``. Outputs asked
for in binary (``parameters.binary_data: true`` per requested output, or the request's
``parameters.binary_data_output``) carry ``parameters.binary_data_size`` instead of ``data``; the
body is then ``application/octet-stream`` with ``Inference-Header-Content-Length``.
NaN and +/-Infinity in JSON output data are written as ``null`` (strict JSON has no token for
them; request them in binary to get the exact values). BYTES outputs that are not valid UTF-8
are base64-encoded with ``"content_type": "base64"`` on the output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from marserve.errors import InvalidInput
from marserve.protocol.jsonbody import encode_json, parse_json
from marserve.protocol.limits import DecodeBudget, DecodeLimits
from marserve.protocol.v2_tensors import (
    array_from_json,
    array_from_raw,
    json_data_from_array,
    output_array,
    parse_shape,
    raw_from_array,
)
from marserve.types import NUMPY_DTYPES, InferRequest, InferResponse, RequestedOutput, Tensor

__all__ = [
    "HEADER_LENGTH",
    "binary_output_default",
    "check_binary_header",
    "decode_infer_request",
    "encode_error",
    "encode_infer_response",
    "encode_json",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
_SKIP_DATA = frozenset({"data"})
_MAX_HEADER_DIGITS = 19


@dataclass(slots=True)
class _InputSpec:
    name: str
    what: str
    shape: tuple[int, ...]
    datatype: str
    parameters: dict[str, Any]
    data: Any
    binary_size: int | None


def check_binary_header(content_type: str | None, header_length: str | None) -> None:
    """For the REST adapter: an ``application/octet-stream`` body needs the header length."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime == "application/octet-stream" and header_length is None:
        raise InvalidInput("'inference-header-content-length' header is missing")


def decode_infer_request(
    body: bytes,
    *,
    model_name: str,
    model_version: str | None,
    header_length: str | None,
    limits: DecodeLimits,
) -> InferRequest:
    """Decode a v2 REST infer (or explain) request body; see the module docstring."""
    header, binary = _split_body(body, header_length)
    doc = parse_json(header, max_depth=limits.max_json_depth, skip=_SKIP_DATA)
    if not isinstance(doc, dict):
        raise InvalidInput(f"Expected a JSON object as the request body, got {_json_type(doc)}")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    parameters = _parameters(doc, "request")
    specs = _input_specs(doc, limits, has_binary=binary is not None)
    inputs = _build_inputs(specs, binary, DecodeBudget(limits))
    default_binary = parameters.get("binary_data_output", False)
    if not isinstance(default_binary, bool):
        raise InvalidInput("request: 'binary_data_output' must be a boolean")
    outputs = _requested_outputs(doc.get("outputs"), default_binary, limits)
    return InferRequest(
        model_name=model_name,
        inputs=inputs,
        model_version=model_version,
        id=request_id,
        parameters=parameters,
        outputs=outputs,
    )


def binary_output_default(request: InferRequest) -> bool:
    """Whether outputs the request did not list should be returned as binary data."""
    return request.parameters.get("binary_data_output") is True


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview | None]:
    if header_length is None:
        return body, None
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_HEADER_DIGITS:
        shown = text[:24].encode("ascii", "backslashreplace").decode("ascii")
        raise InvalidInput(f"invalid {HEADER_LENGTH} '{shown}': expected a non-negative integer")
    length = int(text)
    if length > len(body):
        raise InvalidInput(f"{HEADER_LENGTH} {length} exceeds the body length {len(body)}")
    return body[:length], memoryview(body)[length:]


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _parameters(obj: dict[str, Any], what: str) -> dict[str, Any]:
    value = obj.get("parameters", {})
    if not isinstance(value, dict):
        raise InvalidInput(f"{what}: 'parameters' must be a JSON object")
    return value


def _input_specs(
    doc: dict[str, Any], limits: DecodeLimits, *, has_binary: bool
) -> list[_InputSpec]:
    if "inputs" not in doc:
        raise InvalidInput("missing required field 'inputs'")
    items = doc["inputs"]
    if not isinstance(items, list) or not items:
        raise InvalidInput("'inputs' must be a non-empty list")
    if len(items) > limits.max_inputs:
        raise InvalidInput(f"too many inputs: {len(items)} (maximum {limits.max_inputs})")
    specs: list[_InputSpec] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        spec = _input_spec(index, item, has_binary=has_binary)
        if spec.name in seen:
            raise InvalidInput(f"duplicate input name '{spec.name}'")
        seen.add(spec.name)
        specs.append(spec)
    return specs


def _input_spec(index: int, item: Any, *, has_binary: bool) -> _InputSpec:
    if not isinstance(item, dict):
        raise InvalidInput(f"input {index}: expected a JSON object")
    name = item.get("name")
    if name is None:
        raise InvalidInput(f"input {index}: missing required field 'name'")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"input {index}: 'name' must be a non-empty string")
    what = f"input '{name}'"
    for field in ("shape", "datatype"):
        if field not in item:
            raise InvalidInput(f"{what}: missing required field '{field}'")
    shape = parse_shape(what, item["shape"])
    datatype = _datatype(what, item["datatype"])
    parameters = dict(_parameters(item, what))
    size = parameters.pop("binary_data_size", None)
    if size is not None:
        if type(size) is not int or size < 0:
            raise InvalidInput(f"{what}: 'binary_data_size' must be a non-negative integer")
        if "data" in item:
            raise InvalidInput(f"{what}: has both 'data' and 'binary_data_size'")
        if not has_binary:
            raise InvalidInput(
                f"{what}: 'binary_data_size' is set but the request has no binary data "
                f"({HEADER_LENGTH} header missing)"
            )
    elif "data" not in item:
        raise InvalidInput(f"{what}: missing required field 'data'")
    return _InputSpec(name, what, shape, datatype, parameters, item.get("data"), size)


def _datatype(what: str, value: Any) -> str:
    if isinstance(value, str) and value in NUMPY_DTYPES:
        return value
    shown = repr(value)[:40]
    hint = ""
    if isinstance(value, str) and value.upper() in NUMPY_DTYPES:
        hint = f" (datatypes are upper case: '{value.upper()}')"
    raise InvalidInput(f"{what}: invalid datatype {shown}{hint}")


def _build_inputs(
    specs: list[_InputSpec], binary: memoryview | None, budget: DecodeBudget
) -> list[Tensor]:
    if binary is not None:
        declared = sum(spec.binary_size or 0 for spec in specs)
        if declared != len(binary):
            raise InvalidInput(
                f"binary data size mismatch: inputs declare {declared} bytes, "
                f"the body has {len(binary)} bytes after the JSON header"
            )
    tensors: list[Tensor] = []
    offset = 0
    for spec in specs:
        if spec.binary_size is None:
            array = array_from_json(spec.what, spec.datatype, spec.shape, spec.data, budget)
        else:
            assert binary is not None
            raw = binary[offset : offset + spec.binary_size]
            offset += spec.binary_size
            array = array_from_raw(spec.what, spec.datatype, spec.shape, raw, budget)
        tensors.append(
            Tensor(
                name=spec.name,
                datatype=spec.datatype,
                shape=tuple(array.shape),
                data=array,
                # binary_data_size stays: the data plane hands binary BYTES to handlers as bytes
                parameters=spec.parameters
                if spec.binary_size is None
                else {**spec.parameters, "binary_data_size": spec.binary_size},
            )
        )
    return tensors


def _requested_outputs(
    value: Any, default_binary: bool, limits: DecodeLimits
) -> list[RequestedOutput]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput("'outputs' must be a list")
    if len(value) > limits.max_outputs:
        raise InvalidInput(
            f"too many requested outputs: {len(value)} (maximum {limits.max_outputs})"
        )
    outputs: list[RequestedOutput] = []
    seen: set[str] = set()
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidInput(f"output {index}: expected a JSON object")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"output {index}: 'name' must be a non-empty string")
        if name in seen:
            raise InvalidInput(f"duplicate output name '{name}'")
        seen.add(name)
        parameters = _parameters(item, f"output '{name}'")
        binary = parameters.get("binary_data", default_binary)
        if not isinstance(binary, bool):
            raise InvalidInput(f"output '{name}': 'binary_data' must be a boolean")
        outputs.append(RequestedOutput(name=name, binary_data=binary, parameters=parameters))
    return outputs


def encode_infer_response(
    response: InferResponse,
    requested: Sequence[RequestedOutput],
    *,
    binary_outputs_default: bool = False,
) -> tuple[bytes, dict[str, str]]:
    """The response body and the headers to send with it; see the module docstring.

    With ``requested`` empty every output is returned (binary when
    ``binary_outputs_default``); otherwise exactly the requested ones, in request order.
    """
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for tensor, binary in _select_outputs(response, requested, binary_outputs_default):
        flat = output_array(tensor.name, tensor.datatype, tensor.shape, tensor.data)
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        parameters = dict(tensor.parameters)
        if binary:
            raw = raw_from_array(tensor.name, tensor.datatype, flat)
            parameters["binary_data_size"] = len(raw)
            chunks.append(raw)
        else:
            data, extra = json_data_from_array(tensor.name, tensor.datatype, flat)
            parameters.update(extra)
            entry["data"] = data
        if parameters:
            entry["parameters"] = parameters
        outputs.append(entry)
    header = encode_json(_response_doc(response, outputs))
    if not chunks:
        return header, {"Content-Type": "application/json"}
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
    return b"".join([header, *chunks]), headers


def _select_outputs(
    response: InferResponse, requested: Sequence[RequestedOutput], default_binary: bool
) -> list[tuple[Tensor, bool]]:
    if not requested:
        return [(tensor, default_binary) for tensor in response.outputs]
    by_name = {tensor.name: tensor for tensor in response.outputs}
    selected: list[tuple[Tensor, bool]] = []
    for wanted in requested:
        tensor = by_name.get(wanted.name)
        if tensor is None:
            raise InvalidInput(
                f"output '{wanted.name}' was requested but the model has no such output"
            )
        selected.append((tensor, wanted.binary_data))
    return selected


def _response_doc(response: InferResponse, outputs: list[dict[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {"model_name": response.model_name}
    if response.model_version is not None:
        doc["model_version"] = response.model_version
    if response.id is not None:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    doc["outputs"] = outputs
    return doc


def encode_error(message: str) -> bytes:
    """The v1/v2 error body ``{"error": message}``."""
    return orjson.dumps({"error": message})
