"""The LLVM CPU backend (tilelang.codegen.llvm + tilelang.runtime.cpu) on hand-built
thread IR, against numpy / tilelang.dtypes / Python models of the PTX semantics."""

from __future__ import annotations

import math
import os
import time
from fractions import Fraction

import mpmath
import numpy as np
import pytest

from tilelang import dtypes as d
from tilelang.codegen.llvm import emit_llvm
from tilelang.ir import thread as t
from tilelang.ir import thread_mma as tm
from tilelang.ir.atoms import LDMATRIX_ATOMS, MMA_ATOMS, ldmatrix_layout
from tilelang.runtime.cpu import compile_cpu, eval_host_expr

RNG = np.random.default_rng(1234)
I32, I64, U1, U32 = d.i32, d.i64, d.u1, d.u32


def imm(v, dt):
    return t.Imm(v, dt)


def B(op, a, b):
    return t.Binary(op, a, b)


# --------------------------------------------------------------------------- helpers


def _storage(dt: d.DType) -> d.DType:
    return d.u8 if dt == U1 else dt


def elementwise(in_dts, out_dt, make, threads=128, name="ew") -> t.ThreadFunction:
    """y[i] = make(x0[i], x1[i], ...) for i < N, one element per thread (u1 via bytes)."""
    n = t.Name("N", I32)
    i = t.Name("i", I32)
    p = t.Name("p", U1)
    body: list[t.Stmt] = [
        t.Let(i, B("add", B("mul", t.BlockIndex(0), imm(threads, I32)), t.ThreadIndex())),
        t.Let(p, B("lt", i, n)),
    ]
    locals_ = []
    reads = []
    for k, dt in enumerate(in_dts):
        sdt = _storage(dt)
        size = sdt.bits // 8
        off = t.Name(f"o{k}", I64)
        locals_.append(t.Local(f"r{k}", sdt, 1))
        body += [
            t.Let(off, B("mul", t.Cvt(i, I64), imm(size, I64))),
            t.GlobalLoad(t.Reg(f"r{k}", 0), size, f"x{k}", off, p),
        ]
        value = t.Read(f"r{k}", 0, sdt)
        reads.append(t.Cvt(value, U1) if dt == U1 else value)
    value = make(*reads)
    assert value.dtype == out_dt, (value.dtype, out_dt)
    odt = _storage(out_dt)
    if out_dt == U1:
        value = t.Cvt(value, d.u8)
    size = odt.bits // 8
    off = t.Name("oy", I64)
    locals_.append(t.Local("out", odt, 1))
    body += [
        t.SetLocal("out", 0, value),
        t.Let(off, B("mul", t.Cvt(i, I64), imm(size, I64))),
        t.GlobalStore("y", off, t.Reg("out", 0), size, p),
    ]
    params = tuple(t.Param(f"x{k}", _storage(dt), True) for k, dt in enumerate(in_dts))
    params += (t.Param("y", odt, True), t.Param("N", I32, False))
    grid = (B("div", B("add", n, imm(threads - 1, I32)), imm(threads, I32)),)
    return t.ThreadFunction(name, params, threads, grid, 0, tuple(locals_), tuple(body))


def codes_of(dt: d.DType, n: int) -> np.ndarray:
    return np.zeros(n, dtype=_storage(dt).storage)


def run_elementwise(in_dts, out_dt, make, inputs, **kw) -> np.ndarray:
    """inputs: code arrays (dtype storage); returns the output codes."""
    fn = elementwise(in_dts, out_dt, make, **kw)
    n = len(inputs[0])
    y = codes_of(out_dt, n + 3)
    sentinel = y.copy()
    sentinel[:] = 0x5A
    y[:] = sentinel
    args = {
        f"x{k}": np.ascontiguousarray(a, dtype=_storage(dt).storage)
        for k, (a, dt) in enumerate(zip(inputs, in_dts, strict=True))
    }
    args.update(y=y, N=n)
    compile_cpu(fn).launch(args)
    assert (y[n:] == sentinel[n:]).all(), "wrote past N"
    return y[:n]


INT_TYPES = [d.u8, d.i8, d.u16, d.i16, d.u32, d.i32, d.u64, d.i64]


def int_samples(dt: d.DType, n_random: int = 150) -> list[int]:
    """Values (Python ints) of `dt`: the edges first, then random ones."""
    edges = {
        dt.min,
        dt.max,
        0,
        1,
        2,
        3,
        7,
        dt.max - 1,
        dt.min + 1,
        dt.bits - 1,
        dt.bits,
        dt.bits + 1,
    }
    if dt.signed:
        edges |= {-1, -2, -7, -dt.bits}
    words = RNG.integers(0, 2**32, size=(n_random, 2), dtype=np.uint64)
    rand = [wrap(int(hi) << 32 | int(lo), dt) for lo, hi in words]
    return sorted(v for v in edges if dt.min <= v <= dt.max) + rand


def to_codes(values, dt: d.DType) -> np.ndarray:
    return np.array([v & dt.code_mask for v in values], dtype=np.uint64).astype(dt.storage)


def from_codes(codes, dt: d.DType) -> list[int]:
    out = []
    for c in np.asarray(codes).astype(np.uint64):
        v = int(c)
        if dt.signed and dt != U1 and v >> (dt.bits - 1):
            v -= 1 << dt.bits
        out.append(v)
    return out


def wrap(v: int, dt: d.DType) -> int:
    v &= dt.code_mask
    if dt.signed and v >> (dt.bits - 1):
        v -= 1 << dt.bits
    return v


