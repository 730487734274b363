"""The thread-IR verifier: types, scopes, register bounds, and the execution model.

Checks (each failure is a `ThreadIRError` naming the statement):

* every `Name` is defined once and used only below its definition, in scope;
* operand dtypes agree (`tilelang.ir.thread` says what each expression takes);
* register accesses stay inside their local and are naturally aligned; widths are
  1, 2, 4, 8 or 16 bytes (cp.async: 4, 8, 16; atomic additions: a power-of-two number
  of elements of an atomic dtype); an atomic merge's mask fits two bytes;
* `For` bounds and the grid are uniform; launch checks are u1 arithmetic of the scalar
  parameters; collectives (`Barrier`, `Mma`, `Wgmma`, `Ldmatrix`,
  `Shfl`) are never under a varying `If`; a function with `Wgmma` runs whole
  warpgroups (a multiple of 128 threads).
"""

from __future__ import annotations

import weakref

from tilelang import dtypes
from tilelang.ir import thread as t
from tilelang.ir import thread_mma as tm
from tilelang.ir.atoms import MMA_ATOMS
from tilelang.ir.thread_text import print_expr, print_stmt

WIDTHS = (1, 2, 4, 8, 16)


class ThreadIRError(ValueError):
    """A thread-IR function breaks a rule of `tilelang.ir.thread`."""


#: The functions verified in this process, by identity (a function is frozen, so it stays
#: valid): the pipeline verifies each pass's output and each backend its input, which
#: are mostly the same object. Weak references, so a collected function's id can be
#: reused by another.
_VERIFIED: dict[int, weakref.ref] = {}


def verify_thread_function(fn: t.ThreadFunction, checked: Checked | None = None) -> None:
    """Raises `ThreadIRError` where `fn` breaks a rule. `checked`: what earlier
    verifications of functions sharing `fn`'s expressions found (a pipeline verifying
    each pass's output passes one `Checked` to all of them)."""
    known = _VERIFIED.get(id(fn))
    if known is not None and known() is fn:
        return
    _Verifier(fn, checked if checked is not None else Checked()).run()
    key = id(fn)
    _VERIFIED[key] = weakref.ref(fn, lambda _, key=key: _VERIFIED.pop(key, None))


class Checked:
    """The expressions (by identity) whose every check passed, each with what its checks
    still depend on: the Names it reads (each checked against the scope of every place
    the expression appears), the locals its `Read`s checked against, and whether it
    reads the thread index or a register (for uniformity).

    An expression met again is not walked again: its Names are checked in the order a
    walk meets them, so an error is the one the walk would raise (nothing else in it can
    fail), and its locals must be the same `Local`s as before. The thread passes keep
    the expressions they do not change, so verifying their outputs mostly costs this.
    The entries keep their expressions alive (an id stays its own)."""

    def __init__(self) -> None:
        self.found: dict[int, tuple[t.Expr, tuple[t.Name, ...], tuple[t.Local, ...], bool]] = {}


def _show(stmt: t.Stmt) -> str:
    lines: list[str] = []
    print_stmt(stmt, 0, lines)
    return lines[0]


