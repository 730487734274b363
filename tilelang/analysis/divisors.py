"""Powers of two that provably divide sizes: the divisibility facts `Function.assume`
gives (``assume(K % 128)``), carried through tensor-dimension expressions.

`tilelang.passes.analyze` builds its divisibility analysis of scalars on these; the
lowering uses them for the strides of a tensor (the product of the sizes of the dims
after one), to tell when a byte offset of a sub-byte element splits exactly;
`infer_layouts` (`access_runs`) asks `access_run` how many elements one access of a row
may provably move, to give a load that cannot move 16 bytes at once a layout whose lanes
are adjacent.
"""

from __future__ import annotations

from tilelang.ir.nodes import Function
from tilelang.ir.shape_expr import BinOp, Lit, ShapeExpr, Sym

#: No divisor exceeds this (2**16): enough for every alignment decision.
CAP = 1 << 16


def pow2_factor(value: int, cap: int = CAP) -> int:
    """The largest power of two dividing `value` (at most `cap`; `cap` for 0)."""
    value = abs(int(value))
    if value == 0:
        return cap
    return min(value & -value, cap)


def size_divisor(fn: Function, name: str) -> int:
    """The power of two `Function.assume` says the size `name` is a multiple of (else 1)."""
    return max((d for n, d in fn.assume if n == name), default=1)


def shape_divisor(fn: Function, expr: ShapeExpr) -> int:
    """The divisor of a tensor dimension: a literal exactly, a size by `assume`."""
    if isinstance(expr, Lit):
        return pow2_factor(expr.value)
    if isinstance(expr, Sym):
        return size_divisor(fn, expr.name)
    if isinstance(expr, BinOp):
        lhs, rhs = shape_divisor(fn, expr.lhs), shape_divisor(fn, expr.rhs)
        if expr.op in ("+", "-", "%"):
            return min(lhs, rhs)
        if expr.op == "*":
            return min(lhs * rhs, CAP)
        if expr.op == "//" and isinstance(expr.rhs, Lit):
            return exact_quotient(lhs, expr.rhs.value)
        return 1
    raise TypeError(f"not a size expression: {expr!r}")


def stride_divisors(fn: Function, shape: tuple[ShapeExpr, ...]) -> tuple[int, ...]:
    """Per dim of a row-major tensor of `shape`, the divisor of its stride in elements
    (the product of the sizes after it; 1 for the last dim)."""
    found, stride = [], 1
    for dim in reversed(shape):
        found.append(stride)
        stride = min(stride * shape_divisor(fn, dim), CAP)
    return tuple(reversed(found))


def exact_quotient(divisor: int, by: int) -> int:
    """d(a // by) when d(a) = `divisor`: exact when `by` is a power of two dividing it."""
    if by > 0 and by & (by - 1) == 0 and divisor % by == 0:
        return max(divisor // by, 1)
    return 1


def access_run(last_dim: int, last_offset: int, bits: int) -> int | None:
    """The most consecutive elements of a row one access provably moves, or None when
    16 bytes (an access's widest) are provable.

    `last_dim` and `last_offset` are the divisors of the tensor's last dimension and of
    the access's offset along it. A run of r elements is one access only when the mask
    is constant over it and its start is aligned to its bytes: r must divide both (a
    row's start is then a multiple of r too, every stride being a multiple of the last
    dimension; the base pointer is 16-byte aligned), as `tilelang.passes.vectorize`
    decides after `analyze`.
    """
    run = min(last_dim, last_offset)
    return None if run * bits >= 128 else run


__all__ = [
    "CAP",
    "access_run",
    "exact_quotient",
    "pow2_factor",
    "shape_divisor",
    "size_divisor",
    "stride_divisors",
]
