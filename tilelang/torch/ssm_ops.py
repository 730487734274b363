"""Torch operators of the Mamba-2 prefill kernels, packed batches included:
``tilelang::causal_conv1d`` (causal-conv1d's `causal_conv1d_fn`, with `seq_idx`) and
``tilelang::ssd_chunk_scan`` (mamba_ssm's `mamba_chunk_scan_combined`, with `seq_idx`,
`cu_seqlens`, `dt_limit` and `return_varlen_states`), written by hand over the library
functions of `tilelang.kernels` (their outputs' sizes follow the flags and the
wrappers pick tiles from the shapes). `tilelang.torch.kernels` imports them (and
registers their torch forms with the rest); the ops take CPU tensors as zero-copy numpy
views (`runtime.host_calls`) and CUDA tensors as they are. Each fake implementation
checks ranks, as torch.compile's shapes may be symbolic."""

from __future__ import annotations

import torch

from tilelang.kernels import conv, ssd
from tilelang.kernels.common import flag
from tilelang.kernels.packing import step_limits


def _rank(op_name: str, **given: tuple[torch.Tensor | None, tuple[str, ...]]) -> None:
    """A fake implementation's check: each tensor given of its layout's rank (a
    ValueError naming the operator, the parameter, the layout and the shape given)."""
    for name, (tensor, layout) in given.items():
        if tensor is not None and tensor.dim() != len(layout):
            raise ValueError(
                f"{op_name}: {name} must have shape [{', '.join(layout)}], got shape "
                f"{list(tensor.shape)}"
            )


def _not_an_input(result: torch.Tensor, *inputs: torch.Tensor | None) -> torch.Tensor:
    """`result`, or a copy of it where it is one of the inputs (a call with no steps
    returns the initial state it was given; an operator may not alias an input)."""
    return result.clone() if any(result is i for i in inputs) else result


# ------------------------------------------------------------------------ causal_conv1d


@torch.library.custom_op("tilelang::causal_conv1d", mutates_args=(), device_types=("cpu", "cuda"))
def causal_conv1d_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str | None,
    initial_states: torch.Tensor | None,
    return_final_states: bool,
    seq_idx: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, final states): `tilelang.kernels.causal_conv1d`; the final states [batch,
    Dm, W - 1] with `return_final_states`, else an empty tensor of x's dtype."""
    result = conv.causal_conv1d(
        x, weight, bias, seq_idx=seq_idx, activation=activation, initial_states=initial_states,
        return_final_states=return_final_states,
    )  # fmt: skip
    if not return_final_states:
        return result, x.new_empty(0)
    out, final = result
    return out, _not_an_input(final, initial_states)


@causal_conv1d_op.register_fake
def _causal_conv1d_fake(
    x, weight, bias, activation, initial_states, return_final_states, seq_idx=None
):
    _rank(
        "tilelang::causal_conv1d",
        x=(x, ("batch", "Dm", "L")),
        weight=(weight, ("Dm", "W")),
        seq_idx=(seq_idx, ("batch", "L")),
    )
    final = (x.shape[0], x.shape[1], weight.shape[1] - 1) if return_final_states else (0,)
    return x.new_empty(x.shape), x.new_empty(final)


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    seq_idx: torch.Tensor | None = None,
    activation: str | None = None,
    initial_states: torch.Tensor | None = None,
    return_final_states: bool = False,
):
    """causal-conv1d's `causal_conv1d_fn` forward as the torch operator
    ``tilelang::causal_conv1d`` (shapes, dtypes, packed sequences by `seq_idx` and
    which parameters are keywords: `tilelang.kernels.causal_conv1d`): out [batch, Dm,
    L] in x's dtype, and with `return_final_states` (out, the last W - 1 inputs
    [batch, Dm, W - 1], the conv_state decoding continues from)."""
    wants_final = flag(return_final_states, "return_final_states")
    out, final = causal_conv1d_op(x, weight, bias, activation, initial_states, wants_final, seq_idx)
    return (out, final) if wants_final else out


