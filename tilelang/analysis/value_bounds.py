"""Bounds on the values of tiles, from the value facts `Function.assume` states about
tensors (``assume(0 <= s < 64)``: every element of the tensor s is +0 or positive, sign
bit clear, and below 64; no NaN), carried to the tiles that hold those elements.

A tile's values come from tensors through loads (a global `Load`, or a `SharedLoad` of
a shared buffer that only `CopyAsync`s from tensors write: the pipelined form of a
load) and value-preserving moves (`Broadcast`, `Relayout`, `Reshape`; shared slices and
transposes of a buffer), and through steps whose bound follows from their operand's:
a cast between float types whose mantissa the target holds (f8e4m3 or e8m0 to f16: a
value below b stays below b) or from unsigned to wider unsigned integers, a `View` of
unsigned codes as a float type (codes below c are the values up to the code c − 1's,
when none is NaN or inf; a `View` in the same type only rearranges them), a product with a positive power-of-two constant (b·c, while
finite) and a left shift of unsigned integers by a constant k (b·2^k, while no bit is
shifted out: how a kernel builds a float's bits from an exponent code). The lowering
folds a group scale into a dequantization recipe only where such a bound proves the
fold exact (`tilelang.lowering.scale_folds`); the launch checks the facts on the arrays
before running (`tilelang.kernel`).

Finiteness (`ValueBounds.finite`): the fact ``assume(finite(w))`` says no element of
the float tensor w is inf or NaN (and a bound says so too). It follows the element
bits: through the same loads and moves, and through every `View` (a view keeps the
bits, so the codes of w's type stay finite codes of it, read as w's type again after
any detour through integers: how a kernel shuffles codes); a tile is finite when its
bits are finite codes of its own type. A cast to a float type keeps finite values
finite when the target saturates or holds the source's largest value. The
dequantization recipes leave out their inf/NaN steps for a cast whose input is proven
finite (`tilelang.lowering.elementwise.proven_finite`).
"""

from __future__ import annotations

import math

import numpy as np

from tilelang.dtypes import DType, ExponentType, FloatType, IntType
from tilelang.ir import nodes as ir
from tilelang.ir.core import FINITE
from tilelang.ir.types import TensorType
from tilelang.ir.visit import walk


def tensor_bounds(fn: ir.Function) -> dict[str, int]:
    """The value facts of `fn`: tensor name -> b, meaning +0 <= every element < b."""
    tensors = {p.name for p in fn.params if isinstance(p.type, TensorType)}
    return {name: int(bound) for name, bound in fn.assume if name in tensors and bound != FINITE}


def finite_tensors(fn: ir.Function) -> dict[str, DType]:
    """The tensors of `fn` whose elements the facts prove finite (a "finite" fact or a
    bound), with their dtypes."""
    types = {p.name: p.type.dtype for p in fn.params if isinstance(p.type, TensorType)}
    return {name: types[name] for name, _ in fn.assume if name in types}


