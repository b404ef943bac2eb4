"""The gateway as a controller operator: it listens on the port the Service publishes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from marserve.controlplane.config import ControllerConfig
from marserve.controlplane.controller import run_controller
from marserve.controlplane.gateway import Gateway, operator, settings_for


def test_gateway_operator_listens_on_the_gateway_port(tmp_path: Path) -> None:
    config = ControllerConfig(home=tmp_path, port=0, gateway_port=0, gateway_token="t0k")
    gateway = Gateway(settings_for(config))

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_controller(config, [operator(gateway)], stop))
        async with httpx.AsyncClient(timeout=5) as client:
            for _ in range(200):
                if gateway.port:
                    break
                await asyncio.sleep(0.05)
            assert gateway.port == config.gateway_port
            url = f"http://127.0.0.1:{config.gateway_port}"
            assert (await client.get(f"{url}/healthz")).status_code == 401
            auth = {"Authorization": "Bearer t0k"}
            assert (await client.get(f"{url}/healthz", headers=auth)).json() == {"status": "ok"}
            unknown = await client.get(f"{url}/", headers={"Host": "x.default.example.com", **auth})
            assert unknown.status_code == 404
        stop.set()
        await asyncio.wait_for(task, 30)
        assert gateway._server is None  # stopped with the controller

    asyncio.run(main())
