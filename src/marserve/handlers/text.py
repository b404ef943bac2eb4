"""Text for built-in text handlers: decoding request rows, basic_english tokens and n-grams.

torchtext, which TorchServe's text handlers import, does not load against current torch, so
the two pieces they take from it are written here: the ``basic_english`` tokenizer (lower case;
``' . , ( ) ! ?`` split off; ``" ; :`` and ``<br />`` dropped) and ``ngrams_iterator`` (the tokens,
then every run of 2..n tokens joined by a space).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

#: Rows over this many bytes of UTF-8 are refused before any tokenising.
MAX_TEXT_BYTES = 65536

_PATTERNS = [
    (re.compile(r"\'"), " '  "),
    (re.compile(r"\""), ""),
    (re.compile(r"\."), " . "),
    (re.compile(r"<br \/>"), " "),
    (re.compile(r","), " , "),
    (re.compile(r"\("), " ( "),
    (re.compile(r"\)"), " ) "),
    (re.compile(r"\!"), " ! "),
    (re.compile(r"\?"), " ? "),
    (re.compile(r"\;"), " "),
    (re.compile(r"\:"), " "),
    (re.compile(r"\s+"), " "),
]
_HTML_TAG = re.compile(r"<[^>]{0,200}>")


class TextInputError(ValueError):
    """A request row that is not usable text (the row's 400)."""


def basic_english(text: str) -> list[str]:
    """torchtext's ``basic_english`` rules: lower-cased tokens with punctuation split off."""
    line = text.lower()
    for pattern, replacement in _PATTERNS:
        line = pattern.sub(replacement, line)
    return line.split()


def ngrams(tokens: Sequence[str], n: int) -> Iterator[str]:
    """The tokens, then each run of 2..n consecutive tokens joined by one space."""
    yield from tokens
    for size in range(2, n + 1):
        for start in range(len(tokens) - size + 1):
            yield " ".join(tokens[start : start + size])


def clean(text: str) -> str:
    """What TorchServe's text handler does before tokenising: accents and HTML tags removed."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _HTML_TAG.sub(" ", plain)


def words(text: str) -> list[str]:
    """The word tokens of ``text``: cleaned, ``basic_english``, punctuation-only tokens dropped."""
    return [token for token in basic_english(clean(text)) if any(c.isalnum() for c in token)]


def row_text(row: Any, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """One request row -> its text: ``data``/``body`` as a string, UTF-8 bytes, or byte codes.

    Byte codes are a 1-D integer array (KServe v2 ``INT64`` of the text's bytes, as in the
    KServe docs). Empty or whitespace-only text, more than ``max_bytes``, invalid UTF-8 and
    anything that is not text raise :class:`TextInputError`.
    """
    value = row.get("data") if isinstance(row, dict) else row
    if value is None and isinstance(row, dict):
        value = row.get("body")
    if isinstance(value, dict) and isinstance(value.get("data", value.get("text")), str):
        value = value.get("data", value.get("text"))  # a TorchServe JSON body
    if isinstance(value, (np.ndarray, list, tuple)):
        value = byte_codes(value, max_bytes)
    if isinstance(value, (bytes, bytearray)):
        if len(value) > max_bytes:
            raise TextInputError(f"text is {len(value)} bytes; at most {max_bytes} are accepted")
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TextInputError(f"text is not valid UTF-8 (byte {exc.start})") from None
    if not isinstance(value, str):
        raise TextInputError(f"expected text (a string), got {type(value).__name__}")
    if len(value) > max_bytes or len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        raise TextInputError(f"text is over {max_bytes} bytes")
    if not value.strip():
        raise TextInputError("text is empty")
    return value


def byte_codes(value: Any, max_bytes: int = MAX_TEXT_BYTES) -> bytes:
    """A 1-D sequence of integers 0..255 (the text's UTF-8 bytes) as bytes."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        raise TextInputError("expected text or a list of byte codes") from None
    if array.ndim != 1 or array.dtype.kind not in "iu":
        shape = list(array.shape)
        raise TextInputError(f"expected text or a 1-D array of byte codes, got shape {shape}")
    if array.size > max_bytes:
        raise TextInputError(f"text is {array.size} bytes; at most {max_bytes} are accepted")
    if array.size and (int(array.min()) < 0 or int(array.max()) > 255):
        raise TextInputError("byte codes must be between 0 and 255")
    return array.astype(np.uint8).tobytes()
