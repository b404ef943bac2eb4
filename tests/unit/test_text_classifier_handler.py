"""The built-in text_classifier handler in-process: batching, per-row 400s, explanations, errors."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from marserve.handlers import Context, PredictionException, load_entry_point
from marserve.handlers.loader import import_module_file
from marserve.handlers.text import ngrams, words

MODEL = """
    import torch
    from torch import nn


    class Bag(nn.Module):
        def __init__(self, vocab_size=12, embed_dim=4, num_class=3):
            super().__init__()
            self.embedding = nn.EmbeddingBag(vocab_size, embed_dim, mode="{mode}")
            self.fc = nn.Linear(embed_dim, num_class)

        def forward(self, text, offsets):
            return self.fc(self.embedding(text, offsets))
"""
VOCAB = ["<unk>", "good", "bad", "film", "plot", "good film", "bad plot", "a", "the", "is"]


@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))


def model_dir(tmp: Path, mode: str = "mean", vocab: Any = VOCAB) -> Path:
    (tmp / "model.py").write_text(textwrap.dedent(MODEL).replace("{mode}", mode))
    torch.manual_seed(0)
    module = import_module_file(tmp / "model.py", f"text_bag_model_{mode}")
    torch.save(module.Bag().state_dict(), tmp / "model.pt")
    if vocab is not None:
        (tmp / "source_vocab.json").write_text(json.dumps(vocab))
    (tmp / "index_to_name.json").write_text(json.dumps({"0": "a", "1": "b", "2": "c"}))
    return tmp


def context(folder: Path) -> Context:
    model = {"modelName": "tc", "handler": "text_classifier", "modelFile": "model.py"}
    manifest = {"runtime": "python", "model": {**model, "serializedFile": "model.pt"}}
    return Context("tc", str(folder), manifest, 4, None, "0.1.0")


def serve(folder: Path, rows: list[Any], explain: bool = False) -> tuple[list[Any], Context, Any]:
    """The handler's answer to one batch, its context, and the handler itself."""
    ctx = context(folder)
    entry = load_entry_point("text_classifier", folder, ctx)
    headers = {"explain": "True"} if explain else {}
    ctx.begin_batch([f"r{i}" for i in range(len(rows))], [dict(headers) for _ in rows])
    return entry(rows, ctx), ctx, getattr(entry, "__self__", None)


def test_a_batch_is_one_bag_call_with_offsets(tmp_path: Path) -> None:
    folder = model_dir(tmp_path)
    texts = ["Good film!", "the plot is bad", "unknown words only"]
    values, ctx, handler = serve(folder, [{"data": t} for t in texts])
    index = {gram: i for i, gram in enumerate(VOCAB)}
    for text, value in zip(texts, values, strict=True):
        ids = torch.tensor([index.get(g, 0) for g in ngrams(words(text), 2)])
        with torch.no_grad():
            expected = torch.softmax(handler.model(ids, torch.tensor([0])), 1)[0].tolist()
        assert list(value) == ["a", "b", "c"]
        assert list(value.values()) == pytest.approx(expected, rel=1e-6)
    assert all(ctx.get_response_status(i)[0] == 200 for i in range(3))


def test_a_bad_row_fails_alone(tmp_path: Path) -> None:
    values, ctx, _ = serve(model_dir(tmp_path), [{"data": "good"}, {"data": ""}, {"data": b"\xff"}])
    assert set(values[0]) == {"a", "b", "c"}
    assert values[1] == {"error": "text is empty"}
    assert ctx.get_response_status(1) == (400, "text is empty")
    assert ctx.get_response_status(2)[0] == 400 and "UTF-8" in values[2]["error"]


def test_explanations_give_each_ngram_its_importance(tmp_path: Path) -> None:
    rows = [{"data": "good film"}, {"data": "the plot is bad, a bad plot", "target": 2}]
    values, _, _ = serve(model_dir(tmp_path), rows, explain=True)
    first, second = values
    assert first["words"] == ["good", "film", "good film"]
    assert second["words"] == list(ngrams(words(rows[1]["data"]), 2))  # type: ignore[arg-type]
    for value in values:
        assert len(value["importances"]) == len(value["words"])
        assert sum(x * x for x in value["importances"]) == pytest.approx(1.0)
        assert abs(value["delta"]) < 1e-4


def test_explain_options_are_checked_per_row(tmp_path: Path) -> None:
    rows = [{"data": "good", "n_steps": 0}, {"data": "good", "target": "x"}, {"data": "good"}]
    values, ctx, _ = serve(model_dir(tmp_path), rows, explain=True)
    assert ctx.get_response_status(0)[0] == 400 and "n_steps" in values[0]["error"]
    assert ctx.get_response_status(1)[0] == 400 and "target" in values[1]["error"]
    assert "importances" in values[2]


def test_a_bag_that_does_not_average_cannot_be_explained(tmp_path: Path) -> None:
    with pytest.raises(PredictionException, match="mean mode") as info:
        serve(model_dir(tmp_path, mode="sum"), [{"data": "good"}], explain=True)
    assert info.value.error_code == 501


@pytest.mark.parametrize(
    ("vocab", "message"), [(None, "needs source_vocab.json"), ({"a": "b"}, "must be a list")]
)
def test_the_vocabulary_must_be_usable(tmp_path: Path, vocab: Any, message: str) -> None:
    folder = model_dir(tmp_path, vocab=vocab)
    if vocab is None:
        (folder / "source_vocab.json").unlink(missing_ok=True)
    with pytest.raises(RuntimeError, match=message):
        load_entry_point("text_classifier", folder, context(folder))


def test_long_texts_are_explained_in_bounded_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunking the scaled inputs bounds memory and gives the same importances."""
    from marserve.handlers import text_classifier

    assert text_classifier.scaled_rows_per_pass(2, 100, 50) is None
    assert text_classifier.scaled_rows_per_pass(2, 20_000, 50) == 50
    assert text_classifier.scaled_rows_per_pass(8, 900_000, 50) == 8  # never below the rows
    rows = [{"data": "good film, bad plot " * 40}, {"data": "the film is good"}]
    whole, _, _ = serve(model_dir(tmp_path), rows, explain=True)
    monkeypatch.setattr(text_classifier, "EXPLAIN_IDS_PER_PASS", 500)
    assert text_classifier.scaled_rows_per_pass(2, 319, 50) == 2
    chunked, _, _ = serve(model_dir(tmp_path), rows, explain=True)
    for one, other in zip(whole, chunked, strict=True):
        assert one["words"] == other["words"]
        assert one["importances"] == pytest.approx(other["importances"], rel=1e-6, abs=1e-7)