class _Verifier:
    def __init__(self, fn: t.ThreadFunction, checked: Checked) -> None:
        self.fn = fn
        self.checked = checked.found
        self.locals = {loc.name: loc for loc in fn.locals}
        self.defined: set[str] = set()
        self.varying: set[str] = set()
        if fn.threads % 32 or not 32 <= fn.threads <= 1024:
            raise ThreadIRError(
                f"{fn.name}: threads must be a multiple of 32 up to 1024, got {fn.threads}"
            )
        for loc in fn.locals:
            if loc.dtype not in t.REGISTER_DTYPES or loc.dtype == dtypes.u1 or loc.count < 1:
                raise ThreadIRError(
                    f"{fn.name}: local {loc.name} has an invalid type {loc.dtype}[{loc.count}]"
                )

    def fail(self, stmt: t.Stmt | None, message: str) -> ThreadIRError:
        where = f" in `{_show(stmt)}`" if stmt is not None else ""
        return ThreadIRError(f"{self.fn.name}{where}: {message}")

    def run(self) -> None:
        scope = {p.name: t.Name(p.name, p.dtype) for p in self.fn.params if not p.is_tensor}
        self.defined.update(scope)
        for g in self.fn.grid:
            self.expr(None, g, scope)
            if not self.uniform(g):
                raise self.fail(None, f"the grid size {print_expr(g)} is not uniform")
            if any(isinstance(e, t.BlockIndex) for e in t.walk_expr(g)):
                raise self.fail(None, "the grid size cannot use the block index")
        for cond, _ in self.fn.checks:
            self.expr(None, cond, scope)
            self.same(None, dtypes.u1, cond.dtype, "a launch check")
            if not all(
                isinstance(e, t.Imm | t.Name | t.Unary | t.Binary | t.Cvt | t.Select)
                for e in t.walk_expr(cond)
            ):
                raise self.fail(None, f"the launch check {print_expr(cond)} is not host arithmetic")
        self.body(self.fn.body, dict(scope), divergent=False)

    def uniform(self, e: t.Expr) -> bool:
        found = self.checked.get(id(e))
        if found is None or found[0] is not e:
            return t.is_uniform(e, self.varying)
        return not found[3] and not any(name.name in self.varying for name in found[1])

    def body(self, body: tuple[t.Stmt, ...], scope: dict[str, t.Name], divergent: bool) -> None:
        scope = dict(scope)
        for stmt in body:
            self.stmt(stmt, scope, divergent)

    def define(self, stmt: t.Stmt, name: t.Name, scope: dict[str, t.Name], varying: bool) -> None:
        if name.name in self.defined:
            raise self.fail(stmt, f"%{name.name} is defined twice")
        self.defined.add(name.name)
        scope[name.name] = name
        if varying:
            self.varying.add(name.name)

    def stmt(self, stmt: t.Stmt, scope: dict[str, t.Name], divergent: bool) -> None:
        for e in t.stmt_exprs(stmt):
            self.expr(stmt, e, scope)
        if stmt.COLLECTIVE and divergent:
            raise self.fail(
                stmt, "a collective operation under a condition that varies between threads"
            )
        check = _CHECKS.get(type(stmt))
        if check is not None:
            check(self, stmt)
        if isinstance(stmt, t.Let):
            self.same(stmt, stmt.name.type, stmt.value.dtype, "the value")
            self.define(stmt, stmt.name, scope, not self.uniform(stmt.value) or divergent)
        elif isinstance(stmt, t.Uniform):
            self.same(stmt, stmt.name.type, stmt.value.dtype, "the value")
            self.define(stmt, stmt.name, scope, divergent)
        elif isinstance(stmt, t.Shfl):
            self.define(stmt, stmt.result, scope, True)
        elif isinstance(stmt, t.For):
            for bound in (stmt.start, stmt.stop, stmt.step):
                if not self.uniform(bound):
                    raise self.fail(stmt, f"the loop bound {print_expr(bound)} is not uniform")
                self.same(stmt, stmt.var.type, bound.dtype, "a loop bound")
            inner = dict(scope)
            self.define(stmt, stmt.var, inner, divergent)
            self.body(stmt.body, inner, divergent)
        elif isinstance(stmt, t.If):
            self.same(stmt, dtypes.u1, stmt.cond.dtype, "the condition")
            varies = divergent or not self.uniform(stmt.cond)
            self.body(stmt.then_body, scope, varies)
            self.body(stmt.else_body, scope, varies)

    def same(self, stmt: t.Stmt | None, want, got, what: str) -> None:
        if want is not got and want != got:
            raise self.fail(stmt, f"{what} has dtype {got}, expected {want}")

    def expr(self, stmt: t.Stmt | None, e: t.Expr, scope: dict[str, t.Name]) -> None:
        found = self.checked.get(id(e))
        if found is not None and found[0] is e and self.same_locals(found[2]):
            for name in found[1]:
                _check_name(self, stmt, name, scope)
            return
        names: dict[t.Name, None] = {}
        used: dict[str, t.Local] = {}
        varies = False
        for sub in t.walk_expr(e):
            self.check_expr(stmt, sub, scope)
            if isinstance(sub, t.Name):
                names[sub] = None
            elif isinstance(sub, t.Read):
                used[sub.local] = self.locals[sub.local]
                varies = True
            elif isinstance(sub, t.ThreadIndex):
                varies = True
        self.checked[id(e)] = (e, tuple(names), tuple(used.values()), varies)

    def same_locals(self, used: tuple[t.Local, ...]) -> bool:
        """Whether this function's locals of those names are `used` (what the `Read`s of
        a checked expression were checked against)."""
        for loc in used:
            mine = self.locals.get(loc.name)
            if mine is not loc and mine != loc:
                return False
        return True

    def check_expr(self, stmt: t.Stmt | None, e: t.Expr, scope: dict[str, t.Name]) -> None:
        dtype = e.dtype
        # By identity first: hashing a DType (a dataclass) for every node cost more than
        # the checks themselves.
        if id(dtype) not in _REGISTER_DTYPE_IDS and dtype not in t.REGISTER_DTYPES:
            raise self.fail(stmt, f"{print_expr(e)} has the non-register dtype {e.dtype}")
        kind = type(e)
        check = _EXPR_CHECKS[kind] if kind in _EXPR_CHECKS else _expr_check(kind)
        if check is not None:
            check(self, stmt, e, scope)

    def register(self, stmt, local: str, index: int, dtype) -> None:
        loc = self.locals.get(local)
        if loc is None:
            raise self.fail(stmt, f"no local named {local}")
        if dtype is not None and loc.dtype != dtype:
            raise self.fail(stmt, f"{local} holds {loc.dtype}, not {dtype}")
        if not 0 <= index < loc.count:
            raise self.fail(stmt, f"{local}[{index}] is outside its {loc.count} elements")

    def raw(self, stmt, reg: t.Reg, width: int, widths=WIDTHS) -> None:
        loc = self.locals.get(reg.local)
        if loc is None:
            raise self.fail(stmt, f"no local named {reg.local}")
        if width not in widths:
            raise self.fail(stmt, f"an access of {width} bytes (expected one of {widths})")
        if reg.byte % width or not 0 <= reg.byte <= loc.nbytes - width:
            raise self.fail(
                stmt,
                f"bytes {reg.byte}..{reg.byte + width} of {reg.local} ({loc.nbytes} bytes) "
                "are out of range or unaligned",
            )


