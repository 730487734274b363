"""The torch operator ``tilelang::rotary_embedding``: `tilelang.kernels.rotary_embedding`
(vLLM's rotary_embedding) on torch tensors, query and key rotated in place, so declared
mutated.

Kept beside `tilelang.torch.kernels` (which imports it, so that importing that module
registers this operator too), as `tilelang.torch.paged_cache` is. Under torch.compile a
library call on torch tensors is traced as `rotary_embedding` here
(`tilelang.runtime.host_calls.register_torch_form`).
"""

from __future__ import annotations

import torch

import tilelang.kernels as library
from tilelang.kernels import rotary
from tilelang.runtime import host_calls


@torch.library.custom_op(
    "tilelang::rotary_embedding", mutates_args=("query", "key"), device_types=("cpu", "cuda")
)
def rotary_embedding_op(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor | None,
    head_size: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
) -> None:
    """`tilelang.kernels.rotary_embedding` on the tensors (CPU ones as zero-copy numpy
    views, `runtime.host_calls`): query and key rotated where they lie."""
    rotary.rotary_embedding(positions, query, key, head_size, cos_sin_cache, is_neox)


@rotary_embedding_op.register_fake
def _rotary_embedding_fake(positions, query, key, head_size, cos_sin_cache, is_neox):
    if cos_sin_cache.dim() != 2 or query.dim() < positions.dim() + 1:
        raise ValueError(
            f"tilelang::rotary_embedding: cos_sin_cache must be [max_position, rot_dim] and "
            f"query [*positions.shape, heads · head_size], got cos_sin_cache "
            f"{list(cos_sin_cache.shape)}, query {list(query.shape)} and positions "
            f"{list(positions.shape)}"
        )


def rotary_embedding(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor | None,
    head_size: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool = True,
) -> None:
    """vLLM's rotary_embedding as the torch operator ``tilelang::rotary_embedding``
    (shapes, dtypes and the definition: `tilelang.kernels.rotary_embedding`). Returns
    None; query and key are rotated in place."""
    rotary_embedding_op(positions, query, key, head_size, cos_sin_cache, is_neox)


host_calls.register_torch_form(library.rotary_embedding, rotary_embedding)
