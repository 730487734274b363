"""The block-IR verifier: is a `Function` well formed?

This module owns the rules every pass may assume and every pass must keep:

- SSA and scope: every Var is defined once, before its uses, and used only where it
  is visible (a body sees what was defined before its instruction, the instruction's
  `body_params` and its own earlier definitions; body values leave only through
  `yield` and the instruction's results); a use carries the type of its definition;
- the function: `warps` >= 1, params are tensors or scalars, sizes are integer scalars,
  tensor shapes name only sizes and constexprs;
- `blocks` appears exactly once, at the top level, after nothing but scalar arithmetic;
- control flow is uniform: `for` bounds and `if` conditions are scalars; each body ends
  in exactly one `yield` (and `yield` appears nowhere else), whose values have the
  types of the loop's carried values / the branch's results;
- per instruction, the operand kinds, dtypes and shapes its semantics need (see each
  `_check_<Class>` below, and `tilelang.ir.ops` for the elementwise operators).

`verify(fn)` raises `IRVerifyError` for the first problem found. The message starts
with the instruction's source location (`file:line:col: `), names the instruction and
says what was expected and what was found.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.ir import nodes, ops
from tilelang.ir.nodes import Block, Const, Function, Instr, Loc, Value, Var
from tilelang.ir.printer import MNEMONICS, print_type, print_value
from tilelang.ir.shape_expr import symbols
from tilelang.ir.types import ScalarType, SharedType, TensorType, TileType, Type
from tilelang.ir.visit import body_params


class IRVerifyError(ValueError):
    """An ill-formed function; the message starts with the instruction's `file:line:col: `."""


def verify(fn: Function) -> None:
    """Check `fn` against the rules of the module docstring; raise `IRVerifyError`."""
    _Verifier(fn).run()


# -- describing values -----------------------------------------------------------------


def _type(value: Value) -> Type:
    return ScalarType(value.dtype) if isinstance(value, Const) else value.type


def _show(value: Value | None) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, Const):
        return f"the constant {print_value(value)}"
    return f"{print_value(value)} of type {print_type(value.type)}"


def _is_scalar(value: Value) -> bool:
    return isinstance(_type(value), ScalarType)


def _is_tile(value: Value) -> bool:
    return isinstance(value, Var) and isinstance(value.type, TileType)


def _is_int_scalar(value: Value) -> bool:
    return _is_scalar(value) and not _type(value).dtype.is_float


def _mnemonic(instr: Instr) -> str:
    if isinstance(instr, nodes.Compute):
        return instr.op
    return MNEMONICS.get(type(instr), type(instr).__name__)


def _shape(shape: Iterable[int]) -> str:
    return f"[{', '.join(str(s) for s in shape)}]"


_U1 = dtypes.u1

# (operand dtype name, accumulator dtype names) allowed by dot.
_DOT_ACCUMULATORS: dict[str, tuple[str, ...]] = {
    "f16": ("f32", "f16"),
    "bf16": ("f32",),
    "i8": ("i32",),
    "u8": ("i32",),
    "f32": ("f32",),
}


