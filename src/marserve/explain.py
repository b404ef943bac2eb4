"""Explanations in the workers: Captum integrated gradients over whole batches.

The pictures the REST front draws of them live in :mod:`marserve.explain_render`.

- :func:`explain_batch` explains every row of a batch with Captum's
  ``IntegratedGradients`` (baseline zeros, Gauss-Legendre steps), one Captum call per distinct
  ``(n_steps, return_delta)`` in the batch, with ``internal_batch_size`` bounding how many scaled
  inputs go through the model at once. torch and captum are imported only when a request needs
  them, so this module stays importable in the front process.

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

import re
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from marserve.handlers.exceptions import PredictionException

if TYPE_CHECKING:
    import torch

__all__ = [
    "INSTALL_HINT",
    "ExplainOptions",
    "ExplainSettings",
    "RowFailure",
    "explain_batch",
    "integrated_gradients",
    "integrated_gradients_class",
    "row_options",
]

INSTALL_HINT = "pip install 'marserve[explain]'"
DEFAULT_N_STEPS = 50
DEFAULT_MAX_N_STEPS = 500
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
