"""`QuantLinear`: a drop-in `torch.nn.Module` for `nn.Linear` with a `tilelang.quant`
weight, and the operator it calls, ``tilelang::quant_linear``.

y = x @ W + bias for x [..., K] (float16 or bfloat16; on the CPU through the LLVM
backend, on CUDA through `tilelang.quant.matmul`'s GPU path), W the quantized
[K, N] weight (`QuantizedWeight`: `nn.Linear.weight` transposed). The arithmetic is
`tilelang.quant.matmul`'s: W's values exactly as `QuantizedWeight.dequantize()` gives
them, f32 accumulation, one rounding to x's dtype.

The module's buffers are its weight, all of it, and all tensors: ``codes`` (uint8, the
packed code bytes), ``scale_codes`` (the scales' bit patterns as the signed integer of
their width), ``zeros`` (int32) and ``perm`` (int64) when the weight has them (the
arrays of `QuantizedWeight.arrays()`), ``meta`` (uint8: the UTF-8 JSON of the other
fields: format, dtypes, shape, group size, packing, tensor scale, and ``version``, the
`tilelang.quant.io` version of those fields) and ``bias``. So the state_dict is plain
tensors: `load_state_dict`, `torch.save`/`torch.load` (weights_only too) and
`safetensors.torch.save_file`/`load_file` round-trip a model, and a state_dict saved
with another weight's shapes (group size, packing, dtype) loads into any QuantLinear.
A state_dict of the first form (tilelang before ``meta``: the same fields as a dict
``_extra_state``) still loads.

The weight is not a torch tensor the kernels read as it is (its codes are packed for
them once), so the operator finds the `QuantizedWeight` by a handle: an int, each
module's own (a copy or an unpickled module takes a new one), naming an entry of a
process-wide table (dropped when the module is collected). The operator also takes the
weight's buffers, and the entry records which tensors (address, version counter, shape,
dtype, device) its weight was built from: when they are not the ones given (loaded,
moved, modified in place) the weight is rebuilt from them, so a module never computes
with a weight its buffers do not hold. torch.compile sees the handle as a constant of
the module and the buffers as inputs; the fake implementation reads N from the scales'
shape; the graph has no break.

Scale dtype. The kernels multiply by f16 or bf16 scales, the activations' type. A layer
made by `from_linear` has the linear's (bf16 for a bf16 linear, else f16); ``.half()``,
``.bfloat16()`` and ``.to(dtype)`` to f16 or bf16 re-encode the scales of integer and
ExMy weights (`QuantizedWeight.with_scale_dtype`: exact where the type holds them, else
rounded to nearest even with a `tilelang.quant.ScaleRoundingWarning` giving the error);
``.float()`` leaves them. MX and NVFP4 scales serve both types as they are.
"""

from __future__ import annotations

import itertools
import json
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tilelang import dtypes, quant
from tilelang.quant import QuantizedWeight, io
from tilelang.quant.formats import get_format

#: The weight's arrays (`QuantizedWeight.arrays()`) a QuantLinear keeps as buffers.
WEIGHT_BUFFERS = ("codes", "scale_codes", "zeros", "perm")
#: The buffer of the weight's other fields (module docstring).
META = "meta"
_OPTIONAL_BUFFERS = ("zeros", "perm", "bias")
_LOADED = "QuantLinear state_dict"
_TORCH_TYPES = {torch.float16: dtypes.f16, torch.bfloat16: dtypes.bf16}


@dataclass(frozen=True)
class _Entry:
    """A module's weight and what identifies the tensors it was built from."""

    key: tuple
    weight: QuantizedWeight


_WEIGHTS: dict[int, _Entry] = {}
_HANDLES = itertools.count(1)


def _new_handle(module: nn.Module) -> int:
    handle = next(_HANDLES)
    weakref.finalize(module, _WEIGHTS.pop, handle, None)
    return handle


def _version(tensor: torch.Tensor) -> int | None:
    try:
        return tensor._version
    except RuntimeError:  # an inference tensor has no version counter
        return None


