"""`QuantLinear`: a drop-in `torch.nn.Module` for `nn.Linear` with a `tilelang.quant`
weight, and the operator it calls, ``tilelang::quant_linear``.

y = x @ W + bias for x [..., K] (float16 or bfloat16; on the CPU through the LLVM
backend, on CUDA through `tilelang.quant.matmul`'s GPU path), W the quantized
[K, N] weight (`QuantizedWeight`: `nn.Linear.weight` transposed). The arithmetic is
`tilelang.quant.matmul`'s: W's values exactly as `QuantizedWeight.dequantize()` gives
them, f32 accumulation, one rounding to x's dtype.

The module's state is `tilelang.torch.weight_state`'s (shared with `QuantMoE`): its
buffers are its weight, all of it, and all tensors (``codes``, ``scale_codes``,
``zeros`` and ``perm`` when the weight has them, ``meta``: the JSON of its other
fields), and ``bias``; so the state_dict is plain tensors, which `load_state_dict`,
`torch.save`/`torch.load` (weights_only too) and safetensors round-trip, and a
state_dict saved with another weight's shapes (group size, packing, dtype) loads into
any QuantLinear. A state_dict of the first form (tilelang before ``meta``: the same
fields as a dict ``_extra_state``) still loads. The operator takes the buffers and
finds the weight from them (`weight_state.held`): when they are not the ones the weight
was built from (loaded, moved, modified in place), it is rebuilt from them. Nothing
else of the module reaches it, so torch.compile traces every layer of the same shapes
as one graph, with no graph break. The fake implementation reads N from the scales'
shape.

Gradients (QLoRA-style fine-tuning: adapters trained on a frozen quantized base). The
operator has a derivative (`torch.library.register_autograd`): grad_x = grad_y @ Wᵀ,
W dequantized by the operator ``tilelang::quant_linear_weight`` (`tilelang.quant.
dequantize`: the kernels' own tile decoder, W bit for bit as the forward's kernels see
it, in grad_y's dtype) and multiplied by `torch.matmul` in that dtype (f32
accumulation, as torch does for nn.Linear); the bias's gradient, grad_y summed over
the leading dimensions, when the bias requires grad. The buffers get none (the
quantized weight is frozen). The dequantized W is a temporary of the backward: K·N·2
bytes for its duration (as bitsandbytes' Linear4bit), freed when it returns. Both
operators trace under torch.compile (fullgraph), the backward included.

Loading without the values: `QuantLinear.empty` (and `from_linear` of a linear on the
meta device) makes a layer with the buffers' shapes, on the meta device or holding
zeros, that a state_dict is then loaded into (``assign=True`` on the meta device).
A symmetric uN weight's constant zero point is stored in ``meta``, not as a buffer.

Scale dtype. The kernels multiply by f16 or bf16 scales, the activations' type. A layer
made by `from_linear` has the linear's (bf16 for a bf16 linear, else f16); ``.half()``,
``.bfloat16()`` and ``.to(dtype)`` to f16 or bf16 re-encode the scales of integer and
ExMy weights (`QuantizedWeight.with_scale_dtype`: exact where the type holds them, else
rounded to nearest even with a `tilelang.quant.ScaleRoundingWarning` giving the error);
``.float()`` leaves them. MX and NVFP4 scales serve both types as they are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from tilelang import dtypes, quant
from tilelang.dtypes import packed_nbytes
from tilelang.quant import QuantizedWeight, io
from tilelang.quant.formats import get_format
from tilelang.torch.weight_state import (
    META,
    TORCH_TYPES,
    WEIGHT_BUFFERS,
    WeightModule,
    check_not_meta,
    define_op,
    held,
    json_tensor,
    known_version,
)

#: The operator's name, and its backward's dequantization's.
OP = "tilelang::quant_linear"
WEIGHT_OP = "tilelang::quant_linear_weight"
#: The torch dtypes `tilelang.quant.dequantize` writes.
_WEIGHT_TYPES = {**TORCH_TYPES, torch.float32: dtypes.f32}
_LOADED = "QuantLinear state_dict"
_BUFFERS = "QuantLinear buffers"


def _check_x(x: torch.Tensor) -> None:
    if x.dtype not in TORCH_TYPES:
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
    ot = TORCH_TYPES[x.dtype]
    if get_format(qw.format).kind in ("scaled", "codebook") and qw.scale_dtype != ot:
        fix = "on the layer converts its scales" + (
            "" if qw.scale_dtype not in TORCH_TYPES.values() else f"; or pass {qw.scale_dtype} x"
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


def _forward(x, codes, scale_codes, zeros, perm, meta, bias) -> torch.Tensor:
    """`quant.matmul` on the tensors, on the CPU (as zero-copy numpy views:
    `runtime.host_calls`) and on CUDA alike; the weight is the buffers'
    (`weight_state.held`)."""
    _check_x(x)
    qw = held((codes, scale_codes, zeros, perm, meta), QuantLinear._from_tensors, _BUFFERS)
    _check_weight(x, qw)
    n = qw.shape[1]
    _check_bias(bias, x, n)
    out = torch.empty((*x.shape[:-1], n), dtype=x.dtype, device=x.device)
    bias = None if bias is None else bias.detach().contiguous()
    return quant.matmul(x.detach().contiguous(), qw, bias=bias, out=out)


def _fake(x, codes, scale_codes, zeros, perm, meta, bias) -> torch.Tensor:
    _check_x(x)
    if x.device.type != "meta":  # a skeleton's buffers given an input with values
        check_not_meta((codes, scale_codes, zeros, perm, meta), _BUFFERS)
    n = scale_codes.shape[-1]  # scale_codes is [K / G, N] whatever the packing
    _check_bias(bias, x, n)
    return x.new_empty((*x.shape[:-1], n))


def _weight(codes, scale_codes, zeros, perm, meta, in_features, dtype) -> torch.Tensor:
    """W [K, N] of `dtype` as the kernels see it (`quant.dequantize`, on the CPU backend
    or the GPU by where the buffers are), in W's original row order."""
    qw = held((codes, scale_codes, zeros, perm, meta), QuantLinear._from_tensors, _BUFFERS)
    _check_weight_call(in_features, dtype, qw.shape[0])
    out = torch.empty(qw.shape, dtype=dtype, device=codes.device)
    return quant.dequantize(qw, out=out)


