"""gRPC listeners across a server's life: TLS, draining on SIGTERM, a port already taken."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from marserve.grpc.protos import management_pb2, management_pb2_grpc
from tests.e2e.server import snapshot, start_server, write_config
from tests.e2e.test_grpc_probe import build_probe_store, v2_answers, v2_request


def test_grpc_over_tls(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    store = tmp_path / "store"
    store.mkdir()
    config = write_config(
        tmp_path / "config.properties",
        enable_grpc_ssl="true",
        private_key_file=key,
        certificate_file=cert,
    )
    server = start_server(tmp_path, store, config)
    try:
        assert server.urls["grpc_inference"].startswith("https://")
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(server.grpc_target(), credentials) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerLive(service_pb2.ServerLiveRequest()).live
        with grpc.insecure_channel(server.grpc_target()) as plain:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(plain)
            with pytest.raises(grpc.RpcError) as caught:
                stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=5)
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        assert server.stop() == 0, server.log()


def test_sigterm_lets_in_flight_calls_finish(tmp_path: Path) -> None:
    store = build_probe_store(tmp_path)
    config = write_config(
        tmp_path / "config.properties",
        model_snapshot=snapshot({"name": "probe", "marName": "probe.mar"}),
    )
    server = start_server(tmp_path, store, config)
    with grpc.insecure_channel(server.grpc_target()) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert v2_answers(stub.ModelInfer(v2_request({"echo": 0})))[0]["echo"] == 0
        slow = stub.ModelInfer.future(v2_request({"sleep": 1.5, "echo": "slow"}))
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        assert v2_answers(slow.result(timeout=30))[0]["echo"] == "slow"
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(v2_request({"echo": "late"}), timeout=10)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    server.client.close()
    assert server.process.wait(30) == 0, server.log()


def test_a_grpc_port_in_use_stops_the_server_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "config.properties")
        config.write_text(config.read_text() + f"grpc_inference_port={port}\n")
        with pytest.raises(RuntimeError, match="did not start") as caught:
            start_server(tmp_path, tmp_path, config)
    assert f"cannot listen for gRPC on 127.0.0.1:{port}" in str(caught.value)


def test_one_port_for_both_grpc_apis(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = write_config(tmp_path / "config.properties")
    text = config.read_text().replace("grpc_inference_port=0", f"grpc_inference_port={port}")
    config.write_text(text.replace("grpc_management_port=0", f"grpc_management_port={port}"))
    store = tmp_path / "store"
    store.mkdir()
    server = start_server(tmp_path, store, config)
    try:
        assert server.grpc_target() == server.grpc_target("management") == f"127.0.0.1:{port}"
        with grpc.insecure_channel(server.grpc_target()) as channel:
            live = service_pb2_grpc.GRPCInferenceServiceStub(channel).ServerLive
            assert live(service_pb2.ServerLiveRequest()).live
            listing = management_pb2_grpc.ManagementAPIsServiceStub(channel).ListModels
            assert listing(management_pb2.ListModelsRequest()).msg.startswith("{")
    finally:
        assert server.stop() == 0, server.log()
