"""The state of a torch module whose weight is a `tilelang.quant` weight: `WeightModule`,
the base of `QuantLinear` (one `QuantizedWeight`) and `QuantMoE` (`QuantizedExperts`:
one stacked weight and its number of experts), and how their operators find it.

Buffers. The module's buffers are its weight, all of it, and all tensors: ``codes``
(uint8, the packed code bytes), ``scale_codes`` (the scales' bit patterns as the signed
integer of their width, so a float cast does not touch them), ``zeros`` (int32) and
``perm`` (int64) when the weight has them (the arrays of `QuantizedWeight.arrays()`),
and ``meta`` (uint8: the UTF-8 JSON of the other fields: format, dtypes, shape, group
size, packing, tensor scale, ``version`` (the `tilelang.quant.io` version of those
fields) and the module's own, such as a QuantMoE's ``experts``). So the state_dict is
plain tensors: `load_state_dict`, `torch.save`/`torch.load` (weights_only too) and
`safetensors.torch.save_file`/`load_file` round-trip a model. Loading makes each buffer
the saved one's shape and dtype first, so a state_dict saved with another weight's
shapes (group size, packing, dtype, number of experts) loads into any module of the
class, then rebuilds the weight from the buffers: checked at the load, not at a call.
A state_dict whose ``meta`` holds another class's own fields is refused, naming it.

A constant zero point (symmetric uN: every zero point 2^(N−1); GPTQ sym) is no buffer:
``meta`` holds it as the integer ``zeros`` and the weight gets it back as one value
broadcast to [groups, N] (no memory). The kernels never read it either (they read such
codes as signed ones: `tilelang.quant.operands`). A ``zeros`` buffer of a state_dict
saved before this (all equal or not) still loads as it is. A tilelang that predates it
refuses such a ``meta`` (its scalar ``zeros`` is not [groups, N]) rather than compute
without the zero point.

Finding the weight. The weight is not a tensor the kernels read as it is (its codes are
packed for them once, device copies made once), so it lives in a process-wide table
(`WEIGHTS`) and the operator finds it from the buffers it is given: no int of the
module travels to it, so torch.compile traces every module of a class as one graph
(an int attribute would be a constant the graph specializes on: a recompile per
layer), and nothing but the module's tensors is an input (no CPU tensor that would keep
inductor from CUDA graphs). The table is keyed by where the buffers are (device and
address of each), and an entry records what they were when its weight was built
(address, version counter, shape, dtype, device: `fingerprint`) and holds a weak
reference to each of those tensor objects. A call whose buffers match an entry whose
tensors are all alive uses its weight; any other builds the weight from the buffers
and replaces the entry (`held`), so loaded, moved or in-place modified buffers are
always the weight computed with. Addresses are reused once memory is freed, so an entry
is trusted only while the tensors it was built from live (they hold that memory, so no
other tensor can have it), and it is dropped when the first of them is collected (the
weak reference's callback): a collected module's entry goes with its buffers. Modules
that share their tensors (copy.copy) share the entry; a deepcopy or an unpickled module
has tensors of its own and builds its weight at its first use. The lookup reads only
tensor metadata (no device-to-host copy, no allocation), so a warmed-up CUDA call can
be captured in a CUDA graph; a build reads the buffers on the host, so it belongs
before the capture (a warm-up call), as do the kernels' own first calls. Inference
tensors have no version counter: an in-place change of one goes unseen.

Meta device. A module made on the meta device (`QuantLinear.empty`, `from_linear` of a
meta linear) has buffers of the right shapes and no values: it has no weight until a
state_dict is loaded (``assign=True``, or after ``to_empty``); asking for it before says
so. Loading without ``assign`` into meta buffers leaves them meta, as torch does.

Operators. ``tilelang::quant_linear`` and ``tilelang::quant_moe`` are defined with
`torch.library.Library` (`define_op`): CPU and CUDA kernels, a fake one, and either a
derivative (`define_op`'s `backward`, registered with `torch.library.register_autograd`:
``tilelang::quant_linear``'s gradients for x and the bias, none for the buffers) or
Autograd falling through, as `tilelang.torch.op`'s operators without one
(``tilelang::quant_moe``): no gradient flows, a result never requires grad, and the
first call with an input that requires grad warns `tilelang.torch.NoGradientWarning`
(`warn_no_gradient`; not under torch.compile).

Casts. ``.half()``, ``.bfloat16()`` and ``.to(dtype)`` to f16 or bf16 re-encode the
scales of integer and ExMy weights (`QuantizedWeight.with_scale_dtype`: exact where the
type holds them, else rounded to nearest even with a `ScaleRoundingWarning`);
``.float()`` leaves them. MX and NVFP4 scales serve both types as they are.
"""