class _Verifier:
    def __init__(self, fn: Function) -> None:
        self.fn = fn
        self.def_loc: dict[str, Loc] = {}  # every definition of the function, by name
        self.defined: dict[str, Loc] = {}  # definitions met so far
        self.blocks_seen = False
        self.tensor_params = tuple(v for v in fn.params if isinstance(v.type, TensorType))
        for var, loc in _defs_with_locs(fn):
            self.def_loc.setdefault(var.name, loc)

    # -- reporting -----------------------------------------------------------------------

    def fail(self, instr: Instr, message: str) -> IRVerifyError:
        return IRVerifyError(f"{instr.loc}: {_mnemonic(instr)}: {message}")

    def expect(self, ok: bool, instr: Instr, message: str) -> None:
        if not ok:
            raise self.fail(instr, message)

    # -- the function --------------------------------------------------------------------

    def run(self) -> None:
        fn = self.fn
        where = f"{fn.loc}: kernel {fn.name}"
        if isinstance(fn.warps, bool) or not isinstance(fn.warps, int) or fn.warps < 1:
            raise IRVerifyError(f"{where}: expected warps >= 1, found {fn.warps!r}")
        scope: dict[str, Var] = {}
        for var in fn.params:
            if not isinstance(var.type, TensorType | ScalarType):
                raise IRVerifyError(
                    f"{where}: expected parameter {print_value(var)} to be a tensor or a "
                    f"scalar, found {print_type(var.type)}"
                )
            self.define_param(var, scope, where)
        for var in fn.sizes:
            if not _is_int_scalar(var):
                raise IRVerifyError(
                    f"{where}: expected size {print_value(var)} to be an integer scalar, "
                    f"found {print_type(var.type)}"
                )
            self.define_param(var, scope, where)
        self.check_tensor_symbols(where)
        self.block(fn.body, scope, top=True)
        if not self.blocks_seen:
            raise IRVerifyError(
                f"{where}: expected one blocks instruction at the top level, found none"
            )

    def define_param(self, var: Var, scope: dict[str, Var], where: str) -> None:
        if var.name in self.defined:
            raise IRVerifyError(f"{where}: {print_value(var)} is declared twice")
        self.defined[var.name] = self.fn.loc
        scope[var.name] = var

    def check_tensor_symbols(self, where: str) -> None:
        known = {v.name for v in self.fn.sizes} | {name for name, _ in self.fn.constexprs}
        for var in self.tensor_params:
            for dim in var.type.shape:
                for name in symbols(dim):
                    if name not in known:
                        raise IRVerifyError(
                            f"{where}: the shape of {print_value(var)} uses {name!r}, "
                            "expected a size or a constexpr of the kernel"
                        )

    # -- blocks, scope and SSA -----------------------------------------------------------

    def block(self, block: Block, scope: dict[str, Var], top: bool = False) -> None:
        last = len(block.instrs) - 1
        for index, instr in enumerate(block.instrs):
            if isinstance(instr, nodes.Yield) and (top or index != last):
                where = "at the top level" if top else "before the end of a body"
                raise self.fail(
                    instr,
                    f"expected yield only as the last instruction of a body, found it {where}",
                )
            if top:
                self.check_blocks_order(instr)
            elif isinstance(instr, nodes.Blocks):
                raise self.fail(
                    instr, "expected blocks at the top level of the kernel, found it inside a body"
                )
            self.instr(instr, scope)

    def check_blocks_order(self, instr: Instr) -> None:
        if isinstance(instr, nodes.Blocks):
            self.expect(
                not self.blocks_seen, instr, "expected one blocks instruction, found a second"
            )
            self.blocks_seen = True
            return
        scalar_arith = isinstance(instr, nodes.Compute | nodes.Cast | nodes.Full) and all(
            isinstance(v.type, ScalarType) for v in instr.defs()
        )
        if not self.blocks_seen and not scalar_arith:
            raise self.fail(
                instr,
                "expected the blocks instruction before this one "
                "(only scalar arithmetic may precede blocks)",
            )

    def instr(self, instr: Instr, scope: dict[str, Var]) -> None:
        for value in instr.uses():
            if isinstance(value, Var):
                self.check_use(instr, value, scope)
        checker = _CHECKS.get(type(instr))
        if checker is None:
            raise self.fail(instr, f"unknown instruction class {type(instr).__name__}")
        checker(self, instr)
        if isinstance(instr, nodes.For):
            self.for_body(instr, scope)
        elif isinstance(instr, nodes.If):
            self.if_bodies(instr, scope)
        for var in instr.defs():
            self.define(instr, var, scope)

    def check_use(self, instr: Instr, var: Var, scope: dict[str, Var]) -> None:
        visible = scope.get(var.name)
        if visible is not None:
            if visible != var:
                raise self.fail(
                    instr,
                    f"{print_value(var)} is used with type {print_type(var.type)}, "
                    f"expected the type of its definition, {print_type(visible.type)}",
                )
            return
        if var.name not in self.def_loc:
            raise self.fail(instr, f"{print_value(var)} is used but never defined")
        if var.name not in self.defined:
            raise self.fail(
                instr,
                f"{print_value(var)} is used before its definition at {self.def_loc[var.name]}",
            )
        raise self.fail(
            instr,
            f"{print_value(var)} (defined at {self.defined[var.name]}) is not visible here: a "
            "value defined in a loop or branch body leaves it only through yield and the "
            "instruction's results",
        )

    def define(self, instr: Instr, var: Var, scope: dict[str, Var]) -> None:
        if var.name in self.defined:
            raise self.fail(
                instr,
                f"{print_value(var)} is defined a second time (first at "
                f"{self.defined[var.name]}); expected each value to be defined once",
            )
        self.defined[var.name] = instr.loc
        scope[var.name] = var

    def body(self, instr: Instr, body: Block, scope: dict[str, Var], what: str) -> nodes.Yield:
        self.expect(
            bool(body.instrs) and isinstance(body.instrs[-1], nodes.Yield),
            instr,
            f"expected the {what} to end in yield, found "
            + (type(body.instrs[-1]).__name__ if body.instrs else "an empty body"),
        )
        self.block(body, scope)
        return body.instrs[-1]

    def for_body(self, instr: nodes.For, scope: dict[str, Var]) -> None:
        inner = dict(scope)
        for var in body_params(instr):
            self.define(instr, var, inner)
        end = self.body(instr, instr.body, inner, "loop body")
        self.same_types(
            instr, "the yielded values", end.values, "the carried values", instr.carried
        )

    def if_bodies(self, instr: nodes.If, scope: dict[str, Var]) -> None:
        for what, body in (("then body", instr.then_body), ("else body", instr.else_body)):
            end = self.body(instr, body, dict(scope), what)
            self.same_types(
                instr, f"the values yielded by the {what}", end.values, "the results", instr.results
            )

    def same_types(
        self, instr: Instr, what: str, values: Iterable[Value], other: str, others: Iterable[Value]
    ) -> None:
        left, right = [_type(v) for v in values], [_type(v) for v in others]
        if left != right:
            raise self.fail(
                instr,
                f"expected {what} to have the types of {other} "
                f"({', '.join(map(print_type, right)) or 'none'}), "
                f"found {', '.join(map(print_type, left)) or 'none'}",
            )

    # -- operand helpers -----------------------------------------------------------------

    def tile(self, instr: Instr, value: Value, what: str) -> TileType:
        self.expect(
            _is_tile(value), instr, f"expected {what} to be a register tile, found {_show(value)}"
        )
        return value.type

    def scalar_or_tile(self, instr: Instr, value: Value, what: str) -> Type:
        ok = _is_scalar(value) or _is_tile(value)
        self.expect(
            ok, instr, f"expected {what} to be a scalar or a register tile, found {_show(value)}"
        )
        return _type(value)

    def int_scalar(self, instr: Instr, value: Value, what: str) -> None:
        self.expect(
            _is_int_scalar(value),
            instr,
            f"expected {what} to be an integer scalar, found {_show(value)}",
        )

    def same_dtype(self, instr: Instr, found: DType, expected: DType, what: str) -> None:
        self.expect(found == expected, instr, f"expected {what} of dtype {expected}, found {found}")

    def tensor_param(self, instr: Instr, value: Value) -> TensorType:
        self.expect(
            value in self.tensor_params,
            instr,
            f"expected a global tensor parameter of the kernel, found {_show(value)}",
        )
        return value.type

    def offsets(self, instr: Instr, tensor: TensorType, offsets: tuple[Value, ...]) -> None:
        self.expect(
            len(offsets) == tensor.rank,
            instr,
            f"expected {tensor.rank} offsets (one per tensor dim), found {len(offsets)}",
        )
        for i, offset in enumerate(offsets):
            self.int_scalar(instr, offset, f"offset {i}")

    def result_tile(self, instr: Instr, result: Var) -> TileType:
        return self.tile(instr, result, "the result")


