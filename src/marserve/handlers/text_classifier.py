"""``TextClassifier``: the built-in ``text_classifier`` handler (EmbeddingBag over n-grams).

TorchServe's handler of that name needs torchtext; this one carries its own ``basic_english``
tokenizer and n-grams (:mod:`marserve.handlers.text`). The archive holds the model file (an
``nn.Module`` with ``embedding`` = ``nn.EmbeddingBag`` and ``fc`` = ``nn.Linear``, called as
``model(ids, offsets)``), its state dict, ``source_vocab.json`` (the n-gram strings, index = id;
``<unk>`` is used for unknown n-grams) and optionally ``index_to_name.json``.

Rows are batched into one ``(ids, offsets)`` call; a row that is not text gets its own 400.
Predictions are ``{label: probability}`` per row. Explanations attribute to each n-gram the
model sees: the bag is rewritten as an embedding lookup plus a masked mean (the same outputs),
and Captum's ``LayerIntegratedGradients`` runs on the looked-up vectors from the ``<unk>``
baseline (TorchServe's zero ids), giving ``{"words", "importances", "delta"}`` in which
``importances[i]`` belongs to ``words[i]`` (the unigrams, then the bigrams).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from marserve.handlers.base_handler import BaseHandler
from marserve.handlers.context import Context
from marserve.handlers.exceptions import PredictionException
from marserve.handlers.labels import map_class_to_label
from marserve.handlers.text import TextInputError, ngrams, row_text, words

VOCAB_FILE = "source_vocab.json"
UNKNOWN = "<unk>"
#: At most this many n-gram vectors go through one forward/backward pass of an explanation.
EXPLAIN_IDS_PER_PASS = 1_000_000


def load_vocab(path: Path) -> dict[str, int]:
    """``source_vocab.json``: a list of n-grams (index = id) or a ``{n-gram: id}`` object."""
    if not path.is_file():
        raise RuntimeError(f"the text classifier needs {path.name} in the archive")
    loaded = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(loaded, list) and all(isinstance(t, str) for t in loaded):
        return {token: index for index, token in enumerate(loaded)}
    if isinstance(loaded, dict) and all(isinstance(i, int) for i in loaded.values()):
        return {str(k): int(v) for k, v in loaded.items()}
    raise RuntimeError(f"{path.name} must be a list of strings or an object of integer ids")


def scaled_rows_per_pass(rows: int, width: int, n_steps: int) -> int | None:
    """Captum's ``internal_batch_size``: None (one pass) unless the scaled inputs would hold
    more than :data:`EXPLAIN_IDS_PER_PASS` n-gram vectors, then as many as fit (at least
    ``rows``, Captum's minimum), so a long text cannot take gigabytes to explain."""
    if rows * n_steps * width <= EXPLAIN_IDS_PER_PASS:
        return None
    return max(rows, EXPLAIN_IDS_PER_PASS // max(1, width))


class TextClassifier(BaseHandler):
    """Classifies text with a bag-of-n-grams model; explains every n-gram it used."""

    ngrams = 2

    def initialize(self, context: Context) -> None:
        super().initialize(context)
        vocab = load_vocab(Path(context.system_properties["model_dir"]) / VOCAB_FILE)
        self.source_vocab = vocab
        self.unknown_id = vocab.get(UNKNOWN, 0)
        self.lookup = torch.nn.Identity()  # the layer Captum attributes to: one vector per n-gram

    # the TorchServe steps ----------------------------------------------------------------------
    def grams(self, text: str) -> list[str]:
        return list(ngrams(words(text), self.ngrams))

    def token_ids(self, grams: list[str]) -> list[int]:
        ids = [self.source_vocab.get(gram, self.unknown_id) for gram in grams]
        return ids or [self.unknown_id]  # a text of punctuation only is one unknown token

    def preprocess(self, data: Any) -> Any:
        """Texts (or rows) -> (flat ids, per-row offsets): one EmbeddingBag call's input."""
        texts = [t if isinstance(t, str) else row_text(t) for t in data]
        rows = [self.token_ids(self.grams(text)) for text in texts]
        offsets, start = [], 0
        for ids in rows:
            offsets.append(start)
            start += len(ids)
        flat = [i for ids in rows for i in ids]
        device = self.device
        return torch.tensor(flat, device=device), torch.tensor(offsets, device=device)

    def inference(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        ids, offsets = data
        with torch.inference_mode():
            return self.model(ids, offsets)

    def postprocess(self, data: Any) -> list[Any]:
        probabilities = F.softmax(data, dim=1).tolist()
        return map_class_to_label(probabilities, self.mapping)

    # batches with per-row failures -------------------------------------------------------------
    def handle(self, data: list[dict[str, Any]] | None, context: Context) -> list[Any]:
        self.context = context
        started = time.perf_counter()
        rows = data or []
        explaining = self._is_explain()
        results: list[Any] = [None] * len(rows)
        good: list[tuple[int, str, Any]] = []
        for index, row in enumerate(rows):
            try:
                options = self._options(row) if explaining else None
                good.append((index, row_text(row), options))
            except (TextInputError, ValueError) as exc:
                results[index] = {"error": str(exc)}
                context.set_response_status(400, str(exc), index)
        if good:
            texts = [text for _, text, _ in good]
            if explaining:
                values = self.explain_texts(texts, [options for _, _, options in good])
            else:
                values = self.postprocess(self.inference(self.preprocess(texts)))
            for (index, _, _), value in zip(good, values, strict=True):
                results[index] = value
        self._record_handler_time((time.perf_counter() - started) * 1000.0)
        return results

    def _options(self, row: Any) -> Any:
        from marserve.explain import row_options

        return row_options(row, self.explain_settings)

    # explanations ------------------------------------------------------------------------------
    def pooled_forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The model's output from padded ``ids`` (rows x n-grams): lookup, masked mean, fc."""
        vectors = self.lookup(F.embedding(ids, self.model.embedding.weight))
        weights = mask.unsqueeze(-1)
        pooled = (vectors * weights).sum(1) / weights.sum(1)
        result: torch.Tensor = self.model.fc(pooled)
        return result

    def _check_explainable(self) -> None:
        bag = getattr(self.model, "embedding", None)
        if not isinstance(bag, torch.nn.EmbeddingBag) or bag.mode != "mean":
            raise PredictionException(
                "explanations need a model whose 'embedding' is an nn.EmbeddingBag in mean mode",
                501,
            )
        if not isinstance(getattr(self.model, "fc", None), torch.nn.Module):
            raise PredictionException("explanations need the model's 'fc' layer", 501)

    def explain_texts(self, texts: list[str], options: list[Any]) -> list[Any]:
        """One ``{"words", "importances", "delta"}`` per text; one Captum call per n_steps."""
        self._check_explainable()
        results: list[Any] = [None] * len(texts)
        groups: dict[int, list[int]] = {}
        for index, option in enumerate(options):
            groups.setdefault(option.n_steps, []).append(index)
        for n_steps, indices in groups.items():
            targets = [options[i].target for i in indices]
            values = self.attribute([texts[i] for i in indices], targets, n_steps)
            for index, value in zip(indices, values, strict=True):
                results[index] = value
        return results

    def attribute(
        self, texts: list[str], targets: list[int | None], n_steps: int
    ) -> list[dict[str, Any]]:
        """Captum LayerIntegratedGradients on the n-gram vectors of a batch of texts."""
        from marserve.explain import integrated_gradients_class

        integrated_gradients_class()  # a 501 naming the extra when Captum is missing
        from captum.attr import LayerIntegratedGradients

        grams = [self.grams(text) or [UNKNOWN] for text in texts]
        rows = [self.token_ids(g) for g in grams]
        width = max(len(ids) for ids in rows)
        ids = torch.full((len(rows), width), self.unknown_id, dtype=torch.long)
        mask = torch.zeros(len(rows), width)
        for index, row in enumerate(rows):
            ids[index, : len(row)] = torch.tensor(row)
            mask[index, : len(row)] = 1.0
        ids, mask = ids.to(self.device), mask.to(self.device)
        classes = self._targets(ids, mask, targets)
        explainer = LayerIntegratedGradients(self.pooled_forward, self.lookup)
        attributions, delta = explainer.attribute(
            ids,
            baselines=torch.full_like(ids, self.unknown_id),
            target=classes,
            additional_forward_args=(mask,),
            n_steps=n_steps,
            internal_batch_size=scaled_rows_per_pass(len(rows), width, n_steps),
            return_convergence_delta=True,
        )
        summed = attributions.sum(-1).detach().to("cpu", torch.float64)
        out = []
        for index, row in enumerate(rows):
            scores = summed[index, : len(row)]
            norm = torch.linalg.vector_norm(scores)
            scores = scores / norm if norm > 0 else scores
            words_used = grams[index]
            out.append(
                {"words": words_used, "importances": scores.tolist(), "delta": float(delta[index])}
            )
        return out

    def _targets(
        self, ids: torch.Tensor, mask: torch.Tensor, wanted: list[int | None]
    ) -> list[int]:
        with torch.no_grad():
            logits = self.pooled_forward(ids, mask)
        classes = int(logits.shape[1])
        predicted = logits.argmax(1).tolist()
        chosen = []
        for target, guess in zip(wanted, predicted, strict=True):
            if target is not None and target >= classes:
                raise PredictionException(f"target must be below {classes} (the classes)", 400)
            chosen.append(guess if target is None else target)
        return chosen

    def get_insights(self, tensor_data: Any, raw_data: Any, target: Any = 0) -> list[Any]:
        """TorchServe's per-row explain hook: the row's text and target."""
        text = row_text({"data": raw_data})
        return self.attribute([text], [int(target or 0)], 50)
