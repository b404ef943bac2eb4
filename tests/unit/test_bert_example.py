"""The BERT example's pieces that need no model: data split, head folding, handler text rules."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from marserve.handlers import install_ts_shim
from marserve.handlers.loader import import_module_file

BERT = Path(__file__).resolve().parents[2] / "examples" / "bert"


@pytest.fixture(scope="module")
def examples() -> dict[str, object]:
    install_ts_shim()
    sys.path.insert(0, str(BERT))
    try:
        return {
            "data": import_module_file(BERT / "text_data.py", "bert_example_text_data"),
            "train": import_module_file(BERT / "train_head.py", "bert_example_train_head"),
            "handler": import_module_file(BERT / "bert_handler.py", "bert_example_handler"),
        }
    finally:
        sys.path.remove(str(BERT))


def test_the_split_holds_out_whole_movies(examples: dict[str, object]) -> None:
    data = examples["data"]
    rows = data.load_snippets()  # type: ignore[attr-defined]
    assert len(rows) == 4866 and {label for _, label, _ in rows} == {0, 1}
    train, test = data.movie_split(rows)  # type: ignore[attr-defined]
    assert (len(train), len(test)) == (3943, 923)
    movies: dict[str, set[str]] = {}
    for text, _, movie in rows:
        movies.setdefault(text, set()).add(movie)
    once = {text for text, found in movies.items() if len(found) == 1}  # 3 snippets repeat
    train_movies = {next(iter(movies[t])) for t, _ in train if t in once}
    test_movies = {next(iter(movies[t])) for t, _ in test if t in once}
    assert len(test_movies) == 31 and not train_movies & test_movies


def test_the_folded_head_equals_the_standardised_one(examples: dict[str, object]) -> None:
    """fit_head trains on standardised features and returns weights for the raw ones."""
    torch.manual_seed(1)
    x = torch.randn(200, 16) * 3 + 5
    y = (x[:, 0] > 5).long()
    weight, bias = examples["train"].fit_head(x, y, steps=50)  # type: ignore[attr-defined]
    assert weight.shape == (2, 16) and bias.shape == (2,)
    accuracy = float(((x @ weight.T + bias).argmax(1) == y).float().mean())
    assert accuracy > 0.9


def test_the_checked_in_head_fits_the_encoder() -> None:
    from safetensors.torch import load_file

    head = load_file(str(BERT / "classifier.safetensors"))
    assert head["classifier.weight"].shape == (2, 384) and head["classifier.bias"].shape == (2,)


def test_reference_ids_are_torchserves_baseline(examples: dict[str, object]) -> None:
    class Tokens:
        pad_token_id, cls_token_id, sep_token_id = 0, 101, 102

    ids = torch.tensor([[101, 7, 8, 9, 102], [101, 5, 102, 0, 0]])
    mask = (ids != 0).long()
    baseline = examples["handler"].reference_ids(ids, mask, Tokens())  # type: ignore[attr-defined]
    assert baseline.tolist() == [[101, 0, 0, 0, 102], [101, 0, 102, 0, 0]]


@pytest.mark.parametrize(
    ("row", "text"),
    [
        ({"data": "fine"}, "fine"),
        ({"body": b"fine"}, "fine"),
        ({"data": np.array(list(b"fine"), dtype=np.int64)}, "fine"),
        ({"body": {"text": "fine"}}, "fine"),
    ],
)
def test_handler_reads_text_rows(examples: dict[str, object], row: object, text: str) -> None:
    assert examples["handler"].row_text(row) == text  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"data": ""}, "text is empty"),
        ({"data": b"\xe2\x28\xa1"}, "not valid UTF-8"),
        ({"data": 1.5}, "expected text"),
        ({"data": "x" * 70000}, "over 65536 bytes"),
        ({"data": [300]}, "between 0 and 255"),
    ],
)
def test_handler_refuses_rows_that_are_not_text(
    examples: dict[str, object], row: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        examples["handler"].row_text(row)  # type: ignore[attr-defined]


def test_old_cached_builds_are_pruned(tmp_path: Path) -> None:
    builder = import_module_file(BERT / "build_store.py", "bert_example_build_store")
    for age, name in enumerate(["d", "c", "b", "a"]):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (time.time() - age * 60,) * 2)
    (tmp_path / ".build-1").mkdir()  # a build in progress
    builder.prune(tmp_path, tmp_path / "a")  # the oldest, but the one just used
    assert sorted(p.name for p in tmp_path.iterdir()) == [".build-1", "a", "c", "d"]


def test_explanations_of_long_batches_are_split_into_bounded_passes(
    examples: dict[str, object],
) -> None:
    split = examples["handler"].scaled_rows_per_pass  # type: ignore[attr-defined]
    assert split(1, 20, 50) is None  # a sentence: Captum's one direct pass
    assert split(8, 128, 50) == 64  # 8 x 50 scaled sequences of 128 tokens: 64 per pass
    assert split(200, 128, 50) == 200  # never fewer than the rows
