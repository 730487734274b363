"""Mamba-2's state-space duality (SSD) scan: `ssd_chunk_scan`, with mamba_ssm's
`mamba_chunk_scan_combined` shapes and arguments.

Per batch b and head h (reading group g = h // (H / G) of B and C), with a scalar
decay rate A[h], in f32 (with the dots' operands in the inputs' dtype, below; the
output rounded once to x's dtype):

    Δ = Δ + dt_bias[h];  Δ = softplus(Δ) with dt_softplus;  Δ clamped to dt_limit
    S[t] = exp(Δ[t]·A[h])·S[t-1] + Δ[t]·x[t] ⊗ B[t]   (S: [P, N], S[-1] = initial state)
    y[t] = S[t]·C[t] + D[h]·x[t],  times silu(z[t]) when z is given

The chunked form over chunks of Q steps, with s the cumulative sum of Δ·A inside the
chunk (s[t] = Σ_{i ≤ t} Δ[i]·A) and S_in the state entering it:

    y[t]  = Σ_{u ≤ t} (C[t]·B[u])·exp(s[t] - s[u])·Δ[u]·x[u]   (intra-chunk: two dots)
          + exp(s[t])·(C[t]·S_in)                              (the state passed in)
    S_out = exp(s[Q-1])·S_in + Σ_u exp(s[Q-1] - s[u])·Δ[u]·x[u] ⊗ B[u]

Every exponent is a difference of cumulative sums within one chunk, a decay of at most
1 when Δ·A ≤ 0, so nothing overflows at any Δ·|A| (the entries above the diagonal,
where the difference is positive, are selected away before the exponential). Steps
past L read Δ = 0 (after the bias and softplus, masked by position): they decay
nothing and inject nothing, so the state leaving the last chunk is S[L - 1].

No output reads a later step, even where the later step holds an inf or a NaN: the
entries of C·Bᵀ ∘ decay ∘ Δ for later steps are selected away (`tl.where`), not
multiplied by 0 (0·inf is NaN), so a later B or Δ never reaches them; and x's
non-finite values stay out of the intra-chunk dot, where every earlier row would
multiply them by its 0. The outputs at and after a non-finite x[u, p], in column p of
its chunk, are NaN instead (a 0/1 dot counts the non-finite x at or before each row,
exactly), and the state carries it into the chunks after. So every output before a
non-finite x, B or Δ is bit for bit what it would be without it. The price, by the
static model on sm_90a (batch 8, H 32, P 64, L 2048): bf16 N 64, 1025 -> 1161 warp
instructions a chunk, 143 -> 162 µs; N 128, 285 -> 298 µs; f32 about 12-15% more
(the extra dot goes through shared memory, which binds there).

Packed batches (mamba_ssm's `seq_idx`, [batch, L], non-decreasing ids): the recurrence
restarts where the id changes, S[t-1] taken as 0 at the first step of each sequence
after step 0, so initial_states feeds the sequence at step 0 only (mamba_ssm compares
with id 0: the same where ids start at 0, as vLLM's do). In the chunked form, number
the chunk's sequences σ[t] = the starts at or before t (a start at the chunk's first
step counts, so σ = 0 is the sequence of the state passed in) and restart s at each
start: one associative scan of (Δ·A, start) pairs gives both. Then entries (t, u) with
σ[t] ≠ σ[u] are selected away with the future ones, C[t]·S_in reaches only rows with
σ[t] = 0, and S_out = [σ_last = 0]·exp(s[Q-1])·S_in + Σ_{σ[u] = σ_last} exp(s[Q-1] -
s[u])·Δ[u]·x[u] ⊗ B[u], each term selected, never multiplied by 0: a non-finite value
of one sequence reaches no other (every exponent is a difference within one sequence).
The state at the last step e of a sequence (`cu_seqlens`' varlen states) is that sum
up to e over its segment, plus exp(s[e])·S_in when the segment is 0: the chunk that
holds e stores it. These run in a second kernel, `ssd_packed_kernel`, over the same
chunk function: the plain kernel's build and bits are unchanged. Cost of seq_idx by
the static model (batch 8, H 32, P 64, L 2048, sm_90a): bf16 N 64 172 -> 219 µs, N 128
299 -> 408 µs; f32 +2-4%. The masks come from the scan's segment numbers and from
positions, not from ids: masks from ids made f32 N = 128 spill on sm_80.

The four products of a chunk are `tl.dot`s with operands in the inputs' dtype and an
f32 accumulator: C·Bᵀ ([Q, N]·[N, Q]), (decay ∘ C·Bᵀ ∘ Δ)·x, C·S_in and (B ∘ w)ᵀ·x.
For f16 and bf16 inputs they run on the tensor cores; C·Bᵀ is exact (products of half
values are exact in f32), the other three round their f32 factor (the masked decays,
the state, the weighted B) once to the inputs' dtype, as mamba_ssm's kernels do: about
one rounding of that dtype in the output and the final state, never compounding,
because the state carried from chunk to chunk stays f32. f32 inputs multiply in f32
(the language has no tf32 dot, so these lower to its generic dot through shared
memory).

One kernel, one pass: a block owns one (batch, head, BP columns of P) and walks the
chunks in order, carrying its [N, BP] state in registers. Passing states between
chunks needs the previous chunk's state, and in this layout it never leaves the block:
no state round trip through memory and no second launch. The price is parallelism
over batch × heads × P / BP only, not over chunks (mamba_ssm's five kernels spread
chunks over blocks and pass states in a separate sequential kernel; that pays off when
batch × heads is small next to the sequence).

Tiles (`configs`): the grid is batch × heads × P / BP blocks, so the best BP and warps
depend on how many blocks the shape gives next to the SMs: few (small batch, few heads)
favour narrower blocks, many favour the widest state a block holds without spilling.
`block_p` with 8 warps is the default and the first config; device calls tune among
`configs` per (NB, H, P, N) (`tilelang.tuning.library`; L only lengthens each block's
walk, so it is not in the key), host calls run the default unless ``tune=True``.
"""

