"""The elementwise operators of the block IR, one table row each, and the reduction and
scan operators.

A row of `ELEMENTWISE` is everything any layer needs to know about an operator: how
many operands and of which kinds it takes and what it gives (the verifier, the DSL),
its Python operator or `tl.` function (the DSL, `tilelang.lang.elementwise`), its exact
meaning as a numpy function (the reference interpreter), its thread-IR name (the
lowering) and how compiled code computes it on f32 and f64 (the LLVM and CUDA
emitters): an LLVM instruction, intrinsic or C math function and a CUDA function, or
an `expand` formula written with other operators of the table. f16 and bf16 compute in
f32 and round once. Adding an operator is adding a row (docs/design.md, "How to add an
operation"). Semantics, which the interpreter implements exactly and the backends
agree with:

- integer arithmetic wraps (two's complement at the operand width);
- `div` and `rem` on integers truncate toward zero (C semantics); `div` on floats is
  true division; integer `x / 0` is all ones and `x % 0` is x on every backend (the
  padding of a ragged tile may divide by zero without harm);
- `shl`/`shr` with a shift amount >= the width give 0 (or the sign fill for `shr` of a
  negative signed value), as PTX's clamped shifts do; `shr` is arithmetic for signed
  types and logical for unsigned ones; the amount is read as unsigned;
- float results are rounded (RNE) to the operand dtype after every operation; float
  `min`/`max` ignore a NaN operand and order -0 below +0 (PTX `min.f32`);
- comparisons give `u1` (0 or 1); `where(cond, a, b)` takes a `u1` condition;
- transcendental functions are the platform's: within a few ulps of the reference
  (float64 numpy rounded once), not bitwise. The CPU backend calls the C library:
  glibc's f32 `asin`, `acos`, `atan`, `atan2`, `cbrt`, `cosh`, `pow` were within 1 ulp
  of the correctly rounded value over 2^18 arguments, `sinh` within 2 (tests allow 2
  for `pow`, `sinh`, `cosh`); CUDA's guide states f32 bounds from 1 ulp (`cbrtf`) to
  8 (`powf`; `asinf` 4, `acosf`, `atan2f`, `sinhf` 3). `pow` has C's special cases
  (Annex F: a negative x with a non-integer y is NaN, pow(x, 0) = pow(1, y) = 1);
- `popc`, `clz`, `brev` and `umulhi` take 32- and 64-bit integers only (the GPU's
  `popc`, `clz`, `brev` and `mul.hi` widths; Triton's too) and read them as unsigned
  bits; `popc` and `clz` give an i32 count, the others the operand dtype;
- a row marked `flush` gives +0 or -0 where its result is below f32's smallest normal
  (2^-126) in magnitude, as PTX's `.ftz` instructions do: `fast_exp2` is
  `ex2.approx.ftz.f32` on the GPU (MUFU.EX2 alone, 2 ulps), where `exp2` spends three
  more instructions a value on results that would be subnormal.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction
from functools import cache

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType


class Operand(Enum):
    INT = "int"
    FLOAT = "float"
    ANY = "any"


class Result(Enum):
    SAME = "same"  # the dtype of the (non-condition) operands
    BOOL = "bool"  # u1
    I32 = "i32"  # a count of bits, whatever the operand's width (as CUDA's __popcll gives)


@dataclass(frozen=True)
class ElementwiseOp:
    """One elementwise operator (see the module docstring for who reads which field).

    `reference` computes the exact result on float64 values (and on int64 values too
    when `int_reference` is absent); `int_reference(dtype, *ints)` on int64 values
    before wrapping. `llvm` and `cuda` spell the f32 and f64 forms (of a row whose
    `widths` are (32, 64): the 32- and 64-bit forms): an LLVM instruction (`fadd`),
    intrinsic (`llvm.exp.f32`), C math function (`log1pf`) or a formula the LLVM emitter
    writes out (`tl.umulhi`); a CUDA function (`expf`) or prefix operator (`-`). `expand`
    instead writes the operator in others
    of the table, as a Python expression of `x` (and `y`), e.g. `max(x, 0) + log1p(exp(-abs(x)))`.
    With `flush`, the interpreter and the LLVM emitter flush the result (`flushed`); the
    CUDA spellings are instructions that flush themselves. `typed_reference(dtype,
    *floats)` replaces `reference` where the exact result depends on the operand dtype
    (`fma` rounds once at f32 or at f64).
    """

    name: str
    arity: int
    operands: Operand
    doc: str
    result: Result = Result.SAME
    python: str | None = None
    dsl: str | None = None
    thread: str | None = None
    reference: Callable[..., np.ndarray] | None = None
    int_reference: Callable[..., np.ndarray] | None = None
    llvm: tuple[str, str] | None = None
    cuda: tuple[str, str] | None = None
    expand: str | None = None
    flush: bool = False  # results below 2^-126 in magnitude become zeros (module docstring)
    typed_reference: Callable[..., np.ndarray] | None = None
    widths: tuple[int, ...] | None = None  # the integer widths it takes (None: every one)

    def accepts(self, dtype: DType) -> bool:
        """Whether operands of `dtype` are of the kind (and width) the operator takes."""
        if self.operands is Operand.ANY:
            return True
        if self.operands is Operand.FLOAT:
            return dtype.is_float
        return not dtype.is_float and (self.widths is None or dtype.bits in self.widths)

    @property
    def operand_noun(self) -> str:
        """How an error names the operands it takes ("needs integer operands")."""
        if self.widths is not None:
            return "- or ".join(map(str, self.widths)) + "-bit integer"
        return "integer" if self.operands is Operand.INT else self.operands.value

    @property
    def thread_op(self) -> str:
        """The operator's name in thread IR."""
        return self.thread or self.name

    def result_dtype(self, operand: DType) -> DType:
        """The dtype of the result on operands of dtype `operand`."""
        if self.result is Result.SAME:
            return operand
        return dtypes.u1 if self.result is Result.BOOL else dtypes.i32

    @property
    def value_operand(self) -> int:
        """The first operand whose dtype is the operation's (where's condition is not)."""
        return 1 if self.name == "where" else 0


