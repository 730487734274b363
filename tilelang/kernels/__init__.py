"""Ready kernels for LLM serving, written in the kernel language (docs/design.md §10,
"Kernels"): each a DSL kernel in its family's module and a Python function with the
arguments users already call (mamba_ssm's, vLLM's), that checks its inputs, allocates
its outputs where the inputs live, and runs on the GPU for device tensors or on the CPU
backend for numpy arrays.

* `tilelang.kernels.ssm`: `selective_scan` (Mamba-1); `tilelang.kernels.ssm_update`:
  `selective_state_update` (the decode step: Mamba-1 and Mamba-2 states, vLLM's
  `state_batch_indices`), re-exported by `ssm`.
* `tilelang.kernels.norm`: `rms_norm`, `fused_add_rms_norm`, `silu_and_mul`.
* `tilelang.kernels.conv`: `causal_conv1d`, `causal_conv1d_update` (causal-conv1d's).
* `tilelang.kernels.ssd`: `ssd_chunk_scan` (Mamba-2).
* `tilelang.kernels.attention`: `flash_attention` (forward: GQA/MQA, causal, lse);
  `tilelang.kernels.paged_prefill`: its `block_table=` form over vLLM's paged cache
  (chunked prefill, prefix-cache hits, decode).
* `tilelang.kernels.paged_attention`: `paged_decode_attention` (vLLM's paged KV cache;
  f16/bf16/f8e4m3/u8/u4).
* `tilelang.kernels.paged_cache`: `write_paged_cache` (vLLM's reshape_and_cache_flash:
  new tokens into that cache, quantized to its type).
* `tilelang.kernels.rotary`: `rotary_embedding` (vLLM's: rotary embeddings of q and k
  in place, neox or GPT-J pairs, partial rotary).
"""

from . import paged_prefill  # noqa: F401  (flash_attention's block_table= form)
from .attention import flash_attention
from .conv import causal_conv1d, causal_conv1d_update
from .norm import fused_add_rms_norm, rms_norm, silu_and_mul
from .paged_attention import paged_decode_attention
from .paged_cache import write_paged_cache
from .rotary import rotary_embedding
from .ssd import ssd_chunk_scan
from .ssm import selective_scan, selective_state_update

__all__ = [
    "causal_conv1d",
    "causal_conv1d_update",
    "flash_attention",
    "fused_add_rms_norm",
    "paged_decode_attention",
    "rms_norm",
    "rotary_embedding",
    "selective_scan",
    "selective_state_update",
    "silu_and_mul",
    "ssd_chunk_scan",
    "write_paged_cache",
]
