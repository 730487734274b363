"""tilelang.quant: quantized weights for low-bit linear layers.

Quantize float weights (`quantize`: integer codes with or without zero points, small
floats ExMy, the OCP MX formats, NVFP4), import GPTQ and AWQ checkpoints bit-exactly
(`from_gptq`, `from_awq`), and hold the result as a `QuantizedWeight`: codes, scales,
zero points and metadata, with its exact dequantization, its error, and a file form.

Modules, one concept each: `formats` (the format table), `arithmetic` (the exact
dequantization of each format), `quantizer` (`quantize`: scale choice and rounding),
`checkpoints` (GPTQ/AWQ packings), `weight` (`QuantizedWeight`), `io` (the .npz file
form), `arrays` (numpy or torch inputs; torch is imported only when a tensor is handed
over).
"""

from .checkpoints import from_awq, from_gptq
from .formats import FORMATS, Format
from .quantizer import quantize
from .weight import QuantizedWeight

__all__ = ["FORMATS", "Format", "QuantizedWeight", "from_awq", "from_gptq", "quantize"]
