"""Mamba-1 selective state-space kernels: `selective_scan` (the forward over a sequence,
here) and `selective_state_update` (one decode step, Mamba-1's and Mamba-2's: its own
module, `tilelang.kernels.ssm_update`, re-exported here), with mamba_ssm's shapes and
arguments.

The recurrence, per batch b, channel d and state n, in f32 (f16 and bf16 inputs are
converted on load, the output rounded once to u's dtype):

    Δ = Δ + delta_bias[d];  Δ = softplus(Δ) with delta_softplus
    h[l] = exp(Δ[l]·A[d, n])·h[l-1] + Δ[l]·B[n, l]·u[l],  h[-1] = 0
    y[l] = Σ_n C[n, l]·h[n, l] + D[d]·u[l],  times silu(z[l]) when z is given

`selective_scan` runs it chunk by chunk along L (BL steps): each chunk scans the pairs
(a, b) = (exp(Δ·A), Δ·B·u) with `tl.associative_scan` under the combine
(a1, b1) ⊕ (a2, b2) = (a1·a2, a2·b1 + b2) (h -> a2·(a1·h + b1) + b2), then takes the
carried state h_in through the scanned decay: h = decay·h_in + local. Every factor is a
decay in (0, 1] when A < 0, so nothing overflows at any Δ·|A| (the log-space closed
form, exp(-cumsum(Δ·A)), overflows past Δ·|A| ≈ 88 per chunk). Steps past L load Δ = 0
(after the bias and softplus, masked by position), so the pair is (1, 0) and the last
state is h[L - 1]. The state dimension N is padded to a power of two BN (A, B, C load
0 there: a = 1, b = 0, a zero state that adds nothing).

A block handles one batch index and BD channels: tiles of [BD, BN, BL] f32. B and C
are read as [batch, G, N, L] (ungrouped ones as G = 1, a view); BD divides Dm / G, so
the channels of a block share one group's B and C.

Two kernels compute it (`scan_method` picks by the shape; `method=` overrides):

- the walk (`selective_scan_walk_kernel`), for batch × Dm × L of WALK_MIN_WORK or
  more with a group's channels in whole warps and N up to WALK_MAX_STATES (32): a
  thread per channel holds its N states in registers and steps through L, so each state and step costs an exp2, two
  products and two multiply-adds, with no scan tree and no reduction across threads.
  At the GPU check's shape (batch 8, Dm 2048, N 16, L 2048, f16, sm_90) the static
  report predicts 171 µs against the chunked scan's 1544 µs (the DRAM floor: 81 µs;
  the exponentials alone hold H100's special-function units for 143 µs). A grid of
  fewer than WALK_BLOCKS warps cuts L into segments (`walk_segments`): a first kernel
  (`walk_segments_kernel`) gives each segment but the last its effect on a state,
  h -> decay·h + local, and the walk over a segment starts from the fold of those
  before it (batch 1, Dm 2048: 8 segments, 40 µs predicted for both kernels against
  193 µs for the chunked scan);
- the chunked scan (`selective_scan_kernel`, described below), for little work: it
  spreads each channel's states and steps over threads.

Their results differ within rounding (the walk adds in step order, within a segment;
the chunked scan in the scan's tree order); each depends on the shape only, the same
on every machine and at every tile.

Tiles (`scan_configs`): the grid is batch × Dm / BD blocks, so the best BD depends on
the shape: few channels favour narrow blocks (more of them), many favour wide ones (B
and C loaded once for more channels). `_block_d` is the default and the first config;
device calls tune BD among half and twice it per (NB, DM, N) (`tilelang.tuning.library`;
L only lengthens each block's walk), host calls run the default unless ``tune=True``.
BL stays CHUNK (16 at N = 256, `chunk_length`, whose [BN, 32] tile would not fit the
registers): a chunk length regroups the scan's floats, and a result should not
depend on which machine tuned it.
"""

from typing import Any

from tilelang import dtypes
from tilelang.kernel import func, kernel
from tilelang.lang.signature import Tensor, constexpr
from tilelang.runtime.call_plans import planned
from tilelang.runtime.host_calls import accepts_host_tensors
from tilelang.tuning import library

