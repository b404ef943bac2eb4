"""Pictures of text explanations: each text's words on a ground shaded by their importance.

The front process draws these for ``?format=png`` (or ``Accept: image/png``) when a handler's
explanations are TorchServe's text shape, ``{"words": [...], "importances": [...]}`` (the BERT
and text-classifier handlers). Words are laid out left to right and wrapped; each sits on a box
that is red for positive importance and blue for negative, stronger the larger its magnitude
relative to the largest in its text. One block per explanation, top to bottom.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from marserve.errors import InvalidInput

WIDTH = 960
MARGIN = 12
FONT_SIZE = 18
LINE = FONT_SIZE + 12
GAP = 6
#: More words than this over all explanations are refused (the picture would be unreadable).
MAX_WORDS = 20_000
MAX_WORD_CHARS = 60
POSITIVE = (220, 30, 30)
NEGATIVE = (30, 80, 230)


def is_word_explanation(value: Any) -> bool:
    """Whether ``value`` is a text explanation: ``words`` and ``importances`` of equal length."""
    if not isinstance(value, Mapping):
        return False
    words, importances = value.get("words"), value.get("importances")
    return (
        isinstance(words, Sequence)
        and not isinstance(words, (str, bytes))
        and isinstance(importances, Sequence)
        and not isinstance(importances, (str, bytes))
        and len(words) == len(importances)
    )


def _scores(value: Mapping[str, Any]) -> list[float]:
    try:
        scores = [float(x) for x in value["importances"]]
    except (TypeError, ValueError):
        raise InvalidInput("the explanation's importances are not numbers") from None
    return [x if math.isfinite(x) else 0.0 for x in scores]


def _shade(score: float, scale: float) -> tuple[int, int, int]:
    """White blended toward red (positive) or blue (negative) by ``|score| / scale``."""
    strength = min(1.0, abs(score) / scale) if scale > 0 else 0.0
    colour = POSITIVE if score >= 0 else NEGATIVE
    return tuple(round(255 * (1 - strength) + c * strength) for c in colour)  # type: ignore[return-value]


def _layout(
    words: Sequence[Any], font: ImageFont.FreeTypeFont | ImageFont.ImageFont, top: int
) -> tuple[list[tuple[str, int, int, int]], int]:
    """(word, x, y, width) for every word, wrapped at :data:`WIDTH`; and the block's bottom."""
    placed = []
    x, y = MARGIN, top
    for word in words:
        text = str(word)[:MAX_WORD_CHARS] or " "
        width = math.ceil(font.getlength(text)) + 8
        if x + width > WIDTH - MARGIN and x > MARGIN:
            x, y = MARGIN, y + LINE
        placed.append((text, x, y, width))
        x += width + GAP
    return placed, y + LINE


def words_png(explanations: Sequence[Mapping[str, Any]]) -> bytes:
    """One PNG with a block of shaded words per explanation."""
    if not explanations:
        raise InvalidInput("there is nothing to draw: no explanations")
    total = sum(len(value["words"]) for value in explanations)
    if total > MAX_WORDS:
        raise InvalidInput(f"too much to draw: {total} words exceed {MAX_WORDS}")
    font = ImageFont.load_default(FONT_SIZE)
    blocks, top = [], MARGIN
    for value in explanations:
        placed, bottom = _layout(value["words"], font, top)
        blocks.append((placed, _scores(value)))
        top = bottom + LINE // 2
    image = Image.new("RGB", (WIDTH, top + MARGIN), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for index, (placed, scores) in enumerate(blocks):
        scale = max((abs(s) for s in scores), default=0.0)
        for (text, x, y, width), score in zip(placed, scores, strict=True):
            ground = _shade(score, scale)
            ink = (255, 255, 255) if sum(ground) < 400 else (0, 0, 0)  # readable on dark boxes
            draw.rectangle((x, y, x + width, y + LINE - 6), fill=ground)
            draw.text((x + 4, y + 3), text, fill=ink, font=font)
        if index + 1 < len(blocks):
            line_y = (placed[-1][2] if placed else MARGIN) + LINE + LINE // 4 - 4
            draw.line((MARGIN, line_y, WIDTH - MARGIN, line_y), fill=(200, 200, 200))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
