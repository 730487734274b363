"""`QuantizedWeight`: a quantized weight matrix W [K, N] (K the reduction dimension) as
the kernels read it — codes, scales, zero points, format metadata — with its exact
dequantization, its error against the original, and its file form.

What it holds, ``G = group_size`` rows of W sharing one scale (⌈K / G⌉ groups: where G
does not divide K, the last group holds the K mod G rows left, as GPTQ checkpoints of
such K do; `quantize` makes G divide K, and MX and NVFP4 blocks always do):

* ``codes``: a `tilelang.PackedArray` of the element type's codes: the plain row-major
  [K, N] codes (``packing`` None), or the codes `tilelang.pack_for_dot` permuted for
  the kernels' dot (``packing`` the `tilelang.DotPacking`, ``codes`` a
  `tilelang.DotPackedArray` of shape ``packing.packed_shape``, K and N padded to whole
  tiles with zero codes). `plain_codes()` is the one place that undoes the packing, so
  the rest of the library never depends on the layout. `pack_for_dot` packs a weight,
  `unpacked` undoes it; `tilelang.quant.pack_for_kernels` packs for the tile that
  `tilelang.quant.matmul` uses.
* ``scale_codes`` [⌈K / G⌉, N]: the scales as codes of ``scale_dtype`` (f16, bf16, f32;
  e8m0 for MX; f8e4m3 for NVFP4), so they are bit-exact whatever numpy can represent;
  ``scales`` decodes them.
* ``zeros`` [⌈K / G⌉, N] int32 or None: the integer zero point z of each group, subtracted
  from the code's value (``w = (q − z) · s``). None for signed and float codes without
  zero points; `quantize(uN, zero_point=False)` gives the constant midpoint 2^(N−1).
  Zero points that are all one value are held as that value broadcast to the shape (a
  read-only view, no memory), and the repr says "zero point z" instead of "zeros".
* ``tensor_scale``: NVFP4's f32 per-tensor scale, else None.
* ``table_codes`` [2^b] or None: a codebook format's table (``"nf4"``, ``"fp4_bnb"``,
  ``"codebook"``), as codes of ``scale_dtype``: code q of the uN codes stands for
  ``table[q]`` (`table` decodes them). Every code indexes an entry (the table has
  exactly 2^b of them); ``"nf4"`` and ``"fp4_bnb"`` hold their fixed tables rounded
  to the scale type. None for the other kinds.
* ``perm`` [K] or None: act order (GPTQ ``desc_act``). Row i of the codes is row
  ``perm[i]`` of W, and the groups are contiguous in that order; a kernel computes
  ``x[..., perm] @ W_stored``. `dequantize()` returns W in its original row order.
* ``format`` (a `tilelang.quant.FORMATS` name), ``group_size``, ``shape`` (K, N).

`dequantize()` follows `tilelang.quant.arithmetic`, which states the exact arithmetic.
`with_scale_dtype` re-encodes the scales in another float type (what a model cast to
bf16 or f16 needs: the kernels multiply by scales of the activations' type).

A weight is frozen; what the kernels derive from it (`tilelang.quant.operands.cached`:
packed codes, device copies, call plans) lives in its ``_kernel_cache``, which copies
and pickles leave out (`__getstate__`): a copy or an unpickled weight prepares its own.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType, IntType, PackedArray
from tilelang.packing import DotPackedArray, DotPacking, pack_for_dot, unpack_from_dot
from tilelang.runtime.value_facts import all_finite

from . import arithmetic, io
from .arrays import float_matrix
from .formats import (
    Format,
    check_codebook_element,
    check_scale_dtype,
    check_scaled_element,
    get_format,
)

#: Frames from here are not the caller a warning points at (`_caller_level`).
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


class ScaleRoundingWarning(UserWarning):
    """`QuantizedWeight.with_scale_dtype` rounded scales its new type does not hold
    exactly: ``rounded`` of ``total`` scales, and ``error``, the new weight's
    `QuantizedWeight.error` against the old weight's `dequantize()`."""

    def __init__(self, message: str, rounded: int, total: int, error: dict[str, float]):
        super().__init__(message)
        self.rounded, self.total, self.error = rounded, total, error