# -- per-instruction checks -------------------------------------------------------------


def _check_blocks(v: _Verifier, i: nodes.Blocks) -> None:
    v.expect(1 <= len(i.sizes) <= 3, i, f"expected 1 to 3 grid sizes, found {len(i.sizes)}")
    v.expect(
        len(i.results) == len(i.sizes),
        i,
        f"expected one block index per grid size ({len(i.sizes)}), found {len(i.results)}",
    )
    for n, size in enumerate(i.sizes):
        v.int_scalar(i, size, f"grid size {n}")
    for n, result in enumerate(i.results):
        v.int_scalar(i, result, f"block index {n}")


def _check_full(v: _Verifier, i: nodes.Full) -> None:
    v.expect(_is_scalar(i.value), i, f"expected a scalar value, found {_show(i.value)}")
    v.scalar_or_tile(i, i.result, "the result")


def _check_arange(v: _Verifier, i: nodes.Arange) -> None:
    result = v.result_tile(i, i.result)
    ok = result.rank == 1 and not result.dtype.is_float
    v.expect(ok, i, f"expected a 1-D integer tile result, found {print_type(result)}")


def _check_shared_alloc(v: _Verifier, i: nodes.SharedAlloc) -> None:
    ok = isinstance(i.result.type, SharedType)
    v.expect(ok, i, f"expected a shared tile result, found {print_type(i.result.type)}")


