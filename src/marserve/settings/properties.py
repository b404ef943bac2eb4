"""A parser for the Java properties format that TorchServe's ``config.properties`` is written in."""

from __future__ import annotations

import re

from marserve.errors import ConfigError

# Java's Properties.load treats space, tab and form feed as whitespace; line terminators are
# \n, \r and \r\n.
_WHITESPACE = " \t\f"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_SIMPLE_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def parse_properties(text: str) -> dict[str, str]:
    """Parse properties text the way ``java.util.Properties.load`` does.

    Supports ``key=value``, ``key:value`` and ``key value``; ``#`` and ``!`` comment lines;
    backslash line continuations (leading whitespace of the next line is dropped); the escapes
    ``\\t \\n \\r \\f \\uXXXX`` and ``\\<any>`` (for example ``\\=``, ``\\:``, ``\\ ``, ``\\\\``).
    A later duplicate key replaces an earlier one. Values keep trailing whitespace, as in Java;
    the typed converters strip it. A malformed ``\\u`` escape raises :class:`ConfigError`.
    """
    result: dict[str, str] = {}
    for number, logical in _logical_lines(text):
        key, value = _split_entry(logical, number)
        result[key] = value
    return result


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join continuation lines; drop blank and comment lines. Yields (first line number, text)."""
    natural = _LINE_BREAK.split(text)
    logical: list[tuple[int, str]] = []
    index = 0
    while index < len(natural):
        number = index + 1
        line = natural[index].lstrip(_WHITESPACE)
        index += 1
        if not line or line[0] in "#!":
            continue
        parts: list[str] = []
        while _continues(line):
            parts.append(line[:-1])
            if index >= len(natural):
                line = ""
                break
            line = natural[index].lstrip(_WHITESPACE)
            index += 1
        parts.append(line)
        logical.append((number, "".join(parts)))
    return logical


def _continues(line: str) -> bool:
    """True when the line ends in an odd number of backslashes (the last one is not escaped)."""
    count = len(line) - len(line.rstrip("\\"))
    return count % 2 == 1


def _split_entry(line: str, number: int) -> tuple[str, str]:
    """Split one logical line into an unescaped key and value."""
    position = 0
    length = len(line)
    while position < length:
        char = line[position]
        if char == "\\":
            position += 2
            continue
        if char in "=:" or char in _WHITESPACE:
            break
        position += 1
    raw_key = line[:position]
    rest = line[position:].lstrip(_WHITESPACE)
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(_WHITESPACE)
    return _unescape(raw_key, number), _unescape(rest, number)


def _unescape(raw: str, number: int) -> str:
    """Resolve backslash escapes; ``\\uXXXX`` needs exactly four hex digits."""
    if "\\" not in raw:
        return raw
    out: list[str] = []
    position = 0
    while position < len(raw):
        char = raw[position]
        if char != "\\":
            out.append(char)
            position += 1
            continue
        escaped = raw[position + 1 : position + 2]
        if escaped == "u":
            digits = raw[position + 2 : position + 6]
            if len(digits) != 4 or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise ConfigError(
                    f"config.properties line {number}: malformed \\u escape "
                    f"{raw[position : position + 6]!r}: expected \\u followed by 4 hex digits"
                )
            out.append(chr(int(digits, 16)))
            position += 6
            continue
        out.append(_SIMPLE_ESCAPES.get(escaped, escaped))
        position += 2
    return "".join(out)
