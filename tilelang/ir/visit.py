"""Generic traversal and rewriting of the block IR.

This module owns the few walkers every pass builds on, written once against the
`OPERANDS`/`RESULTS`/`BODIES` field lists of `tilelang.ir.nodes`, so they work on every
instruction class without knowing it:

- `walk(node)`: every instruction, pre-order, into loop and branch bodies;
- `body_params(instr)`: the values an instruction defines at the entry of its bodies
  (its `PARAMS`: a `For`'s loop variable and loop-carried values, an
  `associative_scan`'s combine arguments);
- `defined_vars(node)` and `defs_and_uses(node)`: definition order, def sites and use
  lists;
- `Rewriter`: a copying rewriter with one optional method per instruction class
  (`visit_Compute`, `visit_For`, ...), operand substitution through a `Var -> Value`
  mapping and a `new_var` hook for renaming definitions;
- `substitute(node, mapping)`: replace uses of values.

Scoping (what the verifier enforces): a body sees the values defined before its
instruction, the instruction's `body_params` and its own earlier definitions; nothing
defined in a body is visible after it except through the instruction's results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import ClassVar, TypeVar

from tilelang.ir.nodes import Block, Function, Instr, Value, Var, instruction_classes

Node = Function | Block | Instr
_N = TypeVar("_N", Block, Function)


def body_params(instr: Instr) -> tuple[Var, ...]:
    """Values defined at the entry of `instr`'s bodies (its `PARAMS` fields): a `For`'s
    var and carried values, an `associative_scan`'s combine arguments."""
    return instr.params()


def walk(node: Node) -> Iterator[Instr]:
    """Every instruction of `node`, pre-order: an instruction, then its bodies in order.

    One generator and a stack of the bodies being walked: nested generators cost each
    instruction a resumption per level of nesting, and every pass walks."""
    if isinstance(node, Function):
        node = node.body
    if isinstance(node, Block):
        stack = [iter(node.instrs)]
    else:
        yield node
        stack = [_body_instrs(node)]
    while stack:
        for instr in stack[-1]:
            yield instr
            if instr.BODIES:  # walk its bodies, then go on after it
                stack.append(_body_instrs(instr))
                break
        else:
            stack.pop()


def _body_instrs(instr: Instr) -> Iterator[Instr]:
    return (inner for body in instr.bodies() for inner in body.instrs)


def defined_vars(node: Node) -> tuple[Var, ...]:
    """Every `Var` defined in `node`, in the order execution defines them.

    A function's params and sizes come first; an instruction's `body_params` precede its
    bodies' definitions, and its results follow them.
    """
    found: list[Var] = []
    if isinstance(node, Function):
        found.extend(node.params)
        found.extend(node.sizes)
    _collect_defs(node, lambda var, instr: found.append(var))
    return tuple(found)


def _collect_defs(node: Node, emit: Callable[[Var, Instr], None]) -> None:
    if isinstance(node, Function):
        node = node.body
    if isinstance(node, Block):
        for instr in node.instrs:
            _collect_defs(instr, emit)
        return
    for var in body_params(node):
        emit(var, node)
    for body in node.bodies():
        _collect_defs(body, emit)
    for var in node.defs():
        emit(var, node)


def defs_and_uses(
    node: Node,
) -> tuple[dict[Var, Instr | None], dict[Var, list[Instr]]]:
    """Def sites and use lists of every `Var` in `node`.

    `defs[v]` is the instruction defining `v` (None for function params and sizes; the
    `For` for its loop variable and carried values); a Var defined twice (invalid IR)
    maps to its first definition. `uses[v]` lists the instructions using `v` as an
    operand, in `walk` order, with an empty list for every defined but unused Var.
    """
    defs: dict[Var, Instr | None] = {}
    if isinstance(node, Function):
        for var in (*node.params, *node.sizes):
            defs.setdefault(var, None)
    _collect_defs(node, lambda var, instr: defs.setdefault(var, instr))
    uses: dict[Var, list[Instr]] = {var: [] for var in defs}
    for instr in walk(node):
        for value in instr.uses():
            if isinstance(value, Var):
                uses.setdefault(value, []).append(instr)
    return defs, uses


RewriteResult = Instr | Sequence[Instr] | None


