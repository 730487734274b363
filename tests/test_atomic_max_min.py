"""`tl.atomic_max` and `tl.atomic_min` (boxes, masks, scatters), the fp8 amax example.

The oracle is written from the specification, independently of the code under test:
an element ends as the max (min) of its initial value and every term sent to it, where
integers compare as integers and floats as `tl.maximum` does (docs/design.md: a NaN is
ignored, -0 < +0, two NaNs give NaN). The order of the blocks' updates does not change
that result, so the interpreter and the CPU backend must both equal it bit for bit (a
NaN result compared as NaN). Then the text form, the verifier's and the language's
errors at the user's line, the LLVM atomics, and the CUDA source for sm_80 and sm_90
(integer `red.global.max/min`, a compare-and-swap loop for floats).
"""

import math
from dataclasses import replace

import numpy as np
import pytest
from conftest import ATOMIC_TEXT, NUMPY_TYPES, marked_line, statements, typed

import tilelang as tl
from tilelang import TileLangError
from tilelang.ir import thread as t
from tilelang.ir.parser import parse_function
from tilelang.ir.printer import print_function
from tilelang.ir.thread_text import print_thread_function
from tilelang.ir.thread_verify import ThreadIRError, verify_thread_function
from tilelang.ir.verify import IRVerifyError, verify
from tilelang.runtime.sass import disassemble, find_disassembler, opcodes

RNG = np.random.default_rng(20261207)
FLOATS = (tl.f16, tl.bf16, tl.f32, tl.f64)
INTEGERS = (tl.i32, tl.u32, tl.i64, tl.u64)


@tl.kernel(warps=4)
def combine_slices(
    x: tl.Tensor["T", "R", "M", "N"],
    y: tl.Tensor["T", "M", "N"],
    T: tl.constexpr = tl.f32,
    MAX: tl.constexpr = True,
    BM: tl.constexpr = 8,
    BN: tl.constexpr = 32,
):
    """y = max(y, x[r]) (min) for every r: R blocks update each element of y."""
    r, bm, bn = tl.blocks(R, tl.cdiv(M, BM), tl.cdiv(N, BN))
    tile = tl.reshape(tl.load(x, [r, bm * BM, bn * BN], [1, BM, BN]), [BM, BN])
    if MAX:
        tl.atomic_max(y, [bm * BM, bn * BN], tile)
    else:
        tl.atomic_min(y, [bm * BM, bn * BN], tile)


@tl.kernel(warps=2)
def combine_where_odd(
    x: tl.Tensor["T", "R", "N"],
    y: tl.Tensor["T", 1, "N"],
    T: tl.constexpr = tl.i32,
    MAX: tl.constexpr = True,
    BN: tl.constexpr = 64,
):
    """The update on the odd columns only (a mask), one row of x per block."""
    r, bn = tl.blocks(R, tl.cdiv(N, BN))
    tile = tl.load(x, [r, bn * BN], [1, BN])
    odd = (tl.arange(0, BN) % 2 == 1)[None, :]
    if MAX:
        tl.atomic_max(y, [0, bn * BN], tile, mask=odd)
    else:
        tl.atomic_min(y, [0, bn * BN], tile, mask=odd)


@tl.kernel(warps=2)
def combine_into_bins(
    x: tl.Tensor["T", "N"],
    bins: tl.Tensor[tl.i32, "N"],
    y: tl.Tensor["T", "B"],
    T: tl.constexpr = tl.f32,
    MAX: tl.constexpr = True,
    BN: tl.constexpr = 64,
):
    """y[bins[i]] = max(y[bins[i]], x[i]): a scatter; many i share a bin."""
    b = tl.blocks(tl.cdiv(N, BN))
    rows = tl.load(bins, [b * BN], [BN], fill=-1)  # -1: outside y, skipped
    values = tl.load(x, [b * BN], [BN])
    if MAX:
        tl.atomic_max(y, [rows], values)
    else:
        tl.atomic_min(y, [rows], values)


@tl.kernel(warps=4)
def amax(
    x: tl.Tensor[tl.f32, "R", "C"],
    out: tl.Tensor[tl.f32, 1],
    BR: tl.constexpr = 16,
    BC: tl.constexpr = 32,
):
    """The per-tensor absmax an fp8 quantizer scales by: each block's max of |x| over
    its box, combined across blocks by one atomic max (out starts at 0)."""
    br, bc = tl.blocks(tl.cdiv(R, BR), tl.cdiv(C, BC))
    tile = tl.load(x, [br * BR, bc * BC], [BR, BC])  # outside x: 0, which |x| >= 0 ignores
    block_max = tl.max(tl.max(tl.abs(tile), axis=1), axis=0)
    tl.atomic_max(out, [0], tl.reshape(block_max, [1]))


