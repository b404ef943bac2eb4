"""The OpenAPI description that TorchServe answers on ``OPTIONS /``."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from marserve import __version__

# (method, path, summary) for every inference-side endpoint marserve serves.
ENDPOINTS: tuple[tuple[str, str, str], ...] = (
    ("options", "/", "This API description."),
    ("get", "/", 'KServe liveness: {"status": "alive"}.'),
    ("get", "/ping", "Health: Healthy when every model has a live worker."),
    ("post", "/predictions/{model_name}", "Predict with the default version of a model."),
    ("post", "/predictions/{model_name}/{model_version}", "Predict with a model version."),
    ("post", "/explanations/{model_name}", "Explain a prediction of a model."),
    ("get", "/v1/models", "KServe v1: list models."),
    ("get", "/v1/models/{model_name}", "KServe v1: model readiness."),
    ("post", "/v1/models/{model_name}:predict", "KServe v1: predict."),
    ("post", "/v1/models/{model_name}:explain", "KServe v1: explain."),
    ("get", "/v2", "Open Inference Protocol: server metadata."),
    ("get", "/v2/health/live", "Open Inference Protocol: liveness."),
    ("get", "/v2/health/ready", "Open Inference Protocol: readiness."),
    ("get", "/v2/models", "KServe v2: list models."),
    ("get", "/v2/models/{model_name}", "Open Inference Protocol: model metadata."),
    ("get", "/v2/models/{model_name}/ready", "Open Inference Protocol: model readiness."),
    ("post", "/v2/models/{model_name}/infer", "Open Inference Protocol: inference."),
    ("post", "/v2/models/{model_name}/explain", "Open Inference Protocol: explanation."),
    ("post", "/v2/models/{model_name}/versions/{model_version}/infer", "Versioned inference."),
)


def _parameters(path: str) -> list[dict[str, Any]]:
    names = [part[1:-1] for part in path.replace(":", "/").split("/") if part.startswith("{")]
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in names
    ]


# The metrics listener's own description (TorchServe answers ``OPTIONS /`` there too).
METRICS_ENDPOINTS: tuple[tuple[str, str, str], ...] = (
    ("get", "/metrics", "Prometheus metrics; ?name[]= keeps only the named metrics."),
)


@lru_cache(maxsize=4)
def openapi_document(
    endpoints: tuple[tuple[str, str, str], ...] = ENDPOINTS, title: str = "marserve inference API"
) -> bytes:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary in endpoints:
        paths.setdefault(path, {})[method] = {
            "summary": summary,
            "parameters": _parameters(path),
            "responses": {"200": {"description": "OK"}},
        }
    document = {
        "openapi": "3.0.1",
        "info": {"title": title, "version": __version__},
        "paths": paths,
    }
    return orjson.dumps(document)


async def openapi_response(request: Request) -> Response:
    return Response(openapi_document(), media_type="application/json")


async def metrics_openapi_response(request: Request) -> Response:
    document = openapi_document(METRICS_ENDPOINTS, "marserve metrics API")
    return Response(document, media_type="application/json")