class ValueBounds:
    """Where the values of the tiles of one function come from, and what bounds them."""

    def __init__(self, fn: ir.Function) -> None:
        # A tensor the function writes may hold other values than the launch checked.
        written = {
            getattr(instr, name).name
            for instr in walk(fn)
            for name in getattr(instr, "WRITES", ())
            if isinstance(getattr(instr, name), ir.Var)
        }
        self.bounds = {n: b for n, b in tensor_bounds(fn).items() if n not in written}
        self.finite_tensors = {n: t for n, t in finite_tensors(fn).items() if n not in written}
        self._visiting: set[ir.Var] = set()  # shared buffers `_finite_shared` is reading
        self.producer: dict[ir.Var, ir.Instr] = {}
        self.writers: dict[ir.Var, list[ir.Instr]] = {}  # shared root -> its writers
        self.root: dict[ir.Var, ir.Var] = {}  # shared view -> the buffer it views
        for instr in walk(fn):
            for var in instr.defs():
                self.producer[var] = instr
            if isinstance(instr, ir.SharedSlice | ir.SharedTranspose):
                self.root[instr.result] = self.root.get(instr.shared, instr.shared)
            elif isinstance(instr, ir.CopyAsync | ir.SharedStore):
                target = self.root.get(instr.shared, instr.shared)
                self.writers.setdefault(target, []).append(instr)

    def below(self, var: ir.Value) -> float | None:
        """The least b the facts prove +0 <= every value of `var` < b for, or None."""
        if isinstance(var, ir.Const):
            return _const_bound(var)
        made = self.producer.get(var)
        if isinstance(made, ir.Broadcast | ir.Relayout | ir.Reshape):
            return self.below(made.value)
        if isinstance(made, ir.Load):
            fill = 1.0 if made.fill is None else _const_bound(made.fill)
            return _widest(self.bounds.get(made.tensor.name), fill)
        if isinstance(made, ir.SharedLoad):
            return self._shared_bound(self.root.get(made.shared, made.shared))
        if isinstance(made, ir.Cast) and _keeps_values(made.value.type.dtype, var.type.dtype):
            return self.below(made.value)
        if isinstance(made, ir.View) and made.value.type.dtype == var.type.dtype:
            return self.below(made.value)  # the same elements rearranged (tl.load_fragment)
        if isinstance(made, ir.View):
            return _view_bound(made.value.type.dtype, var.type.dtype, self.below(made.value))
        if isinstance(made, ir.Compute) and made.op == "mul" and len(made.args) == 2:
            return self._scaled_bound(made, var.type.dtype)
        if isinstance(made, ir.Compute) and made.op == "shl" and len(made.args) == 2:
            return self._shifted_bound(made, var.type.dtype)
        return None

    def finite(self, var: ir.Value) -> bool:
        """Whether the facts prove that no value of `var` is inf or NaN."""
        if isinstance(var, ir.Const):
            return math.isfinite(float(var.value))
        return isinstance(var.type.dtype, IntType) or self._finite_codes(var) == var.type.dtype

    def _finite_codes(self, var: ir.Value) -> DType | None:
        """The float type F such that the facts prove `var`'s bits, read as codes of F,
        finite values (its own dtype for a finite tile; another for bits viewed as
        other types on the way), or None."""
        if isinstance(var, ir.Const):
            return var.dtype if math.isfinite(float(var.value)) else None
        own = var.type.dtype
        if self.below(var) is not None:
            return own
        made = self.producer.get(var)
        if isinstance(made, ir.Broadcast | ir.Relayout | ir.Reshape | ir.View):
            return self._finite_codes(made.value)  # the same bits
        if isinstance(made, ir.Load):
            if made.fill is not None and not math.isfinite(float(made.fill.value)):
                return None
            return self.finite_tensors.get(made.tensor.name)
        if isinstance(made, ir.SharedLoad):
            return self._finite_shared(self.root.get(made.shared, made.shared))
        if isinstance(made, ir.Cast) and _keeps_finite(made.value, own, self.finite):
            return own
        return None

    def _finite_shared(self, buffer: ir.Var) -> DType | None:
        """The float type whose finite codes every writer of `buffer` stores, or None."""
        if buffer in self._visiting:  # a store of the buffer's own values: no new fact
            return None
        self._visiting.add(buffer)
        found = set()
        for writer in self.writers.get(buffer, ()):
            if isinstance(writer, ir.CopyAsync):
                found.add(self.finite_tensors.get(writer.tensor.name))
            else:
                found.add(self._finite_codes(writer.value))
        self._visiting.discard(buffer)
        return found.pop() if len(found) == 1 else None

    def _shifted_bound(self, made: ir.Compute, dtype: DType) -> float | None:
        """x << k of unsigned integers x below b, k a constant: below b·2^k when that
        fits the type (no bit shifted out, so no wrap)."""
        value, amount = made.args
        if not isinstance(amount, ir.Const) or isinstance(value, ir.Const):
            return None
        if not isinstance(dtype, IntType) or dtype.signed or int(amount.value) < 0:
            return None
        found = self.below(value)
        if found is None:
            return None
        shifted = math.ceil(found) << int(amount.value)
        return float(shifted) if shifted <= 1 << dtype.bits else None

    def _scaled_bound(self, made: ir.Compute, dtype: DType) -> float | None:
        """x · c with c a positive power-of-two constant: exact (or rounded toward 0 in
        the subnormals), so below b·c when b·c is a finite value of `dtype`."""
        consts = [a for a in made.args if isinstance(a, ir.Const)]
        tiles = [a for a in made.args if not isinstance(a, ir.Const)]
        if len(consts) != 1 or len(tiles) != 1 or not isinstance(dtype, FloatType):
            return None
        factor = float(consts[0].value)
        if not (factor > 0 and math.isfinite(factor) and math.frexp(factor)[0] == 0.5):
            return None
        found = self.below(tiles[0])
        if found is None or found * factor > dtype.max:
            return None
        return found * factor

    def _shared_bound(self, buffer: ir.Var) -> float | None:
        writers = self.writers.get(buffer)
        if not writers:
            return None
        found: float | None = 1.0  # the identity of _widest: every fact is >= 1
        for writer in writers:
            if isinstance(writer, ir.CopyAsync):
                found = _widest(found, self.bounds.get(writer.tensor.name))
            else:  # a SharedStore writes a tile's values
                found = _widest(found, self.below(writer.value))
        return found


