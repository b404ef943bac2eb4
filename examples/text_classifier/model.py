"""The text classification model, in the shape of TorchServe's ``examples/text_classification``.

An ``nn.EmbeddingBag`` (mean of the n-gram vectors) then one linear layer. The defaults are the
sizes ``train.py`` produces (a vocabulary of exactly ``VOCAB_SIZE`` n-grams, five BBC topics), so
the server can build it with no arguments, as TorchServe's base handler does.
"""

from __future__ import annotations

import torch
from torch import nn

VOCAB_SIZE = 100_000
EMBED_DIM = 32
NUM_CLASS = 5


class TextClassificationModel(nn.Module):
    def __init__(
        self, vocab_size: int = VOCAB_SIZE, embed_dim: int = EMBED_DIM, num_class: int = NUM_CLASS
    ) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, embed_dim, sparse=True)
        self.fc = nn.Linear(embed_dim, num_class)
        self.init_weights()

    def init_weights(self, init_range: float = 0.05) -> None:
        self.embedding.weight.data.uniform_(-init_range, init_range)
        self.fc.weight.data.uniform_(-init_range, init_range)
        self.fc.bias.data.zero_()

    def forward(self, text: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.fc(self.embedding(text, offsets))
        return result
