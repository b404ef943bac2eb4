"""Controller: real server, token auth, ingress Service, isvc verbs, operators run."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import httpx
import yaml

from marserve.controlplane.config import ControllerConfig
from marserve.controlplane.controller import run_controller
from marserve.controlplane.store import Store

BASE = "/apis/serving.kserve.io/v1beta1/namespaces/default/inferenceservices"


def test_controller_serves_api_and_runs_operators(tmp_path: Path) -> None:
    config = ControllerConfig(home=tmp_path, port=0, gateway_port=0)
    seen: list[int] = []

    async def operator(store: Store, cfg: ControllerConfig) -> None:
        seen.append(cfg.gateway_port)
        store.create("pods", {"metadata": {"name": "p1", "namespace": "default"}})
        (cfg.pods_dir / "default" / "p1").mkdir(parents=True)
        (cfg.pods_dir / "default" / "p1" / "kserve-container.log").write_bytes(b"a\nb\n")
        await asyncio.Event().wait()

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_controller(config, [operator], stop))
        kube = tmp_path / "kubeconfig"
        for _ in range(200):
            if kube.exists():
                break
            await asyncio.sleep(0.05)
        assert oct(kube.stat().st_mode & 0o777) == "0o600"
        server = yaml.safe_load(kube.read_text())["clusters"][0]["cluster"]["server"]
        headers = {"Authorization": f"Bearer {config.token}"}
        ca = ssl.create_default_context(cafile=str(tmp_path / "apiserver.crt"))
        async with httpx.AsyncClient(base_url=server, headers=headers, timeout=5, verify=ca) as c:
            for _ in range(200):
                try:
                    if (await c.get("/version")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            assert (
                await c.get("/version", headers={"Authorization": "Bearer nope"})
            ).status_code == 401
            svc = (
                await c.get("/api/v1/namespaces/istio-system/services/istio-ingressgateway")
            ).json()
            assert svc["spec"]["ports"][0] == {
                "name": "http2",
                "port": config.gateway_port,
                "protocol": "TCP",
                "targetPort": config.gateway_port,
            }
            assert svc["status"]["loadBalancer"]["ingress"][0]["ip"] == "127.0.0.1"
            body = {
                "apiVersion": "serving.kserve.io/v1beta1",
                "kind": "InferenceService",
                "metadata": {"name": "torchserve"},
                "spec": {"predictor": {"pytorch": {"storageUri": "gs://x"}}},
            }
            created = await c.post(BASE, json=body)
            assert created.status_code == 201
            assert created.json()["spec"]["predictor"]["model"]["modelFormat"] == {
                "name": "pytorch"
            }
            bad = await c.post(BASE, json={**body, "metadata": {"name": "Bad_Name"}})
            assert bad.status_code == 422 and bad.json()["reason"] == "Invalid"
            dup = await c.post(BASE, json=body)
            assert dup.status_code == 409
            obj = created.json()
            obj["status"] = {"url": "http://torchserve.default.example.com"}
            put = await c.put(f"{BASE}/torchserve/status", json=obj)
            assert put.status_code == 200 and put.json()["status"]["url"].endswith("example.com")
            listed = (await c.get(BASE)).json()
            assert [i["metadata"]["name"] for i in listed["items"]] == ["torchserve"]
            assert (await c.get(f"{BASE}/missing")).status_code == 404
            assert (await c.post(BASE, content=b"{not json")).status_code == 400
            log = await c.get("/api/v1/namespaces/default/pods/p1/log?tailLines=1")
            assert log.status_code == 200 and log.content == b"b\n"
            pods = (await c.get("/api/v1/namespaces/default/pods")).json()
            assert [p["metadata"]["name"] for p in pods["items"]] == ["p1"]
            assert (await c.get("/api/v1/namespaces/default/pods/nope/log")).status_code == 404
        assert seen == [config.gateway_port]
        stop.set()
        await task

    asyncio.run(asyncio.wait_for(main(), 30))