from types import SimpleNamespace
from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.kernel import func, kernel
from tilelang.lang.signature import Tensor, constexpr
from tilelang.runtime.call_plans import planned
from tilelang.runtime.host_calls import accepts_host_tensors
from tilelang.tuning import library

from . import packing
from .common import (
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
    tl,
)

#: The kernel's chunk is chunk_size rounded up to a power of two within these bounds
#: (the result does not depend on the chunk, only the rounding does): a 32-step chunk
#: keeps the [Q, N] tiles of B and C and the [Q, Q] mixing matrix in registers.
MIN_CHUNK, MAX_CHUNK = 16, 32
#: State elements (BN·BP) a block carries and the most columns of P it takes, for f32
#: inputs (f32 dots) and for f16/bf16 ones (tensor-core dots, fewer registers): with 8
#: warps these compile without spills for N up to 256 (docs/benchmarks.md).
STATE_ELEMENTS, MAX_BP = {False: 1024, True: 4096}, {False: 32, True: 64}
WARPS = 8


@func
def silu(v):
    return v * tl.sigmoid(v)


@func
def rows(tile, BL, BP):
    """A [1, BL, 1, BP] box as [BL, BP] f32."""
    return tl.reshape(tile, [BL, BP]).to(tl.f32)


@func
def segment_sum(left, right):
    """(v1, n1) ⊕ (v2, n2): v summed along the chunk, restarting at each sequence start
    (n counts the starts: a right part holding one restarts the sum)."""
    v1, n1 = left
    v2, n2 = right
    return tl.where(n2 > 0, v2, v1 + v2), n1 + n2