# -- reference semantics of the integer and float corner cases ---------------------------


def c_div(t, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer division truncating toward zero (C), from numpy's floor division; a
    division by zero gives all ones (and its remainder the dividend)."""
    zero = b == 0
    safe = np.where(zero, 1, b)
    q = np.floor_divide(a, safe)
    inexact = (a - q * safe) != 0
    if t.signed:
        q = np.where(inexact & ((a < 0) != (safe < 0)), q + 1, q)
    return np.where(zero, -1, q)


def c_rem(t, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(b == 0, a, a - c_div(t, a, b) * b)  # the dividend's sign, as in C


def _shift_amount_too_big(t, b: np.ndarray) -> np.ndarray:
    # PTX takes the amount as unsigned, so a negative signed amount is a huge one.
    return (b >= t.bits) | (b < 0) if t.signed else b >= t.bits


def _shl(t, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    big = _shift_amount_too_big(t, b)
    amount = np.where(big, 0, b).astype(a.dtype)
    return np.where(big, 0, np.left_shift(a, amount)).astype(a.dtype)


def _shr(t, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    big = _shift_amount_too_big(t, b)
    if t.signed:  # a is sign-extended in int64: shifting by width-1 leaves the sign fill
        return np.right_shift(a, np.where(big, t.bits - 1, b).astype(a.dtype))
    amount = np.where(big, 0, b).astype(a.dtype)
    return np.where(big, 0, np.right_shift(a, amount)).astype(a.dtype)


def zero_sign(result: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Float min/max order -0 below +0 (PTX min/max): a zero result is -0 exactly when
    `negative` says a -0 decides it (min: any operand -0; max: every zero operand -0)."""
    result = np.asarray(result)
    zero = result == 0
    if not zero.any():
        return result
    return np.where(zero, np.where(negative, -0.0, 0.0).astype(result.dtype), result)


def _negative_zero(x: np.ndarray) -> np.ndarray:
    return (x == 0) & np.signbit(x)


def _positive_zero(x: np.ndarray) -> np.ndarray:
    return (x == 0) & ~np.signbit(x)


def _fmin(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return zero_sign(np.fmin(a, b), _negative_zero(a) | _negative_zero(b))


def _fmax(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return zero_sign(np.fmax(a, b), ~(_positive_zero(a) | _positive_zero(b)))


def _fma(dtype, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """a·b + c rounded once: to f32 for f16, bf16 and f32 operands (which f16 and bf16
    round again, as every operation they compute in f32), to f64 for f64 ones."""
    a, b, c = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (a, b, c)))
    if dtype.bits == 64:
        return np.frompyfunc(_fma_f64, 3, 1)(a, b, c).astype(np.float64)
    with np.errstate(all="ignore"):
        product = a * b  # exact: two f32 significands fit in f64's
        total = product + c
        back = total - product
        error = (product - (total - back)) + (c - back)  # total + error = a·b + c exactly
        # Round to odd at f64 (an inexact total with an even last bit moves toward the
        # error): rounding that to f32 is then a·b + c rounded once (53 >= 24 + 2 bits).
        even = (total.view(np.int64) & 1) == 0
        nudge = (error != 0) & even & np.isfinite(total)
        total = np.where(nudge, np.nextafter(total, np.copysign(np.inf, error)), total)
        return total.astype(np.float32).astype(np.float64)


def _fma_f64(a: float, b: float, c: float) -> float:
    """a·b + c rounded once to f64, exactly (rationals; Fraction's float() rounds to
    nearest even), with IEEE's infinities, NaNs and zero signs."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return a * b + c
    if not math.isfinite(c):
        return c  # a finite product does not change an infinite or NaN addend
    exact = Fraction(a) * Fraction(b) + Fraction(c)
    if exact == 0:  # an exact cancellation is +0; zero terms keep their signs' sum
        return a * b + c if a == 0 or b == 0 else 0.0
    try:
        return float(exact)
    except OverflowError:
        return math.copysign(math.inf, exact)


#: f32's smallest normal: a `flush` row's results below it in magnitude are zeros.
FLUSH_BELOW = 2.0**-126


def flushed(result: np.ndarray) -> np.ndarray:
    """`result` with the magnitudes below `FLUSH_BELOW` made zeros of the same sign."""
    result = np.asarray(result)
    return np.where(np.abs(result) < FLUSH_BELOW, np.copysign(0.0, result), result)


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # e^x / (1 + e^x) below 0, where e^-x would overflow (f32 from x < -88.7, while the
    # result is a normal or subnormal number down to x = -103.9).
    e = np.exp(-np.abs(x))
    return np.where(x < 0, e, 1.0) / (1.0 + e)


_erf = np.vectorize(math.erf, otypes=[np.float64])


# -- bit operations on 32- and 64-bit words (results as uint64 bit patterns, wrapped by
# the interpreter to the result dtype) ------------------------------------------------------


def _bits(t, a: np.ndarray) -> np.ndarray:
    """The two's complement bits of `a` (of dtype `t`) as uint64 values."""
    return np.asarray(a).astype(np.uint64) & np.uint64((1 << t.bits) - 1)


def _popc(t, a: np.ndarray) -> np.ndarray:
    return np.bitwise_count(_bits(t, a)).astype(np.int64)


def _clz(t, a: np.ndarray) -> np.ndarray:
    """Leading zeros by halving: where the top s bits are zeros, count s and shift them out."""
    x, count, step = _bits(t, a), np.zeros(np.shape(a), np.int64), t.bits // 2
    mask = np.uint64((1 << t.bits) - 1)
    while step:
        empty = (x >> np.uint64(t.bits - step)) == 0
        count += np.where(empty, step, 0)
        x = np.where(empty, (x << np.uint64(step)) & mask, x)
        step //= 2
    return count + (x == 0)  # a zero word ends with width - 1 counted and x still 0


def _brev(t, a: np.ndarray) -> np.ndarray:
    x, out = _bits(t, a), np.zeros(np.shape(a), np.uint64)
    for i in range(t.bits):
        out |= ((x >> np.uint64(i)) & np.uint64(1)) << np.uint64(t.bits - 1 - i)
    return out


def _umulhi(t, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The high half of the unsigned 2w-bit product, by 32-bit limbs (uint64 never overflows:
    each partial product is below 2^64 and each sum of carries below 2^34)."""
    x, y = _bits(t, a), _bits(t, b)
    if t.bits == 32:
        return (x * y) >> np.uint64(32)
    low, w = np.uint64(0xFFFFFFFF), np.uint64(32)
    x0, x1, y0, y1 = x & low, x >> w, y & low, y >> w
    middle = ((x0 * y0) >> w) + (x1 * y0 & low) + (x0 * y1 & low)
    return x1 * y1 + (x1 * y0 >> w) + (x0 * y1 >> w) + (middle >> w)


# -- the table ---------------------------------------------------------------------------


def _row(name: str, arity: int, operands: Operand, doc: str, **fields) -> ElementwiseOp:
    return ElementwiseOp(name, arity, operands, doc, **fields)


def _fn(name: str) -> dict:
    """Spellings of a float function that LLVM has as an intrinsic (`llvm.exp.f32`) and
    CUDA calls `name` (`expf` for f32)."""
    return {"llvm": (f"llvm.{name}.f32", f"llvm.{name}.f64"), "cuda": (f"{name}f", name)}


def _libm(name: str) -> dict:
    """A C math function with no LLVM intrinsic: the CPU backend calls the C library."""
    return {"llvm": (f"{name}f", name), "cuda": (f"{name}f", name)}


_F = Operand.FLOAT
_I = Operand.INT
_A = Operand.ANY
_WORDS = (32, 64)  # the GPU's popc, clz, brev and mul.hi widths (Triton's too)
_B = Result.BOOL
_I32 = Result.I32

ELEMENTWISE: dict[str, ElementwiseOp] = {
    op.name: op
    for op in (
        # unary
        _row("neg", 1, _A, "-x", python="-", reference=np.negative,
             llvm=("fneg", "fneg"), cuda=("-", "-")),
        _row("invert", 1, _I, "bitwise not", python="~", thread="not",
             int_reference=lambda t, a: np.invert(a)),
        _row("abs", 1, _A, "|x|", dsl="abs", reference=np.abs, **_fn("fabs")),
        _row("exp", 1, _F, "e^x", dsl="exp", reference=np.exp, **_fn("exp")),
        _row("exp2", 1, _F, "2^x", dsl="exp2", reference=np.exp2, **_fn("exp2")),
        _row("fast_exp2", 1, _F, "2^x, 2 ulps, results below 2^-126 flushed to +0",
             dsl="fast_exp2", reference=np.exp2, flush=True,
             llvm=("llvm.exp2.f32", "llvm.exp2.f64"), cuda=("tl_ex2_ftz", "tl_exp2_ftz_f64")),
        _row("log", 1, _F, "natural logarithm", dsl="log", reference=np.log, **_fn("log")),
        _row("log2", 1, _F, "base-2 logarithm", dsl="log2", reference=np.log2, **_fn("log2")),
        _row("log1p", 1, _F, "log(1 + x), accurate near 0", dsl="log1p", reference=np.log1p,
             **_libm("log1p")),
        _row("sqrt", 1, _F, "square root (correctly rounded)", dsl="sqrt", reference=np.sqrt,
             llvm=("llvm.sqrt.f32", "llvm.sqrt.f64"), cuda=("__fsqrt_rn", "__dsqrt_rn")),
        _row("rsqrt", 1, _F, "1 / sqrt(x)", dsl="rsqrt", reference=lambda a: 1.0 / np.sqrt(a),
             expand="1 / sqrt(x)"),
        _row("sin", 1, _F, "sine", dsl="sin", reference=np.sin, **_fn("sin")),
        _row("cos", 1, _F, "cosine", dsl="cos", reference=np.cos, **_fn("cos")),
        _row("tanh", 1, _F, "hyperbolic tangent", dsl="tanh", reference=np.tanh, **_fn("tanh")),
        _row("erf", 1, _F, "error function (exact GELU: x/2 * (1 + erf(x / sqrt 2)))",
             dsl="erf", reference=_erf, **_libm("erf")),
        _row("sigmoid", 1, _F, "1 / (1 + e^-x), without overflow", dsl="sigmoid",
             reference=_sigmoid, expand="exp(min(x, 0)) / (1 + exp(-abs(x)))"),
        _row("softplus", 1, _F, "log(1 + e^x), without overflow", dsl="softplus",
             reference=_softplus, expand="max(x, 0) + log1p(exp(-abs(x)))"),
        _row("floor", 1, _F, "round down", dsl="floor", reference=np.floor, **_fn("floor")),
        _row("ceil", 1, _F, "round up", dsl="ceil", reference=np.ceil, **_fn("ceil")),
        _row("asin", 1, _F, "arcsine in [-π/2, π/2]; NaN outside [-1, 1]; f32: 1 ulp (CPU), 4 (CUDA)", dsl="asin",
             reference=np.arcsin, **_fn("asin")),
        _row("acos", 1, _F, "arccosine in [0, π]; NaN outside [-1, 1]; f32: 1 ulp (CPU), 3 (CUDA)", dsl="acos",
             reference=np.arccos, **_fn("acos")),
        _row("atan", 1, _F, "arctangent in [-π/2, π/2]; f32: 1 ulp (CPU), 2 (CUDA)", dsl="atan", reference=np.arctan,
             **_fn("atan")),
        _row("sinh", 1, _F, "hyperbolic sine; f32: 2 ulps (CPU), 3 (CUDA)", dsl="sinh", reference=np.sinh, **_fn("sinh")),
        _row("cosh", 1, _F, "hyperbolic cosine; f32: 2 ulps (CPU), 2 (CUDA)", dsl="cosh", reference=np.cosh, **_fn("cosh")),
        _row("cbrt", 1, _F, "cube root (of a negative x: negative); f32: 1 ulp (CPU), 1 (CUDA)", dsl="cbrt",
             reference=np.cbrt, **_libm("cbrt")),
        _row("popc", 1, _I, "the number of one bits", result=_I32, dsl="popc", widths=_WORDS,
             int_reference=_popc, llvm=("llvm.ctpop.i32", "llvm.ctpop.i64"),
             cuda=("__popc", "__popcll")),
        _row("clz", 1, _I, "the number of zero bits above the highest one (of 0: the width)",
             result=_I32, dsl="clz", widths=_WORDS, int_reference=_clz,
             llvm=("llvm.ctlz.i32", "llvm.ctlz.i64"), cuda=("__clz", "__clzll")),
        _row("brev", 1, _I, "the bits in reverse order (bit i becomes bit width-1-i)",
             dsl="brev", widths=_WORDS, int_reference=_brev, llvm=("llvm.bitreverse.i32", "llvm.bitreverse.i64"),
             cuda=("__brev", "__brevll")),
        _row("trunc", 1, _F, "round toward zero (C's and Triton's float-to-int cast; -0.5 gives -0.0)",
             dsl="trunc", reference=np.trunc, **_fn("trunc")),
        # binary arithmetic
        _row("add", 2, _A, "x + y", python="+", reference=np.add,
             llvm=("fadd", "fadd"), cuda=("__fadd_rn", "__dadd_rn")),
        _row("sub", 2, _A, "x - y", python="-", reference=np.subtract,
             llvm=("fsub", "fsub"), cuda=("__fsub_rn", "__dsub_rn")),
        _row("mul", 2, _A, "x * y", python="*", reference=np.multiply,
             llvm=("fmul", "fmul"), cuda=("__fmul_rn", "__dmul_rn")),
        _row("div", 2, _A, "x / y; integers divide with `//`, truncated toward zero as in C, not floored as in Python (-7 // 2 is -3), x // 0 all ones", python="/",
             reference=np.true_divide, int_reference=c_div,
             llvm=("fdiv", "fdiv"), cuda=("__fdiv_rn", "__ddiv_rn")),
        _row("rem", 2, _I, "x % y with the dividend's sign as in C, not Python's (-7 % 3 is -1); x % 0 is x", python="%",
             int_reference=c_rem, llvm=("frem", "frem"), cuda=("fmodf", "fmod")),
        _row("min", 2, _A, "the smaller (floats: NaN ignored, -0 < +0)", dsl="minimum",
             reference=_fmin, int_reference=lambda t, a, b: np.minimum(a, b),
             llvm=("llvm.minimumnum.f32", "llvm.minimumnum.f64"), cuda=("fminf", "fmin")),
        _row("max", 2, _A, "the larger (floats: NaN ignored, -0 < +0)", dsl="maximum",
             reference=_fmax, int_reference=lambda t, a, b: np.maximum(a, b),
             llvm=("llvm.maximumnum.f32", "llvm.maximumnum.f64"), cuda=("fmaxf", "fmax")),
        _row("atan2", 2, _F, "the angle in [-π, π] of the point at ordinate x, abscissa y (C's atan2, "
             "same order: atan2(1, -1) is 3π/4); f32: 1 ulp (CPU), 3 (CUDA)",
             dsl="atan2", reference=np.arctan2, **_fn("atan2")),
        _row("pow", 2, _F, "x^y as C's pow: a negative x with a non-integer y gives NaN, "
             "pow(x, 0) and pow(1, y) give 1 (NaN too); f32: 2 ulps (CPU), 8 (CUDA)", dsl="pow", reference=np.power,
             **_fn("pow")),
        _row("umulhi", 2, _I, "the high half of the 2w-bit product of x and y read as "
             "unsigned (both w-bit)", dsl="umulhi", widths=_WORDS, int_reference=_umulhi,
             llvm=("tl.umulhi", "tl.umulhi"), cuda=("__umulhi", "__umul64hi")),
        # binary bit operations
        _row("and", 2, _I, "bitwise and", python="&", int_reference=lambda t, a, b: a & b),
        _row("or", 2, _I, "bitwise or", python="|", int_reference=lambda t, a, b: a | b),
        _row("xor", 2, _I, "bitwise xor", python="^", int_reference=lambda t, a, b: a ^ b),
        _row("shl", 2, _I, "shift left (by >= width or < 0: 0)", python="<<",
             int_reference=_shl),
        _row("shr", 2, _I, "shift right, arithmetic when signed (by >= width or < 0: "
             "0, or -1 for a negative signed x)", python=">>", int_reference=_shr),
        # comparisons
        _row("eq", 2, _A, "x == y", result=_B, python="==", reference=np.equal),
        _row("ne", 2, _A, "x != y", result=_B, python="!=", reference=np.not_equal),
        _row("lt", 2, _A, "x < y", result=_B, python="<", reference=np.less),
        _row("le", 2, _A, "x <= y", result=_B, python="<=", reference=np.less_equal),
        _row("gt", 2, _A, "x > y", result=_B, python=">", reference=np.greater),
        _row("ge", 2, _A, "x >= y", result=_B, python=">=", reference=np.greater_equal),
        # ternary
        _row("fma", 3, _F, "x·y + z rounded once (f16, bf16: in f32, then rounded)",
             dsl="fma", typed_reference=_fma, llvm=("llvm.fma.f32", "llvm.fma.f64"),
             cuda=("fmaf", "fma")),
        _row("where", 3, _A, "a where cond (u1) else b", dsl="where",
             reference=lambda c, a, b: np.where(c != 0, a, b)),
    )
}  # fmt: skip

#: Rows by their thread-IR name.
BY_THREAD_OP: dict[str, ElementwiseOp] = {op.thread_op: op for op in ELEMENTWISE.values()}

REDUCTIONS = ("sum", "prod", "max", "min", "and", "or", "xor")
SCANS = ("sum", "prod", "max", "min")

#: The elementwise operator that combines two elements of each reduction and scan.
COMBINE = {
    "sum": "add",
    "prod": "mul",
    "max": "max",
    "min": "min",
    "and": "and",
    "or": "or",
    "xor": "xor",
}


# -- expansions ----------------------------------------------------------------------------

_AST_OPERATORS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div"}


@cache
def _formula(text: str) -> ast.expr:
    return ast.parse(text, mode="eval").body


def expand(op: ElementwiseOp, args: list, apply: Callable, constant: Callable):
    """Evaluate `op.expand` with a backend's own operations: `apply(name, *values)` for
    an operator of the table, `constant(number)` for a literal; `args` are x (and y)."""
    bound = dict(zip("xy", args, strict=False))

    def walk(node: ast.expr):
        if isinstance(node, ast.Name):
            return bound[node.id]
        if isinstance(node, ast.Constant):
            return constant(float(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return apply("neg", walk(node.operand))
        if isinstance(node, ast.BinOp) and type(node.op) in _AST_OPERATORS:
            return apply(_AST_OPERATORS[type(node.op)], walk(node.left), walk(node.right))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return apply(node.func.id, *(walk(a) for a in node.args))
        raise ValueError(f"{op.name}: cannot expand {ast.unparse(node)!r}")

    return walk(_formula(op.expand))


def expansion_operators(op: ElementwiseOp) -> set[str]:
    """The operators `op.expand` uses (each must be a row whose compiled form exists)."""
    found: set[str] = set()
    expand(op, ["x", "y"], lambda name, *a: found.add(name), lambda value: None)
    return found


# -- compile-time integer folding ------------------------------------------------------------


def wrap(value: int, dtype) -> int:
    """`value` wrapped to the dtype's width (two's complement when signed)."""
    span = 1 << dtype.bits
    value %= span
    return value - span if dtype.signed and value >= span // 2 else value


def evaluate_int(op: str, a: int, b: int, dtype) -> int | None:
    """A binary operator on two integers of `dtype` by the semantics above: wrapped
    arithmetic, C division (x / 0 all ones, x % 0 x), clamped shifts whose amount is
    read as unsigned, comparisons 0 or 1. None for an operator it does not know."""
    if op in ("div", "rem"):
        if b == 0:
            return wrap(-1, dtype) if op == "div" else a
        quotient = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
        return wrap(quotient if op == "div" else a - quotient * b, dtype)
    if op in ("shl", "shr"):
        amount = b if b >= 0 else dtype.bits
        if amount >= dtype.bits:
            return -1 if op == "shr" and a < 0 else 0
        return wrap(a << amount, dtype) if op == "shl" else a >> amount
    if op in COMPARISONS:
        return int(COMPARISONS[op](a, b))
    arithmetic = _ARITHMETIC.get(op)
    return None if arithmetic is None else wrap(arithmetic(a, b), dtype)


# Tables, not dicts of results: a launch evaluates its grid through these on every call.
#: The comparison operators by name, on Python numbers (IEEE for floats: NaN unequal).
COMPARISONS = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}
_ARITHMETIC = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "min": min,
    "max": max,
    "and": operator.and_,
    "or": operator.or_,
    "xor": operator.xor,
}
