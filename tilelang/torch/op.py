"""`op(kernel, "ns::name", **constexprs)`: a tilelang kernel as a `torch.library` custom
operator, with CPU, CUDA and fake implementations and nothing for the user to write.

* **Signature** (`tilelang.torch.signature`): arguments are the tensors the kernel reads
  (in-place ones, read and stored, are mutated: `Tensor(a!)`) and its scalars, in the
  kernel's order; outputs (tensors it only stores to) are allocated by the operator with
  torch.empty* and returned. Dtypes travel as `tilelang.torch.dtypes` says (sub-byte
  ones packed in uint8).
* **Constexprs**: those given to `op` are fixed. A constexpr that names a tensor's dtype
  (``x: Tensor["T", "N"]``) and is not given is taken, per call, from the first argument
  tensor annotated with it, so one operator serves f16, bf16 and f32 tensors; a
  different dtype is a different specialization (compiled once).
* **CPU**: the kernel's run (`Kernel.run`, the LLVM backend) on the specialization the
  operator holds, with zero-copy numpy views of the tensors
  (`tilelang.torch.dtypes.host_array`: bf16 and f8 as ml_dtypes arrays; packed tensors
  as a `tilelang.PackedArray` over their uint8 bytes). Views rather than the general
  path (the kernel's call on the torch tensors, each imported through DLPack): the
  bridge knows its tensors are torch's, and a view costs ~1 us where a DLPack import,
  cheap as it now is, costs ~7-9 (measured: the general path adds ~28 us to a
  three-tensor call, which would be over the bridge's 20 us budget).
* **CUDA**: the launch on torch's current stream (`torch.cuda.current_stream()`); it
  allocates nothing beyond the outputs (torch.empty, from torch's caching allocator)
  and never synchronizes, so a warmed-up operator can be captured in a CUDA graph (the
  first call of a shape compiles and loads the cubin: run it once before capture).
* **Fake**: output shapes from the annotations' size expressions with the sizes read
  from the arguments' shapes (torch SymInts under torch.compile), dtypes from the
  annotations.
* **Registration** (`_register`): `torch.library.Library` with the schema, the three
  kernels, pt2_compliant_tag, Autograd falling through (no derivative: outputs do not
  require grad) and, for in-place arguments, the version-counter bump torch's in-place
  ops do. Not `torch.library.custom_op`, whose Python wrappers alone cost ~30 us a call.
  A call with grad mode on and an argument that requires grad warns once per operator
  (`tilelang.torch.NoGradientWarning`, `tilelang.runtime.host_calls.warn_no_gradient`).

Per call, what depends only on the argument dtypes (the specialization, the signature)
and what depends on their shapes too (the output shapes, the GPU build) is looked up in
dictionaries, so a warm call neither re-derives nor recompiles anything.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tilelang.dtypes import DType, PackedArray
from tilelang.kernel import CompiledKernel, Kernel, Specialization
from tilelang.lang.signature import ConstexprParam, TensorParam
from tilelang.runtime import gpu, host_calls
from tilelang.runtime.launch_facts import size_facts

from . import dtypes as td
from .signature import OUTPUT, OpSignature, ScalarSlot, TensorSlot

__all__ = ["TorchOp", "op"]

_OPS: dict[str, TorchOp] = {}


def op(kernel: Kernel, name: str, *, mutates: tuple[str, ...] = (), **constexprs: Any) -> TorchOp:
    """Registers `kernel` as the torch custom operator `name` ("namespace::name"), its
    constexprs fixed to `constexprs` (dtype constexprs left out follow the tensors).
    `mutates`: tensor parameters the kernel only stores to that the caller passes and
    the operator modifies in place, rather than outputs it allocates (a cache written
    at a position; `tilelang.torch.signature`). Asking again for the same name with the
    same kernel, constexprs and `mutates` returns the operator already registered;
    anything else under a taken name is a `ValueError`."""
    if isinstance(mutates, str):  # mutates="cache": one name, not its letters
        mutates = (mutates,)
    mutates = tuple(mutates)
    if not isinstance(kernel, Kernel):
        raise TypeError(f"kernel: expected a @tilelang.kernel, got {type(kernel).__name__}")
    if not isinstance(name, str) or name.count("::") != 1 or not all(name.split("::")):
        raise ValueError(f"name: expected 'namespace::name', got {name!r}")
    found = _OPS.get(name)
    if found is not None:
        if found.kernel is kernel and found.fixed == constexprs and found.mutates == mutates:
            return found
        raise ValueError(f"name: the operator {name!r} is already registered for another kernel")
    made = _OPS[name] = TorchOp(kernel, name, constexprs, mutates)
    return made


@dataclass(frozen=True)
class _Variant:
    """The operator at one set of argument dtypes: constexprs, specialization, signature."""

    constexprs: dict[str, Any]
    spec: Specialization
    signature: OpSignature
    # per runtime parameter of the kernel, in its order: its name, its host form, and
    # where its value is in the operator's arguments followed by its outputs
    host: tuple[tuple[str, Callable[[Any], Any], int], ...]
    # the same for a CUDA call, in the kernel's positional order: its device form, where
    device: tuple[tuple[Callable[[Any], Any], int], ...]


@dataclass
class _Shaped:
    """The operator at one set of argument dtypes and shapes."""

    variant: _Variant
    outputs: tuple[tuple[tuple[int, ...], torch.dtype], ...]  # torch shape, torch dtype
    sizes: dict[str, int]


class TorchOp:
    """A registered operator: call it like the torch op (`torch.ops.ns.name`)."""

    def __init__(
        self, kernel: Kernel, name: str, constexprs: dict[str, Any], mutates: tuple[str, ...] = ()
    ) -> None:
        self.kernel = kernel
        self.name = name
        self.fixed = dict(constexprs)
        self.mutates = tuple(mutates)
        self._variants: dict[tuple, _Variant] = {}
        self._shaped: dict[tuple, _Shaped] = {}
        probe = self._probe_constexprs()
        signature = OpSignature.of(kernel.specialization(**probe).function, self.mutates)
        self.signature = signature
        # dtype constexpr name -> the argument whose dtype gives it
        self._inferred = self._inferred_dtypes(signature)
        if not any(isinstance(s, TensorSlot) for s in signature.arguments):
            raise ValueError(
                f"{name}: {kernel.__name__}() takes no tensor the operator could place its "
                "outputs beside (no argument tensor)"
            )
        self._arguments = signature.arguments
        self.library = _register(name, signature.schema(), self._cpu, self._cuda, self._fake)
        namespace, short = name.split("::")
        #: The operator as torch sees it (torch.ops.namespace.name.default).
        self.overload = getattr(getattr(torch.ops, namespace), short).default
        mutated = [i for i, s in enumerate(self._arguments) if s.name in signature.mutated]
        if mutated:
            _bump_versions(self.library, short, self.overload, mutated)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.name not in host_calls.WARNED and torch.is_grad_enabled():
            # forward-only: say so, once (`NoGradientWarning`)
            host_calls.warn_no_gradient(self.name, (*args, *kwargs.values()) if kwargs else args)
        return self.overload(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<tilelang.torch.op {self.name}{self.signature.schema()}>"

    @property
    def schema(self) -> str:
        return self.signature.schema()

    # -- building --------------------------------------------------------------------

    def _probe_constexprs(self) -> dict[str, Any]:
        """The fixed constexprs, and for a dtype constexpr left out its default (f32 if
        it has none): the specialization whose roles the operator's schema records."""
        values = dict(self.fixed)
        required = {
            p.name for p in self.kernel.params if isinstance(p, ConstexprParam) and p.required
        }
        for param in self.kernel.params:
            if isinstance(param, TensorParam) and isinstance(param.annotation.dtype, str):
                dtype_name = param.annotation.dtype
                if dtype_name not in values and dtype_name in required:
                    values[dtype_name] = "f32"
        return values

    def _inferred_dtypes(self, signature: OpSignature) -> dict[str, str]:
        arguments = {s.name for s in signature.arguments if isinstance(s, TensorSlot)}
        inferred: dict[str, str] = {}
        for param in self.kernel.params:
            if not isinstance(param, TensorParam) or param.name not in arguments:
                continue
            dtype_name = param.annotation.dtype
            if isinstance(dtype_name, str) and dtype_name not in self.fixed:
                inferred.setdefault(dtype_name, param.name)
        return inferred

    # -- per call --------------------------------------------------------------------

    def _bound(self, args: tuple, kwargs: dict) -> list[Any]:
        """The arguments in the signature's order (the dispatcher may pass keywords)."""
        if not kwargs:
            return list(args)
        values = list(args)
        for slot in self._arguments[len(args) :]:
            values.append(kwargs[slot.name])
        return values

    def _variant(self, values: list[Any]) -> _Variant:
        key = tuple(v.dtype if isinstance(v, torch.Tensor) else None for v in values)
        found = self._variants.get(key)
        if found is None:
            found = self._variants[key] = self._new_variant(values)
        return found

    def _new_variant(self, values: list[Any]) -> _Variant:
        by_name = {slot.name: v for slot, v in zip(self._arguments, values, strict=True)}
        constexprs = dict(self.fixed)
        for dtype_name, param in self._inferred.items():
            value = by_name[param]
            found = td.tilelang_dtype(value.dtype) if isinstance(value, torch.Tensor) else None
            if found is None:
                raise TypeError(
                    f"{self.name}: parameter {param!r} gives the dtype {dtype_name}, but is "
                    f"{_describe(value)}, which has no tilelang dtype (pass {dtype_name}= to "
                    "tilelang.torch.op for a packed type)"
                )
            constexprs[dtype_name] = found
        spec = self.kernel.specialization(**constexprs)
        signature = OpSignature.of(spec.function, self.mutates)
        if signature.roles() != self.signature.roles():
            raise TypeError(
                f"{self.name}: with {constexprs} the kernel reads and stores other tensors "
                f"({signature.schema()}) than the registered schema {self.schema}"
            )
        for slot, value in zip(signature.arguments, values, strict=True):
            _check_argument(self.name, slot, value)
        given, made = itertools.count(), itertools.count(len(signature.arguments))
        at = tuple(next(made if _is_output(slot) else given) for slot in signature.slots)
        host = tuple(
            (slot.name, _host_form(slot), where)
            for slot, where in zip(signature.slots, at, strict=True)
        )
        device = tuple(
            (_device_form(slot), where) for slot, where in zip(signature.slots, at, strict=True)
        )
        return _Variant(constexprs, spec, signature, host, device)

    def _shapes_of(self, variant: _Variant, values: list[Any]) -> dict[str, tuple]:
        shapes = {}
        for slot, value in zip(variant.signature.arguments, values, strict=True):
            if isinstance(slot, TensorSlot):
                shape = tuple(value.shape)
                if td.is_packed(slot.dtype):
                    shape = td.logical_shape(slot.dtype, shape, self._where(slot))
                shapes[slot.name] = shape
        return shapes

    def _lookup(self, values: list[Any]) -> _Shaped:
        """The operator at these arguments' dtypes and shapes: one key, one lookup."""
        key = tuple([(v.dtype, v.shape) if isinstance(v, torch.Tensor) else None for v in values])
        found = self._shaped.get(key)
        if found is None:
            variant = self._variant(values)
            sizes = variant.signature.sizes(self._shapes_of(variant, values))
            outputs = self._output_forms(variant.signature, sizes)
            found = self._shaped[key] = _Shaped(variant, outputs, sizes)
        return found

    def _output_forms(self, signature: OpSignature, sizes: dict[str, Any]) -> tuple:
        forms = []
        for slot, shape in zip(signature.outputs, signature.output_shapes(sizes), strict=True):
            if td.is_packed(slot.dtype):
                shape = td.packed_shape(slot.dtype, shape, self._where(slot))
            forms.append((tuple(shape), td.torch_dtype(slot.dtype)))
        return tuple(forms)

    def _where(self, slot: TensorSlot) -> str:
        return f"{self.name}: parameter {slot.name!r}"

    @staticmethod
    def _returned(outputs: list[torch.Tensor]) -> Any:
        if not outputs:
            return None
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    # -- the implementations -----------------------------------------------------------

    def _fake(self, *args: Any, **kwargs: Any) -> Any:
        values = self._bound(args, kwargs)
        variant = self._variant(values)
        sizes = variant.signature.sizes(self._shapes_of(variant, values))
        like = next(v for v in values if isinstance(v, torch.Tensor))
        outputs = [
            like.new_empty(shape, dtype=dtype)
            for shape, dtype in self._output_forms(variant.signature, sizes)
        ]
        return self._returned(outputs)

    def _cpu(self, *args: Any, **kwargs: Any) -> Any:
        values = self._bound(args, kwargs)
        shaped = self._lookup(values)
        variant = shaped.variant
        outputs = [torch.empty(shape, dtype=dtype) for shape, dtype in shaped.outputs]
        every = [*values, *outputs]
        # The kernel's runtime parameters by name, each as its precomputed form takes it;
        # run on the specialization the variant holds (no constexpr lookup per call).
        arguments = {name: form(every[at]) for name, form, at in variant.host}
        self.kernel.run(variant.spec, arguments)
        return self._returned(outputs)

    def _cuda(self, *args: Any, **kwargs: Any) -> Any:
        values = self._bound(args, kwargs)
        device = next(v.device for v in values if isinstance(v, torch.Tensor))
        if device.index not in (None, 0):
            raise ValueError(
                f"{self.name}: tilelang launches on CUDA device 0 (its primary context), "
                f"got tensors on {device}"
            )
        shaped, outputs, arguments = self.device_arguments(values, device)
        # The kernel's own GPU call: its checks, its build for the device and, for a call
        # like an earlier one, its warm path (`tilelang.runtime.warm_calls`); it launches
        # on torch's current stream.
        self.kernel(*arguments, **shaped.variant.constexprs)
        return self._returned(outputs)

    def device_arguments(self, values: list[Any], device: torch.device):
        """The CUDA call's arguments, before anything touches the GPU: the outputs
        allocated on `device` (torch.empty: torch's caching allocator, capturable), and
        the kernel's runtime arguments in its order, as its GPU call takes them: the
        tensors themselves (read off the tensor, `tilelang.runtime.dlpack`), a packed
        type's bytes seen as its dtype, the scalars. Nothing here synchronizes."""
        shaped = self._lookup(values)
        outputs = [
            torch.empty(shape, dtype=dtype, device=device) for shape, dtype in shaped.outputs
        ]
        every = [*values, *outputs]
        return shaped, outputs, [form(every[at]) for form, at in shaped.variant.device]

    def compile(self, target: str, variant: _Variant, sizes: dict[str, int]) -> CompiledKernel:
        """The build a launch at `sizes` uses (cached by the kernel; no GPU needed for a
        GPU target)."""
        return self.kernel.compile(assume=size_facts(sizes), target=target, **variant.constexprs)

    def build_for(self, *args: Any, target: str = "sm_90", **kwargs: Any) -> CompiledKernel:
        """What the CUDA implementation would launch for these (CPU or meta) tensors,
        compiled for `target` without a GPU: for inspection and tests."""
        values = self._bound(args, kwargs)
        variant = self._variant(values)
        sizes = variant.signature.sizes(self._shapes_of(variant, values))
        return self.compile(target, variant, sizes)


