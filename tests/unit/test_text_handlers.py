"""Text decoding, basic_english tokens and n-grams, and pictures of text explanations."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from marserve import text_picture
from marserve.errors import InvalidInput
from marserve.handlers.loader import BUILTIN_HANDLERS
from marserve.handlers.text import (
    MAX_TEXT_BYTES,
    TextInputError,
    basic_english,
    ngrams,
    row_text,
    words,
)


def test_basic_english_follows_torchtexts_rules() -> None:
    text = 'He said: "It\'s <br />GREAT, (really)!" Is it; sure?'
    assert basic_english(text) == [
        "he", "said", "it", "'", "s", "great", ",", "(", "really", ")", "!",
        "is", "it", "sure", "?",
    ]  # fmt: skip


def test_words_drop_punctuation_accents_and_tags() -> None:
    assert words("Café <b>déjà</b> vu, again.") == ["cafe", "deja", "vu", "again"]


def test_ngrams_are_unigrams_then_bigrams() -> None:
    assert list(ngrams(["a", "b", "c"], 2)) == ["a", "b", "c", "a b", "b c"]
    assert list(ngrams(["a"], 2)) == ["a"]


@pytest.mark.parametrize(
    "row",
    [
        {"data": "hello"},
        {"body": b"hello"},
        {"data": bytearray(b"hello")},
        {"data": np.frombuffer(b"hello", dtype=np.uint8).astype(np.int64)},
        {"data": list(b"hello")},
        {"body": {"data": "hello"}},
        "hello",
    ],
)
def test_row_text_accepts_every_form(row: object) -> None:
    assert row_text(row) == "hello"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"data": ""}, "text is empty"),
        ({"data": " \n\t"}, "text is empty"),
        ({}, "got NoneType"),
        ({"data": 3.5}, "got float"),
        ({"data": {"x": 1}}, "got dict"),
        ({"data": "é" * MAX_TEXT_BYTES}, f"over {MAX_TEXT_BYTES} bytes"),
        ({"data": b"x" * (MAX_TEXT_BYTES + 1)}, "at most"),
        ({"data": b"\xc3\x28"}, "not valid UTF-8 (byte 0)"),
        ({"data": [[104, 105]]}, "1-D array"),
        ({"data": [1.0, 2.0]}, "1-D array"),
        ({"data": [104, -1]}, "between 0 and 255"),
        ({"data": np.zeros(MAX_TEXT_BYTES + 1, dtype=np.int64)}, "at most"),
    ],
)
def test_row_text_refuses_what_is_not_text(row: object, message: str) -> None:
    with pytest.raises(TextInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        row_text(row)


def test_text_classifier_is_a_builtin() -> None:
    assert BUILTIN_HANDLERS["text_classifier"] == "marserve.handlers.text_classifier"


def explanation(words_: list[str], scores: list[float]) -> dict[str, object]:
    return {"words": words_, "importances": scores, "delta": 0.0}


def pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def test_text_explanations_are_drawn_as_shaded_words() -> None:
    one = explanation(["good", "bad", "film"], [0.9, -0.8, 0.0])
    picture = pixels(text_picture.words_png([one]))
    red = (picture[:, :, 0] > 200) & (picture[:, :, 1] < 80) & (picture[:, :, 2] < 80)
    blue = (picture[:, :, 2] > 200) & (picture[:, :, 0] < 80)
    assert red.any() and blue.any()
    two = pixels(text_picture.words_png([one, explanation(["more"], [1.0])]))
    assert two.shape[0] > picture.shape[0] and two.shape[1] == picture.shape[1]


def test_long_texts_wrap_onto_more_lines() -> None:
    short = pixels(text_picture.words_png([explanation(["word"] * 5, [0.1] * 5)]))
    long = pixels(text_picture.words_png([explanation(["word"] * 400, [0.1] * 400)]))
    assert long.shape[0] > 4 * short.shape[0]


def test_word_explanations_are_recognised_exactly() -> None:
    assert text_picture.is_word_explanation(explanation(["a"], [1.0]))
    assert not text_picture.is_word_explanation({"words": ["a", "b"], "importances": [1.0]})
    assert not text_picture.is_word_explanation({"words": "ab", "importances": "ab"})
    assert not text_picture.is_word_explanation([[0.0, 1.0]])


def test_unreadable_text_pictures_are_refused() -> None:
    many = text_picture.MAX_WORDS + 1
    with pytest.raises(InvalidInput, match="too much to draw"):
        text_picture.words_png([explanation(["w"] * many, [0.0] * many)])
    with pytest.raises(InvalidInput, match="not numbers"):
        text_picture.words_png([explanation(["w"], ["high"])])  # type: ignore[list-item]
    picture = pixels(text_picture.words_png([explanation(["w", "v"], [float("nan"), 0.0])]))
    assert picture.shape[1] == text_picture.WIDTH
