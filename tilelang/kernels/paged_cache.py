"""Writing a paged KV cache (`write_paged_cache`): vLLM's `reshape_and_cache_flash`, the
step before `paged_decode_attention` that stores each new token's key and value rows
into the cache, quantizing them to the cache's type.

Token i of key, value [T, H_kv, D] goes to slot s = slot_mapping[i]: row s % block_size
of page s // block_size of k_cache, v_cache [num_blocks, block_size, H_kv, D]. A
negative slot (vLLM's padding tokens) writes nothing.

The caches are written where they lie. Each page [block_size, H_kv, D] must be
contiguous; the pages may be any whole number of rows [H_kv, D] apart (at least a
page): the K and V halves of FlashInfer's combined cache kv [num_blocks, 2, block_size,
H_kv, D] (kv[:, 0], kv[:, 1]) among them. The kernel sees dense tensors only (the GPU
refuses strided ones, the CPU backend would copy the whole cache and write it back),
so each cache becomes the contiguous span of rows from its page 0 to the end of its
last page (`cache_rows`), a view of its own memory, and slot s its row first + (s //
block_size) · page_rows + s % block_size. Caches whose spans interleave (the combined
halves) are one span holding both, V written through K's tensor (two overlapping
tensors would be refused, and a call plan could not tell their pointers apart): the
pages must then share a stride and V's lie between K's without touching. Sub-byte
(u4) caches, pages not contiguous, pages overlapping or a fraction of a row apart are
refused by name. Each cache type is written so that
`paged_decode_attention` reads back the value written (module docstring there):

* q's dtype (f16, bf16; the key's own): copied.
* f8e4m3, f8e5m2: code = x / s rounded to the code type (nearest even, saturated to
  ±max finite: no NaN from a large x), s the per-tensor or per-KV-head scale given
  (the one decode multiplies back), the quotient taken in f32 (`x / s`, not `x · 1/s`:
  vLLM's `scaled_convert`).
* u8, u4: asymmetric min/max quantization per (token, KV head), computed here, its
  scale and zero point written beside the codes into k_scale, v_scale, k_zero, v_zero
  (f32 [num_blocks, block_size, H_kv], the cache's layout without D), in f32:

      lo, hi = min x, max x over the row's D values;  L = 2^bits − 1
      s = (hi − lo) / L;   if s == 0 (an all-equal row): s = |lo|, or 1 when lo = 0
      z = round(−lo / s);  code = clamp(round(x / s) + z, 0, L)

  round is to nearest, ties to even (the f32 → i32 conversion, `cvt.rni`); decode's
  (code − z) · s is within s/2 of x (plus f32 rounding), 3s/2 where the clamp cut a
  code. An all-equal row gets s = |x| and z = −sign(x): code 0, read back exactly,
  never a division by zero. z is an integer but need not be a code (a row of all
  positive values has z < 0): decode takes any f32 zero point.

A block writes one token's rows for BH KV heads (a [BH, HD] tile of K, then of V, D
padded to a power of two; the padding is masked out of the min and max and never
stored): one load of the slot, the rows loaded, quantized in registers and stored
through a box at the slot's row. A slot outside 0..num_blocks · block_size − 1 (the
skipped negative ones, and device slots past the cache, which the host does not read)
gets row −1, outside the tensor, so the store writes nothing there: nothing outside
the slots is touched, not even the other half of a combined cache. Host slot mappings
are checked first (each slot inside the cache
or negative, no slot twice: of two tokens sent to one slot, which one lands would be
unspecified); device ones, which the host does not read, are not: a device slot past
the cache writes nothing.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType, PackedArray
from tilelang.kernel import func, kernel
from tilelang.lang.signature import Tensor, constexpr
from tilelang.runtime import gpu
from tilelang.runtime.call_plans import planned
from tilelang.runtime.host_calls import accepts_host_tensors
from tilelang.runtime.host_tensor import values_dtype

from .common import (
    address_and_strides,
    check,
    next_power_of_two,
    placeholder,
    reshaped,
    run,
    same_place,
    span_of,
    tl,
)
from .paged_arguments import (
    HEAD_SCALED,
    PLAIN,
    TOKEN_SCALED,
    cache_layout,
    check_cache_type,
    dequantization,
    page_stride,
)

#: The dtypes of key and value.
KEY_TYPES = (dtypes.f16, dtypes.bf16)
#: The index types slot_mapping may hold (vLLM's is int64).
INDEX_TYPES = (dtypes.i32, dtypes.i64)
#: Elements of the [BH, HD] tile a block quantizes at once (8 a thread at 4 warps).
TILE_ELEMENTS = 1024


@func
def head_scales(scales, h0, SH, BH):
    """The per-KV-head f8 scales of heads h0.. as [BH, 1] (scales [1, SH]: one for all,
    or one per head)."""
    heads = (h0 + tl.arange(0, BH)) % SH
    return tl.reshape(tl.load(scales, [0, heads[None, :]], [1, BH], fill=1.0), [BH, 1])


@func
def write_rows(x, cache, s, z, t, row, slot, h0, factor, HEAD, MODE, CT, D, SH, BH, HD):
    """Token t's rows of heads h0.. of x, quantized to the cache's type (module
    docstring), stored at the cache's `row` (−1: nowhere); u8/u4: their scale and zero
    point stored at s, z [slot, h0..]."""
    tile = tl.load(x, [t, h0, 0], [BH, HD]).to(tl.f32)
    if MODE == PLAIN:
        codes = tile.to(CT)
    elif MODE == HEAD_SCALED:
        divisor = head_scales(s, h0, SH, BH) if HEAD else factor
        codes = (tile / divisor).to(CT)  # RNE, saturated to ±max finite
    else:
        levels = float((1 << CT.bits) - 1)
        inside = (tl.arange(0, HD) < D)[None, :]  # D's padding joins neither min nor max
        lo = tl.min(tl.where(inside, tile, float("inf")), axis=1)
        hi = tl.max(tl.where(inside, tile, float("-inf")), axis=1)
        scale = (hi - lo) / levels
        # an all-equal row: s = |lo| reads it back exactly (code 0, z = −sign(lo))
        scale = tl.where(scale > 0.0, scale, tl.where(lo != 0.0, tl.abs(lo), 1.0))
        zero = (-lo / scale).to(tl.i32)  # f32 -> i32: round to nearest even
        code = (tile / scale[:, None]).to(tl.i32) + zero[:, None]
        codes = tl.minimum(tl.maximum(code, 0), (1 << CT.bits) - 1).to(CT)
        tl.store(s, [slot, h0], tl.reshape(scale, [1, BH]))
        tl.store(z, [slot, h0], tl.reshape(zero.to(tl.f32), [1, BH]))
    tl.store(cache, [row, h0, 0], tl.reshape(codes, [1, BH, HD]))


@kernel(warps=4)
def cache_write_kernel(
    key: Tensor["T", "NT", "HK", "D"],
    value: Tensor["T", "NT", "HK", "D"],
    k_cache: Tensor["CT", "RK", "HK", "D"],
    v_cache: Tensor["CT", "RV", "HV", "DV"],
    ks: Tensor[dtypes.f32, "SR", "SH"],
    kz: Tensor[dtypes.f32, "SR", "SH"],
    vs: Tensor[dtypes.f32, "SR", "SH"],
    vz: Tensor[dtypes.f32, "SR", "SH"],
    slots: Tensor["IT", "NT"],
    k_factor: dtypes.f32,
    v_factor: dtypes.f32,
    block_size: dtypes.i64 = 1,
    slot_count: dtypes.i64 = 0,
    k_first: dtypes.i64 = 0,
    k_page: dtypes.i64 = 1,
    v_first: dtypes.i64 = 0,
    v_page: dtypes.i64 = 1,
    T: constexpr = dtypes.f16,
    CT: constexpr = dtypes.f16,
    IT: constexpr = dtypes.i32,
    MODE: constexpr = PLAIN,
    K_HEAD: constexpr = False,
    V_HEAD: constexpr = False,
    FUSED: constexpr = False,
    BH: constexpr = 2,
    HD: constexpr = 128,
):
    """Token t's K and V rows of BH KV heads into the caches' rows of slot slots[t]
    (none for a slot outside 0..slot_count − 1): slot s is row s % block_size of page
    s // block_size, the cache row first + page · page (rows of [HK, D]; the caches
    are spans of rows holding their pages: `cache_rows`). FUSED: V's pages lie between
    K's in one span, k_cache, written through it; v_cache is unread. HEAD_SCALED (f8):
    K_HEAD / V_HEAD divide by ks / vs [1, SH] of each head, else by k_factor / v_factor.
    TOKEN_SCALED (u8, u4): ks, kz, vs, vz [SR, HK] are written at the slot's row, the
    scale and zero point of each token's rows."""
    t, hb = tl.blocks(NT, tl.cdiv(HK, BH))
    h0 = hb * BH
    slot = tl.load(slots, [t]).to(tl.i64)
    inside = (slot >= 0) & (slot < slot_count)
    page, offset = slot // block_size, slot % block_size
    # -1: outside every tensor, never written (a padding token, or a device slot past the cache)
    k_row = tl.where(inside, k_first + page * k_page + offset, -1).to(tl.i32)
    v_row = tl.where(inside, v_first + page * v_page + offset, -1).to(tl.i32)
    row = tl.where(inside, slot, -1).to(tl.i32)
    v_target = k_cache if FUSED else v_cache
    write_rows(key, k_cache, ks, kz, t, k_row, row, h0, k_factor, K_HEAD, MODE, CT, D, SH, BH, HD)
    write_rows(
        value, v_target, vs, vz, t, v_row, row, h0, v_factor, V_HEAD, MODE, CT, D, SH, BH, HD
    )