@func
def sequence_starts(c, l0):
    """1 where a step of the chunk begins a new sequence (its id differs from the step
    before's), else 0: never at step 0 (its sequence takes the initial state) nor past
    L (those steps continue the last sequence, with Δ = 0)."""
    ids = tl.reshape(tl.load(c.seq_idx, [c.b, l0], [1, c.BL]), [c.BL])
    before = tl.reshape(tl.load(c.seq_idx, [c.b, l0 - 1], [1, c.BL]), [c.BL])
    at = c.steps + l0
    return tl.where((ids != before) & (at > 0) & (at < c.L), 1, 0)


@func
def sequence_state(c, k, state, passed, start, end):
    """S at the chunk's step `end`, the last step of a sequence that starts at `start`
    of the chunk: the state passed in, decayed, when it is the sequence's (`passed`: it
    started in an earlier chunk, or at step 0 where the initial state feeds it), plus
    its steps in the chunk. Its rows by position, not by id or segment: masks made
    from steps in any layout (others made f32 N = 128 spill on sm_80)."""
    at_end = tl.sum(tl.where(c.steps == end, k.s, 0.0), axis=0, keepdims=True)
    mine = ((c.steps >= start) & (c.steps <= end))[:, None]
    weights = (tl.exp(at_end - k.s) * k.step)[:, None]  # inf in other rows: selected
    inject = tl.transpose(tl.where(mine, k.b_in.to(tl.f32) * weights, 0.0).to(c.T))
    own = tl.dot(inject, tl.where(mine, k.x_in, 0.0))
    return tl.where(passed, tl.exp(at_end)[:, None] * state, 0.0) + own


@func
def varlen_states(c, k, state, l0):
    """Stores the state at the last step of each sequence ending in this chunk: the ids
    of its first step to its last, the last one only when its end (cu[last + 1]) is in
    the chunk; an empty sequence stores nothing (its state stays 0). The ids are kept
    inside cu's range (a device seq_idx is not checked)."""
    end = tl.minimum(l0 + c.BL, c.L)
    last = tl.load(c.seq_idx, [c.b, end - 1])
    stop = tl.minimum(last + tl.where(tl.load(c.cu, [last + 1]) <= end, 1, 0), c.NCU - 1)
    for i in tl.range(tl.maximum(tl.load(c.seq_idx, [c.b, l0]), 0), stop):
        start, stop_i = tl.load(c.cu, [i]), tl.load(c.cu, [i + 1])
        passed = (start < l0) | (start == 0)
        final = tl.transpose(sequence_state(c, k, state, passed, start - l0, stop_i - 1 - l0))
        box = tl.reshape(final, [1, 1, c.BP, c.BN])
        tl.store(c.varlen, [i, c.h, c.p0, 0], box, mask=start < stop_i)


