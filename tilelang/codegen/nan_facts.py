"""Which float conversions of a thread function need no NaN canonicalization.

Every float `Cvt` gives the canonical NaN (docs/design.md §10), which costs the CUDA
backend a compare and a select after the conversion itself (f16 → f32: HADD2.F32,
FSETP.NAN, FSEL). This module owns the two facts that make the step unnecessary; the
CUDA and LLVM emitters leave it out of a `Cvt` where either holds, and keep the
conversion itself (a NaN still converts to a NaN):

1. **The source is never NaN** (`NanFacts.not_nan`). A value is *finite*, *not NaN*
   (±inf allowed) or *anything*: integers and finite immediates are finite; a
   conversion from an integer is not NaN (finite when the integer's range fits);
   a float conversion keeps not-NaN and keeps finite when the target holds the
   source's largest value; neg/abs/floor/ceil/trunc keep what they are given; add, sub and
   mul of finite values and fma of three are not NaN (the exact result rounds to a
   number or ±inf); min/max are NaN only when both operands are; a select is the
   weaker of its two values. A local is the weakest of everything written to it (a
   fixpoint over the whole function, loops included), a `Let` name what its value is.
   A raw load writes finite values when it reads a tensor the launch proved finite
   (`ThreadFunction.finite`: the "finite" facts and bounds of `Function.assume`) into
   a local of that tensor's dtype; shared memory holds finite values of dtype D when
   every write to it (cp.async of a finite tensor, a store of a finite local) is such.
   With this fact the NaN step is dead code: the result is bit for bit the same.

2. **Only payload-blind operations read the result** (`operand_blindness`,
   `NanFacts.blind_locals`, `NanFacts.blind_names`): float arithmetic (`Binary`,
   `Fma`, every `Unary` but neg/abs), comparisons and conversions. The interpreter
   keeps values, not NaN bits, and a NaN operand of these gives a NaN (or, for
   compare, min/max, float → int, a result that only depends on its being NaN) whose
   payload the LLVM backend canonicalizes itself (`llvm_numeric.binary`, `fma`,
   `unary`: x86 would give 0xFFC00000) and the CUDA backend leaves unspecified (the
   GPU's f32 units are said to make 0x7FFFFFFF whatever the operands' payloads). So
   the consumer's result is what it was with a canonical operand, bit for bit on the
   CPU backend: interpreter == CPU stays exact. neg, abs and select pass a payload
   through; they are blind where their own result is read blindly. Bitcasts, raw
   moves, stores, shuffles and mma operands read the bits: never blind.
"""

from __future__ import annotations

import math

from tilelang.dtypes import DType
from tilelang.ir import thread as t
from tilelang.ir import thread_mma as tm

ANY, NOT_NAN, FINITE = 0, 1, 2
"""What a value is proven to be: anything, never NaN (±inf allowed), finite."""

#: Reg fields a statement writes; every other Reg field is read.
WRITTEN_REGS = frozenset(("dst", "d"))

#: Unary operators whose result carries the operand's NaN payload (a sign-bit change).
_SIGN_OPS = frozenset(("neg", "abs"))
#: Unary operators that keep a value's class: finite stays finite, ±inf stays ±inf.
_KEEPING_OPS = _SIGN_OPS | {"floor", "ceil", "trunc"}


def operand_blindness(e: t.Expr, blind: bool) -> tuple[bool, ...]:
    """For each child of `e`: whether a NaN payload there cannot change what is observed
    of `e` (module docstring, fact 2); `blind`: whether `e`'s own payload cannot."""
    if isinstance(e, t.Binary | t.Fma | t.Cvt):
        return (True,) * len(e.children())
    if isinstance(e, t.Unary):
        return (blind,) if e.op in _SIGN_OPS else (True,)
    if isinstance(e, t.Select):
        return (False, blind, blind)
    return (False,) * len(e.children())


def needs_canonical_nan(e: t.Cvt, blind: bool, facts: NanFacts | None) -> bool:
    """Whether the float `Cvt` `e` must make its NaN the canonical one (`blind`: whether
    its result is read only payload-blindly; `facts`: None to always canonicalize)."""
    if facts is None or not (e.a.dtype.is_float and e.type.is_float):
        return True
    return not (blind or facts.not_nan(e.a))