def _const_bound(const: ir.Const) -> float | None:
    """The least power of two above a constant that is +0 or positive (None else)."""
    value = float(const.value)
    if math.isnan(value) or math.copysign(1.0, value) < 0 or math.isinf(value):
        return None
    return 2.0 ** (math.floor(math.log2(value)) + 1) if value > 0 else 1.0  # 0 < 1


def _keeps_values(source: DType, target: DType) -> bool:
    """Whether a cast keeps every value below a fact's bound (at most 65536) or lowers
    it: float types whose mantissa the target holds (the values below 2^16 are then
    exact in the target, and those below its normals round toward zero), or unsigned
    integers widened to unsigned integers (every value kept)."""
    if isinstance(source, IntType) and isinstance(target, IntType):
        return not source.signed and not target.signed and source.bits <= target.bits
    return (
        isinstance(source, FloatType | ExponentType)
        and isinstance(target, FloatType)
        and source.mantissa_bits <= target.mantissa_bits
        and target.max >= 65504.0
    )


def _keeps_finite(value: ir.Value, target: DType, finite) -> bool:
    """Whether a cast of `value` to `target` gives finite values: its values are finite
    (`finite`) and the target saturates (satfinite) or holds the source's largest
    magnitude (no rounding reaches inf)."""
    source = value.dtype if isinstance(value, ir.Const) else value.type.dtype
    if not isinstance(target, FloatType) or not finite(value):
        return False  # (e8m0 makes negative values and zero NaN)
    if target.saturates:
        return True
    largest = 2.0**source.bits if isinstance(source, IntType) else float(source.max)
    return largest <= float(target.max)


def _view_bound(source: DType, target: DType, codes_below: float | None) -> float | None:
    """The bound of unsigned integer codes below `codes_below` read as `target`'s values:
    the least power of two above the largest, when every such code is a finite value
    with its sign bit clear (codes below a float's sign bit grow with their values)."""
    if codes_below is None or not isinstance(source, IntType) or source.signed:
        return None
    if source.bits != target.bits or not isinstance(target, FloatType | ExponentType):
        return None
    count = int(codes_below)
    if count > 1 << min(target.bits, 16) or (
        isinstance(target, FloatType) and count > 1 << (target.bits - 1)
    ):
        return None
    values = np.asarray(target.decode(np.arange(count)), np.float64)
    if not np.isfinite(values).all():
        return None
    largest = float(values.max())
    return 2.0 ** (math.floor(math.log2(largest)) + 1) if largest > 0 else 1.0


def _widest(*bounds: float | None) -> float | None:
    return None if any(b is None for b in bounds) else max(bounds)  # type: ignore[type-var]