def _weight_fake(codes, scale_codes, zeros, perm, meta, in_features, dtype) -> torch.Tensor:
    _check_weight_call(in_features, dtype, None)
    return codes.new_empty((in_features, scale_codes.shape[-1]), dtype=dtype)


def _check_weight_call(in_features: Any, dtype: torch.dtype, k: int | None) -> None:
    if dtype not in _WEIGHT_TYPES:
        raise TypeError(f"{WEIGHT_OP}: dtype must be float16, bfloat16 or float32, got {dtype}")
    if k is not None and in_features != k:
        raise ValueError(
            f"{WEIGHT_OP}: in_features must be the weight's K = {k}, got {in_features}"
        )


#: W [K, N] dequantized (the backward's; no gradient of its own).
quant_linear_weight = define_op(
    WEIGHT_OP,
    "(Tensor codes, Tensor scale_codes, Tensor? zeros, Tensor? perm, Tensor meta, "
    "SymInt in_features, ScalarType dtype) -> Tensor",
    _weight,
    _weight_fake,
)


def _setup_context(ctx, inputs: tuple, output: torch.Tensor) -> None:
    """Keeps the buffers (not x: grad_x needs only W) and what the gradients' shapes
    need. An in-place change of a buffer before the backward is autograd's error."""
    x, codes, scale_codes, zeros, perm, meta, bias = inputs
    ctx.save_for_backward(codes, scale_codes, zeros, perm, meta)
    ctx.in_features = x.shape[-1]
    ctx.has_bias = bias is not None


def _backward(ctx, grad: torch.Tensor) -> tuple:
    """grad_x = grad_y @ Wᵀ (W a temporary in grad_y's dtype), grad_bias = grad_y summed
    over the leading dimensions; None for the buffers (module docstring)."""
    grad_x = grad_bias = None
    if ctx.needs_input_grad[0]:
        codes, scale_codes, zeros, perm, meta = ctx.saved_tensors
        w = quant_linear_weight(codes, scale_codes, zeros, perm, meta, ctx.in_features, grad.dtype)
        grad_x = torch.matmul(grad, w.t())
    if ctx.has_bias and ctx.needs_input_grad[6]:
        grad_bias = grad.sum(dim=tuple(range(grad.dim() - 1)))
    return grad_x, None, None, None, None, None, grad_bias


