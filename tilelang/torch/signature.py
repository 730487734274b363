"""A kernel's parameters as a torch operator's signature: which tensors it takes, which
it mutates, which it returns, and the shapes and dtypes of what it returns.

The roles come from the kernel's block IR (one walk of a specialization):

* an *output* is a tensor parameter the kernel only stores to (`store`): the operator
  allocates it (torch.empty: every element must be stored by the kernel) and returns it;
* an *in-place* tensor is one the kernel stores to and also reads (a `load`, an atomic
  addition, an asynchronous copy): its old contents matter, so the caller passes it and
  the operator mutates it (`Tensor(a!)` in the schema, `mutates_args`); so is a tensor
  the kernel only stores to that `op(..., mutates=(name,))` names: the caller owns it
  (a KV cache the kernel writes one row of) and its sizes need be no other argument's;
* an *input* is a tensor the kernel only reads;
* scalars are `float` or `int` arguments.

The operator's Python signature is the kernel's runtime parameters in order with the
outputs left out: ``op(inputs and in-place tensors and scalars...) -> outputs`` (one
tensor, a tuple of them, or None when the kernel has no output).

Sizes are read from the argument tensors' shapes (that is where the fake implementation
and the launch read them): a size is a whole dimension of some argument (``"N"``), or,
when none has it whole, solved from an argument dimension where it appears once under
``+``, ``-`` and ``*`` by known terms (``gu: [R, 2 * I]`` gives I = gu.shape[1] // 2,
the call checking that the division is exact); ``//`` and ``%`` lose what they drop, so
a size only under them is unknown. Every size an output or argument dimension names
must be known, or the operator is refused when made.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tilelang.dtypes import DType
from tilelang.ir import nodes as ir
from tilelang.ir.instructions.memory import Store
from tilelang.ir.shape_expr import BinOp, Lit, ShapeExpr, Sym, symbols
from tilelang.ir.types import TensorType
from tilelang.ir.visit import walk
from tilelang.runtime.arguments import size_mismatch

INPUT, INPLACE, OUTPUT = "input", "in-place", "output"


@dataclass(frozen=True)
class TensorSlot:
    name: str
    dtype: DType
    dims: tuple[ShapeExpr, ...]  # logical, constexprs substituted
    role: str


@dataclass(frozen=True)
class ScalarSlot:
    name: str
    dtype: DType

    @property
    def schema_type(self) -> str:
        return "float" if self.dtype.is_float else "int"


Slot = TensorSlot | ScalarSlot


def tensor_roles(fn: ir.Function) -> dict[str, str]:
    """Each tensor parameter's role (`INPUT`, `INPLACE`, `OUTPUT`), by one walk of `fn`."""
    tensors = {p.name for p in fn.params if isinstance(p.type, TensorType)}
    stored: set[str] = set()
    read: set[str] = set()
    for instr in walk(fn):
        written = {v.name for v in instr.writes()}
        stored |= written
        # An unmasked store only writes its target; every other use of a tensor reads it
        # (an atomic addition reads what it adds to, a masked store keeps what it skips).
        only_written = written if isinstance(instr, Store) and instr.mask is None else set()
        read |= {v.name for v in instr.uses() if isinstance(v, ir.Var)} - only_written
    roles = {}
    for name in tensors:
        if name not in stored:
            roles[name] = INPUT
        else:
            roles[name] = INPLACE if name in read else OUTPUT
    return roles


def inplace_reasons(fn: ir.Function) -> dict[str, str]:
    """Why each tensor `fn` stores to is in place rather than an output, for messages:
    "reads" (a load, an atomic update: its old values are used) or "masked" (every use
    besides plain stores is a masked store, which keeps what the mask skips; a store at
    loaded indices is masked at the tensor's edge too)."""
    stored: set[str] = set()
    read: set[str] = set()
    masked: set[str] = set()
    for instr in walk(fn):
        written = {v.name for v in instr.writes()}
        stored |= written
        used = {v.name for v in instr.uses() if isinstance(v, ir.Var)}
        if isinstance(instr, Store):
            if instr.mask is not None:
                masked |= written
            used -= written
        read |= used
    return {name: "reads" if name in read else "masked" for name in stored & (read | masked)}


