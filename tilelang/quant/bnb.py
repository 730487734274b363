"""bitsandbytes 4-bit weights (QLoRA's NF4 and bitsandbytes' FP4) as `QuantizedWeight`s
of the codebook formats ``"nf4"`` and ``"fp4_bnb"``, bit-exactly.

bitsandbytes' ``Params4bit`` holds a Linear's weight [out_features, in_features]
flattened row-major and quantized in blocks of ``blocksize`` consecutive elements (64
by default), each with a float32 absmax; two 4-bit codes a byte, the first element in
the high nibble (bitsandbytes' ``kQuantizeBlockwise`` in csrc/kernels.cu:
``packed_4bit |= dQuantizeNF4(vals[2*j] ...) << 4; packed_4bit |= dQuantizeNF4(vals[2*j+1]
...)``). Element i dequantizes to ``code[q_i] · absmax[i // blocksize]`` in float32.
With in_features a multiple of blocksize a block lies in one row of the Linear's
weight, so it is one group of G = blocksize rows along K of W = weightᵀ [K = in, N =
out]: the ``codebook`` arithmetic (`tilelang.quant.arithmetic`).

Double quantization (``bnb_4bit_use_double_quant``) stores the absmax as u8 codes into a
256-entry map (``nested_quant_map``), scaled per block of ``nested_blocksize`` (256)
absmax values by a float32 ``nested_absmax``, after subtracting their mean
``nested_offset`` (bitsandbytes' ``dequantize_4bit``: ``absmax =
dequantize_blockwise(absmax, state2); absmax += offset``), all in float32:
``absmax[j] = f32(f32(nested_quant_map[a_j] · nested_absmax[j // nested_blocksize]) +
offset)``.

A transformers checkpoint of a bnb 4-bit Linear holds, under the module's name
(bitsandbytes' ``QuantState.as_dict(packed=True)``): ``weight`` (the packed bytes),
``weight.absmax``, ``weight.quant_map``, with double quantization
``weight.nested_absmax`` and ``weight.nested_quant_map``, and
``weight.quant_state.bitsandbytes__nf4`` (or ``__fp4``): the UTF-8 bytes of a JSON
object with ``quant_type``, ``blocksize``, ``dtype``, ``shape`` and, nested,
``nested_blocksize``, ``nested_dtype`` and ``nested_offset``.

The scales keep bitsandbytes' float32 absmax by default (``dtype="f32"``): then
`QuantizedWeight.dequantize` is bitsandbytes' float32 dequantization bit for bit. The
matmul kernels multiply in the activations' type: ``dtype="f16"`` or ``"bf16"`` (or
``with_scale_dtype`` later) rounds each absmax and table entry once to it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType

from .formats import check_scale_dtype, get_format
from .weight import QuantizedWeight, fixed_table

#: bitsandbytes' quant_type -> the tilelang format of its table.
FORMAT_OF = {"nf4": "nf4", "fp4": "fp4_bnb"}


def from_bnb(
    weight: Any,
    absmax: Any,
    quant_map: Any = None,
    *,
    shape: tuple[int, int],
    blocksize: int = 64,
    quant_type: str = "nf4",
    nested_absmax: Any = None,
    nested_quant_map: Any = None,
    nested_blocksize: int = 256,
    nested_offset: float | None = None,
    dtype: DType | str = "f32",
) -> QuantizedWeight:
    """The `QuantizedWeight` [in_features, out_features] of a bitsandbytes 4-bit weight
    (module docstring): `weight` the packed bytes (any shape, e.g. [n / 2, 1]; uint8,
    or the wider words bitsandbytes' ``quant_storage`` keeps them in, read as bytes),
    `absmax` the float32 absmax per block (u8 codes with double quantization, whose
    `nested_*` arguments are then required), `quant_map` the 16-entry table (checked
    against `quant_type`'s fixed one; None: that one), `shape` (out_features,
    in_features). `dtype`: the scale type, f32 (bit-exact) or f16/bf16 (the kernels')."""
    fmt = _format(quant_type)
    scale_type = dtypes.dtype(dtype)
    check_scale_dtype(scale_type)
    out_features, in_features = _shape(shape)
    _check_blocksize(blocksize, in_features)
    codes = _codes(weight, out_features, in_features)
    if quant_map is not None:
        _check_quant_map(_floats(quant_map, "quant_map"), quant_type)
    blocks = out_features * in_features // blocksize
    if nested_absmax is None:
        if nested_quant_map is not None or nested_offset is not None:
            raise ValueError("nested_quant_map/nested_offset need nested_absmax (double quant)")
        scales = _floats(absmax, "absmax").astype(np.float32)
    else:
        scales = _nested(absmax, nested_absmax, nested_quant_map, nested_blocksize, nested_offset)
    if scales.shape != (blocks,):
        raise ValueError(
            f"absmax must hold one value per block of {blocksize}: {blocks} for shape "
            f"{(out_features, in_features)}, got shape {scales.shape}"
        )
    # Block j covers columns (j mod in/bs)·bs.. of row j // (in/bs): W's group, column.
    grouped = scales.reshape(out_features, in_features // blocksize).T.astype(np.float64)
    with np.errstate(over="ignore"):
        scale_codes = scale_type.encode(grouped)
    if not np.isfinite(scale_type.decode(scale_codes)).all():
        raise ValueError(
            f"dtype: an absmax of {np.abs(grouped).max():g} overflows {scale_type}; keep "
            f"dtype='f32' or use 'bf16'"
        )
    return QuantizedWeight(
        codes=dtypes.pack_codes(codes, dtypes.u4),
        scale_codes=scale_codes,
        scale_dtype=scale_type,
        group_size=blocksize,
        format=fmt,
        table_codes=fixed_table(get_format(fmt), scale_type),
    )


def from_bnb_state_dict(
    state_dict: dict[str, Any], prefix: str = "", *, dtype: DType | str = "f32"
) -> QuantizedWeight:
    """`from_bnb` on the tensors a transformers checkpoint holds for the bnb 4-bit
    Linear named `prefix` (module docstring; "model.layers.0.mlp.up_proj", with or
    without the trailing dot). A KeyError names a missing key."""
    base = prefix if not prefix or prefix.endswith(".") else prefix + "."
    key = f"{base}weight"
    state_keys = [k for k in state_dict if k.startswith(f"{key}.quant_state.bitsandbytes__")]
    if len(state_keys) != 1:
        raise KeyError(
            f"state_dict: expected one '{key}.quant_state.bitsandbytes__nf4' (or __fp4) "
            f"entry, found {state_keys or 'none'}"
        )
    meta = json.loads(bytes(_array(state_dict[state_keys[0]]).astype(np.uint8)).decode("utf-8"))

    def get(name: str) -> Any:
        if name not in state_dict:
            raise KeyError(f"state_dict has no {name!r} (a bitsandbytes 4-bit weight's)")
        return state_dict[name]

    nested = f"{key}.nested_absmax" in state_dict
    shape = meta.get("shape")
    if shape is None or len(shape) != 2:
        raise ValueError(
            f"{state_keys[0]}: 'shape' must be [out_features, in_features], got {shape}"
        )
    return from_bnb(
        get(key),
        get(f"{key}.absmax"),
        state_dict.get(f"{key}.quant_map"),
        shape=(int(shape[0]), int(shape[1])),
        blocksize=int(meta["blocksize"]),
        quant_type=str(meta["quant_type"]),
        nested_absmax=get(f"{key}.nested_absmax") if nested else None,
        nested_quant_map=get(f"{key}.nested_quant_map") if nested else None,
        nested_blocksize=int(meta.get("nested_blocksize", 256)),
        nested_offset=float(meta["nested_offset"]) if nested else None,
        dtype=dtype,
    )


# ----------------------------------------------------------------------------- pieces


def _array(x: Any) -> np.ndarray:
    """A numpy view of a numpy array or a torch tensor (on any device)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def _floats(x: Any, what: str) -> np.ndarray:
    array = _array(x)
    if array.dtype.kind != "f":
        raise TypeError(f"{what} must hold float values, got {array.dtype}")
    return array.reshape(-1)


def _format(quant_type: str) -> str:
    if quant_type not in FORMAT_OF:
        raise ValueError(f"quant_type must be 'nf4' or 'fp4' (bitsandbytes'), got {quant_type!r}")
    return FORMAT_OF[quant_type]


def _shape(shape: Any) -> tuple[int, int]:
    if len(tuple(shape)) != 2 or any(int(d) < 1 for d in shape):
        raise ValueError(f"shape must be (out_features, in_features), got {shape!r}")
    return int(shape[0]), int(shape[1])


def _check_blocksize(blocksize: int, in_features: int) -> None:
    if isinstance(blocksize, bool) or not isinstance(blocksize, (int, np.integer)):
        raise ValueError(f"blocksize must be an int, got {blocksize!r}")
    if not (32 <= blocksize <= 4096 and blocksize & (blocksize - 1) == 0):
        raise ValueError(f"blocksize must be a power of two from 32 to 4096, got {blocksize}")
    if in_features % blocksize:
        raise ValueError(
            f"shape: in_features = {in_features} is not a multiple of blocksize {blocksize}: "
            f"a block would span two output rows, which no group along K describes"
        )


def _stored_bytes(weight: Any) -> np.ndarray:
    """The packed bytes of `weight` in memory order, whatever dtype holds them
    (bitsandbytes' ``quant_storage``: FSDP-QLoRA stores them as bf16 or f32 words)."""
    if hasattr(weight, "detach"):
        import torch  # a tensor was handed over, so torch is there

        tensor = weight.detach().cpu().contiguous()
        return tensor.reshape(-1).view(torch.uint8).numpy()
    array = np.ascontiguousarray(weight)
    if array.dtype.kind not in "uifV" and array.dtype.name != "bfloat16":
        raise TypeError(f"weight must be the packed bytes (any numeric dtype), got {array.dtype}")
    return array.reshape(-1).view(np.uint8)


def _codes(weight: Any, out_features: int, in_features: int) -> np.ndarray:
    """W's codes [K = in, N = out] from the packed bytes (high nibble first)."""
    data = _stored_bytes(weight)
    count = out_features * in_features
    data = data.reshape(-1)
    if data.size != (count + 1) // 2:
        raise ValueError(
            f"weight must hold {(count + 1) // 2} bytes (two codes each) for shape "
            f"{(out_features, in_features)}, got {data.size}"
        )
    codes = np.stack([data >> 4, data & 0xF], axis=1).reshape(-1)[:count]
    return codes.reshape(out_features, in_features).T


def _check_quant_map(quant_map: np.ndarray, quant_type: str) -> None:
    """bitsandbytes' 4-bit kernels use the fixed tables whatever quant_map says, so a
    different map would not describe the weights they compute."""
    fixed = np.float32(get_format(FORMAT_OF[quant_type]).table)
    if quant_map.shape != (16,) or not np.array_equal(np.float32(quant_map), fixed):
        raise ValueError(
            f"quant_map must be bitsandbytes' {quant_type} table {fixed.tolist()}, got "
            f"{quant_map.tolist()}"
        )


def _nested(
    codes: Any, nested_absmax: Any, nested_map: Any, nested_blocksize: int, offset: Any
) -> np.ndarray:
    """The float32 absmax of double quantization (module docstring)."""
    codes = _array(codes).reshape(-1)
    if codes.dtype != np.uint8:
        raise TypeError(f"absmax must be uint8 codes with nested_absmax, got {codes.dtype}")
    if nested_map is None or offset is None:
        raise ValueError("nested_absmax needs nested_quant_map and nested_offset")
    table = _floats(nested_map, "nested_quant_map").astype(np.float32)
    if table.shape != (256,):
        raise ValueError(f"nested_quant_map must hold 256 values, got {table.shape}")
    scales = _floats(nested_absmax, "nested_absmax").astype(np.float32)
    needed = -(-codes.size // int(nested_blocksize))
    if scales.shape != (needed,):
        raise ValueError(
            f"nested_absmax must hold one value per {nested_blocksize} absmax codes "
            f"({needed}), got {scales.shape}"
        )
    blocks = np.arange(codes.size) // int(nested_blocksize)
    return (table[codes] * scales[blocks]) + np.float32(offset)  # float32, as bitsandbytes