from __future__ import annotations

import functools
import json
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from tilelang import dtypes
from tilelang.quant import QuantizedWeight, io
from tilelang.quant.formats import get_format
from tilelang.runtime import host_calls

#: The weight's arrays (`QuantizedWeight.arrays()`) a module keeps as buffers.
WEIGHT_BUFFERS = ("codes", "scale_codes", "zeros", "perm")
#: The buffer of the weight's other fields and the module's own (module docstring).
META = "meta"
#: The activation types whose casts the scales follow (module docstring).
TORCH_TYPES = {torch.float16: dtypes.f16, torch.bfloat16: dtypes.bf16}

#: The fields of ``meta`` that are a module class's own, by field: the class's name.
_OWNERS: dict[str, str] = {}

#: Builds a module's weight object from its tensors (`WEIGHT_BUFFERS`, then ``meta``);
#: the second argument names them in errors.
Build = Callable[[tuple, str], Any]


@dataclass(frozen=True, eq=False)
class Entry:
    """A weight (a `QuantizedWeight`, `QuantizedExperts`), what identifies the tensors it
    was built from (`fingerprint`) and weak references to them (module docstring)."""

    key: tuple
    refs: tuple
    weight: Any
    token: object  # what the references' callbacks know the entry by

    def holds(self, key: tuple) -> bool:
        """Whether the weight is that of tensors that are now `key`."""
        return self.key == key and all(ref() is not None for ref in self.refs)


#: The weights of live tensors, by where the tensors are (`address`).
WEIGHTS: dict[tuple, Entry] = {}


def _version(tensor: torch.Tensor) -> int | None:
    try:
        return tensor._version
    except RuntimeError:  # an inference tensor has no version counter
        return None


def fingerprint(tensors: tuple) -> tuple:
    """What identifies `tensors` as they are now (module docstring)."""
    return tuple(
        None if t is None else (t.data_ptr(), _version(t), t.dtype, t.shape, t.device)
        for t in tensors
    )


def address(key: tuple) -> tuple:
    """The table's key for tensors of fingerprint `key`: each one's device and address."""
    return tuple(None if part is None else (part[4], part[0]) for part in key)


def _forget(where: tuple, token: object, _ref: Any) -> None:
    # A weak reference's callback: one of the entry's tensors was collected, so its
    # memory may hold another tensor soon. A newer entry at the same place stays.
    entry = WEIGHTS.get(where)
    if entry is not None and entry.token is token:
        del WEIGHTS[where]


def register(tensors: tuple, weight: Any) -> None:
    """Records `weight` as the one `tensors` (as they are now) hold."""
    key = fingerprint(tensors)
    where, token = address(key), object()
    forget = functools.partial(_forget, where, token)
    refs = tuple(weakref.ref(t, forget) for t in tensors if t is not None)
    WEIGHTS[where] = Entry(key, refs, weight, token)


def held(tensors: tuple, build: Build, where: str) -> Any:
    """The weight recorded for `tensors` (the weight buffers and ``meta``, as they are
    now) while the tensors it was built from live, else `build(tensors, where)`,
    recorded (module docstring)."""
    key = fingerprint(tensors)
    entry = WEIGHTS.get(address(key))
    if entry is not None and entry.holds(key):
        return entry.weight
    check_not_meta(tensors, where)
    weight = build(tensors, where)
    register(tensors, weight)
    return weight