def _code_array(value: Any, t: DType, shape: tuple[int, ...], what: str) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{what} must be integer codes of {t}, got {array.dtype}")
    if array.shape != shape:
        raise ValueError(f"{what} must have shape {shape}, got {array.shape}")
    if array.size and (array.min() < 0 or int(array.max()) > t.code_mask):
        raise ValueError(f"{what} must be codes of {t} in [0, {t.code_mask}]")
    return array.astype(t.storage)


@dataclass(frozen=True, eq=False)
class QuantizedWeight:
    """A quantized [K, N] weight; see the module docstring for every field."""

    codes: PackedArray
    scale_codes: np.ndarray
    scale_dtype: DType
    group_size: int
    format: str = "scaled"
    zeros: np.ndarray | None = None
    tensor_scale: float | None = None
    perm: np.ndarray | None = None
    shape: tuple[int, int] | None = None
    packing: DotPacking | None = None
    table_codes: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.codes, PackedArray):
            raise TypeError(f"codes must be a PackedArray, got {type(self.codes).__name__}")
        stored = self._check_packing()
        shape = stored if self.shape is None else tuple(self.shape)
        if shape != stored:
            what = "the packing's" if self.packing is not None else "the codes'"
            raise ValueError(f"shape {shape} differs from {what} shape {stored}")
        object.__setattr__(self, "shape", (int(shape[0]), int(shape[1])))
        fmt = get_format(self.format)
        scale_dtype = dtypes.dtype(self.scale_dtype)
        object.__setattr__(self, "scale_dtype", scale_dtype)
        self._check_types(fmt)
        k, n = self.shape
        g = self.group_size
        if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 1:
            raise ValueError(f"group_size must be a positive int (rows per scale), got {g!r}")
        object.__setattr__(self, "group_size", int(g))
        if fmt.block is not None and g != fmt.block:
            raise ValueError(f"{fmt.name} has one scale per {fmt.block} rows, not {g}")
        if fmt.kind != "scaled" and k % g:
            raise ValueError(f"{fmt.name}: K = {k} must be a multiple of its {g}-row block")
        groups = (-(-k // g), n)  # a short last group where g does not divide K
        scales = _code_array(self.scale_codes, scale_dtype, groups, "scale_codes")
        object.__setattr__(self, "scale_codes", scales)
        if self.zeros is not None:
            if fmt.kind != "scaled" or not isinstance(self.dtype, IntType):
                raise ValueError(f"zero points need integer codes, not {self.dtype}")
            zeros = np.asarray(self.zeros)
            if zeros.dtype.kind not in "iu" or zeros.shape != groups:
                raise ValueError(f"zeros must be integers of shape {groups}, got {zeros.shape}")
            object.__setattr__(self, "zeros", _stored_zeros(zeros))
        self._check_tensor_scale(fmt)
        self._check_table(fmt)
        if self.perm is not None:
            perm = np.asarray(self.perm)
            if perm.shape != (k,) or perm.dtype.kind not in "iu":
                raise ValueError(f"perm must be {k} integers, got {perm.dtype} {perm.shape}")
            if not np.array_equal(np.sort(perm), np.arange(k)):
                raise ValueError(f"perm must be a permutation of 0..{k - 1}")
            object.__setattr__(self, "perm", perm.astype(np.int64))

    def _check_packing(self) -> tuple[int, ...]:
        """The logical [K, N] shape the codes hold; the codes as a `DotPackedArray` when
        they are packed."""
        packing = self.packing
        if packing is None:
            if len(self.codes.shape) != 2:
                raise ValueError(f"codes must be a [K, N] matrix, got shape {self.codes.shape}")
            return tuple(self.codes.shape)
        if not isinstance(packing, DotPacking):
            raise TypeError(
                f"packing must be None (row-major codes) or a tilelang.DotPacking, got {packing!r}"
            )
        if self.codes.dtype != packing.dtype or self.codes.shape != packing.packed_shape:
            raise ValueError(
                f"codes packed by {packing} must be a {packing.dtype} tensor of shape "
                f"{packing.packed_shape}, got {self.codes.dtype} of shape {self.codes.shape}"
            )
        if not isinstance(self.codes, DotPackedArray) or self.codes.packing != packing:
            codes = DotPackedArray(self.codes.data, packing.dtype, packing.packed_shape, packing)
            object.__setattr__(self, "codes", codes)
        return tuple(packing.shape)

    def _check_types(self, fmt: Format) -> None:
        if fmt.kind == "codebook":
            if fmt.element is not None and self.dtype != fmt.element:
                raise ValueError(f"{fmt.name} holds {fmt.element} codes, got {self.dtype}")
            check_codebook_element(self.dtype)
            check_scale_dtype(self.scale_dtype)
            return
        if fmt.kind == "scaled":
            check_scaled_element(self.dtype)
            check_scale_dtype(self.scale_dtype)
            return
        if (self.dtype, self.scale_dtype) != (fmt.element, fmt.scale_dtype):
            raise ValueError(
                f"{fmt.name} holds {fmt.element} codes and {fmt.scale_dtype} scales, "
                f"got {self.dtype} and {self.scale_dtype}"
            )

    def _check_table(self, fmt: Format) -> None:
        """A codebook format's table: 2^b finite codes of the scale type (the fixed
        table of "nf4" and "fp4_bnb"); None for every other format."""
        if fmt.kind != "codebook":
            if self.table_codes is not None:
                raise ValueError(f"table_codes: {fmt.name} has no table (codebook formats do)")
            return
        size = 1 << self.dtype.bits
        if self.table_codes is None:
            raise ValueError(
                f"table_codes: {fmt.name} needs its table, {size} codes of {self.scale_dtype}"
            )
        table = _code_array(self.table_codes, self.scale_dtype, (size,), "table_codes")
        values = self.scale_dtype.decode(table)
        if not np.isfinite(values).all():
            raise ValueError(f"table_codes: every table value must be finite, got {values}")
        if fmt.table is not None and not np.array_equal(table, fixed_table(fmt, self.scale_dtype)):
            raise ValueError(
                f"table_codes: {fmt.name}'s table is fixed ({list(fmt.table)} in "
                f"{self.scale_dtype}), got {values.tolist()}: use format='codebook' for "
                f"another table"
            )
        object.__setattr__(self, "table_codes", table)

    def _check_tensor_scale(self, fmt: Format) -> None:
        if (fmt.kind == "nvfp4") != (self.tensor_scale is not None):
            raise ValueError("tensor_scale is NVFP4's f32 scale: required there, else None")
        if self.tensor_scale is not None:
            value = float(self.tensor_scale)
            if not (math.isfinite(value) and value > 0 and float(np.float32(value)) == value):
                raise ValueError(f"tensor_scale must be a positive finite f32, got {value!r}")
            object.__setattr__(self, "tensor_scale", value)

    # ------------------------------------------------------------------ views

    @property
    def dtype(self) -> DType:
        """The element (code) type."""
        return self.codes.dtype

    @property
    def table(self) -> np.ndarray | None:
        """A codebook format's table values [2^b] (float32, exact), else None."""
        if self.table_codes is None:
            return None
        return self.scale_dtype.decode(self.table_codes)

    @property
    def scales(self) -> np.ndarray:
        """The scales' values [⌈K / G⌉, N] (float32; exact for every scale type)."""
        return self.scale_dtype.decode(self.scale_codes)

    @functools.cached_property
    def finite(self) -> bool:
        """Whether no code is an inf or NaN code of the element type (f8e4m3 and f8e5m2
        have such codes; `quantize` and the imports never make them, but codes from
        arrays or a file might). Checked once per weight: the kernels' "finite" fact
        on the codes (`tilelang.quant.operands.Operands.facts`) rests on it."""
        return all_finite(self.codes, "codes")

    @property
    def nbytes(self) -> int:
        """Bytes of codes, scales and zero points (zero points counted as int32)."""
        zeros = 0 if self.zeros is None else self.zeros.nbytes
        table = 0 if self.table_codes is None else self.table_codes.nbytes
        return self.codes.nbytes + self.scale_codes.nbytes + zeros + table

    def plain_codes(self) -> np.ndarray:
        """The codes as a row-major [K, N] array (the dtype's storage), in stored row
        order (row i is row perm[i] of W under act order), whatever the packing."""
        if self.packing is None:
            return self.codes.codes()
        return unpack_from_dot(self.codes, self.packing).codes()

    def pack_for_dot(
        self,
        tile: tuple[int, int],
        *,
        m: int = 16,
        warps: int = 4,
        operand: DType | str = dtypes.f16,
        acc: DType | str = dtypes.f32,
    ) -> QuantizedWeight:
        """The same weight with its codes packed by `tilelang.pack_for_dot` for the B
        operand of a dot of tile (BK, BN) = `tile` (see that function for the other
        parameters); scales, zero points and metadata unchanged. Packing a packed weight
        repacks it from its plain codes."""
        plain = dtypes.pack_codes(self.plain_codes(), self.dtype)
        packed = pack_for_dot(plain, tile=tile, m=m, warps=warps, operand=operand, acc=acc)
        return dataclasses.replace(self, codes=packed, packing=packed.packing)

    def unpacked(self) -> QuantizedWeight:
        """The same weight with plain row-major codes (itself when it has them)."""
        if self.packing is None:
            return self
        codes = dtypes.pack_codes(self.plain_codes(), self.dtype)
        return dataclasses.replace(self, codes=codes, packing=None)

    def with_scale_dtype(self, scale_dtype: DType | str) -> QuantizedWeight:
        """The same weight with its scales as codes of `scale_dtype` (f16, bf16 or f32):
        itself when they already are. A scale the new type does not hold exactly is
        rounded to nearest even, and `ScaleRoundingWarning` reports how many were and
        the new weight's `error` against this one's `dequantize()` (f16 -> bf16 rounds
        most scales; bf16 -> f16 and f16 -> f32 are exact in f16's range). A ValueError
        when a scale would overflow to inf or a nonzero scale would round to 0 (its group
        would dequantize to 0). Integer and ExMy codes with scales only ("scaled",
        "gptq", "awq") and the codebook formats, whose table is converted too ("nf4" and
        "fp4_bnb" round their fixed table once to the new type): MX and NVFP4 fix their
        scale types."""
        fmt = get_format(self.format)
        target = dtypes.dtype(scale_dtype)
        if fmt.kind not in ("scaled", "codebook"):
            raise ValueError(
                f"scale_dtype: {fmt.name} scales are always {self.scale_dtype}, got {target}"
            )
        check_scale_dtype(target)
        if target == self.scale_dtype:
            return self
        old = self.scales.astype(np.float64)
        with np.errstate(over="ignore"):
            codes = target.encode(old)
        new = target.decode(codes).astype(np.float64)
        _check_converted(old, new, self.scale_dtype, target)
        table = None if self.table is None else _converted_table(fmt, self.table, target)
        converted = dataclasses.replace(
            self, scale_codes=codes, scale_dtype=target, table_codes=table
        )
        rounded = int(np.count_nonzero((new != old) & ~(np.isnan(old) & np.isnan(new))))
        entries = 0  # a codebook's table entries rounded: they move weights too
        if table is not None:
            entries = int(np.count_nonzero(target.decode(table) != self.table))
        if rounded or entries:
            error = converted.error(self.dequantize())
            warnings.warn(
                ScaleRoundingWarning(
                    f"{rounded} of {old.size} scales"
                    f"{f' and {entries} table entries' if entries else ''} of {self!r} are "
                    f"not exact in {target}: "
                    f"rounded to nearest even, which moves the weights by at most "
                    f"{error['max_abs']:.3g} (relative error {error['relative']:.3g}, "
                    f"QuantizedWeight.error). From float weights, quantizing with "
                    f"scale_dtype='{target}' gives exact {target} scales{_other_type(old)}",
                    rounded,
                    old.size,
                    error,
                ),
                stacklevel=_caller_level(),
            )
        return converted

    def __getstate__(self) -> dict[str, Any]:
        """The fields without the kernels' cache (`tilelang.quant.operands.cached`):
        device memory, call plans and their functions are the process's, not the
        weight's."""
        state = dict(self.__dict__)
        state.pop("_kernel_cache", None)
        return state

    def __repr__(self) -> str:
        k, n = self.shape
        extra = "".join(
            f", {label}"
            for label, present in (
                (self._zeros_text(), self.zeros is not None),
                ("act order", self.perm is not None),
                (f"packed in {self._tile_text()} tiles", self.packing is not None),
                (f"table of {1 << self.dtype.bits}", self.table_codes is not None),
            )
            if present
        )
        return (
            f"QuantizedWeight({self.format}, {self.dtype} [{k}, {n}], "
            f"{self.scale_dtype} scale per {self.group_size} rows{extra})"
        )

    def _zeros_text(self) -> str:
        zeros = self.zeros
        if zeros is not None and zeros.size and not any(zeros.strides):
            return f"zero point {int(zeros.flat[0])}"  # one for every group (`_stored_zeros`)
        return "zeros"

    def _tile_text(self) -> str:
        return "x".join(map(str, self.packing.tile)) if self.packing is not None else ""

    # ------------------------------------------------------------ arithmetic

    def dequantize(self) -> np.ndarray:
        """W as the kernels see it, float32 [K, N] in the original row order
        (tilelang.quant.arithmetic gives the exact formula of each format)."""
        values = self.dtype.decode(self.plain_codes())
        kind = get_format(self.format).kind
        if kind == "scaled":
            w = arithmetic.scaled(
                values, self.scales, self.zeros, self.group_size, self.scale_dtype
            )
        elif kind == "codebook":
            assert self.table is not None
            w = arithmetic.codebook(
                self.plain_codes(), self.table, self.scales, self.group_size, self.scale_dtype
            )
        elif kind == "mx":
            w = arithmetic.mx(values, self.scale_codes, self.group_size)
        else:
            assert self.tensor_scale is not None
            w = arithmetic.nvfp4(values, self.scales, self.tensor_scale, self.group_size)
        if self.perm is None:
            return w
        original = np.empty_like(w)
        original[self.perm] = w
        return original

    def error(self, w: Any) -> dict[str, float]:
        """How far `dequantize()` is from `w` (numpy or torch [K, N]): ``max_abs``
        (max |w − ŵ|), ``rms`` (root mean square of w − ŵ) and ``relative``
        (‖w − ŵ‖ / ‖w‖, Frobenius norms; 0 when both are 0), computed in float64."""
        reference = float_matrix(w).astype(np.float64)
        if reference.shape != self.shape:
            raise ValueError(f"w has shape {reference.shape}, the weight {self.shape}")
        diff = reference - self.dequantize().astype(np.float64)
        norm, diff_norm = float(np.linalg.norm(reference)), float(np.linalg.norm(diff))
        relative = diff_norm / norm if norm else (0.0 if diff_norm == 0 else math.inf)
        return {
            "max_abs": float(np.abs(diff).max()) if diff.size else 0.0,
            "rms": float(np.sqrt(np.mean(diff**2))) if diff.size else 0.0,
            "relative": relative,
        }

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike) -> None:
        """Write the weight to `path`, its codes as they are held (plain, or packed with
        the packing's parameters): a safetensors file when `path` ends in
        ``.safetensors`` (needs the safetensors package), else an ``.npz`` archive written
        to exactly `path` (tilelang.quant.io has the format)."""
        io.write(path, self.arrays())

    def arrays(self) -> dict[str, Any]:
        """The weight as the file format's named arrays (tilelang.quant.io; absent
        optional fields are None, the version is the file's business): what `save`
        writes and `from_arrays` reads back, and what `tilelang.torch.QuantLinear`'s
        state_dict holds."""
        packing = self.packing
        return {
            **_packing_fields(packing),
            "format": self.format,
            "dtype": self.dtype.name,
            "scale_dtype": self.scale_dtype.name,
            "packing": "plain" if packing is None else "dot",
            "shape": np.asarray(self.shape, dtype=np.int64),
            "group_size": np.asarray(self.group_size, dtype=np.int64),
            "codes": self.codes.data,
            "scale_codes": self.scale_codes,
            "zeros": self.zeros,
            "tensor_scale": None if self.tensor_scale is None else np.float32(self.tensor_scale),
            "perm": self.perm,
            "table_codes": self.table_codes,
        }

    @classmethod
    def load(cls, path: str | os.PathLike) -> QuantizedWeight:
        """Read a weight `save` wrote (.npz or safetensors, told apart by the file's
        first bytes); a ValueError names the file and what is wrong."""
        return cls.from_arrays(io.read(path), path)

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any], where: Any = "arrays") -> QuantizedWeight:
        """The weight `arrays()` (or a file, with its ``version``) describes; a ValueError
        names `where` and what is wrong. Strings may be given as str, numbers as ints."""
        arrays = {name: np.asarray(value) for name, value in arrays.items() if value is not None}
        arrays.setdefault("version", np.asarray(io.VERSION, dtype=np.int64))
        path = where
        try:
            missing = [name for name in io.REQUIRED if name not in arrays]
            if missing:
                raise ValueError(f"lacks {', '.join(missing)}")
            shape = arrays["shape"]
            if shape.shape != (2,) or shape.dtype.kind not in "iu":
                raise ValueError(f"'shape' must be two integers, got {shape.tolist()!r}")
            shape = tuple(int(d) for d in shape)
            element = dtypes.dtype(io.text(arrays, "dtype", path))
            packing = _read_packing(arrays, path, element, shape)
            stored = shape if packing is None else packing.packed_shape
            tensor_scale = arrays.get("tensor_scale")
            return cls(
                codes=PackedArray(arrays["codes"], element, stored),
                packing=packing,
                shape=shape,
                scale_codes=arrays["scale_codes"],
                scale_dtype=dtypes.dtype(io.text(arrays, "scale_dtype", path)),
                group_size=io.integer(arrays, "group_size", path),
                format=io.text(arrays, "format", path),
                zeros=arrays.get("zeros"),
                tensor_scale=None if tensor_scale is None else float(tensor_scale),
                perm=arrays.get("perm"),
                table_codes=arrays.get("table_codes"),
            )
        except (ValueError, TypeError) as error:
            message = str(error)
            if message.startswith(f"{path}:"):
                raise
            raise ValueError(f"{path}: {message}") from None