#: The ids of `t.REGISTER_DTYPES`' members (alive as long as the module: ids stay theirs).
_REGISTER_DTYPE_IDS = frozenset(map(id, t.REGISTER_DTYPES))
_BINARY_OPS = t.BINARY_OPS | t.COMPARE_OPS


def _check_name(v: _Verifier, stmt, e: t.Name, scope: dict[str, t.Name]) -> None:
    found = scope.get(e.name)
    if found is not e and found != e:
        raise v.fail(stmt, f"%{e.name}: {e.type} is not defined here")


def _check_read(v: _Verifier, stmt, e: t.Read, scope) -> None:
    v.register(stmt, e.local, e.index, e.type)


def _check_unary(v: _Verifier, stmt, e: t.Unary, scope) -> None:
    if e.op not in t.UNARY_OPS:
        raise v.fail(stmt, f"unknown unary operator {e.op}")


def _check_binary(v: _Verifier, stmt, e: t.Binary, scope) -> None:
    if e.op not in _BINARY_OPS:
        raise v.fail(stmt, f"unknown binary operator {e.op}")
    if e.op not in ("shl", "shr"):
        v.same(stmt, e.a.dtype, e.b.dtype, f"the second operand of {e.op}")


def _check_fma(v: _Verifier, stmt, e: t.Fma, scope) -> None:
    if not e.a.dtype.is_float:
        raise v.fail(stmt, f"fma of {e.a.dtype}: it takes floats")
    v.same(stmt, e.a.dtype, e.b.dtype, "the second operand of fma")
    v.same(stmt, e.a.dtype, e.c.dtype, "the addend of fma")


def _check_select(v: _Verifier, stmt, e: t.Select, scope) -> None:
    v.same(stmt, dtypes.u1, e.cond.dtype, "the condition of select")
    v.same(stmt, e.a.dtype, e.b.dtype, "the second value of select")


def _check_bitcast(v: _Verifier, stmt, e: t.Bitcast, scope) -> None:
    if e.a.dtype.bits != e.type.bits:
        raise v.fail(stmt, f"bitcast from {e.a.dtype} to {e.type} changes the width")


def _check_bit_op(v: _Verifier, stmt, e: t.Lop3 | t.Prmt, scope) -> None:
    for child in e.children():
        v.same(stmt, dtypes.u32, child.dtype, "an operand of lop3/prmt")


def _check_pair(v: _Verifier, stmt, e: t.Pair, scope) -> None:
    if e.op not in t.PAIR_OPS or e.elem not in (dtypes.f16, dtypes.bf16):
        raise v.fail(stmt, f"unknown pair operation {e.op}.{e.elem}x2")
    if (e.op == "fma") != (e.c is not None):
        raise v.fail(stmt, "fma takes three operands, the others two")
    for child in e.children():
        v.same(stmt, dtypes.u32, child.dtype, "an operand of a pair operation")


