"""Differential testing: hypothesis generates small kernels, and every one must give the
same result through the compiled path (pass pipeline, lowering, LLVM CPU backend) as
through the reference interpreter (`kernel.interpret`), which is the semantics.

A generated kernel is one of a few templates specialized on drawn compile-time
constants: a *program* (a tuple of steps the kernel body unrolls at compile time, see
`run_step`), the dtypes, tile shapes (powers of two), warps, load/store offsets that
make boxes stick out of the tensor, fills. Data comes from a drawn seed. Everything
here is bit-exact (integers, casts, views, data movement, exact float arithmetic) but
for `test_float_accumulation_and_transcendentals`, which uses a tolerance.

The bugs this file found keep a minimal repro each at the end (`test_regression_*`).
A bug found later that cannot be fixed at once gets a strict xfail repro there, and the
generators stay clear of it (an exclusion that names the repro) until the fix.
"""

import math
import operator
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

import tilelang as tl
from tilelang import dtypes
from tilelang.passes.plan_registers import RegisterBudgetError

INT_TYPES = ("i8", "i16", "i32", "u8", "u16", "u32", "u4", "i4", "u2", "u1")
FLOAT_TYPES = ("f16", "bf16", "f32", "f8e4m3", "f8e5m2", "f4e2m1", "f6e3m2")
ALL_TYPES = INT_TYPES + FLOAT_TYPES
POW2 = (1, 2, 4, 8, 16, 32, 64)

BINARY = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "truediv": operator.truediv,
    "and": operator.and_,
    "or": operator.or_,
    "xor": operator.xor,
    "shl": operator.lshift,
    "shr": operator.rshift,
    "min": tl.minimum,
    "max": tl.maximum,
}
COMPARE = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}
REDUCE = {"sum": tl.sum, "prod": tl.prod, "max": tl.max, "min": tl.min}
SCAN = {"sum": tl.cumsum, "prod": tl.cumprod, "max": tl.cummax, "min": tl.cummin}
UNARY_FLOAT = {
    "exp": tl.exp,
    "exp2": tl.exp2,
    "log": tl.log,
    "sqrt": tl.sqrt,
    "rsqrt": tl.rsqrt,
    "sin": tl.sin,
    "cos": tl.cos,
    "tanh": tl.tanh,
    "erf": tl.erf,
    "sigmoid": tl.sigmoid,
    "log1p": tl.log1p,
    "softplus": tl.softplus,
}


# --------------------------------------------------------------------------- kernels


@tl.func
def run_step(regs, s):
    """One step of a generated program; `regs` holds every earlier result (0, 1: loads)."""
    kind = s[0]
    if kind == "neg":
        return -regs[s[1]]
    if kind == "abs":
        return abs(regs[s[1]])
    if kind == "invert":
        return ~regs[s[1]]
    if kind == "bin":  # ("bin", op, i, j)
        return BINARY[s[1]](regs[s[2]], regs[s[3]])
    if kind == "const":  # ("const", op, i, c, reflected)
        if s[4]:
            return BINARY[s[1]](s[3], regs[s[2]])
        return BINARY[s[1]](regs[s[2]], s[3])
    if kind == "div":  # integer division; x // 0 is all ones and x % 0 is x everywhere
        return regs[s[1]] // regs[s[2]]
    if kind == "rem":
        return regs[s[1]] % regs[s[2]]
    if kind == "cmp":
        return COMPARE[s[1]](regs[s[2]], regs[s[3]])
    if kind == "where":  # ("where", cmp, i, j, k, l): where(i cmp j, k, l)
        return tl.where(COMPARE[s[1]](regs[s[2]], regs[s[3]]), regs[s[4]], regs[s[5]])
    if kind == "cast":
        return regs[s[2]].to(s[1])
    if kind == "view":
        return regs[s[2]].view(s[1])
    if kind == "reduce":  # ("reduce", op, axis, keepdims, i); rank 2 stays rank 2
        r = REDUCE[s[1]](regs[s[4]], axis=s[2], keepdims=s[3])
        if s[3]:
            return r
        if s[2] == 1:
            return r[:, None]
        return r[None, :]
    if kind == "scan":  # ("scan", op, axis, reverse, i)
        return SCAN[s[1]](regs[s[4]], axis=s[2], reverse=s[3])
    if kind == "trans":
        return regs[s[1]].T
    if kind == "reshape":  # ("reshape", shape, i)
        return tl.reshape(regs[s[2]], s[1])
    if kind == "iota":  # ("iota", shape, axis): the index along `axis`, as i32
        shape, axis = s[1], s[2]
        line = [shape[0], 1] if axis == 0 else [1, shape[1]]
        return tl.broadcast(tl.reshape(tl.arange(0, shape[axis]), line), shape)
    if kind == "unary":
        return UNARY_FLOAT[s[1]](regs[s[2]])
    raise ValueError(f"unknown step {s}")


def _warps(WARPS, **_):
    return WARPS


@tl.kernel(warps=_warps)
def program_2d(
    a: tl.Tensor["TA", "M", "N"],
    b: tl.Tensor["TB", "M", "N"],
    out: tl.Tensor["TO", "M", "N"],
    TA: tl.constexpr,
    TB: tl.constexpr,
    TO: tl.constexpr,
    PROG: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    LA: tl.constexpr,
    LB: tl.constexpr,
    SO: tl.constexpr,
    FA: tl.constexpr,
    FB: tl.constexpr,
    WARPS: tl.constexpr,
):
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    regs = [
        tl.load(a, [bm * BM + LA[0], bn * BN + LA[1]], [BM, BN], fill=FA),
        tl.load(b, [bm * BM + LB[0], bn * BN + LB[1]], [BM, BN], fill=FB),
    ]
    for s in PROG:
        regs.append(run_step(regs, s))
    rows, cols = regs[-1].shape  # each block stores its own box: no two blocks overlap
    tl.store(out, [bm * rows + SO[0], bn * cols + SO[1]], regs[-1])


