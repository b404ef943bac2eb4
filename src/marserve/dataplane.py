"""DataPlane: health, metadata, predict and infer on domain types. REST and gRPC both call it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from marserve import __version__
from marserve.batching import DynamicBatcher
from marserve.errors import MarserveError, ServiceUnavailable, from_http_status
from marserve.ids import new_request_id
from marserve.registry import Job, ModelHandle, ModelRegistry
from marserve.types import InferRequest, InferResponse, Tensor
from marserve.workers.messages import ItemResult
from marserve.workers.pool import Worker

Batcher = DynamicBatcher[Worker, Job, ItemResult]

SERVER_NAME = "marserve"
PREDICT_OUTPUT = "predict"
EXPLAIN_OUTPUT = "explain"
DELTA_OUTPUT = "convergence_delta"


class DataPlane:
    """The operations every protocol offers, independent of how bytes arrive."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self.draining = False

    # health and metadata -------------------------------------------------------------------
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Ready when not draining and every model that keeps workers has a live one (a model
        scaled to zero workers is not ready itself, but does not make the server unready)."""
        return not self.draining and all(h.ready or h.pool.target == 0 for h in self.registry)

    def model(self, name: str, version: str | None = None) -> ModelHandle:
        return self.registry.get(name, version)

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """A live worker, and a server that is not draining (404 for an unknown model)."""
        return self.registry.get(name, version).ready and not self.draining

    def server_metadata(self) -> dict[str, Any]:
        return {
            "name": SERVER_NAME,
            "version": __version__,
            "extensions": ["binary_tensor_data", "model_repository"],
        }

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        handle = self.registry.get(name, version)
        return {
            "name": handle.name,
            "versions": [h.version for h in self.registry.versions(handle.name)],
            "platform": "pytorch",
            "inputs": handle.signature.inputs,
            "outputs": handle.signature.outputs,
        }

    # inference -------------------------------------------------------------------------------
    async def _admit(self, handle: ModelHandle, batcher: Batcher, rows: int) -> None:
        """Refuse while draining; while a worker is on its way (restart, load), wait for it up
        to the model's response timeout rather than fail at once, holding the request's places
        in the queue meanwhile (so waiting requests are bounded by ``jobQueueSize`` too)."""
        if self.draining:
            raise ServiceUnavailable("The server is shutting down", headers={"Retry-After": "1"})
        pool = handle.pool
        batcher.hold(rows)
        try:
            live = await pool.wait_live(pool.config.response_timeout_s, lambda: self.draining)
        finally:
            batcher.release(rows)
        if not live or self.draining:
            raise ServiceUnavailable(
                f"Model {handle.name} is not ready: no live worker", headers={"Retry-After": "1"}
            )

    async def run_jobs(self, handle: ModelHandle, jobs: Sequence[Job], verb: str) -> list[Any]:
        """Queue every job on the model's batcher and return the handler's values in order."""
        batcher = handle.batcher(verb)
        if self.draining or not handle.ready:
            await self._admit(handle, batcher, len(jobs))
        futures = batcher.submit_all(jobs)
        try:
            results = await asyncio.gather(*futures)
        except BaseException:
            batcher.withdraw(futures)
            raise
        return [_value_of(result) for result in results]

    async def predict_one(
        self,
        name: str,
        version: str | None,
        data: dict[str, Any],
        headers: Mapping[str, str],
        *,
        verb: str = "predict",
        request_id: str | None = None,
    ) -> ItemResult:
        """TorchServe's ``/predictions``: one request, one handler row, the raw item result."""
        handle = self.registry.get(name, version)
        job = Job(data, request_id or new_request_id(), dict(headers))
        batcher = handle.batcher(verb)
        if self.draining or not handle.ready:
            await self._admit(handle, batcher, 1)
        future = batcher.submit(job)
        try:
            result = await future
        except BaseException:
            batcher.withdraw((future,))
            raise
        if result.status >= 400:
            raise from_http_status(result.message or "Prediction failed", result.status)
        return result

    async def v1(
        self,
        name: str,
        version: str | None,
        instances: list[Any],
        headers: Mapping[str, str],
        *,
        verb: str = "predict",
    ) -> list[Any]:
        """KServe v1: one handler row per instance (a static batch), one value per instance."""
        handle = self.registry.get(name, version)
        plain = dict(headers)
        jobs = [Job(_row(instance), new_request_id(), plain) for instance in instances]
        return await self.run_jobs(handle, jobs, verb)

    async def infer(
        self, request: InferRequest, headers: Mapping[str, str], *, verb: str = "predict"
    ) -> InferResponse:
        """Open Inference Protocol v2: BYTES elements and other tensors become handler rows."""
        handle, values = await self.infer_values(request, headers, verb=verb)
        if verb == "explain":
            outputs = _explain_outputs(values)
        else:
            outputs = [_tensor_of(PREDICT_OUTPUT if verb == "predict" else verb, values)]
            handle.signature.observe(request.inputs, outputs)
        return InferResponse(
            model_name=handle.name,
            model_version=handle.version,
            id=request.id or new_request_id(),
            outputs=outputs,
        )

    async def infer_values(
        self, request: InferRequest, headers: Mapping[str, str], *, verb: str = "predict"
    ) -> tuple[ModelHandle, list[Any]]:
        """The handler's value for each row of a v2 request (see :func:`request_rows`).

        Explain rows also carry the request's ``parameters`` (``target``, ``n_steps``, ...) as
        their own keys, the way a v1 instance carries them; ``data`` and ``body`` stay the input.
        """
        handle = self.registry.get(request.model_name, request.model_version)
        plain = dict(headers)
        extra = {}
        if verb == "explain":
            extra = {k: v for k, v in request.parameters.items() if k not in ("data", "body")}
        rows = request_rows(request)
        jobs = [Job({**extra, "data": value}, new_request_id(), plain) for value in rows]
        return handle, await self.run_jobs(handle, jobs, verb)