def _check_f8_pair(v: _Verifier, stmt, e: t.F8Pair, scope) -> None:
    if e.src not in t.F8_PAIR_SOURCES or e.half not in (0, 1):
        raise v.fail(stmt, f"no f16x2 conversion of {e.src} codes from half {e.half}")
    v.same(stmt, dtypes.u32, e.a.dtype, "the operand of an f8 pair conversion")


#: The check of each expression class beyond its dtype, in the order a class is looked
#: for (`_expr_check`: the first it is an instance of).
_EXPR_CHECK_ORDER = (
    (t.Name, _check_name),
    (t.Read, _check_read),
    (t.Unary, _check_unary),
    (t.Binary, _check_binary),
    (t.Fma, _check_fma),
    (t.Select, _check_select),
    (t.Bitcast, _check_bitcast),
    (t.Lop3 | t.Prmt, _check_bit_op),
    (t.Pair, _check_pair),
    (t.F8Pair, _check_f8_pair),
)
#: The check by exact class, filled in as classes are met (a dict lookup per node
#: instead of a chain of isinstance calls).
_EXPR_CHECKS: dict[type, object] = {}


def _expr_check(kind: type):
    check = next((f for cls, f in _EXPR_CHECK_ORDER if issubclass(kind, cls)), None)
    _EXPR_CHECKS[kind] = check
    return check


def _check_set(v: _Verifier, s: t.SetLocal) -> None:
    v.register(s, s.local, s.index, None)
    v.same(s, v.locals[s.local].dtype, s.value.dtype, "the value")


def _check_move(v: _Verifier, s: t.Move) -> None:
    v.raw(s, s.dst, s.width)
    v.raw(s, s.src, s.width)


def _check_pred(v: _Verifier, s, pred) -> None:
    if pred is not None:
        v.same(s, dtypes.u1, pred.dtype, "the predicate")


def _check_global(v: _Verifier, s) -> None:
    reg = s.dst if isinstance(s, t.GlobalLoad) else s.src
    v.raw(s, reg, s.width)
    _check_tensor(v, s)


def _check_tensor(v: _Verifier, s) -> None:
    if not any(p.is_tensor and p.name == s.tensor for p in v.fn.params):
        raise v.fail(s, f"no tensor parameter named {s.tensor}")
    if not s.offset.dtype.is_int:
        raise v.fail(s, "a byte offset must be an integer")
    _check_pred(v, s, s.pred)


def _check_atomic(v: _Verifier, s: t.Atomic) -> None:
    if s.op not in t.ATOMIC_DTYPES:
        raise v.fail(s, f"no atomic {s.op!r}: expected {', '.join(t.ATOMIC_DTYPES)}")
    if s.dtype not in t.ATOMIC_DTYPES[s.op]:
        what = "addition" if s.op == "add" else s.op
        raise v.fail(s, f"no atomic {what} of {s.dtype}")
    size = s.dtype.bits // 8
    if s.width % size or s.width // size & (s.width // size - 1):
        raise v.fail(s, f"{s.width} bytes are not a power-of-two number of {s.dtype} elements")
    if (s.op == "cas") != (s.compare is not None):
        raise v.fail(s, "a compare operand goes with op cas, and op cas needs one")
    for reg in (s.src, s.dst, s.compare):
        if reg is not None:
            v.raw(s, reg, s.width)
    _check_tensor(v, s)


def _check_atomic_fetch_add(v: _Verifier, s: t.AtomicFetchAdd) -> None:
    v.same(s, dtypes.u32, s.value.dtype, "the added value")
    v.raw(s, s.dst, 4)
    _check_tensor(v, s)


def _check_atomic_merge(v: _Verifier, s: t.AtomicMerge) -> None:
    v.same(s, dtypes.u32, s.value.dtype, "the merged value")
    v.same(s, dtypes.u32, s.mask.dtype, "the mask")
    if isinstance(s.mask, t.Imm) and not 0 <= s.mask.value < 1 << 16:
        raise v.fail(s, f"the mask 0x{s.mask.value:x} selects bits beyond two bytes")
    _check_tensor(v, s)


def _check_shared(v: _Verifier, s) -> None:
    reg = s.dst if isinstance(s, t.SharedLoad) else s.src
    v.raw(s, reg, s.width)
    v.same(s, dtypes.i32, s.address.dtype, "a shared address")
    _check_pred(v, s, s.pred)


