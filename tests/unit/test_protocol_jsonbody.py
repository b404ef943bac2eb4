"""The JSON guard: depth scan against a reference, escapes, duplicate keys, encoding policy."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest

from marserve.errors import InvalidInput
from marserve.protocol.jsonbody import bounds, encode_json, json_depth, parse_json, scan


def reference_keys(value: Any) -> int:
    if isinstance(value, dict):
        return len(value) + sum(reference_keys(v) for v in value.values())
    if isinstance(value, list):
        return sum(reference_keys(v) for v in value)
    return 0


def reference_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    return 0


TRICKY_STRINGS = [
    "[",
    "]]]]",
    '"{',
    "\\",
    '\\"[',
    "\\\\",
    "{\\\\}",
    "\u2028[",
    "\x00{",
    "a:b",
    '":',
]


def random_document(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 12 or roll < 0.3:
        return rng.choice([1, 2.5, None, True, rng.choice(TRICKY_STRINGS)])
    if roll < 0.65:
        return [random_document(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = [rng.choice(TRICKY_STRINGS) + str(i) for i in range(rng.randint(0, 4))]
    return {key: random_document(rng, depth + 1) for key in keys}


@pytest.mark.parametrize("seed", range(40))
def test_depth_scan_matches_reference(seed: int) -> None:
    document = random_document(random.Random(seed))
    for text in (json.dumps(document), json.dumps(document, ensure_ascii=False, indent=1)):
        assert json_depth(text.encode()) == reference_depth(document)
        assert scan(text.encode()).keys == reference_keys(document)


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"", 0),
        (b"1", 0),
        (b"[]", 1),
        (b'["[[[["]', 1),
        (b'["\\"[[[["]', 1),
        (b'["\\\\", [[]]]', 3),
        (b'{"a\\\\\\"[": [{}]}', 3),
        (b'[["\\\\\\\\"], "\\\\\\"]]]"]', 2),
    ],
)
def test_depth_of_escape_heavy_bodies(body: bytes, depth: int) -> None:
    if body:
        assert reference_depth(json.loads(body)) == depth
    assert json_depth(body) == depth


def test_depth_limit_is_inclusive() -> None:
    assert parse_json(b"[" * 5 + b"]" * 5, max_depth=5) == [[[[[]]]]]
    with pytest.raises(InvalidInput, match=r"exceeds maximum allowed limit \(4\)"):
        parse_json(b"[" * 5 + b"]" * 5, max_depth=4)
    assert parse_json(b"[" + b"[[]]," * 50 + b"[]]", max_depth=3)[0] == [[]]


def test_parse_json_finds_duplicates_at_any_level() -> None:
    with pytest.raises(InvalidInput, match="duplicate key 'x'"):
        parse_json(b'{"a": [{"b": {"x": 1, "x": 2}}]}', max_depth=10)
    with pytest.raises(InvalidInput, match="duplicate key 'k'"):
        parse_json(b'{"k": 1, "\\u006b": 2}', max_depth=10)
    assert parse_json(b'{"a": "x:y", "b": {"c": [":"]}}', max_depth=10) == {
        "a": "x:y",
        "b": {"c": [":"]},
    }


def test_encode_json_policy() -> None:
    value = {
        "nan": float("nan"),
        "inf": np.float64("inf"),
        "arr": np.array([[1, 2]], dtype=np.uint8),
        "f16": np.array([0.5], dtype=np.float16),
        "text": b"hi",
        "raw": b"\x80",
        1: "int key",
    }
    assert json.loads(encode_json(value)) == {
        "nan": None,
        "inf": None,
        "arr": [[1, 2]],
        "f16": [0.5],
        "text": "hi",
        "raw": "gA==",
        "1": "int key",
    }
    assert encode_json([1], indent=True) == b"[\n  1\n]"


def test_byte_count_bounds_never_change_a_verdict() -> None:
    """The cheap bounds count brackets and colons inside strings too: such a body must still be
    judged by what lies outside its strings."""
    inside = b'{"a": "' + b"[{" * 40 + b'", "b": "x:y:z:w"}'
    assert parse_json(inside, max_depth=3) == {"a": "[{" * 40, "b": "x:y:z:w"}
    assert bounds(inside).depth > 3 and not bounds(inside).exact
    deep = b"[" * 4 + b"]" * 4
    with pytest.raises(InvalidInput, match="depth exceeds"):
        parse_json(deep, max_depth=3)
    assert parse_json(deep, max_depth=4) == [[[[]]]]
    with pytest.raises(InvalidInput, match="duplicate key 'a'"):
        parse_json(b'{"a": "t:u", "a": 2}', max_depth=8)  # a colon in a string, and a duplicate
    with pytest.raises(InvalidInput, match="duplicate key 'k'"):
        parse_json(b'[{"k": 1, "k": 2}]', max_depth=8)  # few colons: the bound alone sees it