def _writable(x: Any, name: str) -> None:
    """A tensor written in place: a reshape of it must be a view, not a copy that the
    kernel would fill and drop (numpy, PackedArray and torch tensors are checked here;
    other device tensors by `reshaped`)."""
    data = x.data if isinstance(x, PackedArray) else x
    if isinstance(data, np.ndarray):
        if not data.flags.c_contiguous:
            raise ValueError(f"{name} is written in place and must be C-contiguous")
        if not data.flags.writeable:
            raise ValueError(f"{name} is written in place and must be writeable, got read-only")
    elif gpu.is_torch_tensor(x) and not x.is_contiguous():
        raise ValueError(f"{name} is written in place and must be contiguous")


def _as_rows(x: Any, shape: tuple[int, ...], name: str) -> Any:
    """x (checked `_writable`) viewed under `shape`, PackedArrays too (the same bytes)."""
    _writable(x, name)
    if isinstance(x, PackedArray):
        return PackedArray(x.data, x.dtype, shape)
    return reshaped(x, shape, name)


@dataclass(frozen=True)
class Pages:
    """Where a cache's pages lie: the byte address of page 0's first element, and the
    rows ([H_kv, D] each) from one page to the next (block_size when contiguous)."""

    address: int
    page_rows: int


def cache_pages(x: Any, name: str, shape: tuple[int, ...], itemsize: int) -> Pages:
    """The pages of cache x [num_blocks, block_size, H_kv, D], written in place where
    they lie: each page's [block_size, H_kv, D] must be contiguous and the pages a whole
    number of rows apart, never overlapping (any larger stride: the K or V half of a
    combined cache); a ValueError names what else was given."""
    bs = shape[1]
    if isinstance(x, PackedArray):  # sub-byte codes: only the dense layout is expressible
        _writable(x, name)
        return Pages(x.data.__array_interface__["data"][0], bs)
    if isinstance(x, np.ndarray) and not x.flags.writeable:
        raise ValueError(f"{name} is written in place and must be writeable, got read-only")
    address, _ = address_and_strides(x, itemsize)
    pages = f"{name} is written in place and each of its pages"
    return Pages(address, page_stride(x, name, shape, itemsize, pages))


