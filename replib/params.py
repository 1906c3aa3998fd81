"""Parameter checks for the notebooks' `parameters` cells.

Every check raises :class:`ParameterError` whose message names the parameter, the bad value and what is allowed, so a
papermill run with a wrong value stops at the top of the notebook with a sentence a learner can act on.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any


class ParameterError(ValueError):
    """A notebook parameter has a value outside its allowed set."""


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ParameterError(f"parameter {name}={value!r} is not allowed: {name} must be {allowed}")


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """`value` must be one of `allowed`."""
    allowed = list(allowed)
    if value not in allowed:
        _fail(name, value, "one of " + ", ".join(repr(a) for a in allowed))
    return value


def check_int(name: str, value: Any, minimum: int = 1, maximum: int | None = None) -> int:
    """`value` must be an integer in [minimum, maximum]."""
    rng = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) and not (
        isinstance(value, numbers.Real) and float(value).is_integer()
    ):
        _fail(name, value, rng)
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        _fail(name, value, rng)
    return value


def check_float(
    name: str, value: Any, minimum: float = 0.0, maximum: float | None = None, strict: bool = False
) -> float:
    """`value` must be a real number >= minimum (> minimum when `strict`) and <= maximum."""
    op = ">" if strict else ">="
    rng = f"a finite number {op} {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        _fail(name, value, rng)
    value = float(value)
    if not math.isfinite(value) or (value <= minimum if strict else value < minimum) or (
        maximum is not None and value > maximum
    ):
        _fail(name, value, rng)
    return value


def check_int_list(name: str, values: Any, minimum: int = 1, min_length: int = 1, maximum: int | None = None,
                   increasing: bool = False) -> list[int]:
    """`values` must be a list of at least `min_length` integers in [minimum, maximum], strictly increasing when
    `increasing` (e.g. a sweep whose first and last entries the notebook compares)."""
    what = f"a list of at least {min_length} integers >= {minimum}" + (f" and <= {maximum}" if maximum else "")
    what += ", in increasing order" if increasing else ""
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) < min_length:
        _fail(name, values, what)
    out = [check_int(f"{name}[{i}]", v, minimum, maximum) for i, v in enumerate(values)]
    if increasing and any(b <= a for a, b in zip(out, out[1:])):
        _fail(name, values, what)
    return out