def int_model(op: str, a: int, b: int, dt: d.DType, bdt: d.DType | None = None) -> int:
    """Thread-IR integer semantics (plus the backend's documented division by zero)."""
    if op in ("shl", "shr"):
        amount = b & (bdt or dt).code_mask
        if op == "shl":
            return wrap(a << amount, dt) if amount < dt.bits else 0
        return a >> min(amount, dt.bits)
    if op in ("div", "rem"):
        if b == 0:
            return wrap(-1, dt) if op == "div" else a
        q = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
        return wrap(q, dt) if op == "div" else wrap(a - q * b, dt)
    if op in ("eq", "ne", "lt", "le", "gt", "ge"):
        return int(
            {"eq": a == b, "ne": a != b, "lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op]
        )
    return wrap(
        {
            "add": a + b,
            "sub": a - b,
            "mul": a * b,
            "min": min(a, b),
            "max": max(a, b),
            "and": a & b,
            "or": a | b,
            "xor": a ^ b,
        }[op],
        dt,
    )


# --------------------------------------------------------------------------- basics


@pytest.mark.parametrize("n", [1, 127, 128, 129, 1000])
def test_vector_add_ragged(n):
    x = RNG.standard_normal(n).astype(np.float32)
    y = RNG.standard_normal(n).astype(np.float32)
    out = run_elementwise(
        [d.f32, d.f32], d.f32, lambda a, b: B("add", a, b), [x.view(np.uint32), y.view(np.uint32)]
    )
    np.testing.assert_array_equal(out.view(np.float32), x + y)


def test_brief_example_and_grid_from_scalars():
    n = t.Name("N", I32)
    i = t.Name("i", I32)
    p = t.Name("p", U1)
    o = t.Name("o", I64)
    fn = t.ThreadFunction(
        "add",
        (t.Param("x", d.f32, True), t.Param("y", d.f32, True), t.Param("N", I32, False)),
        128,
        (B("div", B("add", n, imm(127, I32)), imm(128, I32)),),
        0,
        (t.Local("r", d.f32, 1),),
        (
            t.Let(i, B("add", B("mul", t.BlockIndex(0), imm(128, I32)), t.ThreadIndex())),
            t.Let(p, B("lt", i, n)),
            t.Let(o, B("mul", t.Cvt(i, I64), imm(4, I64))),
            t.GlobalLoad(t.Reg("r", 0), 4, "x", o, p),
            t.SetLocal("r", 0, B("add", t.Read("r", 0, d.f32), imm(1.0, d.f32))),
            t.GlobalStore("y", o, t.Reg("r", 0), 4, p),
        ),
    )
    x = np.arange(300, dtype=np.float32)
    y = np.full(301, -5, np.float32)
    kernel = compile_cpu(fn)
    kernel.launch({"x": x, "y": y, "N": 300})
    np.testing.assert_array_equal(y[:300], x + 1)
    assert y[300] == -5
    # An explicit grid overrides fn.grid: only block 0 runs.
    y[:] = 0
    kernel.launch({"x": x, "y": y, "N": 300}, grid=(1,))
    np.testing.assert_array_equal(y[:128], x[:128] + 1)
    assert not y[128:].any()


def test_emitted_text_is_deterministic_across_processes():
    import subprocess
    import sys

    script = (
        f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
        "import hashlib, test_llvm_backend as m; "
        "fn = m.mma_function(m.MMA_ATOMS['m16n8k16.f16'], m.d.f16); "
        "print(hashlib.sha256(m.emit_llvm(fn).encode()).hexdigest())"
    )
    digests = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        result = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        digests.add(result.stdout.strip())
    assert len(digests) == 1


def test_emitted_text_is_deterministic():
    make = lambda a, b: t.Pair("fma", d.f16, a, b, B("xor", a, b))  # noqa: E731
    fn1 = elementwise([U32, U32], U32, make)
    fn2 = elementwise([U32, U32], U32, make)
    text = emit_llvm(fn1)
    assert text == emit_llvm(fn1) == emit_llvm(fn2)
    assert "tilelang_entry" in text
    other = elementwise([U32, U32], U32, lambda a, b: t.Pair("fma", d.bf16, a, b, a))
    assert emit_llvm(other) != text


# --------------------------------------------------------------------------- integers


INT_BINARY = ["add", "sub", "mul", "div", "rem", "min", "max", "and", "or", "xor"]


@pytest.mark.parametrize("dt", [d.u1, d.i8, d.u8, d.i16, d.u32, d.i32, d.u64, d.i64], ids=str)
@pytest.mark.parametrize("op", INT_BINARY + ["eq", "ne", "lt", "le", "gt", "ge"])
def test_integer_binary(op, dt):
    if dt == U1:
        values = [0, 1]
        pairs = [(a, b) for a in values for b in values]
    else:
        values = int_samples(dt, 40)
        pairs = [(a, b) for a in values[:14] for b in values[:14]]
        pairs += list(zip(values, reversed(values), strict=True))
    a = [p[0] for p in pairs]
    b = [p[1] for p in pairs]
    out_dt = U1 if op in t.COMPARE_OPS else dt
    out = run_elementwise(
        [dt, dt], out_dt, lambda x, y: B(op, x, y), [to_codes(a, dt), to_codes(b, dt)]
    )
    got = from_codes(out, out_dt)
    want = [int_model(op, x, y, dt) for x, y in pairs]
    if dt == U1 and op not in t.COMPARE_OPS:
        want = [w & 1 for w in want]
    bad = [(x, y, g, w) for x, y, g, w in zip(a, b, got, want, strict=True) if g != w]
    assert not bad, bad[:10]


@pytest.mark.parametrize("dt", [d.i8, d.u8, d.i32, d.u32, d.i64, d.u64], ids=str)
@pytest.mark.parametrize("op", ["shl", "shr"])
@pytest.mark.parametrize("amount_dt", [d.i32, d.u8, d.i64], ids=str)
def test_shifts_by_any_amount(op, dt, amount_dt):
    values = int_samples(dt, 10)[:12]
    amounts = [0, 1, 3, dt.bits - 1, dt.bits, dt.bits + 1, 100, 255, -1, -dt.bits]
    amounts = [a for a in amounts if amount_dt.min <= a <= amount_dt.max]
    pairs = [(v, a) for v in values for a in amounts]
    out = run_elementwise(
        [dt, amount_dt],
        dt,
        lambda x, y: B(op, x, y),
        [to_codes([p[0] for p in pairs], dt), to_codes([p[1] for p in pairs], amount_dt)],
    )
    got = from_codes(out, dt)
    want = [int_model(op, v, a, dt, amount_dt) for v, a in pairs]
    bad = [(p, g, w) for p, g, w in zip(pairs, got, want, strict=True) if g != w]
    assert not bad, bad[:10]


@pytest.mark.parametrize("dt", [d.i8, d.u8, d.i32, d.u32, d.i64, d.u64], ids=str)
def test_integer_unary(dt):
    values = int_samples(dt, 50)
    codes = to_codes(values, dt)
    for op, model in (("neg", lambda v: -v), ("not", lambda v: ~v), ("abs", abs)):
        got = from_codes(run_elementwise([dt], dt, lambda x, op=op: t.Unary(op, x), [codes]), dt)
        want = [wrap(model(v), dt) if dt.signed or op != "abs" else v for v in values]
        assert got == want, op


def test_u1_logic_and_select():
    a = [0, 0, 1, 1]
    b = [0, 1, 0, 1]
    got = run_elementwise(
        [U1, U1],
        U1,
        lambda x, y: t.Unary("not", B("and", x, y)),
        [np.array(a, np.uint8), np.array(b, np.uint8)],
    )
    assert list(got) == [1, 1, 1, 0]
    got = run_elementwise(
        [U1, d.i32, d.i32],
        d.i32,
        lambda c, x, y: t.Select(c, x, y),
        [
            np.array(a, np.uint8),
            np.array([1, 2, 3, 4], np.uint32),
            np.array([5, 6, 7, 8], np.uint32),
        ],
    )
    assert list(got) == [5, 6, 3, 4]


# --------------------------------------------------------------------------- floats


def float_specials(dt: d.DType) -> np.ndarray:
    """Codes of interesting values of a float dtype."""
    values = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        1.5,
        2.5,
        3.0,
        -3.0,
        math.inf,
        -math.inf,
        math.nan,
        dt.max,
        -dt.max,
        dt.smallest_normal,
        dt.smallest_subnormal,
        -dt.smallest_subnormal,
        1 + dt.eps,
        1e-3,
        65504.0,
        7.0,
    ]
    return np.unique(dt.encode(np.array(values, dtype=np.float64)))


def float_codes(dt: d.DType, n: int) -> np.ndarray:
    """Random bit patterns (many NaNs, infs, subnormals among them) plus random normals."""
    bits = RNG.integers(0, 1 << dt.bits, size=n, dtype=np.uint64).astype(dt.storage)
    normal = dt.encode(RNG.standard_normal(n) * np.exp2(RNG.integers(-8, 8, n)))
    return np.concatenate([bits, normal])


def decode(codes, dt):
    with np.errstate(invalid="ignore"):  # widening signaling NaNs
        return dt.decode(np.asarray(codes).astype(np.uint64)).astype(np.float64)


def assert_float_codes(got, want, dt, context=""):
    got = np.asarray(got).astype(np.uint64)
    want = np.asarray(want).astype(np.uint64)
    gv, wv = decode(got, dt), decode(want, dt)
    nan_ok = np.isnan(gv) & np.isnan(wv)
    bad = ~nan_ok & (got != want)
    if dt in (d.f16, d.bf16):  # 16-bit NaNs are canonical
        bad |= np.isnan(gv) & (got != dt.nan_code)
    idx = np.nonzero(bad)[0]
    assert not idx.size, (
        f"{context}: {len(idx)} mismatches, e.g. got {[hex(int(v)) for v in got[idx[:6]]]} want {[hex(int(v)) for v in want[idx[:6]]]} at {idx[:6]}"
    )


def _minmax(op, a, b):
    r = np.fmin(a, b) if op == "min" else np.fmax(a, b)
    zeros = (a == 0) & (b == 0)
    neg = np.signbit(a) | np.signbit(b) if op == "min" else np.signbit(a) & np.signbit(b)
    return np.where(zeros, np.where(neg, -0.0, 0.0), r)


FLOAT_REF = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "rem": np.fmod,
    "min": lambda a, b: _minmax("min", a, b),
    "max": lambda a, b: _minmax("max", a, b),
}


@pytest.mark.parametrize("dt", [d.f16, d.bf16, d.f32, d.f64], ids=str)
@pytest.mark.parametrize("op", list(FLOAT_REF) + ["eq", "ne", "lt", "le", "gt", "ge"])
def test_float_binary(op, dt):
    specials = float_specials(dt)
    a = np.concatenate([np.repeat(specials, len(specials)), float_codes(dt, 300)])
    b = np.concatenate([np.tile(specials, len(specials)), float_codes(dt, 300)])
    out_dt = U1 if op in t.COMPARE_OPS else dt
    got = run_elementwise([dt, dt], out_dt, lambda x, y: B(op, x, y), [a, b])
    x, y = decode(a, dt), decode(b, dt)
    with np.errstate(all="ignore"):
        if op in t.COMPARE_OPS:
            want = {
                "eq": x == y,
                "ne": x != y,
                "lt": x < y,
                "le": x <= y,
                "gt": x > y,
                "ge": x >= y,
            }[op]
            np.testing.assert_array_equal(got, want.astype(np.uint8))
            return
        exact = FLOAT_REF[op](x, y)  # float64: one rounding to dt is the correct result
        if dt == d.f64:
            exact = FLOAT_REF[op](a.view(np.float64), b.view(np.float64))
    want = dt.encode(exact)
    assert_float_codes(got, want, dt, op)