@func
def chunk(c, state, l0):
    """One chunk of the scan at step l0: stores its outputs (and, with VARLEN, the
    states of the sequences ending in it) and returns the state leaving it."""
    step = tl.reshape(tl.load(c.dt, [c.b, l0, c.h], [1, c.BL, 1]), [c.BL]).to(tl.f32)
    if c.HAS_BIAS:
        step = step + tl.load(c.bias, [c.h], [1])
    if c.SOFTPLUS:
        step = tl.softplus(step)
    if c.LIMIT:  # clamped by selects, not min/max (which would turn a NaN into dt_min)
        step = tl.where(step < c.dt_min, c.dt_min, tl.where(step > c.dt_max, c.dt_max, step))
    step = tl.where(c.steps + l0 < c.L, step, 0.0)  # steps past L: no decay, no input
    keep = c.causal
    segment = None  # each step's sequence, numbered from 0 in the chunk (HAS_SEQ)
    if c.HAS_SEQ:
        # s restarts at each sequence's first step, so every exponent below is a
        # difference within one sequence and a non-finite Δ reaches no other one.
        # Segment numbers from the same scan, not ids: masks in s's layout (ids'
        # masks on B made f32 N = 128 spill 156 bytes on sm_80)
        starts = sequence_starts(c, l0)
        s, segment = tl.associative_scan(segment_sum, (step * c.rate, starts), axis=0)
        keep = keep & (segment[:, None] == segment[None, :])
    else:
        s = tl.cumsum(step * c.rate, axis=0)
    x_in = tl.reshape(tl.load(c.x, [c.b, l0, c.h, c.p0], [1, c.BL, 1, c.BP]), [c.BL, c.BP])
    b_in = tl.reshape(tl.load(c.B, [c.b, l0, c.g, 0], [1, c.BL, 1, c.BN]), [c.BL, c.BN])
    k = SimpleNamespace(step=step, s=s, segment=segment, x_in=x_in, b_in=b_in)
    c_in = tl.reshape(tl.load(c.C, [c.b, l0, c.g, 0], [1, c.BL, 1, c.BN]), [c.BL, c.BN])
    gap = s[:, None] - s[None, :]
    decay = tl.exp(tl.where(keep, gap, 0.0))
    # future steps (and other sequences' steps) selected away, not multiplied by 0: a
    # non-finite B or Δ there would turn the product into NaN (0·inf)
    mix = tl.where(keep, tl.dot(c_in, tl.transpose(b_in)) * decay * step[None, :], 0.0)
    # the dots take the inputs' dtype (module docstring); the state stays f32. x's
    # non-finite values out of the dot, where a future step's 0 would meet them (0·inf
    # = NaN); the steps at and after one get NaN instead (`seen` counts them: a 0/1
    # dot, exact), so no step reads a later one
    finite = tl.abs(x_in) < float("inf")
    y = tl.dot(mix.to(c.T), tl.where(finite, x_in, 0.0))
    seen = tl.dot(keep.to(c.T), tl.where(finite, 0.0, 1.0).to(c.T))
    y = tl.where(seen > 0.0, float("nan"), y)
    carried = tl.exp(s)[:, None] * tl.dot(c_in, state.to(c.T))
    if c.HAS_SEQ:  # the state passed in reaches only its own sequence's rows
        carried = tl.where((segment == 0)[:, None], carried, 0.0)
    y = y + carried
    # x again, in the output's layout (a cache hit), not the dot operand's registers
    y = y + c.skip * rows(tl.load(c.x, [c.b, l0, c.h, c.p0], [1, c.BL, 1, c.BP]), c.BL, c.BP)
    if c.HAS_Z:
        y = y * silu(rows(tl.load(c.z, [c.b, l0, c.h, c.p0], [1, c.BL, 1, c.BP]), c.BL, c.BP))
    tl.store(c.out, [c.b, l0, c.h, c.p0], tl.reshape(y.to(c.T), [1, c.BL, 1, c.BP]))
    if c.VARLEN:
        varlen_states(c, k, state, l0)
    return leaving(c, k, state)


@func
def leaving(c, k, state):
    """The state leaving the chunk: S at its last step (with HAS_SEQ, its last
    sequence's, from that sequence's rows only)."""
    last_s = k.s[c.BL - 1 :]
    weights = (tl.exp(last_s - k.s) * k.step)[:, None]
    if c.HAS_SEQ:
        last = k.segment[c.BL - 1 :]
        mine = (k.segment == last)[:, None]
        inject = tl.transpose(tl.where(mine, k.b_in.to(tl.f32) * weights, 0.0).to(c.T))
        kept = tl.where(last[:, None] == 0, tl.exp(last_s)[:, None] * state, 0.0)
        return kept + tl.dot(inject, tl.where(mine, k.x_in, 0.0))
    inject = tl.transpose((k.b_in.to(tl.f32) * weights).to(c.T))
    return tl.exp(last_s)[:, None] * state + tl.dot(inject, k.x_in)


def more(c: SimpleNamespace, **values: Any) -> SimpleNamespace:
    """c with `values` added (called while a kernel is built: a kernel assigns names only)."""
    return SimpleNamespace(**vars(c), **values)


