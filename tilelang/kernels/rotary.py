"""Rotary position embeddings applied in place: `rotary_embedding`, with vLLM's
arguments (its `rotary_embedding` custom op: positions, query, key, head_size,
cos_sin_cache, is_neox).

For token t at position p = positions[t], each head's first R = rot_dim elements are
rotated by the angles of row p of `cos_sin_cache` [max_position, R], whose first R/2
columns are cos θ_i and last R/2 are sin θ_i; elements from R to head_size stay as
they are (partial rotary, as GPT-NeoX and Phi use). The pairs rotated together:

    neox (is_neox=True, Llama and most models):  x1 = x[i],    x2 = x[i + R/2]
    GPT-J (is_neox=False, interleaved):           x1 = x[2i],   x2 = x[2i + 1]

    x1' = x1·cos θ_i − x2·sin θ_i,   x2' = x2·cos θ_i + x1·sin θ_i   (i < R/2)

computed in f32 from the inputs and the cache converted exactly, each result rounded
once to the tensor's dtype. (vLLM's CUDA kernel multiplies in the tensor's dtype and
rounds each product: the results can differ from it in the last bit, toward the exact
rotation here.)

A block rotates BT tokens of HB heads: the cos and sin rows of its tokens are gathered
once (positions outside [0, max_position) gather nothing and read 0: such a token's
rotated elements become 0; host positions are checked before the launch), then each
head's pairs are two loads (neox: the two halves; GPT-J: one load of R elements split
into its even and odd elements) and two stores back to where they came from. query and
key reach the kernel as the span of memory from their first element to their last, in
rows of one head: token t's head h is row t · step + h, step the heads from one token
to the next (more than the tensor's own where its tokens lie apart: the q and k column
ranges of a fused qkv projection). So they are rotated where they lie, on the GPU
(which takes only contiguous tensors) and on the CPU backend (which would copy a
strided view and write all of it back) alike, and rows of the span that are not
theirs (v's, the other of q and k) are neither read nor written.
"""

from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.kernel import kernel
from tilelang.lang.signature import Tensor, constexpr
from tilelang.runtime.call_plans import planned
from tilelang.runtime.host_calls import accepts_host_tensors
from tilelang.runtime.host_tensor import values_dtype

from .common import (
    FLOATS,
    address_and_strides,
    check,
    flag,
    in_place_view,
    next_power_of_two,
    reshaped,
    run,
    same_place,
    shape_of,
    span_of,
    tl,
)

#: The dtypes of positions (vLLM passes torch.long).
POSITION_TYPES = (dtypes.i32, dtypes.i64)
#: Pairs a block rotates per head (BT tokens of R/2 pairs, R/2 rounded up).
PAIRS_PER_HEAD_TILE = 1024
#: What a view of query or key as token rows needs (`in_place_view`'s message).
TOKEN_ROWS = ("rows of tokens", "its token dimensions and its heads")
#: Blocks that fill an H100 (132 SMs) four times over.
MANY_BLOCKS = 4 * 132


