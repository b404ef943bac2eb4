"""TorchServe's customized model metadata: a handler's ``describe_handle()``, asked of a worker."""

from __future__ import annotations

from marserve.errors import ServiceUnavailable, from_http_status
from marserve.ids import new_request_id
from marserve.protocol.jsonbody import encode_json
from marserve.registry import Job, ModelHandle

VERB = "describe"  # the batch verb workers answer with describe_handle()


async def customized_metadata(handle: ModelHandle) -> str | None:
    """What the handler's ``describe_handle()`` returns (a string; other values as JSON), or
    None when it has none; queued like a request, so it waits for a free worker."""
    if not handle.ready:
        raise ServiceUnavailable(
            f"Model {handle.name} has no live worker to describe it", headers={"Retry-After": "1"}
        )
    result = await handle.batcher(VERB).submit(Job({}, new_request_id(), {}))
    if result.status >= 400:
        raise from_http_status(result.message or "describe_handle failed", result.status)
    value = result.value
    if value is None or isinstance(value, str):
        return value
    return encode_json(value).decode()