def check_not_meta(tensors: Iterable[Any], where: str) -> None:
    """A ValueError when the buffers are on the meta device (module docstring)."""
    if any(t is not None and t.device.type == "meta" for t in tensors):
        raise ValueError(
            f"{where} are on the meta device (a module made without its values): load a "
            f"state_dict first (load_state_dict(sd, assign=True), or to_empty(device=...) "
            f"then load_state_dict(sd))"
        )


def define_op(
    name: str,
    schema: str,
    forward: Callable,
    fake: Callable,
    backward: Callable | None = None,
    setup_context: Callable | None = None,
) -> Any:
    """The operator `name` with `schema`: `forward` its CPU and CUDA kernel, `fake` its
    fake one; `backward` and `setup_context` its derivative
    (`torch.library.register_autograd`'s), else Autograd falling through (module
    docstring). Returns its overload."""
    namespace, short = name.split("::")
    library = torch.library.Library(namespace, "FRAGMENT")
    library.define(short + schema, tags=(torch.Tag.pt2_compliant_tag,))
    library.impl(short, forward, "CPU")
    library.impl(short, forward, "CUDA")
    if backward is None:
        library.impl(short, torch.library.fallthrough_kernel, "Autograd")
    else:  # registered once, in place of the fall-through: no override warning
        torch.library.register_autograd(name, backward, setup_context=setup_context, lib=library)
    torch.library.register_fake(name, fake, lib=library)
    _LIBRARIES.append(library)  # a Library's registrations go when it is collected
    return getattr(getattr(torch.ops, namespace), short).default


_LIBRARIES: list[torch.library.Library] = []


def warn_no_gradient(name: str, inputs: tuple) -> None:
    """`NoGradientWarning` for `name`, once, when an input requires grad in grad mode;
    nothing under torch.compile (Dynamo cannot trace the warning's frame walk)."""
    if not torch.compiler.is_compiling() and torch.is_grad_enabled():
        host_calls.warn_no_gradient(name, inputs)


def meta_tensor(weight: QuantizedWeight, own: dict[str, Any]) -> torch.Tensor:
    """The weight's fields besides its arrays, a constant zero point, the version and
    the module's `own` fields, as the uint8 bytes of their JSON."""
    fields: dict[str, Any] = {
        name: np.asarray(value).tolist()
        for name, value in weight.arrays().items()
        if name not in WEIGHT_BUFFERS and value is not None
    }
    zero = constant_zero(weight)
    if zero is not None:
        fields["zeros"] = zero
    fields["version"] = io.VERSION
    fields.update(own)
    return json_tensor(fields)


def json_tensor(fields: dict[str, Any]) -> torch.Tensor:
    """`fields` as the uint8 bytes of their JSON (a ``meta`` buffer)."""
    text = json.dumps(fields, sort_keys=True).encode()
    return torch.frombuffer(bytearray(text), dtype=torch.uint8)


def constant_zero(weight: QuantizedWeight) -> int | None:
    """The weight's zero point when every group and column has the same one."""
    zeros = weight.zeros
    if zeros is None or zeros.size == 0:
        return None
    first = int(zeros.flat[0])
    return first if bool((zeros == first).all()) else None


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
    return known_version(fields, where)


def known_version(fields: dict[str, Any], where: str) -> dict[str, Any]:
    """`fields` if their ``version`` is one this tilelang reads; else a ValueError."""
    version = fields.get("version")
    if isinstance(version, bool) or version not in io.READS:
        raise ValueError(
            f"{where}: the weight's fields are version {version!r}; this tilelang reads "
            f"versions {', '.join(map(str, io.READS))} (a newer one needs a newer tilelang)"
        )
    return fields


