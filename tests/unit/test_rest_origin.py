"""BrowserPolicy: which Host, Origin and content-type shapes a request may have (row E7)."""

from __future__ import annotations

import pytest

from marserve.errors import Forbidden
from marserve.rest.origin import BrowserPolicy, is_loopback_host

PLAIN = BrowserPolicy.of((), None)


def check(
    policy: BrowserPolicy = PLAIN,
    *,
    listener: str | None = "127.0.0.1",
    method: str = "GET",
    path: str = "/models",
    scheme: str = "http",
    **headers: str,
) -> None:
    fields = {key.replace("_", "-"): value for key, value in headers.items()}
    policy.check(listener_host=listener, scheme=scheme, method=method, path=path, headers=fields)


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "LOCALHOST:8081",
        "localhost.",
        "api.localhost:8081",
        "127.0.0.1:8081",
        "127.9.9.9",
        "[::1]:8081",
        "",  # no Host at all (HTTP/1.0): not a browser
    ],
)
def test_loopback_names_reach_a_loopback_listener(host: str) -> None:
    check(host=host)


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8081", "localhost.evil.example", "10.0.0.5", "[::2]"]
)
def test_other_names_are_refused_there(host: str) -> None:
    with pytest.raises(Forbidden, match="DNS rebinding"):
        check(host=host)


@pytest.mark.parametrize("listener", ["::1", "127.0.0.1"])
def test_metrics_and_the_v2_repository_are_checked_like_management(listener: str) -> None:
    for path in ("/metrics", "/v2/repository/index", "/", "/token"):
        with pytest.raises(Forbidden):
            check(listener=listener, path=path, host="evil.example")


def test_the_data_plane_answers_any_host() -> None:
    for path in ("/predictions/m", "/explanations/m", "/ping", "/v1/models/m:predict", "/v2"):
        check(path=path, method="POST", host="m.default.example.com")


def test_listeners_off_loopback_do_not_check_host() -> None:
    check(listener="10.0.0.5", host="anything.example")
    check(listener=None, host="anything.example")  # a unix socket, say


def test_allowed_hosts_add_names_and_star_turns_the_check_off() -> None:
    policy = BrowserPolicy.of(["models.internal", " Proxy.Example:443 "], None)
    check(policy, host="models.internal:8081")
    check(policy, host="proxy.example")
    with pytest.raises(Forbidden):
        check(policy, host="evil.example")
    check(BrowserPolicy.of(["*"], None), host="evil.example")


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_state_changes_from_a_foreign_origin_are_refused(method: str) -> None:
    for origin in ("https://evil.example", "null", "http://127.0.0.1:9999", "file://"):
        with pytest.raises(Forbidden, match="Cross-site request"):
            check(method=method, path="/predictions/m", host="127.0.0.1:8080", origin=origin)


def test_the_listeners_own_origin_is_not_foreign() -> None:
    check(method="POST", path="/models", host="127.0.0.1:8080", origin="http://127.0.0.1:8080")
    check(method="POST", path="/models", host="localhost", origin="http://localhost:80")
    check(method="POST", path="/m", scheme="https", host="[::1]", origin="https://[::1]")
    with pytest.raises(Forbidden):  # another scheme is another origin
        check(method="POST", path="/m", host="localhost:8080", origin="https://localhost:8080")


def test_reads_carry_any_origin() -> None:
    check(method="GET", path="/models", host="localhost", origin="https://evil.example")
    check(method="OPTIONS", path="/predictions/m", host="localhost", origin="null")


def test_cors_allowed_origin_admits_that_origin_or_every_one() -> None:
    one = BrowserPolicy.of((), "https://App.example/")
    check(one, method="POST", path="/predictions/m", host="localhost", origin="https://app.example")
    with pytest.raises(Forbidden):
        check(one, method="POST", path="/predictions/m", host="localhost", origin="https://b.ex")
    anyone = BrowserPolicy.of((), "*")
    check(anyone, method="POST", path="/predictions/m", host="localhost", origin="null")


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "TEXT/PLAIN; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=----x",
    ],
)
def test_form_bodies_cannot_change_management_state(content_type: str) -> None:
    for path in ("/models", "/models/m/1.0", "/v2/repository/models/m/load", "/token"):
        with pytest.raises(Forbidden, match="cross-site request protection"):
            check(method="POST", path=path, host="localhost", content_type=content_type)


def test_json_or_no_body_may_change_management_state_and_forms_may_predict() -> None:
    check(method="POST", path="/models", host="localhost", content_type="application/json")
    check(method="DELETE", path="/models/m", host="localhost")
    check(method="POST", path="/predictions/m", host="localhost", content_type="text/plain")


def test_loopback_hosts() -> None:
    assert is_loopback_host("localhost") and is_loopback_host("a.b.localhost")
    assert is_loopback_host("127.0.0.2") and is_loopback_host("::1")
    assert not is_loopback_host("localhost.example") and not is_loopback_host("0.0.0.0")
