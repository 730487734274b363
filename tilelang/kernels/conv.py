"""Depthwise causal convolutions of Mamba blocks: `causal_conv1d` (over a sequence) and
`causal_conv1d_update` (decode steps against a rolling state), with the causal-conv1d
package's shapes and arguments.

Per batch b and channel d, with the kernel width W (2..4), in f32 (f16 and bf16 inputs
are converted on load, the output rounded once to x's dtype):

    out[t] = bias[d] + Σ_k weight[d, k]·x[t - (W - 1) + k],  x[t < 0] = 0
    out = silu(out) with activation "silu" (or its other name, "swish")

`causal_conv1d` reads each of the W shifted windows as its own load: a box at offset
t0 - (W - 1) + k, whose elements before the sequence read 0 (loads are masked), so the
causal padding costs nothing and the W re-reads of a window hit the cache. With
initial_states (the W - 1 inputs before step 0) the window is one more masked load
added, the box at offset t0 + k of initial_states, which holds data only where x's box
is before step 0; the final states (the last W - 1 inputs of [initial_states, x], the
conv_state decoding continues from) are the same two loads at step L, stored by the
last block of each channel range.

`causal_conv1d_update` runs the same sum over x_new = [conv_state, x] (state_len + S
steps, state_len ≥ W - 1) for the S new steps, and shifts conv_state left by S in place
(conv_state = x_new[S:]). A window of x_new is two masked loads added: conv_state's box
reads 0 past state_len and x's box reads 0 before step 0, so each position has exactly
one source. The state is shifted within a block, across threads: the compiler puts a
barrier between the block's reads of conv_state and its store to it (a block keeps
the order of its accesses to one tensor, docs/design.md), so no thread overwrites an
element another has yet to read.
"""

from types import SimpleNamespace
from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.kernel import func, kernel
from tilelang.lang.signature import Tensor, constexpr
from tilelang.runtime.call_plans import planned
from tilelang.runtime.host_calls import accepts_host_tensors

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

#: The kernel widths the kernels accept (the causal-conv1d package's).
WIDTHS = (2, 3, 4)
#: Elements of the update's [BD, state_len] tiles per block (BD = 512 for W = 4).
UPDATE_ELEMENTS = 2048
#: Activations: None, or silu under either of its names.
ACTIVATIONS = (None, "silu", "swish")


@func
def finish(acc, bias, d0, BD, HAS_BIAS, SILU):
    """acc [BD, S'] (f32) plus the channels' bias, through silu when asked."""
    if HAS_BIAS:
        acc = acc + tl.load(bias, [d0], [BD])[:, None]
    if SILU:
        acc = acc * tl.sigmoid(acc)
    return acc