class Rewriter:
    """A copying rewriter over blocks, with operand substitution and renaming.

    `rewrite_block` rewrites every instruction through `rewrite_instr`, which calls the
    subclass's `visit_<ClassName>` method for that instruction class (e.g. `visit_Dot`;
    bound by class when the subclass is defined, and a name that is no instruction class
    is an error there), else `generic`. A visit method returns one instruction, a sequence of instructions
    (spliced in place) or None (the instruction is dropped); it may call
    `self.generic(instr)` for the default treatment first.

    `generic` copies an instruction with every operand passed through `value` (the
    `mapping`, applied once, not transitively), every definition passed through
    `define` (`new_var`, identity by default; a changed Var is recorded in `mapping`
    so later uses follow), and its bodies rewritten recursively: operands first, then
    body params, bodies, results — the order in which they are defined.
    """

    #: The `visit_<ClassName>` method of each instruction class a subclass handles.
    VISITORS: ClassVar[dict[type[Instr], str]] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        """Bind each `visit_<ClassName>` method to its instruction class once, so that a
        method naming no instruction class is an error where it is defined."""
        super().__init_subclass__(**kwargs)
        classes = {c.__name__: c for c in instruction_classes()}
        cls.VISITORS = dict(cls.VISITORS)
        for name in vars(cls):
            if name.startswith("visit_"):
                target = classes.get(name[len("visit_") :])
                if target is None:
                    raise TypeError(f"{cls.__name__}.{name}: no instruction class of that name")
                cls.VISITORS[target] = name

    def __init__(self, mapping: Mapping[Var, Value] | None = None) -> None:
        self.mapping: dict[Var, Value] = dict(mapping or {})

    # -- hooks ---------------------------------------------------------------------------

    def new_var(self, var: Var) -> Var:
        """The Var a definition of `var` becomes; override to rename or retype."""
        return var

    def value(self, value: Value | None) -> Value | None:
        """The operand `value` becomes (None, for an absent optional operand, stays)."""
        if isinstance(value, Var):
            return self.mapping.get(value, value)
        return value

    # -- driving -------------------------------------------------------------------------

    def define(self, var: Var) -> Var:
        new = self.new_var(var)
        if new != var:
            self.mapping[var] = new
        return new

    def rewrite_function(self, fn: Function) -> Function:
        params = tuple(self.define(var) for var in fn.params)
        sizes = tuple(self.define(var) for var in fn.sizes)
        return replace(fn, params=params, sizes=sizes, body=self.rewrite_block(fn.body))

    def rewrite_block(self, block: Block) -> Block:
        instrs: list[Instr] = []
        for instr in block.instrs:
            result = self.rewrite_instr(instr)
            if isinstance(result, Instr):
                instrs.append(result)
            elif result is not None:
                instrs.extend(result)
        return Block(tuple(instrs))

    def rewrite_instr(self, instr: Instr) -> RewriteResult:
        method = self.VISITORS.get(type(instr))
        return getattr(self, method)(instr) if method is not None else self.generic(instr)

    def generic(self, instr: Instr) -> Instr:
        # The changes of `instr.map_operands(self.value)` and the others, made in one copy
        # (a dataclass `replace` is slow, and every pass rewrites every instruction).
        changes: dict[str, object] = {}
        value = self.value
        for name in instr.OPERANDS:
            current = getattr(instr, name)
            changes[name] = (
                tuple(value(v) for v in current) if isinstance(current, tuple) else value(current)
            )
        for name in instr.PARAMS:
            current = getattr(instr, name)
            if isinstance(current, tuple):
                changes[name] = tuple(self.define(var) for var in current)
            else:
                changes[name] = self.define(current)
        for name in instr.BODIES:
            changes[name] = self.rewrite_block(getattr(instr, name))
        for name in instr.RESULTS:
            current = getattr(instr, name)
            if isinstance(current, tuple):
                changes[name] = tuple(self.define(var) for var in current)
            elif current is not None:
                changes[name] = self.define(current)
        return replace(instr, **changes)


def substitute(node: _N, mapping: Mapping[Var, Value]) -> _N:
    """`node` (a Block or Function) with every use of a key of `mapping` replaced."""
    rewriter = Rewriter(mapping)
    if isinstance(node, Function):
        return rewriter.rewrite_function(node)
    return rewriter.rewrite_block(node)
