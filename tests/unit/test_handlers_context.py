"""Context: TorchServe's attributes, per-item request headers and per-item response state."""

from __future__ import annotations

import pytest

from marserve.handlers import Context


def make_context(**kwargs: object) -> Context:
    args: dict[str, object] = {
        "model_name": "mnist",
        "model_dir": "/models/mnist",
        "manifest": {"model": {"modelName": "mnist", "handler": "h.py"}},
        "batch_size": 4,
        "gpu": None,
        "mms_version": "0.1.0",
    }
    args.update(kwargs)
    return Context(**args)  # type: ignore[arg-type]


def test_system_properties_match_torchserve() -> None:
    ctx = make_context(gpu=1, limit_max_image_pixels=False)
    assert ctx.model_name == "mnist"
    assert ctx.manifest["model"]["handler"] == "h.py"
    assert ctx.system_properties == {
        "model_dir": "/models/mnist",
        "gpu_id": 1,
        "batch_size": 4,
        "server_name": "MMS",
        "server_version": "0.1.0",
        "limit_max_image_pixels": False,
    }
    assert ctx.metrics is None
    assert ctx.model_yaml_config == {}
    assert make_context(model_yaml_config={"handler": {"k": 1}}).model_yaml_config == {
        "handler": {"k": 1}
    }


def test_outside_a_batch_there_are_no_items() -> None:
    ctx = make_context()
    assert ctx.request_ids is None
    assert ctx.request_processor is None
    assert ctx.get_request_id(0) is None
    ctx.set_response_status(500, "ignored", 0)  # a no-op, as in TorchServe
    with pytest.raises(IndexError):
        ctx.get_request_header(0, "x")


def test_headers_and_ids_are_per_item_and_case_insensitive() -> None:
    ctx = make_context()
    ctx.begin_batch(
        ["id-a", "id-b"],
        [{"Content-Type": "image/png", "X-Trace": "1"}, {"explain": "True"}],
    )
    assert ctx.request_ids == {0: "id-a", 1: "id-b"}
    assert ctx.get_request_id() == "id-a"
    assert ctx.get_request_id(1) == "id-b"
    assert ctx.get_request_header(0, "content-type") == "image/png"
    assert ctx.get_request_header(0, "X-TRACE") == "1"
    assert ctx.get_request_header(0, "explain") is None
    assert ctx.get_request_header(1, "explain") == "True"
    assert ctx.get_all_request_header(0) == {"content-type": "image/png", "x-trace": "1"}
    assert ctx.request_processor is not None and len(ctx.request_processor) == 2
    with pytest.raises(IndexError):
        ctx.get_request_header(2, "explain")


def test_response_status_headers_and_content_type_per_item() -> None:
    ctx = make_context()
    ctx.begin_batch(["a", "b", "c"], [{}, {}, {}])
    assert ctx.get_response_status(0) == (200, None)
    ctx.set_response_status(code=404, phrase="no such digit", idx=1)
    ctx.set_response_content_type(2, "text/plain")
    ctx.set_response_header(2, "X-Model", "mnist")
    assert ctx.get_response_status(1) == (404, "no such digit")
    assert ctx.get_response_status(0) == (200, None)
    assert ctx.get_response_content_type(2) == "text/plain"
    assert ctx.get_response_content_type(0) is None
    assert ctx.get_response_headers(2) == {"content-type": "text/plain", "x-model": "mnist"}
    assert ctx.get_response_headers(1) == {}
    ctx.set_all_response_status(503, "busy")
    assert [ctx.get_response_status(i) for i in range(3)] == [(503, "busy")] * 3


def test_set_response_status_defaults_to_first_item() -> None:
    ctx = make_context()
    ctx.begin_batch(["a", "b"], [{}, {}])
    ctx.set_response_status(201)
    assert ctx.get_response_status(0) == (201, "")
    assert ctx.get_response_status(1) == (200, None)


def test_begin_batch_resets_per_item_state() -> None:
    ctx = make_context()
    ctx.begin_batch(["a", "b"], [{"k": "1"}, {"k": "2"}])
    ctx.set_all_response_status(500, "boom")
    ctx.set_response_content_type(0, "application/json")
    ctx.begin_batch(["c"], [{}])
    assert ctx.request_ids == {0: "c"}
    assert ctx.get_response_status(0) == (200, None)
    assert ctx.get_response_headers(0) == {}
    assert ctx.get_request_header(0, "k") is None
    with pytest.raises(IndexError):
        ctx.get_response_status(1)


def test_begin_batch_needs_one_header_dict_per_id() -> None:
    ctx = make_context()
    with pytest.raises(ValueError, match="one header dict per request id"):
        ctx.begin_batch(["a", "b"], [{}])