@kernel(warps=4)
def causal_conv1d_kernel(
    x: Tensor["T", "NB", "DM", "L"],
    weight: Tensor[dtypes.f32, "DM", "W"],
    bias: Tensor[dtypes.f32, "NBIAS"],
    initial: Tensor["T", "NI", "DI", "WI"],
    seq_idx: Tensor[dtypes.i32, "NS", "LS"],
    out: Tensor["T", "NB", "DM", "L"],
    final: Tensor["T", "NF", "DF", "WF"],
    T: constexpr = dtypes.f32,
    WIDTH: constexpr = 4,
    HAS_BIAS: constexpr = False,
    SILU: constexpr = False,
    HAS_INITIAL: constexpr = False,
    FINAL: constexpr = False,
    HAS_SEQ: constexpr = False,
    BD: constexpr = 8,
    BL: constexpr = 128,
):
    """out = the causal depthwise convolution of [initial, x] (module docstring); final
    = its last W - 1 inputs, with FINAL. With HAS_SEQ (seq_idx [NB, L]) a window reads
    only its own sequence's steps, and initial only for the sequence at step 0."""
    b, bd, bl = tl.blocks(NB, tl.cdiv(DM, BD), tl.cdiv(L, BL))
    d0 = bd * BD
    t0 = bl * BL
    first = ids = None  # the sequence at step 0, and of each output step (HAS_SEQ)
    if HAS_SEQ:
        first = tl.load(seq_idx, [b, 0])
        ids = tl.reshape(tl.load(seq_idx, [b, t0], [1, BL]), [1, 1, BL])
    c = SimpleNamespace(
        x=x, initial=initial, seq_idx=seq_idx, b=b, d0=d0, first=first, WIDTH=WIDTH, BD=BD,
        HAS_INITIAL=HAS_INITIAL, HAS_SEQ=HAS_SEQ,
    )  # fmt: skip
    acc = tl.zeros([BD, BL], tl.f32)
    for k in range(WIDTH):
        acc = acc + window(c, t0 + k, BL, ids) * tl.load(weight, [d0, k], [BD, 1])
    acc = finish(acc, bias, d0, BD, HAS_BIAS, SILU)
    tl.store(out, [b, d0, t0], tl.reshape(acc.to(T), [1, BD, BL]))
    if FINAL:  # noqa: SIM102 (`and` cannot join a compile-time and a runtime condition)
        if bl == tl.cdiv(L, BL) - 1:  # the last block of its channels writes them
            owner = None  # the sequence the final states continue: step L - 1's
            if HAS_SEQ:
                owner = tl.zeros([1, 1, 4], tl.i32) + tl.load(seq_idx, [b, L - 1])
            tail = window(c, L, 4, owner)  # W - 1 ≤ 3
            tl.store(final, [b, d0, 0], tl.reshape(tail.to(T), [1, BD, 4]))


@func
def window(c, start, BS, ids):
    """[initial, x][start : start + BS] (f32) for BD channels, initial being W - 1
    steps (zeros without HAS_INITIAL): masked loads read 0 outside each part. With
    HAS_SEQ, as seen by steps of sequences `ids` ([1, 1, BS]): x of another
    sequence reads 0 (selected, so its inf or NaN stays there), initial only for the
    sequence at step 0 (c.first)."""
    start_x = start - (c.WIDTH - 1)
    tile = tl.load(c.x, [c.b, c.d0, start_x], [1, c.BD, BS]).to(tl.f32)
    if c.HAS_SEQ:
        source = tl.reshape(tl.load(c.seq_idx, [c.b, start_x], [1, BS]), [1, 1, BS])
        tile = tl.where(source == ids, tile, 0.0)  # (before step 0 x reads 0 anyway)
    if c.HAS_INITIAL:
        before = tl.load(c.initial, [c.b, c.d0, start], [1, c.BD, BS]).to(tl.f32)
        if c.HAS_SEQ:
            before = tl.where(ids == c.first, before, 0.0)
        tile = tile + before
    return tl.reshape(tile, [c.BD, BS])


@func
def extended(state, x, b, d0, start, SL, BD, BS):
    """x_new[start : start + BS] for BD channels, x_new = [state, x] along time: each
    masked load reads 0 where the other holds the step."""
    old = tl.load(state, [b, d0, start], [1, BD, BS]).to(tl.f32)
    new = tl.load(x, [b, d0, start - SL], [1, BD, BS]).to(tl.f32)
    return tl.reshape(old + new, [BD, BS])


