"""Normalization and gated activations of transformer blocks: `rms_norm` and
`silu_and_mul` (vLLM's names and layouts).

* ``rms_norm(x, weight, eps)``: y = x / sqrt(mean(x², last dim) + eps) · weight, over
  the last dimension H of x [..., H] (all leading dimensions are rows). A block
  normalizes BM rows: one pass over H in BH-wide tiles for the sum of squares, a second
  that scales and stores (x is read twice; H of any size).
* ``silu_and_mul(x)``: x [..., 2·d] -> silu(x[..., :d]) · x[..., d:]. The host views x as
  [rows, 2, d] (free for contiguous arrays); a block loads a [BM, 2, BD] tile holding
  both halves and cuts it with `tl.split`.

Both compute in f32 and round once to x's dtype (f32, f16 or bf16).
"""

import math
from typing import Any

from tilelang import dtypes
from tilelang.kernel import kernel
from tilelang.lang.signature import Tensor, constexpr
from tilelang.runtime.call_plans import planned
from tilelang.runtime.host_calls import accepts_host_tensors

from .common import FLOATS, check, empty, f32_host, next_power_of_two, reshaped, run, same_place, tl


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
