"""DirectRoutes: the inference verbs skip Starlette's router but answer exactly as it would."""

from __future__ import annotations

import asyncio

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from marserve.errors import ModelNotFound
from marserve.rest.app import DirectRoutes, application
from marserve.rest.errors import ERROR_KEY


async def _echo(request: Request) -> Response:
    """Says which path parameters it got, and whether Starlette's router saw the request."""
    params = ",".join(f"{k}={v}" for k, v in sorted(request.path_params.items()))
    routed = "router" if "router" in request.scope else "direct"
    return Response(f"{routed} {params}", headers={"x-seen": request.headers.get("x-seen", "")})


async def _missing(request: Request) -> Response:
    raise ModelNotFound(f"Model not found: {request.path_params['name']}")


async def _broken(request: Request) -> Response:
    raise RuntimeError("a bug")


async def _ping(request: Request) -> Response:
    return Response("pong")


ROUTES = [
    Route("/ping", _ping, methods=["GET", "POST"]),
    Route("/predictions/{model}", _echo, methods=["POST", "PUT"]),
    Route("/predictions/{model}/{version}", _echo, methods=["POST", "PUT"]),
    Route("/v2/models/{name}/infer", _missing, methods=["POST"]),
    Route("/v2/models/{name}", _echo, methods=["GET"]),
    Route("/explanations/{model}", _broken, methods=["POST"]),
]


def _call(method: str, path: str, **kwargs: object) -> httpx.Response:
    app = application(ROUTES)
    assert isinstance(app, DirectRoutes)

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(method, path, **kwargs)  # type: ignore[arg-type]

    return asyncio.run(go())


def test_only_the_inference_verbs_are_direct() -> None:
    app = application(ROUTES)
    assert isinstance(app, DirectRoutes)
    direct = {endpoint for _, _, _, endpoint in app.routes}
    assert direct == {_echo, _missing, _broken}
    assert len(app.routes) == 4  # not /ping (not an inference path), not GET /v2/models/{name}


def test_a_prediction_reaches_its_endpoint_with_its_path_parameters() -> None:
    answer = _call("POST", "/predictions/mnist", content=b"x", headers={"x-seen": "yes"})
    assert (answer.status_code, answer.text) == (200, "direct model=mnist")
    assert answer.headers["x-seen"] == "yes"
    versioned = _call("PUT", "/predictions/mnist/2.0", content=b"x")
    assert versioned.text == "direct model=mnist,version=2.0"


def test_other_requests_go_through_the_router() -> None:
    assert _call("POST", "/ping").text == "pong"
    assert _call("GET", "/v2/models/mnist").text == "router name=mnist"


def test_a_wrong_method_is_the_routers_405_and_an_unknown_path_its_404() -> None:
    wrong = _call("GET", "/predictions/mnist")
    assert wrong.status_code == 405
    assert wrong.json()["message"].startswith("Requested method is not allowed")
    assert _call("POST", "/predictions/a/b/c").status_code == 404


def test_errors_come_from_the_same_table_as_the_routers() -> None:
    missing = _call("POST", "/v2/models/nope/infer", json={})
    assert missing.status_code == 404
    assert missing.json() == {"error": "Model not found: nope"}  # KServe's error body
    broken = _call("POST", "/explanations/mnist", content=b"x")
    assert broken.status_code == 500
    assert broken.json() == {
        "code": 500,
        "type": "InternalServerException",
        "message": "Internal server error",
    }


def test_the_error_is_left_in_the_scope_for_the_metrics_observer() -> None:
    seen: list[object] = []
    app = application(ROUTES)

    async def observed(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        await app(scope, receive, send)  # type: ignore[arg-type]
        seen.append(scope.get(ERROR_KEY))

    async def go() -> None:
        transport = httpx.ASGITransport(app=observed)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.post("/v2/models/nope/infer", json={})

    asyncio.run(go())
    assert isinstance(seen[0], ModelNotFound)