@kernel(warps=4)
def conv_update_kernel(
    x: Tensor["T", "NB", "DM", "S"],
    state: Tensor["ST", "NB", "DM", "SL"],
    weight: Tensor[dtypes.f32, "DM", "W"],
    bias: Tensor[dtypes.f32, "NBIAS"],
    out: Tensor["T", "NB", "DM", "S"],
    T: constexpr = dtypes.f32,
    ST: constexpr = dtypes.f32,
    WIDTH: constexpr = 4,
    HAS_BIAS: constexpr = False,
    SILU: constexpr = False,
    BD: constexpr = 512,
    BS: constexpr = 1,
    BSL: constexpr = 4,
):
    """out = the convolution's S newest steps over [state, x]; state = [state, x][S:]."""
    b, bd = tl.blocks(NB, tl.cdiv(DM, BD))
    d0 = bd * BD
    acc = tl.zeros([BD, BS], tl.f32)
    for k in range(WIDTH):
        window = extended(state, x, b, d0, SL - (WIDTH - 1) + k, SL, BD, BS)
        acc = acc + window * tl.load(weight, [d0, k], [BD, 1])
    shifted = extended(state, x, b, d0, S, SL, BD, BSL)
    tl.store(state, [b, d0, 0], tl.reshape(shifted.to(ST), [1, BD, BSL]))
    acc = finish(acc, bias, d0, BD, HAS_BIAS, SILU)
    tl.store(out, [b, d0, 0], tl.reshape(acc.to(T), [1, BD, BS]))


def _activation(activation: Any) -> bool:
    """Whether activation is silu; anything but None or one of its names (an array
    above all: `in` would compare it elementwise) is a ValueError naming it."""
    if not (activation is None or isinstance(activation, str)) or activation not in ACTIVATIONS:
        shape = getattr(activation, "shape", None)
        given = repr(activation) if shape is None else f"an array of shape {list(shape)}"
        raise ValueError(f"activation must be None, 'silu' or 'swish', got {given}")
    return activation is not None


def _weight(weight: Any, dm: int, device: bool) -> int:
    """The kernel width W after checking weight [Dm, W] (f32 on the GPU)."""
    params = f32_params(device)
    (_, width), _ = check(weight, "weight", (dm, None), params, (None, "W"))
    if width not in WIDTHS:
        raise ValueError(f"weight's width (shape [Dm, W]) must be 2, 3 or 4, got W = {width}")
    return width


def _bias(bias: Any, dm: int, device: bool) -> None:
    if bias is not None:
        check(bias, "bias", (dm,), f32_params(device))


@planned
@accepts_host_tensors
def causal_conv1d(
    x: Any,
    weight: Any,
    bias: Any = None,
    *,
    seq_idx: Any = None,
    activation: str | None = None,
    initial_states: Any = None,
    return_final_states: bool = False,
    interpret: bool = False,
) -> Any:
    """The causal depthwise convolution (causal-conv1d's `causal_conv1d_fn`, forward).

    x: [batch, Dm, L] (f32, f16 or bf16); weight: [Dm, W] with W in 2..4; bias: [Dm];
    activation None, "silu" or "swish"; initial_states: [batch, Dm, W - 1] in x's
    dtype (not converted), the inputs before step 0 (zeros when not given). weight and
    bias are f32 (host arrays of f64, f16 or bf16 are converted, once). x, weight and
    bias are positional, as causal-conv1d's are; the rest are keywords (seq_idx, its
    fourth positional parameter, included: a call in its order is a TypeError, not a
    tensor read as a flag). seq_idx, int32 [batch, L] and non-decreasing along L, packs
    several sequences along L (module docstring): a window reads only its own
    sequence's steps (x of another reads 0), and initial_states feeds only the sequence
    at step 0. Computes in f32 and returns out [batch, Dm, L] in x's dtype, and with
    `return_final_states` also the last W - 1 inputs of [initial_states, x] as the last
    step's sequence sees them (those of another sequence 0), [batch, Dm, W - 1] in x's
    dtype: the conv_state `causal_conv1d_update` continues from. Host arrays run on the
    CPU backend, device tensors on the GPU; `interpret` runs the reference interpreter
    (host arrays only)."""
    (nb, dm, length), t = check(x, "x", (None, None, None), names=("batch", "Dm", "L"))
    silu = _activation(activation)
    wants_final = flag(return_final_states, "return_final_states")
    given = dict(x=x, weight=weight, bias=bias, initial_states=initial_states, seq_idx=seq_idx)
    device = same_place(given)
    width = _weight(weight, dm, device)
    _bias(bias, dm, device)
    if initial_states is not None:
        check(initial_states, "initial_states", (nb, dm, width - 1), (t,))
    if seq_idx is not None:
        packing.seq_ids(seq_idx, nb, length)
    out = empty(x, (nb, dm, length), t)
    final = empty(x, (nb, dm, width - 1), t) if wants_final else placeholder(x, 3, t)
    if nb * dm == 0 or length == 0:
        if not wants_final:
            return out
        if initial_states is None:
            return out, placeholder(x, 3, t, (nb, dm, width - 1))
        return out, initial_states.copy() if isinstance(x, np.ndarray) else initial_states
    args = [
        x,
        f32_host(weight),
        placeholder(x) if bias is None else f32_host(bias),
        placeholder(x, 3, t) if initial_states is None else initial_states,
        placeholder(x, 2, dtypes.i32) if seq_idx is None else seq_idx,
        out,
        final,
    ]
    constexprs = dict(
        T=t,
        WIDTH=width,
        HAS_BIAS=bias is not None,
        SILU=silu,
        HAS_INITIAL=initial_states is not None,
        FINAL=wants_final,
        HAS_SEQ=seq_idx is not None,
    )
    run(causal_conv1d_kernel, args, constexprs, interpret)
    return (out, final) if wants_final else out


