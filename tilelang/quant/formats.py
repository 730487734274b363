"""The weight formats of `tilelang.quant`: their names, element and scale types, block
sizes along K, and the fixed tables of the codebook formats.

Four kinds of arithmetic cover every format (`tilelang.quant.arithmetic` has the exact
formulas):

* ``scaled``: codes of an integer type (u1..u8, i1..i8) or of a small float ExMy (3..8
  bits), one scale per group of G rows along K in f16, bf16 or f32, and for integer
  codes optionally one integer zero point per group. `quantize(..., format=None)` makes
  it (named ``"scaled"``); GPTQ and AWQ checkpoints import into it (``"gptq"``,
  ``"awq"``: the same arithmetic, the name records where the weights came from).
* ``mx``: the OCP Microscaling v1.0 formats, a float element type and one ``e8m0``
  scale per block of 32 elements along K.
* ``nvfp4``: NVIDIA's NVFP4, ``f4e2m1`` elements, one ``f8e4m3`` scale per 16 elements
  along K and one f32 scale for the whole tensor.
* ``codebook``: u2..u8 codes indexing a table of 2^b float values, one absmax scale per
  group of G rows along K (f16, bf16 or f32, as ``scaled`` takes them). ``"nf4"`` and
  ``"fp4_bnb"`` are bitsandbytes' 4-bit types with their fixed tables (`NF4`,
  `FP4_BNB`); ``"codebook"`` takes the user's table (`quantize(..., codebook=values)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from tilelang.dtypes import (
    DType,
    FloatType,
    IntType,
    bf16,
    e8m0,
    f4e2m1,
    f6e2m3,
    f6e3m2,
    f8e4m3,
    f8e5m2,
    f16,
    f32,
    u4,
)

Kind = Literal["scaled", "mx", "nvfp4", "codebook"]

#: bitsandbytes' NF4 table, `bitsandbytes.functional.get_4bit_type("nf4")`: the listed
#: decimals as float32 (the function builds a float32 tensor and divides by its largest
#: |value|, 1.0), so these are the float32 values bitsandbytes multiplies by.
NF4: tuple[float, ...] = tuple(
    float(v)
    for v in np.float32(
        [
            -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
            -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
            0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
            0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
            0.7229568362236023, 1.0,
        ]
    )
)  # fmt: skip

#: bitsandbytes' FP4 table, `bitsandbytes.functional.get_4bit_type("fp4")`
#: (bitsandbytes/functional.py): codes 0..7 are 0, 0.0625, 8, 12, 4, 6, 2, 3 (sign bit
#: 8 negates, code 8 is -0), divided in float32 by the largest, 12. Not OCP's e2m1
#: order or values: a code is an index, not a bit pattern.
FP4_BNB: tuple[float, ...] = tuple(
    float(v)
    for v in np.float32([0, 0.0625, 8, 12, 4, 6, 2, 3, -0.0, -0.0625, -8, -12, -4, -6, -2, -3])
    / np.float32(12)
)

#: The largest table a codebook format holds (u8 codes).
MAX_TABLE = 256


@dataclass(frozen=True)
class Format:
    """One named format. `element`, `block` and `scale_dtype` are None where the user
    chooses them (the ``scaled`` kinds); fixed by the spec for MX and NVFP4. `table`:
    a codebook format's fixed table (float64 values of its codes 0..2^b − 1), None
    where the user gives it (``"codebook"``) and for the other kinds."""

    name: str
    kind: Kind
    element: DType | None = None
    block: int | None = None
    scale_dtype: DType | None = None
    table: tuple[float, ...] | None = None


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("scaled", "scaled"),
        Format("gptq", "scaled"),
        Format("awq", "scaled"),
        Format("mxfp4", "mx", f4e2m1, 32, e8m0),
        Format("mxfp6_e3m2", "mx", f6e3m2, 32, e8m0),
        Format("mxfp6_e2m3", "mx", f6e2m3, 32, e8m0),
        Format("mxfp8_e4m3", "mx", f8e4m3, 32, e8m0),
        Format("mxfp8_e5m2", "mx", f8e5m2, 32, e8m0),
        Format("nvfp4", "nvfp4", f4e2m1, 16, f8e4m3),
        Format("nf4", "codebook", u4, table=NF4),
        Format("fp4_bnb", "codebook", u4, table=FP4_BNB),
        Format("codebook", "codebook"),
    )
}

#: Scale types of the ``scaled`` kind (f16 is the default).
SCALE_DTYPES: tuple[DType, ...] = (f16, bf16, f32)


def get_format(name: str) -> Format:
    """The format called `name`; a ValueError lists the known names."""
    if name not in FORMATS:
        raise ValueError(f"unknown quantization format {name!r}; known: {sorted(FORMATS)}")
    return FORMATS[name]


def is_scaled_element(t: DType) -> bool:
    """Whether `t` can be the code type of a ``scaled`` format: u1..u8, i1..i8, or a
    small float of 3..8 bits."""
    if isinstance(t, IntType):
        return 1 <= t.bits <= 8
    return isinstance(t, FloatType) and 3 <= t.bits <= 8


def check_scaled_element(t: DType) -> None:
    if not is_scaled_element(t):
        raise ValueError(
            f"{t} cannot hold quantized weights: use u1..u8, i1..i8 or a small float "
            "ExMy of 3..8 bits (f4e2m1, f6e3m2, f8e4m3, ...), or a block-scaled format "
            f"({', '.join(n for n, f in FORMATS.items() if f.kind != 'scaled')})"
        )


def check_scale_dtype(t: DType) -> None:
    if t not in SCALE_DTYPES:
        raise ValueError(
            f"scales of the scaled formats are {', '.join(map(str, SCALE_DTYPES))}, got {t}"
        )


def check_codebook_element(t: DType) -> None:
    """Refuses a code type a codebook cannot be indexed by: u2..u8."""
    if not (isinstance(t, IntType) and not t.signed and 2 <= t.bits <= 8):
        raise ValueError(
            f"dtype: codebook codes are unsigned indices of 2 to 8 bits (u2..u8), got {t}"
        )


def inexact_values(element: DType, t: DType) -> np.ndarray:
    """The finite values of `element` (float64, ascending) that the float type `t` does
    not hold exactly: empty for integer codes of up to 8 bits in f16 or bf16, for every
    ExMy of 3..8 bits in bf16, and for those whose values lie in f16's range and
    precision (f6e5m0, f7e5m1, f7e6m0, f8e6m1, f8e7m0 exceed f16's 65504 or its
    subnormals)."""
    values = element.decode(np.arange(1 << element.bits)).astype(np.float64)
    values = np.unique(values[np.isfinite(values)])
    with np.errstate(over="ignore"):
        held = t.decode(t.encode(values)).astype(np.float64)
    return values[held != values]