from .common import (
    LOG2E,
    check,
    empty,
    f32_host,
    f32_params,
    flag,
    next_power_of_two,
    placeholder,
    reshaped,
    run,
    same_place,
    shape_of,
    silu,
    step_softplus,
    tl,
)

# the decode step, where `tilelang.kernels` (and users) found it before it had a module
from .ssm_update import selective_state_update, state_update_kernel  # noqa: F401

#: Tile elements per block (BD·BN·BL) the defaults aim at, with 4 warps.
TILE_ELEMENTS = 2048
#: The most tile elements a block of the chunked scan may hold: N = 128 at BD = 1 and
#: BL = 32 takes 253 registers on sm_80 (0 spills); twice that is over the 255.
MAX_TILE_ELEMENTS = 4096
#: Steps per chunk of `selective_scan` (fewer for N > 128: `chunk_length`).
CHUNK = 32
#: Channels of one warp of the walk kernel (one a lane); a group's channels must be a
#: multiple of it for the walk.
WALK_LANES = 32
#: Steps a walk's segment is a multiple of (`segment_bounds`); every BL divides it.
SEGMENT_ALIGN = 16
#: Blocks of one warp the walk's grid should have (the GPU check's shape has 512): a
#: grid of fewer cuts L into segments (`walk_segments`) of at least MIN_SEGMENT steps.
WALK_BLOCKS = 512
MIN_SEGMENT = 128
#: The least work (batch × Dm × L channel-steps) for which `selective_scan` walks: a
#: segment's steps run one after another in one thread, so a short walk over few
#: channels takes longer than the chunked scan, which spreads each channel's states
#: and steps over threads (the static model at L = 2048 on sm_90: the walk 20 µs
#: against 37 µs at 256 channels, 2^19 channel-steps; at 512 steps the chunked scan
#: wins below 2048 channels).
WALK_MIN_WORK = 2**19
#: The most states (N, padded to a power of two) the walk holds in a thread's
#: registers: BN = 16 walks 16 steps a chunk; BN = 32 walks WIDE_WALK_STEPS. BN = 64
#: needs over 400 even at 4 steps, so larger N runs the chunked scan.
WALK_MAX_STATES = 32
#: The walk's steps a chunk at BN = 32: 127-132 registers, 0 spills. At 8, ptxas gives
#: a segmented f32 walk 128-168 on sm_80 and spills 8-136 bytes (at 16 it would need
#: about 390); the static model predicts the same time at 4 and 8 (the exponentials
#: bind), and the result does not depend on it.
WIDE_WALK_STEPS = 4


@func
def affine(left, right):
    """(a1, b1) ⊕ (a2, b2): h -> a2·(a1·h + b1) + b2, the linear recurrence h = a·h + b."""
    a1, b1 = left
    a2, b2 = right
    return a1 * a2, a2 * b1 + b2


@func
def step_size(delta, bias, d0, BD, HAS_BIAS, SOFTPLUS):
    """Δ [BD, L'] (f32) after the bias and softplus."""
    if HAS_BIAS:
        delta = delta + tl.load(bias, [d0], [BD])[:, None]
    if SOFTPLUS:
        delta = step_softplus(delta)
    return delta


@func
def channel_steps(t, b, d0, l0, BD, BL, layout):
    """The [BD, BL] chunk, in f32, of channels d0.. from step l0 of a [batch, Dm, L]
    tensor (u, Δ, z), in `layout` (None: the compiler's choice)."""
    return tl.reshape(tl.load(t, [b, d0, l0], [1, BD, BL], layout=layout), [BD, BL]).to(tl.f32)


@func
def chunk_steps(delta, bias, b, d0, l0, L, BD, BL, HAS_BIAS, SOFTPLUS, layout):
    """Δ of the chunk after the bias and softplus; 0 at steps past L, where the pair is
    then (1, 0): the state passes through unchanged."""
    dt = step_size(
        channel_steps(delta, b, d0, l0, BD, BL, layout), bias, d0, BD, HAS_BIAS, SOFTPLUS
    )
    if l0 + BL > L:  # only the last chunk has steps past L: the others skip the mask
        inside = (tl.arange(0, BL) + l0 < L)[None, :]
        dt = tl.where(tl.broadcast(inside, [BD, BL]), dt, 0.0)
    return dt


