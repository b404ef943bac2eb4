"""Management parameters read as TorchServe reads them, and handlers named over the API."""

from __future__ import annotations

from pathlib import Path

import pytest

from marserve.errors import InvalidInput
from marserve.handlers.loader import HandlerError, api_handler
from marserve.management_params import Registration, check_runtime, paging, ts_bool, ts_int


@pytest.mark.parametrize(
    ("text", "number"),
    [("3", 3), ("-1", -1), ("+7", 7), ("", None), ("dd", None), ("1.5", None), (" 1", None),
     ("2147483647", 2147483647), ("2147483648", None), ("-2147483648", -2147483648), (None, None)],
)  # fmt: skip
def test_numbers_as_integer_parseint(text: str | None, number: int | None) -> None:
    assert ts_int(text) == number


@pytest.mark.parametrize(
    ("text", "default", "value"),
    [(None, True, True), (None, False, False), ("true", False, True), ("TRUE", False, True),
     ("-1", True, False), ("nan", True, False), ("yes", True, False), ("", True, False)],
)  # fmt: skip
def test_booleans_as_parseboolean(text: str | None, default: bool, value: bool) -> None:
    assert ts_bool(text, default) is value


@pytest.mark.parametrize(
    ("limit", "token", "page"),
    [(None, None, (100, 0)), (-1, None, (100, 0)), (1000, 3, (100, 3)), (0, -5, (0, 0)),
     (5, 12, (5, 12))],
)  # fmt: skip
def test_paging_as_torchserve(limit: int | None, token: int | None, page: tuple[int, int]) -> None:
    assert paging(limit, token) == page


def test_registration_overrides_fall_back_to_defaults() -> None:
    odd = Registration("m.mar", batch_size=-1, max_batch_delay=-5, initial_workers=-1,
                       response_timeout=0, startup_timeout=-1)  # fmt: skip
    assert odd.overrides() == {"batch_size": None, "max_batch_delay": None, "initial_workers": 0,
                               "response_timeout": None, "startup_timeout": None}  # fmt: skip
    given = Registration("m.mar", batch_size=4, max_batch_delay=0, startup_timeout=30)
    assert given.overrides()["batch_size"] == 4 and given.overrides()["max_batch_delay"] == 0
    assert (
        given.overrides()["startup_timeout"] == 30 and given.overrides()["initial_workers"] is None
    )


def test_runtimes() -> None:
    for runtime in (None, "python", "Python3", "python2"):
        check_runtime(runtime)
    with pytest.raises(InvalidInput, match="Invalid RuntimeType value: python4"):
        check_runtime("python4")


def test_api_handlers(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text("def handle(data, context):\n    return data\n")
    (tmp_path / "pkg").mkdir()
    assert api_handler("mine.py:handle", tmp_path) == "mine.py:handle"
    assert api_handler("pkg", tmp_path) == "pkg"
    assert api_handler("image_classifier", tmp_path) == "image_classifier"
    assert api_handler("ts.torch_handler.image_classifier", tmp_path) == "image_classifier"
    path = "serve/ts/torch_handler/image_classifier.py:handle"
    assert api_handler(path, tmp_path) == "image_classifier:handle"
    assert api_handler("invalidHandler", tmp_path) == "invalidHandler"  # fails in the worker
    for outside in ("os:system", "subprocess", "marserve.cli.main:main"):
        with pytest.raises(ValueError, match="outside the model archive"):
            api_handler(outside, tmp_path)
    for bad in ("../x.py", "/etc/x.py", "a/b.py", "m:not-a-name"):
        with pytest.raises(HandlerError):
            api_handler(bad, tmp_path)
