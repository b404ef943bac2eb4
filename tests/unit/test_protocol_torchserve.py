"""TorchServe /predictions codec: the handler's input dict per content type, results, errors."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest

from marserve.errors import InternalError, InvalidInput, UnsupportedMediaType
from marserve.protocol import DecodeLimits
from marserve.protocol.torchserve import (
    decode_prediction_body,
    encode_prediction_result,
    encode_ts_error,
)

LIMITS = DecodeLimits()
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


def decode(body: bytes, content_type: str | None, **kwargs: Any) -> dict[str, Any]:
    return decode_prediction_body(body, content_type, limits=LIMITS, **kwargs)


def multipart(**kwargs: Any) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://127.0.0.1/predictions/m", **kwargs)
    return request.read(), request.headers["content-type"]


# --- raw bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        (None, PNG, PNG),  # curl -T 0.png sends no content type
        ("", b"abc", b"abc"),
        ("image/png", PNG, PNG),
        ("application/octet-stream", b"\x00\x01", b"\x00\x01"),
        ("application/json", b'{"instances": [1]}', {"instances": [1]}),
        ("application/json; charset=utf-8", b"[1, 2.5]", [1, 2.5]),
        ("Application/JSON", b'"x"', "x"),
        ("text/plain", "żółw".encode(), "żółw"),
        ("text/csv; charset=utf-8", b"a,b\n1,2", "a,b\n1,2"),
        ("text/plain", b"\xff\xfe", b"\xff\xfe"),  # not UTF-8: raw bytes, as TorchServe
    ],
)
def test_raw_body_becomes_the_body_input(
    content_type: str | None, body: bytes, expected: Any
) -> None:
    assert decode(body, content_type) == {"body": expected}


def test_query_parameters_come_first_as_bytes() -> None:
    inputs = decode(b'{"a": 1}', "application/json", query=[("data", "x"), ("n", "1")])
    assert inputs == {"data": b"x", "n": b"1", "body": {"a": 1}}
    assert list(inputs) == ["data", "n", "body"]


BAD_BODIES: list[tuple[str, bytes, str | None, type[Exception], str]] = [
    ("A1 malformed json", b'{"a": ', "application/json", InvalidInput, "Unrecognized request"),
    ("A1 empty json", b"", "application/json", InvalidInput, "Unrecognized request format"),
    ("A9 deep json", b"[" * 200 + b"]" * 200, "application/json", InvalidInput, "depth exceeds"),
    ("A10 duplicate", b'{"a": 1, "a": 2}', "application/json", InvalidInput, "duplicate key"),
    (
        "A13 pickle",
        b"\x80\x04K\x01.",
        "application/x-python-pickle",
        UnsupportedMediaType,
        "never deserialized",
    ),
    ("A13 pickle 2", b"\x80\x04.", "application/python-pickle", UnsupportedMediaType, "pickle"),
    ("A13 pickle 3", b"\x80\x04.", "application/x-pickle; v=4", UnsupportedMediaType, "pickle"),
    ("A13 no boundary", b"--x\r\n", "multipart/form-data", UnsupportedMediaType, "boundary"),
    ("bad form escape", b"a=%ff", "application/x-www-form-urlencoded", InvalidInput, "UTF-8"),
]


@pytest.mark.parametrize(
    ("body", "content_type", "error", "message"),
    [case[1:] for case in BAD_BODIES],
    ids=[case[0] for case in BAD_BODIES],
)
def test_bad_bodies(
    body: bytes, content_type: str | None, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        decode(body, content_type)


# --- forms ----------------------------------------------------------------------------------


def test_multipart_files_by_content_type_and_fields_as_bytes() -> None:
    body, content_type = multipart(
        files={
            "data": ("0.png", PNG, "image/png"),
            "meta": ("meta.json", b'{"k": [1, 2]}', "application/json"),
            "note": ("note.txt", "zażółć".encode(), "text/plain"),
            "blob": ("blob.bin", b"\x00\x01", None),
        },
        data={"field": "value", "number": "3"},
    )
    inputs = decode(body, content_type)
    assert inputs == {
        "field": b"value",
        "number": b"3",
        "data": PNG,
        "meta": {"k": [1, 2]},
        "note": "zażółć",
        "blob": b"\x00\x01",
    }


def test_multipart_file_refuses_pickle_parts() -> None:
    body, content_type = multipart(files={"t": ("t.pkl", b"\x80\x04.", "application/x-pickle")})
    with pytest.raises(UnsupportedMediaType):
        decode(body, content_type)


def test_multipart_by_hand_with_odd_names_and_later_duplicates() -> None:
    body = (
        b"--B\r\n"
        b'Content-Disposition: form-data; name="a b"\r\n\r\n'
        b"first\r\n"
        b"--B\r\n"
        b'Content-Disposition: form-data; name="a b"\r\n\r\n'
        b"line1\r\nline2\r\n"
        b"--B\r\n"
        b'Content-Disposition: form-data; name="empty"; filename=""\r\n\r\n'
        b"\r\n"
        b"--B--\r\n"
    )
    assert decode(body, 'multipart/form-data; boundary="B"') == {
        "a b": b"line1\r\nline2",
        "empty": b"",
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'--B\r\nContent-Disposition: form-data; name="a"\r\n\r\nabc', "closing boundary"),
        (b"--B\r\nContent-Type: text/plain\r\n\r\nabc\r\n--B--\r\n", "no form-data name"),
        (b"garbage without boundary", "invalid multipart body"),
    ],
)
def test_malformed_multipart_is_400(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode(body, "multipart/form-data; boundary=B")


def test_multipart_part_count_is_bounded() -> None:
    parts = b"".join(
        b'--B\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i for i in range(5)
    )
    limits = DecodeLimits(max_inputs=4)
    with pytest.raises(InvalidInput, match="more than 4 parts"):
        decode_prediction_body(
            parts + b"--B--\r\n", "multipart/form-data; boundary=B", limits=limits
        )


def test_urlencoded_fields_as_bytes() -> None:
    body = b"data=a+b%21&empty=&data2=%C5%BC"
    inputs = decode(body, "application/x-www-form-urlencoded")
    assert inputs == {"data": b"a b!", "empty": b"", "data2": "ż".encode()}


def test_curl_d_json_is_a_form_as_with_torchserve() -> None:
    # `curl -d @x.json` sends application/x-www-form-urlencoded: the JSON is not the body
    inputs = decode(b'{"instances":[1]}', "application/x-www-form-urlencoded")
    assert inputs == {'{"instances":[1]}': b""}


def test_binary_labelled_as_a_form_is_the_raw_body() -> None:
    # `curl --data-binary @3.png` labels the PNG application/x-www-form-urlencoded
    png = b"\x89PNG\r\n\x1a\n\x00\xff"
    assert decode(png, "application/x-www-form-urlencoded") == {"body": png}


def test_urlencoded_field_count_is_bounded() -> None:
    body = b"&".join(b"f%d=1" % i for i in range(10))
    with pytest.raises(InvalidInput, match="more than 4 fields"):
        decode_prediction_body(
            body, "application/x-www-form-urlencoded", limits=DecodeLimits(max_inputs=4)
        )


# --- results and errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "result",
    [
        0,
        [0],
        {"tabby": 0.2746, "tiger_cat": 0.18, "n": [1, 2, {"deep": None}], "ok": True},
        [],
        {},
        "not json but a str",
        [[0.5, 1e-05], [123456.789, -3.0]],
    ],
)
def test_results_match_torchserve_bytes(result: Any) -> None:
    body, content_type = encode_prediction_result(result)
    if isinstance(result, str):
        assert (body, content_type) == (result.encode(), "text/plain; charset=utf-8")
        return
    assert content_type == "application/json"
    assert json.loads(body) == result
    if "1e-05" not in json.dumps(result):  # Python prints 1e-05, orjson 0.00001
        assert body == json.dumps(result, indent=2).encode()


def test_bytes_results_are_sent_as_is() -> None:
    assert encode_prediction_result(PNG) == (PNG, "application/octet-stream")
    assert encode_prediction_result(bytearray(b"ab")) == (b"ab", "application/octet-stream")


def test_handler_content_type_wins() -> None:
    assert encode_prediction_result("{}", "application/json") == (b"{}", "application/json")


def test_numpy_results_and_non_finite_values() -> None:
    body, _ = encode_prediction_result({"p": np.array([0.5, np.nan]), 3: np.float32(1.5)})
    assert json.loads(body) == {"p": [0.5, None], "3": 1.5}


def test_unserializable_result_is_internal_error() -> None:
    with pytest.raises(InternalError, match="Invalid handler output"):
        encode_prediction_result(object())


def test_ts_error_body_matches_torchserve() -> None:
    body = encode_ts_error(404, "ModelNotFoundException", "Model not found: x")
    assert body == (
        b'{\n  "code": 404,\n  "type": "ModelNotFoundException",\n'
        b'  "message": "Model not found: x"\n}\n'
    )
