"""The Mamba decode step: `selective_state_update`, with mamba_ssm's shapes and arguments
(Mamba-1's 3-D form and Mamba-2's 4-D form with heads) and vLLM's continuous batching
(`state_batch_indices`, `pad_slot_id`).

One step of the recurrence, per batch entry b, head h (reading group g = h // (H / G)
of B and C), channel p of the head and state n, in f32 (the output rounded once to x's
dtype, the state to its own):

    Δ = dt + dt_bias;  Δ = softplus(Δ) with dt_softplus
    state[p, n] = exp(Δ[p]·A[p, n])·state[p, n] + Δ[p]·B[g, n]·x[p]   (in place)
    y[p] = Σ_n C[g, n]·state[p, n] + D[p]·x[p],  times silu(z[p]) when z is given

The kernel reads Mamba-1's layout: channels d of [batch, Dm] (state [rows, Dm, N]),
head d // P of H = Dm / P, B and C [batch, G·N]. Mamba-1's tensors are that, one head
of P = Dm channels and one group, passed as they are (a call reads each tensor's
interface no more than its checks and its launch do); Mamba-2's are viewed so (state
[rows, H·P, N], x [batch, H·P], B [batch, G·N]), and a block's BD channels, a power of
two dividing P, lie in one head. Mamba-2 ties dt, A, dt_bias and D to the head
(mamba_ssm passes them broadcast over P and N): each may come as one value per head,
or as a broadcast view of one (a zero stride: numpy's `broadcast_to`, torch's
`expand`), which the host reads as that, so a constant per head is read once and never
copied or expanded.

`state_batch_indices` [batch] picks the state row of each batch entry (the state has as
many rows as the cache has slots, not one per entry): state[state_batch_indices[b]]. An
entry whose index is `pad_slot_id` touches no state: it reads a zero state (its y is
that of a zero state, as vLLM's kernel gives) and writes none. The kernel reads and
writes through a box at the row: a row outside the state (the pad's -1, or any) is
outside the tensor, so masked loads read zeros and the store skips it. Host indices are
checked (an index outside the state that is not the pad is an error); device ones,
which the host cannot read, act as the pad does.

A block updates BD channels of one batch entry, the [BD, BN] state tile in registers
(N padded to a power of two BN: B, C and the state read zeros there, so the padding
states stay 0 and add nothing, and the store skips them).
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.kernel import func, kernel
from tilelang.lang.signature import Tensor, constexpr
from tilelang.runtime import gpu
from tilelang.runtime.call_plans import planned
from tilelang.runtime.host_calls import accepts_host_tensors

from .common import (
    check,
    check_ranks,
    empty,
    f32_host,
    f32_params,
    flag,
    next_power_of_two,
    placeholder,
    reshaped,
    run,
    same_place,
    silu,
    step_softplus,
    tl,
)

#: Elements of the [BD, BN] state tile a block updates (BD = 128 at N = 16).
UPDATE_ELEMENTS = 2048
#: The index types `state_batch_indices` may hold.
INDEX_TYPES = (dtypes.i32, dtypes.i64)
#: vLLM's PAD_SLOT_ID: the default `pad_slot_id`.
PAD_SLOT_ID = -1
#: The pad a kernel compares with is an i32 (`pad_slot_id` must be one).
I32_RANGE = (-(2**31), 2**31 - 1)


@func
def entry_channels(t, b, d0, head, BD, PER_HEAD):
    """Channels d0.. of entry b of a [batch, Dm] tensor as [BD, 1] f32; PER_HEAD
    ([batch, H]): the head's one value, broadcast."""
    if PER_HEAD:
        return tl.broadcast(tl.load(t, [b, head], [1, 1]).to(tl.f32), [BD, 1])
    return tl.reshape(tl.load(t, [b, d0], [1, BD]), [BD, 1]).to(tl.f32)


@func
def parameter_channels(t, d0, head, BD, PER_HEAD):
    """Channels d0.. of a [Dm] parameter (D, dt_bias) as [BD, 1]; PER_HEAD ([H]): the
    head's one value, broadcast."""
    if PER_HEAD:
        return tl.broadcast(tl.reshape(tl.load(t, [head], [1]), [1, 1]), [BD, 1])
    return tl.load(t, [d0], [BD])[:, None]


@func
def group_states(t, b, g, N, BN):
    """Group g's N states of a [batch, G·N] tensor (B, C) as [1, BN] f32, 0 past N."""
    inside = (tl.arange(0, BN) < N)[None, :]
    return tl.load(t, [b, g * N], [1, BN], mask=inside).to(tl.f32)