def fixed_table(fmt: Format, scale_dtype: DType) -> np.ndarray:
    """The codes of `fmt`'s fixed table in `scale_dtype` (each value rounded once)."""
    assert fmt.table is not None
    with np.errstate(over="ignore"):
        return scale_dtype.encode(np.asarray(fmt.table, dtype=np.float64))


def _converted_table(fmt: Format, table: np.ndarray, target: DType) -> np.ndarray:
    """A codebook table as codes of `target`: a fixed table rounded once from its exact
    values, a user's from the values held; a ValueError where a value overflows."""
    if fmt.table is not None:
        return fixed_table(fmt, target)
    with np.errstate(over="ignore"):
        codes = target.encode(table.astype(np.float64))
    if not np.isfinite(target.decode(codes)).all():
        raise ValueError(
            f"scale_dtype: the codebook table reaches {np.abs(table).max():g}, beyond the "
            f"largest {target}"
        )
    return codes


def _stored_zeros(zeros: np.ndarray) -> np.ndarray:
    """The zero points as int32: one value broadcast to their shape (no memory) when
    they are all the same (symmetric uN's midpoint, GPTQ sym), else a copy."""
    if zeros.size and bool((zeros == zeros.flat[0]).all()):
        return np.broadcast_to(np.int32(zeros.flat[0]), zeros.shape)
    return zeros.astype(np.int32)


