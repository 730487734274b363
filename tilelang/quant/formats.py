"""The weight formats of `tilelang.quant`: their names, element and scale types, and
block sizes along K.

Three kinds of arithmetic cover every format (`tilelang.quant.arithmetic` has the exact
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
)

Kind = Literal["scaled", "mx", "nvfp4"]


@dataclass(frozen=True)
class Format:
    """One named format. `element`, `block` and `scale_dtype` are None where the user
    chooses them (the ``scaled`` kinds); fixed by the spec for MX and NVFP4."""

    name: str
    kind: Kind
    element: DType | None = None
    block: int | None = None
    scale_dtype: DType | None = None


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
