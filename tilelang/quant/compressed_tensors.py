"""Importing llm-compressor's "compressed-tensors" checkpoints and FP8 checkpoints (with
DeepSeek-V3's 128 x 128 block scales) bit-exactly: one Linear's tensors in, a
`QuantizedWeight` [K, N] out whose `dequantize()` equals the format's reference formula
element by element.

What was read (the compressed-tensors sources, ``compressors/pack_quantized``,
``compressors/quantized_compressors/naive_quantized.py``, ``quantization/quant_args.py``
and ``quantization/lifecycle/forward.py``; DeepSeek-V3's ``weight_dequant``), in our
words:

* Tensors keep torch's Linear orientation, [N, K] = [out, in]; the result is transposed
  to tilelang's [K, N].
* Integer codes are signed, q in [−2^(b−1), 2^(b−1) − 1]. The reference dequantization
  is ``(q.to(S) − z.to(S)) · s`` in the scale's type S (f16, bf16 or f32): q − z is an
  integer of at most 9 bits, exact in S, so the one rounding is the product's, which is
  `tilelang.quant.arithmetic`'s round_S((q − z) · s). Float codes (float8_e4m3fn) are
  ``q.to(S) · s``, the same with z = 0.
* Strategies (``weights`` is the checkpoint's QuantizationArgs dict, the ``weights`` of
  a ``config_groups`` entry): "tensor" one scale [1]; "channel" one per output row,
  [N, 1]; "group" one per G inputs, [N, K / G] (the format requires G | K); "block"
  one per [bh, bw] tile, [⌈N / bh⌉, ⌈K / bw⌉]. Each becomes tilelang's per-column
  group scales over K: group K for tensor and channel, G, and bw for blocks (a block's
  scale repeated over its bh columns, which is exact: the same number multiplies the
  same weights; a short last group where bw does not divide K). Strategy inference
  follows QuantizationArgs: none given means "group" for group_size > 0, "channel" for
  −1, "tensor" without a group size.
* "pack-quantized" (integer codes of 1..8 bits): ``weight_packed`` int32
  [N, words], each row the codes plus 2^(b−1) (offset binary) as one little-endian
  bit stream, code k at bits [k·b, (k + 1)·b), ⌈K·b / 32⌉ words, the last padded with
  zero bits ("dense": current releases, where a code may straddle two words).
  Releases before that put 32 // b codes in each word, with the word's high
  32 mod b bits unused, ⌈K / (32 // b)⌉ words (``bit_packing="per_word"``); for 1, 2,
  4 and 8 bits the two layouts are the same bits. ``weight_shape`` = [N, K].
  Asymmetric "group" and "channel" zero points are packed the same way along N (dim 0):
  int32 [words(N), groups]; other zero points are plain signed integers (int8). A
  symmetric layer has no zero point (older releases kept an all-zero int8 one, which is
  accepted). ``weight_g_idx`` [K] (act order "group"): the group of each input; all −1
  means "not used" as in the reference.
* "int-quantized" / "naive-quantized" / "float-quantized": ``weight`` holds the codes
  unpacked, int8 (any num_bits ≤ 8, its values in range) or float8_e4m3fn (num_bits 8),
  with ``weight_scale`` and, asymmetric, ``weight_zero_point``. Block-quantized weights
  may be stored padded to whole blocks, with ``weight_shape_original`` [N, K]; the
  padding is cropped.
* FP8 checkpoints of DeepSeek-V3's kind (HF quant_method "fp8"): ``weight``
  float8_e4m3fn [N, K] and ``weight_scale_inv`` f32 [⌈N / 128⌉, ⌈K / 128⌉], which,
  despite the name, multiplies: w = q · s in f32. Without `weights`, such tensors are
  read as "block" [128, 128]; pass ``{"type": "float", "strategy": "block",
  "block_structure": [bh, bw]}`` for other weight_block_size values.

Results. Symmetric integer codes become iN codes without zero points (w = q · s);
asymmetric ones uN codes q + 2^(b−1) with zero points z + 2^(b−1) (the same q − z);
FP8 f8e4m3 codes. The format name is "scaled" (`tilelang.quant.formats` has no
compressed-tensors entry); the scales keep the checkpoint's type (f32 scales serve
`dequantize()`; `QuantizedWeight.with_scale_dtype` makes the kernels' f16 or bf16).

Activation quantization (``input_scale``, ``input_zero_point``, ``output_scale`` and
the like, of W8A8 checkpoints) is accepted and ignored with an
`ActivationQuantizationWarning`: `tilelang.quant` is weight-only, and the weights are
complete and exact without them, so refusing would only keep users from running such a
checkpoint; but x is then not quantized, so the outputs are the weight-only product,
which differs from a W8A8 engine's by its activation rounding, and the warning says so.
NVFP4 ("nvfp4-pack-quantized", ``weight_global_scale``) and "tensor_group" are refused.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.runtime.gpu import is_torch_tensor

from .arrays import float_codes, int_array
from .checkpoints import act_order
from .weight import QuantizedWeight, _caller_level

FORMATS = ("pack-quantized", "int-quantized", "naive-quantized", "float-quantized")
STRATEGIES = ("tensor", "channel", "group", "block")
BIT_PACKINGS = ("dense", "per_word")
#: QuantizationArgs' fields (it forbids others); those not read here only describe
#: calibration (observer, actorder) or repeat what the tensors' dtypes say.
ARGS = (
    "num_bits",
    "type",
    "symmetric",
    "group_size",
    "strategy",
    "block_structure",
    "dynamic",
    "actorder",
    "scale_dtype",
    "zp_dtype",
    "observer",
    "observer_kwargs",
)
#: The tensors a Linear's entry may hold besides the weight's (the layer's bias).
_IGNORED = ("bias",)
_WEIGHT_KEYS = {
    "pack-quantized": ("weight_packed", "weight_shape", "weight_scale", "weight_zero_point"),
    "unpacked": ("weight", "weight_shape_original", "weight_scale", "weight_zero_point"),
}
_DEEPSEEK = {"type": "float", "num_bits": 8, "strategy": "block", "block_structure": [128, 128]}


class ActivationQuantizationWarning(UserWarning):
    """A checkpoint's activation-quantization tensors (``names``) were ignored: the
    layer computes the weight-only product (`tilelang.quant.compressed_tensors`)."""

    def __init__(self, message: str, names: tuple[str, ...]):
        super().__init__(message)
        self.names = names


# ------------------------------------------------------------------ the arguments


def _args(
    weights: Mapping[str, Any] | None, tensors: Mapping[str, Any], fmt: str
) -> dict[str, Any]:
    """The QuantizationArgs fields that matter, with the library's defaults (type "float"
    for the "float-quantized" format) and its strategy inference; a ValueError names a
    field that is not one of its fields."""
    if weights is None:
        weights = _DEEPSEEK if "weight_scale_inv" in tensors else {}
    if not isinstance(weights, Mapping):
        raise TypeError(
            f"weights: expected the QuantizationArgs dict of the layer's config group "
            f"(num_bits, type, symmetric, strategy, ...), got {type(weights).__name__}"
        )
    unknown = sorted(set(weights) - set(ARGS))
    if unknown:
        raise ValueError(
            f"weights: unknown field {unknown[0]!r}; QuantizationArgs has {', '.join(ARGS)}"
        )
    kind = "float" if fmt == "float-quantized" else "int"
    args = {"num_bits": 8, "type": kind, "symmetric": True, "dynamic": False, **weights}
    args["type"] = str(args["type"]).lower()
    if fmt in ("float-quantized", "int-quantized") and args["type"] != fmt[:-10]:
        raise ValueError(
            f"weights: type {args['type']!r} does not match format {fmt!r} (whose codes "
            f"are {fmt[:-10]}s)"
        )
    if args["dynamic"] not in (False, None):
        raise ValueError(
            f"weights: dynamic must be False for weights (their scales are stored), got "
            f"{args['dynamic']!r}"
        )
    args["strategy"] = _strategy(args.get("strategy"), args.get("group_size"))
    args["block"] = _block(args.get("block_structure"), args["strategy"])
    return args


def _strategy(strategy: Any, group_size: Any) -> str:
    if strategy is None:
        if group_size is None:
            return "tensor"
        strategy = "channel" if group_size == -1 else "group"
    strategy = str(strategy).lower()
    if strategy not in STRATEGIES:
        raise ValueError(
            f"weights: strategy must be one of {', '.join(STRATEGIES)} for a weight-only "
            f"import, got {strategy!r}"
            + (" (NVFP4's, not supported here)" if strategy == "tensor_group" else "")
        )
    if strategy == "group" and (
        isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1
    ):
        raise ValueError(
            f"weights: strategy 'group' needs a positive group_size, got {group_size!r}"
        )
    return strategy


def _block(structure: Any, strategy: str) -> tuple[int, int] | None:
    if strategy != "block":
        return None
    # QuantizationArgs still reads the older "128x128" form.
    parts = structure.split("x") if isinstance(structure, str) else structure
    try:
        rows, cols = (int(v) for v in parts)
    except (TypeError, ValueError):
        rows = cols = 0
    if rows < 1 or cols < 1:
        raise ValueError(
            f"weights: strategy 'block' needs block_structure [rows, cols] of positive "
            f"ints, got {structure!r}"
        )
    return rows, cols


def _format(format: str | None, tensors: Mapping[str, Any]) -> str:
    if format is None:
        return "pack-quantized" if "weight_packed" in tensors else "naive-quantized"
    if format not in FORMATS:
        hint = " (NVFP4: not supported here)" if "nvfp4" in str(format) else ""
        raise ValueError(
            f"format: expected one of {', '.join(FORMATS)} (quantization_config's "
            f"format), got {format!r}{hint}"
        )
    return format


def _check_names(tensors: Mapping[str, Any], fmt: str) -> None:
    """Warns about activation tensors; refuses names this format does not have."""
    known = _WEIGHT_KEYS["pack-quantized" if fmt == "pack-quantized" else "unpacked"]
    known = (*known, "weight_g_idx", "weight_scale_inv", *_IGNORED)
    activation = tuple(n for n in tensors if n.startswith(("input_", "output_")))
    if activation:
        warnings.warn(
            ActivationQuantizationWarning(
                f"ignored {', '.join(activation)}: tilelang.quant is weight-only, so x is "
                f"not quantized and the layer computes x @ W with W exact; a W8A8 engine's "
                f"outputs differ by its rounding of the activations",
                activation,
            ),
            stacklevel=_caller_level(),
        )
    for name in tensors:
        if name not in known and name not in activation:
            hint = " (NVFP4's global scale: not supported)" if "global_scale" in name else ""
            raise ValueError(
                f"tensors: unexpected {name!r} for a {fmt} layer{hint}; expected "
                f"{', '.join(known)} and activation tensors (input_*, output_*)"
            )


# ------------------------------------------------------------------ unpacking


def _words_per_row(count: int, bits: int, bit_packing: str) -> int:
    if bit_packing == "dense":
        return -(-count * bits // 32)
    return -(-count // (32 // bits))


def unpack_rows(words: np.ndarray, bits: int, count: int, bit_packing: str) -> np.ndarray:
    """[R, W] uint32 words -> [R, count] unsigned b-bit fields, each row read as
    compressed-tensors packs it (module docstring)."""
    rows = words.shape[0]
    if bit_packing == "per_word" or 32 % bits == 0:
        per = 32 // bits  # whole codes in each word; "dense" is this when b divides 32
        fields = np.empty((rows, words.shape[1], per), np.uint8)
        for i in range(per):
            fields[:, :, i] = (words >> np.uint32(bits * i)) & np.uint32((1 << bits) - 1)
        return fields.reshape(rows, -1)[:, :count]
    # Dense, b not dividing 32: every b words hold 32 codes, so pad each row to whole
    # runs of b words and read the rows' streams as one.
    padded = np.zeros((rows, -(-words.shape[1] // bits) * bits), np.uint32)
    padded[:, : words.shape[1]] = words
    stream = padded.astype("<u4").view(np.uint8).ravel()
    per_row = padded.shape[1] * 32 // bits
    return dtypes.unpack_bits(stream, bits, rows * per_row).reshape(rows, per_row)[:, :count]


def _packed(x: Any, what: str, bits: int, rows: int, count: int, bit_packing: str) -> np.ndarray:
    """An int32 tensor [rows, words] packed along its last dim -> [rows, count] fields."""
    array = int_array(x, what, 2)
    if array.dtype.itemsize != 4:
        raise TypeError(f"{what} must be int32 words, got {array.dtype}")
    expected = (rows, _words_per_row(count, bits, bit_packing))
    if array.shape != expected:
        other = BIT_PACKINGS[bit_packing == "dense"]
        hint = (
            f"; that is the shape of bit_packing={other!r}"
            if array.shape == (rows, _words_per_row(count, bits, other))
            else ""
        )
        raise ValueError(
            f"{what} must be int32 {list(expected)} ({count} {bits}-bit codes per row, "
            f"bit_packing={bit_packing!r}), got shape {list(array.shape)}{hint}"
        )
    words = np.ascontiguousarray(array).view(np.uint32)
    return unpack_rows(words, bits, count, bit_packing)


def _shape(x: Any, what: str) -> tuple[int, int]:
    shape = int_array(x, what, 1)
    if shape.shape != (2,) or (shape < 1).any():
        raise ValueError(f"{what} must be [N, K] (out, in), got {shape.tolist()}")
    return int(shape[0]), int(shape[1])


def _itemsize(x: Any) -> int:
    return x.element_size() if is_torch_tensor(x) else np.asarray(x).dtype.itemsize


def _fp8_codes(x: Any, what: str) -> np.ndarray:
    """float8_e4m3fn [N, K] (a torch tensor or an ml_dtypes array) -> its uint8 codes."""
    if is_torch_tensor(x):
        import torch  # a tensor was handed over, so torch is there

        if x.dtype != torch.float8_e4m3fn:
            raise TypeError(f"{what} must be float8_e4m3fn codes, got {x.dtype}")
        return x.detach().cpu().view(torch.uint8).numpy()
    array = np.asarray(x)
    if array.dtype.name != "float8_e4m3fn":
        raise TypeError(f"{what} must be float8_e4m3fn codes, got {array.dtype}")
    return array.view(np.uint8)


# ------------------------------------------------------------------ scales, zero points


def _tile(args: dict[str, Any], n: int, k: int) -> tuple[int, int]:
    """(bh, bw): the [N, K] tile one scale covers."""
    strategy = args["strategy"]
    if strategy == "tensor":
        return n, k
    if strategy == "channel":
        return 1, k
    if strategy == "group":
        g = args["group_size"]
        if k % g:
            raise ValueError(
                f"weights: group_size {g} must divide K = {k} (the format's groups are "
                f"whole, as its quantize checks)"
            )
        return 1, g
    return args["block"]


def _per_column(values: np.ndarray, bh: int, n: int) -> np.ndarray:
    """[⌈N / bh⌉, groups] -> [groups, N]: each output row n takes its tile row n // bh."""
    return np.ascontiguousarray(values.T[:, np.arange(n) // bh])


def _grid(x: Any, what: str, grid: tuple[int, int], tile: tuple[int, int]) -> Any:
    """A scale or zero-point tensor as [⌈N / bh⌉, groups]: per-tensor ones may be stored
    as a scalar, [1] or [1, 1]."""
    shape = tuple(x.shape)
    if grid == (1, 1) and shape in ((), (1,), (1, 1)):
        return x.reshape(1, 1)
    if shape != grid:
        raise ValueError(
            f"{what} must have shape {list(grid)} (one per [{tile[0]}, {tile[1]}] tile of "
            f"the [N, K] weight), got {list(shape)}"
        )
    return x


def _scales(
    x: Any, what: str, grid: tuple[int, int], tile: tuple[int, int], n: int
) -> tuple[np.ndarray, DType]:
    if not hasattr(x, "shape"):
        raise TypeError(f"{what} must be a tensor or array, got {type(x).__name__}")
    codes, scale_dtype = float_codes(_grid(x, what, grid, tile), what)
    return _per_column(codes, tile[0], n), scale_dtype


def _zero_points(
    tensors: Mapping[str, Any],
    args: dict[str, Any],
    fmt: str,
    grid: tuple[int, int],
    tile: tuple[int, int],
    n: int,
    bit_packing: str,
) -> np.ndarray | None:
    """Signed zero points [groups, N], or None (symmetric, or all zero)."""
    zp = tensors.get("weight_zero_point")
    bits, sym = args["num_bits"], bool(args["symmetric"])
    if zp is None:
        if not sym:
            raise ValueError(
                "tensors: weight_zero_point is required for an asymmetric layer "
                "(weights symmetric=False), got none"
            )
        return None
    if args["type"] == "float":
        raise ValueError("weight_zero_point: float codes take no zero point (FP8 is symmetric)")
    # Packed along N as the format packs them (int32 words); older releases and the
    # other strategies keep plain signed integers (int8).
    packed = (
        fmt == "pack-quantized" and args["strategy"] in ("group", "channel") and _itemsize(zp) == 4
    )
    if packed:  # along N: [words(N), groups] -> rows of groups
        t = int_array(zp, "weight_zero_point", 2).T
        fields = _packed(t, "weight_zero_point (transposed)", bits, grid[1], n, bit_packing)
        values = fields.astype(np.int32).T - (1 << (bits - 1))
    else:
        values = int_array(_grid(zp, "weight_zero_point", grid, tile), "weight_zero_point", 2)
        values = values.astype(np.int32)
    zeros = _per_column(values, tile[0], n)
    if sym and zeros.any():
        raise ValueError(
            f"weights: symmetric=True, but weight_zero_point holds {int(zeros[zeros != 0][0])}"
            f" (a symmetric layer's is 0): pass symmetric=False"
        )
    return None if sym else zeros


# ------------------------------------------------------------------ the import


def _codes(
    tensors: Mapping[str, Any], args: dict[str, Any], fmt: str, bit_packing: str
) -> tuple[np.ndarray, DType, int, int]:
    """The codes [N, K] (signed values for integers, uint8 codes for FP8), their type,
    N and K."""
    bits = args["num_bits"]
    if fmt == "pack-quantized":
        for name in ("weight_packed", "weight_shape"):
            if name not in tensors:
                raise ValueError(f"tensors: a pack-quantized layer needs {name}, got none")
        n, k = _shape(tensors["weight_shape"], "weight_shape")
        fields = _packed(tensors["weight_packed"], "weight_packed", bits, n, k, bit_packing)
        return fields.astype(np.int16) - (1 << (bits - 1)), dtypes.int_type(bits, True), n, k
    if "weight" not in tensors:
        raise ValueError(f"tensors: a {fmt} layer needs weight, got none")
    if args["type"] == "float":
        codes = _fp8_codes(tensors["weight"], "weight")
        element = dtypes.f8e4m3
    elif "float8" in str(getattr(tensors["weight"], "dtype", "")):
        raise ValueError(
            f"weight holds float8 codes, but weights type is {args['type']!r}: pass type "
            f"'float' (format 'float-quantized')"
        )
    else:
        codes = int_array(tensors["weight"], "weight", 2).astype(np.int16)
        element = dtypes.int_type(bits, True)
        if codes.size and (codes.min() < element.min or codes.max() > element.max):
            raise ValueError(
                f"weight: {bits}-bit codes lie in [{element.min}, {element.max}], got "
                f"{codes.min()}..{codes.max()}"
            )
    if codes.ndim != 2:
        raise ValueError(f"weight must be [N, K], got shape {list(codes.shape)}")
    n, k = codes.shape
    if "weight_shape_original" in tensors:  # block-padded: crop to the real weight
        n, k = _shape(tensors["weight_shape_original"], "weight_shape_original")
        if n > codes.shape[0] or k > codes.shape[1]:
            raise ValueError(
                f"weight_shape_original {[n, k]} exceeds the weight's shape {list(codes.shape)}"
            )
        codes = codes[:n, :k]
    return codes, element, n, k


def _check_type(args: dict[str, Any], fmt: str) -> None:
    kind, bits = args["type"], args["num_bits"]
    if kind not in ("int", "float"):
        raise ValueError(f"weights: type must be 'int' or 'float', got {kind!r}")
    if kind == "float" and (bits != 8 or fmt == "pack-quantized"):
        raise ValueError(
            f"weights: float weights are float8_e4m3fn (num_bits 8, an unpacked 'weight'); "
            f"got num_bits {bits} in {fmt} (4-bit floats are NVFP4: not supported here)"
        )
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"weights: num_bits must be 1..8 for integer codes, got {bits!r}")


def from_compressed_tensors(
    tensors: Mapping[str, Any],
    weights: Mapping[str, Any] | None = None,
    format: str | None = None,
    *,
    bit_packing: str = "dense",
) -> QuantizedWeight:
    """One Linear layer of a compressed-tensors (or DeepSeek-style FP8) checkpoint as a
    `QuantizedWeight` [K, N] (module docstring: the layouts and formula read).

    `tensors`: the layer's tensors by their names without the module prefix
    (``weight_packed``, ``weight_scale``, ...; numpy arrays or torch tensors).
    `weights`: the QuantizationArgs dict of the layer's config group; None reads
    ``weight_scale_inv`` tensors as FP8 128 x 128 blocks, else the library's defaults.
    `format`: quantization_config's format (None: "pack-quantized" when there is a
    ``weight_packed``, else the unpacked formats, which read alike). `bit_packing`:
    "dense" (current compressed-tensors) or "per_word" (releases before it; the
    same bits for 1, 2, 4 and 8-bit codes)."""
    if not isinstance(tensors, Mapping):
        raise TypeError(f"tensors: expected a mapping of names to tensors, got {type(tensors)}")
    if bit_packing not in BIT_PACKINGS:
        raise ValueError(f"bit_packing: expected 'dense' or 'per_word', got {bit_packing!r}")
    fmt = _format(format, tensors)
    args = _args(weights, tensors, fmt)
    _check_type(args, fmt)
    _check_names(tensors, fmt)
    codes, element, n, k = _codes(tensors, args, fmt, bit_packing)
    tile = _tile(args, n, k)
    grid = (-(-n // tile[0]), -(-k // tile[1]))
    scale_name = "weight_scale_inv" if "weight_scale_inv" in tensors else "weight_scale"
    if scale_name not in tensors:
        raise ValueError("tensors: weight_scale is required, got none")
    scale_codes, scale_dtype = _scales(tensors[scale_name], scale_name, grid, tile, n)
    zeros = _zero_points(tensors, args, fmt, grid, tile, n, bit_packing)
    group, perm = _groups(tensors.get("weight_g_idx"), args, k, tile[1], grid[1])
    values = codes.T
    if perm is not None:
        values = values[perm]
    if zeros is not None:  # offset binary: q − z unchanged
        offset = 1 << (args["num_bits"] - 1)
        element, values, zeros = (
            dtypes.int_type(args["num_bits"], False),
            values + offset,
            zeros + offset,
        )
    # Signed values as their two's-complement b-bit codes (FP8 codes pass unchanged).
    codes = np.ascontiguousarray(values).astype(np.int64) & element.code_mask
    return QuantizedWeight(
        codes=dtypes.pack_codes(codes, element),
        scale_codes=scale_codes,
        scale_dtype=scale_dtype,
        group_size=group,
        zeros=zeros,
        perm=perm,
        shape=(k, n),
    )


def _groups(
    g_idx: Any, args: dict[str, Any], k: int, bw: int, groups: int
) -> tuple[int, np.ndarray | None]:
    """(group size, act-order permutation or None); a g_idx holding −1 (its initial
    value) means column order, as in the reference."""
    if g_idx is not None:
        g = int_array(g_idx, "weight_g_idx", 1)
        if g.size and (g == -1).any():
            g_idx = None
    if g_idx is None:
        return bw, None
    if args["strategy"] != "group":
        raise ValueError(
            f"weight_g_idx: act order needs strategy 'group', got {args['strategy']!r}"
        )
    group, perm = act_order(g_idx, k, groups)
    if group != bw:
        raise ValueError(f"weight_g_idx puts {group} rows in group 0, but group_size is {bw}")
    return group, perm