def _value_of(result: ItemResult) -> Any:
    if result.status >= 400:
        raise from_http_status(result.message or "Prediction failed", result.status)
    return result.value


def _row(instance: Any) -> dict[str, Any]:
    """TorchServe's KServe envelope hands a dict instance to the handler as the row itself."""
    if isinstance(instance, dict):
        return instance
    return {"data": instance}


def request_rows(request: InferRequest) -> list[Any]:
    """A v2 request's handler inputs: each BYTES element, and each other tensor, is one row."""
    return _rows(request.inputs)


def _rows(inputs: Sequence[Tensor]) -> list[Any]:
    rows: list[Any] = []
    for tensor in inputs:
        if tensor.datatype == "BYTES":
            from_json = "binary_data_size" not in tensor.parameters
            for element in tensor.data.reshape(-1):
                rows.append(_text_or_bytes(element) if from_json else element)
        else:
            rows.append(tensor.data)
    return rows


def _text_or_bytes(element: Any) -> Any:
    """JSON BYTES elements reach handlers as ``str`` (base64 images, text), as TorchServe does."""
    if isinstance(element, bytes):
        try:
            return element.decode("utf-8")
        except UnicodeDecodeError:
            return element
    return element


def _tensor_of(name: str, values: list[Any]) -> Tensor:
    """One output tensor from per-row values: numeric when they stack, else BYTES of JSON."""
    try:
        array = np.asarray(values)
    except (ValueError, TypeError):
        array = np.asarray([], dtype=object)
    if (array.dtype.kind in "biuf" and array.size > 0) or (array.size == 0 and not values):
        if array.dtype.kind == "i" and array.dtype.itemsize < 8:
            array = array.astype(np.int64)
        return Tensor.from_array(name, array)
    try:
        encoded = [_bytes_element(v) for v in values]
    except TypeError as exc:
        raise MarserveError("Invalid handler output: a result is not serializable") from exc
    data = np.empty(len(encoded), dtype=object)
    data[:] = encoded
    return Tensor(name=name, datatype="BYTES", shape=(len(encoded),), data=data)


def _bytes_element(value: Any) -> bytes:
    """One BYTES output element: bytes as given, text as its UTF-8 (a label stays itself, as in
    TorchServe's v2 envelope), anything else as JSON."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def _explain_outputs(values: list[Any]) -> list[Tensor]:
    """v2 explain outputs: ``explain`` (FP64) and, when asked for, ``convergence_delta``.

    One row's attributions keep that row's shape (the seeds' ``[1, 28, 28]`` for one MNIST
    image); N rows stack to ``[N, ...]``. Rows whose values are not numeric maps of one shape
    fall back to BYTES of JSON, as predictions do.
    """
    deltas: list[Any] = []
    maps = values
    if values and all(isinstance(v, dict) and "attributions" in v for v in values):
        maps = [v["attributions"] for v in values]
        deltas = [v.get("convergence_delta") for v in values]
    try:
        array = np.asarray(maps)
    except (ValueError, TypeError):
        return [_tensor_of(EXPLAIN_OUTPUT, values)]
    if array.dtype.kind not in "biuf" or array.ndim == 0 or array.shape[0] != len(values):
        return [_tensor_of(EXPLAIN_OUTPUT, values)]
    array = array.astype(np.float64, copy=False)
    outputs = [Tensor.from_array(EXPLAIN_OUTPUT, array[0] if len(values) == 1 else array)]
    if deltas and all(isinstance(d, (int, float)) for d in deltas):
        outputs.append(Tensor.from_array(DELTA_OUTPUT, np.asarray(deltas, dtype=np.float64)))
    return outputs