def weight_from_tensors(
    tensors: tuple, where: str, own: tuple[str, ...] = ()
) -> tuple[QuantizedWeight, dict[str, Any]]:
    """The weight the buffers (`WEIGHT_BUFFERS` and ``meta``, in that order) hold, and
    the module's `own` fields of ``meta`` (each required; another class's refused)."""
    *arrays_of, meta = tensors
    if meta is None:
        raise ValueError(f"{where}: no {META} buffer (the weight's fields)")
    arrays = _meta_fields(meta, where)
    foreign = sorted(name for name in arrays if name in _OWNERS and name not in own)
    if foreign:
        owner = _OWNERS[foreign[0]]
        raise ValueError(
            f"{where}: {META} holds {foreign[0]!r}, a field of {owner}: this is a {owner}'s "
            f"state, load it into a {owner}"
        )
    missing = [name for name in own if name not in arrays]
    if missing:
        raise ValueError(f"{where}: {META} lacks {', '.join(map(repr, missing))}")
    fields = {name: arrays.pop(name) for name in own}
    zero = arrays.pop("zeros", None)
    for name, tensor in zip(WEIGHT_BUFFERS, arrays_of, strict=True):
        if tensor is not None:
            value = tensor.detach().cpu().contiguous().numpy()
            if name == "scale_codes":
                value = value.view(f"u{value.dtype.itemsize}")
            arrays[name] = value
    if zero is not None:
        arrays["zeros"] = _broadcast_zero(zero, arrays, where)
    return QuantizedWeight.from_arrays(arrays, where), fields


def _broadcast_zero(zero: Any, arrays: dict[str, Any], where: str) -> np.ndarray:
    """``meta``'s constant zero point as the [groups, N] zero points (one value, no
    memory): the scales' shape."""
    if isinstance(zero, bool) or not isinstance(zero, int):
        raise ValueError(
            f"{where}: {META}'s zeros must be an integer (the constant zero point), got {zero!r}"
        )
    if "zeros" in arrays:
        raise ValueError(
            f"{where}: zero points given twice: a zeros buffer and {META}'s constant {zero}"
        )
    scales = arrays.get("scale_codes")
    shape = () if scales is None else scales.shape
    return np.broadcast_to(np.int32(zero), shape)


def shared(array: np.ndarray) -> torch.Tensor:
    """A CPU tensor over `array`'s memory (a copy where numpy's is read-only or strided)."""
    if not (array.flags.writeable and array.flags.c_contiguous):
        array = np.ascontiguousarray(array).copy()
    return torch.from_numpy(array)


