"""The per-model ``Context`` handed to handlers, with TorchServe's attributes and per-item state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class RequestProcessor:
    """One batch item's request headers and the response status and headers a handler sets.

    Header names are case-insensitive: they are stored and looked up in lower case.
    """

    def __init__(self, request_header: Mapping[str, str] | None = None) -> None:
        self._request_header: dict[str, str] = {
            str(k).lower(): v for k, v in (request_header or {}).items()
        }
        self._status_code = 200
        self._reason_phrase: str | None = None
        self._response_header: dict[str, str] = {}

    def get_request_property(self, key: str) -> str | None:
        return self._request_header.get(key.lower())

    def get_request_properties(self) -> dict[str, str]:
        return self._request_header

    def report_status(self, code: int, reason_phrase: str | None = None) -> None:
        self._status_code = code
        self._reason_phrase = reason_phrase

    def get_response_status_code(self) -> int:
        return self._status_code

    def get_response_status_phrase(self) -> str | None:
        return self._reason_phrase

    def add_response_property(self, key: str, value: str) -> None:
        self._response_header[key.lower()] = value

    def get_response_headers(self) -> dict[str, str]:
        return self._response_header

    def get_response_header(self, key: str) -> str | None:
        return self._response_header.get(key.lower())


class Context:
    """What a handler knows about its model and about the batch being served.

    The constructor and public methods match TorchServe's ``ts.context.Context``. The server
    calls :meth:`begin_batch` before each batch so that per-item state never leaks between
    batches.
    """

    def __init__(
        self,
        model_name: str,
        model_dir: str,
        manifest: dict[str, Any],
        batch_size: int,
        gpu: int | None,
        mms_version: str,
        limit_max_image_pixels: bool = True,
        metrics: Any = None,
        model_yaml_config: dict[str, Any] | None = None,
    ) -> None:
        self.model_name = model_name
        self.manifest = manifest
        self._system_properties: dict[str, Any] = {
            "model_dir": model_dir,
            "gpu_id": gpu,
            "batch_size": batch_size,
            "server_name": "MMS",
            "server_version": mms_version,
            "limit_max_image_pixels": limit_max_image_pixels,
        }
        # TorchServe keeps request ids as {batch index: request id}.
        self.request_ids: dict[int, str] | None = None
        self._request_processor: list[RequestProcessor] | None = None
        self._metrics = metrics
        self._limit_max_image_pixels = limit_max_image_pixels
        self.model_yaml_config: dict[str, Any] = model_yaml_config or {}

    @property
    def system_properties(self) -> dict[str, Any]:
        return self._system_properties

    @property
    def request_processor(self) -> list[RequestProcessor] | None:
        return self._request_processor

    @request_processor.setter
    def request_processor(self, request_processor: list[RequestProcessor] | None) -> None:
        self._request_processor = request_processor

    @property
    def metrics(self) -> Any:
        return self._metrics

    @metrics.setter
    def metrics(self, metrics: Any) -> None:
        self._metrics = metrics

    def begin_batch(self, request_ids: list[str], headers: list[dict[str, str]]) -> None:
        """Reset per-item state for a new batch: one request id and one header dict per item."""
        if len(request_ids) != len(headers):
            raise ValueError(
                f"begin_batch needs one header dict per request id "
                f"({len(request_ids)} ids, {len(headers)} header dicts)"
            )
        self.request_ids = dict(enumerate(request_ids))
        self._request_processor = [RequestProcessor(h) for h in headers]

    def _processor(self, idx: int) -> RequestProcessor:
        processors = self._request_processor
        if processors is None or not 0 <= idx < len(processors):
            raise IndexError(f"no request at batch index {idx}")
        return processors[idx]

    def get_request_id(self, idx: int = 0) -> str | None:
        return None if self.request_ids is None else self.request_ids.get(idx)

    def get_request_header(self, idx: int, key: str) -> str | None:
        return self._processor(idx).get_request_property(key)

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return self._processor(idx).get_request_properties()

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.set_response_header(idx, "content-type", value)

    def get_response_content_type(self, idx: int) -> str | None:
        return self.get_response_headers(idx).get("content-type")

    def get_response_status(self, idx: int) -> tuple[int, str | None]:
        processor = self._processor(idx)
        return processor.get_response_status_code(), processor.get_response_status_phrase()

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        """Set one item's status; a no-op outside a batch, as in TorchServe."""
        if self._request_processor is not None:
            self._processor(idx).report_status(code, phrase)

    def set_all_response_status(self, code: int = 200, phrase: str = "") -> None:
        for processor in self._request_processor or []:
            processor.report_status(code, phrase)

    def get_response_headers(self, idx: int) -> dict[str, str]:
        return self._processor(idx).get_response_headers()

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self._processor(idx).add_response_property(key, value)