@pytest.mark.parametrize("dt", [d.f16, d.bf16, d.f32, d.f64], ids=str)
def test_float_exact_unary(dt):
    codes = np.concatenate([float_specials(dt), float_codes(dt, 300)])
    x = decode(codes, dt)
    for op, ref in (
        ("neg", np.negative),
        ("abs", np.abs),
        ("floor", np.floor),
        ("ceil", np.ceil),
        ("sqrt", np.sqrt),
    ):
        got = run_elementwise([dt], dt, lambda v, op=op: t.Unary(op, v), [codes])
        with np.errstate(all="ignore"):
            want = dt.encode(ref(x)) if dt != d.f64 else ref(codes.view(np.float64)).view(np.uint64)
        if op in ("neg", "abs"):  # sign-bit operations, NaN payloads included
            mask = 1 << (dt.bits - 1)
            want = (
                codes ^ np.array(mask, codes.dtype)
                if op == "neg"
                else codes & np.array(mask - 1, codes.dtype)
            )
            np.testing.assert_array_equal(got, want)
        else:
            assert_float_codes(got, want, dt, op)


def exact(formula):
    """`formula` evaluated with 50 significant digits (mpmath), as float64: a reference
    that shares no code with numpy or the backends."""

    def reference(values: np.ndarray) -> np.ndarray:
        with mpmath.workdps(50):
            return np.array([float(formula(mpmath.mpf(float(v)))) for v in values.ravel()])

    return reference


@pytest.mark.parametrize("dt", [d.f16, d.bf16, d.f32, d.f64], ids=str)
@pytest.mark.parametrize(
    "op,ref,domain",
    [
        ("exp", np.exp, (-10, 10)),
        ("exp2", np.exp2, (-10, 10)),
        ("fast_exp2", np.exp2, (-10, 10)),
        ("log", np.log, (1e-3, 1e3)),
        ("log2", np.log2, (1e-3, 1e3)),
        ("sin", np.sin, (-6, 6)),
        ("cos", np.cos, (-6, 6)),
        ("tanh", np.tanh, (-5, 5)),
        ("erf", exact(mpmath.erf), (-5, 5)),
        ("sigmoid", lambda v: 1 / (1 + np.exp(-v)), (-10, 10)),
        ("rsqrt", lambda v: 1 / np.sqrt(v), (1e-3, 1e3)),
        ("log1p", exact(lambda x: mpmath.log(1 + x)), (-0.99, 1e3)),
        ("softplus", exact(lambda x: mpmath.log(1 + mpmath.exp(x))), (-60, 60)),
    ],
)
def test_transcendentals_within_ulps(op, ref, domain, dt):
    x = dt.encode(RNG.uniform(*domain, size=400))
    got = decode(run_elementwise([dt], dt, lambda v: t.Unary(op, v), [x]), dt)
    want = ref(decode(x, dt))
    ulp = np.spacing(np.abs(want).astype(np.float32 if dt != d.f64 else np.float64)).astype(
        np.float64
    )
    if dt in (d.f16, d.bf16):
        ulp = np.maximum(np.abs(want) * dt.eps, dt.smallest_subnormal)
    assert np.all(np.abs(got - want) <= 4 * ulp), op


def test_log1p_and_softplus_keep_their_precision_where_naive_formulas_lose_it():
    tiny = np.array([1e-7, -1e-7, 3e-5], np.float32)
    got = run_elementwise([d.f32], d.f32, lambda v: t.Unary("log1p", v), [d.f32.encode(tiny)])
    want = exact(lambda x: mpmath.log(1 + x))(tiny)
    np.testing.assert_allclose(decode(got, d.f32), want, rtol=4e-7)
    big = np.array([100.0, 200.0, -80.0, -20.0], np.float32)  # naive: inf, inf, 0, 0
    got = run_elementwise([d.f32], d.f32, lambda v: t.Unary("softplus", v), [d.f32.encode(big)])
    want = exact(lambda x: mpmath.log(1 + mpmath.exp(x)))(big)
    np.testing.assert_allclose(decode(got, d.f32), want, rtol=4e-7)


# --------------------------------------------------------------------------- conversions


def test_cvt_f16_to_f32_exhaustive():
    codes = np.arange(1 << 16, dtype=np.uint16)
    got = run_elementwise([d.f16], d.f32, lambda v: t.Cvt(v, d.f32), [codes])
    assert_float_codes(got, d.convert(codes, d.f16, d.f32), d.f32)
    nan = np.isnan(decode(codes, d.f16))
    assert (got[nan] == 0x7FFFFFFF).all()  # the canonical NaN


@pytest.mark.parametrize("src", [d.f32, d.f64, d.f16, d.bf16], ids=str)
@pytest.mark.parametrize("dst", [d.f16, d.bf16, d.f32, d.f64], ids=str)
def test_cvt_float_to_float(src, dst):
    codes = np.concatenate([float_specials(src), float_codes(src, 4000)])
    if src == d.f32:  # values near the targets' rounding boundaries and subnormals
        near = d.f16.decode(RNG.integers(0, 1 << 16, 2000).astype(np.uint64)).astype(np.float64)
        jitter = near * (1 + RNG.choice([-1, 1], 2000) * 2.0 ** -RNG.integers(11, 24, 2000))
        codes = np.concatenate([codes, d.f32.encode(jitter)])
    if src == d.f64:  # halfway cases plus or minus a tiny bit: double rounding traps
        base = d.f16.decode(RNG.integers(0, 0x7BFF, 1000).astype(np.uint64)).astype(np.float64)
        half_ulp = np.spacing(base.astype(np.float16)).astype(np.float64) / 2
        traps = np.concatenate(
            [base + half_ulp, base + half_ulp * (1 + 2.0**-40), base + half_ulp * (1 - 2.0**-40)]
        )
        bf = d.bf16.decode(RNG.integers(0, 0x7F7F, 1000).astype(np.uint64)).astype(np.float64)
        bf_traps = np.concatenate([bf * (1 + 2.0**-8), bf * (1 + 2.0**-8 + 2.0**-45)])
        codes = np.concatenate([codes, traps.view(np.uint64), bf_traps.view(np.uint64)])
    got = run_elementwise([src], dst, lambda v: t.Cvt(v, dst), [codes])
    want = d.convert(codes, src, dst)
    assert_float_codes(got, want, dst, f"{src}->{dst}")
    nan = np.isnan(decode(codes, src))
    assert (got[nan].astype(np.uint64) == dst.nan_code).all()  # canonical NaN, positive


@pytest.mark.parametrize("src", [d.f16, d.bf16, d.f32, d.f64], ids=str)
@pytest.mark.parametrize("dst", INT_TYPES, ids=str)
def test_cvt_float_to_int_saturates(src, dst):
    values = [
        0.5,
        1.5,
        2.5,
        -0.5,
        -1.5,
        -2.5,
        0.49,
        100.7,
        -100.7,
        math.nan,
        -math.nan,
        math.inf,
        -math.inf,
        1e30,
        -1e30,
        float(dst.max),
        float(dst.min),
        float(dst.max) + 1,
        float(dst.min) - 1,
        2.0**31,
        2.0**63,
        2.0**64,
        -(2.0**63),
        255.5,
        127.5,
        -128.5,
        32767.5,
    ]
    extra = RNG.standard_normal(300) * 10.0 ** RNG.integers(0, 20, 300)
    codes = src.encode(np.concatenate([values, extra]))
    got = run_elementwise([src], dst, lambda v: t.Cvt(v, dst), [codes])
    want = d.convert(codes, src, dst)
    bad = np.nonzero(got != want)[0]
    assert not bad.size, [
        (decode(codes[i : i + 1], src)[0], int(got[i]), int(want[i])) for i in bad[:8]
    ]


@pytest.mark.parametrize("src", INT_TYPES, ids=str)
def test_cvt_int_to_int_saturates(src):
    values = int_samples(src, 100)
    codes = to_codes(values, src)
    for dst in INT_TYPES:
        got = run_elementwise([src], dst, lambda v, dst=dst: t.Cvt(v, dst), [codes])
        np.testing.assert_array_equal(got, d.convert(codes, src, dst), err_msg=f"{src}->{dst}")


@pytest.mark.parametrize("src", INT_TYPES, ids=str)
@pytest.mark.parametrize("dst", [d.f16, d.bf16, d.f32, d.f64], ids=str)
def test_cvt_int_to_float_rne(src, dst):
    values = int_samples(src, 200)
    if src.bits >= 32:  # ties and near-ties of the 8/11/24-bit targets at large magnitudes
        for shift in (20, 30, 40, 50, 55, 60):
            if shift + 10 < src.bits - (1 if src.signed else 0):
                base = 1 << (shift + 8)
                for delta in (1 << shift, (1 << shift) + 1, (1 << shift) - 1, 3 << shift):
                    values += [base + delta, -(base + delta)] if src.signed else [base + delta]
    values = [v for v in values if src.min <= v <= src.max]
    codes = to_codes(values, src)
    got = run_elementwise([src], dst, lambda v: t.Cvt(v, dst), [codes])
    np.testing.assert_array_equal(got, d.convert(codes, src, dst))