@func
def scan(c):
    """A block's walk over the chunks of (batch b, head h, columns p0 .. p0 + BP)."""
    b, h, bp = tl.blocks(c.NB, c.H, tl.cdiv(c.P, c.BP))
    p0 = bp * c.BP
    g = h // (c.H // c.G)
    rate = tl.load(c.A, [h], [1])
    skip = tl.zeros([1, c.BP], tl.f32)
    if c.HAS_D:
        if c.D_PER_P:
            skip = tl.load(c.D, [h, p0], [1, c.BP])
        else:
            skip = tl.broadcast(tl.load(c.D, [h, 0], [1, 1]), [1, c.BP])
    state = tl.zeros([c.BN, c.BP], tl.f32)
    if c.HAS_INITIAL:
        box = tl.load(c.initial, [b, h, p0, 0], [1, 1, c.BP, c.BN])
        state = tl.transpose(tl.reshape(box, [c.BP, c.BN]))
    steps = tl.arange(0, c.BL)
    causal = steps[:, None] >= steps[None, :]
    c = more(c, b=b, h=h, p0=p0, g=g, rate=rate, skip=skip, steps=steps, causal=causal)
    for l0 in tl.range(0, c.L, c.BL):
        state = chunk(c, state, l0)
    if c.FINAL:
        tl.store(c.final, [b, h, c.p0, 0], tl.reshape(tl.transpose(state), [1, 1, c.BP, c.BN]))


@kernel(warps=lambda **constants: constants["WARPS"])
def ssd_chunk_scan_kernel(
    x: Tensor["T", "NB", "L", "H", "P"],
    dt: Tensor["TD", "NB", "L", "H"],
    A: Tensor[dtypes.f32, "H"],
    B: Tensor["T", "NB", "L", "G", "N"],
    C: Tensor["T", "NB", "L", "G", "N"],
    D: Tensor[dtypes.f32, "HD", "PD"],
    z: Tensor["T", "NZ", "LZ", "HZ", "PZ"],
    bias: Tensor[dtypes.f32, "NBIAS"],
    initial: Tensor[dtypes.f32, "NI", "HI", "PI", "SI"],
    out: Tensor["T", "NB", "L", "H", "P"],
    final: Tensor[dtypes.f32, "NF", "HF", "PF", "SF"],
    T: constexpr = dtypes.f32,
    TD: constexpr = dtypes.f32,
    HAS_D: constexpr = False,
    D_PER_P: constexpr = False,
    HAS_Z: constexpr = False,
    HAS_BIAS: constexpr = False,
    SOFTPLUS: constexpr = False,
    HAS_INITIAL: constexpr = False,
    FINAL: constexpr = False,
    BL: constexpr = MAX_CHUNK,
    BN: constexpr = 16,
    BP: constexpr = 32,
    WARPS: constexpr = WARPS,
):
    """out = the SSD scan of x (module docstring); final = S[L - 1] with FINAL."""
    scan(
        SimpleNamespace(
            x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, bias=bias, initial=initial, out=out,
            final=final, NB=NB, L=L, H=H, P=P, G=G, T=T, HAS_D=HAS_D,
            D_PER_P=D_PER_P, HAS_Z=HAS_Z, HAS_BIAS=HAS_BIAS, SOFTPLUS=SOFTPLUS,
            HAS_INITIAL=HAS_INITIAL, FINAL=FINAL, BL=BL, BN=BN, BP=BP,
            LIMIT=False, HAS_SEQ=False, VARLEN=False,
        )
    )  # fmt: skip