def _register(name: str, schema: str, cpu, cuda, fake) -> torch.library.Library:
    """Defines the operator `name` with `schema` and its CPU, CUDA and fake kernels.

    Registered with `torch.library.Library` itself rather than through
    `torch.library.custom_op`, whose Python layers (an autograd wrapper that
    re-dispatches, a dynamo-disable wrapper, a device lookup) cost about 30 us a call
    on their own, over the bridge's whole budget. What custom_op would add beyond the
    kernels is said here: the operator is pt2-compliant, and it has no derivative:
    Autograd falls through (outputs do not require grad)."""
    namespace, short = name.split("::")
    library = torch.library.Library(namespace, "FRAGMENT")
    library.define(short + schema, tags=(torch.Tag.pt2_compliant_tag,))
    library.impl(short, cpu, "CPU")
    library.impl(short, cuda, "CUDA")
    library.impl(short, torch.library.fallthrough_kernel, "Autograd")
    torch.library.register_fake(name, fake, lib=library)
    return library


def _bump_versions(library, short: str, overload, mutated: list[int]) -> None:
    """Marks the in-place arguments as modified (their version counters), as torch's own
    in-place ops do, so autograd refuses a backward through values the op overwrote."""
    # torch has no public name for "the keys after ADInplaceOrView"; custom_op uses this.
    after = torch._C._after_ADInplaceOrView_keyset

    def bump(keyset, *args, **kwargs):
        for index in mutated:
            torch.autograd.graph.increment_version(args[index])
        return overload.redispatch(keyset & after, *args, **kwargs)

    library.impl(short, bump, "ADInplaceOrView", with_keyset=True)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {list(value.shape)}"
    return f"{type(value).__name__} {value!r}"


