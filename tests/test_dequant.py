"""Conversion recipes of tilelang.lowering.dequant, compiled to thread-IR kernels and run
through the LLVM CPU backend, against tilelang.dtypes bit for bit (NaN as NaN).

Every code of every source type is converted at every position of its group; encoding
is checked over every f16 and bf16 bit pattern and over random and boundary f32/f64
values (ties, subnormal boundaries, max, overflow, inf, NaN).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import Lets

from tilelang import dtypes as d
from tilelang.ir import thread as t
from tilelang.lowering import dequant as dq
from tilelang.lowering.encode import encode_scalar
from tilelang.lowering.scalar_decode import decode_scalar
from tilelang.runtime.cpu import compile_cpu

I32, I64, U32 = d.i32, d.i64, d.u32
THREADS = 64
RNG = np.random.default_rng(20240607)

INTS = [d.int_type(bits, signed) for signed in (False, True) for bits in range(1, 9)]
SMALL_FLOATS = [d.float_type(e, bits - 1 - e) for bits in range(2, 9) for e in range(1, bits)]
SOURCES = INTS + SMALL_FLOATS
TARGETS = [d.f16, d.bf16, d.f32]
WIDE_CODES = [d.u16, d.i16, d.int_type(12, True), d.int_type(11, False), d.f16, d.bf16]
"""Codes of more than 8 bits: the scalar fallback only."""

SCALAR_ONLY = {
    (src.name, "f16")
    for src in SMALL_FLOATS
    if src.exponent_bits >= 5 and src != d.f8e5m2  # they must round (or overflow) to f16
}


def _thread_index() -> tuple[t.Name, list[t.Stmt]]:
    i = t.Name("i", I32)
    block = t.Binary("mul", t.BlockIndex(0), t.Imm(THREADS, I32))
    return i, [t.Let(i, t.Binary("add", block, t.ThreadIndex()))]


def _offset(name: str, i: t.Expr, nbytes: int) -> tuple[t.Name, t.Stmt]:
    offset = t.Name(name, I64)
    return offset, t.Let(offset, t.Binary("mul", t.Cvt(i, I64), t.Imm(nbytes, I64)))


def _at(base: t.Expr, byte: int) -> t.Expr:
    return t.Binary("add", base, t.Imm(byte, I64)) if byte else base


def _bitwise_equal(got: np.ndarray, expected: np.ndarray, dtype: d.DType) -> np.ndarray:
    same = got == expected
    if dtype.is_float:
        same |= np.isnan(dtype.decode(expected)) & np.isnan(dtype.decode(got))
    return same


def _assert_codes(got, expected, dtype: d.DType, inputs: np.ndarray, what: str) -> None:
    got, expected = np.asarray(got).astype(np.uint64), np.asarray(expected).astype(np.uint64)
    same = _bitwise_equal(got, expected, dtype)
    if not same.all():
        bad = np.nonzero(~same)[0][:6]
        raise AssertionError(
            f"{what}: {(~same).sum()} of {same.size} differ; inputs {inputs[bad].tolist()}: "
            f"got {[hex(v) for v in got[bad]]}, expected {[hex(v) for v in expected[bad]]}"
        )


def _launch(fn: t.ThreadFunction, args: dict[str, np.ndarray], count: int) -> None:
    assert count % THREADS == 0
    compile_cpu(fn).launch(args, grid=(count // THREADS,))


# --------------------------------------------------------------------------- groups


@pytest.mark.parametrize(
    ("src", "expected"),
    [(d.u4, (8, 1)), (d.u3, (32, 3)), (d.f6e3m2, (16, 3)), (d.u8, (4, 1)), (d.u1, (32, 1)),
     (d.i5, (32, 5)), (d.f4e2m1, (8, 1)), (d.f8e4m3, (4, 1)), (d.u16, (2, 1)),
     (d.int_type(12, False), (8, 3))],
)  # fmt: skip
def test_group(src, expected):
    assert dq.group(src) == expected


def test_group_rejects_wide_codes():
    with pytest.raises(ValueError, match="at most 16 bits"):
        dq.group(d.f32)


def test_recipe_table():
    """Every low-bit source has a vector recipe for every target, except ExMy with
    E ≥ 5 (f8e5m2 aside) to f16, which must round."""
    for src in SOURCES:
        for dst in TARGETS:
            assert dq.has_vector_recipe(src, dst) == ((src.name, dst.name) not in SCALAR_ONLY)
    for src in WIDE_CODES:
        assert not any(dq.has_vector_recipe(src, dst) for dst in TARGETS)
    assert not dq.has_vector_recipe(d.u4, d.f64)


def _group_codes(src: d.DType) -> np.ndarray:
    """[groups, elements] codes: every code at every position of a group."""
    elements, _ = dq.group(src)
    groups = -(-max(1 << src.bits, THREADS) // THREADS) * THREADS
    g, p = np.arange(groups)[:, None], np.arange(elements)[None, :]
    return ((g + p) % (1 << src.bits)).astype(np.uint64)


def _group_kernel(
    src: d.DType, dst: d.DType, positions: list[int] | None = None
) -> tuple[t.ThreadFunction, bool, list[t.Stmt]]:
    """One thread per group: load its words, dequantize_group, store the result words."""
    elements, words = dq.group(src)
    outputs = elements * dst.bits // 32
    i, body = _thread_index()
    x_offset, let_x = _offset("xo", i, 4 * words)
    y_offset, let_y = _offset("yo", i, 4 * outputs)
    body += [let_x, let_y]
    body += [t.GlobalLoad(t.Reg("w", 4 * k), 4, "x", _at(x_offset, 4 * k)) for k in range(words)]
    lets = Lets()
    inputs = [lets.let(t.Read("w", k, U32), "w") for k in range(words)]
    results, vectorized = dq.dequantize_group(lets, inputs, src, dst, positions)
    assert len(results) == outputs and all(r.dtype == U32 for r in results)
    body += lets.stmts
    body += [t.SetLocal("o", j, r) for j, r in enumerate(results)]
    body += [t.GlobalStore("y", _at(y_offset, 4 * j), t.Reg("o", 4 * j), 4) for j in range(outputs)]
    fn = t.ThreadFunction(
        f"dequant_{src}_{dst}",
        (t.Param("x", U32, True), t.Param("y", U32, True)),
        THREADS,
        (t.Imm(1, I32),),
        0,
        (t.Local("w", U32, words), t.Local("o", U32, outputs)),
        tuple(body),
    )
    return fn, vectorized, lets.stmts


def _run_group(src: d.DType, dst: d.DType, positions: list[int] | None = None) -> bool:
    """Element e of each group stored at code positions[e] of its bit stream."""
    codes = _group_codes(src)
    fn, vectorized, _ = _group_kernel(src, dst, positions)
    stored = codes.copy()
    if positions is not None:
        stored[:, positions] = codes
    packed = np.concatenate([d.pack_bits(row, src.bits) for row in stored]).view("<u4")
    out = np.zeros(codes.size * dst.bits // 32, dtype=np.uint32)
    _launch(fn, {"x": packed, "y": out}, codes.shape[0])
    got = out.view(np.uint16 if dst.bits == 16 else np.uint32)
    _assert_codes(got, d.convert(codes.ravel(), src, dst), dst, codes.ravel(), f"{src} -> {dst}")
    return vectorized


@pytest.mark.parametrize("dst", TARGETS, ids=str)
@pytest.mark.parametrize("src", SOURCES, ids=str)
def test_dequantize_group_every_code(src, dst):
    vectorized = _run_group(src, dst)
    assert vectorized == ((src.name, dst.name) not in SCALAR_ONLY)


@pytest.mark.parametrize("dst", TARGETS, ids=str)
@pytest.mark.parametrize("src", WIDE_CODES, ids=str)
def test_dequantize_group_wide_codes_fall_back(src, dst):
    assert not _run_group(src, dst)


def paired(src: d.DType) -> list[int]:
    """The positions `tilelang.ir.fragments.paired_codes` stores a group in, written from
    its docstring: in each 32-bit word of c codes, element 2j + h at code j + h·c/2."""
    elements, _ = dq.group(src)
    per_word = 32 // src.bits
    half = per_word // 2
    return [e - e % per_word + (e % per_word) // 2 + (e % 2) * half for e in range(elements)]


@pytest.mark.parametrize("dst", TARGETS, ids=str)
@pytest.mark.parametrize("src", [s for s in SOURCES if s.bits in (1, 2, 4)], ids=str)
def test_codes_paired_across_halves_convert_exactly(src, dst):
    assert _run_group(src, dst, paired(src)) == ((src.name, dst.name) not in SCALAR_ONLY)


@pytest.mark.parametrize("src", [d.u3, d.i5, d.f6e3m2, d.u4, d.i8, d.f8e4m3, d.f4e2m1], ids=str)
def test_codes_in_any_order_convert_exactly(src):
    elements, _ = dq.group(src)
    for dst in TARGETS:
        _run_group(src, dst, [int(p) for p in RNG.permutation(elements)])


@pytest.mark.parametrize(("src", "most"), [(d.u4, 9), (d.i4, 9), (d.u2, 17), (d.u1, 33)], ids=str)
def test_paired_codes_need_no_move_per_pair(src, most):
    """u4 -> f16 paired: the word is the window of pairs 0 and 1, one funnel prmt of
    it that of pairs 2 and 3, then one lop3 and one sub per pair: 9 per 8 codes."""
    _, _, stmts = _group_kernel(src, d.f16, paired(src))
    assert len(stmts) - dq.group(src)[1] <= most


@pytest.mark.parametrize("src", [d.f4e2m1, d.float_type(1, 2), d.float_type(3, 0)], ids=str)
def test_paired_4_bit_floats_to_f16_place_whole_words(src):
    """4-bit floats -> f16 paired: each code word's upper and lower codes are placed
    into bytes by 3 word instructions each (plus the shift of the lower codes), then one
    prmt and the bias product per pair: 15 per 8 codes, not 5 per pair."""
    _, _, stmts = _group_kernel(src, d.f16, paired(src))
    assert len(stmts) - dq.group(src)[1] <= 15


def _exprs(stmts):
    for stmt in stmts:
        for expr in t.stmt_exprs(stmt):
            yield from t.walk_expr(expr)


@pytest.mark.parametrize("src", SOURCES, ids=str)
def test_vector_recipes_are_bit_tricks(src):
    """Vector recipes use no conversions or selects: only integer/bit operations,
    prmt/lop3, Pair arithmetic and (for f32) one f32 operation per element."""
    for dst in TARGETS:
        if not dq.has_vector_recipe(src, dst):
            continue
        _, _, stmts = _group_kernel(src, dst)
        kinds = {type(e).__name__ for e in _exprs(stmts)}
        assert not kinds & {"Cvt", "Select", "Unary"}, (src, dst, kinds)
        elements, _ = dq.group(src)
        assert len(stmts) <= 8 * elements, (src, dst, len(stmts))


@pytest.mark.parametrize(
    ("src", "dst", "most"),
    [(d.u4, d.f16, 12), (d.i4, d.f16, 12), (d.u4, d.bf16, 13), (d.u8, d.f16, 4),
     (d.i8, d.f16, 5), (d.f8e5m2, d.f16, 2), (d.f8e4m3, d.f16, 11), (d.f4e2m1, d.f16, 22),
     (d.f4e2m1, d.bf16, 22)],
)  # fmt: skip
def test_vector_recipe_sizes(src, dst, most):
    """Instruction counts of the common recipes (statements per group), so that a
    change that makes them slower shows."""
    _, _, stmts = _group_kernel(src, dst)
    assert len(stmts) - dq.group(src)[1] <= most  # the loads of the words are not counted


# --------------------------------------------------------------------------- decode_scalar

DECODE_TARGETS = [d.f16, d.bf16, d.f32, d.f64, d.u8, d.i8, d.u16, d.i16, d.u32, d.i32, d.u64, d.i64]


def _decode_kernel(src: d.DType) -> t.ThreadFunction:
    """y_k[i] = decode_scalar(x[i], src, DECODE_TARGETS[k])."""
    i, body = _thread_index()
    offset, let = _offset("xo", i, 4)
    body += [let, t.GlobalLoad(t.Reg("c", 0), 4, "x", offset)]
    lets = Lets()
    code = lets.let(t.Read("c", 0, U32), "code")
    stores = []
    for k, dst in enumerate(DECODE_TARGETS):
        value = decode_scalar(lets, code, src, dst)
        assert value.dtype == dst
        y_offset, let_y = _offset(f"yo{k}", i, dst.bits // 8)
        stores += [
            t.SetLocal(f"v{k}", 0, value),
            let_y,
            t.GlobalStore(f"y{k}", y_offset, t.Reg(f"v{k}", 0), dst.bits // 8),
        ]
    body += lets.stmts + stores
    params = (t.Param("x", U32, True),) + tuple(
        t.Param(f"y{k}", dst, True) for k, dst in enumerate(DECODE_TARGETS)
    )
    locals_ = (t.Local("c", U32, 1),) + tuple(
        t.Local(f"v{k}", dst, 1) for k, dst in enumerate(DECODE_TARGETS)
    )
    return t.ThreadFunction(
        f"decode_{src}", params, THREADS, (t.Imm(1, I32),), 0, locals_, tuple(body)
    )


def _wide_codes(src: d.DType) -> np.ndarray:
    if src.bits <= 16:
        return np.arange(1 << src.bits, dtype=np.uint32)
    return RNG.integers(0, 1 << src.bits, 1 << 14, dtype=np.uint64).astype(np.uint32)


@pytest.mark.parametrize("src", SOURCES + WIDE_CODES + [d.f32, d.u32, d.i32], ids=str)
def test_decode_scalar_every_code(src):
    codes = _wide_codes(src)
    codes = np.resize(codes, -(-codes.size // THREADS) * THREADS)
    outs = {f"y{k}": np.zeros(codes.size, dst.storage) for k, dst in enumerate(DECODE_TARGETS)}
    _launch(_decode_kernel(src), {"x": codes, **outs}, codes.size)
    for k, dst in enumerate(DECODE_TARGETS):
        expected = d.convert(codes, src, dst)
        _assert_codes(outs[f"y{k}"], expected, dst, codes, f"decode {src} -> {dst}")


def test_decode_scalar_rejects_bad_types():
    with pytest.raises(ValueError, match="u1"):
        decode_scalar(Lets(), t.Imm(0, U32), d.u4, d.u1)
    with pytest.raises(ValueError, match="u32"):
        decode_scalar(Lets(), t.Imm(0, d.u8), d.u4, d.f16)
    with pytest.raises(ValueError, match="at most 32 bits"):
        decode_scalar(Lets(), t.Imm(0, U32), d.f64, d.f16)


# --------------------------------------------------------------------------- encode_scalar

ENCODE_TARGETS = SOURCES + [d.f16, d.bf16, d.f32, d.u16, d.i16, d.u32, d.i32]
ENCODE_INPUTS = [d.f32, d.f64, d.f16, d.bf16]
COUNT = 1 << 18


def _boundaries(dst: d.DType) -> np.ndarray:
    """Values where rounding decides: every value of dst, the ties between neighbours
    and their float64 neighbours, subnormal boundaries, max and overflow."""
    if dst.is_int:
        near = np.array([dst.min, dst.max, 0, 1, -1], dtype=np.float64)
        if dst.bits <= 16:
            near = np.arange(dst.min - 2, dst.max + 3, dtype=np.float64)
        values = [near, near + 0.5, near - 0.5, near + 0.25, near + 0.75]
        values += [np.nextafter(near + 0.5, np.inf), np.nextafter(near + 0.5, -np.inf)]
        values += [np.array([2.0**31, 2.0**32, 2.0**63, 2.0**64, 1e30])]
    else:
        finite = dst.decode(np.arange(1 << min(dst.bits, 16))).astype(np.float64)
        if dst.bits == 32:
            with np.errstate(invalid="ignore"):  # NaN patterns among the random ones
                finite = d.f32.decode(RNG.integers(0, 1 << 32, 1 << 14)).astype(np.float64)
        finite = np.unique(finite[np.isfinite(finite)])
        ties = (finite[1:] + finite[:-1]) / 2
        values = [finite, ties, np.nextafter(ties, np.inf), np.nextafter(ties, -np.inf)]
        tiny, top = dst.smallest_subnormal, dst.max
        values += [
            np.array([tiny / 2, tiny / 4, tiny * 0.75, tiny * 1.5, dst.smallest_normal * 0.999]),
            np.array(
                [top * (1 + dst.eps / 2), top * (1 + dst.eps / 4), top * (1 + dst.eps), top * 2]
            ),
            ties * (1 + 2.0**-40),
            ties * (1 - 2.0**-40),
        ]
    values.append(np.array([0.0, np.inf, np.nan, 1e300, 5e-324, 2.0**-149, 3.4e38, 1e-40]))
    both = np.concatenate(values)
    return np.concatenate([both, -both])


def _encode_inputs(dst: d.DType) -> dict[str, np.ndarray]:
    """COUNT values per input dtype."""
    boundary = _boundaries(dst)
    with np.errstate(over="ignore"):
        boundary32 = boundary.astype(np.float32)
    f32 = np.concatenate(
        [
            (np.arange(1 << 16, dtype=np.uint32) << 16).view(np.float32),  # every bf16
            boundary32,
            (np.arange(1 << 14, dtype=np.uint32) | 0x3F800000).view(np.float32),  # [1, 2) fine
            np.array([np.nan, -np.nan], np.float32),
        ]
    )
    f32 = np.concatenate(
        [f32, RNG.integers(0, 1 << 32, COUNT, dtype=np.uint64).astype(np.uint32).view(np.float32)]
    )
    spread = RNG.standard_normal(COUNT) * 2.0 ** RNG.integers(-160, 130, COUNT)
    f64 = np.concatenate([boundary, spread])
    all16 = np.arange(1 << 16, dtype=np.uint16)
    return {
        "f32": np.resize(f32[:COUNT], COUNT),
        "f64": np.resize(f64[:COUNT], COUNT),
        "f16": np.resize(all16, COUNT),
        "bf16": np.resize(all16, COUNT),
    }


def _encode_kernel(dst: d.DType) -> t.ThreadFunction:
    """y_k[i] = encode_scalar(x_k[i], dst) for each input dtype k."""
    i, body = _thread_index()
    lets = Lets()
    stores: list[t.Stmt] = []
    for k, source in enumerate(ENCODE_INPUTS):
        offset, let = _offset(f"xo{k}", i, source.bits // 8)
        body += [let, t.GlobalLoad(t.Reg(f"x{k}", 0), source.bits // 8, f"x{k}", offset)]
        value = lets.let(t.Read(f"x{k}", 0, source), "x")
        code = encode_scalar(lets, value, dst)
        assert code.dtype == U32
        y_offset, let_y = _offset(f"yo{k}", i, 4)
        stores += [
            t.SetLocal(f"y{k}", 0, code),
            let_y,
            t.GlobalStore(f"y{k}", y_offset, t.Reg(f"y{k}", 0), 4),
        ]
    body += lets.stmts + stores
    params = tuple(t.Param(f"x{k}", s, True) for k, s in enumerate(ENCODE_INPUTS))
    params += tuple(t.Param(f"y{k}", U32, True) for k in range(len(ENCODE_INPUTS)))
    locals_ = tuple(t.Local(f"x{k}", s, 1) for k, s in enumerate(ENCODE_INPUTS))
    locals_ += tuple(t.Local(f"y{k}", U32, 1) for k in range(len(ENCODE_INPUTS)))
    return t.ThreadFunction(
        f"encode_{dst}", params, THREADS, (t.Imm(1, I32),), 0, locals_, tuple(body)
    )


@pytest.mark.parametrize("dst", ENCODE_TARGETS, ids=str)
def test_encode_scalar(dst):
    inputs = _encode_inputs(dst)
    arrays = [inputs[s.name] for s in ENCODE_INPUTS]
    outs = [np.zeros(COUNT, np.uint32) for _ in ENCODE_INPUTS]
    args = {f"x{k}": a for k, a in enumerate(arrays)} | {f"y{k}": o for k, o in enumerate(outs)}
    _launch(_encode_kernel(dst), args, COUNT)
    for source, array, out in zip(ENCODE_INPUTS, arrays, outs, strict=True):
        values = array if source.bits >= 32 else source.decode(array)
        with np.errstate(invalid="ignore"):
            expected = dst.encode(values.astype(np.float64))
        _assert_codes(out, expected, dst, values, f"encode {source} -> {dst}")


def test_encode_rounds_f64_once():
    """1.25 + 2^-40 is above the tie between 1.0 and 1.5 of f4e2m1: 1.5 (through f32
    it would be the tie 1.25 and round to even, 1.0)."""
    lets = Lets()
    x = t.Name("x", d.f64)
    code = encode_scalar(lets, x, d.f4e2m1)
    fn_body = [
        t.GlobalLoad(t.Reg("x", 0), 8, "x", t.Imm(0, I64)),
        t.Let(x, t.Read("x", 0, d.f64)),
        *lets.stmts,
        t.SetLocal("y", 0, code),
        t.GlobalStore("y", t.Imm(0, I64), t.Reg("y", 0), 4),
    ]
    fn = t.ThreadFunction(
        "once",
        (t.Param("x", d.f64, True), t.Param("y", U32, True)),
        32,
        (t.Imm(1, I32),),
        0,
        (t.Local("x", d.f64, 1), t.Local("y", U32, 1)),
        tuple(fn_body),
    )
    out = np.zeros(1, np.uint32)
    compile_cpu(fn).launch({"x": np.array([1.25 + 2.0**-40]), "y": out}, grid=(1,))
    assert d.f4e2m1.decode(out)[0] == 1.5


def test_encode_scalar_from_integers():
    """Integer values: exact conversions (saturating to ints, rounding once to floats)."""
    values = np.array(
        [-(2**31), -300, -129, -128, -7, -1, 0, 1, 5, 6, 7, 127, 128, 255, 256, 2**31 - 1]
    )
    for dst in (d.u4, d.i4, d.u8, d.i8, d.f4e2m1, d.f8e4m3, d.f8e5m2, d.f16, d.bf16):
        lets = Lets()
        x = t.Name("x", I32)
        code = encode_scalar(lets, x, dst)
        body = [
            *_thread_index()[1],
            t.Let(t.Name("xo", I64), t.Binary("mul", t.Cvt(t.Name("i", I32), I64), t.Imm(4, I64))),
            t.GlobalLoad(t.Reg("x", 0), 4, "x", t.Name("xo", I64)),
            t.Let(x, t.Read("x", 0, I32)),
            *lets.stmts,
            t.SetLocal("y", 0, code),
            t.GlobalStore("y", t.Name("xo", I64), t.Reg("y", 0), 4),
        ]
        fn = t.ThreadFunction(
            f"from_int_{dst}",
            (t.Param("x", I32, True), t.Param("y", U32, True)),
            THREADS,
            (t.Imm(1, I32),),
            0,
            (t.Local("x", I32, 1), t.Local("y", U32, 1)),
            tuple(body),
        )
        inputs = np.resize(values, THREADS).astype(np.int32)
        out = np.zeros(THREADS, np.uint32)
        _launch(fn, {"x": inputs, "y": out}, THREADS)
        _assert_codes(out, dst.encode(inputs), dst, inputs, f"encode i32 -> {dst}")


def test_encode_scalar_rejects_bad_types():
    with pytest.raises(ValueError, match="at most 32 bits"):
        encode_scalar(Lets(), t.Imm(0.0, d.f32), d.f64)
    with pytest.raises(ValueError, match="u1"):
        encode_scalar(Lets(), t.Imm(0, d.u1), d.f8e4m3)
