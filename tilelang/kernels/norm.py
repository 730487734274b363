"""Normalization and gated activations of transformer blocks: `rms_norm` and
`silu_and_mul` (vLLM's names and layouts).

* ``rms_norm(x, weight, eps)``: y = x / sqrt(mean(x², last dim) + eps) · weight, over
  the last dimension H of x [..., H] (all leading dimensions are rows). A block
  normalizes BM rows: one pass over H in BH-wide tiles for the sum of squares, a second
  that scales and stores (x is read twice; H of any size).
* ``fused_add_rms_norm(x, residual, weight, eps)`` (vLLM's, in place): residual ← x +
  residual rounded to the dtype, then x ← rms_norm(residual) · weight, the sum of
  squares taken over the rounded sum (what residual holds afterwards, as vLLM's). One
  kernel. A row of up to `WHOLE_ROW` columns stays in registers: x and residual are
  read once and written once (the DRAM floor). A wider row is streamed twice in
  BH-wide tiles: the sum is stored, then read back for the scaling (x read once,
  residual twice: the second read is of the sum, which no register holds).
* ``silu_and_mul(x)``: x [..., 2·d] -> silu(x[..., :d]) · x[..., d:]. The host views x as
  [rows, 2, d] (free for contiguous arrays); a block loads a [BM, 2, BD] tile holding
  both halves and cuts it with `tl.split`.

All compute in f32 and round once to x's dtype (f32, f16 or bf16); the fused form
rounds twice, as its definition says (the sum, then the output).
"""

import math
from typing import Any

from tilelang import dtypes
from tilelang.kernel import func, kernel
from tilelang.lang.signature import Tensor, constexpr
from tilelang.runtime.call_plans import planned
from tilelang.runtime.host_calls import accepts_host_tensors

from .common import (
    FLOATS,
    check,
    empty,
    f32_host,
    in_place_view,
    next_power_of_two,
    reshaped,
    run,
    same_place,
    tl,
)

#: What a row view of x and residual needs (`in_place_view`'s message).
ROWS = ("rows", "its leading dimensions")


@kernel(warps=4)
def rms_norm_kernel(
    x: Tensor["T", "M", "H"],
    weight: Tensor["WT", "H"],
    y: Tensor["T", "M", "H"],
    eps: dtypes.f32,
    T: constexpr = dtypes.f32,
    WT: constexpr = dtypes.f32,
    BM: constexpr = 4,
    BH: constexpr = 256,
):
    """y = x · rsqrt(mean(x²) + eps) · weight, row by row."""
    bm = tl.blocks(tl.cdiv(M, BM))
    squares = tl.zeros([BM], tl.f32)
    for h0 in tl.range(0, H, BH):
        tile = tl.load(x, [bm * BM, h0], [BM, BH]).to(tl.f32)
        squares = squares + tl.sum(tile * tile, axis=1)
    scale = tl.rsqrt(squares / H + eps)[:, None]
    for h0 in tl.range(0, H, BH):
        tile = tl.load(x, [bm * BM, h0], [BM, BH]).to(tl.f32)
        w = tl.load(weight, [h0], [BH]).to(tl.f32)[None, :]
        tl.store(y, [bm * BM, h0], (tile * scale * w).to(T))


#: The widest row (padded to a power of two) the fused kernel holds in registers: 32
#: elements a thread at 8 warps, each of x and residual read once.
WHOLE_ROW = 8192


def _fused_warps(WARPS: int, **_: Any) -> int:
    return WARPS


@kernel(warps=_fused_warps)
def fused_add_rms_norm_kernel(
    x: Tensor["T", "M", "H"],
    residual: Tensor["T", "M", "H"],
    weight: Tensor["WT", "H"],
    eps: dtypes.f32,
    T: constexpr = dtypes.f32,
    WT: constexpr = dtypes.f32,
    BM: constexpr = 1,
    BH: constexpr = 1024,
    WHOLE: constexpr = True,
    WARPS: constexpr = 4,
):
    """residual ← (x + residual) rounded to T; x ← residual · rsqrt(mean(residual²) +
    eps) · weight, row by row. WHOLE: one [BM, BH] tile holds the rows (H ≤ BH);
    otherwise two passes over H in BH-wide tiles."""
    r0 = tl.blocks(tl.cdiv(M, BM)) * BM
    if WHOLE:
        assert H <= BH, "WHOLE holds a row in one tile: H must be at most BH"
        added = fused_sum(x, residual, r0, 0, BM, BH, T)
        squares = tl.sum(added * added, axis=1)
        scale_rows(x, added, weight, squares, r0, 0, eps, H, BH, T)
    else:
        squares = tl.zeros([BM], tl.f32)
        for h0 in tl.range(0, H, BH):
            added = fused_sum(x, residual, r0, h0, BM, BH, T)
            squares = squares + tl.sum(added * added, axis=1)
        for h0 in tl.range(0, H, BH):
            added = tl.load(residual, [r0, h0], [BM, BH]).to(tl.f32)  # the sum stored above
            scale_rows(x, added, weight, squares, r0, h0, eps, H, BH, T)


@func
def fused_sum(x, residual, r0, h0, BM, BH, T):
    """The rounded sum of a [BM, BH] tile of x and residual, stored into residual and
    returned in f32 (columns past H read 0 and are not stored)."""
    a = tl.load(x, [r0, h0], [BM, BH]).to(tl.f32)
    b = tl.load(residual, [r0, h0], [BM, BH]).to(tl.f32)
    added = (a + b).to(T)
    tl.store(residual, [r0, h0], added)
    return added.to(tl.f32)


