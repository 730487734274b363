"""When a group scale may fold into a dequantization recipe: ``q.to(f16) * s``, which
the block program defines as round(value(q) · s), once.

The recipes (`tilelang.lowering.dequant`) end in one step with a constant:

* unsigned integers: h − M, with h = M + c the half built under the magic M = 2^(T−r)
  (T mantissa bits, the code at bit r). Folded, (h − M)·s becomes one fma
  h·s + (−M·s) per pair: the fma rounds the exact h·s − M·s = c·s once, so the result
  is round(c·s) exactly while −M·s is finite (M is a power of two: the product is exact
  or overflows). For f16 and a code at bit 0 (M = 2^10) that is |s| < 64.
* small floats: x · 2^(bias_t − bias_s), x the code's bits placed in the target.
  Folded, x · (2^(bias_t − bias_s)·s): the same real product, rounded once, while the
  scaled scale is finite (f4e2m1 to f16: 2^14·s, so |s| < 4).

Recipes 6 and 7 (f8e4m3 and 6-bit floats through f8 bytes, `dequant`) fold the same
product with a smaller factor: the f16 of the exact value times s, or of value ·
2^(bias_s − bias_f8) times 2^(bias_f8 − bias_s)·s; a factor between 1 and C keeps
every product with the scales exact under the same fact. A constant scale c whose
factor·c is no f16 (where C·c is) keeps recipe 4.

A kernel cannot know its scales, so the fold needs a fact about them: the value fact
``assume(0 <= s < b)`` (`Function.assume`, `tilelang.analysis.value_bounds`), which a
launch checks on the arrays before running (`tilelang.runtime.value_facts`). The fact
must also exclude negative scales (and −0): for c = 0 the fma's exact zero is +0 where
0·s is −0 for negative s; no other form of the fold gets that sign right. Without a
fact, or with one too loose, nothing folds: the recipes subtract and then multiply.

What does not fold, whatever the fact:

* signed integers: their recipe subtracts M + 2^(b−1) (offset binary), no power of two,
  so (M + 2^(b−1))·s is not exact for most s; any recipe that puts a signed c under a
  power-of-two magic must cross a binade for negative c, which bit operations cannot;
* inf codes (f8e5m2 to bf16): inf·s is NaN for s = 0, which a folded product cannot
  tell; NaN codes (f8e4m3) fold, giving the canonical NaN that NaN·s gives;
* 8-bit integers to bf16 (through f32) and every f32 target (left as they were).

A constant scale c (``q.to(f16) * 2^-8``) folds the same way when c is a positive
power of two with every C·c a value of the target (`folds_constant`): no fact needed.
For small floats C·c may be 1 (c = 2^(bias_s − bias_t)): the multiplication goes away.

Tested bit for bit over every code and scales up to each bound
(tests/test_scale_folds.py); costs in tests/test_dequant_cost.py.
"""

from __future__ import annotations

import math

from tilelang.dtypes import DType, FloatType
from tilelang.lowering.dequant import scale_factors


def folds_scales(src: DType, dst: DType, below: float) -> bool:
    """Whether `dequant.dequantize_group(..., scales=...)` computes round(value · s)
    bit for bit for every scale s of `dst` with +0 ≤ s < `below` (sign bit clear):
    a recipe with a constant C to fold into (`dequant.scale_factors`) and every C·s
    finite. `below` = 0 asks only whether a recipe can fold at all."""
    factors = scale_factors(src, dst)
    if not factors:
        return False
    if below == 0.0:
        return True
    assert isinstance(dst, FloatType)
    largest = _largest_below(dst, below)
    return all(abs(f) * largest <= dst.max for f in factors)  # powers of two: exact


def folds_constant(src: DType, dst: DType, value: float) -> bool:
    """Whether a constant scale folds like `folds_scales`: `value` a positive power of
    two with every C·value a value of `dst` (powers of two: then exact). The float
    recipes' C·value may be 1, which leaves their multiplication out."""
    factors = scale_factors(src, dst)
    if not factors or not (value > 0 and math.isfinite(value) and math.frexp(value)[0] == 0.5):
        return False
    assert isinstance(dst, FloatType)
    return all(_holds(dst, f * value) for f in factors)


def _holds(dtype: FloatType, value: float) -> bool:
    return abs(value) <= dtype.max and float(dtype.decode(dtype.encode(value))) == value


def _largest_below(dtype: FloatType, below: float) -> float:
    """The largest finite value of `dtype` below `below` (positive)."""
    code = int(dtype.encode(min(below, dtype.max)))
    while float(dtype.decode(code)) >= below:
        code -= 1
    return float(dtype.decode(code))
