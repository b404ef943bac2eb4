"""Small models for TorchServe's vision built-ins, as sources and as model folders."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import torch

DETECTOR = '''
import torch
from torch import nn


class TinyDetector(nn.Module):
    """Two boxes per image: the whole image (class 1, scored by its red mean) and a
    2x2 corner (class 2, always 0.1); a list of images or a batch tensor, as torchvision's."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, images):
        out = []
        for image in images:
            height, width = image.shape[-2:]
            red = image[0].mean() * self.scale
            out.append({
                "boxes": torch.tensor([[0.0, 0.0, float(width), float(height)],
                                       [0.0, 0.0, 2.0, 2.0]]),
                "labels": torch.tensor([1, 2]),
                "scores": torch.stack([red, torch.tensor(0.1)]),
            })
        return out
'''

SEGMENTER = '''
import torch
from torch import nn


class TinySegmenter(nn.Module):
    """Two classes per pixel: 'red' where the red channel is above green, as torchvision's
    segmentation models answer: {"out": N x classes x H x W}."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(20.0))

    def forward(self, x):
        red_minus_green = (x[:, 0] - x[:, 1]) * self.gain
        return {"out": torch.stack([-red_minus_green, red_minus_green], dim=1)}
'''

CLASSIFIER = '''
import torch
from torch import nn


class TinyDenseNet(nn.Module):
    """Six logits from the three channel means (and their negatives)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([10.0, 10.0, 10.0, -10.0, -10.0, -10.0]))

    def forward(self, x):
        means = x.mean(dim=(2, 3))
        return torch.cat([means, means], dim=1) * self.weight
'''


def model_dir(root: Path, source: str, labels: str | None) -> Path:
    """A model folder as an archive extracts: model.py, model.pt (its state dict), labels."""
    root.mkdir()
    (root / "model.py").write_text(textwrap.dedent(source))
    namespace: dict[str, Any] = {}
    exec(compile(textwrap.dedent(source), "model.py", "exec"), namespace)
    module = next(v for k, v in namespace.items() if k.startswith("Tiny"))()
    torch.save(module.state_dict(), root / "model.pt")
    if labels is not None:
        (root / "index_to_name.json").write_text(labels)
    return root