# ----------------------------------------------------------------------- ssd_chunk_scan


@torch.library.custom_op("tilelang::ssd_chunk_scan", mutates_args=(), device_types=("cpu", "cuda"))
def ssd_chunk_scan_op(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    dt_softplus: bool,
    initial_states: torch.Tensor | None,
    return_final_states: bool,
    seq_idx: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    dt_limit: list[float] | None = None,
    return_varlen_states: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out, final state, varlen states): `tilelang.kernels.ssd_chunk_scan`; the f32
    final state [batch, H, P, N] with `return_final_states` and the f32 states of the
    sequences [n_seq, H, P, N] with `return_varlen_states`, each else an empty f32
    tensor."""
    result = ssd.ssd_chunk_scan(
        x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx=seq_idx,
        cu_seqlens=cu_seqlens, dt_softplus=dt_softplus, dt_limit=dt_limit,
        return_final_states=return_final_states, return_varlen_states=return_varlen_states,
    )  # fmt: skip
    empty = x.new_empty(0, dtype=torch.float32)
    if not isinstance(result, tuple):
        return result, empty, empty.clone()
    out, *rest = result
    final = _not_an_input(rest.pop(0), initial_states) if return_final_states else empty
    varlen = rest[0] if return_varlen_states else empty.clone()
    return out, final, varlen


@ssd_chunk_scan_op.register_fake
def _ssd_chunk_scan_fake(
    x, dt, A, B, C, chunk_size, D, z, dt_bias, dt_softplus, initial_states,
    return_final_states, seq_idx=None, cu_seqlens=None, dt_limit=None,
    return_varlen_states=False,
):  # fmt: skip
    _rank(
        "tilelang::ssd_chunk_scan",
        x=(x, ("batch", "L", "H", "P")),
        B=(B, ("batch", "L", "G", "N")),
        seq_idx=(seq_idx, ("batch", "L")),
        cu_seqlens=(cu_seqlens, ("n_seq + 1",)),
    )
    nb, _, heads, p = x.shape
    n = B.shape[3]
    final = (nb, heads, p, n) if return_final_states else (0,)
    if return_varlen_states and cu_seqlens is None:
        raise ValueError("tilelang::ssd_chunk_scan: return_varlen_states needs cu_seqlens")
    varlen = (cu_seqlens.shape[0] - 1, heads, p, n) if return_varlen_states else (0,)
    f32 = torch.float32
    return x.new_empty(x.shape), x.new_empty(final, dtype=f32), x.new_empty(varlen, dtype=f32)


def ssd_chunk_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    initial_states: torch.Tensor | None = None,
    *,
    seq_idx: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] | None = None,
    return_final_states: bool = False,
    return_varlen_states: bool = False,
):
    """mamba_ssm's `mamba_chunk_scan_combined` forward as the torch operator
    ``tilelang::ssd_chunk_scan`` (shapes, dtypes, packed sequences and which
    parameters are keywords: `tilelang.kernels.ssd_chunk_scan`): out [batch, L, H, P]
    in x's dtype, then with `return_final_states` the f32 state [batch, H, P, N], then
    with `return_varlen_states` the f32 state of each sequence [n_seq, H, P, N]."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    softplus = flag(dt_softplus, "dt_softplus")
    wants_final = flag(return_final_states, "return_final_states")
    wants_varlen = flag(return_varlen_states, "return_varlen_states")
    limits = step_limits(dt_limit)
    out, final, varlen = ssd_chunk_scan_op(
        x, dt, A, B, C, chunk_size, D, z, dt_bias, softplus, initial_states, wants_final,
        seq_idx, cu_seqlens, None if limits is None else list(limits), wants_varlen,
    )  # fmt: skip
    extra = [t for t, wanted in ((final, wants_final), (varlen, wants_varlen)) if wanted]
    return (out, *extra) if extra else out
