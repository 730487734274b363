"""Importing GPTQ and AWQ checkpoints, bit-exactly: their int32 packings unpacked into a
`QuantizedWeight` whose `dequantize()` equals the formats' reference formula element by
element (w = (q − z) · s in the scales' type, `tilelang.quant.arithmetic`).

GPTQ (AutoGPTQ, GPTQ-for-LLaMa; the "v1" checkpoint format), 2, 3, 4 or 8 bits:

* ``qweight`` int32 [K·bits/32, N], packed along K: the K codes of column n are one
  little-endian bit stream of 32-bit words ``qweight[0, n], qweight[1, n], ...``; code k
  takes bits [k·bits, (k+1)·bits). For 2, 4 and 8 bits a word holds 32/bits codes; for
  3 bits 32 codes fill 3 words and codes 10 and 21 of each 32 straddle two words. This
  is tilelang's own bit order (`tilelang.dtypes.pack_bits`), so unpacking is one call.
* ``qzeros`` int32 [⌈K/G⌉, N·bits/32]: the zero points of each group, packed the same
  way along N (so N·bits fills whole words: N a multiple of 8 for 4 bits, of 32 for
  3 bits; refused otherwise, before reading a fractional shape). The v1 quirk: writers store z − 1 and readers add the 1 back, so
  z = field + 1 lies in 1..2^bits. (A true zero point of 0 is written as −1, whose
  wrapped bits also spill into the neighbouring fields; it reads back as 2^bits, and
  this import reproduces what the reference reads.)
* ``checkpoint_format="gptq_v2"`` (GPTQModel's ``checkpoint_format`` in
  quantize_config.json; v2 readers such as vLLM's gptq_gemm with its v2 flag use a
  zero offset of 0 where v1 adds 1): the same packing with the true zero point stored,
  z = field in 0..2^bits − 1, so a zero point of 0 is representable. A v1 checkpoint
  converts to v2 losslessly, not the other way round.
* ``scales`` [⌈K/G⌉, N] (f16; bf16 and f32 accepted): the scale type of the result.
* ``g_idx`` [K] (optional): the group of each row; act order (``desc_act``) makes it a
  permutation of the groups. Represented as ``perm`` = the rows sorted stably by group,
  with each group's G rows contiguous in that order. Every group holds G rows (those of
  group 0) but the last, which may hold fewer where G does not divide K: AutoGPTQ's
  g_idx is (a row's position in act order) // G, so ⌈K / G⌉ groups, the last of
  K mod G rows (a `QuantizedWeight` holds that short last group). Without g_idx the
  groups must divide K evenly.
* ``sym=True``: every zero point must be the midpoint 2^(bits−1) (qzeros may be None);
  the result has unsigned codes and that constant zero point, like `quantize(uN)`.

AWQ (AutoAWQ / llm-awq "GEMM" packing), 4 bits:

* ``qweight`` int32 [K, N/8], packed along N: nibble i (bits 4i..4i+3) of word c holds
  column 8c + ORDER[i], ORDER = (0, 2, 4, 6, 1, 3, 5, 7) (the interleave that lets the
  kernel turn 8 nibbles into 4 f16 pairs with two shifts).
* ``qzeros`` int32 [K/G, N/8], packed the same way; no offset: z = field.
* ``scales`` [K/G, N] f16.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tilelang import dtypes

from .arrays import float_codes, int_array, words32
from .weight import QuantizedWeight

GPTQ_BITS = (2, 3, 4, 8)
#: quantize_config's ``checkpoint_format`` values, and the offset each adds to the
#: stored zero-point field (v1 stores z − 1).
GPTQ_ZERO_OFFSET = {"gptq": 1, "gptq_v2": 0}
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
#: Column 8c + j of an AWQ word is its nibble AWQ_NIBBLE[j].
AWQ_NIBBLE = tuple(int(i) for i in np.argsort(AWQ_ORDER))


def _unpack_along_k(words: np.ndarray, bits: int, k: int) -> np.ndarray:
    """[K·bits/32, N] words, each column one bit stream -> [K, N] codes."""
    n = words.shape[1]
    stream = np.ascontiguousarray(words.T).astype("<u4").view(np.uint8).ravel()
    return dtypes.unpack_bits(stream, bits, n * k).reshape(n, k).T


def _unpack_along_n(words: np.ndarray, bits: int, n: int) -> np.ndarray:
    """[R, N·bits/32] words, each row one bit stream -> [R, N] codes."""
    rows = words.shape[0]
    stream = np.ascontiguousarray(words).astype("<u4").view(np.uint8).ravel()
    return dtypes.unpack_bits(stream, bits, rows * n).reshape(rows, n)


def _scales(scales: Any, k: int, n: int) -> tuple[np.ndarray, dtypes.DType]:
    """The scale codes [groups, N] and their type; 1 ≤ groups ≤ K."""
    scale_codes, scale_dtype = float_codes(scales, "scales")
    if scale_codes.shape[1] != n or not 1 <= scale_codes.shape[0] <= k:
        raise ValueError(
            f"scales must be [groups, N = {n}] with 1 ≤ groups ≤ K = {k}, got shape "
            f"{scale_codes.shape}"
        )
    return scale_codes, scale_dtype


def even_group(k: int, groups: int) -> int:
    """K / groups rows a group, where no g_idx tells the group size."""
    if k % groups:
        raise ValueError(
            f"scales: {groups} groups do not divide K = {k} rows evenly; a checkpoint whose "
            f"last group is shorter needs its g_idx (which says the group size)"
        )
    return k // groups


def _packed_zeros(qzeros: Any, bits: int, groups: int, n: int) -> np.ndarray:
    if n * bits % 32:
        per_word = 32 // math.gcd(bits, 32)
        raise ValueError(
            f"qzeros: {bits}-bit zero points are packed along N into int32 words, so N (the "
            f"columns of qweight and scales) must be a multiple of {per_word} "
            f"(32 / gcd(bits, 32)) to fill whole words, got N = {n}"
        )
    words = words32(qzeros, "qzeros")
    if words.shape[0] != groups or words.shape[1] * 32 != n * bits:
        raise ValueError(
            f"qzeros must be [{groups}, {n * bits / 32:g}] ({bits}-bit zero points of N = {n} "
            f"columns per group), got shape {words.shape}"
        )
    return _unpack_along_n(words, bits, n).astype(np.int32)


def act_order(g_idx: Any, k: int, groups: int) -> tuple[int, np.ndarray | None]:
    """The group size and the row permutation that makes g_idx's groups contiguous
    (None: they already are). Without g_idx, K / groups rows a group. With it, G is the
    rows of group 0: every group holds G rows but the last, which may hold fewer (1..G,
    ⌈K / G⌉ = groups), as AutoGPTQ's g_idx = position // G over a K that G does not
    divide makes; `QuantizedWeight` holds such a short last group."""
    if g_idx is None:
        return even_group(k, groups), None
    g = int_array(g_idx, "g_idx", 1).astype(np.int64)
    if g.shape != (k,):
        raise ValueError(f"g_idx must hold one group per row (K = {k}), got shape {g.shape}")
    if g.size and (g.min() < 0 or g.max() >= groups):
        raise ValueError(f"g_idx must lie in [0, {groups}), got {g.min()}..{g.max()}")
    counts = np.bincount(g, minlength=groups)
    group = int(counts[0])
    wrong = np.flatnonzero(counts[:-1] != group)
    if wrong.size or not 1 <= counts[-1] <= group:
        bad = int(wrong[0]) if wrong.size else groups - 1
        raise ValueError(
            f"g_idx puts {group} rows in group 0 but {counts[bad]} in group {bad}: "
            f"tilelang's groups hold G rows each but the last, which holds 1..G "
            f"(⌈K / G⌉ = {groups} groups over K = {k} rows)"
        )
    if np.array_equal(g, np.arange(k) // group):
        return group, None
    return group, np.argsort(g, kind="stable")


def from_gptq(
    qweight: Any,
    qzeros: Any,
    scales: Any,
    g_idx: Any = None,
    bits: int = 4,
    sym: bool = True,
    checkpoint_format: str = "gptq",
) -> QuantizedWeight:
    """A GPTQ checkpoint layer (numpy arrays or torch tensors) as a `QuantizedWeight`
    (format "gptq", unsigned codes, zero points, act order as `perm`); the module
    docstring gives the packing read. `checkpoint_format` is quantize_config's:
    "gptq" (v1, zero points stored minus one) or "gptq_v2" (stored as they are)."""
    if bits not in GPTQ_BITS:
        raise ValueError(f"GPTQ packs {', '.join(map(str, GPTQ_BITS))} bits, got {bits!r}")
    if checkpoint_format not in GPTQ_ZERO_OFFSET:
        raise ValueError(
            f"checkpoint_format: expected one of {', '.join(map(repr, GPTQ_ZERO_OFFSET))} "
            f'(quantize_config\'s checkpoint_format; "gptq" is v1), got {checkpoint_format!r}'
        )
    words = words32(qweight, "qweight")
    rows, n = words.shape
    if rows * 32 % bits:
        raise ValueError(f"{bits}-bit qweight needs a multiple of {bits} rows, got {rows}")
    k = rows * 32 // bits
    scale_codes, scale_dtype = _scales(scales, k, n)
    groups = scale_codes.shape[0]
    group, perm = act_order(g_idx, k, groups)
    midpoint = 1 << (bits - 1)
    if qzeros is None:
        if not sym:
            raise ValueError("qzeros are required unless sym=True")
        zeros = np.full((groups, n), midpoint, dtype=np.int32)
    else:
        zeros = _packed_zeros(qzeros, bits, groups, n) + GPTQ_ZERO_OFFSET[checkpoint_format]
        if sym and (zeros != midpoint).any():
            g, c = (int(i) for i in np.argwhere(zeros != midpoint)[0])
            raise ValueError(
                f"sym=True, but the zero point of group {g}, column {c} is {zeros[g, c]}, "
                f"not {midpoint}: pass sym=False"
            )
    codes = _unpack_along_k(words, bits, k)
    if perm is not None:
        codes = codes[perm]
    return QuantizedWeight(
        codes=dtypes.pack_codes(codes, dtypes.int_type(bits, False)),
        scale_codes=scale_codes,
        scale_dtype=scale_dtype,
        group_size=group,
        format="gptq",
        zeros=zeros,
        perm=perm,
    )


def from_awq(qweight: Any, qzeros: Any, scales: Any) -> QuantizedWeight:
    """An AWQ (GEMM-packed, 4-bit) checkpoint layer as a `QuantizedWeight` (format
    "awq", u4 codes, zero points); the module docstring gives the packing read."""
    if qzeros is None:
        raise ValueError(
            "qzeros: AWQ checkpoints always have zero points (an int32 [K / G, N / 8] "
            "tensor, packed like qweight), got None; a layer without them is not AWQ's "
            "GEMM packing"
        )
    words = words32(qweight, "qweight")
    k, columns = words.shape
    n = columns * 8
    scale_codes, scale_dtype = _scales(scales, k, n)
    group = even_group(k, scale_codes.shape[0])
    nibble = list(AWQ_NIBBLE)
    codes = _unpack_along_n(words, 4, n).reshape(k, columns, 8)[:, :, nibble]
    zeros = _packed_zeros(qzeros, 4, k // group, n).reshape(-1, columns, 8)[:, :, nibble]
    return QuantizedWeight(
        codes=dtypes.pack_codes(codes.reshape(k, n), dtypes.u4),
        scale_codes=scale_codes,
        scale_dtype=scale_dtype,
        group_size=group,
        format="awq",
        zeros=zeros.reshape(-1, n),
    )