def cache_rows(k_cache: Any, v_cache: Any, shape: tuple[int, ...], itemsize: int):
    """The caches as the kernel takes them: (k rows, v rows, scalars, FUSED). Caches
    apart in memory are each the span of rows from its page 0 to its last page's end;
    caches whose pages interleave (kv[:, 0] and kv[:, 1] of one combined tensor) are
    one span holding both, V written through K's tensor (v rows: unread)."""
    blocks, bs, kv_heads, d = shape
    named = ((k_cache, "k_cache"), (v_cache, "v_cache"))
    k, v = (cache_pages(c, n, shape, itemsize) for c, n in named)
    row = kv_heads * d * itemsize
    if isinstance(k_cache, PackedArray):  # a row of sub-byte codes: bits, not bytes
        row = -(-kv_heads * d * k_cache.dtype.bits // 8)
    extent = [(blocks - 1) * p.page_rows + bs if blocks else 0 for p in (k, v)]
    ends = [p.address + rows * row for p, rows in zip((k, v), extent, strict=True)]
    if row == 0 or ends[0] <= v.address or ends[1] <= k.address:
        _fits(max(extent))
        spans = [
            span_of(c, name, (n, kv_heads, d), itemsize)
            for (c, name), n in zip(named, extent, strict=True)
        ]
        scalars = dict(k_first=0, k_page=k.page_rows, v_first=0, v_page=v.page_rows)
        return *spans, scalars, False
    apart = v.address - k.address
    if (
        k.page_rows != v.page_rows
        or apart % row
        or not bs <= (apart // row) % k.page_rows <= k.page_rows - bs
    ):
        raise ValueError(
            f"k_cache and v_cache share memory: their pages must interleave without "
            f"touching (one page stride, each V page a whole number of rows between two K "
            f"pages), got page strides of {k.page_rows} and {v.page_rows} rows and V "
            f"{apart / row:g} rows after K"
        )
    low = min(k.address, v.address)
    rows = (max(ends) - low) // row
    _fits(rows)
    base, name = named[0] if k.address == low else named[1]
    scalars = dict(
        k_first=(k.address - low) // row,
        k_page=k.page_rows,
        v_first=(v.address - low) // row,
        v_page=v.page_rows,
    )
    return span_of(base, name, (rows, kv_heads, d), itemsize), None, scalars, True


def _fits(rows: int) -> None:
    """The kernel's rows are 32-bit."""
    if rows >= 2**31:
        raise ValueError(f"the caches' rows must number below 2^31, got {rows}")


def _token_outputs(given: dict[str, Any], shape: tuple[int, ...]) -> list[Any]:
    """k_scale, k_zero, v_scale, v_zero of a u8/u4 cache, which the kernel writes: each
    f32 [num_blocks, block_size, H_kv], viewed as the cache's [rows, H_kv]."""
    views = []
    for name in ("k_scale", "k_zero", "v_scale", "v_zero"):
        value = given[name]
        if value is None or isinstance(value, (int, float)):
            raise ValueError(
                f"{name} is written with a u8/u4 cache (its per-token scales and zero points, "
                f"computed here): pass an f32 array [num_blocks, block_size, H_kv] = "
                f"{list(shape)}, got {value!r}"
            )
        check(value, name, shape, (dtypes.f32,))
        views.append(_as_rows(value, (shape[0] * shape[1], shape[2]), name))
    return views


def _slots(slot_mapping: Any, tokens: int, rows: int, block_size: int) -> DType:
    """slot_mapping's index type, after the checks: on the host each slot inside the
    cache (0..rows − 1) or negative (skipped), and no slot given twice."""
    _, index_type = check(slot_mapping, "slot_mapping", (tokens,), INDEX_TYPES, ("T",))
    if not isinstance(slot_mapping, np.ndarray):
        return index_type
    outside = slot_mapping >= rows
    if outside.any():
        i = int(np.argmax(outside))
        raise ValueError(
            f"slot_mapping[{i}] = {int(slot_mapping[i])} is past the cache: slots are "
            f"block · block_size + offset in 0..{rows - 1} (num_blocks · block_size = {rows}, "
            f"block_size = {block_size}), or negative to skip the token"
        )
    used = slot_mapping[slot_mapping >= 0]
    values, counts = np.unique(used, return_counts=True)
    if (counts > 1).any():
        twice = int(values[np.argmax(counts > 1)])
        where = np.flatnonzero(slot_mapping == twice)[:2].tolist()
        raise ValueError(
            f"slot_mapping sends tokens {where[0]} and {where[1]} to slot {twice}: each slot "
            f"takes one token"
        )
    return index_type


def check_no_dtype_string(k_scale: Any) -> None:
    """vLLM's `reshape_and_cache_flash` takes kv_cache_dtype before k_scale; here the
    cache's dtype says it."""
    if isinstance(k_scale, str):
        raise TypeError(
            f"k_scale must be a scale (a number or an f32 tensor) or None, got {k_scale!r}: "
            f"write_paged_cache takes no kv_cache_dtype (vLLM's argument before k_scale); "
            f"the caches' dtype says how they are written"
        )


@planned
@accepts_host_tensors
def write_paged_cache(
    key: Any,
    value: Any,
    k_cache: Any,
    v_cache: Any,
    slot_mapping: Any,
    k_scale: Any = None,
    v_scale: Any = None,
    *,
    k_zero: Any = None,
    v_zero: Any = None,
    interpret: bool = False,
) -> None:
    """Writes each token's key and value rows into a paged KV cache, in place (vLLM's
    `reshape_and_cache_flash`, without its kv_cache_dtype: the caches' dtype says it).

    key, value: [T, H_kv, D] f16 or bf16; k_cache, v_cache: [num_blocks, block_size,
    H_kv, D] (`paged_decode_attention`'s caches; each page contiguous, pages at any
    stride: kv[:, 0] and kv[:, 1] of a combined cache); slot_mapping: int32 or int64 [T],
    token i to row slot % block_size of page slot // block_size, a negative slot
    skipped. The caches hold key's dtype (copied; k_scale, v_scale absent or 1),
    f8e4m3/f8e5m2 (code = x / scale rounded to nearest even and saturated; k_scale,
    v_scale a number or f32 [H_kv], as decode takes them) or u8/u4 (u4: a
    `tilelang.PackedArray`, host only), whose scale and zero point per token and KV
    head are computed here (asymmetric min/max: the module docstring) and written into
    k_scale, v_scale, k_zero, v_zero, f32 [num_blocks, block_size, H_kv]. Only the
    slots' rows (and their scales and zero points) are written. Host arrays run on the
    CPU backend, device tensors on the GPU; `interpret` runs the reference interpreter
    (host arrays only). Returns None."""
    check_no_dtype_string(k_scale)
    (tokens, kv_heads, d), t = check(key, "key", (None, None, None), KEY_TYPES, ("T", "H_kv", "D"))
    check(value, "value", (tokens, kv_heads, d), (t,))
    shape, ct = cache_layout(k_cache, "k_cache")
    if len(shape) != 4:
        raise ValueError(
            f"k_cache must have shape [num_blocks, block_size, H_kv, D], got shape {list(shape)}"
        )
    v_shape, vt = cache_layout(v_cache, "v_cache")
    if v_shape != shape or vt != ct:
        raise ValueError(
            f"v_cache must be k_cache's shape and dtype, {list(shape)} {ct}, got "
            f"{list(v_shape)} {vt}"
        )
    check_cache_type(k_cache, ct, t, shape[3], d, "key")
    if shape[2] != kv_heads:
        raise ValueError(
            f"k_cache's heads must be key's, H_kv = {kv_heads} (key.shape[1]), got {shape[2]}"
        )
    blocks, bs = shape[:2]
    rows = blocks * bs
    index_type = _slots(slot_mapping, tokens, rows, bs)
    tensors = dict(
        key=key, value=value, k_cache=k_cache, v_cache=v_cache, slot_mapping=slot_mapping
    )
    given = dict(k_scale=k_scale, v_scale=v_scale, k_zero=k_zero, v_zero=v_zero)
    if ct in (dtypes.u8, dtypes.u4):
        params, factors = _token_outputs(given, shape[:3]), (1.0, 1.0)
        same_place({**tensors, **given})
        mode, flags = TOKEN_SCALED, dict(K_HEAD=False, V_HEAD=False)
    else:
        same_place(tensors)  # an f8 scale may be a number, or on the host beside device caches
        deq = dequantization(ct, shape, k_scale, v_scale, k_zero, v_zero, key)
        params, factors = deq.tensors(placeholder(key, 2)), (deq.k_factor, deq.v_factor)
        mode = deq.mode
        flags = dict(K_HEAD=deq.ks is not None, V_HEAD=deq.vs is not None)
    k_rows, v_rows, places, fused = cache_rows(k_cache, v_cache, shape, values_dtype(ct).itemsize)
    if tokens * kv_heads * d == 0:
        return None
    if fused:  # V is written through k_rows: v_cache's slot is unread
        v_rows = placeholder(key, 3, ct)
    hd = max(16, next_power_of_two(d))
    bh = max(1, min(next_power_of_two(kv_heads), TILE_ELEMENTS // hd))
    args = [key, value, k_rows, v_rows, *params, slot_mapping, *factors]
    args += [bs, rows, places["k_first"], places["k_page"], places["v_first"], places["v_page"]]
    constexprs = dict(T=t, CT=ct, IT=index_type, MODE=mode, FUSED=fused, BH=bh, HD=hd, **flags)
    run(cache_write_kernel, args, constexprs, interpret)
    return None


__all__ = ["write_paged_cache"]
