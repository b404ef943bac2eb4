"""Explanations: Captum integrated gradients over whole batches, and heatmap pictures of them.

Two halves, one per process:

- **Worker side** (handlers): :func:`explain_batch` explains every row of a batch with Captum's
  ``IntegratedGradients`` (baseline zeros, Gauss-Legendre steps), one Captum call per distinct
  ``(n_steps, return_delta)`` in the batch, with ``internal_batch_size`` bounding how many scaled
  inputs go through the model at once. torch and captum are imported only when a request needs
  them, so this module stays importable in the front process.
- **Front side** (REST): :func:`wants_png` and :func:`heatmap_png` turn the attributions of a
  response into one PNG, each item drawn over its input image (Pillow and numpy only).

Per-request options, read from each handler row (a v1 instance's own keys; a v2 request's
``parameters``, which the data plane copies into every row; TorchServe query parameters, or the
fields of a JSON body):

- ``target``: the class to explain; absent or ``null`` means the class the model predicts.
- ``n_steps``: integration steps, ``1 <= n_steps <= max_n_steps``; default ``n_steps``.
- ``return_delta``: also report Captum's convergence delta; the row's value becomes
  ``{"attributions": ..., "convergence_delta": float}``.

Per-model settings live in ``model-config.yaml`` under ``handler: {explain: {...}}`` with keys
``n_steps`` (default 50), ``max_n_steps`` (default 500) and ``internal_batch_size`` (scaled inputs
per forward/backward pass; default: ``n_steps``, i.e. one input's whole path at a time).
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from marserve import text_picture
from marserve.errors import InvalidInput
from marserve.handlers.exceptions import PredictionException
from marserve.handlers.images import image_bytes, open_image

if TYPE_CHECKING:
    import torch

__all__ = [
    "INSTALL_HINT",
    "MAX_PICTURE_PIXELS",
    "MIN_PICTURE_SIDE",
    "ExplainOptions",
    "ExplainSettings",
    "RowFailure",
    "attribution_map",
    "explain_batch",
    "heatmap_png",
    "input_picture",
    "integrated_gradients",
    "integrated_gradients_class",
    "row_options",
    "wants_png",
]

INSTALL_HINT = "pip install 'marserve[explain]'"
DEFAULT_N_STEPS = 50
DEFAULT_MAX_N_STEPS = 500
#: Pictures are scaled up (nearest neighbour) until their longer side is at least this.
MIN_PICTURE_SIDE = 224
#: The most pixels a picture may have (the PNG, and each input image decoded under it).
MAX_PICTURE_PIXELS = 16_000_000
_DECIMAL = re.compile(r"-?[0-9]{1,18}")
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


# settings and per-request options ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ExplainSettings:
    """A model's explanation defaults and bounds (``handler.explain`` in model-config.yaml)."""

    n_steps: int = DEFAULT_N_STEPS
    max_n_steps: int = DEFAULT_MAX_N_STEPS
    internal_batch_size: int | None = None  # None: n_steps scaled inputs per pass

    @classmethod
    def from_model_yaml(cls, config: Mapping[str, Any] | None) -> ExplainSettings:
        """Read ``handler.explain`` of a model-config.yaml; ValueError names a bad key."""
        handler = (config or {}).get("handler") or {}
        section = handler.get("explain") if isinstance(handler, Mapping) else None
        if section is None:
            return cls()
        if not isinstance(section, Mapping):
            raise ValueError("handler.explain must be a mapping")
        unknown = sorted(set(section) - {"n_steps", "max_n_steps", "internal_batch_size"})
        if unknown:
            raise ValueError(f"handler.explain: unknown keys {unknown}")
        max_n = _positive(section.get("max_n_steps", DEFAULT_MAX_N_STEPS), "max_n_steps")
        n_steps = _positive(section.get("n_steps", min(DEFAULT_N_STEPS, max_n)), "n_steps")
        if n_steps > max_n:
            raise ValueError(f"handler.explain.n_steps ({n_steps}) exceeds max_n_steps ({max_n})")
        batch = section.get("internal_batch_size")
        rows = None if batch is None else _positive(batch, "internal_batch_size")
        return cls(n_steps=n_steps, max_n_steps=max_n, internal_batch_size=rows)


