"""Workers, batching and faults against a real server: batches, crashes, full queues, timeouts."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import RunningServer, snapshot, start_server, write_config

SECRET_FRAGMENTS = ("Traceback", "/secret/path", 'File "', "marserve.workers")


def _server(tmp: Path, store: Path, **model: object) -> RunningServer:
    extra = {k: v for k, v in model.items() if k == "job_queue_size"}
    params = {k: v for k, v in model.items() if k != "job_queue_size"}
    config = write_config(
        tmp / "config.properties",
        model_snapshot=snapshot({"name": "probe", "marName": "probe.mar", **params}),
        **extra,
    )
    return start_server(tmp, store, config)


@pytest.fixture()
def probe(
    tmp_path: Path, probe_store: Path, request: pytest.FixtureRequest
) -> Iterator[RunningServer]:
    marker = request.node.get_closest_marker("probe_config")
    params = dict(marker.kwargs) if marker else {}
    server = _server(tmp_path, probe_store, **params)
    yield server
    assert server.stop() == 0, server.log()


def post(server: RunningServer, command: dict[str, object], **kwargs: object) -> httpx.Response:
    return server.client.post("/predictions/probe", json=command, **kwargs)  # type: ignore[arg-type]


def assert_clean(body: str) -> None:
    for fragment in SECRET_FRAGMENTS:
        assert fragment not in body


@pytest.mark.probe_config(batchSize=4, maxBatchDelay=200)
def test_concurrent_requests_are_batched(probe: RunningServer) -> None:
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda i: post(probe, {"echo": i}), range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    assert [r.json()["echo"] for r in responses] == list(range(8))
    sizes = [r.json()["batch_size"] for r in responses]
    assert max(sizes) > 1
    assert all(size <= 4 for size in sizes)


def test_request_headers_reach_the_handler(probe: RunningServer) -> None:
    response = post(probe, {}, headers={"x-probe": "hello"})
    assert response.json()["header"] == "hello"


def test_handler_chosen_status_is_returned(probe: RunningServer) -> None:
    response = post(probe, {"status": 202})
    assert response.status_code == 202


def test_prediction_exception_keeps_its_code_and_message(probe: RunningServer) -> None:
    response = post(probe, {"prediction_exception": True})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == 422 and "refuses" in body["message"]
    assert post(probe, {}).status_code == 200


def test_handler_error_is_a_clean_500_and_the_worker_survives(probe: RunningServer) -> None:
    pid_before = post(probe, {}).json()["pid"]
    response = post(probe, {"raise": True})
    assert response.status_code == 500
    assert set(response.json()) == {"code", "type", "message"}
    assert_clean(response.text)
    assert "ValueError" in response.json()["message"]
    after = post(probe, {})
    assert after.status_code == 200 and after.json()["pid"] == pid_before


def test_wrong_number_of_results_is_a_clear_500(probe: RunningServer) -> None:
    response = post(probe, {"wrong_length": True})
    assert response.status_code == 500
    assert "Invalid handler output" in response.json()["message"]
    assert post(probe, {}).status_code == 200


def test_v1_and_v2_errors_use_the_kserve_body(probe: RunningServer) -> None:
    response = probe.client.post(
        "/v1/models/probe:predict", json={"instances": [{"data": {"raise": True}}]}
    )
    assert response.status_code == 500
    assert list(response.json()) == ["error"]
    assert_clean(response.text)


def _wait_for(condition: object, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_killed_worker_fails_only_its_request_and_is_restarted(probe: RunningServer) -> None:
    old_pid = post(probe, {}).json()["pid"]
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(post, probe, {"sleep": 5})
        time.sleep(0.5)
        started = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)
        response = in_flight.result()
        assert time.monotonic() - started < 2.0
    assert response.status_code == 500
    assert "worker" in response.json()["message"].lower()

    def recovered() -> bool:
        reply = post(probe, {})
        return reply.status_code == 200 and reply.json()["pid"] != old_pid

    _wait_for(recovered)
    assert probe.client.get("/ping").status_code == 200


def test_worker_exiting_inside_the_handler_is_recovered(probe: RunningServer) -> None:
    response = post(probe, {"exit": True})
    assert response.status_code == 500
    _wait_for(lambda: post(probe, {}).status_code == 200)


@pytest.mark.probe_config(job_queue_size=2)
def test_full_queue_answers_503_at_once(probe: RunningServer) -> None:
    with ThreadPoolExecutor(12) as pool:
        busy = pool.submit(post, probe, {"sleep": 2})
        time.sleep(0.3)
        started = time.monotonic()
        burst = list(pool.map(lambda _: post(probe, {"sleep": 0.1}), range(10)))
        codes = [r.status_code for r in burst]
        assert busy.result().status_code == 200
    rejected = [r for r in burst if r.status_code == 503]
    assert rejected, codes
    assert all(r.headers.get("retry-after") for r in rejected)
    assert all(r.status_code in (200, 503) for r in burst)
    assert codes.count(200) >= 2
    assert time.monotonic() - started < 10


@pytest.mark.probe_config(responseTimeout=1)
def test_response_timeout_is_504_and_the_worker_is_replaced(probe: RunningServer) -> None:
    old_pid = post(probe, {}).json()["pid"]
    started = time.monotonic()
    response = post(probe, {"sleep": 10})
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert 0.9 <= elapsed < 3.0
    _wait_for(lambda: post(probe, {}).status_code == 200)
    assert post(probe, {}).json()["pid"] != old_pid


def test_client_disconnect_does_not_kill_the_worker(probe: RunningServer) -> None:
    pid = post(probe, {}).json()["pid"]
    with pytest.raises(httpx.ReadTimeout):
        probe.client.post("/predictions/probe", json={"sleep": 1.0}, timeout=0.2)
    time.sleep(1.2)
    reply = post(probe, {})
    assert reply.status_code == 200 and reply.json()["pid"] == pid


def test_sigterm_drains_in_flight_requests(tmp_path: Path, probe_store: Path) -> None:
    server = _server(tmp_path, probe_store)
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(post, server, {"sleep": 1.0})
        time.sleep(0.3)
        os.kill(server.pid, signal.SIGTERM)
        assert in_flight.result().status_code == 200
    assert server.process.wait(30) == 0
    assert server.stop() == 0


def test_the_handler_sees_the_request_id_the_access_log_writes(probe: RunningServer) -> None:
    reply = post(probe, {}, headers={"x-request-id": "trace-42"})
    assert reply.json()["request_id"] == "trace-42"
    generated = post(probe, {}).json()["request_id"]
    assert generated and generated != "trace-42"


@pytest.mark.parametrize(("binary", "kind"), [(False, "str"), (True, "bytes")])
def test_bytes_elements_reach_handlers_as_text_or_bytes(
    probe: RunningServer, binary: bool, kind: str
) -> None:
    """JSON BYTES are text to the handler (as TorchServe's envelope); binary ones stay bytes."""
    import json

    import numpy as np
    import tritonclient.http as triton

    infer_input = triton.InferInput("input-0", [1], "BYTES")
    infer_input.set_data_from_numpy(np.array([b"aGVsbG8="], dtype=object), binary_data=binary)
    client = triton.InferenceServerClient(probe.url.removeprefix("http://"))
    try:
        result = client.infer("probe", [infer_input])
    finally:
        client.close()
    [answer] = result.as_numpy("predict").tolist()
    assert json.loads(answer)["kind"] == kind