# min_blocks=1: without a minimum of blocks ptxas caps a thread's registers to fit 4 to
# 7 blocks (128, 80, 72), below what the scan's tiles hold, and spills 8-24 bytes: at
# BD 4, BN 16 (a call that warned on sm_90a) 128 given, 140 estimated; which tiles spill
# depends on the size facts, flags and arch. Given the 255 it takes what a tile needs
# (60-150 at the default tiles, up to about 250 at twice them), 0 spills, and the static
# model predicts the same time or less at every shape compared (3 or 5 blocks resident
# instead of 4 or 7: the scan is bound by instruction issue, not latency).
@kernel(warps=4, min_blocks=1)
def selective_scan_kernel(
    u: Tensor["T", "NB", "DM", "L"],
    delta: Tensor["T", "NB", "DM", "L"],
    A: Tensor[dtypes.f32, "DM", "N"],
    B: Tensor["T", "NB", "G", "N", "L"],
    C: Tensor["T", "NB", "G", "N", "L"],
    D: Tensor[dtypes.f32, "ND"],
    z: Tensor["T", "NZ", "DZ", "LZ"],
    bias: Tensor[dtypes.f32, "NBIAS"],
    out: Tensor["T", "NB", "DM", "L"],
    last: Tensor[dtypes.f32, "NL", "DL", "SL"],
    T: constexpr = dtypes.f32,
    HAS_D: constexpr = False,
    HAS_Z: constexpr = False,
    HAS_BIAS: constexpr = False,
    SOFTPLUS: constexpr = False,
    LAST: constexpr = False,
    BD: constexpr = 4,
    BN: constexpr = 16,
    BL: constexpr = 32,
):
    """out = the selective scan of u (module docstring); last = h[L - 1] with LAST."""
    b, bd = tl.blocks(NB, tl.cdiv(DM, BD))
    d0 = bd * BD
    g = d0 // (DM // G)  # BD divides DM / G: the block's channels share one group
    rate = tl.load(A, [d0, 0], [BD, BN])[:, :, None]
    skip = tl.zeros([BD, 1], tl.f32)
    if HAS_D:
        skip = tl.load(D, [d0], [BD])[:, None]
    carry = tl.zeros([BD, BN, 1], tl.f32)
    for l0 in tl.range(0, L, BL):
        x = channel_steps(u, b, d0, l0, BD, BL, None)
        dt = chunk_steps(delta, bias, b, d0, l0, L, BD, BL, HAS_BIAS, SOFTPLUS, None)
        bt = tl.reshape(tl.load(B, [b, g, 0, l0], [1, 1, BN, BL]), [BN, BL]).to(tl.f32)
        ct = tl.reshape(tl.load(C, [b, g, 0, l0], [1, 1, BN, BL]), [BN, BL]).to(tl.f32)
        a = tl.exp(dt[:, None, :] * rate)
        inject = (dt * x)[:, None, :] * bt[None, :, :]
        decay, local = tl.associative_scan(affine, (a, inject), axis=2)
        h = decay * carry + local
        y = tl.sum(h * ct[None, :, :], axis=1) + skip * x
        if HAS_Z:
            y = y * silu(channel_steps(z, b, d0, l0, BD, BL, None))
        tl.store(out, [b, d0, l0], tl.reshape(y.to(T), [1, BD, BL]))
        carry = h[:, :, BL - 1 :]
    if LAST:
        tl.store(last, [b, d0, 0], tl.reshape(carry, [1, BD, BN]))


@kernel(warps=4)
def step_columns_kernel(
    x: Tensor["T", "NB", "G", "N", "L"],
    y: Tensor[dtypes.f32, "NB", "G", "L", "N"],
    T: constexpr = dtypes.f32,
    BN: constexpr = 16,
    BLK: constexpr = 64,
):
    """y[b, g, l, :] = x[b, g, :, l] in f32 (BN ≥ N): B and C with a step's N values
    contiguous, so that a step of the walk reads them as one row of the chunk's tile."""
    b, g, lb = tl.blocks(NB, G, tl.cdiv(L, BLK))
    block = tl.reshape(tl.load(x, [b, g, 0, lb * BLK], [1, 1, BN, BLK]), [BN, BLK])
    columns = tl.transpose(block.to(tl.f32))
    tl.store(y, [b, g, lb * BLK, 0], tl.reshape(columns, [1, 1, BLK, BN]))