def _check_argument(op_name: str, slot: TensorSlot | ScalarSlot, value: Any) -> None:
    where = f"{op_name}: parameter {slot.name!r}"
    if isinstance(slot, ScalarSlot):
        return  # the schema typed it; the kernel's own call checks its range
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{where} expects a tensor, got {_describe(value)}")
    want = td.torch_dtype(slot.dtype)
    if value.dtype != want:
        how = f"{want} (packed {slot.dtype}, see tilelang.torch.dtypes)"
        if not td.is_packed(slot.dtype):
            how = f"{want} ({slot.dtype})"
        raise TypeError(f"{where} expects a tensor of {how}, got {_describe(value)}")


def _host_form(slot: TensorSlot | ScalarSlot) -> Callable[[Any], Any]:
    """How a CPU argument reaches the kernel's call, without a copy: a numpy view of a
    whole-byte tensor (its real dtype; ml_dtypes' for bf16 and f8), a PackedArray over a
    packed tensor's bytes, a scalar as it is. (A numpy view costs about a microsecond; a
    DLPack import, which the kernel's own call does for a torch tensor, about 7-9.)"""
    if isinstance(slot, ScalarSlot):
        return _same
    if td.is_packed(slot.dtype):

        def packed(value: torch.Tensor) -> PackedArray:
            value = value.detach()
            data = _packed_bytes(slot, value).numpy()
            return PackedArray(data, slot.dtype, _logical(slot, value))

        return packed
    if td.numpy_dtype(slot.dtype).kind in "biuf" and td.numpy_dtype(slot.dtype).isbuiltin:
        return _numpy_view
    dtype = slot.dtype
    return lambda value: td.host_array(value.detach() if value.requires_grad else value, dtype)