@kernel(warps=4)
def state_update_kernel(
    state: Tensor["ST", "SB", "DM", "N"],
    x: Tensor["T", "NB", "DM"],
    dt: Tensor["T", "NB", "DT"],
    A: Tensor[dtypes.f32, "DA", "NA"],
    B: Tensor["T", "NB", "GN"],
    C: Tensor["T", "NB", "GN"],
    D: Tensor[dtypes.f32, "ND"],
    z: Tensor["T", "NZ", "DZ"],
    bias: Tensor[dtypes.f32, "NBIAS"],
    rows: Tensor["IT", "NR"],
    y: Tensor["T", "NB", "DM"],
    P: dtypes.i32 = 1,
    pad: dtypes.i32 = PAD_SLOT_ID,
    T: constexpr = dtypes.f32,
    ST: constexpr = dtypes.f32,
    IT: constexpr = dtypes.i32,
    HAS_D: constexpr = False,
    HAS_Z: constexpr = False,
    HAS_BIAS: constexpr = False,
    SOFTPLUS: constexpr = False,
    INDEXED: constexpr = False,
    DT_HEAD: constexpr = False,
    A_HEAD: constexpr = False,
    D_HEAD: constexpr = False,
    BIAS_HEAD: constexpr = False,
    BD: constexpr = 32,
    BN: constexpr = 16,
):
    """One step of the recurrence (module docstring) for BD channels (of one head of P
    channels) of one batch entry: state row rows[b] with INDEXED (none at `pad`), else
    b. *_HEAD: that tensor holds one value per head ([..., H]; A [H, 1])."""
    b, bd = tl.blocks(NB, tl.cdiv(DM, BD))
    d0 = bd * BD
    head = d0 // P  # BD divides P: the block's channels share one head
    g = head // ((DM // P) // (GN // N))
    row = b
    if INDEXED:
        row = tl.load(rows, [b]).to(tl.i32)
        if row == pad:
            row = -1  # outside the state: its box reads zeros and is never written
    xt = entry_channels(x, b, d0, head, BD, False)
    step = entry_channels(dt, b, d0, head, BD, DT_HEAD)
    if HAS_BIAS:
        step = step + parameter_channels(bias, d0, head, BD, BIAS_HEAD)
    if SOFTPLUS:
        step = step_softplus(step)
    if A_HEAD:
        rate = tl.broadcast(tl.load(A, [head, 0], [1, 1]), [BD, BN])
    else:
        rate = tl.load(A, [d0, 0], [BD, BN])
    h = tl.reshape(tl.load(state, [row, d0, 0], [1, BD, BN]), [BD, BN]).to(tl.f32)
    h = tl.exp(step * rate) * h + (step * xt) * group_states(B, b, g, N, BN)
    tl.store(state, [row, d0, 0], tl.reshape(h.to(ST), [1, BD, BN]))
    out = tl.sum(h * group_states(C, b, g, N, BN), axis=1, keepdims=True)
    if HAS_D:
        out = out + parameter_channels(D, d0, head, BD, D_HEAD) * xt
    if HAS_Z:
        out = out * silu(entry_channels(z, b, d0, head, BD, False))
    tl.store(y, [b, d0], tl.reshape(out.to(T), [1, BD]))