#: y = x @ W (+ bias), W the weight the buffers hold (`weight_state.held`); with its
#: derivative for x and the bias (module docstring).
quant_linear = define_op(
    OP,
    "(Tensor x, Tensor codes, Tensor scale_codes, Tensor? zeros, Tensor? perm, Tensor meta, "
    "Tensor? bias) -> Tensor",
    _forward,
    _fake,
    backward=_backward,
    setup_context=_setup_context,
)


class QuantLinear(WeightModule):
    """`nn.Linear` with a quantized weight: in_features K, out_features N. Its state
    (buffers, the weight found from them, copies, loads, casts) is `tilelang.torch.weight_state`'s."""

    NAME = "QuantLinear"
    HELD = QuantizedWeight
    PICKLED = "qweight"
    EXTRA = ("bias",)

    def __init__(self, weight: QuantizedWeight, bias: Any = None) -> None:
        super().__init__()
        if not isinstance(weight, QuantizedWeight):
            raise TypeError(
                f"weight: expected a tilelang.quant.QuantizedWeight, got {type(weight).__name__}"
            )
        self._start(weight)
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
        return self._held()

    @staticmethod
    def _parts(weight: QuantizedWeight) -> tuple[QuantizedWeight, dict[str, Any]]:
        return weight, {}

    @staticmethod
    def _assemble(weight: QuantizedWeight, own: dict[str, Any]) -> QuantizedWeight:
        return weight

    def _shapes(self, weight: QuantizedWeight) -> None:
        self.in_features, self.out_features = weight.shape
        self.compute_dtype = _compute_dtype(weight)

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
            fields = known_version({"version": 1, **old}, _LOADED)
            state_dict[prefix + META] = json_tensor(fields)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute = getattr(self, "compute_dtype", None)
        if x.dtype == torch.float32 and compute is not None:
            # f32 activations (PEFT's f32 norms, autocast regions): computed in the
            # layer's type and returned in f32, as bitsandbytes' compute_dtype does
            return self(x.to(compute)).float()
        bias = None if self.bias is None else self.bias.to(x.dtype)
        weight = (self.codes, self.scale_codes, self.zeros, self.perm, self.meta)
        return quant_linear(x, *weight, bias)

    def dequantize(self, dtype: torch.dtype = torch.float16) -> torch.Tensor:
        """W [in_features, out_features] (`nn.Linear.weight` transposed) of `dtype`
        (float16, bfloat16 or float32) where the buffers are, as the kernels see it
        (`tilelang.quant.dequantize`): what the backward multiplies grad_y by."""
        weight = (self.codes, self.scale_codes, self.zeros, self.perm, self.meta)
        return quant_linear_weight(*weight, self.in_features, dtype)

    def extra_repr(self) -> str:
        weight = "on the meta device" if self._on_meta() else repr(self.qweight)
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, weight={weight}"
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
        mx_scale: str = "floor",
        codebook: Any = None,
    ) -> QuantLinear:
        """`linear` with its weight quantized by `tilelang.quant.quantize` (the same
        arguments and defaults: `dtype` such as "u4", "i4", "f4e2m1", `group_size` 128
        or the format's block, `mx_scale`, `codebook`, ...), except `scale_dtype`,
        which for the scaled and codebook formats defaults to the linear's type: bf16
        for a bf16 linear, else f16 (MX and NVFP4 fix theirs). Small
        floats whose values f16 does not hold (f6e5m0, f7e5m1, f7e6m0, f8e6m1, f8e7m0)
        need bf16 scales, which the layer then multiplies with bf16 inputs: `quantize`
        refuses them with f16 scales (the default for an f16 or f32 linear), here, not
        at the first forward. A linear on the meta device (a model built without its
        values) gives `empty`'s layer on the meta device, to load a state_dict into."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected a torch.nn.Linear, got {type(linear).__name__}")
        if linear.weight.device.type == "meta":  # a skeleton: its state_dict comes later
            return cls.empty(
                linear.in_features,
                linear.out_features,
                dtype,
                group_size,
                zero_point=zero_point,
                scale_dtype=scale_dtype,
                format=format,
                bias=linear.bias is not None,
                act_dtype=linear.weight.dtype,
                device="meta",
            )
        if scale_dtype is None and get_format(format or "scaled").kind in ("scaled", "codebook"):
            scale_dtype = dtypes.bf16 if linear.weight.dtype == torch.bfloat16 else dtypes.f16
        w = linear.weight.detach().to("cpu", torch.float64).numpy().T  # [K, N]
        qw = quant.quantize(
            w,
            dtype,
            group_size=group_size,
            zero_point=zero_point,
            scale_dtype=scale_dtype,
            format=format,
            mx_scale=mx_scale,
            codebook=codebook,
        )
        return cls(qw, linear.bias)

    @classmethod
    def empty(
        cls,
        in_features: int,
        out_features: int,
        dtype: Any = None,
        group_size: int | None = None,
        *,
        zero_point: bool = False,
        scale_dtype: Any = None,
        format: str | None = None,
        bias: bool = False,
        act_dtype: torch.dtype = torch.float16,
        device: Any = None,
    ) -> QuantLinear:
        """A layer with the buffers `from_linear` makes of an `act_dtype` linear with
        these arguments (the same names and defaults), holding zeros, or no values at
        all on the meta device: the skeleton a state_dict is loaded into (``assign=True``
        on meta; also after ``to_empty(device=...)``). `device` None is torch's default
        (a ``with torch.device("meta"):`` block's). `bias`: whether it has one (zeros of
        `act_dtype`). Only a small [in_features, 1] weight is quantized, to resolve the
        arguments: no weight of the full size exists on the host."""
        k, n = _positive(in_features, "in_features"), _positive(out_features, "out_features")
        if scale_dtype is None and get_format(format or "scaled").kind in ("scaled", "codebook"):
            scale_dtype = dtypes.bf16 if act_dtype == torch.bfloat16 else dtypes.f16
        probe = quant.quantize(
            np.ones((k, 1)), dtype, group_size, zero_point, scale_dtype=scale_dtype, format=format
        )
        fields = {
            name: np.asarray(value).tolist()
            for name, value in probe.arrays().items()
            if name not in WEIGHT_BUFFERS and value is not None
        }
        fields |= {"shape": [k, n], "version": io.VERSION}
        groups = (probe.scale_codes.shape[0], n)
        per_group = zero_point and probe.zeros is not None
        if probe.zeros is not None and not per_group:  # the midpoint: weight_state's meta
            fields["zeros"] = int(probe.zeros.flat[0])
        scale_type = getattr(torch, f"int{probe.scale_codes.dtype.itemsize * 8}")
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        codes = packed_nbytes(k * n, probe.dtype.bits)
        buffers = {
            "codes": torch.zeros(codes, dtype=torch.uint8, device=device),
            "scale_codes": torch.zeros(groups, dtype=scale_type, device=device),
            "zeros": torch.zeros(groups, dtype=torch.int32, device=device) if per_group else None,
            "perm": None,
        }
        buffers[META] = json_tensor(fields).to(buffers["codes"].device)
        buffers["bias"] = torch.zeros(n, dtype=act_dtype, device=device) if bias else None
        for name, tensor in buffers.items():
            layer.register_buffer(name, tensor)
        layer.in_features, layer.out_features = k, n
        layer.compute_dtype = _compute_dtype(probe)
        return layer

    @classmethod
    def from_gptq_state_dict(
        cls,
        state_dict: Mapping[str, Any],
        prefix: str,
        bits: int = 4,
        sym: bool = True,
        *,
        scale_dtype: Any = None,
        checkpoint_format: str = "gptq",
    ) -> QuantLinear:
        """The layer `prefix` ("model.layers.0.mlp.up_proj") of a GPTQ checkpoint: its
        qweight, qzeros, scales, and g_idx and bias when present. `scale_dtype` ("f16"
        or "bf16"): the layer's; None keeps f16 and bf16 scales and makes f32 ones f16
        (`QuantizedWeight.with_scale_dtype`: exact where f16 holds them, else a
        `ScaleRoundingWarning` with the error). `checkpoint_format`: quantize_config's,
        "gptq" (v1) or "gptq_v2" (`tilelang.quant.from_gptq`)."""
        keys = _keys(state_dict, prefix, ("qweight", "scales"))
        qw = quant.from_gptq(
            state_dict[keys["qweight"]],
            state_dict.get(keys["qzeros"]),
            state_dict[keys["scales"]],
            g_idx=state_dict.get(keys["g_idx"]),
            bits=bits,
            sym=sym,
            checkpoint_format=checkpoint_format,
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

    @classmethod
    def from_compressed_tensors_state_dict(
        cls,
        state_dict: Mapping[str, Any],
        prefix: str,
        weights: Mapping[str, Any] | None = None,
        format: str | None = None,
        *,
        bit_packing: str = "dense",
        scale_dtype: Any = None,
    ) -> QuantLinear:
        """The layer `prefix` of a compressed-tensors checkpoint (or an FP8 one with
        ``weight_scale_inv`` block scales): every tensor directly under `prefix`
        (``weight_packed``, ``weight_scale``, ..., ``bias``) read by
        `tilelang.quant.from_compressed_tensors` with `weights` (the layer's
        QuantizationArgs dict), `format` and `bit_packing`; `scale_dtype` as
        `from_gptq_state_dict` (FP8 checkpoints' f32 scales become f16 by default:
        pass "bf16" for a bf16 model)."""
        tensors = _children(state_dict, prefix)
        qw = quant.from_compressed_tensors(tensors, weights, format, bit_packing=bit_packing)
        return cls(_layer_scales(qw, scale_dtype), tensors.get("bias"))

    @classmethod
    def from_bnb_state_dict(
        cls, state_dict: Mapping[str, Any], prefix: str, *, scale_dtype: Any = None
    ) -> QuantLinear:
        """The bitsandbytes 4-bit layer `prefix` of a transformers checkpoint (NF4 or FP4,
        double quantization included: `tilelang.quant.from_bnb_state_dict`) and its
        bias when present. Its float32 absmax become `scale_dtype` ("f16" or "bf16",
        the model's activations; None: the checkpoint's compute dtype when it names
        bf16 or f16, else f16), rounded once (`ScaleRoundingWarning` with the error)."""
        qw = quant.from_bnb_state_dict(state_dict, prefix)
        if scale_dtype is None:
            scale_dtype = _bnb_compute_type(state_dict, prefix)
        bias = _children(state_dict, prefix).get("bias")
        return cls(_layer_scales(qw, scale_dtype), bias)


def _compute_dtype(weight: QuantizedWeight) -> torch.dtype | None:
    """The activations' type a layer of `weight` computes f32 inputs in: its f16 or bf16
    scales' (integer, ExMy and codebook weights), bf16 for MX and NVFP4 (either type
    runs them; bf16 has f32's range), None for scales the kernels cannot multiply by."""
    if get_format(weight.format).kind in ("scaled", "codebook"):
        types = {tl_type: torch_type for torch_type, tl_type in TORCH_TYPES.items()}
        return types.get(weight.scale_dtype)
    return torch.bfloat16


