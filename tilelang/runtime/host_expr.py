"""Evaluating uniform thread-IR expressions on the host, for every launch path.

A launch needs a few facts before any kernel runs: the grid, written in the thread
IR as expressions of the scalar parameters and sizes, and the launch checks
(`ThreadFunction.checks`, e.g. "this loop's step is not zero"), conditions on the same
scalars. This module owns evaluating them with thread IR's semantics (wrapping
integers, truncating division, clamped shifts, saturating integer `Cvt`). It depends on nothing but the IR and `tilelang.dtypes`, so
the GPU launch path uses it without loading the CPU backend (llvmlite).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from tilelang import dtypes
from tilelang.ir import thread as t
from tilelang.ir.ops import evaluate_int, wrap

__all__ = ["check_launch", "eval_grid", "eval_host_expr"]


def eval_host_expr(e: t.Expr, scalars: Mapping[str, int | float]) -> int | float:
    """A uniform thread-IR expression of the scalar parameters, on the host, with thread
    IR's integer semantics (wrapping, truncating division, clamped shifts, saturating
    integer `Cvt`). Floats are supported for `Imm`, `Name`, `Cvt` and `Select`."""
    if isinstance(e, t.Imm):
        return wrap(int(e.value), e.type) if e.type.is_int else float(e.value)
    if isinstance(e, t.Name):
        if e.name not in scalars:
            raise ValueError(f"the grid uses %{e.name}, which is not a scalar argument")
        value = scalars[e.name]
        return wrap(int(value), e.type) if e.type.is_int else float(value)
    if isinstance(e, t.Select):
        cond = eval_host_expr(e.cond, scalars)
        return eval_host_expr(e.a if cond else e.b, scalars)
    if isinstance(e, t.Cvt):
        return _convert(eval_host_expr(e.a, scalars), e.type)
    if isinstance(e, t.Binary) and e.a.dtype.is_int:
        a, b = eval_host_expr(e.a, scalars), eval_host_expr(e.b, scalars)
        folded = evaluate_int(e.op, a, b, e.a.dtype)
        if folded is None:
            raise ValueError(f"cannot evaluate {e.op} on the host")
        return folded
    if isinstance(e, t.Unary) and e.a.dtype.is_int:
        a = eval_host_expr(e.a, scalars)
        table = {"neg": -a, "not": ~a, "abs": abs(a), "floor": a, "ceil": a}
        return wrap(table[e.op], e.a.dtype)
    raise ValueError(f"cannot evaluate {type(e).__name__} on the host")


def eval_grid(grid: tuple[t.Expr, ...], scalars: Mapping[str, int | float]) -> tuple[int, ...]:
    """The number of blocks per grid dimension for these scalar and size arguments."""
    return tuple(int(eval_host_expr(g, scalars)) for g in grid)


def check_launch(
    checks: tuple[tuple[t.Expr, str], ...], scalars: Mapping[str, int | float]
) -> None:
    """A `ValueError` with its message for the first launch check that does not hold
    for these scalar and size arguments (the message names the user's source line)."""
    for condition, message in checks:
        if not eval_host_expr(condition, scalars):
            raise ValueError(message)


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