def _fingerprint(tensors: tuple) -> tuple:
    return tuple(
        None if t is None else (t.data_ptr(), _version(t), t.dtype, t.shape, t.device)
        for t in tensors
    )


def _weight(handle: int, tensors: tuple, where: str = "QuantLinear buffers") -> QuantizedWeight:
    """The weight registered under `handle` if it was built from `tensors` (the weight
    buffers and ``meta``, as they are now), else the weight rebuilt from them."""
    key = _fingerprint(tensors)
    entry = _WEIGHTS.get(handle)
    if entry is None or entry.key != key:
        entry = _Entry(key, _from_tensors(tensors, where))
        _WEIGHTS[handle] = entry
    return entry.weight


def _meta_tensor(weight: QuantizedWeight) -> torch.Tensor:
    """The weight's fields besides its arrays, as the uint8 bytes of their JSON."""
    fields: dict[str, Any] = {
        name: np.asarray(value).tolist()
        for name, value in weight.arrays().items()
        if name not in WEIGHT_BUFFERS and value is not None
    }
    fields["version"] = io.VERSION
    text = json.dumps(fields, sort_keys=True).encode()
    return torch.frombuffer(bytearray(text), dtype=torch.uint8)


def _meta_fields(meta: Any, where: str) -> dict[str, Any]:
    if not isinstance(meta, torch.Tensor) or meta.dtype != torch.uint8 or meta.dim() != 1:
        raise ValueError(
            f"{where}: {META} must be a 1-D uint8 tensor (the JSON of the weight's fields), "
            f"got {getattr(meta, 'dtype', type(meta).__name__)}"
        )
    try:
        fields = json.loads(meta.detach().cpu().numpy().tobytes().decode())
    except (UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{where}: {META} is not the JSON of a weight's fields: {error}") from None
    if not isinstance(fields, dict):
        raise ValueError(f"{where}: {META} must hold a JSON object, got {type(fields).__name__}")
    return _known_version(fields, where)


def _known_version(fields: dict[str, Any], where: str) -> dict[str, Any]:
    version = fields.get("version")
    if isinstance(version, bool) or version not in io.READS:
        raise ValueError(
            f"{where}: the weight's fields are version {version!r}; this tilelang reads "
            f"versions {', '.join(map(str, io.READS))} (a newer one needs a newer tilelang)"
        )
    return fields


def _from_tensors(tensors: tuple, where: str) -> QuantizedWeight:
    """The weight the buffers (`WEIGHT_BUFFERS` and ``meta``, in that order) hold."""
    *arrays_of, meta = tensors
    if meta is None:
        raise ValueError(f"{where}: no {META} buffer (the weight's fields)")
    arrays = _meta_fields(meta, where)
    for name, tensor in zip(WEIGHT_BUFFERS, arrays_of, strict=True):
        if tensor is not None:
            value = tensor.detach().cpu().contiguous().numpy()
            if name == "scale_codes":
                value = value.view(f"u{value.dtype.itemsize}")
            arrays[name] = value
    return QuantizedWeight.from_arrays(arrays, where)


def _check_x(x: torch.Tensor) -> None:
    if x.dtype not in _TORCH_TYPES:
        raise TypeError(
            f"QuantLinear: x must be float16 or bfloat16 (the quantized kernels' operand "
            f"types), got {x.dtype}; call .half() or .bfloat16() on the input"
        )


def _check_weight(x: torch.Tensor, qw: QuantizedWeight) -> None:
    k = qw.shape[0]
    if x.dim() == 0 or x.shape[-1] != k:
        raise ValueError(
            f"QuantLinear: x must have shape [..., {k}] (in_features), got {list(x.shape)}"
        )
    ot = _TORCH_TYPES[x.dtype]
    if get_format(qw.format).kind == "scaled" and qw.scale_dtype != ot:
        fix = "on the layer converts its scales" + (
            "" if qw.scale_dtype not in _TORCH_TYPES.values() else f"; or pass {qw.scale_dtype} x"
        )
        raise TypeError(
            f"QuantLinear: x is {x.dtype}, so the kernels multiply by {ot} scales, but the "
            f"layer's scales are {qw.scale_dtype}: .to({x.dtype}) {fix}"
        )


def _check_bias(bias: torch.Tensor | None, x: torch.Tensor, n: int) -> None:
    if bias is not None and (bias.dtype != x.dtype or tuple(bias.shape) != (n,)):
        raise ValueError(
            f"QuantLinear: bias must be [{n}] of x's dtype {x.dtype}, got "
            f"{bias.dtype} {list(bias.shape)}"
        )


def _forward(x: torch.Tensor, handle: int, weight: tuple, bias: torch.Tensor | None):
    """`quant.matmul` on the tensors, on the CPU (as zero-copy numpy views:
    `runtime.host_calls`) and on CUDA alike."""
    _check_x(x)
    qw = _weight(handle, weight)
    _check_weight(x, qw)
    n = qw.shape[1]
    _check_bias(bias, x, n)
    out = torch.empty((*x.shape[:-1], n), dtype=x.dtype, device=x.device)
    bias = None if bias is None else bias.detach().contiguous()
    return quant.matmul(x.detach().contiguous(), qw, bias=bias, out=out)


@torch.library.custom_op("tilelang::quant_linear", mutates_args=(), device_types="cpu")
def quant_linear(
    x: torch.Tensor,
    handle: int,
    codes: torch.Tensor,
    scale_codes: torch.Tensor,
    zeros: torch.Tensor | None,
    perm: torch.Tensor | None,
    meta: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """y = x @ W (+ bias), W the weight the buffers hold (registered under `handle`)."""
    return _forward(x, handle, (codes, scale_codes, zeros, perm, meta), bias)


@quant_linear.register_kernel("cuda")
def _quant_linear_cuda(x, handle, codes, scale_codes, zeros, perm, meta, bias) -> torch.Tensor:
    return _forward(x, handle, (codes, scale_codes, zeros, perm, meta), bias)


@quant_linear.register_fake
def _quant_linear_fake(x, handle, codes, scale_codes, zeros, perm, meta, bias) -> torch.Tensor:
    _check_x(x)
    n = scale_codes.shape[-1]  # scale_codes is [K / G, N] whatever the packing
    _check_bias(bias, x, n)
    return x.new_empty((*x.shape[:-1], n))


class QuantLinear(nn.Module):
    """`nn.Linear` with a quantized weight: in_features K, out_features N."""

    def __init__(self, weight: QuantizedWeight, bias: Any = None) -> None:
        super().__init__()
        if not isinstance(weight, QuantizedWeight):
            raise TypeError(
                f"weight: expected a tilelang.quant.QuantizedWeight, got {type(weight).__name__}"
            )
        self.handle = _new_handle(self)
        self._adopt(weight)
        if bias is not None:
            bias = torch.as_tensor(bias).detach().clone()
            if tuple(bias.shape) != (self.out_features,):
                raise ValueError(
                    f"bias: expected shape [{self.out_features}] (out_features), got "
                    f"{list(bias.shape)}"
                )
        self.register_buffer("bias", bias)

    @property
    def qweight(self) -> QuantizedWeight:
        """The `QuantizedWeight` the buffers hold (rebuilt from them, once, after they
        changed: module docstring)."""
        return _weight(self.handle, self._weight_tensors())

    def _weight_tensors(self) -> tuple:
        return tuple(self._buffers.get(name) for name in (*WEIGHT_BUFFERS, META))

    def _adopt(self, weight: QuantizedWeight) -> None:
        """`weight` becomes the module's: its arrays the buffers (sharing their memory
        where numpy lends it writeable), on the device the buffers were on."""
        old = self._buffers.get("codes")
        device = None if old is None else old.device
        arrays = weight.arrays()
        tensors = {META: _meta_tensor(weight)}
        for name in WEIGHT_BUFFERS:
            value = arrays[name]
            if name == "scale_codes":
                value = value.view(f"i{value.dtype.itemsize}")
            tensors[name] = None if value is None else _shared(value)
        for name, tensor in tensors.items():
            if tensor is not None and device is not None:
                tensor = tensor.to(device)
            self.register_buffer(name, tensor)
        self._register(weight)

    def _register(self, weight: QuantizedWeight) -> None:
        _WEIGHTS[self.handle] = _Entry(_fingerprint(self._weight_tensors()), weight)
        self.in_features, self.out_features = weight.shape

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A copy (copy.copy, deepcopy) or an unpickled module: a handle of its own,
        and buffers of its own (shared tensors after copy.copy, as torch's modules do)."""
        super().__setstate__(state)
        self.__dict__["_buffers"] = dict(self._buffers)
        pickled = self.__dict__.pop("qweight", None)  # a module of the first form
        source = _WEIGHTS.get(state.get("handle"))
        self.handle = _new_handle(self)
        if META not in self._buffers and isinstance(pickled, QuantizedWeight):
            self._adopt(pickled)
        elif source is not None and source.key == _fingerprint(self._weight_tensors()):
            _WEIGHTS[self.handle] = source  # copy.copy: the same tensors, the same weight

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
    ) -> None:
        # torch hands each module a dict of its own to modify. A state_dict of the first
        # form holds the fields as a dict, "_extra_state": made a meta tensor here.
        old = state_dict.pop(prefix + "_extra_state", None)
        if old is not None:
            if not isinstance(old, Mapping):
                raise TypeError(
                    f"{_LOADED}: {prefix}_extra_state (tilelang's first state_dict form) must "
                    f"be a dict of the weight's fields, got {type(old).__name__}"
                )
            fields = _known_version({"version": 1, **old}, _LOADED)
            text = json.dumps(fields, sort_keys=True).encode()
            state_dict[prefix + META] = torch.frombuffer(bytearray(text), dtype=torch.uint8)
        # The saved weight may have other shapes than this module's (another group size,
        # packing or dtype), and optional arrays this one lacks: each buffer is made to
        # the saved one's shape and dtype first, then filled by the usual copy.
        loading = prefix + META in state_dict
        if loading:
            for name in (*WEIGHT_BUFFERS, META, "bias"):
                given = state_dict.get(prefix + name)
                if isinstance(given, torch.Tensor):
                    now = self._buffers.get(name)
                    device = given.device if now is None else now.device
                    self._buffers[name] = torch.empty_like(given, device=device)
                elif given is None and name in _OPTIONAL_BUFFERS:
                    self._buffers[name] = None
        failed = len(errors)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
        )
        if loading and len(errors) == failed:  # the weight checked now, not at a call
            self._register(_from_tensors(self._weight_tensors(), _LOADED))

    def _apply(self, fn, recurse: bool = True):
        # `.half()`, `.bfloat16()`, `.to(dtype)` convert float tensors: the scales follow
        # (module docstring). What `fn` makes of an f32 tensor says what it does.
        target = _TORCH_TYPES.get(fn(torch.empty(0, dtype=torch.float32)).dtype)
        converted = None
        if target is not None:
            weight = self.qweight
            if get_format(weight.format).kind == "scaled" and weight.scale_dtype != target:
                converted = weight.with_scale_dtype(target)
        super()._apply(fn, recurse)
        if converted is not None:
            self._adopt(converted)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return quant_linear(
            x, self.handle, self.codes, self.scale_codes, self.zeros, self.perm, self.meta, bias
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, weight={self.qweight!r}"
        )

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        dtype: Any = None,
        group_size: int | None = None,
        *,
        zero_point: bool = False,
        scale_dtype: Any = None,
        format: str | None = None,
    ) -> QuantLinear:
        """`linear` with its weight quantized by `tilelang.quant.quantize` (the same
        arguments and defaults: `dtype` such as "u4", "i4", "f4e2m1", `group_size` 128
        or the format's block, ...), except `scale_dtype`, which defaults to the
        linear's type: bf16 for a bf16 linear, else f16 (MX and NVFP4 fix theirs)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected a torch.nn.Linear, got {type(linear).__name__}")
        if scale_dtype is None and get_format(format or "scaled").kind == "scaled":
            scale_dtype = dtypes.bf16 if linear.weight.dtype == torch.bfloat16 else dtypes.f16
        w = linear.weight.detach().to("cpu", torch.float64).numpy().T  # [K, N]
        qw = quant.quantize(
            w,
            dtype,
            group_size=group_size,
            zero_point=zero_point,
            scale_dtype=scale_dtype,
            format=format,
        )
        return cls(qw, linear.bias)

    @classmethod
    def from_gptq_state_dict(
        cls,
        state_dict: Mapping[str, Any],
        prefix: str,
        bits: int = 4,
        sym: bool = True,
        *,
        scale_dtype: Any = None,
    ) -> QuantLinear:
        """The layer `prefix` ("model.layers.0.mlp.up_proj") of a GPTQ checkpoint: its
        qweight, qzeros, scales, and g_idx and bias when present. `scale_dtype` ("f16"
        or "bf16"): the layer's; None keeps f16 and bf16 scales and makes f32 ones f16
        (`QuantizedWeight.with_scale_dtype`: exact where f16 holds them, else a
        `ScaleRoundingWarning` with the error)."""
        keys = _keys(state_dict, prefix, ("qweight", "scales"))
        qw = quant.from_gptq(
            state_dict[keys["qweight"]],
            state_dict.get(keys["qzeros"]),
            state_dict[keys["scales"]],
            g_idx=state_dict.get(keys["g_idx"]),
            bits=bits,
            sym=sym,
        )
        return cls(_layer_scales(qw, scale_dtype), state_dict.get(keys["bias"]))

    @classmethod
    def from_awq_state_dict(
        cls, state_dict: Mapping[str, Any], prefix: str, *, scale_dtype: Any = None
    ) -> QuantLinear:
        """The layer `prefix` of an AWQ (GEMM-packed, 4-bit) checkpoint: its qweight,
        qzeros, scales, and bias when present; `scale_dtype` as `from_gptq_state_dict`."""
        keys = _keys(state_dict, prefix, ("qweight", "qzeros", "scales"))
        qw = quant.from_awq(
            state_dict[keys["qweight"]], state_dict[keys["qzeros"]], state_dict[keys["scales"]]
        )
        return cls(_layer_scales(qw, scale_dtype), state_dict.get(keys["bias"]))


def _layer_scales(qw: QuantizedWeight, scale_dtype: Any) -> QuantizedWeight:
    """An imported weight with scales the kernels multiply by (f16 or bf16)."""
    if scale_dtype is None:
        if qw.scale_dtype in _TORCH_TYPES.values():
            return qw
        scale_dtype = dtypes.f16
    target = dtypes.dtype(scale_dtype)
    if target not in _TORCH_TYPES.values():
        raise ValueError(
            f"scale_dtype: a QuantLinear's scales are f16 or bf16 (the kernels multiply in "
            f"the activations' type), got {target}"
        )
    return qw.with_scale_dtype(target)


def _shared(array: np.ndarray) -> torch.Tensor:
    """A CPU tensor over `array`'s memory (a copy where numpy's is read-only or strided)."""
    if not (array.flags.writeable and array.flags.c_contiguous):
        array = np.ascontiguousarray(array).copy()
    return torch.from_numpy(array)


def _keys(state_dict: Mapping[str, Any], prefix: str, required: tuple[str, ...]) -> dict:
    stem = prefix if not prefix or prefix.endswith(".") else prefix + "."
    keys = {name: stem + name for name in ("qweight", "qzeros", "scales", "g_idx", "bias")}
    missing = [keys[name] for name in required if keys[name] not in state_dict]
    if missing:
        raise KeyError(
            f"state_dict has no {', '.join(missing)} (prefix {prefix!r}; its keys start with "
            f"{sorted({k.rsplit('.', 1)[0] for k in state_dict})[:5]})"
        )
    return keys