# --------------------------------------------------------------------------- the oracle


def spec_combine(a: float, b: float, is_max: bool) -> float:
    """max(a, b) (min) of two float values as the project defines it, from the text."""
    if math.isnan(b):
        return a
    if math.isnan(a):
        return b
    if a == b == 0:  # -0 < +0
        negative = (math.copysign(1, a) < 0, math.copysign(1, b) < 0)
        pick_negative = all(negative) if is_max else any(negative)
        return -0.0 if pick_negative else 0.0
    return max(a, b) if is_max else min(a, b)


def expected_codes(dtype, initial: np.ndarray, terms: list[np.ndarray], is_max: bool):
    """The codes of each element of `initial` combined with its terms (same shape)."""
    if dtype.is_int:
        values = [int(v) for v in dtype.decode(initial).ravel()]
        for term in terms:
            decoded = [int(v) for v in dtype.decode(term).ravel()]
            pick = max if is_max else min
            values = [pick(v, w) for v, w in zip(values, decoded, strict=True)]
        return dtype.encode(np.array(values, dtype=dtype.value_dtype)).reshape(initial.shape)
    values = [float(v) for v in dtype.decode(initial).astype(np.float64).ravel()]
    for term in terms:
        decoded = [float(v) for v in dtype.decode(term).astype(np.float64).ravel()]
        values = [spec_combine(v, w, is_max) for v, w in zip(values, decoded, strict=True)]
    return dtype.encode(np.array(values)).reshape(initial.shape)


def assert_codes_equal(got: np.ndarray, wanted: np.ndarray, dtype) -> None:
    """Bit for bit, except that any NaN equals any NaN (the interpreter keeps values)."""
    if dtype.is_float:
        got_nan = np.isnan(dtype.decode(got).astype(np.float64))
        wanted_nan = np.isnan(dtype.decode(wanted).astype(np.float64))
        np.testing.assert_array_equal(got_nan, wanted_nan)
        got, wanted = got[~got_nan], wanted[~wanted_nan]
    np.testing.assert_array_equal(got, wanted)