@kernel(warps=lambda **constants: constants["WARPS"])
def ssd_packed_kernel(
    x: Tensor["T", "NB", "L", "H", "P"],
    dt: Tensor["TD", "NB", "L", "H"],
    A: Tensor[dtypes.f32, "H"],
    B: Tensor["T", "NB", "L", "G", "N"],
    C: Tensor["T", "NB", "L", "G", "N"],
    D: Tensor[dtypes.f32, "HD", "PD"],
    z: Tensor["T", "NZ", "LZ", "HZ", "PZ"],
    bias: Tensor[dtypes.f32, "NBIAS"],
    initial: Tensor[dtypes.f32, "NI", "HI", "PI", "SI"],
    seq_idx: Tensor[dtypes.i32, "NS", "LS"],
    cu: Tensor[dtypes.i32, "NCU"],
    out: Tensor["T", "NB", "L", "H", "P"],
    final: Tensor[dtypes.f32, "NF", "HF", "PF", "SF"],
    varlen: Tensor[dtypes.f32, "NV", "HV", "PV", "SV"],
    dt_min: dtypes.f32,
    dt_max: dtypes.f32,
    T: constexpr = dtypes.f32,
    TD: constexpr = dtypes.f32,
    HAS_D: constexpr = False,
    D_PER_P: constexpr = False,
    HAS_Z: constexpr = False,
    HAS_BIAS: constexpr = False,
    SOFTPLUS: constexpr = False,
    LIMIT: constexpr = False,
    HAS_INITIAL: constexpr = False,
    FINAL: constexpr = False,
    HAS_SEQ: constexpr = False,
    VARLEN: constexpr = False,
    BL: constexpr = MAX_CHUNK,
    BN: constexpr = 16,
    BP: constexpr = 32,
    WARPS: constexpr = WARPS,
):
    """`ssd_chunk_scan_kernel` with packed sequences and a clamp on Δ: with LIMIT, Δ is
    clamped to [dt_min, dt_max] after the bias and softplus; with HAS_SEQ the recurrence
    restarts where seq_idx [NB, L] changes (module docstring); with VARLEN (NB = 1,
    HAS_SEQ) varlen[i] is the state at the last step of sequence i, steps cu[i] ..<
    cu[i + 1] (NCU = n_seq + 1)."""
    scan(
        SimpleNamespace(
            x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, bias=bias, initial=initial, out=out,
            final=final, seq_idx=seq_idx, cu=cu, varlen=varlen, dt_min=dt_min,
            dt_max=dt_max, NB=NB, L=L, H=H, P=P, G=G, NCU=NCU, T=T, HAS_D=HAS_D,
            D_PER_P=D_PER_P, HAS_Z=HAS_Z, HAS_BIAS=HAS_BIAS, SOFTPLUS=SOFTPLUS,
            HAS_INITIAL=HAS_INITIAL, FINAL=FINAL, BL=BL, BN=BN, BP=BP, LIMIT=LIMIT,
            HAS_SEQ=HAS_SEQ, VARLEN=VARLEN,
        )
    )  # fmt: skip


def chunk_for(chunk_size: int) -> int:
    """The kernel's chunk for a requested chunk_size (module constants)."""
    return min(MAX_CHUNK, max(MIN_CHUNK, next_power_of_two(chunk_size)))