@func
def scale_rows(x, added, weight, squares, r0, h0, eps, H, BH, T):
    """x's tile at (r0, h0) ← added · rsqrt(squares / H + eps) · weight, rounded once."""
    scale = tl.rsqrt(squares / x.shape[1] + eps)[:, None]
    w = tl.load(weight, [h0], [BH]).to(tl.f32)[None, :]
    tl.store(x, [r0, h0], (added * scale * w).to(T))


@kernel(warps=4)
def silu_and_mul_kernel(
    x: Tensor["T", "M", 2, "H"],
    y: Tensor["T", "M", "H"],
    T: constexpr = dtypes.f32,
    BM: constexpr = 4,
    BH: constexpr = 128,
):
    """y = silu(x[:, 0]) · x[:, 1]."""
    bm, bh = tl.blocks(tl.cdiv(M, BM), tl.cdiv(H, BH))
    pair = tl.load(x, [bm * BM, 0, bh * BH], [BM, 2, BH]).to(tl.f32)
    gate, up = tl.split(pair, 2, axis=1)
    gate, up = tl.reshape(gate, [BM, BH]), tl.reshape(up, [BM, BH])
    tl.store(y, [bm * BM, bh * BH], (gate * tl.sigmoid(gate) * up).to(T))


def _any_rank(x: Any, last: str, types: tuple = FLOATS) -> tuple:
    """`check`'s shape, types and names for x [..., last] of any rank: only a scalar
    fails, "x must have shape [..., H], got shape []"."""
    rank = len(getattr(x, "shape", ()))
    return (None,) * max(1, rank), types, (None,) * rank or (f"..., {last}",)


def _rows(shape: tuple[int, ...]) -> int:
    return math.prod(shape[:-1])


@planned
@accepts_host_tensors
def rms_norm(x: Any, weight: Any, eps: float = 1e-6, *, interpret: bool = False) -> Any:
    """RMSNorm over the last dimension: x [..., H] (f32, f16 or bf16, contiguous), weight
    [H] (x's dtype or f32). Returns y of x's shape and dtype."""
    shape, t = check(x, "x", *_any_rank(x, "H"))
    if len(shape) < 1:
        raise ValueError("x must have at least one dimension [..., H], got a scalar")
    h = shape[-1]
    _, wt = check(weight, "weight", (h,), (t, dtypes.f32))
    same_place(dict(x=x, weight=weight))
    if not float(eps) >= 0.0:
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    y = empty(x, shape, t)
    m = _rows(shape)
    if m * h == 0:
        return y
    bh = min(256, next_power_of_two(h))
    args = [reshaped(x, (m, h), "x"), f32_host(weight) if wt == dtypes.f32 else weight]
    args += [reshaped(y, (m, h), "y"), float(eps)]
    run(rms_norm_kernel, args, dict(T=t, WT=wt, BM=max(1, 1024 // bh), BH=bh), interpret)
    return y


@planned
@accepts_host_tensors
def silu_and_mul(x: Any, *, interpret: bool = False) -> Any:
    """silu(x[..., :d]) · x[..., d:] for x [..., 2·d] (f32, f16 or bf16, contiguous).
    Returns [..., d] in x's dtype."""
    shape, t = check(x, "x", *_any_rank(x, "2·d", FLOATS))
    if shape[-1] % 2:
        raise ValueError(f"x must have an even last dimension [..., 2·d], got shape {list(shape)}")
    d = shape[-1] // 2
    y = empty(x, (*shape[:-1], d), t)
    m = _rows(shape)
    if m * d == 0:
        return y
    bh = min(128, next_power_of_two(d))
    args = [reshaped(x, (m, 2, d), "x"), reshaped(y, (m, d), "y")]
    run(silu_and_mul_kernel, args, dict(T=t, BM=max(1, 512 // bh), BH=bh), interpret)
    return y


def fused_tiles(h: int) -> dict[str, Any]:
    """The fused kernel's tiles for rows of h columns: the whole row in one tile up to
    WHOLE_ROW (several short rows a block, 1024 elements; 8 warps at 8192 columns, 32
    elements a thread), else 2048-column steps."""
    hp = next_power_of_two(h)
    if hp <= WHOLE_ROW:
        return dict(BM=max(1, 1024 // hp), BH=hp, WHOLE=True, WARPS=8 if hp >= 8192 else 4)
    return dict(BM=1, BH=2048, WHOLE=False, WARPS=4)


@planned
@accepts_host_tensors
def fused_add_rms_norm(
    x: Any, residual: Any, weight: Any, eps: float = 1e-6, *, interpret: bool = False
) -> None:
    """vLLM's `fused_add_rms_norm(input, residual, weight, epsilon)`, in place: residual
    ← x + residual (rounded to the dtype), then x ← residual · rsqrt(mean(residual², -1)
    + eps) · weight, in f32 rounded once (vLLM rounds the normalized row to the dtype
    before the weight's product, a second rounding). x, residual: [..., H] of one dtype (f32,
    f16 or bf16), distinct memory; rows may be strided (each row contiguous) on the
    host; weight: [H] of x's dtype or f32. Returns None."""
    shape, t = check(x, "x", *_any_rank(x, "H"))  # a scalar x is refused here
    check(residual, "residual", tuple(shape), (t,))
    h = shape[-1]
    _, wt = check(weight, "weight", (h,), (t, dtypes.f32))
    same_place(dict(x=x, residual=residual, weight=weight))
    if not float(eps) >= 0.0:
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    m = _rows(shape)
    rows = [in_place_view(a, n, (m, h), ROWS) for a, n in ((x, "x"), (residual, "residual"))]
    if m * h == 0:
        return None
    args = [*rows, f32_host(weight) if wt == dtypes.f32 else weight, float(eps)]
    run(fused_add_rms_norm_kernel, args, dict(T=t, WT=wt, **fused_tiles(h)), interpret)
    return None
