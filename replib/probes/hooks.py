"""One lifecycle for the forward hooks the kit puts inside a network: capturing representations
(`representations.capture_features`), recording Wen et al.'s guidance norm (`detection.record_guidance`) and steering
(`steering.steer`) all find their blocks by name with `resolve` and attach their hooks for the length of a `with`
block with `attached`, which removes them on exit, also on error."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from torch import nn

Hook = Callable  # (module, inputs, output) -> None | replacement output; a pre-hook: (module, inputs) -> None


def resolve(model: nn.Module, names: Iterable[str]) -> dict[str, nn.Module]:
    """name -> submodule for every name; unknown names raise a KeyError that lists some names that exist nearby."""
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        hint = {n: [m for m in modules if n.split(".")[0] in m][:5] for n in missing}
        raise KeyError(f"no submodule named {missing}; some that exist: {hint}")
    return {n: modules[n] for n in names}


@contextmanager
def attached(forward: Iterable[tuple[nn.Module, Hook]] = (), pre: Iterable[tuple[nn.Module, Hook]] = ()
             ) -> Iterator[None]:
    """Register the (module, hook) pairs as forward hooks and the `pre` pairs as forward pre-hooks while the block
    runs; every one is removed on exit, also on error."""
    handles = []
    try:
        handles += [module.register_forward_pre_hook(hook) for module, hook in pre]
        handles += [module.register_forward_hook(hook) for module, hook in forward]
        yield
    finally:
        for handle in handles:
            handle.remove()
