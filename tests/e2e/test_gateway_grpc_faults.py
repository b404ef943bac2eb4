"""gRPC through the gateway when the replica dies mid-call: that call fails, the gateway lives."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from marserve.controlplane.routing import Endpoint
from tests.e2e.gateway.harness import GatewayThread, Upstream, service

UPSTREAM = Path(__file__).resolve().parent / "gateway" / "grpc_upstream.py"
AUTHORITY = "g.default.example.com"
REVISION = ("default", "g-predictor-00001")


def start_grpc_upstream() -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen([sys.executable, str(UPSTREAM)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, int(process.stdout.readline())


def test_replica_killed_mid_call_is_unavailable_and_the_next_call_works() -> None:
    gw = GatewayThread()
    doomed, doomed_port = start_grpc_upstream()
    healthy, healthy_port = start_grpc_upstream()
    rest = Upstream("rest")  # a REST port the route needs; gRPC goes to grpc_port
    try:
        gw.update(
            [
                service(
                    "g",
                    [
                        (
                            "g-predictor-00001",
                            100,
                            [Endpoint("127.0.0.1", rest.port, doomed_port)],
                            None,
                        )
                    ],
                    protocol="grpc",
                )
            ]
        )
        options = [("grpc.default_authority", AUTHORITY)]
        with grpc.insecure_channel(gw.address, options=options) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=30).live
            errors: list[grpc.RpcError] = []

            def call() -> None:
                try:
                    stub.ModelInfer(service_pb2.ModelInferRequest(model_name="m"), timeout=60)
                except grpc.RpcError as error:
                    errors.append(error)

            caller = threading.Thread(target=call)
            caller.start()
            deadline = time.monotonic() + 20
            while gw.gateway.stats()[REVISION].in_flight < 1:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            time.sleep(0.2)
            doomed.kill()
            caller.join(30)
            assert errors and errors[0].code() == grpc.StatusCode.UNAVAILABLE, errors
            endpoint = Endpoint("127.0.0.1", rest.port, healthy_port)
            gw.update(
                [service("g", [("g-predictor-00001", 100, [endpoint], None)], protocol="grpc")]
            )
            assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=30).live
    finally:
        for process in (doomed, healthy):
            process.kill()
            process.wait(10)
            if process.stdout is not None:
                process.stdout.close()
        rest.stop()
        gw.close()


@pytest.mark.parametrize("authority", [AUTHORITY])
def test_no_ready_replica_is_unavailable_over_grpc(authority: str) -> None:
    gw = GatewayThread()
    try:
        gw.update([service("g", [("g-predictor-00001", 100, [], None)], protocol="grpc")])
        with grpc.insecure_channel(
            gw.address, options=[("grpc.default_authority", authority)]
        ) as ch:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
            with pytest.raises(grpc.RpcError) as caught:
                stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "has no ready replica" in (caught.value.details() or "")
    finally:
        gw.close()