@kernel(warps=4)
def rotary_kernel(
    positions: Tensor["PT", "NT"],
    x: Tensor["T", "NR", "D"],
    cache: Tensor["CT", "P", "R"],
    heads: dtypes.i32,
    step: dtypes.i32,
    T: constexpr = dtypes.f16,
    PT: constexpr = dtypes.i64,
    CT: constexpr = dtypes.f32,
    NEOX: constexpr = True,
    HALF: constexpr = 64,
    BT: constexpr = 16,
    HB: constexpr = 1,
):
    """Rotates in place the `heads` heads of each of the NT tokens of x, rows of one
    head [NR, D]: token t's head h is row t · step + h (the rows between tokens: the
    heads of a contiguous tensor, more where its tokens lie apart)."""
    bt, bh = tl.blocks(tl.cdiv(NT, BT), tl.cdiv(heads, HB))
    half = R // 2
    # a row outside the cache gathers nothing (cos = sin = 0); the cast saturates, so an
    # int64 position past 2^31 stays outside
    at = tl.load(positions, [bt * BT], [BT]).to(tl.i32)[:, None]
    pairs = (tl.arange(0, HALF) < half)[None, :]
    cos = tl.load(cache, [at, 0], [BT, HALF], mask=pairs).to(tl.f32)
    sin = tl.load(cache, [at, half], [BT, HALF], mask=pairs).to(tl.f32)
    tokens = bt * BT + tl.arange(0, BT)
    for i in tl.range(0, HB):
        h = bh * HB + i
        # the tokens' rows of head h; -1 (outside: not read, not written) past the last
        # token or the last head
        rows = tl.where((tokens < NT) & (h < heads), tokens * step + h, -1)[:, None]
        if NEOX:
            x1 = tl.load(x, [rows, 0], [BT, HALF], mask=pairs).to(tl.f32)
            x2 = tl.load(x, [rows, half], [BT, HALF], mask=pairs).to(tl.f32)
            tl.store(x, [rows, 0], (x1 * cos - x2 * sin).to(T), mask=pairs)
            tl.store(x, [rows, half], (x2 * cos + x1 * sin).to(T), mask=pairs)
        else:
            rotated = (tl.arange(0, 2 * HALF) < R)[None, :]
            both = tl.load(x, [rows, 0], [BT, 2 * HALF], mask=rotated).to(tl.f32)
            x1, x2 = tl.split(tl.reshape(both, [BT, HALF, 2]))
            out = tl.join(x1 * cos - x2 * sin, x2 * cos + x1 * sin)
            tl.store(x, [rows, 0], tl.reshape(out, [BT, 2 * HALF]).to(T), mask=rotated)