@planned
@accepts_host_tensors
def causal_conv1d_update(
    x: Any,
    conv_state: Any,
    weight: Any,
    bias: Any = None,
    activation: str | None = None,
    *,
    interpret: bool = False,
) -> Any:
    """Decode steps of the causal convolution (causal-conv1d's `causal_conv1d_update`,
    without `cache_seqlens` or `conv_state_indices`).

    x: [batch, Dm] (one step) or [batch, Dm, S] (S steps); conv_state: [batch, Dm,
    state_len] with state_len ≥ W - 1, the latest inputs oldest first (f32, f16 or
    bf16), shifted in place to end with x; weight: [Dm, W]; bias: [Dm] (weight and bias
    f32; host arrays of f64, f16 or bf16 are converted, once); activation as
    `causal_conv1d`. The parameters are causal-conv1d's, in its order. Returns out with
    x's shape and dtype."""
    one_step = len(shape_of(x, "x")) == 2
    if one_step:
        (nb, dm), t = check(x, "x", (None, None), names=("batch", "Dm"))
        steps = 1
    else:
        (nb, dm, steps), t = check(x, "x", (None, None, None), names=("batch", "Dm", "S"))
    (_, _, state_len), st = check(
        conv_state, "conv_state", (nb, dm, None), names=(None, None, "state_len")
    )
    silu = _activation(activation)
    device = same_place(dict(x=x, conv_state=conv_state, weight=weight, bias=bias))
    width = _weight(weight, dm, device)
    if state_len < width - 1:
        raise ValueError(
            f"conv_state's state_len (shape [batch, Dm, state_len]) must be at least "
            f"W - 1 = {width - 1}, got {state_len}"
        )
    _bias(bias, dm, device)
    out = empty(x, (nb, dm) if one_step else (nb, dm, steps), t)
    if nb * dm * steps == 0:
        return out
    args = [
        reshaped(x, (nb, dm, 1), "x") if one_step else x,
        conv_state,
        f32_host(weight),
        placeholder(x) if bias is None else f32_host(bias),
        reshaped(out, (nb, dm, 1), "out") if one_step else out,
    ]
    bs, bsl = next_power_of_two(steps), next_power_of_two(state_len)
    constexprs = dict(
        T=t,
        ST=st,
        WIDTH=width,
        HAS_BIAS=bias is not None,
        SILU=silu,
        BD=max(1, min(next_power_of_two(dm), UPDATE_ELEMENTS // max(bs, bsl))),
        BS=bs,
        BSL=bsl,
    )
    run(conv_update_kernel, args, constexprs, interpret)
    return out