def walk_min_blocks(BD, **_):
    """The walk's `min_blocks`: 1 for blocks of 2 and 4 warps, where ptxas otherwise caps
    a thread at 80 or 96 registers (BN 4 and 8, 16 steps a chunk, sm_90a) and spills
    8-16 bytes; given the 255 it takes 131 (BN 4) to 246 (BN 16), 0 spills, and the
    static model predicts the same time (the exponentials or memory latency bind) with
    half the blocks resident. A block of one warp (the default) keeps ptxas's own
    choice (at most 168, 0 spills): stated there, a minimum would let the register
    estimate, pessimistic for the walk (293 at BN 16 where ptxas uses 128), refuse
    builds near its limit (1.15 × 255)."""
    return 1 if BD > WALK_LANES else None


@kernel(warps=lambda BD, **_: BD // WALK_LANES, min_blocks=walk_min_blocks)
def selective_scan_walk_kernel(
    u: Tensor["T", "NB", "DM", "L"],
    delta: Tensor["T", "NB", "DM", "L"],
    A: Tensor[dtypes.f32, "DM", "N"],
    B: Tensor[dtypes.f32, "NB", "G", "L", "N"],
    C: Tensor[dtypes.f32, "NB", "G", "L", "N"],
    D: Tensor[dtypes.f32, "ND"],
    z: Tensor["T", "NZ", "DZ", "LZ"],
    bias: Tensor[dtypes.f32, "NBIAS"],
    out: Tensor["T", "NB", "DM", "L"],
    last: Tensor[dtypes.f32, "NL", "DL", "SL"],
    decay: Tensor[dtypes.f32, "PB", "S1", "PD", "PN"],
    local: Tensor[dtypes.f32, "PB", "S1", "PD", "PN"],
    T: constexpr = dtypes.f32,
    HAS_D: constexpr = False,
    HAS_Z: constexpr = False,
    HAS_BIAS: constexpr = False,
    SOFTPLUS: constexpr = False,
    LAST: constexpr = False,
    SEGMENTED: constexpr = False,
    BD: constexpr = 32,
    BN: constexpr = 16,
    BL: constexpr = 16,
):
    """`selective_scan_kernel`'s result by a walk: each thread holds one channel's BN
    states in registers and steps through L one position at a time (BL a chunk, its
    steps unrolled), h = exp(Δ·A)·h + Δ·B·u (one `tl.fma`), y = Σ_n C·h + D·u (a
    chain of `tl.fma` in n's order). No scan tree, no reduction across threads: per
    state and step an exp2, two products and two multiply-adds. The exponent is
    Δ·(A·log2 e), by `fast_exp2`. B and C come as f32 [batch, G, L, N]
    (`step_columns_kernel`), so a step's N values are a row of the chunk's tile:
    contiguous where the block stages it in shared memory; C broadcast over the
    channels first, so that its column n is each thread's own register.

    SEGMENTED: L is cut into S1 + 1 segments (`segment_bounds`), a block each, for
    grids of few channels; segment s starts from h = fold of the S1 (decay, local)
    pairs of `walk_segments_kernel` before it, h -> decay·h + local."""
    if SEGMENTED:
        b, bd, s = tl.blocks(NB, tl.cdiv(DM, BD), S1 + 1)
        start, stop = segment_bounds(s, S1, L)
    else:
        b, bd = tl.blocks(NB, tl.cdiv(DM, BD))
        start, stop = 0, L
    d0 = bd * BD
    g = d0 // (DM // G)
    # a thread per channel: its states, and its chunk of u, Δ and z, in its registers
    states = tl.Layout((BD, BN), ((BD,), (BN,)), (0,), (1,))
    steps = tl.Layout((1, BD, BL), ((1,), (BD,), (BL,)), (1,), (0, 2))
    rate = decay_rates(A, d0, BD, BN, states)
    skip = tl.zeros([BD, 1], tl.f32)
    if HAS_D:
        skip = tl.load(D, [d0], [BD])[:, None]
    h = tl.zeros([BD, BN], tl.f32)
    if SEGMENTED:
        for before in tl.range(0, s):
            h = tl.fma(
                segment_state(decay, b, before, d0, BD, BN, states),
                h,
                segment_state(local, b, before, d0, BD, BN, states),
            )
    for l0 in tl.range(start, stop, BL):
        x = channel_steps(u, b, d0, l0, BD, BL, steps)
        dt = chunk_steps(delta, bias, b, d0, l0, L, BD, BL, HAS_BIAS, SOFTPLUS, steps)
        inject = dt * x
        # the chunk's B and C columns side by side: every step's pair is a row of one
        # tile, which the block stages in shared memory once and each step reads
        columns = tl.concat(
            [step_rows(B, b, g, l0, BL, BN), step_rows(C, b, g, l0, BL, BN)], axis=1
        )
        ys = []
        for j in range(BL):
            bj = tl.reshape(columns[j : j + 1, :BN], [1, BN])
            cj = tl.reshape(columns[j : j + 1, BN:], [1, BN])
            h = state_step(h, dt, inject, rate, bj, j)
            cs = tl.broadcast(cj, [BD, BN])  # the states' layout: its columns rename
            y = h[:, 0:1] * cs[:, 0:1]
            for n in range(1, BN):
                y = tl.fma(h[:, n : n + 1], cs[:, n : n + 1], y)
            ys.append(y)
        y = tl.concat(ys, axis=1) + skip * x
        if HAS_Z:
            y = y * silu(channel_steps(z, b, d0, l0, BD, BL, steps))
        tl.store(out, [b, d0, l0], tl.reshape(y.to(T), [1, BD, BL]))
    if LAST:
        if SEGMENTED:
            if s == S1:  # the last segment ends with h[L - 1]
                tl.store(last, [b, d0, 0], tl.reshape(h, [1, BD, BN]))
        else:
            tl.store(last, [b, d0, 0], tl.reshape(h, [1, BD, BN]))


@func
def segment_bounds(s, S1, L):
    """Steps [start, stop) of segment s of S1 + 1: equal lengths in whole SEGMENT_ALIGN
    steps (so every chunk length BL that divides it gives the same segments)."""
    length = tl.cdiv(tl.cdiv(L, S1 + 1), SEGMENT_ALIGN) * SEGMENT_ALIGN
    start = s * length
    return start, tl.minimum(start + length, L)


@func
def segment_state(t, b, s, d0, BD, BN, layout):
    """The [BD, BN] states of channels d0.. of segment s of a [batch, S1, Dm, N]."""
    return tl.reshape(tl.load(t, [b, s, d0, 0], [1, 1, BD, BN]), [BD, BN])


@func
def decay_rates(A, d0, BD, BN, layout):
    """A·log2 e of channels d0.. [BD, BN], in the states' `layout`: 2^(Δ·rate) decays."""
    return tl.load(A, [d0, 0], [BD, BN], layout=layout) * LOG2E


@func
def step_rows(t, b, g, l0, BL, BN):
    """B's or C's [BL, BN] rows of steps l0.. of group g (f32 [batch, G, L, N])."""
    return tl.reshape(tl.load(t, [b, g, l0, 0], [1, 1, BL, BN]), [BL, BN])


@func
def state_step(h, dt, inject, rate, bj, j):
    """The walk's state update at step j of a chunk: h = 2^(Δ·rate)·h + (Δ·u)·B_j."""
    return tl.fma(tl.fast_exp2(dt[:, j : j + 1] * rate), h, inject[:, j : j + 1] * bj)


@kernel(warps=lambda BD, **_: BD // WALK_LANES)
def walk_segments_kernel(
    u: Tensor["T", "NB", "DM", "L"],
    delta: Tensor["T", "NB", "DM", "L"],
    A: Tensor[dtypes.f32, "DM", "N"],
    B: Tensor[dtypes.f32, "NB", "G", "L", "N"],
    bias: Tensor[dtypes.f32, "NBIAS"],
    decay: Tensor[dtypes.f32, "NB", "S1", "DM", "N"],
    local: Tensor[dtypes.f32, "NB", "S1", "DM", "N"],
    T: constexpr = dtypes.f32,
    HAS_BIAS: constexpr = False,
    SOFTPLUS: constexpr = False,
    BD: constexpr = 32,
    BN: constexpr = 16,
    BL: constexpr = 16,
):
    """What each of the first S1 segments of L (`segment_bounds`, of S1 + 1) does to
    a state, h_end = decay·h_start + local: decay = 2^(A·log2 e·ΣΔ) over the
    segment, local = the walk's h from h_start = 0 (its state update, step by step).
    The walk over segment s then starts from the fold of the pairs before it."""
    b, bd, s = tl.blocks(NB, tl.cdiv(DM, BD), S1)
    start, stop = segment_bounds(s, S1, L)
    d0 = bd * BD
    g = d0 // (DM // G)
    states = tl.Layout((BD, BN), ((BD,), (BN,)), (0,), (1,))
    steps = tl.Layout((1, BD, BL), ((1,), (BD,), (BL,)), (1,), (0, 2))
    rate = decay_rates(A, d0, BD, BN, states)
    h = tl.zeros([BD, BN], tl.f32)
    total = tl.zeros([BD, 1], tl.f32)
    for l0 in tl.range(start, stop, BL):
        x = channel_steps(u, b, d0, l0, BD, BL, steps)
        dt = chunk_steps(delta, bias, b, d0, l0, L, BD, BL, HAS_BIAS, SOFTPLUS, steps)
        inject = dt * x
        bt = step_rows(B, b, g, l0, BL, BN)
        for j in range(BL):
            h = state_step(h, dt, inject, rate, tl.reshape(bt[j : j + 1, :], [1, BN]), j)
            total = total + dt[:, j : j + 1]
    tl.store(decay, [b, s, d0, 0], tl.reshape(tl.fast_exp2(total * rate), [1, 1, BD, BN]))
    tl.store(local, [b, s, d0, 0], tl.reshape(h, [1, 1, BD, BN]))


def _block_d(bn: int, bl: int, dm: int, per_group: int) -> int:
    """Channels per block: about TILE_ELEMENTS elements, a power of two that divides the
    channels of a group (a block reads one group's B and C)."""
    bd = max(1, min(next_power_of_two(dm), TILE_ELEMENTS // (bn * bl)))
    while per_group % bd:
        bd //= 2
    return bd


def walk_configs(per_group: int, bn: int = 16) -> list[dict[str, int]]:
    """The walk kernel's tiles a call tunes among: a warp of channels a block first (the
    default: the most blocks), then 2 and 4 warps where a group's channels allow; BL
    16 steps a chunk (8 holds fewer registers), only WIDE_WALK_STEPS for BN = 32
    (`WALK_MAX_STATES`). The walk's result does not depend on them: it adds in the same
    order at every tile."""
    widths = [w for w in (WALK_LANES, 2 * WALK_LANES, 4 * WALK_LANES) if per_group % w == 0]
    if bn > WALK_MAX_STATES // 2:
        return [{"BD": w, "BL": WIDE_WALK_STEPS} for w in widths]
    return [{"BD": w, "BL": 16} for w in widths] + [{"BD": WALK_LANES, "BL": 8}]


def walk_steps(bn: int) -> int:
    """The steps a chunk of `walk_segments_kernel` (the walk's own: `walk_configs`): 16,
    or 8 above half of `WALK_MAX_STATES` states (BN = 32 holds twice the registers a
    step; 127-128 registers, 0 spills, with no output to compute beside the state)."""
    return 8 if bn > WALK_MAX_STATES // 2 else 16


def scan_method(method: str | None, channels: int, per_group: int, length: int, states: int) -> str:
    """ "walk" or "chunked" for a call (`selective_scan`'s `method`): None picks the walk
    when channels × length is WALK_MIN_WORK or more, a group's channels fill warps
    (`WALK_LANES`) and the N `states` fit a thread's registers (`WALK_MAX_STATES`),
    else the chunked scan. An explicit "walk" the shape cannot run is a ValueError."""
    walkable = per_group % WALK_LANES == 0
    fits = next_power_of_two(states) <= WALK_MAX_STATES
    if method is None:
        return "walk" if walkable and fits and channels * length >= WALK_MIN_WORK else "chunked"
    if method not in ("walk", "chunked"):
        raise ValueError(f"method must be None, 'walk' or 'chunked', got {method!r}")
    if method == "walk" and not walkable:
        raise ValueError(
            f"method='walk' needs the channels of a group (Dm / G = {per_group}) to be a "
            f"multiple of {WALK_LANES}; use method='chunked' or None"
        )
    if method == "walk" and not fits:
        raise ValueError(
            f"method='walk' holds a channel's states in registers: it supports a state "
            f"size N (A.shape[1]) from 1 to {WALK_MAX_STATES}, got N = {states}; use "
            "method='chunked' or None"
        )
    return method


def chunk_length(bn: int) -> int:
    """The chunked scan's steps a chunk, BL: CHUNK, fewer where one channel's [BN, BL]
    tile would pass MAX_TILE_ELEMENTS (N = 256: 16). A function of N only: the result
    depends on it (the scan's tree)."""
    return max(1, min(CHUNK, MAX_TILE_ELEMENTS // bn))


def scan_configs(bn: int, dm: int, per_group: int) -> list[dict[str, int]]:
    """The BD a call tunes among: `_block_d` first (the default), then half and twice
    it, each a power of two dividing the channels of a group, and none past
    MAX_TILE_ELEMENTS (they would not fit the registers)."""
    bl = chunk_length(bn)
    bd = _block_d(bn, bl, dm, per_group)
    widths = [bd] + [w for w in (bd // 2, 2 * bd) if w >= 1 and per_group % w == 0]
    return [{"BD": w} for w in widths if w == bd or w * bn * bl <= MAX_TILE_ELEMENTS]


@planned
@accepts_host_tensors
def selective_scan(
    u: Any,
    delta: Any,
    A: Any,
    B: Any,
    C: Any,
    D: Any = None,
    z: Any = None,
    delta_bias: Any = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    *,
    interpret: bool = False,
    tune: bool | None = None,
    method: str | None = None,
) -> Any:
    """The Mamba-1 selective scan (mamba_ssm's `selective_scan_fn`, forward).

    u, delta, z: [batch, Dm, L]; A: [Dm, N]; B, C: [batch, N, L], or grouped
    [batch, G, N, L] (channel d reads group d // (Dm / G)); D, delta_bias: [Dm].
    u, delta, B, C and z share one dtype (f32, f16 or bf16); A, D and delta_bias are f32
    (host arrays of f64, f16 or bf16 are converted, once). Computes in f32 (module
    docstring) and returns out [batch, Dm, L] in u's dtype, and with
    `return_last_state` also the f32 state h[L - 1], [batch, Dm, N]. Host arrays run on
    the CPU backend, device tensors on the GPU; `interpret` runs the reference
    interpreter (host arrays only). `tune`: None tunes BD on device tensors only, True
    on host arrays too (the static model's ranking), False runs the default tile
    (module docstring). `method`: "walk" (`selective_scan_walk_kernel`, a thread per
    channel), "chunked" (`selective_scan_kernel`) or None, by the shape
    (`scan_method`)."""
    (nb, dm, length), t = check(u, "u", (None, None, None), names=("batch", "Dm", "L"))
    softplus, wants_last = (
        flag(delta_softplus, "delta_softplus"),
        flag(return_last_state, "return_last_state"),
    )
    check(delta, "delta", (nb, dm, length), (t,))
    (_, n), _ = check(A, "A", (dm, None), f32_params(False), ("Dm", "N"))
    if n < 1:
        raise ValueError(f"A must have at least one state column (shape [Dm, N]), got N = {n}")
    groups = 1
    if len(shape_of(B, "B")) == 4:
        (_, groups, _, _), _ = check(B, "B", (nb, None, n, length), (t,), (None, "G", None, None))
        if groups < 1 or dm % groups:
            raise ValueError(
                f"B's groups (shape [batch, G, N, L]) must divide Dm = {dm}, got G = {groups}"
            )
        check(C, "C", (nb, groups, n, length), (t,))
    else:
        check(B, "B", (nb, n, length), (t,))
        check(C, "C", (nb, n, length), (t,))
        B, C = (reshaped(v, (nb, 1, n, length), name) for v, name in ((B, "B"), (C, "C")))
    if z is not None:
        check(z, "z", (nb, dm, length), (t,))
    device = same_place(dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias))
    params = f32_params(device)
    check(A, "A", (dm, n), params)
    for value, name in ((D, "D"), (delta_bias, "delta_bias")):
        if value is not None:
            check(value, name, (dm,), params)
    out = empty(u, (nb, dm, length), t)
    last = empty(u, (nb, dm, n), dtypes.f32) if wants_last else placeholder(u, 3)
    if nb * dm * length == 0:  # no steps: the last state is h[-1] = 0
        if wants_last:
            last = placeholder(u, 3, dtypes.f32, (nb, dm, n))
        return (out, last) if wants_last else out
    bn = next_power_of_two(n)
    bl = chunk_length(bn)
    args = [
        u,
        delta,
        f32_host(A),
        B,
        C,
        placeholder(u) if D is None else f32_host(D),
        placeholder(u, 3, t) if z is None else z,
        placeholder(u) if delta_bias is None else f32_host(delta_bias),
        out,
        last,
    ]
    constexprs = dict(
        T=t,
        HAS_D=D is not None,
        HAS_Z=z is not None,
        HAS_BIAS=delta_bias is not None,
        SOFTPLUS=softplus,
        LAST=wants_last,
        BN=bn,
        BL=bl,
    )
    kernel, tiles = selective_scan_kernel, scan_configs(bn, dm, dm // groups)
    if scan_method(method, nb * dm, dm // groups, length, n) == "walk":
        kernel, tiles = selective_scan_walk_kernel, walk_configs(dm // groups, bn)
        constexprs.pop("BL")
        args[3:5] = (step_columns(v, t, bn, interpret) for v in (B, C))
        segments = walk_segments(nb, dm, length)
        constexprs["SEGMENTED"] = segments > 1
        args += segment_states(args, segments, constexprs, interpret)
    if interpret:
        run(kernel, args, {**constexprs, **tiles[0]}, interpret)
    else:
        library.call(kernel, args, constexprs, tiles, ("NB", "DM", "N"), tune, device)
    return (out, last) if wants_last else out


def walk_segments(nb: int, dm: int, length: int) -> int:
    """Segments of L for the walk (`selective_scan_walk_kernel`'s SEGMENTED): 1 when
    batch × Dm fills WALK_BLOCKS warps, else enough to reach it, each of at least
    MIN_SEGMENT steps. A function of the shape only: the result depends on it."""
    warps = max(1, nb * dm // WALK_LANES)
    if warps >= WALK_BLOCKS:
        return 1
    return max(1, min(-(-WALK_BLOCKS // warps), length // MIN_SEGMENT))


def segment_states(
    args: list[Any], segments: int, constexprs: dict[str, Any], interpret: bool
) -> list[Any]:
    """The walk's (decay, local) arguments: for SEGMENTED, the first segments - 1
    segments' pairs, f32 [batch, segments - 1, Dm, N] (`walk_segments_kernel`, run
    here); else placeholders."""
    u, delta, a, b = args[:4]
    bias = args[7]
    if segments == 1:
        return [placeholder(u, 4), placeholder(u, 4)]
    nb, dm, _ = shape_of(u, "u")
    n = shape_of(a, "A")[1]
    decay, local = (empty(u, (nb, segments - 1, dm, n), dtypes.f32) for _ in range(2))
    keep = ("T", "HAS_BIAS", "SOFTPLUS", "BN")
    steps = walk_steps(constexprs["BN"])
    run(
        walk_segments_kernel,
        [u, delta, a, b, bias, decay, local],
        {k: constexprs[k] for k in keep} | {"BD": WALK_LANES, "BL": steps},
        interpret,
    )
    return [decay, local]


def step_columns(x: Any, t: dtypes.DType, bn: int, interpret: bool) -> Any:
    """x [batch, G, N, L] as f32 [batch, G, L, N] where x lives (`step_columns_kernel`)."""
    nb, groups, n, length = shape_of(x, "B")
    y = empty(x, (nb, groups, length, n), dtypes.f32)
    run(step_columns_kernel, [x, y], dict(T=t, BN=bn), interpret)
    return y