class WeightModule(nn.Module):
    """A module whose state is a quantized weight kept as buffers (module docstring).
    A subclass names itself (`NAME`), its weight object's type (`HELD`, the attribute
    `PICKLED` held it in modules pickled before ``meta``), the meta fields of its own
    (`OWN`) and other buffers a state_dict may lack (`EXTRA`), and says how its weight
    object splits into a `QuantizedWeight` and those fields and back (`_parts`,
    `_assemble`); `_shapes` sets its size attributes. `__init__` calls `_start`."""

    NAME: ClassVar[str]
    HELD: ClassVar[type]
    PICKLED: ClassVar[str]
    OWN: ClassVar[tuple[str, ...]] = ()
    EXTRA: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls.OWN:
            _OWNERS[name] = cls.NAME

    @staticmethod
    def _parts(weight: Any) -> tuple[QuantizedWeight, dict[str, Any]]:
        raise NotImplementedError

    @staticmethod
    def _assemble(weight: QuantizedWeight, own: dict[str, Any]) -> Any:
        raise NotImplementedError

    def _shapes(self, weight: Any) -> None:
        raise NotImplementedError

    @classmethod
    def _from_tensors(cls, tensors: tuple, where: str) -> Any:
        """The weight object `tensors` (`WEIGHT_BUFFERS`, then ``meta``) hold; a
        ValueError names `where` and what is wrong."""
        weight, own = weight_from_tensors(tensors, where, cls.OWN)
        try:
            return cls._assemble(weight, own)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: {error}") from None

    def _start(self, weight: Any) -> None:
        """`weight` (checked by the subclass) becomes the new module's buffers."""
        self._adopt(weight)

    def _held(self) -> Any:
        """The weight object the buffers hold (rebuilt from them, once, after they
        changed: module docstring)."""
        return held(self._weight_tensors(), self._from_tensors, f"{self.NAME} buffers")

    def _weight_tensors(self) -> tuple:
        return tuple(self._buffers.get(name) for name in (*WEIGHT_BUFFERS, META))

    def _on_meta(self) -> bool:
        """Whether the buffers are on the meta device (no values: module docstring)."""
        return any(t is not None and t.device.type == "meta" for t in self._weight_tensors())

    def _adopt(self, weight: Any) -> None:
        """`weight` becomes the module's: its arrays the buffers (sharing their memory
        where numpy lends it writeable; a constant zero point in ``meta``), on the
        device the buffers were on."""
        old = self._buffers.get("codes")
        device = None if old is None else old.device
        stacked, own = self._parts(weight)
        arrays = stacked.arrays()
        if constant_zero(stacked) is not None:
            arrays["zeros"] = None  # in meta (module docstring)
        tensors = {META: meta_tensor(stacked, own)}
        for name in WEIGHT_BUFFERS:
            value = arrays[name]
            if name == "scale_codes":
                value = value.view(f"i{value.dtype.itemsize}")
            tensors[name] = None if value is None else shared(value)
        for name, tensor in tensors.items():
            if tensor is not None and device is not None:
                tensor = tensor.to(device)
            self.register_buffer(name, tensor)
        self._register(weight)

    def _register(self, weight: Any) -> None:
        if not self._on_meta():
            register(self._weight_tensors(), weight)
        self._shapes(weight)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A copy (copy.copy, deepcopy) or an unpickled module: buffers of its own
        (shared tensors after copy.copy, as torch's modules do, and so the same entry of
        the table; other tensors find theirs at their first use)."""
        super().__setstate__(state)
        self.__dict__["_buffers"] = dict(self._buffers)
        self.__dict__.pop("handle", None)  # the int a module of the first design had
        pickled = self.__dict__.pop(self.PICKLED, None)  # a module of the first form
        if META not in self._buffers and isinstance(pickled, self.HELD):
            self._adopt(pickled)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
    ) -> None:
        # The saved weight may have other shapes than this module's (another group size,
        # packing, dtype), and optional arrays this one lacks: each buffer is made to the
        # saved one's shape and dtype first, then filled by the usual copy.
        where = f"{self.NAME} state_dict"
        loading = prefix + META in state_dict
        checked = None
        if loading:
            given = tuple(state_dict.get(prefix + name) for name in (*WEIGHT_BUFFERS, META))
            if all(t is None or isinstance(t, torch.Tensor) for t in given) and not any(
                t is not None and t.device.type == "meta" for t in given
            ):
                checked = self._from_tensors(given, where)  # refused before any change
            for name in (*WEIGHT_BUFFERS, META, *self.EXTRA):
                given = state_dict.get(prefix + name)
                if isinstance(given, torch.Tensor):
                    now = self._buffers.get(name)
                    device = given.device if now is None else now.device
                    self._buffers[name] = torch.empty_like(given, device=device)
                elif given is None and name in ("zeros", "perm", *self.EXTRA):
                    self._buffers[name] = None
        failed = len(errors)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
        )
        if loading and len(errors) == failed:
            if not self._on_meta():  # built from the buffers, not the caller's
                self._register(self._from_tensors(self._weight_tensors(), where))
            elif checked is not None:  # still no values (loaded without assign)
                self._shapes(checked)

    def _weight_or_none(self) -> Any:
        """The weight the buffers hold; None when they hold none yet (on the meta device,
        or `to_empty`'s values before a load): a cast has no scales to convert then, and
        a call says what is wrong."""
        if self._on_meta():
            return None
        try:
            return self._held()
        except ValueError:
            return None

    def _apply(self, fn, recurse: bool = True):
        # `.half()`, `.bfloat16()`, `.to(dtype)` convert float tensors: the scales follow
        # (module docstring). What `fn` makes of an f32 tensor says what it does.
        target = TORCH_TYPES.get(fn(torch.empty(0, dtype=torch.float32)).dtype)
        converted = None
        held_weight = self._weight_or_none() if target is not None else None
        if held_weight is not None:
            weight, own = self._parts(held_weight)
            if (
                get_format(weight.format).kind in ("scaled", "codebook")
                and weight.scale_dtype != target
            ):
                converted = self._assemble(weight.with_scale_dtype(target), own)
        super()._apply(fn, recurse)
        if converted is not None:
            self._adopt(converted)
        return self
