"""The paper's two-layer ReLU denoising autoencoder f(x) = W2 relu(W1^T x), no bias.

One module holds a *bank* of M independent DAEs as tensors of shape (M, d, p), so a sweep over data sizes and seeds
trains as one batched tensor program (`torch.bmm`) instead of a Python loop over models. M = 1 is a single model.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class ReLUDAE(nn.Module):
    """A bank of `n_models` two-layer ReLU DAEs f(x) = W2 relu(W1^T x) of input size `dim` and width `width`.

    tied=True uses W2 = W1 (the paper's main setting). Inputs of shape (M, B, d) give outputs (M, B, d); inputs of
    shape (B, d) are accepted when M = 1.
    """

    def __init__(self, dim: int, width: int, tied: bool = True, n_models: int = 1, init_scale: float | None = None,
                 seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        scale = init_scale if init_scale is not None else 1.0 / math.sqrt(dim)
        self.dim, self.width, self.tied, self.n_models = dim, width, tied, n_models
        self.W1 = nn.Parameter(scale * torch.randn(n_models, dim, width, generator=g))
        self.W2 = None if tied else nn.Parameter(scale * torch.randn(n_models, dim, width, generator=g))

    @property
    def decoder(self) -> torch.Tensor:
        """W2, shape (M, d, p): its columns are what the model writes back, the paper's 'weight columns'."""
        return self.W1 if self.W2 is None else self.W2

    def _batched(self, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        if x.dim() == 2:
            if self.n_models != 1:
                raise ValueError(f"input of shape {tuple(x.shape)} needs a model axis: this bank holds {self.n_models}")
            return x.unsqueeze(0), True
        return x, False

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The hidden representation h = relu(W1^T x): the vector whose spikiness the paper measures."""
        xb, single = self._batched(x)
        h = torch.relu(torch.bmm(xb, self.W1))
        return h[0] if single else h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xb, single = self._batched(x)
        out = torch.bmm(torch.relu(torch.bmm(xb, self.W1)), self.decoder.transpose(1, 2))
        return out[0] if single else out

    def select(self, i: int) -> "ReLUDAE":
        """Model i of the bank as a stand-alone DAE (a copy)."""
        m = ReLUDAE(self.dim, self.width, self.tied, 1)
        with torch.no_grad():
            m.W1.copy_(self.W1[i : i + 1])
            if self.W2 is not None:
                m.W2.copy_(self.W2[i : i + 1])
        return m
