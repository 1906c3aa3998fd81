"""What several test modules share: a tiny regression that `training.loop.fit`, a bare loop and the resume tests all
train (a linear model learns y = x1 + x2 + x3 with Adam, whose state a resume must restore, batches drawn from the
loop's generator), and `Counter`, a computation that counts its calls (the cache tests: computed once, then loaded)."""
import torch
from torch import nn


def make():
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    return model, torch.optim.Adam(model.parameters(), lr=0.05)


def step(model, g):
    x = torch.randn(8, 3, generator=g).to(next(model.parameters()).device)
    return (model(x).squeeze(1) - x.sum(1)).pow(2).mean()


class Counter:
    """A zero-argument computation returning `value` that counts how often it ran."""

    def __init__(self, value):
        self.calls, self.value = 0, value

    def __call__(self):
        self.calls += 1
        return self.value
