"""Thread IR: the per-thread program of one thread block (docs/design.md §7).

The lowering (`tilelang.lowering`) turns block IR into this; the CUDA emitter prints
it as CUDA C++ and the LLVM emitter runs it on the CPU. Every construct here has exact
semantics, written in its docstring, that both emitters implement.

Execution model
---------------
A launch runs `grid` blocks (up to three dimensions); a block runs `threads` threads
(a multiple of 32; lane = thread % 32, warp = thread // 32). Every thread runs `body`.

* **Scalars** are `Name`s, defined once (`Let`, `Uniform`, `Shfl`, a `For` variable) and visible
  below their definition in the same or an enclosing body. Kernel scalars and sizes
  are `Name`s defined by the function's `params`.
* **Registers** are the function's `locals`: per-thread arrays `Local(name, dtype,
  count)`. Element i of a local occupies bytes [i·s, (i+1)·s) of the local's storage
  (s = dtype bytes; little-endian). Storage is 16-byte aligned, and every raw access
  (loads, stores, the tensor-core statements' operands: `tilelang.ir.thread_mma`)
  addresses it by byte offset; a raw
  access of w bytes starts at a multiple of w. Register indices are compile-time ints.
* **Memory**: each tensor parameter is a byte buffer in global memory (the lowering
  computes byte offsets, so sub-byte types are plain bytes here); the block has one
  shared byte buffer of `shared_bytes` bytes, 16-byte aligned (in a function with
  `Wgmma`, 1024-byte aligned and up to 1008 bytes shorter: the lowering counts that
  slack in), addressed by i32 byte offsets. Out-of-range accesses are undefined: the lowering predicates them away.
* **Uniformity**: an expression is *uniform* when every thread of the block computes
  the same value: it uses no `ThreadIndex`, `Read` or varying `Name` (a `Uniform`
  statement's Name is uniform by its guarantee). `For` bounds must
  be uniform. *Collectives* (`Barrier`, `Mma`, `Wgmma`, `Ldmatrix`, `Shfl`) must be reached by
  every thread of the block at once: never inside an `If` whose condition varies.
  The verifier checks both.

Value semantics
---------------
Register dtypes are u1 (a predicate), u8, u16, u32, u64, i8, i16, i32, i64, f16, bf16,
f32, f64. Integer arithmetic wraps; `div`/`rem` truncate toward zero; shifts by at
least the width give 0 (or the sign fill for `shr` of a negative signed value); `shr`
is arithmetic on signed, logical on unsigned types; comparisons give u1. Float
operations round to nearest even once, in their own dtype (an f16 `add` is the exact
sum rounded to f16), with IEEE special values; `min`/`max` ignore a NaN operand.
Transcendentals (exp, log, ...) are the platform's correctly-rounded-or-close values:
results agree across backends within a few ulps, not bitwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.ir.ops import ELEMENTWISE, Result

REGISTER_DTYPES: frozenset[DType] = frozenset(
    (
        dtypes.u1,
        dtypes.u8,
        dtypes.u16,
        dtypes.u32,
        dtypes.u64,
        dtypes.i8,
        dtypes.i16,
        dtypes.i32,
        dtypes.i64,
        dtypes.f16,
        dtypes.bf16,
        dtypes.f32,
        dtypes.f64,
    )
)

# The operators of `tilelang.ir.ops.ELEMENTWISE`, by their thread-IR names.
UNARY_OPS = frozenset(op.thread_op for op in ELEMENTWISE.values() if op.arity == 1)
"""`not` is bitwise (logical on u1); the rest as the block IR's operators of that name."""

BINARY_OPS = frozenset(
    op.thread_op for op in ELEMENTWISE.values() if op.arity == 2 and op.result is Result.SAME
)
COMPARE_OPS = frozenset(
    op.thread_op for op in ELEMENTWISE.values() if op.arity == 2 and op.result is Result.BOOL
)
PAIR_OPS = frozenset(("add", "sub", "mul", "fma"))
#: Unary operators that count bits: their result is i32 whatever the operand's width.
COUNT_OPS = frozenset(op.thread_op for op in ELEMENTWISE.values() if op.result is Result.I32)