class NanFacts:
    """Fact 1 (`not_nan`) and the locals and names that fact 2 covers, for one function."""

    def __init__(self, fn: t.ThreadFunction) -> None:
        self.fn = fn
        self.tensors = {p.name: p.dtype for p in fn.params if p.is_tensor}
        self.finite_tensors = frozenset(fn.finite)
        self.local_types = {loc.name: loc.dtype for loc in fn.locals}
        self.params = {p.name: (ANY if p.dtype.is_float else FINITE) for p in fn.params}
        self.stmts = list(t.walk_stmts(fn.body))
        self.locals: dict[str, int] = {}
        self.names: dict[str, int] = {}
        self._memo: dict = {}
        self.blind_locals: frozenset[str] = frozenset()
        self.blind_names: frozenset[str] = frozenset()
        if any(_float_cvt(e) for s in self.stmts for x in t.stmt_exprs(s) for e in t.walk_expr(x)):
            self._levels()
            self._blindness()

    # ------------------------------------------------------------------ fact 1

    def not_nan(self, e: t.Expr) -> bool:
        """Whether no value `e` takes is NaN."""
        return self.level(e) >= NOT_NAN

    def level(self, e: t.Expr, memo: dict | None = None) -> int:
        """ANY, NOT_NAN or FINITE: what every value of `e` is proven to be."""
        memo = self._memo if memo is None else memo
        found = memo.get(id(e))  # by identity: hashing a deep expression walks all of it
        if found is None:
            found = memo[id(e)] = (e, self._level(e, memo))  # e kept: its id stays its own
        return found[1]

    def _level(self, e: t.Expr, memo: dict) -> int:
        if not e.dtype.is_float:
            return FINITE
        if isinstance(e, t.Imm):
            value = float(e.value)
            return FINITE if math.isfinite(value) else (ANY if math.isnan(value) else NOT_NAN)
        if isinstance(e, t.Name):
            return self.names.get(e.name, self.params.get(e.name, ANY))
        if isinstance(e, t.Read):
            return self.locals.get(e.local, ANY)
        kids = [self.level(c, memo) for c in e.children()]
        if isinstance(e, t.Cvt):
            return _converted(e.a.dtype, e.type, kids[0])
        if isinstance(e, t.Unary):
            return kids[0] if e.op in _KEEPING_OPS else ANY
        if isinstance(e, t.Select):
            return min(kids[1:])
        if isinstance(e, t.Binary) and e.op in ("min", "max"):
            return FINITE if min(kids) == FINITE else (NOT_NAN if max(kids) >= NOT_NAN else ANY)
        if (isinstance(e, t.Binary) and e.op in ("add", "sub", "mul")) or isinstance(e, t.Fma):
            return NOT_NAN if min(kids) == FINITE else ANY
        return ANY  # div (0/0), rem, bitcasts of integers, ...

    def _levels(self) -> None:
        """The greatest fixpoint: every float local starts finite and is lowered to the
        weakest value written to it until nothing changes (at most twice per local).
        Names are defined once, above their uses, so one pass in program order sets
        them from the locals' current levels.

        A local is lowered as soon as a write shows it (not at the end of the pass):
        the levels only go down and every rule is monotone, so any order of lowering
        stops at the same greatest fixpoint, in fewer passes. The pass that changes
        nothing computed every name and the shared memory's dtype from the final
        levels. Statements that neither write a float local nor define a name are left
        out of the passes."""
        self.locals = {name: FINITE for name, dt in self.local_types.items() if dt.is_float}
        writers = [s for s in self.stmts if isinstance(s, t.CpAsync | t.SharedStore)]
        steps = [s for s in self.stmts if self._matters(s)]
        while True:
            self.names = {}
            self._memo = {}
            self.shared = self._shared_dtype(writers)
            changed = False
            for stmt in steps:
                for local, level in self._writes(stmt):
                    old = self.locals.get(local)
                    if old is not None and level < old:
                        self.locals[local] = level
                        changed = True
                if isinstance(stmt, t.Let | t.Uniform | t.Shfl):
                    self.names[t.defined_name(stmt).name] = self.level(stmt.value)
            if not changed:
                self._memo = {}
                return

    def _matters(self, stmt: t.Stmt) -> bool:
        """Whether `stmt` defines a name or may write a float local."""
        if isinstance(stmt, t.Let | t.Uniform | t.Shfl):
            return True
        if isinstance(stmt, t.SetLocal):
            return stmt.local in self.locals
        return any(
            isinstance(reg := getattr(stmt, field, None), t.Reg) and reg.local in self.locals
            for field in WRITTEN_REGS
        )

    def _writes(self, stmt: t.Stmt):
        """(local, level) for each float local `stmt` writes."""
        if isinstance(stmt, t.SetLocal):
            yield stmt.local, self.level(stmt.value)
            return
        for field in WRITTEN_REGS:
            reg = getattr(stmt, field, None)
            if isinstance(reg, t.Reg) and reg.local in self.locals:
                yield reg.local, self._raw_write(stmt, self.local_types[reg.local])

    def _raw_write(self, stmt: t.Stmt, dtype: DType) -> int:
        if isinstance(stmt, t.GlobalLoad):
            return self._tensor_level(stmt.tensor, dtype)
        if isinstance(stmt, t.Move) and self.local_types.get(stmt.src.local) == dtype:
            return self.locals.get(stmt.src.local, ANY)
        if isinstance(stmt, t.SharedLoad | tm.Ldmatrix):
            return FINITE if self.shared == dtype else ANY
        return ANY  # mma results, atomics, moves between dtypes

    def _tensor_level(self, tensor: str, dtype: DType) -> int:
        finite = tensor in self.finite_tensors and self.tensors.get(tensor) == dtype
        return FINITE if finite else ANY

    def _shared_dtype(self, writers: list[t.Stmt]) -> DType | None:
        """The float dtype D such that every write to shared memory (`writers`) writes
        finite values of D, or None."""
        found: set[DType | None] = set()
        for stmt in writers:
            if isinstance(stmt, t.CpAsync):
                dt = self.tensors.get(stmt.tensor)
                found.add(dt if self._tensor_level(stmt.tensor, dt) == FINITE else None)
            elif isinstance(stmt, t.SharedStore):
                dt = self.local_types.get(stmt.src.local)
                found.add(dt if self.locals.get(stmt.src.local) == FINITE else None)
        return found.pop() if len(found) == 1 else None

    # ------------------------------------------------------------------ fact 2

    def _blindness(self) -> None:
        """Locals and names read only payload-blindly: assumed of all, then each one read
        anywhere else is dropped, until no more are (a name whose value is only another
        name or local passes its readers' blindness on).

        Each statement is visited once, and again only when the local or name its value
        goes to stops being blind after a visit that read the value blindly: the sets
        only shrink and the rule is monotone, so this ends at the greatest fixpoint that
        visiting every statement until nothing changes would reach, without the repeats."""
        floats = {n for n, dt in self.local_types.items() if dt.is_float}
        raw_reads = {  # the bits themselves
            reg.local
            for stmt in self.stmts
            for field in stmt.__dataclass_fields__
            if field not in WRITTEN_REGS and isinstance(reg := getattr(stmt, field), t.Reg)
        }
        # Mutable while the statements are visited (`value_blind` reads them), then frozen.
        self.blind_locals = set(floats - raw_reads)  # type: ignore[assignment]
        self.blind_names = {  # type: ignore[assignment]
            d.name for s in self.stmts if (d := t.defined_name(s)) is not None and d.type.is_float
        }
        reading = [(s, t.stmt_exprs(s)) for s in self.stmts]
        waiting: dict[tuple[bool, str], list[int]] = {}  # target -> statements read blindly
        dropped: list[tuple[bool, str]] = []  # (is a local, its name), as they go
        work = list(range(len(reading) - 1, -1, -1))  # popped in program order
        while work:
            index = work.pop()
            stmt, exprs = reading[index]
            blind = self.value_blind(stmt)
            if blind:
                target = (
                    (True, stmt.local) if isinstance(stmt, t.SetLocal) else (False, stmt.name.name)
                )
                waiting.setdefault(target, []).append(index)
            for expr in exprs:
                self._drop_seen(expr, blind, dropped)
            for key in dropped:
                work.extend(waiting.pop(key, ()))
            dropped.clear()
        self.blind_locals = frozenset(self.blind_locals)
        self.blind_names = frozenset(self.blind_names)

    def value_blind(self, stmt: t.Stmt) -> bool:
        """Whether `stmt`'s value expression is read only payload-blindly (the value of a
        `SetLocal`/`Let`/`Uniform` whose local or name is)."""
        if isinstance(stmt, t.SetLocal):
            return stmt.local in self.blind_locals
        if isinstance(stmt, t.Let | t.Uniform):
            return stmt.name.name in self.blind_names
        return False

    def _drop_seen(self, e: t.Expr, blind: bool, dropped: list[tuple[bool, str]]) -> None:
        """Removes from the blind locals and names those `e` reads with their payload seen
        (`blind`: whether `e`'s own payload is unseen), noting each in `dropped`."""
        if isinstance(e, t.Read):
            if not blind and e.local in self.blind_locals:
                self.blind_locals.discard(e.local)  # type: ignore[attr-defined]
                dropped.append((True, e.local))
        elif isinstance(e, t.Name):
            if not blind and e.name in self.blind_names:
                self.blind_names.discard(e.name)  # type: ignore[attr-defined]
                dropped.append((False, e.name))
        elif not isinstance(e, t.Imm | t.ThreadIndex | t.BlockIndex):
            for child, inner in zip(e.children(), operand_blindness(e, blind), strict=True):
                self._drop_seen(child, inner, dropped)


def _float_cvt(e: t.Expr) -> bool:
    return isinstance(e, t.Cvt) and e.a.dtype.is_float and e.type.is_float


def _converted(src: DType, dst: DType, level: int) -> int:
    """What a conversion of a value of that level from `src` to the float `dst` is."""
    if src.is_int:
        return FINITE if src.bits < 64 and 2.0**src.bits <= float(dst.max) else NOT_NAN
    if level == FINITE and float(src.max) > float(dst.max):
        return NOT_NAN  # rounds to ±inf
    return level
