"""Patch application: RFC 7386 merge patch, RFC 6902 JSON patch, kubectl's three-way merge."""

from __future__ import annotations

from typing import Any

import pytest

from marserve.controlplane.errors import ApiError, BadRequest, Invalid, UnsupportedMediaType
from marserve.controlplane.patch import (
    MERGE,
    STRATEGIC,
    apply_patch,
    json_patch,
    merge_patch,
    three_way_merge,
)

MERGES: list[tuple[Any, Any, Any]] = [
    ({"a": 1}, {"a": 2}, {"a": 2}),
    ({"a": 1, "b": 2}, {"a": None}, {"b": 2}),
    ({"a": {"b": 1, "c": 2}}, {"a": {"c": None, "d": 3}}, {"a": {"b": 1, "d": 3}}),
    ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
    ({"a": 1}, {"b": {"c": None}}, {"a": 1, "b": {}}),
    ({"a": {"b": 1}}, {"a": 5}, {"a": 5}),
    ("text", {"a": 1}, {"a": 1}),
]


@pytest.mark.parametrize(("target", "patch", "want"), MERGES)
def test_merge_patch(target: Any, patch: Any, want: Any) -> None:
    before = repr(target)
    assert merge_patch(target, patch) == want
    assert repr(target) == before  # the input is not changed


DOC = {"spec": {"list": [1, 2, 3], "m": {"k": "v"}}, "a/b": 1, "t~": 2}
JSON_PATCHES: list[tuple[list[dict[str, Any]], Any]] = [
    ([{"op": "add", "path": "/spec/new", "value": 1}], {**DOC, "spec": {**DOC["spec"], "new": 1}}),
    (
        [{"op": "add", "path": "/spec/list/-", "value": 4}],
        {**DOC, "spec": {**DOC["spec"], "list": [1, 2, 3, 4]}},
    ),
    (
        [{"op": "add", "path": "/spec/list/0", "value": 0}],
        {**DOC, "spec": {**DOC["spec"], "list": [0, 1, 2, 3]}},
    ),
    ([{"op": "remove", "path": "/spec/list/1"}], {**DOC, "spec": {**DOC["spec"], "list": [1, 3]}}),
    (
        [{"op": "replace", "path": "/spec/m/k", "value": "w"}],
        {**DOC, "spec": {**DOC["spec"], "m": {"k": "w"}}},
    ),
    ([{"op": "remove", "path": "/a~1b"}, {"op": "remove", "path": "/t~0"}], {"spec": DOC["spec"]}),
    (
        [{"op": "move", "from": "/spec/m", "path": "/m"}],
        {**DOC, "spec": {"list": [1, 2, 3]}, "m": {"k": "v"}},
    ),
    ([{"op": "copy", "from": "/spec/m", "path": "/m"}], {**DOC, "m": {"k": "v"}}),
    ([{"op": "test", "path": "/spec/m/k", "value": "v"}], DOC),
]


@pytest.mark.parametrize(("ops", "want"), JSON_PATCHES)
def test_json_patch(ops: list[dict[str, Any]], want: Any) -> None:
    assert json_patch(DOC, ops) == want


JSON_PATCH_ERRORS: list[tuple[Any, type[ApiError], str]] = [
    ({"op": "add"}, BadRequest, "list of operations"),
    ([{"op": "replace", "path": "/nope", "value": 1}], Invalid, "does not exist"),
    ([{"op": "remove", "path": "/spec/list/9"}], Invalid, "out of range"),
    ([{"op": "test", "path": "/spec/m/k", "value": "x"}], Invalid, "test failed"),
    ([{"op": "frobnicate", "path": "/a"}], BadRequest, "unknown operation"),
    ([{"op": "add", "path": "no-slash", "value": 1}], BadRequest, "invalid path"),
    ([{"op": "add", "path": "/spec/list/x", "value": 1}], Invalid, "invalid array index"),
    ([{"op": "add", "path": "/a"}], BadRequest, "needs a value"),
]


@pytest.mark.parametrize(("ops", "error", "text"), JSON_PATCH_ERRORS)
def test_json_patch_errors(ops: Any, error: type[ApiError], text: str) -> None:
    with pytest.raises(error, match=text):
        json_patch(DOC, ops)


def test_strategic_merge_is_refused_for_custom_resources() -> None:
    with pytest.raises(UnsupportedMediaType) as err:
        apply_patch({}, {}, STRATEGIC, kind="InferenceService")
    assert err.value.code == 415 and "merge-patch+json" in err.value.message
    assert apply_patch({"a": 1}, {"a": None}, MERGE, kind="InferenceService") == {}


THREE_WAY: list[tuple[Any, Any, Any, Any]] = [
    # unchanged: defaults the server added (minReplicas) are left alone
    ({"spec": {"a": 1}}, {"spec": {"a": 1}}, {"spec": {"a": 1, "minReplicas": 1}}, {}),
    ({"spec": {"a": 1}}, {"spec": {"a": 2}}, {"spec": {"a": 1}}, {"spec": {"a": 2}}),
    # a field dropped from the file is deleted; one someone else added is kept
    (
        {"spec": {"a": 1, "b": 2}},
        {"spec": {"a": 1}},
        {"spec": {"a": 1, "b": 2, "c": 3}},
        {"spec": {"b": None}},
    ),
    (
        {},
        {"metadata": {"labels": {"x": "y"}}},
        {"metadata": {}},
        {"metadata": {"labels": {"x": "y"}}},
    ),
]


@pytest.mark.parametrize(("original", "modified", "current", "want"), THREE_WAY)
def test_three_way_merge(original: Any, modified: Any, current: Any, want: Any) -> None:
    assert three_way_merge(original, modified, current) == want