# --------------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Expr:
    """A pure per-thread value of a register dtype."""

    @property
    def dtype(self) -> DType:
        raise NotImplementedError

    def children(self) -> tuple[Expr, ...]:
        return ()


@dataclass(frozen=True)
class Imm(Expr):
    """An immediate; a float is stored as the Python float it equals exactly."""

    value: int | float
    type: DType

    @property
    def dtype(self) -> DType:
        return self.type


@dataclass(frozen=True)
class Name(Expr):
    """A scalar defined by a parameter, `Let`, `Shfl` or `For`."""

    name: str
    type: DType

    @property
    def dtype(self) -> DType:
        return self.type


@dataclass(frozen=True)
class ThreadIndex(Expr):
    """This thread's index in its block, 0 .. threads-1 (i32)."""

    @property
    def dtype(self) -> DType:
        return dtypes.i32


@dataclass(frozen=True)
class BlockIndex(Expr):
    """This block's index along grid dimension `axis` (i32)."""

    axis: int

    @property
    def dtype(self) -> DType:
        return dtypes.i32


@dataclass(frozen=True)
class Read(Expr):
    """Element `index` of this thread's local `local` (whose dtype is `type`)."""

    local: str
    index: int
    type: DType

    @property
    def dtype(self) -> DType:
        return self.type


@dataclass(frozen=True)
class Unary(Expr):
    """`op` of `UNARY_OPS`; the result has the operand's dtype, or i32 (`COUNT_OPS`)."""

    op: str
    a: Expr

    @property
    def dtype(self) -> DType:
        return dtypes.i32 if self.op in COUNT_OPS else self.a.dtype

    def children(self) -> tuple[Expr, ...]:
        return (self.a,)


@dataclass(frozen=True)
class Binary(Expr):
    """`op` of `BINARY_OPS` (result: the operands' dtype) or `COMPARE_OPS` (result u1).

    Both operands have the same dtype, except shifts, whose amount may be any integer.
    """

    op: str
    a: Expr
    b: Expr

    @property
    def dtype(self) -> DType:
        return dtypes.u1 if self.op in COMPARE_OPS else self.a.dtype

    def children(self) -> tuple[Expr, ...]:
        return (self.a, self.b)


@dataclass(frozen=True)
class Fma(Expr):
    """a·b + c rounded once, of f16, bf16, f32 or f64 values (f16 and bf16: computed in
    f32, then rounded to the dtype: `tilelang.ir.ops`' `fma`)."""

    a: Expr
    b: Expr
    c: Expr

    @property
    def dtype(self) -> DType:
        return self.a.dtype

    def children(self) -> tuple[Expr, ...]:
        return (self.a, self.b, self.c)


@dataclass(frozen=True)
class Select(Expr):
    """`a` where `cond` (u1) is 1, else `b`."""

    cond: Expr
    a: Expr
    b: Expr

    @property
    def dtype(self) -> DType:
        return self.a.dtype

    def children(self) -> tuple[Expr, ...]:
        return (self.cond, self.a, self.b)


@dataclass(frozen=True)
class Cvt(Expr):
    """A value conversion between register dtypes, by tilelang's casting policy.

    To a float: round to nearest even (f16/bf16/f32 overflow gives ±inf). Float to
    integer: round to nearest even, saturate, NaN gives 0 (`cvt.rni.sat`). Integer to
    integer: saturate. u1 converts as the integer 0 or 1; to u1, nonzero gives 1.
    """

    a: Expr
    type: DType

    @property
    def dtype(self) -> DType:
        return self.type

    def children(self) -> tuple[Expr, ...]:
        return (self.a,)


@dataclass(frozen=True)
class Bitcast(Expr):
    """The same bits as another dtype of the same width."""

    a: Expr
    type: DType

    @property
    def dtype(self) -> DType:
        return self.type

    def children(self) -> tuple[Expr, ...]:
        return (self.a,)


@dataclass(frozen=True)
class Lop3(Expr):
    """PTX `lop3.b32`: bit i of the result is bit (4·a_i + 2·b_i + c_i) of `lut` (u32)."""

    a: Expr
    b: Expr
    c: Expr
    lut: int

    @property
    def dtype(self) -> DType:
        return dtypes.u32

    def children(self) -> tuple[Expr, ...]:
        return (self.a, self.b, self.c)