def test_cvt_to_u1_is_nonzero():
    f = d.f32.encode(np.array([0.0, -0.0, 0.25, -3.0, math.nan, math.inf]))
    assert list(run_elementwise([d.f32], U1, lambda v: t.Cvt(v, U1), [f])) == [0, 0, 1, 1, 0, 1]
    i = to_codes([0, 1, -1, 256, -128], d.i32)
    assert list(run_elementwise([d.i32], U1, lambda v: t.Cvt(v, U1), [i])) == [0, 1, 1, 1, 1]
    u = np.array([0, 1], np.uint8)
    got = run_elementwise([U1], d.f32, lambda v: t.Cvt(v, d.f32), [u])
    assert list(got.view(np.float32)) == [0.0, 1.0]
    got = run_elementwise([U1], d.i8, lambda v: t.Cvt(v, d.i8), [u])
    assert list(got) == [0, 1]


def test_bitcast():
    x = RNG.integers(0, 2**32, 100, dtype=np.uint64).astype(np.uint32)
    got = run_elementwise([U32], d.f32, lambda v: t.Bitcast(v, d.f32), [x])
    np.testing.assert_array_equal(got, x)
    got = run_elementwise(
        [U32], d.i32, lambda v: B("add", t.Bitcast(v, d.i32), imm(-1, d.i32)), [x]
    )
    np.testing.assert_array_equal(got, (x.astype(np.int64) - 1).astype(np.uint32))
    h = RNG.integers(0, 2**16, 100).astype(np.uint16)
    got = run_elementwise([d.u16], d.bf16, lambda v: t.Bitcast(v, d.bf16), [h])
    np.testing.assert_array_equal(got, h)


# --------------------------------------------------------------------------- bit tricks


def lop3_model(a, b, c, lut):
    out = np.zeros_like(a)
    for i in range(8):
        if (lut >> i) & 1:
            term = (a if i & 4 else ~a) & (b if i & 2 else ~b) & (c if i & 1 else ~c)
            out |= term
    return out


def test_lop3_against_model():
    n = 200
    a, b, c = (RNG.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32) for _ in range(3))
    luts = [0x00, 0xFF, 0xF0, 0xCC, 0xAA, 0x96, 0xE8, 0xEA, 0x6A, 0x1E, 0x80, 0xFE] + [
        int(v) for v in RNG.integers(0, 256, 8)
    ]
    for lut in luts:
        got = run_elementwise(
            [U32, U32, U32], U32, lambda x, y, z, lut=lut: t.Lop3(x, y, z, lut), [a, b, c]
        )
        np.testing.assert_array_equal(got, lop3_model(a, b, c, lut), err_msg=hex(lut))


def prmt_model(a: int, b: int, sel: int) -> int:
    data = (b << 32) | a
    out = 0
    for i in range(4):
        nib = (sel >> (4 * i)) & 0xF
        byte = (data >> (8 * (nib & 7))) & 0xFF
        if nib & 8:
            byte = 0xFF if byte & 0x80 else 0
        out |= byte << (8 * i)
    return out


def test_prmt_against_model():
    n = 300
    a, b, s = (RNG.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32) for _ in range(3))
    got = run_elementwise([U32, U32, U32], U32, lambda x, y, z: t.Prmt(x, y, z), [a, b, s])
    want = [prmt_model(int(x), int(y), int(z)) for x, y, z in zip(a, b, s, strict=True)]
    np.testing.assert_array_equal(got, np.array(want, np.uint32))
    for sel in (0x5410, 0x7632, 0x3210, 0x0123, 0x8888, 0xBA98, 0x4321):
        got = run_elementwise(
            [U32, U32], U32, lambda x, y, sel=sel: t.Prmt(x, y, imm(sel, U32)), [a, b]
        )
        want = [prmt_model(int(x), int(y), sel) for x, y in zip(a, b, strict=True)]
        np.testing.assert_array_equal(got, np.array(want, np.uint32), err_msg=hex(sel))


def _round_fraction(value: Fraction, dt: d.DType) -> int:
    """Correct RNE rounding of an exact rational to dt (finite inputs), by neighbours."""
    guess = int(dt.encode(np.array([float(value)]))[0])
    if value == 0:
        return guess
    candidates = set()
    for code in (guess - 1, guess, guess + 1):
        if 0 <= code < (1 << dt.bits):
            candidates.add(code)
    best = None
    for code in sorted(candidates):
        v = float(decode(np.array([code]), dt)[0])
        if math.isinf(v) or math.isnan(v):
            continue
        key = (abs(Fraction(v) - value), code & 1)
        if best is None or key < best[0]:
            best = (key, code)
    threshold = Fraction(dt.max) + Fraction(2) ** (dt.max_exponent - dt.mantissa_bits - 1)
    if abs(value) >= threshold:  # IEEE: rounds to ±inf (a tie at the threshold too)
        return int(dt.encode(np.array([math.copysign(math.inf, value)]))[0])
    if best is None:
        return guess
    return best[1]


@pytest.mark.parametrize("elem", [d.f16, d.bf16], ids=str)
def test_pair_ops(elem):
    n = 500

    def halves():
        lo = np.concatenate([float_specials(elem), float_codes(elem, n)])[:n]
        return lo.astype(np.uint32)

    a_lo, a_hi, b_lo, b_hi, c_lo, c_hi = (halves() for _ in range(6))
    a = a_lo | (a_hi << 16)
    b = b_lo | (b_hi << 16)
    c = c_lo | (c_hi << 16)
    for op in ("add", "sub", "mul"):
        got = run_elementwise([U32, U32], U32, lambda x, y, op=op: t.Pair(op, elem, x, y), [a, b])
        for shift, (xs, ys) in ((0, (a_lo, b_lo)), (16, (a_hi, b_hi))):
            with np.errstate(all="ignore"):
                want = elem.encode(FLOAT_REF[op](decode(xs, elem), decode(ys, elem)))
            assert_float_codes((got >> shift) & 0xFFFF, want, elem, f"{op} half {shift}")
    got = run_elementwise(
        [U32, U32, U32], U32, lambda x, y, z: t.Pair("fma", elem, x, y, z), [a, b, c]
    )
    for shift, (xs, ys, zs) in ((0, (a_lo, b_lo, c_lo)), (16, (a_hi, b_hi, c_hi))):
        xv, yv, zv = decode(xs, elem), decode(ys, elem), decode(zs, elem)
        with np.errstate(all="ignore"):
            want = elem.encode(xv * yv + zv)  # fine for specials; exact cases below
        finite = np.isfinite(xv) & np.isfinite(yv) & np.isfinite(zv)
        for i in np.nonzero(finite)[0]:
            want[i] = _round_fraction(Fraction(xv[i]) * Fraction(yv[i]) + Fraction(zv[i]), elem)
        assert_float_codes((got >> shift) & 0xFFFF, want, elem, f"fma half {shift}")


@pytest.mark.parametrize(
    "elem,a,b,c,want",
    [
        # a·b = 385/256 is halfway between the bf16 values 1.5 and 1.5 + 2^-7; c = ±2^-100
        # decides. Rounding a·b + c to f64 first would lose c and round the tie to even.
        (d.bf16, 35 / 32, 11 / 8, 2.0**-100, 1.5 + 2.0**-7),
        (d.bf16, 35 / 32, 11 / 8, -(2.0**-100), 1.5),
        (d.bf16, 35 / 32, 11 / 8, 0.0, 1.5),
        # a·b = 3075/2048 is an f16 halfway point; c = -2^-24 is half an f32 ulp there, so
        # an f32 fma (then rounding to f16) would round twice.
        (d.f16, 1 + 2.0**-10, 1.5, -(2.0**-24), 1537 / 1024),
        (d.f16, 1 + 2.0**-10, 1.5, 2.0**-24, 1538 / 1024),
    ],
)
def test_pair_fma_rounds_once(elem, a, b, c, want):
    words = [np.array([int(elem.encode(np.array([v]))[0]) * 0x10001], np.uint32) for v in (a, b, c)]
    for v in (a, b, c):  # the operands are exact in elem
        assert float(elem.decode(elem.encode(np.array([v])).astype(np.uint64))[0]) == v
    got = run_elementwise([U32, U32, U32], U32, lambda x, y, z: t.Pair("fma", elem, x, y, z), words)
    expected = int(elem.encode(np.array([want]))[0])
    assert int(got[0]) == expected * 0x10001