@dataclass(frozen=True)
class OpSignature:
    """The operator form of one kernel specialization (see the module docstring)."""

    kernel_name: str
    slots: tuple[Slot, ...]  # every runtime parameter, in the kernel's order

    @classmethod
    def of(cls, fn: ir.Function, mutates: tuple[str, ...] = ()) -> OpSignature:
        """`fn`'s signature; the tensors named in `mutates` that it only stores to are
        in-place arguments rather than outputs (a KV-cache row written at a position:
        the caller owns the cache, and its sizes are no other argument's)."""
        roles = tensor_roles(fn)
        for name in mutates:
            if roles.get(name) is None:
                raise ValueError(
                    f"{fn.name}(): mutates names {name!r}, which is no tensor parameter "
                    f"(its tensors: {', '.join(sorted(roles))})"
                )
            if roles[name] == INPUT:
                raise ValueError(
                    f"{fn.name}(): mutates names {name!r}, which the kernel only reads; "
                    "name tensors it stores to"
                )
            roles[name] = INPLACE
        slots: list[Slot] = []
        for p in fn.params:
            if isinstance(p.type, TensorType):
                slots.append(TensorSlot(p.name, p.type.dtype, tuple(p.type.shape), roles[p.name]))
            else:
                slots.append(ScalarSlot(p.name, p.type.dtype))
        signature = cls(fn.name, tuple(slots))
        signature._check_sizes_known()
        return signature

    @property
    def arguments(self) -> tuple[Slot, ...]:
        """The operator's arguments: every slot but the outputs, in the kernel's order."""
        return tuple(s for s in self.slots if not (isinstance(s, TensorSlot) and s.role == OUTPUT))

    @property
    def outputs(self) -> tuple[TensorSlot, ...]:
        return tuple(s for s in self.slots if isinstance(s, TensorSlot) and s.role == OUTPUT)

    @property
    def mutated(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.slots if isinstance(s, TensorSlot) and s.role == INPLACE)

    def roles(self) -> tuple[tuple[str, str], ...]:
        """What must stay the same across specializations of one operator."""
        return tuple((s.name, getattr(s, "role", "scalar")) for s in self.slots)

    def schema(self) -> str:
        """The torch schema, e.g. ``(Tensor x, Tensor(a!) acc, float eps) -> Tensor``."""
        parts, alias = [], 0
        for slot in self.arguments:
            if isinstance(slot, ScalarSlot):
                parts.append(f"{slot.schema_type} {slot.name}")
            elif slot.role == INPLACE:
                parts.append(f"Tensor({_alias_name(alias)}!) {slot.name}")
                alias += 1
            else:
                parts.append(f"Tensor {slot.name}")
        count = len(self.outputs)
        returns = "Tensor" if count == 1 else "(" + ", ".join(["Tensor"] * count) + ")"
        return f"({', '.join(parts)}) -> {returns}"

    def size_sites(self) -> dict[str, tuple[str, int]]:
        """Where each size is read: the first argument dimension that is exactly its name."""
        sites: dict[str, tuple[str, int]] = {}
        for slot in self.arguments:
            if isinstance(slot, TensorSlot):
                for axis, expr in enumerate(slot.dims):
                    if isinstance(expr, Sym):
                        sites.setdefault(expr.name, (slot.name, axis))
        return sites

    @functools.cached_property
    def solved_sites(self) -> tuple[tuple[str, str, int, ShapeExpr], ...]:
        """The sizes no argument has whole, each solved from the first argument dimension
        that names it once under +, - and * by sizes already known (`_solvable`), in
        the order they are solved: (size, parameter, axis, that dimension's expression)."""
        known = set(self.size_sites())
        solved: list[tuple[str, str, int, ShapeExpr]] = []
        progress = True
        while progress:
            progress = False
            for slot in self.arguments:
                if not isinstance(slot, TensorSlot):
                    continue
                for axis, expr in enumerate(slot.dims):
                    name = _solvable(expr, known)
                    if name is not None:
                        known.add(name)
                        solved.append((name, slot.name, axis, expr))
                        progress = True
        return tuple(solved)

    def _origins(self) -> dict[str, str]:
        """Each size's source, for messages: "x.shape[0]", or "gu.shape[1] = 2 * I"."""
        origin = {name: f"{p}.shape[{a}]" for name, (p, a) in self.size_sites().items()}
        for name, param, axis, expr in self.solved_sites:
            origin[name] = f"{param}.shape[{axis}] = {expr}"
        return origin

    def _check_sizes_known(self) -> None:
        known = set(self.size_sites()) | {site[0] for site in self.solved_sites}
        tensors = [s for s in self.slots if isinstance(s, TensorSlot)]
        for slot in sorted(tensors, key=lambda s: s.role != OUTPUT):  # outputs first
            for expr in slot.dims:
                unknown = [name for name in symbols(expr) if name not in known]
                if not unknown:
                    continue
                kind = "output" if slot.role == OUTPUT else "parameter"
                remedy = (
                    f", or pass mutates=({slot.name!r},) to tilelang.torch.op to have the "
                    "caller pass the tensor, modified in place"
                    if slot.role == OUTPUT
                    else ""
                )
                raise ValueError(
                    f"{self.kernel_name}(): {kind} {slot.name!r} has size "
                    f"{', '.join(unknown)}, which no argument tensor gives (as a whole "
                    "dimension, or once under +, - and * as in 2 * I or I + 1; // and % "
                    "drop what they divide away), so the operator cannot tell it; pass it "
                    "as a tl.constexpr, give an argument tensor that dimension" + remedy
                )

    def sizes(self, shapes: Mapping[str, tuple]) -> dict[str, Any]:
        """The sizes read from the arguments' logical `shapes` (ints or torch SymInts),
        every argument's rank and its other dimensions checked (`ValueError` naming the
        parameter; symbolic dimensions become torch guards)."""
        tensors = [s for s in self.arguments if isinstance(s, TensorSlot)]
        for slot in tensors:
            if len(shapes[slot.name]) != len(slot.dims):
                dims = ", ".join(str(d) for d in slot.dims)
                raise ValueError(
                    f"{self._where(slot)} expects {len(slot.dims)} dimensions [{dims}], got "
                    f"shape {list(shapes[slot.name])}"
                )
        sites = self.size_sites()
        sizes = {name: shapes[param][axis] for name, (param, axis) in sites.items()}
        for name, param, axis, expr in self.solved_sites:
            sizes[name] = self._solve(expr, name, shapes[param][axis], sizes, param, axis)
        for slot in tensors:
            for axis, expr in enumerate(slot.dims):
                actual, expected = shapes[slot.name][axis], evaluate(expr, sizes)
                if isinstance(expected, int) and isinstance(actual, int):
                    if expected == actual:
                        continue
                    raise ValueError(self._mismatch(slot, axis, expected, actual, sizes))
                import torch  # symbolic sizes exist only while torch traces

                torch._check(
                    actual == expected,
                    functools.partial(self._mismatch, slot, axis, expected, actual, sizes),
                )
        return sizes

    def _solve(self, expr: ShapeExpr, name: str, actual, sizes, param: str, axis: int):
        """The size `name` that makes `expr` (a `_solvable` one) equal the argument
        dimension `actual`: each +, - and * undone; a product that does not divide (or a
        negative size) is a `ValueError` naming the parameter (a torch guard when
        symbolic)."""
        where = f"{self.kernel_name}(): parameter {param!r}"
        whole, value = expr, actual
        while isinstance(expr, BinOp):
            left = name in symbols(expr.lhs)
            side, other = (expr.lhs, expr.rhs) if left else (expr.rhs, expr.lhs)
            known = evaluate(other, sizes)
            if expr.op == "+":
                value = value - known
            elif expr.op == "-":
                value = value + known if left else known - value
            else:
                _require(
                    known != 0 and value % known == 0,
                    lambda k=known: (
                        f"{where}: dimension {axis} should be {whole}, got "
                        f"{actual}, which is no multiple of {k}, so no whole {name} gives it"
                    ),
                )
                value = value // known
            expr = side
        _require(
            value >= 0,
            lambda: (
                f"{where}: dimension {axis} should be {whole}, got {actual}, which "
                f"would make {name} = {value}"
            ),
        )
        return value

    def _mismatch(self, slot: TensorSlot, axis: int, expected, actual, sizes) -> str:
        """The kernel's own call's message (`tilelang.runtime.arguments.size_mismatch`)."""
        origin = self._origins()
        expr = slot.dims[axis]
        where = self._where(slot)
        return size_mismatch(where, axis, expr, expected, actual, sizes, origin, slot.dims)

    def _where(self, slot: TensorSlot) -> str:
        return f"{self.kernel_name}(): parameter {slot.name!r}"

    def output_shapes(self, sizes: Mapping[str, Any]) -> tuple[tuple, ...]:
        """Each output's logical shape at `sizes`."""
        return tuple(tuple(evaluate(e, sizes) for e in slot.dims) for slot in self.outputs)


