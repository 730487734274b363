"""Ready kernels for LLM serving, written in the kernel language (docs/design.md §10,
"Kernels"): each a DSL kernel in its family's module and a Python function with the
arguments users already call (mamba_ssm's, vLLM's), that checks its inputs, allocates
its outputs where the inputs live, and runs on the GPU for device tensors or on the CPU
backend for numpy arrays.

* `tilelang.kernels.ssm`: `selective_scan`, `selective_state_update` (Mamba-1).
* `tilelang.kernels.norm`: `rms_norm`, `silu_and_mul`.
"""

from .norm import rms_norm, silu_and_mul
from .ssm import selective_scan, selective_state_update

__all__ = ["rms_norm", "selective_scan", "selective_state_update", "silu_and_mul"]