def special_values(dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Codes: integers over the whole range; floats normal, with ±0, ±inf, NaN and the
    smallest subnormal sprinkled in (where max/min semantics are decided)."""
    if dtype.is_int:
        if dtype.bits == 64:
            return RNG.integers(0, 2**64, shape, dtype=np.uint64).astype(dtype.storage)
        low, high = dtype.min, dtype.max
        return RNG.integers(low, high, shape, dtype=np.int64, endpoint=True).astype(dtype.storage)
    values = RNG.standard_normal(shape) * 4
    tiny = float(np.finfo(NUMPY_TYPES[dtype.name]).smallest_subnormal)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, tiny, -tiny])
    pick = RNG.random(shape) < 0.3
    values[pick] = RNG.choice(specials, int(pick.sum()))
    return dtype.encode(values)


def run_both(kernel, args, out: int, dtype, **constexprs):
    """The codes of argument `out` after the interpreter and after the CPU backend."""
    results = []
    for run in (kernel.interpret, kernel):
        arrays = [typed(a, dtype) if a.dtype != np.int32 or dtype.is_float else a for a in args]
        arrays = [a.copy() for a in arrays]
        run(*arrays, T=dtype, **constexprs)
        results.append(arrays[out].view(dtype.storage))
    return results


# --------------------------------------------------------------------------- laws


@pytest.mark.parametrize("is_max", [True, False], ids=["max", "min"])
@pytest.mark.parametrize("dtype", INTEGERS + FLOATS, ids=str)
def test_blocks_combine_to_the_max_or_min_of_every_term(dtype, is_max):
    r, m, n = 5, 21, 70  # boxes cross both tensor edges
    x, y = special_values(dtype, (r, m, n)), special_values(dtype, (m, n))
    if dtype.is_float:  # some elements see only NaNs: their result is NaN
        x[:, 0, :3] = y[0, :3] = dtype.encode(np.full(3, np.nan))
    wanted = expected_codes(dtype, y, list(x), is_max)
    interpreted, compiled = run_both(combine_slices, [x, y], 1, dtype, MAX=is_max)
    assert_codes_equal(interpreted, wanted, dtype)
    assert_codes_equal(compiled, wanted, dtype)
    if dtype.is_float:
        assert np.isnan(dtype.decode(compiled[0, :3]).astype(np.float64)).all()


@pytest.mark.parametrize("is_max", [True, False], ids=["max", "min"])
def test_negative_and_positive_zero_and_nan_are_decided_as_tl_maximum_decides(is_max):
    """One element, three blocks: the f32 cases the integer-bits trick gets wrong."""
    f32 = tl.f32
    cases = [  # (initial, the blocks' terms)
        (np.nan, [1.0, -2.0, np.nan]),  # a NaN in the tensor is replaced
        (-0.0, [0.0, -0.0, -0.0]),
        (0.0, [-0.0, -0.0, 0.0]),
        (-0.0, [-0.0, np.nan, -0.0]),
        (-np.inf, [np.nan, np.nan, np.nan]),
        (np.nan, [np.nan, np.nan, np.nan]),
    ]
    for initial, terms in cases:
        y = f32.encode(np.full((1, 1), initial))
        x = f32.encode(np.array(terms).reshape(3, 1, 1))
        wanted = expected_codes(f32, y, list(x), is_max)
        for got in run_both(combine_slices, [x, y], 1, f32, MAX=is_max):
            assert_codes_equal(got, wanted, f32)
    # The sign of a zero result, bit for bit.
    y = f32.encode(np.full((1, 1), -0.0))
    x = f32.encode(np.array([0.0, -0.0, -0.0]).reshape(3, 1, 1))
    for got in run_both(combine_slices, [x, y], 1, f32, MAX=is_max):
        assert got.view(np.uint32)[0, 0] == (0 if is_max else 0x80000000)


@pytest.mark.parametrize("is_max", [True, False], ids=["max", "min"])
@pytest.mark.parametrize("dtype", [tl.i32, tl.u64, tl.f32], ids=str)
def test_a_mask_leaves_unselected_elements_alone(dtype, is_max):
    x, y = special_values(dtype, (6, 100)), special_values(dtype, (1, 100))
    wanted = expected_codes(dtype, y, list(x[:, None, :]), is_max)
    wanted[0, 0::2] = y[0, 0::2]
    for got in run_both(combine_where_odd, [x, y], 1, dtype, MAX=is_max):
        assert_codes_equal(got, wanted, dtype)


@pytest.mark.parametrize("is_max", [True, False], ids=["max", "min"])
@pytest.mark.parametrize("dtype", [tl.i64, tl.u32, tl.f32, tl.bf16], ids=str)
def test_a_scatter_combines_every_element_sent_to_a_bin(dtype, is_max):
    n, nbins = 300, 11
    x = special_values(dtype, (n,))
    bins = RNG.integers(-2, nbins + 2, n).astype(np.int32)  # some outside: skipped
    y = special_values(dtype, (nbins,))
    terms = []
    for i in range(n):  # one term per element; max(v, v) = v leaves the other bins alone
        term = y.copy()
        if 0 <= bins[i] < nbins:
            term[bins[i]] = x[i]
        terms.append(term)
    wanted = expected_codes(dtype, y, terms, is_max)
    results = []
    for run in (combine_into_bins.interpret, combine_into_bins):
        xs, ys = typed(x, dtype), typed(y, dtype)
        run(xs, bins.copy(), ys, T=dtype, MAX=is_max)
        results.append(ys.view(dtype.storage))
    for got in results:
        assert_codes_equal(got, wanted, dtype)


def test_the_fp8_amax_of_a_tensor_is_the_max_of_its_absolute_values():
    for rows, cols in ((100, 48), (16, 8), (33, 64)):
        x = (RNG.standard_normal((rows, cols)) * 3).astype(np.float32)
        x[RNG.integers(0, rows), RNG.integers(0, cols)] = -50.0  # the absmax is negative
        for run in (amax.interpret, amax):
            out = np.zeros(1, np.float32)
            run(x, out)
            assert out[0] == np.max(np.abs(x)) == 50.0


# --------------------------------------------------------------------------- IR


def test_the_text_form_round_trips_and_the_verifier_checks_op_and_dtype():
    for line in (
        "atomic max %y[0:i32], %v mask(%m)",
        "atomic min %y[0:i32], %v",
        "scatter_atomic max %y[0:i32], %i, axis=0, %v mask(%m)",
    ):
        fn = parse_function(ATOMIC_TEXT.replace("T", "f32").replace("LINE", line))
        verify(fn)
        assert line in print_function(fn)
        assert print_function(parse_function(print_function(fn))) == print_function(fn)
    for dtype, line, message in (
        ("f32", "atomic mul %y[0:i32], %v", "expected an atomic op of add, max, min"),
        ("u8", "atomic max %y[0:i32], %v", "found a tensor of u8"),
        ("i16", "scatter_atomic min %y[0:i32], %i, axis=0, %v", "found a tensor of i16"),
    ):
        with pytest.raises(IRVerifyError) as info:
            verify(parse_function(ATOMIC_TEXT.replace("T", dtype).replace("LINE", line)))
        assert str(info.value).startswith("user.py:7:5:"), str(info.value)
        assert message in str(info.value)


def test_the_lowering_keeps_the_op_and_the_thread_ir_checks_it():
    compiled = combine_slices.compile(T=tl.i32, MAX=False)
    ops = {s.op for s in statements(compiled, t.Atomic)}
    assert ops == {"min"}
    add = t.Atomic("y", t.Imm(8, tl.i64), t.Reg("r", 4), 4, tl.f32, None, "max")
    params = (t.Param("y", tl.f32, True),)
    local = (t.Local("r", tl.f32, 4),)
    fn = t.ThreadFunction("k", params, 32, (t.Imm(1, tl.i32),), 0, local, (add,))
    verify_thread_function(fn)
    assert "atomic.max.f32.4 y[8:i64] <- r@4" in print_thread_function(fn)
    for bad, message in (
        (replace(add, op="mul"), "no atomic 'mul'"),
        (replace(add, dtype=tl.u8, width=1), "no atomic max of u8"),
    ):
        with pytest.raises(ThreadIRError, match=message):
            verify_thread_function(replace(fn, body=(bad,)))


# --------------------------------------------------------------------------- errors


def test_errors_name_the_operation_and_point_at_the_users_line():
    @tl.kernel
    def wrong_dtype(y: tl.Tensor["T", "N"], T: tl.constexpr = tl.u8):
        tl.blocks(1)
        tl.atomic_max(y, [0], tl.full([32], 1, T))  # <- error

    @tl.kernel
    def wrong_value(y: tl.Tensor[tl.f32, "N"]):
        tl.blocks(1)
        tl.atomic_min(y, [0], tl.full([32], 1, tl.f16))  # <- error

    for kernel, fragments in (
        (wrong_dtype, ("tl.atomic_max into y, a tensor of u8", "f16, bf16, f32")),
        (wrong_value, ("tl.atomic_min of a f16 tile into y", "convert it with .to(tl.f32)")),
    ):
        with pytest.raises(TileLangError) as info:
            kernel.specialize()
        assert info.value.loc.line == marked_line(kernel), str(info.value)
        for fragment in fragments:
            assert fragment in str(info.value), str(info.value)


# --------------------------------------------------------------------------- backends


@pytest.mark.parametrize(
    "dtype, is_max, wanted",
    [
        (tl.i32, True, "atomicrmw max ptr"),
        (tl.u32, True, "atomicrmw umax ptr"),
        (tl.i64, False, "atomicrmw min ptr"),
        (tl.u64, False, "atomicrmw umin ptr"),
        (tl.f32, True, "cmpxchg ptr"),
    ],
    ids=str,
)
def test_the_cpu_backend_uses_llvm_atomics(dtype, is_max, wanted):
    llvm = combine_slices.compile(T=dtype, MAX=is_max).cpu.llvm_ir
    assert wanted in llvm
    assert "atomicrmw add" not in llvm


# (dtype, max?) -> the PTX of a [16, 128] tile's update, on sm_80 and sm_90 alike.
PTX_FORMS = {
    ("i32", True): "red.global.max.s32",
    ("u32", False): "red.global.min.u32",
    ("i64", False): "red.global.min.s64",
    ("u64", True): "red.global.max.u64",
    ("f32", True): "atom.global.cas.b32",
    ("f64", False): "atom.global.cas.b64",
    ("bf16", True): "atom.global.cas.b16",
}


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("key", sorted(PTX_FORMS), ids=str)
def test_cuda_max_and_min_are_reductions_or_cas_loops(key, arch):
    name, is_max = key
    # 16 bf16 CAS loops a thread spill 8 bytes on sm_90 (ptxas's 32-register cap): 8 do not.
    wide = 64 if tl.dtype(name).bits == 16 else 128
    compiled = combine_slices.compile(target=arch, T=tl.dtype(name), MAX=is_max, BM=16, BN=wide)
    resources = compiled.resources
    assert resources.spill_store_bytes == 0 and resources.local_bytes == 0
    ptx = compiled.ptx
    assert PTX_FORMS[key] in ptx
    assert "st.global" not in ptx  # the output is only ever updated atomically
    assert "red.global.add" not in ptx
    if find_disassembler() is not None:
        ops = opcodes(disassemble(compiled.cubin))
        word = "MAX" if is_max else "MIN"
        if tl.dtype(name).is_int:
            assert any(op.startswith("RED") and word in op for op in ops), sorted(ops)
        else:
            assert any(op.startswith("ATOMG.E.CAS") for op in ops), sorted(ops)
