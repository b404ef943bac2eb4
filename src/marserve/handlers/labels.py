"""Class-index -> label mappings (``index_to_name.json``) and mapping top-k results to labels."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def load_label_mapping(mapping_file_path: str | Path) -> dict[str, str] | None:
    """Read a ``{"0": "label", ...}`` mapping; ``None`` (with a warning) when the file is absent.

    A value may also be a list whose last element is the label (ImageNet's ``["n0144", "tench"]``),
    and the older ``{"object_type_names": [...]}`` form is accepted, as TorchServe does.
    """
    path = Path(mapping_file_path)
    if not path.is_file():
        logger.warning("No index_to_name.json: predictions will carry class indexes, not labels")
        return None
    with path.open(encoding="utf-8") as f:
        mapping = json.load(f)
    if not isinstance(mapping, dict):
        raise ValueError('index->name mapping should be in "class":"label" json format')
    names = mapping.get("object_type_names")
    if isinstance(names, list):
        return {str(i): str(name) for i, name in enumerate(names)}
    result: dict[str, str] = {}
    for key, value in mapping.items():
        label = value[-1] if isinstance(value, list) and value else value
        if not isinstance(label, str):
            raise ValueError("labels in index->name mapping must be either str or List[str]")
        result[str(key)] = label
    return result


def map_class_to_label(
    probs: Sequence[Sequence[float]],
    mapping: dict[str, str] | None = None,
    lbl_classes: Sequence[Sequence[int]] | None = None,
) -> list[dict[str, float]]:
    """One ``{label: probability}`` dict per row; labels are class indexes when no mapping."""
    if not isinstance(probs, list):
        raise TypeError("Convert classes to list before doing mapping")
    if mapping is not None and not isinstance(mapping, dict):
        raise TypeError("Mapping must be a dict")
    classes: Iterable[Sequence[int]] = (
        lbl_classes if lbl_classes is not None else [range(len(row)) for row in probs]
    )
    results: list[dict[str, float]] = []
    for row_classes, row_probs in zip(classes, probs, strict=True):
        row: dict[str, Any] = {}
        for cls, prob in zip(row_classes, row_probs, strict=True):
            key = str(cls)
            row[mapping.get(key, key) if mapping is not None else key] = prob
        results.append(row)
    return results