@dataclass(frozen=True)
class Prmt(Expr):
    """PTX `prmt.b32` (default mode), u32: byte i of the result is byte
    `(selector >> 4·i) & 7` of the 8-byte value b:a (a holds bytes 0-3), or, when bit 3
    of that nibble is set, that byte's sign bit replicated."""

    a: Expr
    b: Expr
    selector: Expr

    @property
    def dtype(self) -> DType:
        return dtypes.u32

    def children(self) -> tuple[Expr, ...]:
        return (self.a, self.b, self.selector)


@dataclass(frozen=True)
class Pair(Expr):
    """f16x2 / bf16x2 arithmetic on u32 words: each 16-bit half (low = element 0) is an
    `elem` value; `op` in `PAIR_OPS` applies per half, rounding once to nearest even
    (`fma` is a·b + c with one rounding)."""

    op: str
    elem: DType
    a: Expr
    b: Expr
    c: Expr | None = None

    @property
    def dtype(self) -> DType:
        return dtypes.u32

    def children(self) -> tuple[Expr, ...]:
        return (self.a, self.b) + ((self.c,) if self.c is not None else ())


F8_PAIR_SOURCES = frozenset((dtypes.f8e4m3, dtypes.f8e5m2))


@dataclass(frozen=True)
class F8Pair(Expr):
    """PTX `cvt.rn.f16x2.{e4m3x2,e5m2x2}` (sm_89 and later), u32: the two bytes of
    16-bit half `half` of the u32 `a` (0: bits 0-15), each a code of `src` (in
    `F8_PAIR_SOURCES`), as an f16x2 word, the lower byte's value in the low half. The
    values are the casting policy's: exact (every f8e4m3 and f8e5m2 value is an f16),
    ±inf kept, NaN a NaN: the canonical 0x7FFF on the CPU backend (the payload a GPU
    gives is not yet checked on one; tests compare NaN as NaN)."""

    a: Expr
    src: DType
    half: int = 0

    @property
    def dtype(self) -> DType:
        return dtypes.u32

    def children(self) -> tuple[Expr, ...]:
        return (self.a,)


# --------------------------------------------------------------------------- statements


@dataclass(frozen=True)
class Local:
    """A per-thread register array of `count` elements of `dtype`."""

    name: str
    dtype: DType
    count: int

    @property
    def nbytes(self) -> int:
        return self.count * self.dtype.bits // 8


@dataclass(frozen=True)
class Reg:
    """The register bytes of `local` from byte offset `byte` on (operands of raw accesses)."""

    local: str
    byte: int


@dataclass(frozen=True)
class Stmt:
    COLLECTIVE: ClassVar[bool] = False

    def bodies(self) -> tuple[tuple[Stmt, ...], ...]:
        return ()


@dataclass(frozen=True)
class Let(Stmt):
    name: Name
    value: Expr


@dataclass(frozen=True)
class Uniform(Stmt):
    """`name` = `value`, where `value` may read registers but is the same in every
    thread of the block here: the lowering guarantees it (a scalar every thread loaded
    from one address, the element of a tile the block holds replicated). So `name` is
    uniform: it may bound a loop or decide a branch that holds collectives. A backend
    may evaluate `value` in any one thread (the LLVM emitter: thread 0)."""

    name: Name
    value: Expr


@dataclass(frozen=True)
class SetLocal(Stmt):
    """Element `index` of `local` becomes `value` (of the local's dtype)."""

    local: str
    index: int
    value: Expr


@dataclass(frozen=True)
class Move(Stmt):
    """Copies `width` register bytes from `src` to `dst` (the bits, whatever the dtypes)."""

    dst: Reg
    src: Reg
    width: int


@dataclass(frozen=True)
class GlobalLoad(Stmt):
    """`width` bytes at byte `offset` (i64) of tensor `tensor` into `dst`, where `pred`
    (u1, None = always) holds; elsewhere `dst` keeps its bytes."""

    dst: Reg
    width: int
    tensor: str
    offset: Expr
    pred: Expr | None = None


@dataclass(frozen=True)
class GlobalStore(Stmt):
    """`width` bytes of `src` to byte `offset` of tensor `tensor`, where `pred` holds."""

    tensor: str
    offset: Expr
    src: Reg
    width: int
    pred: Expr | None = None