def _check_load(v: _Verifier, i: nodes.Load) -> None:
    tensor = v.tensor_param(i, i.tensor)
    v.offsets(i, tensor, i.offsets)
    result = v.result_tile(i, i.result)
    v.expect(
        result.rank == tensor.rank,
        i,
        f"expected a result of rank {tensor.rank} (the tensor's), found {print_type(result)}",
    )
    v.same_dtype(i, result.dtype, tensor.dtype, "a result")
    if i.fill is not None:
        ok = isinstance(i.fill, Const)
        v.expect(ok, i, f"expected a constant fill value, found {_show(i.fill)}")
        v.same_dtype(i, i.fill.dtype, tensor.dtype, "a fill value")


def _check_store(v: _Verifier, i: nodes.Store) -> None:
    tensor = v.tensor_param(i, i.tensor)
    v.offsets(i, tensor, i.offsets)
    value = v.tile(i, i.value, "the stored value")
    v.expect(
        value.rank == tensor.rank,
        i,
        f"expected a stored tile of rank {tensor.rank} (the tensor's), found {print_type(value)}",
    )
    v.same_dtype(i, value.dtype, tensor.dtype, "a stored tile")


def _shared(v: _Verifier, i: Instr, value: Value) -> SharedType:
    ok = isinstance(value, Var) and isinstance(value.type, SharedType)
    v.expect(ok, i, f"expected a shared tile, found {_show(value)}")
    return value.type


def _check_shared_slice(v: _Verifier, i: nodes.SharedSlice) -> None:
    whole = _shared(v, i, i.shared)
    v.int_scalar(i, i.index, "the index")
    result = i.result.type
    ok = (
        isinstance(result, SharedType)
        and result.dtype == whole.dtype
        and tuple(result.shape) == tuple(whole.shape[1:])
    )
    v.expect(ok, i, f"expected a result of shape {list(whole.shape[1:])} and dtype {whole.dtype}")


def _check_copy_async(v: _Verifier, i: nodes.CopyAsync) -> None:
    shared = _shared(v, i, i.shared)
    tensor = v.tensor_param(i, i.tensor)
    v.offsets(i, tensor, i.offsets)
    v.expect(
        len(shared.shape) == tensor.rank,
        i,
        f"expected a shared tile of rank {tensor.rank} (the tensor's), found {print_type(shared)}",
    )
    v.same_dtype(i, shared.dtype, tensor.dtype, "a shared tile")


def _check_async_wait(v: _Verifier, i: nodes.AsyncWait) -> None:
    ok = isinstance(i.pending, int) and i.pending >= 0
    v.expect(ok, i, f"expected a count of pending groups >= 0, found {i.pending!r}")


def _same_tile(v: _Verifier, i: Instr, tile: TileType, shared: SharedType, what: str) -> None:
    ok = tile.dtype == shared.dtype and tuple(tile.shape) == tuple(shared.shape)
    v.expect(
        ok,
        i,
        f"expected {what} of the shared tile's dtype and shape, "
        f"{shared.dtype} {_shape(shared.shape)}, found {print_type(tile)}",
    )


def _check_shared_load(v: _Verifier, i: nodes.SharedLoad) -> None:
    shared = _shared(v, i, i.shared)
    _same_tile(v, i, v.result_tile(i, i.result), shared, "a result")


