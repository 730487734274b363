"""Mamba-2's state-space duality (SSD) scan: `ssd_chunk_scan`, with mamba_ssm's
`mamba_chunk_scan_combined` shapes and arguments.

Per batch b and head h (reading group g = h // (H / G) of B and C), with a scalar
decay rate A[h], in f32 (with the dots' operands in the inputs' dtype, below; the
output rounded once to x's dtype):

    Δ = Δ + dt_bias[h];  Δ = softplus(Δ) with dt_softplus
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

from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.kernel import func, kernel
from tilelang.lang.signature import Tensor, constexpr
from tilelang.runtime.call_plans import planned
from tilelang.runtime.host_calls import accepts_host_tensors
from tilelang.tuning import library

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
    b, h, bp = tl.blocks(NB, H, tl.cdiv(P, BP))
    p0 = bp * BP
    g = h // (H // G)
    rate = tl.load(A, [h], [1])
    skip = tl.zeros([1, BP], tl.f32)
    if HAS_D:
        if D_PER_P:
            skip = tl.load(D, [h, p0], [1, BP])
        else:
            skip = tl.broadcast(tl.load(D, [h, 0], [1, 1]), [1, BP])
    state = tl.zeros([BN, BP], tl.f32)
    if HAS_INITIAL:
        state = tl.transpose(tl.reshape(tl.load(initial, [b, h, p0, 0], [1, 1, BP, BN]), [BP, BN]))
    steps = tl.arange(0, BL)
    causal = steps[:, None] >= steps[None, :]
    for l0 in tl.range(0, L, BL):
        step = tl.reshape(tl.load(dt, [b, l0, h], [1, BL, 1]), [BL]).to(tl.f32)
        if HAS_BIAS:
            step = step + tl.load(bias, [h], [1])
        if SOFTPLUS:
            step = tl.softplus(step)
        step = tl.where(steps + l0 < L, step, 0.0)  # steps past L: no decay, no input
        s = tl.cumsum(step * rate, axis=0)
        x_in = tl.reshape(tl.load(x, [b, l0, h, p0], [1, BL, 1, BP]), [BL, BP])
        b_in = tl.reshape(tl.load(B, [b, l0, g, 0], [1, BL, 1, BN]), [BL, BN])
        c_in = tl.reshape(tl.load(C, [b, l0, g, 0], [1, BL, 1, BN]), [BL, BN])
        gap = s[:, None] - s[None, :]
        decay = tl.exp(tl.where(causal, gap, 0.0))
        # future steps selected away, not multiplied by 0: a non-finite B or Δ there
        # would turn the product into NaN (0·inf)
        mix = tl.where(causal, tl.dot(c_in, tl.transpose(b_in)) * decay * step[None, :], 0.0)
        # the dots take the inputs' dtype (module docstring); the state stays f32.
        # x's non-finite values out of the dot, where a future step's 0 would meet
        # them (0·inf = NaN); the steps at and after one get NaN instead (`seen`
        # counts them: a 0/1 dot, exact), so no step reads a later one
        finite = tl.abs(x_in) < float("inf")
        y = tl.dot(mix.to(T), tl.where(finite, x_in, 0.0))
        seen = tl.dot(causal.to(T), tl.where(finite, 0.0, 1.0).to(T))
        y = tl.where(seen > 0.0, float("nan"), y)
        y = y + tl.exp(s)[:, None] * tl.dot(c_in, state.to(T))
        # x again, in the output's layout (a cache hit), not the dot operand's registers
        y = y + skip * rows(tl.load(x, [b, l0, h, p0], [1, BL, 1, BP]), BL, BP)
        if HAS_Z:
            y = y * silu(rows(tl.load(z, [b, l0, h, p0], [1, BL, 1, BP]), BL, BP))
        tl.store(out, [b, l0, h, p0], tl.reshape(y.to(T), [1, BL, 1, BP]))
        last = s[BL - 1 :]
        weights = (tl.exp(last - s) * step)[:, None]
        inject = tl.transpose((b_in.to(tl.f32) * weights).to(T))
        state = tl.exp(last)[:, None] * state + tl.dot(inject, x_in)
    if FINAL:
        tl.store(final, [b, h, p0, 0], tl.reshape(tl.transpose(state), [1, 1, BP, BN]))


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
    dt_softplus: bool = False,
    return_final_states: bool = False,
    interpret: bool = False,
    tune: bool | None = None,
) -> Any:
    """The Mamba-2 SSD scan (mamba_ssm's `mamba_chunk_scan_combined`, forward).

    x, z: [batch, L, H, P]; dt: [batch, L, H]; A, dt_bias: [H]; B, C: [batch, L, G, N]
    with G dividing H (head h reads group h // (H / G)); D: [H] or [H, P];
    initial_states: [batch, H, P, N]. x, B, C and z share one dtype (f32, f16 or bf16),
    dt is any of those; A, D, dt_bias and initial_states are f32 (host arrays of f64,
    f16 or bf16 are converted, once). The positional parameters are mamba_ssm's, in its
    order; the flags (and its later options, which this function does not take) are
    keywords. chunk_size (a positive int) sets the chunk the scan is cut into, rounded
    to a power of two in [16, 32]: the result is the same for any chunk up to rounding.
    A non-finite x, B or dt at a step leaves every output before it as it would be
    without (module docstring). Computes in f32 (module docstring) and returns out
    [batch, L, H, P] in x's dtype, and with `return_final_states` also the f32 state
    S[L - 1], [batch, H, P, N]. Host arrays run on the CPU backend, device tensors on
    the GPU; `interpret` runs the reference interpreter (host arrays only). `tune`: None
    tunes (BP, warps) on device tensors only, True on host arrays too (the static
    model's ranking), False runs the default tiles (module docstring)."""
    (nb, length, heads, p), t = check(
        x, "x", (None, None, None, None), names=("batch", "L", "H", "P")
    )
    softplus = flag(dt_softplus, "dt_softplus")
    wants_final = flag(return_final_states, "return_final_states")
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
    device = same_place({**values, "initial_states": initial_states})
    params = f32_params(device)
    check(A, "A", (heads,), params)
    if dt_bias is not None:
        check(dt_bias, "dt_bias", (heads,), params)
    d_per_p = D is not None and len(shape_of(D, "D")) == 2
    if D is not None:
        check(D, "D", (heads, p) if d_per_p else (heads,), params)
    if initial_states is not None:
        check(initial_states, "initial_states", (nb, heads, p, n), params)
    out = empty(x, (nb, length, heads, p), t)
    final = empty(x, (nb, heads, p, n), dtypes.f32) if wants_final else placeholder(x, 4)
    if nb * heads * p * n == 0 or length == 0:
        return _without_steps(x, out, final, initial_states, wants_final)
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
    tiles = configs(bn, p, t != dtypes.f32)
    if interpret:
        run(ssd_chunk_scan_kernel, args, {**constexprs, **tiles[0]}, interpret)
    else:
        key = ("NB", "H", "P", "N")
        library.call(ssd_chunk_scan_kernel, args, constexprs, tiles, key, tune, device)
    return (out, final) if wants_final else out


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
