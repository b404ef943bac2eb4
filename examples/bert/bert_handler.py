"""TorchServe handler for the BERT example: a Hugging Face sequence classifier with explanations.

It follows TorchServe's ``Transformer_handler_generalized`` conventions (``setup_config.json``
with ``model_name``, ``mode``, ``do_lower_case``, ``num_labels``, ``max_length``,
``captum_explanation``, ``embedding_name``; ``index_to_name.json``; the model and tokenizer saved
with ``save_pretrained`` in the archive) and imports TorchServe's public handler API, so the same
file runs under marserve (its ``ts`` shim) and under TorchServe; rows are read by marserve's text
helpers (``marserve.handlers.text``, which needs only numpy), so under TorchServe marserve is
installed beside it.

Each row's text is a string (KServe v1 ``{"data": "..."}``, v2 ``BYTES``), bytes, or a 1-D array of
byte codes (the v2 ``INT64`` form in the KServe docs). A row that is not valid text gets its own
400; the rest of the batch is still answered. Explanations are Captum
``LayerIntegratedGradients`` over ``<embedding_name>.embeddings`` from a ``[CLS] [PAD]... [SEP]``
baseline (one call for the rows of each token length), returning TorchServe's
``{"words", "importances", "delta"}`` per row; ``target`` and ``n_steps`` may be given per row.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ts.torch_handler.base_handler import BaseHandler

from marserve.handlers.text import row_text  # the built-in text handlers' row rules

DEFAULT_N_STEPS = 50
MAX_N_STEPS = 500
EXPLAIN_TOKENS_PER_PASS = 8192  # tokens through one forward/backward pass of an explanation


def row_int(row: Any, key: str, default: int | None, low: int, high: int) -> int | None:
    """An optional integer option of a row (``target``, ``n_steps``), range-checked."""
    value = row.get(key) if isinstance(row, dict) else None
    if value is None:
        return default
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{key} must be an integer")
    if not low <= int(value) <= high:
        raise ValueError(f"{key} must be between {low} and {high}, got {value}")
    return int(value)


class TransformersSeqClassifierHandler(BaseHandler):
    """Sequence classification with a Hugging Face model saved in the archive."""

    def initialize(self, ctx: Any) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.manifest = ctx.manifest
        model_dir = Path(ctx.system_properties["model_dir"])
        gpu = ctx.system_properties.get("gpu_id")
        use_gpu = gpu is not None and torch.cuda.is_available()
        self.device = torch.device(f"cuda:{gpu}" if use_gpu else "cpu")
        self.setup_config = json.loads((model_dir / "setup_config.json").read_text())
        if self.setup_config.get("mode", "sequence_classification") != "sequence_classification":
            raise ValueError("this handler serves mode sequence_classification only")
        self.max_length = int(self.setup_config.get("max_length", 128))
        self.tokenizer = AutoTokenizer.from_pretrained(
            model_dir, do_lower_case=bool(self.setup_config.get("do_lower_case", True))
        )
        model = AutoModelForSequenceClassification.from_pretrained(model_dir)
        self.model = model.to(self.device).eval()
        mapping = model_dir / "index_to_name.json"
        self.mapping = json.loads(mapping.read_text()) if mapping.is_file() else None
        self.explainable = str(self.setup_config.get("captum_explanation", True)).lower() == "true"
        self.embedding_name = str(self.setup_config.get("embedding_name", "bert"))
        self.initialized = True

    # the TorchServe steps ---------------------------------------------------------------------
    def preprocess(self, texts: list[str]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(
            texts,
            max_length=self.max_length,
            truncation=True,
            padding=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        return {k: encoded[k].to(self.device) for k in ("input_ids", "attention_mask")}

    def inference(self, inputs: dict[str, torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode():
            return self.model(**inputs).logits

    def postprocess(self, logits: torch.Tensor) -> list[Any]:
        classes = logits.argmax(1).tolist()
        if self.mapping is None:
            return classes
        return [self.mapping.get(str(c), str(c)) for c in classes]

    # batching, per-row failures and explanations ---------------------------------------------
    def handle(self, data: list[Any] | None, context: Any) -> list[Any] | None:
        self.context = context
        if data is None:
            return None
        started = time.perf_counter()
        explaining = self._is_explain()
        results: list[Any] = [None] * len(data)
        good: list[tuple[int, str, Any]] = []
        for index, row in enumerate(data):
            try:
                options = self.explain_options(row) if explaining else None
                good.append((index, row_text(row), options))
            except ValueError as exc:
                self._fail(results, index, str(exc))
        if good:
            texts = [text for _, text, _ in good]
            if explaining:
                values = self.explain_texts(texts, [opts for _, _, opts in good])
            else:
                values = self.postprocess(self.inference(self.preprocess(texts)))
            for (index, _, _), value in zip(good, values, strict=True):
                results[index] = value
        metrics = getattr(context, "metrics", None)
        if hasattr(metrics, "add_time"):  # TorchServe's HandlerTime, as its BaseHandler records
            elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
            metrics.add_time("HandlerTime", elapsed_ms, None, "ms")
        return results

    def _fail(self, results: list[Any], index: int, message: str) -> None:
        results[index] = {"error": message}
        if self.context is not None:
            self.context.set_response_status(400, message, index)

    def explain_options(self, row: Any) -> tuple[int | None, int]:
        if not self.explainable:
            raise ValueError("explanations are off for this model (captum_explanation)")
        target = row_int(row, "target", None, 0, self.model.config.num_labels - 1)
        n_steps = row_int(row, "n_steps", DEFAULT_N_STEPS, 1, MAX_N_STEPS)
        return target, int(n_steps or DEFAULT_N_STEPS)

    def explain_texts(self, texts: list[str], options: list[Any]) -> list[Any]:
        """One ``{"words", "importances", "delta"}`` per text.

        Rows of the same token length and ``n_steps`` share one Captum call; rows of other
        lengths get their own, so no row is ever padded and each equals Captum run on that
        sentence alone (padding is masked, but it changes the float sums by ~1e-6).
        """
        results: list[Any] = [None] * len(texts)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, (text, (_, n_steps)) in enumerate(zip(texts, options, strict=True)):
            length = len(
                self.tokenizer(text, max_length=self.max_length, truncation=True).input_ids
            )
            groups.setdefault((n_steps, length), []).append(index)
        for (n_steps, _), indices in groups.items():
            chosen = [texts[i] for i in indices]
            targets = [options[i][0] for i in indices]
            values = self.get_insights_batch(chosen, targets, n_steps)
            for i, value in zip(indices, values, strict=True):
                results[i] = value
        return results

    def get_insights_batch(
        self, texts: list[str], targets: list[int | None], n_steps: int
    ) -> list[dict[str, Any]]:
        from captum.attr import LayerIntegratedGradients

        inputs = self.preprocess(texts)
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        if any(t is None for t in targets):
            predicted = self.inference(inputs).argmax(1).tolist()
            targets = [p if t is None else t for t, p in zip(targets, predicted, strict=True)]
        baseline = reference_ids(ids, mask, self.tokenizer)
        layer = getattr(self.model, self.embedding_name).embeddings
        explainer = LayerIntegratedGradients(self.sequence_logits, layer)
        attributions, delta = explainer.attribute(
            inputs=ids,
            baselines=baseline,
            target=targets,
            additional_forward_args=(mask,),
            n_steps=n_steps,
            internal_batch_size=scaled_rows_per_pass(ids.shape[0], ids.shape[1], n_steps),
            return_convergence_delta=True,
        )
        summed = attributions.sum(dim=-1).detach()
        out = []
        for row in range(ids.shape[0]):
            length = int(mask[row].sum())
            scores = summed[row, :length]
            scores = scores / torch.norm(scores)
            words = self.tokenizer.convert_ids_to_tokens(ids[row, :length].tolist())
            out.append({"words": words, "importances": scores.tolist(), "delta": float(delta[row])})
        return out

    def sequence_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        return self.model(input_ids, attention_mask=attention_mask).logits

    def get_insights(self, tensor_data: Any, raw_data: Any, target: Any = 0) -> list[Any]:
        """TorchServe's single-row explain hook: the row's text and target."""
        text = row_text({"data": raw_data})
        return self.get_insights_batch([text], [int(target or 0)], DEFAULT_N_STEPS)


def scaled_rows_per_pass(rows: int, length: int, n_steps: int) -> int | None:
    """Captum's ``internal_batch_size``: None (one pass) while the scaled inputs hold at most
    :data:`EXPLAIN_TOKENS_PER_PASS` tokens, else as many sequences as fit (at least ``rows``):
    attention keeps sequences x heads x length^2 floats per layer for the backward pass."""
    if rows * n_steps * length <= EXPLAIN_TOKENS_PER_PASS:
        return None
    return max(rows, EXPLAIN_TOKENS_PER_PASS // max(1, length))


def reference_ids(ids: torch.Tensor, mask: torch.Tensor, tokenizer: Any) -> torch.Tensor:
    """TorchServe's baseline per row: ``[CLS]``, ``[PAD]`` for every text token, ``[SEP]``."""
    baseline = torch.full_like(ids, tokenizer.pad_token_id)
    lengths = mask.sum(1)
    baseline[:, 0] = tokenizer.cls_token_id
    baseline[torch.arange(ids.shape[0]), lengths - 1] = tokenizer.sep_token_id
    return baseline
