"""Evaluating uniform thread-IR expressions on the host, for every launch path.

A launch needs a few facts before any kernel runs: the grid, written in the thread
IR as expressions of the scalar parameters and sizes, and the launch checks
(`ThreadFunction.checks`, e.g. "this loop's step is not zero"), conditions on the same
scalars. This module owns evaluating them with thread IR's semantics (wrapping
integers, truncating division, clamped shifts, saturating integer `Cvt`):
`host_function` makes an expression once into a Python function of the scalars, which
a launcher calls on every launch (`grid_function`, `launch_checker`); `eval_host_expr`,
`eval_grid` and `check_launch` evaluate once. It depends on nothing but the IR and
`tilelang.dtypes`, so the GPU launch path uses it without loading the CPU backend
(llvmlite).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from tilelang import dtypes
from tilelang.ir import thread as t
from tilelang.ir.ops import COMPARISONS, evaluate_int, wrap

__all__ = [
    "check_launch",
    "eval_grid",
    "eval_host_expr",
    "grid_function",
    "host_function",
    "launch_checker",
]


HostFunction = Callable[[Mapping[str, int | float]], int | float]


def host_function(e: t.Expr) -> HostFunction:
    """`e` made once into a Python function of the scalar arguments that evaluates it
    with thread IR's integer semantics (wrapping, truncating division, clamped shifts,
    saturating integer `Cvt`); a launcher that evaluates the same expressions every
    call makes them once. Floats are supported for `Imm`, `Name` (rounded to its dtype),
    `Cvt`, `Select` and comparisons; anything else is a `ValueError` here, before any
    call."""
    if isinstance(e, t.Imm):
        value = wrap(int(e.value), e.type) if e.type.is_int else float(e.value)
        return lambda scalars: value
    if isinstance(e, t.Name):
        return _name_function(e)
    if isinstance(e, t.Select):
        cond, a, b = host_function(e.cond), host_function(e.a), host_function(e.b)
        return lambda scalars: a(scalars) if cond(scalars) else b(scalars)
    if isinstance(e, t.Cvt):
        a, to = host_function(e.a), e.type
        return lambda scalars: _convert(a(scalars), to)
    if isinstance(e, t.Binary) and e.a.dtype.is_int:
        return _binary_function(e)
    if isinstance(e, t.Binary) and e.op in COMPARISONS:  # a requirement on a float scalar
        a, b, compare = host_function(e.a), host_function(e.b), COMPARISONS[e.op]
        return lambda scalars: int(compare(a(scalars), b(scalars)))
    if isinstance(e, t.Unary) and e.a.dtype.is_int and e.op in _INT_UNARY:
        a, op, dtype = host_function(e.a), _INT_UNARY[e.op], e.a.dtype
        return lambda scalars: wrap(op(a(scalars)), dtype)
    raise ValueError(f"cannot evaluate {type(e).__name__} on the host")


_INT_UNARY = {
    "neg": lambda a: -a,
    "not": lambda a: ~a,
    "abs": abs,
    "floor": lambda a: a,
    "ceil": lambda a: a,
    "trunc": lambda a: a,
}


def _name_function(e: t.Name) -> HostFunction:
    name, dtype = e.name, e.type

    def value_of(scalars: Mapping[str, int | float]) -> int | float:
        if name not in scalars:
            raise ValueError(
                f"the grid uses {name!r}, which was not given: pass the scalar argument "
                f"or size {name}=..."
            )
        value = scalars[name]
        return wrap(int(value), dtype) if dtype.is_int else _convert(float(value), dtype)

    return value_of


def _binary_function(e: t.Binary) -> HostFunction:
    a, b, op, dtype = host_function(e.a), host_function(e.b), e.op, e.a.dtype
    if evaluate_int(op, 1, 1, dtype) is None:
        raise ValueError(f"cannot evaluate {op} on the host")

    return lambda scalars: evaluate_int(op, a(scalars), b(scalars), dtype)


def eval_host_expr(e: t.Expr, scalars: Mapping[str, int | float]) -> int | float:
    """A uniform thread-IR expression of the scalar parameters, evaluated once on the
    host (`host_function`'s semantics)."""
    return host_function(e)(scalars)


def grid_function(grid: tuple[t.Expr, ...]) -> Callable[[Mapping[str, int | float]], tuple]:
    """The number of blocks per grid dimension as a function of the scalar and size
    arguments, made once."""
    dims = tuple(host_function(g) for g in grid)
    return lambda scalars: tuple(int(dim(scalars)) for dim in dims)


def eval_grid(grid: tuple[t.Expr, ...], scalars: Mapping[str, int | float]) -> tuple[int, ...]:
    """The number of blocks per grid dimension for these scalar and size arguments."""
    return grid_function(grid)(scalars)


def launch_checker(
    checks: tuple[tuple[t.Expr, str], ...],
) -> Callable[[Mapping[str, int | float]], None]:
    """`check_launch` for these checks, its conditions made once."""
    made = tuple((host_function(condition), message) for condition, message in checks)

    def check(scalars: Mapping[str, int | float]) -> None:
        for condition, message in made:
            if not condition(scalars):
                raise ValueError(message)

    return check


def check_launch(
    checks: tuple[tuple[t.Expr, str], ...], scalars: Mapping[str, int | float]
) -> None:
    """A `ValueError` with its message for the first launch check that does not hold
    for these scalar and size arguments (the message names the user's source line)."""
    launch_checker(checks)(scalars)


def _convert(value: int | float, to: dtypes.DType) -> int | float:
    """`Cvt` on the host: u1 is "non-zero and not NaN"; to an integer, round to nearest
    even and saturate, NaN -> 0 (the casting policy); to a float, round to `to`."""
    if to == dtypes.u1:
        return int(value != 0 and value == value)
    if to.is_int:
        if isinstance(value, float):
            if math.isnan(value):
                return 0
            if math.isinf(value):
                return to.max if value > 0 else to.min
            value = round(value)  # ties to even
        return max(to.min, min(to.max, int(value)))
    return float(dtypes.quantize(value, to))