def block_p(bn: int, p: int, half: bool) -> int:
    """Columns of P per block: the [BN, BP] state near STATE_ELEMENTS (`half`: the
    inputs are f16 or bf16)."""
    return max(1, min(next_power_of_two(p), MAX_BP[half], STATE_ELEMENTS[half] // bn))


def configs(bn: int, p: int, half: bool) -> list[dict[str, int]]:
    """The (BP, WARPS) a call tunes among: `block_p` with 8 warps first (the default),
    then the same BP over 4 warps, half of it (more blocks) over 8 and 4 warps, and twice
    it (fewer blocks; may spill, then the autotuner prunes it) within P."""
    bp = block_p(bn, p, half)
    options = [(bp, WARPS), (bp, 4), (bp // 2, WARPS), (bp // 2, 4)]
    if 2 * bp <= next_power_of_two(p):
        options.append((2 * bp, WARPS))
    result: list[dict[str, int]] = []
    for width, warps in options:
        config = {"BP": width, "WARPS": warps}
        if width >= 1 and config not in result:
            result.append(config)
    return result


@planned
@accepts_host_tensors
def ssd_chunk_scan(
    x: Any,
    dt: Any,
    A: Any,
    B: Any,
    C: Any,
    chunk_size: int,
    D: Any = None,
    z: Any = None,
    dt_bias: Any = None,
    initial_states: Any = None,
    *,
    seq_idx: Any = None,
    cu_seqlens: Any = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] | None = None,
    return_final_states: bool = False,
    return_varlen_states: bool = False,
    interpret: bool = False,
    tune: bool | None = None,
) -> Any:
    """The Mamba-2 SSD scan (mamba_ssm's `mamba_chunk_scan_combined`, forward).

    x, z: [batch, L, H, P]; dt: [batch, L, H]; A, dt_bias: [H]; B, C: [batch, L, G, N]
    with G dividing H (head h reads group h // (H / G)); D: [H] or [H, P];
    initial_states: [batch, H, P, N]. x, B, C and z share one dtype (f32, f16 or bf16),
    dt is any of those; A, D, dt_bias and initial_states are f32 (host arrays of f64,
    f16 or bf16 are converted, once). The positional parameters are mamba_ssm's, in its
    order; the flags and its later options are keywords. chunk_size (a positive int)
    sets the chunk the scan is cut into, rounded to a power of two in [16, 32]: the
    result is the same for any chunk up to rounding. dt_limit=(lo, hi) clamps Δ after
    the bias and the softplus (a NaN stays NaN); None (the default) does not clamp.

    Packed batches (module docstring): seq_idx, int32 [batch, L] and non-decreasing
    along L, restarts the recurrence where it changes (no state crosses sequences;
    initial_states feeds the sequence at step 0 only). With cu_seqlens (int32 [n_seq +
    1], batch 1, seq_idx numbering its sequences 0..n_seq - 1) and
    `return_varlen_states`, the f32 state at the last step of each sequence, [n_seq, H,
    P, N] (zeros for an empty sequence).

    A non-finite x, B or dt at a step leaves every output before it, and every output
    of another sequence, as it would be without (module docstring). Computes in f32
    (module docstring) and returns out [batch, L, H, P] in x's dtype, then with
    `return_final_states` the f32 state S[L - 1], [batch, H, P, N], then with
    `return_varlen_states` the sequences' states (mamba_ssm's order: out, final,
    varlen). Host arrays run on the CPU backend, device tensors on the GPU; `interpret`
    runs the reference interpreter (host arrays only). `tune`: None tunes (BP, warps) on
    device tensors only, True on host arrays too (the static model's ranking), False
    runs the default tiles (module docstring)."""
    (nb, length, heads, p), t = check(
        x, "x", (None, None, None, None), names=("batch", "L", "H", "P")
    )
    softplus = flag(dt_softplus, "dt_softplus")
    wants_final = flag(return_final_states, "return_final_states")
    wants_varlen = flag(return_varlen_states, "return_varlen_states")
    limits = packing.step_limits(dt_limit)
    _, td = check(dt, "dt", (nb, length, heads))
    (_, _, groups, n), _ = check(B, "B", (nb, length, None, None), (t,), (None, None, "G", "N"))
    if groups < 1 or heads % groups:
        raise ValueError(
            f"B's groups (shape [batch, L, G, N]) must divide H = {heads}, got G = {groups}"
        )
    check(C, "C", (nb, length, groups, n), (t,))
    if z is not None:
        check(z, "z", (nb, length, heads, p), (t,))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    values = dict(x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias)
    packed = dict(initial_states=initial_states, seq_idx=seq_idx, cu_seqlens=cu_seqlens)
    device = same_place({**values, **packed})
    params = f32_params(device)
    check(A, "A", (heads,), params)
    if dt_bias is not None:
        check(dt_bias, "dt_bias", (heads,), params)
    d_per_p = D is not None and len(shape_of(D, "D")) == 2
    if D is not None:
        check(D, "D", (heads, p) if d_per_p else (heads,), params)
    if initial_states is not None:
        check(initial_states, "initial_states", (nb, heads, p, n), params)
    n_seq = _sequences(seq_idx, cu_seqlens, wants_varlen, nb, length)
    out = empty(x, (nb, length, heads, p), t)
    final = empty(x, (nb, heads, p, n), dtypes.f32) if wants_final else placeholder(x, 4)
    # zeros: an empty sequence has no step, so no block writes its state
    varlen = placeholder(x, 4, dtypes.f32, (n_seq, heads, p, n)) if wants_varlen else None
    if nb * heads * p * n == 0 or length == 0:
        result = _without_steps(x, out, final, initial_states, wants_final)
        return _with_varlen(result, varlen, wants_final)
    bn = next_power_of_two(n)
    args = [
        x,
        dt,
        f32_host(A),
        B,
        C,
        _skip(D, d_per_p, heads, x),
        placeholder(x, 4, t) if z is None else z,
        placeholder(x) if dt_bias is None else f32_host(dt_bias),
        placeholder(x, 4) if initial_states is None else f32_host(initial_states),
        out,
        final,
    ]
    constexprs = dict(
        T=t,
        TD=td,
        HAS_D=D is not None,
        D_PER_P=d_per_p,
        HAS_Z=z is not None,
        HAS_BIAS=dt_bias is not None,
        SOFTPLUS=softplus,
        HAS_INITIAL=initial_states is not None,
        FINAL=wants_final,
        BL=chunk_for(chunk_size),
        BN=bn,
    )
    build = ssd_chunk_scan_kernel
    if seq_idx is not None or limits is not None:  # the packed kernel's extra parameters
        build = ssd_packed_kernel
        args[9:9] = [
            placeholder(x, 2, dtypes.i32) if seq_idx is None else seq_idx,
            cu_seqlens if wants_varlen else placeholder(x, 1, dtypes.i32),
        ]
        args += [varlen if wants_varlen else placeholder(x, 4), *(limits or (0.0, 0.0))]
        constexprs |= dict(LIMIT=limits is not None, HAS_SEQ=seq_idx is not None)
        constexprs |= dict(VARLEN=wants_varlen)
    tiles = configs(bn, p, t != dtypes.f32)
    if interpret:
        run(build, args, {**constexprs, **tiles[0]}, interpret)
    else:
        key = ("NB", "H", "P", "N")
        library.call(build, args, constexprs, tiles, key, tune, device)
    return _with_varlen((out, final) if wants_final else out, varlen, wants_final)


def _sequences(seq_idx: Any, cu_seqlens: Any, wants_varlen: bool, nb: int, length: int) -> int:
    """The number of sequences of the varlen states (0 without them), after checking
    seq_idx and cu_seqlens (`packing`)."""
    if seq_idx is not None:
        packing.seq_ids(seq_idx, nb, length)
    if cu_seqlens is None:
        if wants_varlen:
            raise ValueError(
                "return_varlen_states needs cu_seqlens (int32 [n_seq + 1], the sequences' "
                "offsets along L), got None"
            )
        return 0
    return packing.sequence_offsets(cu_seqlens, seq_idx, nb, length)


def _with_varlen(result: Any, varlen: Any, wants_final: bool) -> Any:
    """mamba_ssm's return order: out, the final state (if asked), the varlen states."""
    if varlen is None:
        return result
    return (*result, varlen) if wants_final else (result, varlen)


def _skip(D: Any, per_p: bool, heads: int, like: Any) -> Any:
    """D as the kernel's [H, P'] tensor: [H, P] as given, [H] as a view [H, 1]."""
    if D is None:
        return placeholder(like, 2)
    return f32_host(D) if per_p else reshaped(f32_host(D), (heads, 1), "D")


def _without_steps(x: Any, out: Any, final: Any, initial: Any, wanted: bool) -> Any:
    """The result when there is nothing to scan: the final state is the initial one
    (zeros without one; a device tensor given as initial_states is returned as is)."""
    if not wanted:
        return out
    if initial is None:
        return out, placeholder(x, 4, dtypes.f32, shape_of(final, "final"))
    if isinstance(initial, np.ndarray):
        return out, np.array(initial, np.float32)
    return out, initial