def _check_shared_store(v: _Verifier, i: nodes.SharedStore) -> None:
    shared = _shared(v, i, i.shared)
    _same_tile(v, i, v.tile(i, i.value, "the stored value"), shared, "a stored tile")


def _check_nothing(v: _Verifier, i: Instr) -> None:
    return None


def _operand_class_ok(kind: ops.Operand, dtype: DType) -> bool:
    if kind is ops.Operand.INT:
        return not dtype.is_float
    if kind is ops.Operand.FLOAT:
        return dtype.is_float
    return True


def _check_compute(v: _Verifier, i: nodes.Compute) -> None:
    op = ops.ELEMENTWISE.get(i.op)
    v.expect(
        op is not None, i, f"expected an elementwise operator of tilelang.ir.ops, found {i.op!r}"
    )
    v.expect(len(i.args) == op.arity, i, f"expected {op.arity} operand(s), found {len(i.args)}")
    for arg in i.args:
        v.scalar_or_tile(i, arg, "every operand")
    result = v.scalar_or_tile(i, i.result, "the result")
    values = i.args
    if i.op == "where":
        cond, values = i.args[0], i.args[1:]
        v.same_dtype(i, _type(cond).dtype, _U1, "a condition")
    dtype = _type(values[0]).dtype
    for arg in values:
        v.expect(
            _type(arg).dtype == dtype,
            i,
            f"expected every operand of dtype {dtype} (one dtype for all), found {_show(arg)}",
        )
    v.expect(
        _operand_class_ok(op.operands, dtype),
        i,
        f"expected {op.operands.value} operands, found dtype {dtype}",
    )
    v.same_dtype(i, result.dtype, _U1 if op.result is ops.Result.BOOL else dtype, "a result")
    _check_elementwise_shapes(v, i, result)


def _check_elementwise_shapes(v: _Verifier, i: nodes.Compute, result: Type) -> None:
    tiles = [arg for arg in i.args if _is_tile(arg)]
    if not isinstance(result, TileType):
        v.expect(
            not tiles,
            i,
            f"expected a tile result (an operand is a tile), found {print_type(result)}",
        )
        return
    v.expect(
        bool(tiles),
        i,
        f"expected a scalar result (every operand is a scalar), found {print_type(result)}",
    )
    for arg in tiles:
        v.expect(
            tuple(arg.type.shape) == tuple(result.shape),
            i,
            f"expected tile operands of the result's shape {_shape(result.shape)} "
            f"(broadcast them first), found {_show(arg)}",
        )


def _check_cast(v: _Verifier, i: nodes.Cast) -> None:
    source = v.scalar_or_tile(i, i.value, "the value")
    result = v.scalar_or_tile(i, i.result, "the result")
    same = type(source) is type(result) and getattr(source, "shape", ()) == getattr(
        result, "shape", ()
    )
    v.expect(
        same,
        i,
        f"expected a result of the value's shape, found {print_type(result)} from {print_type(source)}",
    )


def _check_view(v: _Verifier, i: nodes.View) -> None:
    source = v.tile(i, i.value, "the value")
    result = v.result_tile(i, i.result)
    if source.layout is not None and result.layout is not None:
        _check_view_layouts(v, i, source, result)
        return
    ok = (
        source.rank == result.rank >= 1
        and source.shape[:-1] == result.shape[:-1]
        and source.shape[-1] * source.dtype.bits == result.shape[-1] * result.dtype.bits
    )
    v.expect(
        ok,
        i,
        "expected (without layouts) the same rank and leading dims and the same bits per row "
        f"(last dim x dtype bits), found {print_type(source)} -> {print_type(result)}",
    )


def _check_view_layouts(v: _Verifier, i: nodes.View, source: TileType, result: TileType) -> None:
    threads = (source.layout.num_threads, result.layout.num_threads)
    v.expect(
        threads[0] == threads[1],
        i,
        f"expected equal thread counts, found {threads[0]} -> {threads[1]}",
    )
    bits = (
        source.layout.num_locals * source.dtype.bits,
        result.layout.num_locals * result.dtype.bits,
    )
    v.expect(bits[0] == bits[1], i, f"expected equal bits per thread, found {bits[0]} -> {bits[1]}")