@tl.kernel(warps=_warps)
def program_1d(
    a: tl.Tensor["TA", "N"],
    b: tl.Tensor["TB", "N"],
    out: tl.Tensor["TO", "N"],
    TA: tl.constexpr,
    TB: tl.constexpr,
    TO: tl.constexpr,
    PROG: tl.constexpr,
    BN: tl.constexpr,
    LA: tl.constexpr,
    LB: tl.constexpr,
    SO: tl.constexpr,
    FA: tl.constexpr,
    FB: tl.constexpr,
    WARPS: tl.constexpr,
):
    bn = tl.blocks(tl.cdiv(N, BN))
    regs = [
        tl.load(a, [bn * BN + LA[0]], [BN], fill=FA),
        tl.load(b, [bn * BN + LB[0]], [BN], fill=FB),
    ]
    for s in PROG:
        regs.append(run_step(regs, s))
    (cols,) = regs[-1].shape
    tl.store(out, [bn * cols + SO[0]], regs[-1])


COMBINE = {"add": operator.add, "mul": operator.mul, "xor": operator.xor, "or": operator.or_}
COMBINE.update({"max": tl.maximum, "min": tl.minimum})


@tl.kernel(warps=_warps)
def loop_rows(
    a: tl.Tensor["TA", "M", "N"],
    out: tl.Tensor["TO", "M", "N"],
    TA: tl.constexpr,
    TO: tl.constexpr,
    PROG: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    MODE: tl.constexpr,
    OP: tl.constexpr,
    INIT: tl.constexpr,
    START: tl.constexpr,
    WARPS: tl.constexpr,
):
    """A runtime loop over the columns with a loop-carried tile: elementwise ("ew"),
    reduced per row ("reduce"), or a running scan stored as it goes ("scan")."""
    bm = tl.blocks(tl.cdiv(M, BM))
    acc = tl.full([BM, BN] if MODE == "ew" else [BM, 1], INIT, TO)
    for n in tl.range(START, N, BN):
        regs = [tl.load(a, [bm * BM, n], [BM, BN])]
        regs.append(regs[0])  # programs of one input: register 1 is register 0
        for s in PROG:
            regs.append(run_step(regs, s))
        v = regs[-1]
        if MODE == "ew":
            acc = COMBINE[OP](acc, v)
        elif MODE == "reduce" and OP == "add":  # dtype=: wrapping at TO's width as acc does
            acc = acc + tl.sum(v, axis=1, keepdims=True, dtype=TO)
        elif MODE == "reduce":
            acc = COMBINE[OP](acc, REDUCE[OP](v, axis=1, keepdims=True))
        else:
            tl.store(out, [bm * BM, n], tl.cumsum(v, axis=1, dtype=TO) + acc)
            acc = acc + tl.sum(v, axis=1, keepdims=True, dtype=TO)
    if MODE != "scan":
        tl.store(out, [bm * BM, 0], acc)


@tl.kernel(warps=_warps)
def dot_tiles(
    a: tl.Tensor["TA", "M", "K"],
    b: tl.Tensor["TA", "K", "N"],
    c: tl.Tensor["TO", "M", "N"],
    TA: tl.constexpr,
    TC: tl.constexpr,
    TO: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    WARPS: tl.constexpr,
):
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    acc = tl.zeros([BM, BN], TC)
    for k in tl.range(0, K, BK):
        acc = tl.dot(tl.load(a, [bm * BM, k], [BM, BK]), tl.load(b, [k, bn * BN], [BK, BN]), acc)
    tl.store(c, [bm * BM, bn * BN], acc.to(TO))


# --------------------------------------------------------------------------- data