# --------------------------------------------------------------------------- block-level programs


TID = t.ThreadIndex()


def c32(v):
    return imm(v, I32)


def store_word_local(
    local: str, dt: d.DType, tensor: str, index: t.Expr, count: int = 1
) -> list[t.Stmt]:
    """Store `count` elements of `local` (from element 0) at element index·count of `tensor`."""
    size = dt.bits // 8 * count
    off = t.Name(f"so_{local}_{tensor}", I64)
    return [
        t.Let(off, B("mul", t.Cvt(index, I64), imm(size, I64))),
        t.GlobalStore(tensor, off, t.Reg(local, 0), size),
    ]


ONE_BLOCK = (t.Imm(1, I32),)


def function(name, params, threads, body, locals_=(), shared=0, grid=ONE_BLOCK):
    return t.ThreadFunction(
        name, tuple(params), threads, tuple(grid), shared, tuple(locals_), tuple(body)
    )


def test_shared_memory_and_barrier_between_regions():
    bid = t.BlockIndex(0)
    v = B("add", B("mul", bid, c32(1000)), B("add", B("mul", TID, c32(3)), c32(1)))
    nxt = B("rem", B("add", TID, c32(1)), c32(128))
    out_index = B("add", B("mul", bid, c32(128)), TID)
    body = [
        t.SetLocal("v", 0, v),
        t.SharedStore(B("mul", TID, c32(4)), t.Reg("v", 0), 4),
        t.Barrier(),
        t.SharedLoad(t.Reg("w", 0), 4, B("mul", nxt, c32(4))),
        *store_word_local("w", I32, "y", out_index),
    ]
    fn = function(
        "neighbours",
        [t.Param("y", I32, True)],
        128,
        body,
        [t.Local("v", I32, 1), t.Local("w", I32, 1)],
        shared=512,
        grid=(c32(2),),
    )
    y = np.zeros(256, np.int32)
    compile_cpu(fn).launch({"y": y}, workers=1)
    tids = np.arange(128)
    for b in range(2):
        np.testing.assert_array_equal(
            y[b * 128 : (b + 1) * 128], b * 1000 + ((tids + 1) % 128) * 3 + 1
        )


def test_varying_names_cross_regions_and_varying_if():
    x = t.Name("x", I32)
    flag = t.Name("flag", U1)
    u = t.Name("u", I32)
    inner = t.Name("inner", I32)
    body = [
        t.Let(u, B("mul", c32(5), c32(7))),  # uniform: hoisted
        t.Let(x, B("mul", TID, c32(3))),
        t.Let(flag, B("eq", B("rem", TID, c32(3)), c32(0))),
        t.Barrier(),
        t.If(
            flag,
            (t.Let(inner, B("add", x, u)), t.SetLocal("r", 0, B("mul", inner, c32(2)))),
            (
                t.If(
                    B("eq", B("rem", TID, c32(3)), c32(1)),
                    (t.SetLocal("r", 0, t.Unary("neg", x)),),
                    (t.SetLocal("r", 0, c32(7)),),
                ),
            ),
        ),
        *store_word_local("r", I32, "y", TID),
    ]
    fn = function("branches", [t.Param("y", I32, True)], 96, body, [t.Local("r", I32, 1)])
    y = np.zeros(96, np.int32)
    compile_cpu(fn).launch({"y": y})
    tid = np.arange(96)
    want = np.where(tid % 3 == 0, (3 * tid + 35) * 2, np.where(tid % 3 == 1, -3 * tid, 7))
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("grid", [(3, 2), (2, 2, 2), (5,)])
def test_multi_dimensional_grid(grid):
    dims = (*grid, 1, 1)[:3]
    bx, by, bz = (t.BlockIndex(a) for a in range(3))
    linear = B("add", bx, B("mul", c32(dims[0]), B("add", by, B("mul", c32(dims[1]), bz))))
    value = B(
        "add",
        B("add", B("mul", bx, c32(100)), B("mul", by, c32(10000))),
        B("add", B("mul", bz, c32(1000000)), TID),
    )
    body = [
        t.SetLocal("r", 0, value),
        *store_word_local("r", I32, "y", B("add", B("mul", linear, c32(32)), TID)),
    ]
    fn = function(
        "grid",
        [t.Param("y", I32, True)],
        32,
        body,
        [t.Local("r", I32, 1)],
        grid=tuple(c32(g) for g in grid),
    )
    total = dims[0] * dims[1] * dims[2]
    y = np.full(total * 32, -1, np.int32)
    compile_cpu(fn).launch({"y": y})
    z, yy, x, tid = np.meshgrid(
        range(dims[2]), range(dims[1]), range(dims[0]), range(32), indexing="ij"
    )
    np.testing.assert_array_equal(y, (x * 100 + yy * 10000 + z * 1000000 + tid).ravel())


def test_many_blocks_on_several_workers_match_one_worker():
    n = 100_000
    x = RNG.standard_normal(n).astype(np.float32)
    fn = elementwise([d.f32], d.f32, lambda v: B("mul", v, v), threads=64)
    kernel = compile_cpu(fn)
    y1 = np.zeros(n, np.uint32)
    y4 = np.zeros(n, np.uint32)
    kernel.launch({"x0": x, "y": y1, "N": n}, workers=1)
    kernel.launch({"x0": x, "y": y4, "N": n}, workers=4)
    np.testing.assert_array_equal(y1, y4)
    np.testing.assert_array_equal(y1.view(np.float32), x * x)


# --------------------------------------------------------------------------- shuffles


def shfl_model(values, args, mode, width):
    out = []
    for lane_global, (value, arg) in enumerate(zip(values, args, strict=True)):
        warp_base = lane_global - lane_global % 32
        lane = lane_global % 32
        rel = lane % width
        seg = lane - rel
        src = {"idx": arg, "xor": rel ^ arg, "up": rel - arg, "down": rel + arg}[mode]
        out.append(values[warp_base + seg + src] if 0 <= src < width else value)
    return out


@pytest.mark.parametrize("mode", ["idx", "xor", "up", "down"])
@pytest.mark.parametrize("width", [1, 2, 4, 8, 16, 32])
def test_shfl_modes_and_widths(mode, width):
    threads = 64
    value = t.Cvt(B("add", B("mul", TID, c32(7)), c32(3)), U32)
    res_const = t.Name("rc", U32)
    res_var = t.Name("rv", U32)
    res_f = t.Name("rf", d.f32)
    varying_arg = B("sub", B("rem", B("mul", TID, c32(5)), c32(41)), c32(4))  # -4 .. 36
    const_arg = 3 if mode != "idx" else 5
    body = [
        t.Shfl(res_const, value, mode, c32(const_arg), width),
        t.Shfl(res_var, value, mode, varying_arg, width),
        t.Shfl(res_f, t.Cvt(TID, d.f32), mode, t.Cvt(B("mul", TID, c32(3)), d.i8), width),
        t.SetLocal("r", 0, res_const),
        t.SetLocal("r", 1, res_var),
        t.SetLocal("r", 2, t.Bitcast(res_f, U32)),
        t.SetLocal("r", 3, imm(0, U32)),
        *store_word_local("r", U32, "y", TID, count=4),
    ]
    fn = function("shfl", [t.Param("y", U32, True)], threads, body, [t.Local("r", U32, 4)])
    y = np.zeros((threads, 4), np.uint32)
    compile_cpu(fn).launch({"y": y})
    tid = list(range(threads))
    values = [7 * i + 3 for i in tid]
    np.testing.assert_array_equal(y[:, 0], shfl_model(values, [const_arg] * threads, mode, width))
    np.testing.assert_array_equal(
        y[:, 1], shfl_model(values, [(i * 5) % 41 - 4 for i in tid], mode, width)
    )
    i8_args = [wrap(3 * i, d.i8) for i in tid]
    want_f = np.array(shfl_model([float(i) for i in tid], i8_args, mode, width), np.float32)
    np.testing.assert_array_equal(y[:, 2].view(np.float32), want_f)