def _solvable(expr: ShapeExpr, known: set[str]) -> str | None:
    """The one unknown size `expr` can be solved for: named once, reached through +, -
    and * only, every other term known (sizes in `known`, literals); else None."""
    unknown = [name for name in symbols(expr) if name not in known]
    if len(unknown) != 1 or isinstance(expr, Sym):
        return None
    name = unknown[0]
    while isinstance(expr, BinOp):
        if expr.op not in "+-*":
            return None
        in_lhs, in_rhs = name in symbols(expr.lhs), name in symbols(expr.rhs)
        if in_lhs == in_rhs:  # both sides: I * I, I + I - solving is no single division
            return None
        expr = expr.lhs if in_lhs else expr.rhs
    return name if isinstance(expr, Sym) else None


def _require(condition: Any, message) -> None:
    """`message()` as a ValueError when `condition` is False; a torch guard when it is
    symbolic (a SymBool under torch.compile)."""
    if isinstance(condition, bool):
        if not condition:
            raise ValueError(message())
        return
    import torch  # symbolic sizes exist only while torch traces

    torch._check(condition, message)


def _alias_name(index: int) -> str:
    return "abcdefghijklmnopqrstuvwxyz"[index] if index < 26 else f"a{index}"


def evaluate(expr: ShapeExpr, sizes: Mapping[str, Any]) -> Any:
    """`expr` at `sizes`, with Python arithmetic, so torch SymInts evaluate symbolically."""
    if isinstance(expr, Lit):
        return expr.value
    if isinstance(expr, Sym):
        return sizes[expr.name]
    assert isinstance(expr, BinOp)
    lhs, rhs = evaluate(expr.lhs, sizes), evaluate(expr.rhs, sizes)
    if expr.op == "+":
        return lhs + rhs
    if expr.op == "-":
        return lhs - rhs
    if expr.op == "*":
        return lhs * rhs
    return lhs // rhs if expr.op == "//" else lhs % rhs