def _check_cp_async(v: _Verifier, s: t.CpAsync) -> None:
    if s.width not in (4, 8, 16):
        raise v.fail(s, f"cp.async copies 4, 8 or 16 bytes, not {s.width}")
    v.same(s, dtypes.i32, s.address.dtype, "a shared address")
    _check_pred(v, s, s.pred)


def _check_mma(v: _Verifier, s: tm.Mma) -> None:
    atom = MMA_ATOMS.get(s.atom)
    if atom is None:
        raise v.fail(s, f"unknown mma atom {s.atom}")
    if str(s.operands) not in atom.operand_dtypes:
        raise v.fail(s, f"{s.atom} does not multiply {s.operands}")
    for reg, layout, dtype_name in (
        (s.a, atom.a, atom.operand_dtypes[0]),
        (s.b, atom.b, atom.operand_dtypes[0]),
        (s.c, atom.c, atom.acc_dtype),
        (s.d, atom.c, atom.acc_dtype),
    ):
        width = layout.num_locals * dtypes.dtype(dtype_name).bits // 8
        loc = v.locals.get(reg.local)
        if loc is None or reg.byte % 4 or reg.byte + width > loc.nbytes:
            raise v.fail(s, f"operand {reg.local}@{reg.byte} does not hold {width} bytes")


#: The N sizes of wgmma m64nNk16 (8 to 256 in steps of 8).
WGMMA_N = range(8, 257, 8)


def _check_wgmma(v: _Verifier, s: tm.Wgmma) -> None:
    if v.fn.threads % 128:
        raise v.fail(s, f"wgmma runs on warpgroups of 128 threads; the block has {v.fn.threads}")
    if s.n not in WGMMA_N:
        raise v.fail(s, f"wgmma's N is a multiple of 8 from 8 to 256, not {s.n}")
    if str(s.operands) not in ("f16", "bf16"):
        raise v.fail(s, f"wgmma multiplies f16 or bf16 here, not {s.operands}")
    for reg, width in ((s.d, 2 * s.n), (s.a, 16)):
        loc = v.locals.get(reg.local)
        if loc is None or reg.byte % 4 or reg.byte + width > loc.nbytes:
            raise v.fail(s, f"operand {reg.local}@{reg.byte} does not hold {width} bytes")
    v.same(s, dtypes.i32, s.b_address.dtype, "a shared address")
    if not v.uniform(s.b_address):
        raise v.fail(s, "the address of B must be the same in every thread")
    for name, stride in (("lbo", s.lbo), ("sbo", s.sbo)):
        if stride % 16 or not 0 <= stride < 1 << 18:
            raise v.fail(s, f"{name} = {stride}: a multiple of 16 bytes below 2^18")


def _check_ldmatrix(v: _Verifier, s: tm.Ldmatrix) -> None:
    if s.num not in (1, 2, 4):
        raise v.fail(s, f"ldmatrix loads 1, 2 or 4 matrices, not {s.num}")
    loc = v.locals.get(s.dst.local)
    if loc is None or s.dst.byte % 4 or s.dst.byte + 4 * s.num > loc.nbytes:
        raise v.fail(s, f"destination {s.dst.local}@{s.dst.byte} does not hold {4 * s.num} bytes")
    v.same(s, dtypes.i32, s.address.dtype, "a shared address")


def _check_shfl(v: _Verifier, s: t.Shfl) -> None:
    if s.mode not in ("idx", "xor", "up", "down"):
        raise v.fail(s, f"unknown shuffle mode {s.mode}")
    if s.value.dtype.bits != 32 or s.result.type != s.value.dtype:
        raise v.fail(s, "a shuffle moves one 32-bit value into a Name of its dtype")
    if s.width not in (1, 2, 4, 8, 16, 32):
        raise v.fail(s, f"a shuffle segment of {s.width} lanes")


_CHECKS = {
    t.SetLocal: _check_set,
    t.Move: _check_move,
    t.GlobalLoad: _check_global,
    t.GlobalStore: _check_global,
    t.Atomic: _check_atomic,
    t.AtomicMerge: _check_atomic_merge,
    t.AtomicFetchAdd: _check_atomic_fetch_add,
    t.SharedLoad: _check_shared,
    t.SharedStore: _check_shared,
    t.CpAsync: _check_cp_async,
    tm.Mma: _check_mma,
    tm.Ldmatrix: _check_ldmatrix,
    tm.Wgmma: _check_wgmma,
    t.Shfl: _check_shfl,
}
