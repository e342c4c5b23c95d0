"""The alignment of benchmarks/source_alignment.py equals a per-sample autograd loop."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.source_alignment import alignments


def test_alignments_match_autograd_loop() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    meta_x, meta_y = torch.randn(11, 5), torch.randint(0, 3, (11,))
    x, y = torch.randn(6, 5), torch.randint(0, 3, (6,))

    parameters = list(model.parameters())
    meta_grad = torch.autograd.grad(F.cross_entropy(model(meta_x), meta_y), parameters)
    expected = []
    for row in range(len(x)):
        sample_grad = torch.autograd.grad(F.cross_entropy(model(x[row : row + 1]), y[row : row + 1]), parameters)
        expected.append(sum(float((a * b).sum()) for a, b in zip(sample_grad, meta_grad)))

    result = alignments(model, meta_x, meta_y, x, y)

    assert result.shape == (6,)
    assert torch.allclose(torch.as_tensor(result), torch.tensor(expected, dtype=torch.float64), rtol=1e-4, atol=1e-6)
    # Samples pull in different directions, so a sign error or a swapped argument would show.
    assert (result > 0).any()
    assert (result < 0).any()