def _check_relayout(v: _Verifier, i: nodes.Relayout) -> None:
    source = v.tile(i, i.value, "the value")
    result = v.result_tile(i, i.result)
    v.expect(
        (source.dtype, source.shape) == (result.dtype, result.shape),
        i,
        f"expected a result of the value's dtype and shape, found {print_type(source)} -> "
        f"{print_type(result)}",
    )


def _check_dot(v: _Verifier, i: nodes.Dot) -> None:
    a, b = v.tile(i, i.a, "a"), v.tile(i, i.b, "b")
    acc, result = v.tile(i, i.acc, "the accumulator"), v.result_tile(i, i.result)
    for name, t in (("a", a), ("b", b), ("the accumulator", acc), ("the result", result)):
        v.expect(t.rank == 2, i, f"expected {name} to be 2-D, found {print_type(t)}")
    (m, k), (k2, n) = a.shape, b.shape
    v.expect(
        k == k2,
        i,
        f"expected a [M, K] and b [K, N], found a {_shape(a.shape)} and b {_shape(b.shape)}",
    )
    for name, t in (("the accumulator", acc), ("the result", result)):
        v.expect(
            tuple(t.shape) == (m, n),
            i,
            f"expected {name} of shape [M, N] = {_shape((m, n))}, found {print_type(t)}",
        )
    v.same_dtype(i, b.dtype, a.dtype, "b (a's dtype)")
    allowed = _DOT_ACCUMULATORS.get(str(a.dtype))
    v.expect(
        allowed is not None,
        i,
        f"expected operands of dtype {', '.join(_DOT_ACCUMULATORS)}, found {a.dtype}",
    )
    v.expect(
        str(acc.dtype) in allowed,
        i,
        f"expected an accumulator of dtype {' or '.join(allowed)} for {a.dtype} operands, found {acc.dtype}",
    )
    v.same_dtype(i, result.dtype, acc.dtype, "a result (the accumulator's dtype)")


def _check_axis(v: _Verifier, i: Instr, axis: int, rank: int) -> None:
    v.expect(
        isinstance(axis, int) and 0 <= axis < rank,
        i,
        f"expected an axis in 0..{rank - 1}, found {axis!r}",
    )


def _check_reduce(v: _Verifier, i: nodes.Reduce) -> None:
    v.expect(
        i.op in ops.REDUCTIONS,
        i,
        f"expected a reduction in {', '.join(ops.REDUCTIONS)}, found {i.op!r}",
    )
    source = v.tile(i, i.value, "the value")
    if i.op in ("and", "or", "xor"):
        v.expect(
            not source.dtype.is_float,
            i,
            f"expected an integer tile for {i.op}, found {source.dtype}",
        )
    _check_axis(v, i, i.axis, source.rank)
    shape = source.shape[: i.axis] + source.shape[i.axis + 1 :]
    result = i.result.type
    ok = (isinstance(result, TileType) and tuple(result.shape) == tuple(shape)) or (
        isinstance(result, ScalarType) and not shape
    )
    v.expect(ok, i, f"expected a result of shape {_shape(shape)}, found {print_type(result)}")
    v.same_dtype(i, result.dtype, source.dtype, "a result")


def _check_scan(v: _Verifier, i: nodes.Scan) -> None:
    v.expect(i.op in ops.SCANS, i, f"expected a scan in {', '.join(ops.SCANS)}, found {i.op!r}")
    source = v.tile(i, i.value, "the value")
    _check_axis(v, i, i.axis, source.rank)
    result = v.result_tile(i, i.result)
    ok = tuple(result.shape) == tuple(source.shape) and result.dtype == source.dtype
    v.expect(ok, i, f"expected a result of the value's shape and dtype, found {print_type(result)}")
    v.expect(isinstance(i.reverse, bool), i, f"expected reverse to be a bool, found {i.reverse!r}")


def _check_reshape(v: _Verifier, i: nodes.Reshape) -> None:
    source = v.tile(i, i.value, "the value")
    result = v.result_tile(i, i.result)
    v.expect(
        source.numel == result.numel,
        i,
        f"expected a result of {source.numel} elements, found {print_type(result)}",
    )
    v.same_dtype(i, result.dtype, source.dtype, "a result")