def _check_converted(old: np.ndarray, new: np.ndarray, source: DType, target: DType) -> None:
    """Refuses scales that `target` turns into inf or 0 (`with_scale_dtype`)."""
    for bad, what in (
        (np.isfinite(old) & ~np.isfinite(new), "overflow"),
        ((old != 0) & (new == 0), "round to 0 in"),
    ):
        if bad.any():
            group, column = (int(i) for i in np.argwhere(bad)[0])
            advice = (
                "convert to bf16 instead (f32's range)"
                if target == dtypes.f16
                else "rescale the weights by a power of two"
            )
            raise ValueError(
                f"scale_dtype: {int(bad.sum())} {source} scales {what} {target} (the first: "
                f"{old[group, column]:.6g}, group {group}, column {column}); {advice}"
            )


def _caller_level() -> int:
    """The stacklevel, for a warnings.warn in the function calling this one, of the first
    frame outside tilelang and torch (a model's ``.bfloat16()`` reaches
    `with_scale_dtype` through torch's ``_apply``)."""
    internal = [_PACKAGE]
    torch = sys.modules.get("torch")
    if getattr(torch, "__file__", None):
        internal.append(os.path.dirname(os.path.abspath(torch.__file__)) + os.sep)
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(tuple(internal)):
        frame, level = frame.f_back, level + 1
    return level