def _bnb_compute_type(state_dict: Mapping[str, Any], prefix: str) -> Any:
    """bf16 when the checkpoint's quant_state names bf16 (`dtype`: the layer's compute
    type in bitsandbytes), else f16."""
    stem = prefix if not prefix or prefix.endswith(".") else prefix + "."
    for key, value in state_dict.items():
        if key.startswith(f"{stem}weight.quant_state.bitsandbytes__"):
            raw = bytes(np.asarray(value.cpu() if hasattr(value, "cpu") else value, np.uint8))
            named = str(json.loads(raw.decode("utf-8")).get("dtype", ""))
            return dtypes.bf16 if named.endswith("bfloat16") else dtypes.f16
    return dtypes.f16


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


def _children(state_dict: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The entries directly under `prefix` ("a.b" holds "a.b.weight", not "a.b.c.weight"),
    by their names without it; a KeyError when there are none."""
    stem = prefix if not prefix or prefix.endswith(".") else prefix + "."
    tensors = {
        key[len(stem) :]: value
        for key, value in state_dict.items()
        if key.startswith(stem) and "." not in key[len(stem) :]
    }
    if not tensors:
        raise KeyError(
            f"state_dict has no tensors under prefix {prefix!r}; its keys start with "
            f"{sorted({k.rsplit('.', 1)[0] for k in state_dict})[:5]}"
        )
    return tensors


def _layer_scales(qw: QuantizedWeight, scale_dtype: Any) -> QuantizedWeight:
    """An imported weight with scales the kernels multiply by (f16 or bf16)."""
    if scale_dtype is None:
        if qw.scale_dtype in TORCH_TYPES.values():
            return qw
        scale_dtype = dtypes.f16
    target = dtypes.dtype(scale_dtype)
    if target not in TORCH_TYPES.values():
        raise ValueError(
            f"scale_dtype: a QuantLinear's scales are f16 or bf16 (the kernels multiply in "
            f"the activations' type), got {target}"
        )
    return qw.with_scale_dtype(target)


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
