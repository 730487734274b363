"""tilelang.torch: tilelang kernels as PyTorch operators (the optional extra `torch`).

* `op(kernel, "ns::name", **constexprs)`: a `torch.library` custom operator with CPU
  (LLVM backend), CUDA (torch's current stream) and fake implementations derived from
  the kernel's signature (`tilelang.torch.op`, `tilelang.torch.signature`);
* `dtypes`: how each tilelang dtype travels as a torch tensor (sub-byte ones packed in
  uint8);
* `QuantLinear`: a drop-in `nn.Module` over `tilelang.quant` weights;
* `moe_matmul` and `QuantMoE`: `tilelang.quant.moe_matmul` (quantized experts) as the
  operator ``tilelang::moe_matmul`` (`tilelang.torch.moe`);
* `NoGradientWarning`: what a call on a tensor that requires grad warns (once per
  function or operator) with grad mode on: the kernels are forward-only, unless an
  operator is given a derivative (`TorchOp.register_autograd`).

`import tilelang` never imports this package or torch; importing it without torch
installed is an ImportError that says how to install it.
"""

from __future__ import annotations

try:
    import torch as _torch  # noqa: F401  (absolute: the real torch, not this package)
except ImportError as _error:
    raise ImportError(
        "tilelang.torch needs PyTorch: pip install 'tilelang[torch]' (torch 2.4 or newer)"
    ) from _error

from tilelang.runtime.host_calls import NoGradientWarning
from tilelang.torch import dtypes
from tilelang.torch.moe import QuantMoE, moe_matmul
from tilelang.torch.op import TorchOp, op
from tilelang.torch.quant_linear import QuantLinear

__all__ = ["NoGradientWarning", "QuantLinear", "QuantMoE", "TorchOp", "dtypes", "moe_matmul", "op"]