def test_uniform_for_containing_a_collective():
    """A butterfly all-reduce: for k in 0..4 (uniform), acc += shfl.xor(acc, 1 << k)."""
    k = t.Name("k", I32)
    s = t.Name("s", U32)
    n = t.Name("n", I32)
    j = t.Name("j", I32)
    body = [
        t.SetLocal("acc", 0, t.Cvt(TID, U32)),
        t.SetLocal("cnt", 0, c32(0)),
        t.For(
            k,
            c32(0),
            c32(5),
            c32(1),
            (
                t.Shfl(s, t.Read("acc", 0, U32), "xor", B("shl", c32(1), k)),
                t.SetLocal("acc", 0, B("add", t.Read("acc", 0, U32), s)),
            ),
        ),
        # A loop with a scalar bound and step 3 around a barrier: ceil((n - 1) / 3) trips.
        t.For(
            j,
            c32(1),
            n,
            c32(3),
            (t.Barrier(), t.SetLocal("cnt", 0, B("add", t.Read("cnt", 0, I32), j))),
        ),
        *store_word_local("acc", U32, "y", TID),
        *store_word_local("cnt", I32, "z", TID),
    ]
    fn = function(
        "allreduce",
        [t.Param("y", U32, True), t.Param("z", I32, True), t.Param("n", I32, False)],
        128,
        body,
        [t.Local("acc", U32, 1), t.Local("cnt", I32, 1)],
    )
    kernel = compile_cpu(fn)
    for n_value in (-5, 0, 1, 2, 4, 11):
        y = np.zeros(128, np.uint32)
        z = np.zeros(128, np.int32)
        kernel.launch({"y": y, "z": z, "n": n_value})
        warp_sums = np.repeat([sum(range(w * 32, w * 32 + 32)) for w in range(4)], 32)
        np.testing.assert_array_equal(y, warp_sums)
        np.testing.assert_array_equal(z, sum(range(1, n_value, 3)))


def test_uniform_if_containing_a_collective():
    n = t.Name("n", I32)
    s = t.Name("s", I32)
    s2 = t.Name("s2", I32)
    body = [
        t.If(
            B("gt", n, c32(5)),
            (t.Shfl(s, TID, "down", c32(1)), t.SetLocal("r", 0, s)),
            (t.Shfl(s2, TID, "up", c32(2)), t.SetLocal("r", 0, t.Unary("neg", s2))),
        ),
        *store_word_local("r", I32, "y", TID),
    ]
    fn = function(
        "uif", [t.Param("y", I32, True), t.Param("n", I32, False)], 32, body, [t.Local("r", I32, 1)]
    )
    kernel = compile_cpu(fn)
    y = np.zeros(32, np.int32)
    kernel.launch({"y": y, "n": 9})
    np.testing.assert_array_equal(y, [min(i + 1, 31) if i < 31 else 31 for i in range(32)])
    kernel.launch({"y": y, "n": 1})
    np.testing.assert_array_equal(y, [-(i - 2) if i >= 2 else -i for i in range(32)])


# --------------------------------------------------------------------------- ldmatrix / mma


def load_local(local: str, nbytes: int, tensor: str, index: t.Expr, byte: int = 0) -> list[t.Stmt]:
    off = t.Name(f"lo_{local}_{tensor}_{byte}", I64)
    return [
        t.Let(off, B("mul", t.Cvt(index, I64), imm(nbytes, I64))),
        t.GlobalLoad(t.Reg(local, byte), nbytes, tensor, off),
    ]


