"""`op(kernel, "ns::name", **constexprs)`: a tilelang kernel as a `torch.library` custom
operator, with CPU, CUDA and fake implementations and nothing for the user to write.

* **Signature** (`tilelang.torch.signature`): arguments are the tensors the kernel reads
  (in-place ones, read and stored or stored under a mask, are mutated: `Tensor(a!)`)
  and its scalars, in the kernel's order; outputs (tensors it only stores to, unmasked)
  are allocated by the operator with torch.empty* and returned. Dtypes travel as `tilelang.torch.dtypes` says (sub-byte
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
  require grad; in a library of its own, which `TorchOp.register_autograd` drops before
  it registers a derivative, so torch never sees one Autograd kernel override another)
  and, for in-place arguments, the version-counter bump torch's in-place ops do. Not
  `torch.library.custom_op`, whose Python wrappers alone cost ~30 us a call. A call
  with grad mode on, an argument that requires grad and a result without one warns
  once per operator (`tilelang.torch.NoGradientWarning`,
  `tilelang.runtime.host_calls.warn_no_gradient`); under torch.compile nothing runs
  but the operator (Dynamo traces `TorchOp.__call__`, and cannot trace the warning's
  frame walk).
* **Calls** (`TorchOp._check_call`): a constexpr, an output or an unknown keyword, or a
  missing argument, is refused naming the kernel's parameter before torch's dispatcher
  answers with a message that knows nothing of the kernel; tensors on two devices are
  refused naming both (`_same_device`, in every implementation).
* **Autotuned kernels** (`op(tl.autotune(kernel, ...), ...)`): every config must give
  the same schema and output shapes (checked when made); the fake implementation uses
  the first config, a CPU call runs the config the tuner picks for its key
  (`Autotuned.best` on the host views), a CUDA call calls the tuner.

Per call, what depends only on the argument dtypes (the specialization, the signature)
and what depends on their shapes too (the output shapes, the GPU build) is looked up in
dictionaries, so a warm call neither re-derives nor recompiles anything.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tilelang.dtypes import DType, PackedArray
from tilelang.kernel import CompiledKernel, Kernel, Specialization
from tilelang.lang.signature import ConstexprParam, TensorParam
from tilelang.runtime import gpu, host_calls
from tilelang.runtime.launch_facts import size_facts

from . import dtypes as td
from .signature import OUTPUT, OpSignature, ScalarSlot, TensorSlot, inplace_reasons

__all__ = ["TorchOp", "op"]

_OPS: dict[str, TorchOp] = {}


def op(
    kernel: Kernel | Any, name: str, *, mutates: tuple[str, ...] = (), **constexprs: Any
) -> TorchOp:
    """Registers `kernel` as the torch custom operator `name` ("namespace::name"), its
    constexprs fixed to `constexprs` (dtype constexprs left out follow the tensors).
    `kernel` may be a `tl.autotune` of one: each call then runs the config the tuner
    picks for the call's key (every config must give the operator the same signature).
    `mutates`: tensor parameters the kernel only stores to that the caller passes and
    the operator modifies in place, rather than outputs it allocates (a cache written
    at a position; `tilelang.torch.signature`). Asking again for the same name with the
    same kernel, constexprs and `mutates` returns the operator already registered;
    anything else under a taken name is a `ValueError`."""
    if isinstance(mutates, str):  # mutates="cache": one name, not its letters
        mutates = (mutates,)
    mutates = tuple(mutates)
    if not isinstance(kernel, Kernel) and not _is_autotuned(kernel):
        raise TypeError(
            f"kernel: expected a @tilelang.kernel (or a tl.autotune of one), got "
            f"{type(kernel).__name__}"
        )
    if not isinstance(name, str) or name.count("::") != 1 or not all(name.split("::")):
        raise ValueError(f"name: expected 'namespace::name', got {name!r}")
    found = _OPS.get(name)
    if found is not None:
        if found.source is kernel and found.fixed == constexprs and found.mutates == mutates:
            return found
        raise ValueError(f"name: {_taken(name, found, kernel, constexprs, mutates)}")
    made = _OPS[name] = TorchOp(kernel, name, constexprs, mutates)
    return made


def _taken(name: str, found: TorchOp, kernel: Any, constexprs: dict, mutates: tuple) -> str:
    """Why `name` cannot be registered again: what differs from the operator it names
    (a torch operator has one schema, so each set of constexprs needs its own name)."""
    if found.source is not kernel:
        return f"the operator {name!r} is already registered for another kernel"
    if found.fixed != constexprs:
        return (
            f"the operator {name!r} is already registered for this kernel with constexprs "
            f"{found.fixed}, not {constexprs}: give each set of constexprs its own name "
            f"(e.g. {name + '_' + '_'.join(f'{k}{v}' for k, v in constexprs.items())!r})"
        )
    return f"the operator {name!r} is already registered with mutates={found.mutates}"


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
    # an autotuned operator's specializations, per tuned config (`TorchOp._tuned_spec`)
    tuned: dict[tuple, Specialization] = field(default_factory=dict)


@dataclass
class _Shaped:
    """The operator at one set of argument dtypes and shapes."""

    variant: _Variant
    outputs: tuple[tuple[tuple[int, ...], torch.dtype], ...]  # torch shape, torch dtype
    sizes: dict[str, int]


class TorchOp:
    """A registered operator: call it like the torch op (`torch.ops.ns.name`)."""

    def __init__(
        self,
        kernel: Kernel | Any,
        name: str,
        constexprs: dict[str, Any],
        mutates: tuple[str, ...] = (),
    ) -> None:
        self.source = kernel  # what `op` was given
        #: The `tl.autotune` whose config each call runs, or None.
        self.tuner = kernel if _is_autotuned(kernel) else None
        kernel = kernel.kernel if self.tuner is not None else kernel
        self.kernel = kernel
        self.name = name
        self.fixed = dict(constexprs)
        self.mutates = tuple(mutates)
        self._variants: dict[tuple, _Variant] = {}
        self._shaped: dict[tuple, _Shaped] = {}
        self._backward = False  # `register_autograd` gave a derivative
        # the config the fake implementation and `build_for` use (all give the same shapes)
        self._first = self._first_config()
        probe = self._probe_constexprs()
        signature = OpSignature.of(
            kernel.specialization(**probe, **self._first).function, self.mutates
        )
        self.signature = signature
        if self.tuner is not None:
            for config in self.tuner.configs[1:]:
                spec = kernel.specialization(**probe, **config)
                self._same_signature(OpSignature.of(spec.function, self.mutates), config)
        # dtype constexpr name -> the argument whose dtype gives it
        self._inferred = self._inferred_dtypes(signature)
        if not any(isinstance(s, TensorSlot) for s in signature.arguments):
            raise ValueError(
                f"{name}: {kernel.__name__}() takes no tensor the operator could place its "
                "outputs beside (no argument tensor)"
            )
        self._arguments = signature.arguments
        self._names = tuple(slot.name for slot in self._arguments)
        # tensor parameter -> the dtype constexpr its annotation names
        self._dtype_of = {
            p.name: p.annotation.dtype
            for p in kernel.params
            if isinstance(p, TensorParam) and isinstance(p.annotation.dtype, str)
        }
        self.library = _register(name, signature.schema(), self._cpu, self._cuda, self._fake)
        namespace, short = name.split("::")
        # Autograd's fall-through, in a library of its own that `register_autograd` drops
        # (so torch sees one Autograd kernel, not one overriding another)
        self._no_gradient = torch.library.Library(namespace, "FRAGMENT")
        self._no_gradient.impl(short, torch.library.fallthrough_kernel, "Autograd")
        #: The operator as torch sees it (torch.ops.namespace.name.default).
        self.overload = getattr(getattr(torch.ops, namespace), short).default
        mutated = [i for i, s in enumerate(self._arguments) if s.name in signature.mutated]
        if mutated:
            _bump_versions(self.library, short, self.overload, mutated)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs or len(args) != len(self._names):
            self._check_call(args, kwargs)  # before torch's message, which knows no kernel
        if torch.compiler.is_compiling():
            # Dynamo traces this method: only the operator goes in the graph (the warning
            # below walks Python frames, which Dynamo cannot trace)
            return self.overload(*args, **kwargs)
        result = self.overload(*args, **kwargs)
        if (
            self.name not in host_calls.WARNED
            and torch.is_grad_enabled()
            and not (self._backward or _has_gradient(result))
        ):
            # no derivative: say so, once (`NoGradientWarning`)
            given = (*args, *kwargs.values()) if kwargs else args
            host_calls.warn_no_gradient(self.name, given)
        return result

    def register_autograd(
        self, backward: Callable[..., Any], *, setup_context: Callable[..., Any] | None = None
    ) -> None:
        """Gives the operator a derivative: `torch.library.register_autograd`'s
        `backward(ctx, *grads)` (one gradient per output; it returns one per argument,
        None for those without) and `setup_context(ctx, inputs, output)`, which saves
        what backward needs. Replaces the operator's no-gradient fall-through (without
        torch's warning that one Autograd kernel overrides another), so results require
        grad and no `NoGradientWarning` is raised. An operator that mutates an argument
        cannot have one (torch: a derivative needs a functional operator)."""
        if self.signature.mutated:
            raise RuntimeError(
                f"{self.name}: register_autograd needs an operator that mutates nothing, but "
                f"it mutates {', '.join(map(repr, self.signature.mutated))} (Tensor(a!)); "
                "torch gives derivatives to functional operators only"
            )
        if not self._backward:
            self._no_gradient._destroy()
        torch.library.register_autograd(
            self.name, backward, setup_context=setup_context, lib=self.library
        )
        self._backward = True

    def __repr__(self) -> str:
        return f"<tilelang.torch.op {self.name}{self.signature.schema()}>"

    @property
    def schema(self) -> str:
        return self.signature.schema()

    # -- building --------------------------------------------------------------------

    def _first_config(self) -> dict[str, Any]:
        if self.tuner is None:
            return {}
        tuned = sorted(set(self.fixed) & set(self.tuner.configs[0]))
        if tuned:
            raise ValueError(
                f"{self.name}: {', '.join(tuned)} is chosen by the autotuner per call; "
                f"leave it out of tilelang.torch.op, or give op the kernel itself"
            )
        return dict(self.tuner.configs[0])

    def _same_signature(self, signature: OpSignature, config: dict[str, Any]) -> None:
        """Every config must give the operator one schema and one output shape rule."""
        first = self.signature
        same = signature.roles() == first.roles() and [s.dims for s in signature.outputs] == [
            s.dims for s in first.outputs
        ]
        if not same:
            raise ValueError(
                f"{self.name}: the autotuned config {config} gives the operator "
                f"{signature.schema()} with outputs {_shapes_text(signature)}, the first "
                f"config {self._first} {first.schema()} with {_shapes_text(first)}; every "
                "config must store the same tensors with the same shapes (tune constexprs "
                "that change neither)"
            )

    def _check_call(self, args: tuple, kwargs: dict) -> None:
        """A `TypeError` for a call torch would refuse with a message that knows nothing
        of the kernel: a constexpr, an output or an unknown name given, or an argument
        missing (for an in-place one, why it is one)."""
        kernel = self.kernel.fn.__name__
        constexprs = {p.name for p in self.kernel.params if isinstance(p, ConstexprParam)}
        outputs = {slot.name for slot in self.signature.outputs}
        for key, value in kwargs.items():
            if key in self._names:
                continue
            if key in self._inferred:
                raise TypeError(
                    f"{self.name}: {key} is a dtype constexpr of {kernel}(), which follows "
                    f"the dtype of parameter {self._inferred[key]!r}; pass tensors of that "
                    f"dtype, or fix it when the operator is made: tilelang.torch.op({kernel}, "
                    f"'ns::name', {key}=...)"
                )
            if key in constexprs:
                raise TypeError(
                    f"{self.name}: {key} is a constexpr of {kernel}(), fixed when the "
                    f"operator is made, not at a call: tilelang.torch.op({kernel}, {self.name!r}, "
                    f"{key}={value!r}) (another value needs another operator name)"
                )
            if key in outputs:
                raise TypeError(
                    f"{self.name}: {key!r} is an output, which the operator allocates and "
                    f"returns; to pass it yourself, make the operator with "
                    f"mutates=({key!r},)"
                )
            raise TypeError(
                f"{self.name}: no parameter {key!r}; the operator takes ({', '.join(self._names)})"
            )
        if len(args) > len(self._names):
            raise TypeError(
                f"{self.name}: takes {len(self._names)} arguments ({', '.join(self._names)}), "
                f"got {len(args)}; constexprs are fixed when the operator is made "
                f"(tilelang.torch.op({kernel}, {self.name!r}, NAME=value))"
            )
        missing = [n for n in self._names[len(args) :] if n not in kwargs]
        if not missing:
            return
        text = f"{self.name}: missing argument {', '.join(map(repr, missing))}"
        inplace = [n for n in missing if n in self.signature.mutated]
        if inplace:
            reasons = inplace_reasons(
                self.kernel.specialization(**self._probe_constexprs(), **self._first).function
            )
            name = inplace[0]
            if name in self.mutates:
                why = f"mutates=({name!r},) made it one the caller passes"
            elif reasons.get(name, "masked") == "reads":
                why = f"{kernel}() reads it (a load or an atomic update) as well as storing to it"
            else:
                why = (
                    f"{kernel}() stores to it under a mask (or at loaded indices), and a "
                    "masked store keeps the elements it skips, so the old contents matter"
                )
            text += (
                f"; {name!r} is an in-place argument (Tensor(a!) in {self.schema}): {why}. "
                "Pass a tensor to be modified in place (see 'Using tilelang from PyTorch' in "
                "docs/guide.md)"
            )
        raise TypeError(text)

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
        spec = self.kernel.specialization(**constexprs, **self._first)
        signature = OpSignature.of(spec.function, self.mutates)
        if signature.roles() != self.signature.roles():
            raise TypeError(
                f"{self.name}: with {constexprs} the kernel reads and stores other tensors "
                f"({signature.schema()}) than the registered schema {self.schema}"
            )
        for slot, value in zip(signature.arguments, values, strict=True):
            _check_argument(self.name, slot, value, lambda s=slot: self._dtype_origin(s, by_name))
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

    def _dtype_origin(self, slot: TensorSlot, by_name: dict[str, Any]) -> str:
        """Where the dtype `slot` expects came from, when a dtype constexpr gave it."""
        dtype_name = self._dtype_of.get(slot.name)
        if dtype_name is None:
            return ""
        if dtype_name in self.fixed:
            return f"; {dtype_name}={self.fixed[dtype_name]} was fixed when the operator was made"
        source = self._inferred.get(dtype_name)
        if source is None or source == slot.name:
            return ""
        return (
            f"; {dtype_name}={slot.dtype} was taken from parameter {source!r} "
            f"({_describe(by_name[source])}), and every tensor annotated {dtype_name} shares it"
        )

    def _same_device(self, values: list[Any]) -> torch.device:
        """The argument tensors' device; a `ValueError` naming two parameters on two
        devices (torch's own operators refuse them too)."""
        first = None
        for name, value in zip(self._names, values, strict=True):
            if isinstance(value, torch.Tensor):
                if first is None:
                    first = (name, value.device)
                elif value.device != first[1]:
                    raise ValueError(
                        f"{self.name}: parameter {first[0]!r} is on {first[1]}, but parameter "
                        f"{name!r} is on {value.device}; pass every tensor on one device"
                    )
        assert first is not None  # the operator has an argument tensor (`__init__`)
        return first[1]

    def _tuned_spec(self, variant: _Variant, arguments: dict[str, Any]) -> Specialization:
        """The specialization of the config the tuner picks for this call's key (its
        decision is per key, so the same shapes reach it in a dictionary lookup)."""
        if os.environ.get("TILELANG_AUTOTUNE", "").lower() == "off":
            config = self._first  # what a direct call of the tuner runs then
        else:
            config = self.tuner.best(**arguments, **variant.constexprs)
        key = tuple(sorted((k, repr(v)) for k, v in config.items()))
        found = variant.tuned.get(key)
        if found is None:
            found = self.kernel.specialization(**variant.constexprs, **config)
            self._same_signature(OpSignature.of(found.function, self.mutates), config)
            variant.tuned[key] = found
        return found

    def _shapes_of(self, variant: _Variant, values: list[Any]) -> dict[str, tuple]:
        shapes = {}
        for slot, value in zip(variant.signature.arguments, values, strict=True):
            if isinstance(slot, TensorSlot):
                shape = tuple(value.shape)
                if td.is_packed(slot.dtype):
                    shape = td.logical_shape(slot.dtype, shape, self._where(slot))
                shapes[slot.name] = shape
        return shapes

    def _sizes(self, variant: _Variant, values: list[Any]) -> dict[str, Any]:
        """The size variables these arguments bind; a size error about a packed tensor
        says how its torch.uint8 bytes count as elements (the rules count elements)."""
        try:
            return variant.signature.sizes(self._shapes_of(variant, values))
        except ValueError as error:
            notes = [
                f"{slot.name!r} is a packed {slot.dtype} tensor: its torch.uint8 last "
                f"dimension of {value.shape[-1]} bytes holds "
                f"{value.shape[-1] * 8 // slot.dtype.bits} {slot.dtype} elements"
                for slot, value in zip(variant.signature.arguments, values, strict=True)
                if isinstance(slot, TensorSlot)
                and td.is_packed(slot.dtype)
                and f"{slot.name!r}" in str(error)
                and value.dim() > 0
            ]
            if not notes:
                raise
            raise ValueError(f"{error} ({'; '.join(notes)})") from error

    def _lookup(self, values: list[Any]) -> _Shaped:
        """The operator at these arguments' dtypes and shapes: one key, one lookup."""
        key = tuple([(v.dtype, v.shape) if isinstance(v, torch.Tensor) else None for v in values])
        found = self._shaped.get(key)
        if found is None:
            variant = self._variant(values)
            sizes = self._sizes(variant, values)
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
        self._same_device(values)
        variant = self._variant(values)
        sizes = self._sizes(variant, values)
        like = next(v for v in values if isinstance(v, torch.Tensor))
        outputs = [
            like.new_empty(shape, dtype=dtype)
            for shape, dtype in self._output_forms(variant.signature, sizes)
        ]
        return self._returned(outputs)

    def _cpu(self, *args: Any, **kwargs: Any) -> Any:
        values = self._bound(args, kwargs)
        self._same_device(values)
        shaped = self._lookup(values)
        variant = shaped.variant
        outputs = [torch.empty(shape, dtype=dtype) for shape, dtype in shaped.outputs]
        every = [*values, *outputs]
        # The kernel's runtime parameters by name, each as its precomputed form takes it;
        # run on the specialization the variant holds (no constexpr lookup per call).
        arguments = {name: form(every[at]) for name, form, at in variant.host}
        spec = variant.spec if self.tuner is None else self._tuned_spec(variant, arguments)
        self.kernel.run(spec, arguments)
        return self._returned(outputs)

    def _cuda(self, *args: Any, **kwargs: Any) -> Any:
        values = self._bound(args, kwargs)
        device = self._same_device(values)
        if device.index not in (None, 0):
            raise ValueError(
                f"{self.name}: tilelang launches on CUDA device 0 (its primary context), "
                f"got tensors on {device}"
            )
        shaped, outputs, arguments = self.device_arguments(values, device)
        # The kernel's own GPU call: its checks, its build for the device and, for a call
        # like an earlier one, its warm path (`tilelang.runtime.warm_calls`); it launches
        # on torch's current stream. An autotuned operator's tuner picks the config.
        (self.tuner or self.kernel)(*arguments, **shaped.variant.constexprs)
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
        constexprs = {**variant.constexprs, **self._first}
        return self.kernel.compile(assume=size_facts(sizes), target=target, **constexprs)

    def build_for(self, *args: Any, target: str = "sm_90", **kwargs: Any) -> CompiledKernel:
        """What the CUDA implementation would launch for these (CPU or meta) tensors,
        compiled for `target` without a GPU: for inspection and tests."""
        values = self._bound(args, kwargs)
        variant = self._variant(values)
        sizes = self._sizes(variant, values)
        return self.compile(target, variant, sizes)


def _register(name: str, schema: str, cpu, cuda, fake) -> torch.library.Library:
    """Defines the operator `name` with `schema` and its CPU, CUDA and fake kernels.

    Registered with `torch.library.Library` itself rather than through
    `torch.library.custom_op`, whose Python layers (an autograd wrapper that
    re-dispatches, a dynamo-disable wrapper, a device lookup) cost about 30 us a call
    on their own, over the bridge's whole budget. What custom_op would add beyond the
    kernels is said here: the operator is pt2-compliant (its Autograd kernel is
    `TorchOp`'s: a fall-through, or `TorchOp.register_autograd`'s derivative)."""
    namespace, short = name.split("::")
    library = torch.library.Library(namespace, "FRAGMENT")
    library.define(short + schema, tags=(torch.Tag.pt2_compliant_tag,))
    library.impl(short, cpu, "CPU")
    library.impl(short, cuda, "CUDA")
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


def _is_autotuned(kernel: Any) -> bool:
    """Whether `kernel` is a `tl.autotune` (`tilelang.tuning.Autotuned`, a layer above
    this one: recognized by what the operator uses of it)."""
    return isinstance(getattr(kernel, "kernel", None), Kernel) and all(
        hasattr(kernel, name) for name in ("configs", "best")
    )


def _has_gradient(result: Any) -> bool:
    if isinstance(result, torch.Tensor):
        return result.requires_grad
    return isinstance(result, tuple) and any(t.requires_grad for t in result)


def _shapes_text(signature: OpSignature) -> str:
    shapes = (f"{s.name}[{', '.join(map(str, s.dims))}]" for s in signature.outputs)
    return ", ".join(shapes) or "none"


def _check_argument(
    op_name: str, slot: TensorSlot | ScalarSlot, value: Any, origin: Callable[[], str]
) -> None:
    """`value` fits `slot`, or a TypeError naming it (`origin()`: where the expected
    dtype came from, asked only for the message)."""
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
        raise TypeError(f"{where} expects a tensor of {how}, got {_describe(value)}{origin()}")


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
