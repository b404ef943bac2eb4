"""KServe v1 REST bodies: ``{"instances": [...]}`` in, ``{"predictions": [...]}`` etc. out.

Instances are returned as parsed (no numpy conversion: the handler decides what they mean).
Bodies go through ``marserve.protocol.jsonbody`` (depth limit, strict JSON, no duplicate keys);
``"inputs"`` is accepted in place of ``"instances"`` as KServe does, but not both at once.
Output NaN/Infinity become ``null`` (see ``jsonbody.encode_json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from marserve.errors import InvalidInput
from marserve.protocol.jsonbody import encode_json, parse_json
from marserve.protocol.limits import DecodeLimits

__all__ = ["decode_predict_request", "encode_explanations", "encode_predictions"]


def decode_predict_request(body: bytes, *, limits: DecodeLimits) -> list[Any]:
    """The instances of a v1 ``:predict``/``:explain`` body."""
    doc = parse_json(body, max_depth=limits.max_json_depth)
    if not isinstance(doc, dict):
        raise InvalidInput(
            'Expected a JSON object with "instances" (or "inputs") as the request body'
        )
    has_instances = "instances" in doc
    has_inputs = "inputs" in doc
    if has_instances and has_inputs:
        raise InvalidInput('request must contain only one of "instances" and "inputs"')
    if not (has_instances or has_inputs):
        raise InvalidInput('missing required field "instances" (or "inputs")')
    key = "instances" if has_instances else "inputs"
    instances = doc[key]
    if not isinstance(instances, list):
        raise InvalidInput(f'Expected "{key}" to be a list')
    return instances


def encode_predictions(predictions: Sequence[Any]) -> bytes:
    """``{"predictions": [...]}``."""
    return encode_json({"predictions": list(predictions)})


def encode_explanations(explanations: Sequence[Any]) -> bytes:
    """``{"explanations": [...]}`` (what TorchServe's KServe envelope returns for ``:explain``)."""
    return encode_json({"explanations": list(explanations)})