@pytest.mark.parametrize("name", sorted(LDMATRIX_ATOMS))
def test_ldmatrix(name):
    atom = LDMATRIX_ATOMS[name]
    num, trans = atom.num, atom.trans
    threads, warps = 64, 2
    rows_per_warp = 32  # shared: 32 row slots of 16 bytes per warp, rows scattered among them
    shared_bytes = warps * rows_per_warp * 16
    # Each thread copies one 16-byte row slot of the shared image from global memory.
    image = RNG.integers(0, 2**16, size=(warps * rows_per_warp, 8), dtype=np.uint64).astype(
        np.uint16
    )
    # Lane l of warp w gives the address of slot perm[w][l] (only lanes < 8·num matter).
    perm = np.stack([RNG.permutation(rows_per_warp) for _ in range(warps)])
    addresses = ((np.arange(warps)[:, None] * rows_per_warp + perm) * 16).astype(np.int32).ravel()
    body = [
        *load_local("row", 16, "img", TID),
        t.SharedStore(B("mul", TID, c32(16)), t.Reg("row", 0), 16),
        *load_local("addr", 4, "addrs", TID),
        t.Barrier(),
        tm.Ldmatrix(num, trans, t.Reg("dst", 0), t.Read("addr", 0, I32)),
        *store_word_local("dst", U32, "y", TID, count=4),
    ]
    fn = function(
        "ldm",
        [t.Param("img", d.u16, True), t.Param("addrs", I32, True), t.Param("y", U32, True)],
        threads,
        body,
        [t.Local("row", d.u16, 8), t.Local("addr", I32, 1), t.Local("dst", U32, 4)],
        shared=shared_bytes,
    )
    y = np.zeros((threads, 4), np.uint32)
    compile_cpu(fn).launch({"img": image, "addrs": addresses, "y": y})
    table = ldmatrix_layout(num, trans).table()  # [lane, local, (row, col)] of the stacked tile
    flat_image = image.ravel()
    for w in range(warps):
        for lane in range(32):
            got = y[w * 32 + lane]
            for i, (row, col) in enumerate(table[lane]):
                matrix, r = divmod(int(row), 8)
                address = addresses[w * 32 + 8 * matrix + r]
                want = flat_image[address // 2 + col]
                half = (int(got[i // 2]) >> (16 * (i % 2))) & 0xFFFF
                assert half == want, (w, lane, i)
            assert not got[num:].any()


def mma_fragments(atom, a, b, c):
    """Per-lane fragments (element order of the atom's layouts) of per-warp A, B, C."""
    ta, tb, tc = atom.a.table(), atom.b.table(), atom.c.table()
    fa = a[:, ta[..., 0], ta[..., 1]]  # [warps, lanes, locals]
    fb = b[:, tb[..., 0], tb[..., 1]]
    fc = c[:, tc[..., 0], tc[..., 1]]
    return fa, fb, fc


def mma_function(atom, operands, alias_c=False):
    es = operands.bits // 8
    acc = d.dtype(atom.acc_dtype)
    a_bytes, b_bytes = atom.a.num_locals * es, atom.b.num_locals * es
    d_reg = t.Reg("fc", 0) if alias_c else t.Reg("fd", 0)
    body = [
        *load_local("fa", a_bytes, "a", TID),
        *load_local("fb", b_bytes, "b", TID),
        *load_local("fc", 16, "c", TID),
        tm.Mma(atom.name, operands, d_reg, t.Reg("fa", 0), t.Reg("fb", 0), t.Reg("fc", 0)),
        *store_word_local("fc" if alias_c else "fd", acc, "d", TID, count=4),
    ]
    return function(
        "mma",
        [
            t.Param(n, dt, True)
            for n, dt in (("a", operands), ("b", operands), ("c", acc), ("d", acc))
        ],
        128,
        body,
        [
            t.Local("fa", operands, atom.a.num_locals),
            t.Local("fb", operands, atom.b.num_locals),
            t.Local("fc", acc, 4),
            t.Local("fd", acc, 4),
        ],
    )


def run_mma(atom, operands, a, b, c, alias_c=False):
    """a: [4, m, k], b: [4, k, n] (codes), c: [4, m, n] (f32/i32 values); returns D [4, m, n]."""
    fa, fb, fc = mma_fragments(atom, a, b, c)
    out = np.zeros(fc.shape, fc.dtype)
    kernel = compile_cpu(mma_function(atom, operands, alias_c))
    kernel.launch(
        {
            "a": np.ascontiguousarray(fa),
            "b": np.ascontiguousarray(fb),
            "c": np.ascontiguousarray(fc),
            "d": out,
        }
    )
    result = np.zeros_like(c)
    tc = atom.c.table()
    result[:, tc[..., 0], tc[..., 1]] = out
    return result, kernel


@pytest.mark.parametrize("operands", [d.f16, d.bf16], ids=str)
@pytest.mark.parametrize("alias_c", [False, True])
def test_mma_m16n8k16_float(operands, alias_c):
    atom = MMA_ATOMS["m16n8k16.f16"]
    # Small integers: every product and partial sum is exact, so the result is exact.
    a_val = RNG.integers(-8, 9, size=(4, 16, 16)).astype(np.float64)
    b_val = RNG.integers(-8, 9, size=(4, 16, 8)).astype(np.float64)
    c_val = RNG.integers(-100, 100, size=(4, 16, 8)).astype(np.float32)
    a, b = operands.encode(a_val), operands.encode(b_val)
    result, kernel = run_mma(atom, operands, a, b, c_val, alias_c)
    np.testing.assert_array_equal(result, (a_val @ b_val + c_val).astype(np.float32))
    # Random values: within the accumulation tolerance of the float64 product.
    a_val = decode(operands.encode(RNG.standard_normal((4, 16, 16))), operands).reshape(4, 16, 16)
    b_val = decode(operands.encode(RNG.standard_normal((4, 16, 8))), operands).reshape(4, 16, 8)
    c_val = RNG.standard_normal((4, 16, 8)).astype(np.float32)
    result, _ = run_mma(
        atom, operands, operands.encode(a_val), operands.encode(b_val), c_val, alias_c
    )
    exact = a_val @ b_val + c_val
    scale = np.abs(a_val) @ np.abs(b_val) + np.abs(c_val)
    assert np.all(np.abs(result - exact) <= 16 * 2.0**-24 * scale)
    assert kernel.compile_seconds < 1.0


@pytest.mark.parametrize("operands", [d.i8, d.u8], ids=str)
def test_mma_m16n8k32_integer(operands):
    atom = MMA_ATOMS["m16n8k32.i8"]
    a = RNG.integers(operands.min, operands.max, size=(4, 16, 32), endpoint=True)
    b = RNG.integers(operands.min, operands.max, size=(4, 32, 8), endpoint=True)
    c = RNG.integers(-(2**31), 2**31, size=(4, 16, 8), dtype=np.int64)
    c[0] = 2**31 - 5  # warp 0 overflows and wraps
    codes_a = (a & 0xFF).astype(np.uint8)
    codes_b = (b & 0xFF).astype(np.uint8)
    result, _ = run_mma(atom, operands, codes_a, codes_b, c.astype(np.int32))
    want = (a @ b + c) & 0xFFFFFFFF
    want = np.where(want >= 2**31, want - 2**32, want).astype(np.int32)
    np.testing.assert_array_equal(result, want)


# --------------------------------------------------------------------------- cp.async, packed data


def test_cp_async_predicated_zero_fill():
    threads = 32
    body = [
        t.SetLocal("ones", 0, imm(-1, d.i64)),
        t.SetLocal("ones", 1, imm(-1, d.i64)),
        t.SharedStore(B("mul", TID, c32(16)), t.Reg("ones", 0), 16),
        t.Barrier(),
        t.CpAsync(
            B("mul", TID, c32(16)),
            "x",
            B("mul", t.Cvt(TID, I64), imm(16, I64)),
            16,
            B("eq", B("and", TID, c32(1)), c32(0)),
        ),
        t.CpAsyncCommit(),
        t.CpAsyncWait(0),
        t.Barrier(),
        t.SharedLoad(t.Reg("got", 0), 16, B("mul", B("xor", TID, c32(1)), c32(16))),
        *store_word_local("got", d.i64, "y", TID, count=2),
    ]
    fn = function(
        "cpasync",
        [t.Param("x", d.u8, True), t.Param("y", d.u8, True)],
        threads,
        body,
        [t.Local("ones", d.i64, 2), t.Local("got", d.i64, 2)],
        shared=threads * 16,
    )
    x = RNG.integers(0, 256, size=(threads, 16), dtype=np.uint8)
    y = np.zeros((threads, 16), np.uint8)
    compile_cpu(fn).launch({"x": x, "y": y})
    for tid in range(threads):
        src = tid ^ 1
        np.testing.assert_array_equal(y[tid], x[src] if src % 2 == 0 else 0)


def test_packed_array_arguments_are_bytes():
    data = d.pack(RNG.integers(-8, 8, size=64), d.i4)  # 32 bytes
    out = d.pack(np.zeros(64, np.int64), d.i4)
    fn = elementwise([d.u8], d.u8, lambda v: t.Unary("not", v))
    kernel = compile_cpu(fn)
    kernel.launch({"x0": data, "y": np.zeros(35, np.uint8), "N": 32})
    body = elementwise([d.u8], d.u8, lambda v: v)
    compile_cpu(body).launch({"x0": data, "y": out, "N": 32})
    assert out == data


# --------------------------------------------------------------------------- runtime checks


def test_launch_checks_arguments():
    kernel = compile_cpu(elementwise([d.f32], d.f32, lambda v: v))
    x = np.zeros(8, np.float32)
    with pytest.raises(TypeError, match="missing arguments \\['N'\\]"):
        kernel.launch({"x0": x, "y": x})
    with pytest.raises(TypeError, match="unexpected arguments \\['z'\\]"):
        kernel.launch({"x0": x, "y": x, "N": 8, "z": 1})
    with pytest.raises(ValueError, match="C-contiguous"):
        kernel.launch({"x0": np.zeros(16, np.float32)[::2], "y": x, "N": 8})
    readonly = np.zeros(8, np.float32)
    readonly.flags.writeable = False
    kernel.launch({"x0": readonly, "y": x, "N": 8})  # read-only inputs are fine
    with pytest.raises(ValueError, match="read-only"):
        kernel.launch({"x0": x, "y": readonly, "N": 8})
    with pytest.raises(ValueError, match="does not fit i32"):
        kernel.launch({"x0": x, "y": x, "N": 2**31})
    with pytest.raises(TypeError, match="numpy array"):
        kernel.launch({"x0": [1.0], "y": x, "N": 1})


def test_invalid_functions_are_rejected_before_codegen():
    from tilelang.ir.thread_verify import ThreadIRError

    bad = function(
        "bad", [t.Param("y", I32, True)], 32, [t.SetLocal("r", 3, c32(0))], [t.Local("r", I32, 1)]
    )
    with pytest.raises(ThreadIRError):
        compile_cpu(bad)


def test_host_grid_evaluation_uses_thread_ir_integer_semantics():
    n = t.Name("n", I32)
    env = {"n": -7}
    assert eval_host_expr(B("div", n, c32(2)), env) == -3
    assert eval_host_expr(B("rem", n, c32(2)), env) == -1
    assert eval_host_expr(B("shr", n, c32(40)), env) == -1
    assert eval_host_expr(B("shl", n, c32(40)), env) == 0
    assert eval_host_expr(B("add", imm(2**31 - 1, I32), c32(1)), env) == -(2**31)
    assert eval_host_expr(t.Cvt(n, d.u8), env) == 0
    assert eval_host_expr(t.Cvt(imm(300, I32), d.u8), env) == 255
    assert eval_host_expr(t.Select(B("lt", n, c32(0)), c32(1), c32(2)), env) == 1
    assert eval_host_expr(B("max", n, c32(3)), env) == 3


def test_half_runtime_fallback_matches_numpy():
    """The integer f16<->f32 conversions registered on hosts without native ones."""
    import ctypes

    import llvmlite.binding as llvm

    from tilelang.codegen.llvm_numeric import half_runtime_module
    from tilelang.runtime import cpu

    cpu._llvm()
    module = llvm.parse_assembly(str(half_runtime_module()))
    module.triple = llvm.get_process_triple()
    tm = llvm.Target.from_triple(module.triple).create_target_machine(opt=2, jit=True)
    engine = llvm.create_mcjit_compiler(module, tm)
    engine.finalize_object()
    to_f32 = ctypes.CFUNCTYPE(ctypes.c_float, ctypes.c_uint16)(
        engine.get_function_address("tilelang_f16_to_f32")
    )
    to_f16 = ctypes.CFUNCTYPE(ctypes.c_uint16, ctypes.c_float)(
        engine.get_function_address("tilelang_f32_to_f16")
    )
    for code in range(0, 1 << 16, 7):
        want = np.array([code], np.uint16).view(np.float16).astype(np.float32)[0]
        got = np.float32(to_f32(code))
        assert got.tobytes() == want.tobytes() or (np.isnan(got) and np.isnan(want))
    bits = np.concatenate(
        [
            RNG.integers(0, 2**32, 3000, dtype=np.uint64).astype(np.uint32),
            d.f32.encode(RNG.standard_normal(2000) * 2.0 ** RNG.integers(-30, 20, 2000)),
        ]
    )
    for b in bits:
        x = np.uint32(b).view(np.float32)
        got = to_f16(float(x))
        with np.errstate(all="ignore"):
            want = int(np.float32(x).astype(np.float16).view(np.uint16))
        if np.isnan(x):
            assert (got & 0x7C00) == 0x7C00 and got & 0x3FF
        else:
            assert got == want, (hex(int(b)), hex(got), hex(want))


def test_compile_time_of_small_kernels():
    start = time.perf_counter()
    for lut in (0x11, 0x22, 0x33):
        fn = elementwise(
            [U32, U32, U32],
            U32,
            lambda x, y, z, lut=lut: t.Pair("fma", d.f16, t.Lop3(x, y, z, lut), y, z),
        )
        kernel = compile_cpu(fn)
        assert kernel.compile_seconds < 1.0
    assert time.perf_counter() - start < 3.0


def test_worker_count_from_environment(monkeypatch):
    monkeypatch.setenv("TILELANG_CPU_THREADS", "3")
    n = 1000
    x = np.arange(n, dtype=np.int32)
    y = np.zeros(n, np.int32)
    compile_cpu(elementwise([d.i32], d.i32, lambda v: B("add", v, c32(1)), threads=32)).launch(
        {"x0": x, "y": y, "N": n}
    )
    np.testing.assert_array_equal(y, x + 1)
    assert os.environ["TILELANG_CPU_THREADS"] == "3"


def test_gemm_with_cp_async_ldmatrix_and_mma_in_a_k_loop():
    """C[16×32] = A[16×K]·B[K×32] (f16 → f32): per K step, cp.async tiles into shared,
    barrier, ldmatrix A (x4) and B (x2.trans), mma per warp, barrier; as the lowering
    would emit it."""
    K = 64
    k0 = t.Name("k0", I32)
    w = t.Name("w", I32)
    lane = t.Name("lane", I32)
    g = t.Name("g", I32)
    tig = t.Name("tig", I32)
    i64 = lambda e: t.Cvt(e, I64)  # noqa: E731
    a_row, a_half = B("div", TID, c32(2)), B("rem", TID, c32(2))
    c = B("sub", TID, c32(32))
    b_row, b_q = B("div", c, c32(4)), B("rem", c, c32(4))
    mtx = B("div", lane, c32(8))
    r = B("rem", lane, c32(8))
    a_addr = B(
        "add",
        B("mul", B("add", B("mul", B("rem", mtx, c32(2)), c32(8)), r), c32(32)),
        B("mul", B("div", mtx, c32(2)), c32(16)),
    )
    b_addr = B(
        "add",
        c32(512),
        B(
            "add",
            B("mul", B("add", B("mul", B("rem", mtx, c32(2)), c32(8)), r), c32(64)),
            B("mul", w, c32(16)),
        ),
    )
    copy = (
        t.If(
            B("lt", TID, c32(32)),
            (
                t.CpAsync(
                    B("add", B("mul", a_row, c32(32)), B("mul", a_half, c32(16))),
                    "a",
                    i64(
                        B(
                            "mul",
                            B(
                                "add",
                                B("mul", a_row, c32(K)),
                                B("add", k0, B("mul", a_half, c32(8))),
                            ),
                            c32(2),
                        )
                    ),
                    16,
                ),
            ),
            (
                t.If(
                    B("lt", TID, c32(96)),
                    (
                        t.CpAsync(
                            B(
                                "add",
                                c32(512),
                                B("add", B("mul", b_row, c32(64)), B("mul", b_q, c32(16))),
                            ),
                            "b",
                            i64(
                                B(
                                    "mul",
                                    B(
                                        "add",
                                        B("mul", B("add", k0, b_row), c32(32)),
                                        B("mul", b_q, c32(8)),
                                    ),
                                    c32(2),
                                )
                            ),
                            16,
                        ),
                    ),
                ),
            ),
        ),
        t.CpAsyncCommit(),
        t.CpAsyncWait(0),
        t.Barrier(),
        tm.Ldmatrix(4, False, t.Reg("fa", 0), a_addr),
        tm.Ldmatrix(2, True, t.Reg("fb", 0), b_addr),
        tm.Mma(
            "m16n8k16.f16", d.f16, t.Reg("acc", 0), t.Reg("fa", 0), t.Reg("fb", 0), t.Reg("acc", 0)
        ),
        t.Barrier(),
    )
    out = []
    for half in range(2):
        off = t.Name(f"co{half}", I64)
        row = B("add", g, c32(8 * half))
        col = B("add", B("mul", w, c32(8)), B("mul", tig, c32(2)))
        out += [
            t.Let(off, i64(B("mul", B("add", B("mul", row, c32(32)), col), c32(4)))),
            t.GlobalStore("c", off, t.Reg("acc", 8 * half), 8),
        ]
    body = [
        t.Let(w, B("div", TID, c32(32))),
        t.Let(lane, B("rem", TID, c32(32))),
        t.Let(g, B("div", lane, c32(4))),
        t.Let(tig, B("rem", lane, c32(4))),
        *[t.SetLocal("acc", i, imm(0.0, d.f32)) for i in range(4)],
        t.For(k0, c32(0), c32(K), c32(16), copy),
        *out,
    ]
    fn = function(
        "gemm",
        [t.Param("a", d.f16, True), t.Param("b", d.f16, True), t.Param("c", d.f32, True)],
        128,
        body,
        [t.Local("fa", d.f16, 8), t.Local("fb", d.f16, 4), t.Local("acc", d.f32, 4)],
        shared=512 + 1024,
    )
    a = RNG.integers(-4, 5, size=(16, K)).astype(np.float16)
    b = RNG.integers(-4, 5, size=(K, 32)).astype(np.float16)
    cc = np.zeros((16, 32), np.float32)
    kernel = compile_cpu(fn)
    kernel.launch({"a": a, "b": b, "c": cc})
    np.testing.assert_array_equal(cc, a.astype(np.float64) @ b.astype(np.float64))
    assert kernel.compile_seconds < 1.0


@pytest.mark.parametrize("elem", ["f16", "bf16"])
def test_half_arithmetic_matches_numpy_float16_and_ml_dtypes(elem):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    dt = d.f16 if elem == "f16" else d.bf16
    np_type = np.float16 if elem == "f16" else ml_dtypes.bfloat16
    x = (RNG.standard_normal(500) * 8).astype(np_type)
    y = (RNG.standard_normal(500) * 8).astype(np_type)
    for op, ref in (
        ("add", np.add),
        ("sub", np.subtract),
        ("mul", np.multiply),
        ("div", np.divide),
    ):
        got = run_elementwise(
            [dt, dt], dt, lambda a, b, op=op: B(op, a, b), [x.view(np.uint16), y.view(np.uint16)]
        )
        np.testing.assert_array_equal(got, ref(x, y).astype(np_type).view(np.uint16), err_msg=op)


def test_move_copies_register_bytes():
    body = [
        *load_local("src", 16, "x", TID),
        t.Move(t.Reg("dst", 8), t.Reg("src", 0), 8),
        t.Move(t.Reg("dst", 0), t.Reg("src", 12), 4),
        t.Move(t.Reg("dst", 4), t.Reg("src", 9), 1),
        *store_word_local("dst", d.u8, "y", TID, count=16),
    ]
    fn = function(
        "move",
        [t.Param("x", d.u8, True), t.Param("y", d.u8, True)],
        32,
        body,
        [t.Local("src", d.f32, 4), t.Local("dst", d.u8, 16)],
    )
    x = RNG.integers(0, 256, size=(32, 16), dtype=np.uint8)
    y = np.zeros((32, 16), np.uint8)
    compile_cpu(fn).launch({"x": x, "y": y})
    np.testing.assert_array_equal(y[:, 8:16], x[:, 0:8])
    np.testing.assert_array_equal(y[:, 0:4], x[:, 12:16])
    np.testing.assert_array_equal(y[:, 4], x[:, 9])


@pytest.mark.parametrize("elem", [d.f16, d.bf16], ids=str)
def test_pair_fma_near_midpoints_of_large_addends(elem):
    """c large, a·b about half an ulp of c (plus or minus a little, or tiny): the cases
    where rounding a·b + c twice could go wrong."""
    n = 1500
    c = RNG.uniform(32, 60000 if elem == d.f16 else 1e30, n) * RNG.choice([-1, 1], n)
    c_codes = elem.encode(c)
    c_val = decode(c_codes, elem)
    half_ulp = np.exp2(np.floor(np.log2(np.abs(c_val))) - elem.mantissa_bits - 1)
    target = (
        half_ulp
        * RNG.choice([1, -1, 0.5, 1.5, 2.0**-30], n)
        * (1 + RNG.choice([0, 2.0**-9, -(2.0**-9)], n))
    )
    a_val = decode(elem.encode(np.exp2(RNG.uniform(-12, 6, n))), elem)
    b_codes = elem.encode(target / a_val)
    a_codes = elem.encode(a_val)
    words = [
        (np.asarray(x).astype(np.uint32) * 0x10001).astype(np.uint32)
        for x in (a_codes, b_codes, c_codes)
    ]
    got = run_elementwise([U32, U32, U32], U32, lambda x, y, z: t.Pair("fma", elem, x, y, z), words)
    xv, yv = decode(a_codes, elem), decode(b_codes, elem)
    with np.errstate(all="ignore"):
        want = elem.encode(xv * yv + c_val)  # used where b overflowed to inf
    for i in np.nonzero(np.isfinite(yv))[0]:
        want[i] = _round_fraction(Fraction(xv[i]) * Fraction(yv[i]) + Fraction(c_val[i]), elem)
    assert np.isfinite(yv).mean() > 0.9
    assert_float_codes(got & 0xFFFF, want, elem, "low half")
    assert_float_codes(got >> 16, want, elem, "high half")