def _check_transpose(v: _Verifier, i: nodes.Transpose) -> None:
    source = v.tile(i, i.value, "the value")
    perm = tuple(i.perm)
    v.expect(
        sorted(perm) == list(range(source.rank)),
        i,
        f"expected a permutation of 0..{source.rank - 1}, found {list(perm)}",
    )
    result = v.result_tile(i, i.result)
    shape = tuple(source.shape[p] for p in perm)
    v.expect(
        tuple(result.shape) == shape,
        i,
        f"expected a result of shape {_shape(shape)}, found {print_type(result)}",
    )
    v.same_dtype(i, result.dtype, source.dtype, "a result")


def _check_broadcast(v: _Verifier, i: nodes.Broadcast) -> None:
    source = v.scalar_or_tile(i, i.value, "the value")
    result = v.result_tile(i, i.result)
    v.same_dtype(i, result.dtype, source.dtype, "a result")
    if isinstance(source, ScalarType):
        return
    ok = source.rank == result.rank and all(
        s in (1, r) for s, r in zip(source.shape, result.shape, strict=True)
    )
    v.expect(
        ok,
        i,
        f"expected a result of the same rank whose dims equal the value's or extend a 1, "
        f"found {print_type(source)} -> {print_type(result)}",
    )


def _check_for(v: _Verifier, i: nodes.For) -> None:
    for what, value in (("start", i.start), ("stop", i.stop), ("step", i.step)):
        v.int_scalar(i, value, f"the {what} (loop bounds are block-uniform)")
    v.int_scalar(i, i.var, "the loop variable")
    v.same_types(i, "the carried values", i.carried, "the initial values", i.inits)
    v.same_types(i, "the results", i.results, "the carried values", i.carried)
    for what, value in (("unroll", i.unroll), ("stages", i.stages)):
        ok = value is None or (isinstance(value, int) and value >= 1)
        v.expect(ok, i, f"expected {what} to be absent or >= 1, found {value!r}")


def _check_if(v: _Verifier, i: nodes.If) -> None:
    if _is_tile(i.cond):
        raise v.fail(
            i,
            f"expected a scalar condition, found the tile {_show(i.cond)}: branching on a tile "
            "is non-uniform control flow (threads would disagree); use where() to select "
            "elementwise",
        )
    v.expect(_is_scalar(i.cond), i, f"expected a scalar condition, found {_show(i.cond)}")
    v.same_dtype(i, _type(i.cond).dtype, _U1, "a condition")


_CHECKS: dict[type[Instr], Callable[[_Verifier, Instr], None]] = {
    nodes.Blocks: _check_blocks,
    nodes.Full: _check_full,
    nodes.Arange: _check_arange,
    nodes.SharedAlloc: _check_shared_alloc,
    nodes.Load: _check_load,
    nodes.Store: _check_store,
    nodes.CopyAsync: _check_copy_async,
    nodes.SharedSlice: _check_shared_slice,
    nodes.AsyncCommit: _check_nothing,
    nodes.AsyncWait: _check_async_wait,
    nodes.SharedLoad: _check_shared_load,
    nodes.SharedStore: _check_shared_store,
    nodes.Sync: _check_nothing,
    nodes.Compute: _check_compute,
    nodes.Cast: _check_cast,
    nodes.View: _check_view,
    nodes.Relayout: _check_relayout,
    nodes.Dot: _check_dot,
    nodes.Reduce: _check_reduce,
    nodes.Scan: _check_scan,
    nodes.Reshape: _check_reshape,
    nodes.Transpose: _check_transpose,
    nodes.Broadcast: _check_broadcast,
    nodes.Print: _check_nothing,
    nodes.Yield: _check_nothing,
    nodes.For: _check_for,
    nodes.If: _check_if,
}


def _defs_with_locs(fn: Function) -> list[tuple[Var, Loc]]:
    """Every definition with the location of its instruction (the kernel's for params)."""
    found = [(var, fn.loc) for var in (*fn.params, *fn.sizes)]

    def visit(block: Block) -> None:
        for instr in block.instrs:
            found.extend((var, instr.loc) for var in body_params(instr))
            for body in instr.bodies():
                visit(body)
            found.extend((var, instr.loc) for var in instr.defs())

    visit(fn.body)
    return found