@planned
@accepts_host_tensors
def rotary_embedding(
    positions: Any,
    query: Any,
    key: Any,
    head_size: int,
    cos_sin_cache: Any,
    is_neox: bool = True,
    *,
    interpret: bool = False,
) -> None:
    """Rotates query and key in place (vLLM's `rotary_embedding`; the module docstring
    gives the definition). positions: int32 or int64 of any shape, one per token;
    query [*positions.shape, H · head_size] or [*positions.shape, H, head_size] (f32,
    f16 or bf16; rows may be strided, as the q columns of a fused qkv output are); key
    likewise with its own head count, or None; cos_sin_cache [max_position, rot_dim]
    (f32, f16 or bf16), rot_dim even and at most head_size. Host positions outside
    [0, max_position) are refused; on the GPU such a token's rotated elements become 0.
    Returns None. Host arrays run on the CPU backend, device tensors on the GPU;
    `interpret` runs the reference interpreter (host arrays only)."""
    if type(head_size) is not int or head_size < 2:
        raise ValueError(f"head_size must be an int of at least 2, got {head_size!r}")
    neox = flag(is_neox, "is_neox")
    rank = len(shape_of(positions, "positions"))
    if rank == 0:
        raise ValueError("positions must have at least one dimension (one per token), got []")
    lead, pt = check(positions, "positions", (None,) * rank, POSITION_TYPES)
    tokens = int(np.prod(lead, dtype=np.int64))
    (max_position, rot), ct = check(
        cos_sin_cache, "cos_sin_cache", (None, None), FLOATS, ("max_position", "rot_dim")
    )
    if rot % 2 or not 2 <= rot <= head_size:
        raise ValueError(
            f"cos_sin_cache's rot_dim must be even and in 2..head_size = {head_size}, got {rot}"
        )
    same_place(dict(positions=positions, query=query, key=key, cos_sin_cache=cos_sin_cache))
    rows = [_token_rows(query, "query", lead, head_size)]
    if key is not None:
        rows.append(_token_rows(key, "key", lead, head_size))
    if isinstance(positions, np.ndarray):
        _check_positions(positions, max_position)
    if tokens == 0:
        return None
    half = next_power_of_two(rot // 2)
    bt = max(1, min(64, PAIRS_PER_HEAD_TILE // half))
    flat = reshaped(positions, (tokens,), "positions")
    for x, t, heads, step in rows:
        # 4 heads a block (one gather of cos and sin for all four) where the grid stays
        # large: at least 4 blocks an SM of an H100
        hb = 4 if -(-tokens // bt) * heads >= 4 * MANY_BLOCKS else 1
        constexprs = dict(T=t, PT=pt, CT=ct, NEOX=neox, HALF=half, BT=bt, HB=hb)
        run(rotary_kernel, [flat, x, cos_sin_cache, heads, step], constexprs, interpret)
    return None


def _token_rows(x: Any, name: str, lead: tuple[int, ...], head_size: int) -> tuple:
    """(x as the kernel takes it, its dtype, its heads, the rows from one token to the
    next) for x [*lead, heads · head_size] or [*lead, heads, head_size]: the span of
    memory from x's first element to its last as rows of one head [rows, head_size], a
    view (the kernel writes x where it lies: the GPU takes only contiguous tensors, and
    the CPU backend would copy a strided view and write all of it back), token t's head
    h at row t · step + h."""
    shape = shape_of(x, name)
    tail = shape[len(lead) :]
    if tuple(shape[: len(lead)]) != tuple(lead) or len(tail) not in (1, 2):
        raise ValueError(
            f"{name} must have shape [{', '.join(map(str, lead))}, heads · head_size] or "
            f"[..., heads, head_size] (the leading dimensions positions.shape), got shape "
            f"{list(shape)}"
        )
    width = int(np.prod(tail, dtype=np.int64))
    if width % head_size or (len(tail) == 2 and tail[1] != head_size):
        raise ValueError(
            f"{name}'s last dimensions {list(tail)} must be heads · head_size with "
            f"head_size = {head_size}"
        )
    _, t = check(x, name, (None,) * len(shape), FLOATS)
    tokens, heads = int(np.prod(lead, dtype=np.int64)), width // head_size
    view = in_place_view(x, name, (tokens, width), TOKEN_ROWS)
    itemsize = values_dtype(t).itemsize
    _, strides = address_and_strides(view, itemsize)
    step = heads
    if strides is not None and tokens and width:
        elements = [s // itemsize for s in strides]
        step = _heads_apart(name, shape, elements, tokens, width, head_size)
    rows = (tokens - 1) * step + heads if tokens else 0
    if rows >= 2**31:
        raise ValueError(f"{name} spans {rows} rows of a head; the kernel's rows are 32-bit")
    return span_of(view, name, (rows, head_size), itemsize), t, heads, step


def _heads_apart(
    name: str, shape: tuple, strides: list[int], tokens: int, width: int, head_size: int
) -> int:
    """The rows of one head from one token to the next of `tokens` rows of tokens with
    element `strides` (each token's heads contiguous, tokens a whole number of heads
    apart; one token: its heads)."""
    token_stride, column_stride = strides
    if column_stride != 1 and width > 1:
        raise ValueError(
            f"{name} of shape {list(shape)} is written in place: each token's heads "
            f"must be contiguous, got a stride of {column_stride} elements between them"
        )
    if tokens == 1:
        return width // head_size
    if token_stride % head_size or token_stride < width:
        raise ValueError(
            f"{name}'s tokens must lie a whole number of heads (head_size = {head_size} "
            f"elements) apart without overlapping, got {token_stride} elements from one "
            f"token to the next"
        )
    return token_stride // head_size


def _check_positions(positions: np.ndarray, max_position: int) -> None:
    outside = np.flatnonzero((positions.reshape(-1) < 0) | (positions.reshape(-1) >= max_position))
    if outside.size:
        i = int(outside[0])
        raise ValueError(
            f"positions must lie in [0, max_position = {max_position}) (cos_sin_cache's "
            f"rows), got {int(positions.reshape(-1)[i])} at token {i}"
        )