#: The element dtypes of `Atomic` (and of the block IR's `atomic_add`): whole 16-,
#: 32- and 64-bit elements, the widths GPUs have atomic additions (or a compare-and-swap)
#: for.
ATOMIC_ADD_DTYPES: tuple[DType, ...] = (
    dtypes.f16,
    dtypes.bf16,
    dtypes.f32,
    dtypes.f64,
    dtypes.i32,
    dtypes.u32,
    dtypes.i64,
    dtypes.u64,
)

#: The element dtypes of each atomic op (thread IR's `Atomic`, the block IR's): an
#: exchange or compare-and-swap moves bits, so only its width matters; 32- and 64-bit
#: elements, which PTX's ``atom.exch``/``atom.cas`` and LLVM's ``atomicrmw xchg`` /
#: ``cmpxchg`` take (the f16/bf16 ones would need sm_70's 16-bit cas: not asked for).
ATOMIC_DTYPES: dict[str, tuple[DType, ...]] = {
    "add": ATOMIC_ADD_DTYPES,
    "max": ATOMIC_ADD_DTYPES,
    "min": ATOMIC_ADD_DTYPES,
    "xchg": (dtypes.f32, dtypes.f64, dtypes.i32, dtypes.u32, dtypes.i64, dtypes.u64),
    "cas": (dtypes.i32, dtypes.u32, dtypes.i64, dtypes.u64),
}


@dataclass(frozen=True)
class Atomic(Stmt):
    """Where `pred` holds: for each `dtype` element e_i of the `width` register bytes at
    `src` (i < width / s, s = the dtype's bytes), atomically replaces the element at byte
    `offset` + i·s of tensor `tensor` by its sum with e_i: integers wrap, floats round
    once to nearest even in `dtype` (subnormals kept; a NaN result is some NaN).

    `width` is s·2^j ≤ 16 and `offset` (i64) a multiple of `width`. Each element's
    addition is indivisible with respect to every other `Atomic` of that element;
    the order in which threads' (and blocks') additions happen is unspecified, and
    float sums depend on it.

    `op` "max" or "min" replaces the element by the larger (smaller) of it and e_i
    instead, as the `Binary` max/min do (floats: NaN ignored, -0 < +0; a float element
    whose value does not change is not written); the result does not depend on the
    order.

    `op` "xchg" replaces the element by e_i; "cas" replaces it by e_i where it equals
    (bit for bit) the element at the same byte of `compare`, and leaves it otherwise.

    With `dst`, each element's value just before its own update (every element in
    `width` one atomic read-modify-write of its own) goes to the same byte of `dst`'s
    local as e_i is at in `src`'s; where `pred` fails `dst` keeps its bytes. Without
    it nothing comes back (a GPU's fire-and-forget reduction)."""

    tensor: str
    offset: Expr
    src: Reg
    width: int
    dtype: DType
    pred: Expr | None = None
    op: str = "add"
    dst: Reg | None = None
    compare: Reg | None = None


@dataclass(frozen=True)
class AtomicFetchAdd(Stmt):
    """Where `pred` holds: atomically replaces the u32 at byte `offset` (i64, a
    multiple of 4) of tensor `tensor` by its sum with `value` (u32, wrapping) and writes
    the value it replaced to the 4 register bytes at `dst`; where `pred` fails nothing
    is accessed and `dst` keeps its bytes.

    Acquire-release at device scope: this thread's memory accesses before it happen
    before it, those after it after it, as seen by any thread of any block that
    fetch-adds the same element. With a `Barrier` before and after it, the whole
    block's accesses are ordered so (the block IR's `arrive`)."""

    dst: Reg
    tensor: str
    offset: Expr
    value: Expr
    pred: Expr | None = None


@dataclass(frozen=True)
class AtomicMerge(Stmt):
    """Where `pred` holds: writes the bits of `value` (u32) that `mask` (u32, at most
    its low 16 bits set) selects into the two bytes at byte `offset` (i64) of tensor
    `tensor`, little-endian (bit k is bit k % 8 of byte offset + k // 8); every other
    bit of those bytes keeps its value. A byte none of whose bits `mask` selects is not
    accessed.

    Atomic per byte: threads (of any block) that merge disjoint bits of a byte at the
    same time all keep their bits (what a store of packed sub-byte codes needs, whose
    neighbours in the byte belong to other threads). Two merges of the same bits at
    once leave an unspecified mix of the two."""

    tensor: str
    offset: Expr
    value: Expr
    mask: Expr
    pred: Expr | None = None