def _is_output(slot: TensorSlot | ScalarSlot) -> bool:
    return isinstance(slot, TensorSlot) and slot.role == OUTPUT


def _same(value: Any) -> Any:
    return value


def _numpy_view(value: torch.Tensor) -> Any:
    return (value.detach() if value.requires_grad else value).numpy()


def _packed_bytes(slot: TensorSlot, value: torch.Tensor) -> torch.Tensor:
    if not value.is_contiguous():
        raise ValueError(
            f"parameter {slot.name!r}: a packed {slot.dtype} tensor must be contiguous (its "
            "bytes are the dense packing); call .contiguous()"
        )
    return value.view(-1)


def _logical(slot: TensorSlot, value: torch.Tensor) -> tuple[int, ...]:
    return td.logical_shape(slot.dtype, tuple(value.shape), f"parameter {slot.name!r}")


class _BorrowedPacked(gpu.DeviceBuffer):
    """A packed tensor's bytes in torch's GPU memory, seen as a `tilelang.DeviceBuffer`
    of its dtype (what the device argument checks take for packed types); it allocates
    and frees nothing, and keeps the torch tensor alive."""

    def __init__(self, tensor: torch.Tensor, dtype: DType, shape: tuple[int, ...]) -> None:
        self.tensor = tensor
        self.dtype = dtype
        self.host_dtype = np.dtype(np.uint8)  # the bytes (`DeviceBuffer`'s packed form)
        self.nbytes = int(tensor.numel())
        self.pointer = int(tensor.data_ptr())
        self.shape = shape

    def __del__(self) -> None:
        pass  # torch owns the memory


def _device_form(slot: TensorSlot | ScalarSlot) -> Callable[[Any], Any]:
    """How a CUDA argument reaches the kernel's call: a scalar or a whole-byte tensor as
    it is (the call reads a CUDA torch tensor's pointer, shape, strides and dtype off the
    tensor), a packed type's bytes seen as its dtype."""
    if isinstance(slot, ScalarSlot) or not td.is_packed(slot.dtype):
        return _same

    def packed(value: torch.Tensor) -> _BorrowedPacked:
        return _BorrowedPacked(_packed_bytes(slot, value), slot.dtype, _logical(slot, value))

    return packed
