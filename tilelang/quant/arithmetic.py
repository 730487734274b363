"""The exact arithmetic that turns element codes, scales and zero points into weights:
what `QuantizedWeight.dequantize` returns, and what a kernel must compute to see the
same weights. One function per format kind (`tilelang.quant.formats`).

Every product below is exact in float64 (a code value has at most 9 significant bits,
an f16/bf16/f32 or e4m3 scale at most 24, and the exponents stay inside float64's
range), so each result is rounded exactly once, round to nearest even:

* ``scaled``: ``w = round_S((decode(q) − z) · s)``, S the scale type (f16, bf16 or
  f32), z the group's zero point (0 without zero points). For f16 scales this is the
  kernel's ``(q − z).to(f16) * s`` in f16: the code value (minus zero) is exact in f16
  for every integer code and for every ExMy value inside f16's range, and an IEEE
  multiply rounds the exact product once. ExMy types whose values leave f16's range
  or precision (f6e5m0, f7e5m1, f7e6m0, f8e6m1, f8e7m0) are computed here the same
  way, once rounded to S, but the kernels cannot convert their codes to f16, so with
  f16 scales `quantize` refuses them and `matmul` runs them only with bf16 scales and
  activations (every ExMy value is exact in bf16). Overflow follows S: ±inf for
  f16/bf16/f32 (`quantize` refuses a group whose weights would overflow).
* ``mx``: ``w = round_f32(decode(q) · 2^(c − 127))``, c the e8m0 code; the spec's
  value, exact unless it leaves float32's range; a NaN scale (0xFF) gives NaN.
* ``nvfp4``: ``w = round_f32(decode(q) · decode_e4m3(b) · t)``, b the block's f8e4m3
  code and t the f32 tensor scale; ``decode(q) · decode_e4m3(b)`` is exact in f16, so
  a kernel may dequantize with it and apply t to its f32 accumulator.
* ``codebook``: ``w = round_S(round_S(table[q]) · s)``, the table held in the scale type
  S (its values rounded once to S when the weight is made) and s the group's absmax
  scale in S. With S the operand type OT (f16 or bf16) this is the kernel's
  ``tl.lookup(table, q) * s`` in OT: the lookup reads a value that is already an OT
  number, and one IEEE multiply rounds the exact product once. With f32 scales (what
  a bitsandbytes checkpoint holds) it is bitsandbytes' own float32 dequantization,
  ``code[q] · absmax`` rounded once to f32; the kernels need f16 or bf16.
"""

from __future__ import annotations

import numpy as np

from tilelang.dtypes import DType, f16, f32


def round_to(values: np.ndarray, t: DType) -> np.ndarray:
    """float64 `values` rounded once to the float type `t` (tilelang's cast policy: round
    to nearest even, ±inf on overflow for f16/bf16/f32), returned as float32."""
    with np.errstate(over="ignore"):
        # numpy's float64 -> float16/float32 casts round once, to nearest even, and give
        # ±inf on overflow: the same codes as t.encode (tests/test_quant.py checks).
        if t == f16:
            return values.astype(np.float16).astype(np.float32)
        if t == f32:
            return values.astype(np.float32)
    return t.decode(t.encode(values)).astype(np.float32)


def _grouped(values: np.ndarray, group: int) -> np.ndarray:
    """[K, N] -> [K / group, group, N] as float64 (exact for every code value)."""
    k, n = values.shape
    return values.astype(np.float64).reshape(k // group, group, n)


def scaled(
    values: np.ndarray,
    scales: np.ndarray,
    zeros: np.ndarray | None,
    group: int,
    scale_dtype: DType,
) -> np.ndarray:
    """round_S((values − zeros) · scales), scales and zeros [⌈K / group⌉, N] per group:
    the last group holds the K mod group rows left when group does not divide K (GPTQ
    checkpoints of such K)."""
    k, n = values.shape
    full = k - k % group
    pieces = []
    # The whole groups, then the short last one (if any): each a [groups, rows, N] view.
    for start, stop, rows in ((0, full, group), (full, k, k - full)):
        if stop == start:
            continue
        picked = slice(start // group, start // group + (stop - start) // rows)
        v = values[start:stop].astype(np.float64).reshape(-1, rows, n)
        if zeros is not None:
            v = v - zeros[picked, None, :].astype(np.float64)
        pieces.append((v * scales[picked, None, :].astype(np.float64)).reshape(-1, n))
    product = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
    return round_to(product, scale_dtype)


def mx(values: np.ndarray, scale_codes: np.ndarray, block: int) -> np.ndarray:
    """round_f32(values · 2^(c − 127)), c the e8m0 code of each block; NaN where c = 0xFF."""
    exponents = scale_codes.astype(np.int64)[:, None, :] - 127
    product = np.ldexp(_grouped(values, block), exponents)
    product = np.where(scale_codes[:, None, :] == 0xFF, np.nan, product)
    return round_to(product, f32).reshape(values.shape)


def nvfp4(
    values: np.ndarray, block_scales: np.ndarray, tensor_scale: float, block: int
) -> np.ndarray:
    """round_f32(values · block_scales · tensor_scale); block_scales are the decoded
    f8e4m3 values [K / block, N]."""
    v = _grouped(values, block) * block_scales[:, None, :].astype(np.float64)
    return round_to(v * float(tensor_scale), f32).reshape(values.shape)


def codebook(
    codes: np.ndarray, table: np.ndarray, scales: np.ndarray, group: int, scale_dtype: DType
) -> np.ndarray:
    """round_S(table[codes] · scales): `table` [2^b] the values of S it holds (already
    rounded to S), `scales` [K / group, N]; the product of two S values is exact in
    float64 (at most 24 significant bits each), so the one rounding is to S."""
    values = np.asarray(table, dtype=np.float64)[codes.astype(np.int64)]
    return scaled(values, scales, None, group, scale_dtype)