@dataclass(frozen=True)
class SharedLoad(Stmt):
    """`width` bytes at shared byte `address` (i32) into `dst`, where `pred` holds."""

    dst: Reg
    width: int
    address: Expr
    pred: Expr | None = None


@dataclass(frozen=True)
class SharedStore(Stmt):
    address: Expr
    src: Reg
    width: int
    pred: Expr | None = None


@dataclass(frozen=True)
class CpAsync(Stmt):
    """Starts copying `width` (4, 8 or 16) bytes from tensor byte `offset` to shared
    `address`; where `pred` is false it writes `width` zero bytes instead (src-size 0).
    The data is visible to this thread after a `CpAsyncWait` that covers its group, to
    other threads after that and a `Barrier`."""

    address: Expr
    tensor: str
    offset: Expr
    width: int
    pred: Expr | None = None


@dataclass(frozen=True)
class CpAsyncCommit(Stmt):
    """Closes this thread's current group of `CpAsync` copies."""


@dataclass(frozen=True)
class CpAsyncWait(Stmt):
    """Waits until at most `pending` of this thread's committed groups are in flight."""

    pending: int


@dataclass(frozen=True)
class Barrier(Stmt):
    """`bar.sync 0`: every thread of the block arrives before any continues; shared
    memory writes before it are visible to every thread after it."""

    COLLECTIVE: ClassVar[bool] = True


@dataclass(frozen=True)
class Shfl(Stmt):
    """`shfl.sync` over segments of `width` lanes (a power of two ≤ 32): `result` (a new
    Name) gets `value` (32 bits) from the source lane of this lane's segment: `idx`:
    lane `arg`; `xor`: lane ^ arg; `up`: lane - arg; `down`: lane + arg, all within the
    segment; a source outside the segment gives this lane's own value."""

    result: Name
    value: Expr
    mode: str
    arg: Expr
    width: int = 32
    COLLECTIVE: ClassVar[bool] = True


@dataclass(frozen=True)
class For(Stmt):
    """`for var in range(start, stop, step)` with uniform bounds, as Python's `range`
    runs: upward while `var < stop` for a positive step, downward while `var > stop` for
    a negative one (compared in the loop variable's dtype); a zero step runs no
    iteration (a launch never gets one: `ThreadFunction.checks` rejects it on the
    host). The trip count is computed once, so `var + step` never overflows.
    `unroll` (a hint, no semantics): iterations the compiler may unroll, 1 to keep the
    loop rolled; None leaves it to the compiler."""

    var: Name
    start: Expr
    stop: Expr
    step: Expr
    body: tuple[Stmt, ...]
    unroll: int | None = None

    def bodies(self) -> tuple[tuple[Stmt, ...], ...]:
        return (self.body,)


@dataclass(frozen=True)
class If(Stmt):
    cond: Expr
    then_body: tuple[Stmt, ...]
    else_body: tuple[Stmt, ...] = ()

    def bodies(self) -> tuple[tuple[Stmt, ...], ...]:
        return (self.then_body, self.else_body)


# --------------------------------------------------------------------------- the function


@dataclass(frozen=True)
class Param:
    """A kernel argument: a tensor (`is_tensor`: a byte buffer of `dtype` elements) or a
    scalar `Name` of `dtype` (runtime scalars and the sizes of the tensors' shapes)."""

    name: str
    dtype: DType
    is_tensor: bool