def random_values(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Values of dtype `name`: small ones, edges and uniformly random codes, never NaN."""
    dt = tl.dtype(name)
    n = int(np.prod(shape))
    pick = rng.random(n)
    if dt.is_float:
        codes = rng.integers(0, 2**dt.bits, n, dtype=np.uint64).astype(dt.storage)
        anything = dt.decode(codes)
        if not dt.has_nan:
            anything = np.where(np.isfinite(anything), anything, 0.0)
        anything = np.where(np.isnan(anything), 1.0, anything)
        small = dtypes.quantize(rng.integers(-12, 13, n) / 4.0, dt)
        edges = np.array([0.0, -0.0, 1.0, -1.0, dt.max, dt.min, 0.5])
        edge = dtypes.quantize(rng.choice(edges, n), dt)
        if dt.has_inf:  # quantize saturates the small floats' infinities: decode the code
            infinity = dt.decode(np.array([dt.inf_code], dt.storage))[0]
            edge = np.where(rng.random(n) < 0.2, infinity * rng.choice([-1, 1], n), edge)
        values = np.where(pick < 0.5, small, np.where(pick < 0.85, anything, edge))
    else:
        small = np.clip(rng.integers(-6, 7, n), dt.min, dt.max)
        anything = rng.integers(dt.min, dt.max + 1, n, dtype=np.int64)
        edges = np.array([dt.min, dt.max, 0, 1, dt.min + 1, dt.max - 1], dtype=np.int64)
        values = np.where(pick < 0.5, small, np.where(pick < 0.85, anything, rng.choice(edges, n)))
    return values.reshape(shape)


def packed(values: np.ndarray, name: str) -> tl.PackedArray:
    return tl.pack(values, name)


def assert_same(compiled: tl.PackedArray, interpreted: tl.PackedArray, what: str = "") -> None:
    """Equal codes; any NaN equals any NaN (the interpreter keeps values, not NaN bits)."""
    dt = compiled.dtype
    got, want = compiled.codes(), interpreted.codes()
    same = got == want
    if dt.is_float and dt.has_nan:
        same |= np.isnan(dt.decode(got)) & np.isnan(dt.decode(want))
    if not same.all():
        at = tuple(int(i) for i in np.argwhere(~same)[0])
        raise AssertionError(
            f"{what}: {int((~same).sum())} of {same.size} {dt} elements differ, first at {at}: "
            f"compiled {dt.decode(got[at])} (code {int(got[at]):#x}), "
            f"interpreted {dt.decode(want[at])} (code {int(want[at]):#x})"
        )


def run_both(kernel, inputs, output, **constexprs):
    """(compiled, interpreted) on separate copies of the output. A kernel over the
    register budget (a legitimate compile-time refusal) is rejected."""
    interpreted = kernel.interpret(*inputs, packed_copy(output), **constexprs)
    try:
        compiled = kernel(*inputs, packed_copy(output), **constexprs)
    except RegisterBudgetError:
        reject()
    return compiled, interpreted


def packed_copy(array: tl.PackedArray) -> tl.PackedArray:
    return tl.PackedArray(array.data.copy(), array.dtype, array.shape)


# --------------------------------------------------------------------------- programs


@dataclass(frozen=True)
class Reg:
    dtype: str
    shape: tuple[int, ...]
    clean: bool  # cannot hold a NaN (its bits may then be viewed)


def _broadcast(s1: tuple[int, ...], s2: tuple[int, ...]) -> tuple[int, ...] | None:
    if len(s1) != len(s2):
        return None
    if any(x != y and 1 not in (x, y) for x, y in zip(s1, s2, strict=True)):
        return None
    return tuple(max(x, y) for x, y in zip(s1, s2, strict=True))


def _accumulated(name: str, op: str) -> str:
    """docs/ops.md: integer sums and products of fewer than 32 bits are 32-bit, unsigned
    ones u32; booleans (u1) count in i32."""
    dtype = tl.dtype(name)
    if op not in ("sum", "prod") or dtype.is_float or dtype.bits >= 32:
        return name
    return "u32" if not dtype.signed and dtype.bits > 1 else "i32"


def _nan_free(name: str, clean: bool) -> bool:
    """Whether a value of dtype `name` surely holds no NaN (`clean`: its inputs hold none;
    float arithmetic can make one: inf - inf, 0 / 0)."""
    dt = tl.dtype(name)
    return clean or not (dt.is_float and dt.has_nan)


def _constant(draw, name: str):
    dt = tl.dtype(name)
    if dt.is_float:
        # Exact in every float type, then ones the operand's dtype rounds first.
        exact = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, -1.0, -4.0]
        return draw(st.sampled_from([*exact, 0.1, -2.7, 0.3, 1e30, -1e-30, 65520.0, 3.0e38]))
    values = [0, 1, 2, 3, 7, 31, 32, 33, dt.max, dt.min, -1, -8]
    return draw(st.sampled_from([v for v in values if dt.min <= v <= dt.max]))


STEP_KINDS = (
    "bin",
    "const",
    "cast",
    "neg",
    "abs",
    "invert",
    "div",
    "rem",
    "cmp",
    "where",
    "view",
    "reduce",
    "scan",
    "trans",
    "reshape",
    "iota",
)


def _step(draw, regs: list[Reg], rank: int, kinds: tuple[str, ...]) -> tuple[tuple, Reg] | None:
    """One well-typed step on the registers, or None when the drawn choice does not fit."""
    kind = draw(st.sampled_from(kinds))
    i = draw(st.integers(0, len(regs) - 1))
    x = regs[i]
    dt = tl.dtype(x.dtype)
    same_type = [
        j for j, r in enumerate(regs) if r.dtype == x.dtype and _broadcast(x.shape, r.shape)
    ]
    if kind in ("neg", "abs") or (kind == "invert" and not dt.is_float):
        return (kind, i), Reg(x.dtype, x.shape, x.clean)
    if kind in ("bin", "const"):
        ops = ["add", "sub", "mul", "min", "max"]
        ops += ["truediv"] if dt.is_float else ["and", "or", "xor", "shl", "shr"]
        op = draw(st.sampled_from(ops))
        if kind == "const":
            reflected = draw(st.booleans())
            step = ("const", op, i, _constant(draw, x.dtype), reflected)
            return step, Reg(x.dtype, x.shape, _nan_free(x.dtype, False))
        j = draw(st.sampled_from(same_type))
        shape = _broadcast(x.shape, regs[j].shape)
        return ("bin", op, i, j), Reg(x.dtype, shape, _nan_free(x.dtype, False))
    if kind in ("div", "rem") and not dt.is_float:
        j = draw(st.sampled_from(same_type))
        return (kind, i, j), Reg(x.dtype, _broadcast(x.shape, regs[j].shape), True)
    if kind == "cmp":
        j = draw(st.sampled_from(same_type))
        op = draw(st.sampled_from(sorted(COMPARE)))
        return ("cmp", op, i, j), Reg("u1", _broadcast(x.shape, regs[j].shape), True)
    if kind == "where":
        j = draw(st.sampled_from(same_type))
        k = draw(st.integers(0, len(regs) - 1))
        same_k = [n for n, r in enumerate(regs) if r.dtype == regs[k].dtype]
        m = draw(st.sampled_from(same_k))
        shape = _broadcast(x.shape, regs[j].shape)
        for other in (regs[k].shape, regs[m].shape):
            shape = shape and _broadcast(shape, other)
        if shape is None:
            return None
        op = draw(st.sampled_from(sorted(COMPARE)))
        clean = regs[k].clean and regs[m].clean
        return ("where", op, i, j, k, m), Reg(regs[k].dtype, shape, clean)
    if kind == "cast":
        target = draw(st.sampled_from(ALL_TYPES))
        return ("cast", target, i), Reg(target, x.shape, _nan_free(target, x.clean))
    if kind == "view":
        if dt.is_float and not x.clean:
            return None  # a NaN's bits are not part of the semantics
        target = draw(st.sampled_from(ALL_TYPES))
        bits = x.shape[-1] * dt.bits
        if bits % tl.dtype(target).bits:
            return None
        shape = (*x.shape[:-1], bits // tl.dtype(target).bits)
        return ("view", target, i), Reg(target, shape, _nan_free(target, False))
    if kind in ("reduce", "scan"):
        # Float sums and products depend on the order: test_float_accumulation_*.
        op = draw(st.sampled_from(["max", "min"] if dt.is_float else ["sum", "prod", "max", "min"]))
        axis = draw(st.sampled_from([None, *range(rank)] if kind == "reduce" else range(rank)))
        flag = draw(st.booleans())
        out = _accumulated(x.dtype, op)
        if kind == "scan":
            return ("scan", op, axis, flag, i), Reg(out, x.shape, x.clean)
        if axis is None:  # every axis, keepdims: a [1] or [1, 1] tile
            return ("reduce", op, None, True, i), Reg(out, (1,) * rank, x.clean)
        if rank == 1 or flag:  # keepdims (a 1-D reduction without it would be rank 0)
            shape = (*x.shape[:axis], 1, *x.shape[axis + 1 :])
            return ("reduce", op, axis, True, i), Reg(out, shape, x.clean)
        shape = (*x.shape[:axis], 1, *x.shape[axis + 1 :])
        return ("reduce", op, axis, False, i), Reg(out, shape, x.clean)
    if kind == "trans" and rank == 2:
        return ("trans", i), Reg(x.dtype, x.shape[::-1], x.clean)
    if kind == "reshape" and rank == 2:
        size = x.shape[0] * x.shape[1]
        cols = draw(st.sampled_from([c for c in POW2 if size % c == 0]))
        shape = (size // cols, cols)
        return ("reshape", shape, i), Reg(x.dtype, shape, x.clean)
    if kind == "iota" and rank == 2:
        return ("iota", x.shape, draw(st.integers(0, 1))), Reg("i32", x.shape, True)
    return None


@st.composite
def programs(draw, rank: int, kinds=STEP_KINDS, max_steps: int = 5, one_input: bool = False):
    """(input dtypes, tile shape, program, the result's Reg)."""
    ta = draw(st.sampled_from(ALL_TYPES))
    tb = ta if one_input else draw(st.sampled_from((ta, *ALL_TYPES)))
    if rank == 2:
        bm, bn = draw(st.sampled_from(POW2)), draw(st.sampled_from(POW2))
        shape = (min(bm, 1024 // bn), bn)
    else:
        shape = (draw(st.sampled_from((*POW2, 128, 256))),)
    regs = [Reg(ta, shape, True), Reg(tb, shape, True)]
    steps = []
    for _ in range(draw(st.integers(1, max_steps))):
        made = _step(draw, regs, rank, kinds)
        if made is not None:
            steps.append(made[0])
            regs.append(made[1])
    return ta, tb, shape, tuple(steps), regs[-1]


def _fill(draw, name: str):
    dt = tl.dtype(name)
    if dt.is_float:
        choices = [None, 0.0, -1.5, 1.0, 0.3]
        if dt.has_inf:
            choices.append(float("-inf"))
        return draw(st.sampled_from(choices))
    return draw(st.sampled_from([None, 0, 1, dt.max, dt.min]))


SHIFTS = st.sampled_from((0, 0, 0, 1, -1, 3, -3, 5))
SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}


@settings(max_examples=90, **SETTINGS)
@given(data=st.data(), program=programs(rank=2))
def test_programs_2d(data, program):
    ta, tb, (bm, bn), steps, result = program
    m = data.draw(st.integers(1, min(70, 3 * bm + 5)), label="M")  # a few blocks each way
    n = data.draw(st.integers(1, min(70, 3 * bn + 5)), label="N")
    consts = {
        "TA": ta,
        "TB": tb,
        "TO": result.dtype,
        "PROG": steps,
        "BM": bm,
        "BN": bn,
        "LA": (data.draw(SHIFTS), data.draw(SHIFTS)),
        "LB": (data.draw(SHIFTS), data.draw(SHIFTS)),
        "SO": (data.draw(SHIFTS), data.draw(SHIFTS)),
        "FA": _fill(data.draw, ta),
        "FB": _fill(data.draw, tb),
        "WARPS": data.draw(st.sampled_from((1, 2, 4)), label="warps"),
    }
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    a = packed(random_values(rng, ta, (m, n)), ta)
    b = packed(random_values(rng, tb, (m, n)), tb)
    out = packed(random_values(rng, result.dtype, (m, n)), result.dtype)
    compiled, interpreted = run_both(program_2d, [a, b], out, **consts)
    assert_same(compiled, interpreted, f"program_2d {consts}")


@settings(max_examples=80, **SETTINGS)
@given(data=st.data(), program=programs(rank=1))
def test_programs_1d(data, program):
    ta, tb, (bn,), steps, result = program
    n = data.draw(st.integers(1, min(300, 4 * bn + 5)), label="N")
    consts = {
        "TA": ta,
        "TB": tb,
        "TO": result.dtype,
        "PROG": steps,
        "BN": bn,
        "LA": (data.draw(SHIFTS),),
        "LB": (data.draw(SHIFTS),),
        "SO": (data.draw(SHIFTS),),
        "FA": _fill(data.draw, ta),
        "FB": _fill(data.draw, tb),
        "WARPS": data.draw(st.sampled_from((1, 2, 4)), label="warps"),
    }
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    a = packed(random_values(rng, ta, (n,)), ta)
    b = packed(random_values(rng, tb, (n,)), tb)
    out = packed(random_values(rng, result.dtype, (n,)), result.dtype)
    compiled, interpreted = run_both(program_1d, [a, b], out, **consts)
    assert_same(compiled, interpreted, f"program_1d {consts}")


ELEMENTWISE_KINDS = ("bin", "const", "cast", "neg", "abs", "invert", "div", "rem", "where")


@settings(max_examples=40, **SETTINGS)
@given(
    data=st.data(),
    program=programs(rank=2, kinds=ELEMENTWISE_KINDS, max_steps=3, one_input=True),
)
def test_runtime_loops_carry_tiles(data, program):
    ta, _, (bm, bn), steps, result = program
    if result.shape != (bm, bn) or result.dtype == "u1":
        reject()
    if tl.dtype(result.dtype).is_float:
        mode, op = "ew", data.draw(st.sampled_from(("add", "mul")))  # exact per step
    else:
        mode = data.draw(st.sampled_from(("ew", "reduce", "scan")))
        ops = ("add", "max", "min") if mode == "reduce" else ("add", "mul", "xor", "or", "max")
        op = data.draw(st.sampled_from(ops))
    consts = {
        "TA": ta,
        "TO": result.dtype,
        "PROG": steps,
        "BM": bm,
        "BN": bn,
        "MODE": mode,
        "OP": op,
        "INIT": data.draw(st.sampled_from((0, 1))),
        "START": data.draw(st.sampled_from((0, 0, 1, 3))),
        "WARPS": data.draw(st.sampled_from((1, 2, 4))),
    }
    if tl.dtype(result.dtype).is_float:
        consts["INIT"] = float(consts["INIT"])
    m = data.draw(st.integers(1, min(40, 2 * bm + 3)), label="M")
    n = data.draw(st.integers(1, min(150, 5 * bn + 5)), label="N")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    a = packed(random_values(rng, ta, (m, n)), ta)
    out = packed(random_values(rng, result.dtype, (m, n)), result.dtype)
    compiled, interpreted = run_both(loop_rows, [a], out, **consts)
    assert_same(compiled, interpreted, f"loop_rows {consts}")


@settings(max_examples=30, **SETTINGS)
@given(
    types=st.sampled_from(
        [
            ("i8", "i32"),
            ("u8", "i32"),
            ("f16", "f32"),
            ("f16", "f16"),
            ("bf16", "f32"),
            ("f32", "f32"),
        ]
    ),
    tiles=st.tuples(*[st.sampled_from(POW2)] * 3),
    sizes=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(-5, 5)),
    narrow=st.booleans(),
    warps=st.sampled_from((1, 2, 4)),
    seed=st.integers(0, 2**32 - 1),
)
def test_dot(types, tiles, sizes, narrow, warps, seed):
    """Integer dots wrap exactly; float dots of small integers are exact in any order."""
    ta, tc = types
    to = ({"i32": "i16", "f32": "f16"}.get(tc, tc)) if narrow else tc
    bm, bn, bk = tiles
    bn = min(bn, 2048 // bm)
    bk = min(bk, 2048 // bm, 2048 // bn)
    # A few blocks and K steps, each size ragged by up to 5.
    m, n, k = (
        max(1, count * tile + sizes[3]) for count, tile in zip(sizes[:3], (bm, bn, bk), strict=True)
    )
    rng = np.random.default_rng(seed)
    if ta in ("i8", "u8"):
        x, y = random_values(rng, ta, (m, k)), random_values(rng, ta, (k, n))
    else:
        x, y = rng.integers(-3, 4, (m, k)), rng.integers(-3, 4, (k, n))
    consts = {"TA": ta, "TC": tc, "TO": to, "BM": bm, "BN": bn, "BK": bk, "WARPS": warps}
    out = packed(np.zeros((m, n)), to)
    compiled, interpreted = run_both(dot_tiles, [packed(x, ta), packed(y, ta)], out, **consts)
    assert_same(compiled, interpreted, f"dot_tiles {consts}")


# --------------------------------------------------------------------------- floats


@tl.kernel(warps=_warps)
def float_min_max(
    a: tl.Tensor["T", "M", "N"],
    b: tl.Tensor["T", "M", "N"],
    out: tl.Tensor["T", "M", "N"],
    T: tl.constexpr,
    PROG: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    WARPS: tl.constexpr,
):
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    regs = [
        tl.load(a, [bm * BM, bn * BN], [BM, BN], fill=1.0),
        tl.load(b, [bm * BM, bn * BN], [BM, BN], fill=2.0),
    ]
    for s in PROG:
        regs.append(run_step(regs, s))
    rows, cols = regs[-1].shape
    tl.store(out, [bm * rows, bn * cols], regs[-1])


@st.composite
def min_max_programs(draw):
    """Float min/max elementwise, reductions and scans (signed zeros and NaN are in the
    data); every register is [BM, BN] or [BM, 1], so any two broadcast."""
    steps = []
    for _ in range(draw(st.integers(1, 4))):
        regs = st.integers(0, len(steps) + 1)
        op = draw(st.sampled_from(("max", "min")))
        kind = draw(st.sampled_from(("bin", "reduce", "scan", "where")))
        if kind == "bin":
            steps.append(("bin", op, draw(regs), draw(regs)))
        elif kind == "where":
            cmp = draw(st.sampled_from(sorted(COMPARE)))
            steps.append(("where", cmp, draw(regs), draw(regs), draw(regs), draw(regs)))
        elif kind == "reduce":
            steps.append(("reduce", op, 1, True, draw(regs)))
        else:
            steps.append(("scan", op, draw(st.integers(0, 1)), draw(st.booleans()), draw(regs)))
    return tuple(steps)


@settings(max_examples=30, **SETTINGS)
@given(
    dtype=st.sampled_from(FLOAT_TYPES),
    program=min_max_programs(),
    tiles=st.tuples(st.sampled_from(POW2), st.sampled_from(POW2)),
    sizes=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(-5, 5)),
    warps=st.sampled_from((1, 2, 4)),
    seed=st.integers(0, 2**32 - 1),
)
def test_float_min_max(dtype, program, tiles, sizes, warps, seed):
    bm, bn = tiles
    bm = min(bm, 1024 // bn)
    sizes = (max(1, sizes[0] * bm + sizes[2]), max(1, sizes[1] * bn - sizes[2]))
    rng = np.random.default_rng(seed)
    # Many signed zeros (-0 < +0) and, where the type has one, NaNs (ignored unless alone).
    zeros = [0.0, -0.0, np.nan] if tl.dtype(dtype).has_nan else [0.0, -0.0]
    a, b = (random_values(rng, dtype, sizes) for _ in "ab")
    a, b = (np.where(rng.random(sizes) < 0.3, rng.choice(zeros, sizes), v) for v in (a, b))
    consts = {"T": dtype, "PROG": program, "BM": bm, "BN": bn, "WARPS": warps}
    out = packed(np.zeros(sizes), dtype)
    inputs = [packed(a, dtype), packed(b, dtype)]
    compiled, interpreted = run_both(float_min_max, inputs, out, **consts)
    assert_same(compiled, interpreted, f"float_min_max {consts}")


@tl.kernel(warps=_warps)
def float_accumulate(
    a: tl.Tensor["T", "M", "N"],
    out: tl.Tensor["T", "M", "N"],
    T: tl.constexpr,
    FN: tl.constexpr,
    KIND: tl.constexpr,
    AXIS: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    WARPS: tl.constexpr,
):
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    x = tl.load(a, [bm * BM, bn * BN], [BM, BN], fill=1.0)
    if FN is not None:
        x = UNARY_FLOAT[FN](x)
    if KIND == "sum":
        x = tl.sum(x, axis=AXIS, keepdims=True)
    if KIND == "cumsum":
        x = tl.cumsum(x, axis=AXIS)
    rows, cols = x.shape
    tl.store(out, [bm * rows, bn * cols], x)


@settings(max_examples=40, **SETTINGS)
@given(
    dtype=st.sampled_from(("f16", "bf16", "f32")),
    fn=st.sampled_from((None, *UNARY_FLOAT)),
    kind=st.sampled_from((None, "sum", "cumsum")),
    axis=st.integers(0, 1),
    tiles=st.tuples(st.sampled_from(POW2), st.sampled_from(POW2)),
    sizes=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(-5, 5)),
    warps=st.sampled_from((1, 2, 4)),
    seed=st.integers(0, 2**32 - 1),
)
def test_float_accumulation_and_transcendentals(dtype, fn, kind, axis, tiles, sizes, warps, seed):
    """Float sums and scans in another order, and transcendental approximations: within
    a few roundings of the exact (interpreted) result."""
    bm, bn = tiles
    bm = min(bm, 1024 // bn)
    sizes = (max(1, sizes[0] * bm + sizes[2]), max(1, sizes[1] * bn - sizes[2]))
    rng = np.random.default_rng(seed)
    x = dtypes.quantize(rng.uniform(0.25, 3.0, sizes) * rng.choice([-1, 1], sizes), dtype)
    if fn in ("log", "sqrt", "rsqrt", "log1p"):
        x = np.abs(x)
    consts = {"T": dtype, "FN": fn, "KIND": kind, "AXIS": axis, "BM": bm, "BN": bn}
    consts["WARPS"] = warps
    out = packed(np.zeros(sizes), dtype)
    compiled, interpreted = run_both(float_accumulate, [packed(x, dtype)], out, **consts)
    got, want = compiled.unpack().astype(np.float64), interpreted.unpack().astype(np.float64)
    eps = {"f16": 2.0**-11, "bf16": 2.0**-8, "f32": 2.0**-24}[dtype]
    terms = 1 if kind is None else (bm, bn)[axis]
    # Every partial sum and every transcendental may be off by a rounding or two: the
    # bound is relative to the sum of the magnitudes of the terms.
    magnitude = _tile_magnitudes(x, fn, kind, axis, bm, bn)
    bound = (terms + 2) * eps * (magnitude + 1.0)
    assert np.all(np.abs(got - want) <= bound), (consts, np.abs(got - want).max())


NUMPY_UNARY = {
    "exp": np.exp,
    "exp2": np.exp2,
    "log": np.log,
    "sqrt": np.sqrt,
    "rsqrt": lambda v: 1.0 / np.sqrt(v),
    "sin": np.sin,
    "cos": np.cos,
    "tanh": np.tanh,
    "erf": np.vectorize(math.erf),
    "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
    "log1p": lambda v: np.log(1.0 + v),
    "softplus": lambda v: np.log(1.0 + np.exp(v)),
}


def _tile_magnitudes(x, fn, kind, axis, bm, bn) -> np.ndarray:
    """Where float_accumulate stores, the sum of |term| that went into the element."""
    m, n = x.shape
    gm, gn = -(-m // bm), -(-n // bn)
    padded = np.ones((gm * bm, gn * bn))
    padded[:m, :n] = x
    terms = np.abs(NUMPY_UNARY[fn](padded) if fn else padded).reshape(gm, bm, gn, bn)
    if kind == "sum":
        terms = terms.sum(axis=1 + 2 * axis, keepdims=True)
    elif kind == "cumsum":
        terms = np.cumsum(terms, axis=1 + 2 * axis)
    stored = terms.reshape(gm * terms.shape[1], gn * terms.shape[3])
    out = np.zeros((m, n))
    rows, cols = min(m, stored.shape[0]), min(n, stored.shape[1])
    out[:rows, :cols] = stored[:rows, :cols]
    return out


# --------------------------------------------------------------------------- regressions
# Minimal repros of the bugs this file found (fixed in 274bf3a and 89d91bc): each pins
# both paths to the value the semantics gives; the comment says what went wrong.


def _both(kernel, inputs, outputs, **constexprs):
    """Every output, compiled and interpreted, as pairs of code arrays (asserted equal)."""
    compiled = kernel(*inputs, *(packed_copy(o) for o in outputs), **constexprs)
    interpreted = kernel.interpret(*inputs, *(packed_copy(o) for o in outputs), **constexprs)
    as_tuple = lambda result: result if isinstance(result, tuple) else (result,)  # noqa: E731
    for got, want in zip(as_tuple(compiled), as_tuple(interpreted), strict=True):
        assert_same(got, want, kernel.__name__)
    return [want for want in as_tuple(interpreted)]


@tl.kernel(warps=1)
def max_keepdims_1d(x: tl.Tensor[tl.i32, "N"], y: tl.Tensor[tl.i32, "N"]):
    tl.store(y, [0], tl.max(tl.load(x, [0], [4]), axis=0, keepdims=True))


@tl.kernel(warps=1)
def sum_everything(x: tl.Tensor[tl.i32, "M", "N"], y: tl.Tensor[tl.i32, "M", "N"]):
    tl.store(y, [0, 0], tl.sum(tl.load(x, [0, 0], [4, 4]), keepdims=True))


def test_regression_rank0_reduction_reshapes():
    # Lowering failed: "ValueError: multiple indices are not supported for 0d arrays".
    (y,) = _both(max_keepdims_1d, [packed(np.arange(4), "i32")], [packed(np.zeros(4), "i32")])
    assert list(y.unpack()) == [3, 0, 0, 0]
    x = packed(np.arange(16).reshape(4, 4), "i32")
    (y,) = _both(sum_everything, [x], [packed(np.zeros((4, 4)), "i32")])
    assert y.unpack()[0, 0] == 120


@tl.kernel(warps=1)
def cast_tile(x: tl.Tensor["S", "N"], y: tl.Tensor["D", "N"], S: tl.constexpr, D: tl.constexpr):
    tl.store(y, [0], tl.load(x, [0], [4]).to(D))


@pytest.mark.parametrize(
    ("source", "values", "expected"),
    [("i8", [-1, -128, 2, 0], [0, 0, 1, 0]), ("f32", [-1.0, 0.25, 0.5, 1.5], [0, 0, 0, 1])],
)
def test_regression_cast_to_u1_rounds_and_saturates(source, values, expected):
    # Compiled gave `x != 0`: [1, 1, 1, 0] and [1, 1, 1, 1].
    x = packed(np.array(values), source)
    (y,) = _both(cast_tile, [x], [packed(np.zeros(4), "u1")], S=source, D="u1")
    assert list(y.unpack()) == expected


@tl.kernel(warps=1)
def scan_rows(
    x: tl.Tensor["T", "M", "N"], y: tl.Tensor["T", "M", "N"], T: tl.constexpr, OP: tl.constexpr
):
    t = tl.load(x, [0, 0], [2, 2])
    tl.store(y, [0, 0], tl.cummin(t, axis=1) if OP == "min" else tl.cummax(t, axis=1))


@pytest.mark.parametrize("dtype", ["f32", "f8e4m3"])
def test_regression_scan_min_of_nan_prefix_is_nan(dtype):
    # Compiled gave the scan's identity for an all-NaN prefix: f32 +inf, f8e4m3 448.
    x = packed(np.array([[np.nan, 1.0], [np.nan, np.nan]]), dtype)
    (y,) = _both(scan_rows, [x], [packed(np.zeros((2, 2)), dtype)], T=dtype, OP="min")
    assert np.array_equal(y.unpack(), [[np.nan, 1.0], [np.nan, np.nan]], equal_nan=True)


@tl.kernel(warps=1)
def row_max(x: tl.Tensor["T", "M", "N"], y: tl.Tensor["T", "M", "K"], T: tl.constexpr):
    tl.store(y, [0, 0], tl.max(tl.load(x, [0, 0], [2, 2]), axis=1, keepdims=True))


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_regression_half_max_reduction_ignores_nan(dtype):
    # Rows [1, nan] and [nan, nan]: compiled gave f16 [nan, nan] (a NaN in second
    # position won) and bf16 [1, -inf].
    x = packed(np.array([[1.0, np.nan], [np.nan, np.nan]]), dtype)
    (y,) = _both(row_max, [x], [packed(np.zeros((2, 1)), dtype)], T=dtype)
    assert np.array_equal(y.unpack().ravel(), [1.0, np.nan], equal_nan=True)


@tl.kernel(warps=1)
def min_max_of(
    x: tl.Tensor["T", "N"],
    y: tl.Tensor["T", "N"],
    lo: tl.Tensor["T", "N"],
    hi: tl.Tensor["T", "N"],
    T: tl.constexpr,
):
    a, b = tl.load(x, [0], [2]), tl.load(y, [0], [2])
    tl.store(lo, [0], tl.minimum(a, b))
    tl.store(hi, [0], tl.maximum(a, b))


def test_regression_min_max_order_signed_zeros():
    # -0 < +0 (PTX min/max). The interpreter returned numpy's first operand on a tie,
    # the compiled path ordered the zeros: min(+0, -0) was +0 there, -0 here.
    x, y = packed(np.array([-0.0, 0.0]), "f32"), packed(np.array([0.0, -0.0]), "f32")
    out = [packed(np.ones(2), "f32"), packed(np.ones(2), "f32")]
    lo, hi = _both(min_max_of, [x, y], out, T="f32")
    assert list(lo.codes()) == [0x80000000, 0x80000000] and list(hi.codes()) == [0, 0]


@tl.kernel(warps=1)
def divide(x: tl.Tensor[tl.f32, "N"], y: tl.Tensor[tl.f32, "N"], o: tl.Tensor[tl.u32, "N"]):
    tl.store(o, [0], (tl.load(x, [0], [2]) / tl.load(y, [0], [2])).view(tl.u32))


def test_regression_f32_nan_is_canonical():
    # 0/0 and inf/inf: compiled gave x86's default NaN 0xffc00000, not the GPU's 0x7fffffff.
    x, y = packed(np.array([0.0, np.inf]), "f32"), packed(np.array([0.0, np.inf]), "f32")
    (bits,) = _both(divide, [x, y], [packed(np.zeros(2), "u32")])
    assert list(bits.codes()) == [0x7FFFFFFF, 0x7FFFFFFF]


@tl.kernel(warps=1)
def cast_then_view(x: tl.Tensor[tl.u8, "N"], y: tl.Tensor[tl.u2, "N2"]):
    tl.store(y, [0], tl.load(x, [0], [32]).to(tl.u4).view(tl.u2))


def test_regression_view_of_less_than_a_byte_per_thread():
    # 32 u4 codes over 32 threads raised LoweringError "view needs equal whole bytes per
    # thread, not spatial(32) -> spatial(32).local(2)".
    x = packed(np.arange(32) % 16, "u8")
    (y,) = _both(cast_then_view, [x], [packed(np.zeros(64), "u2")])
    codes = np.arange(32) % 16
    assert np.array_equal(y.codes(), np.stack([codes & 3, codes >> 2], axis=1).ravel())


@tl.kernel(warps=1)
def copy(x: tl.Tensor["T", "N"], y: tl.Tensor["T", "N"], T: tl.constexpr):
    tl.store(y, [0], tl.load(x, [0], [4]))


def test_regression_f8e5m2_infinity_survives_a_store():
    # The interpreter's store encoded values with the saturating cast: +-inf became +-max.
    x = tl.pack_codes(np.array([0x7C, 0xFC, 0x7B, 0x00], np.uint8), tl.f8e5m2)
    (y,) = _both(copy, [x], [packed(np.zeros(4), "f8e5m2")], T="f8e5m2")
    assert list(y.codes()) == [0x7C, 0xFC, 0x7B, 0x00]


@tl.kernel(warps=1)
def scale(
    x: tl.Tensor["T", "N"], y: tl.Tensor["T", "N"], s: tl.f32, T: tl.constexpr, C: tl.constexpr
):
    t = tl.load(x, [0], [4])
    tl.store(y, [0], t * 0.3 if C else t * s)


@pytest.mark.parametrize("constant", [True, False], ids=["python-constant", "runtime-scalar"])
def test_regression_scalar_operand_takes_small_float_dtype(constant):
    # [1, 0.5, 3, -2] (f4e2m1) * 0.3: the scalar becomes f4e2m1 first (0.5); the compiled
    # path multiplied by 0.3 itself: [0.5, 0, 1, -0.5].
    x = packed(np.array([1.0, 0.5, 3.0, -2.0]), "f4e2m1")
    out = [packed(np.zeros(4), "f4e2m1")]
    (y,) = _both(scale, [x], out, s=0.3, T="f4e2m1", C=constant)
    assert list(y.unpack()) == [0.5, 0.0, 1.5, -1.0]


@tl.kernel(warps=1)
def store_then_load(
    x: tl.Tensor[tl.i32, "N"], y: tl.Tensor[tl.i32, "N"], z: tl.Tensor[tl.i32, "N"]
):
    tl.store(y, [0], tl.load(x, [0], [64]))
    tl.store(z, [0], tl.load(y, [1], [64]))


@tl.kernel(warps=1)
def store_twice(x: tl.Tensor[tl.i32, "N"], y: tl.Tensor[tl.i32, "N"]):
    t = tl.load(x, [0], [64])
    tl.store(y, [0], t)
    tl.store(y, [1], t + 1000)


def test_regression_block_orders_its_global_accesses():
    # Program order: the second access sees the first. Threads ran one after another with
    # no barrier in between (on a GPU: a race without bar.sync): store_then_load gave
    # z = [101, 0, 103, 0, ...], store_twice y = [100, 1100, 102, 1102, ...].
    x = packed(np.arange(64) + 100, "i32")
    _, z = _both(store_then_load, [x], [packed(np.zeros(64), "i32")] * 2)
    assert np.array_equal(z.unpack(), np.append(np.arange(101, 164), 0))
    (y,) = _both(store_twice, [x], [packed(np.zeros(64), "i32")])
    assert np.array_equal(y.unpack(), np.append(100, np.arange(1100, 1163)))


@tl.kernel(warps=1)
def min_max_with_nan(
    x: tl.Tensor[tl.f32, "N"],
    y: tl.Tensor[tl.f32, "N"],
    lo: tl.Tensor[tl.f32, "N"],
    hi: tl.Tensor[tl.f32, "N"],
):
    a, b = tl.load(x, [0], [2]), tl.load(y, [0], [2])
    nan = a - a  # inf - inf: a NaN from arithmetic (its sign bit set on x86)
    tl.store(lo, [0], tl.minimum(nan, b))
    tl.store(hi, [0], tl.maximum(nan, -b))


def test_regression_min_max_of_nan_and_zero():
    # NaN is ignored: minimum(nan, +0) = +0 and maximum(nan, -0) = -0. The interpreter's
    # signed-zero fix-up (274bf3a) read the NaN's sign bit: x86 makes inf - inf a
    # negative NaN, so minimum gave -0 (and a positive NaN made maximum +0).
    x = packed(np.array([np.inf, np.inf]), "f32")
    y = packed(np.array([0.0, 0.0]), "f32")
    out = [packed(np.ones(2), "f32"), packed(np.ones(2), "f32")]
    lo, hi = _both(min_max_with_nan, [x, y], out)
    assert list(lo.codes()) == [0, 0] and list(hi.codes()) == [0x80000000] * 2


@tl.kernel(warps=lambda W, **_: W)
def move_f8e5m2(
    x: tl.Tensor[tl.f8e5m2, "M", "N"],
    y: tl.Tensor[tl.f8e5m2, "P", "Q"],
    z: tl.Tensor[tl.u8, "M", "N"],
    OP: tl.constexpr,
    W: tl.constexpr,
):
    t = tl.load(x, [0, 0], [8, 8])
    if OP == "where":
        tl.store(y, [0, 0], tl.where(t == t, t, t))
    if OP == "broadcast":
        tl.store(y, [0, 0], tl.broadcast(tl.reshape(t, [1, 64]), [2, 64]))
    if OP == "view":
        tl.store(z, [0, 0], t.view(tl.u8))


@pytest.mark.parametrize(
    ("op", "warps"),
    [("where", 4), ("broadcast", 1), ("view", 4)],
    ids=["where-compiled", "broadcast-compiled-1-warp", "view-interpreter"],
)
def test_regression_f8e5m2_infinity_moves_bit_exactly(op, warps):
    # An 8x8 tile of 1.0 (0x3c) with +inf (0x7c) and -inf (0xfc): where and broadcast
    # select and copy, view reinterprets, so both infinities come out as they went in.
    # Compiled where (any warps) and broadcast (1 warp) gave 0x7b/0xfb (+-57344: a decode
    # and a saturating re-encode); the interpreter's view encoded with the saturating
    # cast too (as its store did, test_regression_f8e5m2_infinity_survives_a_store).
    codes = np.full((8, 8), 0x3C, np.uint8)
    codes[0, 0], codes[3, 5] = 0x7C, 0xFC
    x = tl.pack_codes(codes, tl.f8e5m2)
    shape = (2, 64) if op == "broadcast" else (8, 8)
    outputs = [packed(np.zeros(shape), "f8e5m2"), packed(np.zeros((8, 8)), "u8")]
    (result,) = _both(move_f8e5m2, [x], outputs, OP=op, W=warps)
    expected = np.tile(codes.reshape(1, 64), (2, 1)) if op == "broadcast" else codes
    assert np.array_equal(result.codes(), expected)


@tl.kernel(warps=1)
def shift_in_place(y: tl.Tensor[tl.i32, "N"]):
    tl.store(y, [1], tl.load(y, [0], [64]) * 2)


@tl.kernel(warps=1)
def transpose_in_place(y: tl.Tensor[tl.i32, "N", "N"]):
    tl.store(y, [0, 0], tl.load(y, [0, 0], [4, 4]).T)


@pytest.mark.parametrize("kernel", [shift_in_place, transpose_in_place], ids=lambda k: k.__name__)
def test_regression_load_then_store_in_place(kernel):
    # Write after read: the store must not reach an element before every thread has
    # loaded it (store->load and store->store got barriers in 274bf3a, load->store not
    # then). shift_in_place of [0, 1, ..., 64] gives [0, 0, 2, 4, 6, 8, ...]; compiled
    # gave [0, 0, 2, 4, 6, 12, 10, 20, ...]. transpose_in_place of arange(16) gave
    # [0, 1, 2, 3, 1, 5, 6, 7, ...] instead of its transpose [0, 4, 8, 12, 1, 5, ...].
    if kernel is shift_in_place:
        y = packed(np.arange(65), "i32")
        expected = np.append(0, np.arange(64) * 2)
    else:
        y = packed(np.arange(16).reshape(4, 4), "i32")
        expected = np.arange(16).reshape(4, 4).T
    compiled, interpreted = kernel(packed_copy(y)), kernel.interpret(packed_copy(y))
    assert np.array_equal(interpreted.unpack(), expected)
    assert_same(compiled, interpreted, kernel.__name__)
