"""The state of a torch module whose weight is a `tilelang.quant` weight: `WeightModule`,
the base of `QuantLinear` (one `QuantizedWeight`) and `QuantMoE` (`QuantizedExperts`:
one stacked weight and its number of experts).

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

Handle. The weight is not a tensor the kernels read as it is (its codes are packed for
them once), so the module's operator finds the weight by a handle: an int, each
module's own (a copy or an unpickled module takes a new one), naming an entry of a
process-wide table (`WEIGHTS`, dropped when the module is collected). The operator also
takes the weight's buffers, and the entry records which tensors (address, version
counter, shape, dtype, device) its weight was built from: when they are not the ones
given (loaded, moved, modified in place) the weight is rebuilt from them (`held`), so a
module never computes with a weight its buffers do not hold. torch.compile sees the
handle as a constant of the module and the buffers as inputs: no graph break.

Casts. ``.half()``, ``.bfloat16()`` and ``.to(dtype)`` to f16 or bf16 re-encode the
scales of integer and ExMy weights (`QuantizedWeight.with_scale_dtype`: exact where the
type holds them, else rounded to nearest even with a `ScaleRoundingWarning`);
``.float()`` leaves them. MX and NVFP4 scales serve both types as they are.
"""

from __future__ import annotations

import itertools
import json
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from tilelang import dtypes
from tilelang.quant import QuantizedWeight, io
from tilelang.quant.formats import get_format

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


@dataclass(frozen=True)
class Entry:
    """A module's weight (a `QuantizedWeight`, `QuantizedExperts`) and what identifies
    the tensors it was built from."""

    key: tuple
    weight: Any


#: The weights of the live modules, by handle.
WEIGHTS: dict[int, Entry] = {}
_HANDLES = itertools.count(1)


def new_handle(module: nn.Module) -> int:
    """A handle of `module`'s own; its entry goes when the module is collected."""
    handle = next(_HANDLES)
    weakref.finalize(module, WEIGHTS.pop, handle, None)
    return handle


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


def held(handle: int, tensors: tuple, build: Build, where: str) -> Any:
    """The weight registered under `handle` if it was built from `tensors` (the weight
    buffers and ``meta``, as they are now), else `build(tensors, where)`, registered."""
    key = fingerprint(tensors)
    entry = WEIGHTS.get(handle)
    if entry is None or entry.key != key:
        entry = Entry(key, build(tensors, where))
        WEIGHTS[handle] = entry
    return entry.weight


def meta_tensor(weight: QuantizedWeight, own: dict[str, Any]) -> torch.Tensor:
    """The weight's fields besides its arrays, the version and the module's `own`
    fields, as the uint8 bytes of their JSON."""
    fields: dict[str, Any] = {
        name: np.asarray(value).tolist()
        for name, value in weight.arrays().items()
        if name not in WEIGHT_BUFFERS and value is not None
    }
    fields["version"] = io.VERSION
    fields.update(own)
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
    for name, tensor in zip(WEIGHT_BUFFERS, arrays_of, strict=True):
        if tensor is not None:
            value = tensor.detach().cpu().contiguous().numpy()
            if name == "scale_codes":
                value = value.view(f"u{value.dtype.itemsize}")
            arrays[name] = value
    return QuantizedWeight.from_arrays(arrays, where), fields


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
        """A new module's handle, and `weight` (checked by the subclass) its buffers."""
        self.handle = new_handle(self)
        self._adopt(weight)

    def _held(self) -> Any:
        """The weight object the buffers hold (rebuilt from them, once, after they
        changed: module docstring)."""
        return held(self.handle, self._weight_tensors(), self._from_tensors, f"{self.NAME} buffers")

    def _weight_tensors(self) -> tuple:
        return tuple(self._buffers.get(name) for name in (*WEIGHT_BUFFERS, META))

    def _adopt(self, weight: Any) -> None:
        """`weight` becomes the module's: its arrays the buffers (sharing their memory
        where numpy lends it writeable), on the device the buffers were on."""
        old = self._buffers.get("codes")
        device = None if old is None else old.device
        stacked, own = self._parts(weight)
        arrays = stacked.arrays()
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
        WEIGHTS[self.handle] = Entry(fingerprint(self._weight_tensors()), weight)
        self._shapes(weight)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A copy (copy.copy, deepcopy) or an unpickled module: a handle of its own,
        and buffers of its own (shared tensors after copy.copy, as torch's modules do)."""
        super().__setstate__(state)
        self.__dict__["_buffers"] = dict(self._buffers)
        pickled = self.__dict__.pop(self.PICKLED, None)  # a module of the first form
        source = WEIGHTS.get(state.get("handle"))
        self.handle = new_handle(self)
        if META not in self._buffers and isinstance(pickled, self.HELD):
            self._adopt(pickled)
        elif source is not None and source.key == fingerprint(self._weight_tensors()):
            WEIGHTS[self.handle] = source  # copy.copy: the same tensors, the same weight

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
    ) -> None:
        # The saved weight may have other shapes than this module's (another group size,
        # packing, dtype), and optional arrays this one lacks: each buffer is made to the
        # saved one's shape and dtype first, then filled by the usual copy.
        where = f"{self.NAME} state_dict"
        loading = prefix + META in state_dict
        if loading:
            given = tuple(state_dict.get(prefix + name) for name in (*WEIGHT_BUFFERS, META))
            if all(t is None or isinstance(t, torch.Tensor) for t in given):
                self._from_tensors(given, where)  # refused before any buffer changes
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
        if loading and len(errors) == failed:  # built from the buffers, not the caller's
            self._register(self._from_tensors(self._weight_tensors(), where))

    def _apply(self, fn, recurse: bool = True):
        # `.half()`, `.bfloat16()`, `.to(dtype)` convert float tensors: the scales follow
        # (module docstring). What `fn` makes of an f32 tensor says what it does.
        target = TORCH_TYPES.get(fn(torch.empty(0, dtype=torch.float32)).dtype)
        converted = None
        if target is not None:
            weight, own = self._parts(self._held())
            if get_format(weight.format).kind == "scaled" and weight.scale_dtype != target:
                converted = self._assemble(weight.with_scale_dtype(target), own)
        super()._apply(fn, recurse)
        if converted is not None:
            self._adopt(converted)
        return self
