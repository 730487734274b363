"""The torch operator ``tilelang::write_paged_cache``: `tilelang.kernels.write_paged_cache`
(vLLM's reshape_and_cache_flash) on torch tensors, the caches (and, for a u8 cache, the
per-token scales and zero points it computes) written in place, so declared mutated.

Kept beside `tilelang.torch.kernels` (which imports it, so that importing that module
registers this operator too) rather than in it: a module per concept, and that one near
its size limit. Under torch.compile a library call on torch tensors is traced as
`write_paged_cache` here (`tilelang.runtime.host_calls.register_torch_form`).
"""

from __future__ import annotations

import torch

import tilelang.kernels as library
from tilelang.kernels import paged_cache
from tilelang.runtime import host_calls

#: What the operator writes: the caches always, the parameter tensors for u8 caches
#: (an f8 cache's scales are only read; declaring them costs nothing).
MUTATED = ("k_cache", "v_cache", "k_scale", "v_scale", "k_zero", "v_zero")


@torch.library.custom_op(
    "tilelang::write_paged_cache", mutates_args=MUTATED, device_types=("cpu", "cuda")
)
def write_paged_cache_op(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    k_scale: torch.Tensor | None,
    v_scale: torch.Tensor | None,
    k_zero: torch.Tensor | None,
    v_zero: torch.Tensor | None,
) -> None:
    """`tilelang.kernels.write_paged_cache` on the tensors (CPU ones as zero-copy numpy
    views, `runtime.host_calls`): key/value rows into the caches' slots, in place."""
    paged_cache.write_paged_cache(
        key, value, k_cache, v_cache, slot_mapping, k_scale, v_scale, k_zero=k_zero, v_zero=v_zero
    )


@write_paged_cache_op.register_fake
def _write_paged_cache_fake(
    key, value, k_cache, v_cache, slot_mapping, k_scale, v_scale, k_zero, v_zero
):  # fmt: skip
    if key.dim() != 3 or k_cache.dim() != 4 or slot_mapping.dim() != 1:
        raise ValueError(
            f"tilelang::write_paged_cache: key must be [T, H_kv, D], k_cache [num_blocks, "
            f"block_size, H_kv, D] and slot_mapping [T], got key {list(key.shape)}, k_cache "
            f"{list(k_cache.shape)} and slot_mapping {list(slot_mapping.shape)}"
        )


def write_paged_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    k_scale: torch.Tensor | float | None = None,
    v_scale: torch.Tensor | float | None = None,
    *,
    k_zero: torch.Tensor | None = None,
    v_zero: torch.Tensor | None = None,
) -> None:
    """vLLM's reshape_and_cache_flash as the torch operator ``tilelang::write_paged_cache``
    (shapes, dtypes, the f8 scales and the u8 scales and zero points it writes:
    `tilelang.kernels.write_paged_cache`; a u4 cache, a PackedArray there, has no torch
    form). A number for an f8 cache's k_scale/v_scale becomes a CPU f32 tensor of one
    element, read on the host. Returns None."""
    paged_cache.check_no_dtype_string(k_scale)
    k_scale, v_scale = (_scale_tensor(s) for s in (k_scale, v_scale))
    write_paged_cache_op(
        key, value, k_cache, v_cache, slot_mapping, k_scale, v_scale, k_zero, v_zero
    )


def _scale_tensor(value) -> torch.Tensor | None:
    if value is None or isinstance(value, torch.Tensor):
        return value
    return torch.tensor([float(value)], dtype=torch.float32)  # on the host: no device copy


host_calls.register_torch_form(library.write_paged_cache, write_paged_cache)