@dataclass(frozen=True)
class ThreadFunction:
    """One kernel's per-thread program.

    `grid` gives the number of blocks per dimension as uniform expressions of the scalar
    parameters only (the host evaluates them before a launch). `checks` are conditions
    (u1 expressions of the scalar parameters only) the host evaluates before a launch,
    each with the message a launch that breaks it fails with (the source line that asked
    for it first). `stats` counts what the lowering chose (e.g. `mma`, `ldmatrix`,
    `dequant_vector`, `dequant_scalar`). `finite` names the tensor parameters the launch
    proves hold no inf or NaN (the "finite" facts and bounds of `Function.assume`, for
    tensors the function never writes): a backend may rely on it. `grid_at` is where the
    source asked for the grid ("file.py:12", the `tl.blocks` line), which a launch's
    errors about the grid name; "" for a kernel without one (a grid of one block).
    """

    name: str
    params: tuple[Param, ...]
    threads: int
    grid: tuple[Expr, ...]
    shared_bytes: int
    locals: tuple[Local, ...]
    body: tuple[Stmt, ...]
    stats: tuple[tuple[str, int], ...] = field(default=())
    checks: tuple[tuple[Expr, str], ...] = field(default=())
    finite: tuple[str, ...] = field(default=())
    grid_at: str = field(default="")

    def local(self, name: str) -> Local:
        for loc in self.locals:
            if loc.name == name:
                return loc
        raise KeyError(name)


# --------------------------------------------------------------------------- traversal


def walk_stmts(body: tuple[Stmt, ...]) -> Iterator[Stmt]:
    """Every statement of `body`, nested ones included, in program order."""
    for stmt in body:
        yield stmt
        for inner in stmt.bodies():
            yield from walk_stmts(inner)


DEFINING_FIELDS = {"Let": "name", "Uniform": "name", "Shfl": "result", "For": "var"}
"""The field of each statement class that defines a Name (not an expression it reads)."""


def stmt_exprs(stmt: Stmt) -> tuple[Expr, ...]:
    """The expressions a statement evaluates itself (not those of nested bodies)."""
    read = _READERS.get(type(stmt))
    if read is None:
        read = _READERS[type(stmt)] = _reader(type(stmt))
    return read(stmt)


#: Per statement class, its `stmt_exprs` (made once per class: the compilers call it
#: for every statement several times).
_READERS: dict[type, Callable[[Stmt], tuple[Expr, ...]]] = {}


def _reader(cls: type) -> Callable[[Stmt], tuple[Expr, ...]]:
    """`stmt_exprs` of a statement class: each field but the one it defines, kept when it
    holds an expression, in field order — as straight-line code, which runs 3-4x faster
    than a generator over the field names (as `dataclasses` writes `__init__`)."""
    skip = DEFINING_FIELDS.get(cls.__name__)
    kept = [
        f"((v,) if isinstance(v := s.{name}, Expr) else ())"
        for name in cls.__dataclass_fields__
        if name != skip
    ]
    namespace = {"Expr": Expr}
    exec(f"def read(s):\n    return {' + '.join(kept) or '()'}\n", namespace)
    return namespace["read"]


def written_tensors(body: tuple[Stmt, ...]) -> frozenset[str]:
    """The tensors that statements of `body` write (stores and atomics)."""
    return frozenset(
        s.tensor
        for s in walk_stmts(body)
        if isinstance(s, GlobalStore | Atomic | AtomicMerge | AtomicFetchAdd)
    )


def defined_name(stmt: Stmt) -> Name | None:
    """The Name a statement defines, if any."""
    field_name = DEFINING_FIELDS.get(type(stmt).__name__)
    return getattr(stmt, field_name) if field_name else None


def is_uniform(expr: Expr, varying: set[str] | frozenset[str]) -> bool:
    """Whether every thread computes the same `expr`, given the Names that vary."""
    for sub in walk_expr(expr):
        if isinstance(sub, ThreadIndex | Read):
            return False
        if isinstance(sub, Name) and sub.name in varying:
            return False
    return True


def walk_expr(expr: Expr) -> Iterator[Expr]:
    """`expr` and every expression in it, each before its children, children in order.

    One generator and an explicit stack: nested generators cost each node the depth of
    the tree in resumptions, and the compilers walk every expression several times."""
    stack = [expr]
    pop, push = stack.pop, stack.extend
    while stack:
        e = pop()
        yield e
        children = e.children()
        if children:
            push(children[::-1])


def count_stmts(fn: ThreadFunction) -> dict[str, int]:
    """How many statements of each class the function has (nested ones included)."""
    counts: dict[str, int] = {}
    for stmt in walk_stmts(fn.body):
        key = type(stmt).__name__
        counts[key] = counts.get(key, 0) + 1
    return counts