def _positive(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"handler.explain.{key} must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class ExplainOptions:
    """What one row asks for."""

    target: int | None
    n_steps: int
    return_delta: bool


@dataclass(frozen=True, slots=True)
class RowFailure:
    """A row that cannot be explained: its HTTP status and message; the other rows go on."""

    status: int
    message: str


def _option(row: Any, key: str) -> Any:
    """A row's own key, else the key of its JSON body (TorchServe hands JSON as ``body``)."""
    if not isinstance(row, Mapping):
        return None
    if key in row:
        return row[key]
    body = row.get("body")
    return body.get(key) if isinstance(body, Mapping) else None


def _integer(value: Any, name: str) -> int:
    """An int from JSON (not bool, not fractional) or from a query string's text or bytes."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        text = value.strip()
        if _DECIMAL.fullmatch(text):
            return int(text)
    elif isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    raise ValueError(f"{name} must be an integer, got {_shown(value)}")


def _boolean(value: Any, name: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{name} must be true or false, got {_shown(value)}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def row_options(row: Any, settings: ExplainSettings) -> ExplainOptions:
    """The options one row asks for; ValueError (a 400 for that row) when one is invalid."""
    target_value = _option(row, "target")
    target = None if target_value is None else _integer(target_value, "target")
    if target is not None and target < 0:
        raise ValueError(f"target must be >= 0, got {target}")
    steps_value = _option(row, "n_steps")
    n_steps = settings.n_steps if steps_value is None else _integer(steps_value, "n_steps")
    if not 1 <= n_steps <= settings.max_n_steps:
        raise ValueError(f"n_steps must be between 1 and {settings.max_n_steps}, got {n_steps}")
    delta_value = _option(row, "return_delta")
    delta = False if delta_value is None else _boolean(delta_value, "return_delta")
    return ExplainOptions(target=target, n_steps=n_steps, return_delta=delta)


# integrated gradients (worker side) ------------------------------------------------------------
def integrated_gradients_class() -> Any:
    """Captum's ``IntegratedGradients``, or a 501 saying which extra to install."""
    try:
        from captum.attr import IntegratedGradients
    except ImportError as exc:
        raise PredictionException(
            f"Explanations need Captum, which is not installed: {INSTALL_HINT}", 501
        ) from exc
    return IntegratedGradients


def integrated_gradients(
    forward: Callable[..., Any],
    inputs: torch.Tensor,
    target: int | list[int] | None,
    *,
    n_steps: int,
    internal_batch_size: int | None = None,
    return_delta: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Captum's ``IntegratedGradients(forward).attribute`` from zeros; (attributions, delta).

    ``internal_batch_size`` (default ``n_steps``) caps the scaled inputs per pass; it is raised
    to the number of rows when smaller, as Captum would (without its warning).
    """
    explainer = integrated_gradients_class()(forward)
    rows = internal_batch_size if internal_batch_size is not None else n_steps
    count = int(inputs.shape[0])
    # When every scaled input fits in one pass, let Captum take its direct path: its
    # internal batching costs about 4 ms on one MNIST image even when it splits nothing.
    chunk = None if count * n_steps <= rows else max(rows, count)
    result = explainer.attribute(
        inputs,
        target=target,
        n_steps=n_steps,
        internal_batch_size=chunk,
        return_convergence_delta=return_delta,
    )
    if return_delta:
        attributions, delta = result
        return attributions, delta
    return result, None


def _class_count(forward: Callable[..., Any], inputs: torch.Tensor) -> tuple[list[int], int]:
    """(predicted class per row, number of classes); 0 classes for one output per row."""
    import torch

    with torch.no_grad():
        output = forward(inputs)
    if not isinstance(output, torch.Tensor) or output.dim() not in (1, 2):
        shape = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise PredictionException(
            f"Integrated gradients need a model output shaped [N] or [N, classes], got {shape}",
            501,
        )
    if output.dim() == 1:
        return [0] * int(output.shape[0]), 0
    return [int(c) for c in output.argmax(dim=1).tolist()], int(output.shape[1])


def _resolve_target(options: ExplainOptions, predicted: int, classes: int) -> int | None:
    """The class to explain, or None for single-output models; ValueError when out of range."""
    if classes == 0:
        if options.target is not None:
            raise ValueError("target must not be given: the model has one output per input")
        return None
    if options.target is None:
        return predicted
    if options.target >= classes:
        raise ValueError(f"target must be below {classes} (the model's classes)")
    return options.target


_Groups = dict[tuple[int, bool], list[tuple[int, int | None]]]


def _plan(
    forward: Callable[..., Any],
    inputs: torch.Tensor,
    rows: Sequence[Any],
    settings: ExplainSettings,
    class_counts: MutableMapping[tuple[int, ...], int] | None,
) -> tuple[list[Any], _Groups]:
    """(results holding each invalid row's failure, the valid rows grouped by Captum call)."""
    results: list[Any] = [None] * len(rows)
    wanted: dict[int, ExplainOptions] = {}
    for index, row in enumerate(rows):
        try:
            wanted[index] = row_options(row, settings)
        except ValueError as exc:
            results[index] = RowFailure(400, str(exc))
    groups: _Groups = {}
    if not wanted:
        return results, groups
    shape = tuple(int(size) for size in inputs.shape[1:])
    known = None if class_counts is None else class_counts.get(shape)
    if known is not None and all(options.target is not None for options in wanted.values()):
        predicted, classes = [0] * len(wanted), known  # every class named: no forward needed
    else:
        predicted, classes = _class_count(forward, _select(inputs, list(wanted), len(rows)))
        if class_counts is not None:
            class_counts[shape] = classes
    for position, (index, options) in enumerate(wanted.items()):
        try:
            target = _resolve_target(options, predicted[position], classes)
        except ValueError as exc:
            results[index] = RowFailure(400, str(exc))
            continue
        groups.setdefault((options.n_steps, options.return_delta), []).append((index, target))
    return results, groups


def explain_batch(
    forward: Callable[..., Any],
    inputs: torch.Tensor,
    rows: Sequence[Any],
    settings: ExplainSettings,
    class_counts: MutableMapping[tuple[int, ...], int] | None = None,
) -> list[Any]:
    """One value per row: float64 attributions shaped like the row's input (a dict with the
    convergence delta when asked), or a :class:`RowFailure` for a row with invalid options.

    Rows without a target need one forward pass for the predicted class. ``class_counts``
    (the model's number of classes per input shape, kept by the caller between batches) spares
    that pass when every row names its target: the target is still checked against it.
    """
    if int(inputs.shape[0]) != len(rows):
        raise PredictionException(
            f"explain: {len(rows)} rows but the preprocessed batch has {inputs.shape[0]}", 500
        )
    integrated_gradients_class()  # 501 before any work when Captum is missing
    import torch

    results, groups = _plan(forward, inputs, rows, settings, class_counts)
    for (n_steps, delta), members in groups.items():
        indices = [index for index, _ in members]
        targets = [target for _, target in members if target is not None]
        attributions, deltas = integrated_gradients(
            forward,
            _select(inputs, indices, len(rows)),
            targets or None,
            n_steps=n_steps,
            internal_batch_size=settings.internal_batch_size,
            return_delta=delta,
        )
        maps = attributions.detach().to("cpu", dtype=torch.float64).numpy()
        for position, index in enumerate(indices):
            if deltas is None:
                results[index] = maps[position]
            else:
                value = float(deltas[position].item())
                results[index] = {"attributions": maps[position], "convergence_delta": value}
    return results


def _select(inputs: torch.Tensor, indices: list[int], total: int) -> torch.Tensor:
    """The rows ``indices`` of ``inputs`` (the tensor itself when that is all of them)."""
    if indices == list(range(total)):
        return inputs
    import torch

    return inputs[torch.tensor(indices, device=inputs.device)]


# pictures (front side) ------------------------------------------------------------------------
def wants_png(accept: str | None, format_param: str | None) -> bool:
    """Whether an explain request asks for a picture: ``?format=png`` or ``Accept: image/png``."""
    if format_param is not None:
        chosen = format_param.strip().lower()
        if chosen not in ("png", "json"):
            raise InvalidInput(f"format must be png or json, got {_shown(format_param)}")
        return chosen == "png"
    if not accept:
        return False
    return any(part.split(";", 1)[0].strip().lower() == "image/png" for part in accept.split(","))


def attribution_map(value: Any) -> np.ndarray[Any, np.dtype[np.float64]]:
    """A handler's explanation for one item as a float64 array (the delta dict unwrapped)."""
    if isinstance(value, Mapping) and "attributions" in value:
        value = value["attributions"]
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInput("the explanation is not numeric and cannot be drawn") from None
    if array.size == 0:
        raise InvalidInput("the explanation is empty and cannot be drawn")
    return array


def _plane(array: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """An array as one 2-D plane: leading singleton axes dropped, channels (C x H x W) summed."""
    plane = np.asarray(array, dtype=np.float64)
    while plane.ndim > 2 and plane.shape[0] == 1:
        plane = plane[0]
    if plane.ndim == 3:
        plane = plane.sum(axis=0)
    elif plane.ndim > 3:
        plane = plane.reshape(-1, plane.shape[-1])
    if plane.ndim == 1:
        plane = plane[np.newaxis, :]
    return plane


def input_picture(value: Any) -> np.ndarray[Any, np.dtype[np.float64]] | None:
    """A request item as a grey picture in [0, 1] (an encoded image or a numeric tensor)."""
    if isinstance(value, Mapping):
        value = value.get("data", value.get("body"))
    if isinstance(value, Mapping):  # a TorchServe JSON body carrying {"data": ...}
        value = value.get("data")
    if value is None:
        return None
    if isinstance(value, (str, bytes, bytearray)):
        try:
            image = open_image(image_bytes(value), MAX_PICTURE_PIXELS)
        except PredictionException:
            return None
        grey = np.asarray(image.convert("L"), dtype=np.float64)
        return grey / 255.0
    try:
        plane = _plane(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError):
        return None
    low, high = float(np.nanmin(plane)), float(np.nanmax(plane))
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    return (plane - low) / (high - low) if high > low else np.zeros_like(plane)


def _panel(plane: np.ndarray[Any, Any], picture: np.ndarray[Any, Any] | None) -> Any:
    """One item: red where attributions are positive, blue where negative, over the picture."""
    plane = np.nan_to_num(plane, nan=0.0, posinf=0.0, neginf=0.0)
    scale = float(np.abs(plane).max())
    strength = np.abs(plane) / scale if scale > 0 else np.zeros_like(plane)
    if picture is None or picture.shape != plane.shape:
        picture = np.full(plane.shape, 0.5)  # no matching input picture: a neutral grey ground
    grey = np.repeat(picture[:, :, np.newaxis], 3, axis=2) * 255.0
    colour = np.where(plane[:, :, np.newaxis] >= 0, [220.0, 30.0, 30.0], [30.0, 80.0, 230.0])
    alpha = strength[:, :, np.newaxis]
    pixels = grey * (1.0 - alpha) + colour * alpha
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def heatmap_png(explanations: Sequence[Any], inputs: Sequence[Any] | None = None) -> bytes:
    """One PNG: the items side by side, each its attributions over its input picture.

    Each panel is the attribution map's height x width (channels summed), enlarged by a whole
    factor until its longer side is at least :data:`MIN_PICTURE_SIDE` (less when the picture
    would pass :data:`MAX_PICTURE_PIXELS`); the input is drawn underneath when it decodes to a
    picture of the map's size, else a neutral grey. Text explanations (``words`` and
    ``importances``) are drawn as shaded words instead (:mod:`marserve.text_picture`).
    """
    if not explanations:
        raise InvalidInput("there is nothing to draw: no explanations")
    if all(text_picture.is_word_explanation(value) for value in explanations):
        return text_picture.words_png(explanations)  # text: shaded words, not a heatmap
    planes = [_plane(attribution_map(value)) for value in explanations]
    height = max(plane.shape[0] for plane in planes)
    width = max(plane.shape[1] for plane in planes)
    base = height * width * len(planes)
    if base > MAX_PICTURE_PIXELS:
        raise InvalidInput(
            f"too much to draw: {len(planes)} maps of up to {height}x{width} pixels exceed "
            f"{MAX_PICTURE_PIXELS} pixels"
        )
    wanted = math.ceil(MIN_PICTURE_SIDE / max(height, width))
    factor = max(1, min(wanted, math.isqrt(MAX_PICTURE_PIXELS // base)))
    given = list(inputs or [])
    canvas = np.zeros((height * factor, width * factor * len(planes), 3), dtype=np.uint8)
    for index, plane in enumerate(planes):
        picture = input_picture(given[index]) if index < len(given) else None
        big = _panel(plane, picture).repeat(factor, axis=0).repeat(factor, axis=1)
        left = index * width * factor
        canvas[: big.shape[0], left : left + big.shape[1]] = big
    out = io.BytesIO()
    Image.fromarray(canvas).save(out, format="PNG")
    return out.getvalue()