@planned
@accepts_host_tensors
def selective_state_update(
    state: Any,
    x: Any,
    dt: Any,
    A: Any,
    B: Any,
    C: Any,
    D: Any = None,
    z: Any = None,
    dt_bias: Any = None,
    dt_softplus: bool = False,
    state_batch_indices: Any = None,
    pad_slot_id: int = PAD_SLOT_ID,
    *,
    interpret: bool = False,
) -> Any:
    """One Mamba decode step (mamba_ssm's `selective_state_update`; vLLM's with
    `state_batch_indices` and `pad_slot_id`), the state updated in place.

    Mamba-1: state [batch, Dm, N]; x, dt, z: [batch, Dm]; A: [Dm, N]; B, C: [batch, N];
    D, dt_bias: [Dm]. Mamba-2: state [batch, H, P, N]; x, z: [batch, H, P]; dt: [batch,
    H, P] or [batch, H]; A: [H, P, N] or [H]; B, C: [batch, G, N] with G dividing H
    (head h reads group h // (H / G)); D, dt_bias: [H, P] or [H]. A shape without P
    (and N) is one value per head, as is a broadcast view of one (zero strides: numpy's
    `broadcast_to`, torch's `expand`). state is f32, f16 or bf16; x, dt, B, C and z
    share one dtype (f32, f16 or bf16); A, D and dt_bias are f32 (host arrays of f64,
    f16 or bf16 are converted, once).

    state_batch_indices ([batch], i32 or i64): batch entry b updates state row
    state_batch_indices[b] (the state's first dimension is then any number of rows);
    an entry whose index is `pad_slot_id` (an int, vLLM's -1 by default) reads a zero
    state and writes none (module docstring); a host index outside the state's rows
    that is not the pad is a ValueError. Returns y with x's shape and dtype. Host
    arrays run on the CPU backend, device tensors on the GPU; `interpret` runs the
    reference interpreter."""
    softplus = flag(dt_softplus, "dt_softplus")
    form = _Form.read(state, x, B, state_batch_indices)
    nb, heads, p, n = form.batch, form.heads, form.p, form.n
    check(C, "C", form.group_shape(nb), (form.t,))
    if z is not None:
        check(z, "z", form.channels_shape(nb), (form.t,))
    values = dict(state=state, x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias)
    device = same_place({**values, "state_batch_indices": state_batch_indices})
    params = f32_params(device)
    dt, dt_head = form.per_head(dt, "dt", (nb,), (form.t,))
    a, a_head = form.per_head(A, "A", (), params, states=True)
    skip, d_head = form.per_head(D, "D", (), params)
    bias, bias_head = form.per_head(dt_bias, "dt_bias", (), params)
    rows, index_type = _rows(state_batch_indices, pad_slot_id, nb, form.state_rows)
    y = empty(x, form.channels_shape(nb), form.t)
    if nb * heads * p * n == 0:
        return y
    bn = next_power_of_two(n)
    dm = heads * p
    args = [
        form.flat(state, (form.state_rows, dm, n), "state"),
        form.flat(x, (nb, dm), "x"),
        dt,
        f32_host(a),
        form.flat(B, (nb, form.groups * n), "B"),
        form.flat(C, (nb, form.groups * n), "C"),
        placeholder(x) if D is None else f32_host(skip),
        placeholder(x, 2, form.t) if z is None else form.flat(z, (nb, dm), "z"),
        placeholder(x) if dt_bias is None else f32_host(bias),
        placeholder(x, 1, dtypes.i32) if rows is None else rows,
        form.flat(y, (nb, dm), "y"),
        int(p),
        int(pad_slot_id),
    ]
    constexprs = dict(
        T=form.t,
        ST=form.st,
        IT=index_type,
        HAS_D=D is not None,
        HAS_Z=z is not None,
        HAS_BIAS=dt_bias is not None,
        SOFTPLUS=softplus,
        INDEXED=rows is not None,
        DT_HEAD=dt_head,
        A_HEAD=a_head,
        D_HEAD=d_head,
        BIAS_HEAD=bias_head,
        BD=form.block(bn),
        BN=bn,
    )
    run(state_update_kernel, args, constexprs, interpret)
    return y


