"""Capture intermediate representations of any torch module (a DAE, a diffusers UNet, a Stable Diffusion pipeline's
UNet) with forward hooks, pooled over space: the vectors whose spikiness the paper measures.

    with capture_features(unet, ["up_blocks.0.resnets.2.nonlinearity"], pool="max") as feats:
        unet(x, t)
    v = feats["up_blocks.0.resnets.2.nonlinearity"]   # (batch, channels)

A module that runs more than once per forward pass (diffusers resnets reuse one `nonlinearity` module) is recorded
at every call; `calls` picks which (default: the last).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from .hooks import attached, resolve

POOLS = ("max", "mean", "none")


def pool_features(x: torch.Tensor, pool: str = "max") -> torch.Tensor:
    """(B, C, H, W) -> (B, C) by spatial max or mean; (B, ...) tensors of other ranks are flattened per sample
    when pool == "none" and returned as they are when already (B, C)."""
    if pool not in POOLS:
        raise ValueError(f"pool={pool!r} is not allowed: pool must be one of {POOLS}")
    if x.dim() == 4 and pool != "none":
        return x.amax(dim=(2, 3)) if pool == "max" else x.mean(dim=(2, 3))
    if x.dim() == 3 and pool != "none":  # (B, tokens, C) as in transformer blocks
        return x.amax(dim=1) if pool == "max" else x.mean(dim=1)
    return x.flatten(1)


class FeatureStore(dict):
    """name -> pooled tensor of the chosen call; `all_calls[name]` keeps every call's tensor."""

    def __init__(self):
        super().__init__()
        self.all_calls: dict[str, list[torch.Tensor]] = {}


@contextmanager
def capture_features(model: nn.Module, names: list[str] | str, pool: str = "max", calls: int = -1,
                     detach: bool = True) -> Iterator[FeatureStore]:
    """Record the (pooled) outputs of the named submodules while the block runs; hooks are removed on exit, also on
    error. Unknown names raise a KeyError that lists close matches."""
    names = [names] if isinstance(names, str) else list(names)
    modules = resolve(model, names)
    if pool not in POOLS:
        raise ValueError(f"pool={pool!r} is not allowed: pool must be one of {POOLS}")
    store = FeatureStore()

    def hook_for(name):
        def hook(_module, _inputs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            out = out.detach() if detach else out
            store.all_calls.setdefault(name, []).append(pool_features(out.float(), pool))
            store[name] = store.all_calls[name][-1]  # the latest while running; the chosen call after the block
        return hook

    try:
        with attached([(modules[n], hook_for(n)) for n in names]):
            yield store
    finally:
        for name, recorded in store.all_calls.items():
            if -len(recorded) <= calls < len(recorded):
                store[name] = recorded[calls]
