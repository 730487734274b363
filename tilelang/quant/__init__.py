"""tilelang.quant: quantized weights for low-bit linear layers.

Quantize float weights (`quantize`: integer codes with or without zero points, small
floats ExMy, the OCP MX formats, NVFP4, the codebook formats NF4, bitsandbytes' FP4
and a user's table), import GPTQ, AWQ and bitsandbytes 4-bit checkpoints bit-exactly
(`from_gptq`, v1 and v2, `from_awq`, `from_bnb`, `from_bnb_state_dict`),
llm-compressor's compressed-tensors layers and FP8 checkpoints
(`from_compressed_tensors`), and hold the result as a `QuantizedWeight`: codes,
scales, zero points and metadata, with its exact dequantization, its error, and a file
form.

Modules, one concept each: `formats` (the format table), `arithmetic` (the exact
dequantization of each format), `quantizer` (`quantize`: scale choice and rounding),
`checkpoints` (GPTQ/AWQ packings), `bnb` (bitsandbytes' 4-bit packing),
`compressed_tensors` (compressed-tensors and FP8 block-scaled checkpoints), `weight`
(`QuantizedWeight`), `io` (the .npz file form), `arrays` (numpy or torch inputs; torch
is imported only when a tensor is handed over), `kernels` (the matmul kernels, in the
kernel language), `operands` (a weight as the kernels read it: packed codes, scale and
zero-point tensors), `matmul` (the choice of kernel, `plan`, `matmul`), `moe`
(`quantize_experts`, `QuantizedExperts` and `moe_matmul`: E experts' weights stacked
for one grouped GEMM over router-chosen rows), `tuning` (the tile candidates of a call
and their ranking by the autotuner: measured on a GPU, the static model's prediction
on request), `dequantize` (W as the kernels see it, written by a kernel with their own
tile decoder: what a backward through a quantized layer multiplies by).
"""

from .bnb import from_bnb, from_bnb_state_dict
from .checkpoints import from_awq, from_gptq
from .compressed_tensors import ActivationQuantizationWarning, from_compressed_tensors
from .dequantize import dequantize
from .formats import FORMATS, Format
from .matmul import Choice, Launch, Plan, matmul, plan
from .moe import QuantizedExperts, moe_matmul, quantize_experts
from .operands import ScaleRangeWarning, pack_for_kernels
from .quantizer import quantize
from .weight import QuantizedWeight, ScaleRoundingWarning

__all__ = [
    "FORMATS",
    "ActivationQuantizationWarning",
    "Choice",
    "Format",
    "Launch",
    "Plan",
    "QuantizedExperts",
    "QuantizedWeight",
    "ScaleRangeWarning",
    "ScaleRoundingWarning",
    "dequantize",
    "from_awq",
    "from_bnb",
    "from_bnb_state_dict",
    "from_compressed_tensors",
    "from_gptq",
    "matmul",
    "moe_matmul",
    "pack_for_kernels",
    "plan",
    "quantize",
    "quantize_experts",
]