@dataclass(frozen=True)
class _Form:
    """A call's form, read off state, x and B: Mamba-2's (`heads`) or Mamba-1's (one
    head of P = Dm channels, one group), with its sizes (`Dim`s, which name where they
    came from) and dtypes: x's `t`, the state's `st`."""

    mamba2: bool
    batch: int
    state_rows: int
    heads: int
    p: int
    n: int
    groups: int
    t: DType
    st: DType

    @staticmethod
    def read(state: Any, x: Any, B: Any, indices: Any) -> "_Form":
        """The form by the state's rank, after checking state, x and B; with `indices`
        the state's rows are free, else one per batch entry."""
        forms = (((None,) * 3, ("batch", "Dm", "N")), ((None,) * 4, ("batch", "H", "P", "N")))
        which, shape, st = check_ranks(state, "state", forms, fallback=0)
        rows = shape[0]
        batch = None if indices is not None else rows
        if which == 0:  # Mamba-1
            _, dm, n = shape
            (nb, _), t = check(x, "x", (batch, dm), names=("batch", "Dm"))
            check(B, "B", (nb, n), (t,))
            return _Form(False, nb, rows, 1, dm, n, 1, t, st)
        _, heads, p, n = shape
        (nb, _, _), t = check(x, "x", (batch, heads, p), names=("batch", "H", "P"))
        (_, groups, _), _ = check(B, "B", (nb, None, n), (t,), (None, "G", None))
        if groups < 1 or heads % groups:
            raise ValueError(
                f"B's groups (shape [batch, G, N]) must divide H = {heads}, got G = {groups}"
            )
        return _Form(True, nb, rows, heads, p, n, groups, t, st)

    def channels_shape(self, nb: int) -> tuple[int, ...]:
        """x's (and z's, y's) shape."""
        return (nb, self.heads, self.p) if self.mamba2 else (nb, self.p)

    def group_shape(self, nb: int) -> tuple[int, ...]:
        """B's (and C's) shape."""
        return (nb, self.groups, self.n) if self.mamba2 else (nb, self.n)

    def flat(self, value: Any, shape: tuple[int, ...], name: str) -> Any:
        """`value` in the kernel's (Mamba-1's) layout of `shape`: Mamba-1's as it is (no
        view, no read of its interface), Mamba-2's viewed."""
        return reshaped(value, shape, name) if self.mamba2 else value

    def block(self, bn: int) -> int:
        """BD: channels a block updates, the [BD, BN] tile near UPDATE_ELEMENTS; for
        Mamba-2 a power of two dividing P (a block's channels lie in one head)."""
        most = max(1, UPDATE_ELEMENTS // bn)
        if self.mamba2:
            return min(self.p & -self.p, most)
        return min(next_power_of_two(self.p), most)

    def per_head(
        self,
        value: Any,
        name: str,
        lead: tuple[int, ...],
        types: tuple[DType, ...],
        states: bool = False,
    ) -> tuple[Any, bool]:
        """dt, A, D or dt_bias (None: not given) in the kernel's layout, and whether it
        holds one value per head. Mamba-1's: [*lead, Dm] (A: [Dm, N]) as it is. Mamba-2's:
        [*lead, H, P] (A: [H, P, N]) as [*lead, H·P] (A: [H·P, N]); [*lead, H], or a
        broadcast view over P (and N) of that, as [*lead, H] (A: [H, 1])."""
        if value is None:
            return None, False
        tail = (self.n,) if states else ()
        if not self.mamba2:
            check(value, name, (*lead, self.p, *tail), types)
            return value, False
        full = (*lead, self.heads, self.p, *tail)
        one_a_head = (*lead, self.heads, *(1 for _ in tail))
        forms = ((full, None), ((*lead, self.heads), None))
        which, _, _ = check_ranks(value, name, forms, types)
        if which == 1:
            return reshaped(value, one_a_head, name), True
        spread = tuple(range(len(lead) + 1, len(full)))  # P (and N)
        if _broadcast(value, spread):
            first = tuple(slice(0, 1) if a in spread else slice(None) for a in range(len(full)))
            return reshaped(value[first], one_a_head, name), True
        return reshaped(value, (*lead, self.heads * self.p, *tail), name), False


def _broadcast(value: Any, axes: tuple[int, ...]) -> bool:
    """Whether `value` (a numpy array or a torch tensor) is a broadcast view along `axes`:
    a zero stride (or a size of 1) on each."""
    if isinstance(value, np.ndarray):
        strides = value.strides
    elif gpu.is_torch_tensor(value):
        strides = value.stride()
    else:
        return False
    return all(strides[a] == 0 or value.shape[a] == 1 for a in axes)


def _rows(indices: Any, pad: Any, nb: int, slots: int) -> tuple[Any, DType]:
    """state_batch_indices (None: not given) and its dtype, after the checks: pad an int
    an i32 holds; host indices each a row of the state or the pad."""
    low, high = I32_RANGE
    if isinstance(pad, (bool, np.bool_)) or not isinstance(pad, (int, np.integer)):
        raise TypeError(f"pad_slot_id must be an int, got {pad!r}")
    if not low <= pad <= high:
        raise ValueError(f"pad_slot_id must be from {low} to {high} (an i32), got {pad}")
    if indices is None:
        return None, dtypes.i32
    _, index_type = check(indices, "state_batch_indices", (nb,), INDEX_TYPES)
    if isinstance(indices, np.ndarray):
        outside = (indices != pad) & ((indices < 0) | (indices >= slots))
        if outside.any():
            i = int(np.argmax(outside))
            raise ValueError(
                f"state_batch_indices[{i}] = {int(indices[i])} is no row of state (0 to "
                f"{slots - 1}, state.shape[0] = {slots}) and not pad_slot_id = {pad}"
            )
    return indices, index_type