def _packing_fields(packing: DotPacking | None) -> dict[str, Any]:
    """The file fields of a packing (tilelang.quant.io, version 2); none for plain codes."""
    if packing is None:
        return {}
    return {
        "packing_tile": np.asarray(packing.tile, dtype=np.int64),
        "packing_m": np.asarray(packing.m, dtype=np.int64),
        "packing_warps": np.asarray(packing.warps, dtype=np.int64),
        "packing_operand": packing.operand.name,
        "packing_acc": packing.acc.name,
    }


def _read_packing(
    arrays: dict[str, np.ndarray], path: Any, element: DType, shape: tuple[int, ...]
) -> DotPacking | None:
    """The packing a file states: None for "plain", the DotPacking for "dot" (version 2)."""
    name = io.text(arrays, "packing", path)
    version = int(arrays["version"])
    known = ("plain",) if version == 1 else ("plain", "dot")
    if name not in known:
        raise ValueError(
            f"unknown packing {name!r} (a version {version} file holds "
            f"{' or '.join(repr(k) for k in known)})"
        )
    if name == "plain":
        return None
    missing = [field for field in io.PACKING_FIELDS if field not in arrays]
    if missing:
        raise ValueError(f"a 'dot' packing needs {', '.join(missing)}")
    tile = arrays["packing_tile"]
    if tile.shape != (2,) or tile.dtype.kind not in "iu":
        raise ValueError(f"'packing_tile' must be two integers, got {tile.tolist()!r}")
    return DotPacking(
        dtype=element,
        shape=(int(shape[0]), int(shape[1])),
        tile=(int(tile[0]), int(tile[1])),
        m=io.integer(arrays, "packing_m", path),
        warps=io.integer(arrays, "packing_warps", path),
        operand=dtypes.dtype(io.text(arrays, "packing_operand", path)),
        acc=dtypes.dtype(io.text(arrays, "packing_acc", path)),
    )


def _other_type(scales: np.ndarray) -> str:
    """What to say about a checkpoint's scales (no float weights to quantize again):
    bf16 keeps f32's exponent range where f16's normal numbers start at 2^-14."""
    small = np.abs(scales[np.isfinite(scales) & (scales != 0)])
    if small.size and small.min() < 2.0**-14:
        return (
            f"; an imported checkpoint's scales as small as {small.min():.3g} lose less "
            f"in bf16 (scale_dtype='bf16'), which keeps f32's exponent range"
        )
    return ""
