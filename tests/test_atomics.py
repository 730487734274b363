"""`tl.atomic_add` and the atomic merge of packed sub-byte stores.

Interpreter and CPU backend against numpy references written from the semantics:
integer sums bit-exact (wrapping), float sums within the bound of R roundings
(|error| <= R·u·Σ|terms|, u the dtype's unit roundoff), since the order of additions is
the backend's; masks, boxes partly or wholly outside the tensor, replicated layouts,
several host threads. Then the CUDA source: the `red` instructions each dtype needs
(NVRTC for sm_80 and sm_90, SASS where a disassembler is installed), no spills; and the
verifier's errors at the user's line. Last, stores of u3/u4 codes whose bytes are split
between blocks: atomic merges, correct with blocks on several host threads.
"""

from dataclasses import replace

import numpy as np
import pytest
from conftest import marked_line, statements, typed

import tilelang as tl
from tilelang import TileLangError
from tilelang.ir import thread as t
from tilelang.ir.parser import parse_function
from tilelang.ir.thread_text import print_thread_function
from tilelang.ir.thread_verify import ThreadIRError, verify_thread_function
from tilelang.ir.verify import IRVerifyError, verify
from tilelang.runtime.sass import disassemble, find_disassembler, opcodes

RNG = np.random.default_rng(20240611)
FLOATS = (tl.f16, tl.bf16, tl.f32, tl.f64)
INTEGERS = (tl.i32, tl.u32, tl.i64, tl.u64)
UNIT_ROUNDOFF = {"f16": 2.0**-11, "bf16": 2.0**-8, "f32": 2.0**-24, "f64": 2.0**-53}


@tl.kernel(warps=4)
def add_slices(
    x: tl.Tensor["T", "R", "M", "N"],
    y: tl.Tensor["T", "M", "N"],
    T: tl.constexpr = tl.f32,
    BM: tl.constexpr = 8,
    BN: tl.constexpr = 32,
):
    """y += x[r] for every r: R blocks add into each element of y."""
    r, bm, bn = tl.blocks(R, tl.cdiv(M, BM), tl.cdiv(N, BN))
    tile = tl.reshape(tl.load(x, [r, bm * BM, bn * BN], [1, BM, BN]), [BM, BN])
    tl.atomic_add(y, [bm * BM, bn * BN], tile)


@tl.kernel(warps=2)
def add_where_positive(
    x: tl.Tensor["T", "R", "N"],
    y: tl.Tensor["T", 1, "N"],
    T: tl.constexpr = tl.f32,
    BN: tl.constexpr = 64,
):
    """y += x[r] where x[r] > 0, one row per block."""
    r, bn = tl.blocks(R, tl.cdiv(N, BN))
    tile = tl.load(x, [r, bn * BN], [1, BN])
    tl.atomic_add(y, [0, bn * BN], tile, mask=tile > 0)


@tl.kernel(warps=4)
def add_even_columns(
    x: tl.Tensor["T", "R", "M", "N"],
    y: tl.Tensor["T", "M", "N"],
    T: tl.constexpr = tl.i32,
    BM: tl.constexpr = 8,
    BN: tl.constexpr = 16,
):
    """y += x[r] on the even columns only: a [1, BN] mask broadcast over the rows."""
    r, bm, bn = tl.blocks(R, tl.cdiv(M, BM), tl.cdiv(N, BN))
    tile = tl.reshape(tl.load(x, [r, bm * BM, bn * BN], [1, BM, BN]), [BM, BN])
    even = (tl.arange(0, BN) % 2 == 0)[None, :]
    tl.atomic_add(y, [bm * BM, bn * BN], tile, mask=even)


@tl.kernel(warps=1)
def add_shifted_boxes(
    x: tl.Tensor[tl.i32, "B", 40], y: tl.Tensor[tl.i32, "N"], first: tl.i32, step: tl.i32
):
    """Block b adds row b of x at offset first + b·step: boxes overlap, and run off
    either end of y or miss it."""
    b = tl.blocks(B)
    tl.atomic_add(y, [first + b * step], tl.reshape(tl.load(x, [b, 0], [1, 40]), [40]))


@tl.kernel(warps=4)
def count_blocks(y: tl.Tensor[tl.u32, "N"], BLOCKS: tl.constexpr = 9):
    """Every block adds 1 to each of y's first 4 elements (a tile of 4 over 128 threads:
    replicated 32 times, added once)."""
    tl.blocks(BLOCKS)
    tl.atomic_add(y, [0], tl.full([4], 1, tl.u32))


# --------------------------------------------------------------------------- references


def random_values(dtype: tl.DType, shape: tuple[int, ...]) -> np.ndarray:
    """Codes of random values: integers over the whole range (sums wrap), floats normal."""
    if dtype.is_int:
        return (
            RNG.integers(dtype.min, dtype.max, shape, dtype=np.int64, endpoint=True).astype(
                dtype.storage
            )
            if dtype.bits < 64
            else RNG.integers(0, 2**64, shape, dtype=np.uint64)
        )
    return dtype.encode(RNG.standard_normal(shape) * 4)


def wrapped_sum(initial: np.ndarray, terms: np.ndarray, dtype: tl.DType) -> np.ndarray:
    """The codes of initial + Σ terms (over axis 0) modulo 2^bits, in Python integers."""
    values = [int(v) for v in initial.ravel()]
    for row in terms.reshape(terms.shape[0], -1):
        values = [v + int(c) for v, c in zip(values, row, strict=True)]
    mask = (1 << dtype.bits) - 1
    return np.array([v & mask for v in values], dtype=dtype.storage).reshape(initial.shape)


def assert_float_sum(got: np.ndarray, initial: np.ndarray, terms: np.ndarray, dtype) -> None:
    """`got` (codes) is initial + Σ terms within R roundings of the dtype."""
    values = [initial, *(term.reshape(initial.shape) for term in terms)]
    decoded = [dtype.decode(v).astype(np.float64) for v in values]
    exact = np.sum(decoded, axis=0)
    bound = len(terms) * UNIT_ROUNDOFF[dtype.name] * np.sum(np.abs(decoded), axis=0)
    error = np.abs(dtype.decode(got).astype(np.float64) - exact)
    assert np.all(error <= bound), float((error - bound).max())


def run_both(kernel, args: list[np.ndarray], out: int, dtype: tl.DType, **constexprs):
    """The codes of argument `out` after the interpreter and after the CPU backend run
    `kernel` on `args` (codes of `dtype`)."""
    results = []
    for run in (kernel.interpret, kernel):
        arrays = [typed(a, dtype) for a in args]
        run(*arrays, T=dtype, **constexprs)
        results.append(arrays[out].view(dtype.storage))
    return results


# --------------------------------------------------------------------------- sums


@pytest.mark.parametrize("dtype", INTEGERS, ids=str)
def test_integer_sums_of_many_blocks_are_exact_and_wrap(dtype):
    r, m, n = 7, 21, 70  # boxes cross both tensor edges
    x, y = random_values(dtype, (r, m, n)), random_values(dtype, (m, n))
    expected = wrapped_sum(y, x, dtype)
    interpreted, compiled = run_both(add_slices, [x, y], 1, dtype)
    np.testing.assert_array_equal(interpreted, expected)
    np.testing.assert_array_equal(compiled, expected)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_float_sums_of_many_blocks_are_within_r_roundings(dtype):
    r, m, n = 9, 19, 66
    x, y = random_values(dtype, (r, m, n)), random_values(dtype, (m, n))
    interpreted, compiled = run_both(add_slices, [x, y], 1, dtype)
    assert_float_sum(interpreted, y, x, dtype)
    assert_float_sum(compiled, y, x, dtype)


def test_the_interpreter_adds_in_grid_order_rounding_each_time():
    """f16: one tile per block, blocks in row-major grid order, one rounding per add."""
    x = np.array([[[2048.0]], [[1.0]], [[1.0]]], np.float16)  # 2048 + 1 rounds to 2048
    y = np.zeros((1, 1), np.float16)
    add_slices.interpret(x, y, T=tl.f16)
    assert y[0, 0] == 2048.0  # not 2050: each addition rounded
    y = np.zeros((1, 1), np.float16)
    add_slices.interpret(x[::-1].copy(), y, T=tl.f16)
    assert y[0, 0] == 2050.0


@pytest.mark.parametrize("dtype", [tl.f32, tl.bf16, tl.i64], ids=str)
def test_masked_additions_skip_unselected_elements(dtype):
    r, n = 6, 150
    x, y = random_values(dtype, (r, n)), random_values(dtype, (1, n))
    keep = dtype.decode(x) > 0
    if dtype.is_int:
        zero = np.zeros_like(x)
        expected = wrapped_sum(y, np.where(keep, x, zero), dtype)
    interpreted, compiled = run_both(add_where_positive, [x, y], 1, dtype)
    for got in (interpreted, compiled):
        if dtype.is_int:
            np.testing.assert_array_equal(got, expected)
        else:
            assert_float_sum(got, y, np.where(keep, x, dtype.encode(np.zeros(1))), dtype)
        untouched = ~keep.any(axis=0)
        np.testing.assert_array_equal(got[0, untouched], y[0, untouched])


def test_a_masked_addition_keeps_negative_zero():
    """-0.0 stays -0.0 where nothing is added (+0.0 would turn it into +0.0): a partly
    selected run adds element by element, never touching its unselected elements, and
    a wholly selected run still adds as one vector."""
    for dtype in (tl.f16, tl.f32):
        signs = np.where(np.arange(512) % 3 == 0, 1.0, -1.0)
        x = dtype.encode(np.stack([signs, signs]))
        y = dtype.encode(np.full((1, 512), -0.0))
        compiled = add_where_positive.compile(T=dtype, BN=512)
        assert max(s.width for s in statements(compiled, t.Atomic)) >= 8  # vectors
        expected = dtype.encode(np.where(signs > 0, 2.0, -0.0)[None, :])
        for got in run_both(add_where_positive, [x, y], 1, dtype, BN=512):
            np.testing.assert_array_equal(got, expected)


def test_a_broadcast_mask_selects_columns():
    r, m, n = 5, 11, 40
    x, y = random_values(tl.i32, (r, m, n)), np.zeros((m, n), np.uint32)  # codes
    expected = wrapped_sum(y, x, tl.i32)
    expected[:, 1::2] = 0
    interpreted, compiled = run_both(add_even_columns, [x, y], 1, tl.i32)
    np.testing.assert_array_equal(interpreted, expected)
    np.testing.assert_array_equal(compiled, expected)


def test_boxes_outside_the_tensor_are_skipped():
    blocks, n, first, step = 6, 120, -13, 37
    x = RNG.integers(1, 1000, (blocks, 40)).astype(np.int32)
    expected = np.full(n, 3, np.int64)
    for b in range(blocks):
        for j in range(40):
            if 0 <= first + b * step + j < n:
                expected[first + b * step + j] += x[b, j]
    for kernel in (add_shifted_boxes.interpret, add_shifted_boxes):
        backing = np.full(n + 64, -7, np.int32)
        y = backing[16 : 16 + n]  # a view: nothing outside it may change
        y[:] = 3
        kernel(x, y, first, step)
        np.testing.assert_array_equal(y, expected)
        assert np.all(backing[:16] == -7) and np.all(backing[16 + n :] == -7)


def test_a_replicated_tile_adds_once_per_block():
    for kernel in (count_blocks.interpret, count_blocks):
        y = np.full(6, 100, np.uint32)
        kernel(y, BLOCKS=9)
        np.testing.assert_array_equal(y, [109, 109, 109, 109, 100, 100])


def test_blocks_on_several_host_threads_lose_no_addition():
    """4096 blocks add into one tile, the blocks split over host threads."""
    r, m, n = 4096, 8, 32
    x = RNG.integers(-(2**31), 2**31, (r, m, n)).astype(np.int32)
    expected = wrapped_sum(np.zeros((m, n), np.uint32), x.view(np.uint32), tl.i32)
    compiled = add_slices.compile(assume=None, T=tl.i32)
    for workers in (2, 4):
        y = np.zeros((m, n), np.int32)
        compiled.cpu.launch({"x": x, "y": y, "R": r, "M": m, "N": n}, workers=workers)
        np.testing.assert_array_equal(y.view(np.uint32), expected)
    xf = RNG.standard_normal((r, m, n)).astype(np.float32)
    yf = np.zeros((m, n), np.float32)
    add_slices.compile(assume=None, T=tl.f32).cpu.launch(
        {"x": xf, "y": yf, "R": r, "M": m, "N": n}, workers=4
    )
    assert_float_sum(yf.view(np.uint32), np.zeros((m, n), np.uint32), xf.view(np.uint32), tl.f32)


@pytest.mark.parametrize(
    ("dtype", "wanted"),
    [
        (tl.i32, "atomicrmw add ptr"),
        (tl.u64, "atomicrmw add ptr"),
        (tl.f32, "cmpxchg ptr"),
        (tl.bf16, "cmpxchg ptr"),
    ],
    ids=str,
)
def test_the_cpu_backend_adds_with_atomic_instructions(dtype, wanted):
    """Blocks run on several host threads: the additions must be LLVM atomics."""
    llvm = add_slices.compile(T=dtype).cpu.llvm_ir
    assert wanted in llvm
    element = "i16" if dtype.bits == 16 else f"i{dtype.bits}"
    if wanted.startswith("cmpxchg"):
        assert f"load atomic {element}" in llvm


# --------------------------------------------------------------------------- CUDA


def cuda_build(kernel, arch: str, **constexprs):
    compiled = kernel.compile(target=arch, **constexprs)
    resources = compiled.resources
    assert resources.spill_store_bytes == 0 and resources.local_bytes == 0
    return compiled


# dtype -> (the PTX of an [16, 128] tile's addition on sm_80, on sm_90). sm_90 adds
# 16-byte vectors; sm_80 has no vector reductions and no bf16 ones (a CAS loop).
RED_FORMS = {
    "f32": ("red.global.add.f32", "red.global.add.v4.f32"),
    "f16": ("red.global.add.noftz.f16x2", "red.global.add.noftz.v4.f16x2"),
    "bf16": ("atom.global.cas.b32", "red.global.add.noftz.v4.bf16x2"),
    "f64": ("red.global.add.f64", "red.global.add.f64"),
    "i32": ("red.global.add.u32", "red.global.add.u32"),
    "u64": ("red.global.add.u64", "red.global.add.u64"),
}


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("name", sorted(RED_FORMS))
def test_cuda_atomic_additions_are_reductions(name, arch):
    compiled = cuda_build(add_slices, arch, T=tl.dtype(name), BM=16, BN=128)
    ptx = compiled.ptx
    assert RED_FORMS[name][arch == "sm_90"] in ptx
    assert "st.global" not in ptx  # the output is only ever added to
    if find_disassembler() is not None:
        ops = opcodes(disassemble(compiled.cubin))
        wanted = "ATOMG.E.CAS" if (name, arch) == ("bf16", "sm_80") else "RED"
        assert any(op.startswith(wanted) for op in ops), sorted(ops)


@tl.kernel(warps=1)
def add_ones_at(y: tl.Tensor["T", "N"], first: tl.i32, T: tl.constexpr = tl.f16):
    """y[first : first + 64] += 1: two elements per thread at an offset of unknown
    alignment, so each element is added alone."""
    tl.blocks(1)
    tl.atomic_add(y, [first], tl.full([64], 1.0, T))


def test_elements_of_unknown_alignment_add_one_at_a_time():
    for dtype in (tl.f16, tl.bf16):
        for run in (add_ones_at.interpret, add_ones_at):
            y = typed(dtype.encode(np.full(100, 0.5)), dtype)
            run(y, 3, T=dtype)
            expected = np.where((np.arange(100) >= 3) & (np.arange(100) < 67), 1.5, 0.5)
            np.testing.assert_array_equal(y.astype(np.float64), expected)
        widths = {s.width for s in statements(add_ones_at.compile(T=dtype), t.Atomic)}
        assert widths == {2}


def test_cuda_single_f16_and_bf16_elements():
    """An f16 alone (no aligned pair) is `red...f16`; bf16 on sm_80 a 16-bit CAS loop."""
    for arch, dtype, wanted in (
        ("sm_80", tl.f16, "red.global.add.noftz.f16 "),
        ("sm_90", tl.bf16, "red.global.add.noftz.bf16 "),
        ("sm_80", tl.bf16, "atom.global.cas.b16"),
    ):
        assert wanted in cuda_build(add_ones_at, arch, T=dtype).ptx, (arch, dtype)


# --------------------------------------------------------------------------- errors


def test_an_unsupported_dtype_is_reported_at_the_users_line():
    @tl.kernel
    def k(y: tl.Tensor["T", "N"], T: tl.constexpr = tl.u8):
        tl.blocks(1)
        tl.atomic_add(y, [0], tl.full([32], 1, T))  # <- error

    for dtype in (tl.u8, tl.i16, tl.u4, tl.f8e4m3):
        with pytest.raises(TileLangError) as info:
            k.specialize(T=dtype)
        assert info.value.loc.line == marked_line(k)
        assert f"a tensor of {dtype}" in str(info.value) and "f16, bf16, f32" in str(info.value)
    for dtype in (tl.f16, tl.bf16, tl.f32, tl.f64, tl.i32, tl.u32, tl.i64, tl.u64):
        k.specialize(T=dtype)  # every atomic dtype builds


def test_a_mask_must_be_a_u1_tile_of_a_broadcastable_shape():
    @tl.kernel
    def wrong_dtype(y: tl.Tensor[tl.f32, "N"]):
        tl.blocks(1)
        ones = tl.full([32], 1.0, tl.f32)
        tl.atomic_add(y, [0], ones, mask=ones)  # <- error

    @tl.kernel
    def wrong_shape(y: tl.Tensor[tl.f32, "N"]):
        tl.blocks(1)
        ones = tl.full([32], 1.0, tl.f32)
        tl.atomic_add(y, [0], ones, mask=tl.arange(0, 16) > 3)  # <- error

    @tl.kernel
    def wrong_value(y: tl.Tensor[tl.f32, "N"]):
        tl.blocks(1)
        tl.atomic_add(y, [0], tl.full([32], 1, tl.i32))  # <- error

    for kernel, fragment in (
        (wrong_dtype, "the mask must be a u1 tile"),
        (wrong_shape, "cannot broadcast a tile of shape [16] to [32]"),
        (wrong_value, "convert it with .to(tl.f32)"),
    ):
        with pytest.raises(TileLangError) as info:
            kernel.specialize()
        assert info.value.loc.line == marked_line(kernel), str(info.value)
        assert fragment in str(info.value)


HEADER = (
    "kernel k(%y: tensor<T, [N]>) sizes(%N: i32) warps(1) {\n"
    "  %b = blocks 1:i32 : i32\n"
    "  %v = full 1:T : tile<T, [32]>\n"
)


def verify_text(dtype: str, mask: str = "") -> None:
    body = f'  atomic add %y[0:i32], %v{mask}  loc("user.py":7:5)\n}}\n'
    verify(parse_function(HEADER.replace("T", dtype) + body))


def test_the_verifier_rejects_atomics_it_cannot_do_at_the_instruction():
    for dtype in ("u8", "i16", "u3", "f8e5m2"):
        with pytest.raises(IRVerifyError) as info:
            verify_text(dtype)
        message = str(info.value)
        assert message.startswith("user.py:7:5: atomic:"), message
        assert f"found a tensor of {dtype}" in message
    verify_text("bf16")
    with pytest.raises(IRVerifyError, match="expected a mask of u1"):
        verify_text("f32", " mask(%v)")


# --------------------------------------------------------------------------- thread IR

I32, I64, U32 = tl.i32, tl.i64, tl.u32


def merge_codes_function(bits: int) -> t.ThreadFunction:
    """Thread k merges its `bits`-bit code (k·5 mod 2^bits) at element k of a packed byte
    buffer, with garbage above the mask in its value (which must be ignored)."""
    tid = t.ThreadIndex()
    bit = t.Name("bit", I64)
    shift = t.Name("shift", U32)
    code = t.Binary(
        "and", t.Bitcast(t.Binary("mul", tid, t.Imm(5, I32)), U32), t.Imm(2**bits - 1, U32)
    )
    body = (
        t.Let(bit, t.Binary("mul", t.Cvt(tid, I64), t.Imm(bits, I64))),
        t.Let(shift, t.Cvt(t.Binary("and", bit, t.Imm(7, I64)), U32)),
        t.AtomicMerge(
            "out",
            t.Binary("shr", bit, t.Imm(3, I64)),
            t.Binary("or", t.Binary("shl", code, shift), t.Imm(0xFFFF0000, U32)),
            t.Binary("shl", t.Imm(2**bits - 1, U32), shift),
        ),
    )
    params = (t.Param("out", tl.u8, True),)
    return t.ThreadFunction("merge", params, 64, (t.Imm(1, I32),), 0, (), body)


@pytest.mark.parametrize("bits", [1, 3, 4, 5, 7])
def test_atomic_merges_of_neighbouring_codes_keep_every_code(bits):
    from tilelang.runtime.cpu import compile_cpu

    fn = merge_codes_function(bits)
    verify_thread_function(fn)
    n = 64 * bits // 8
    backing = np.full(n + 8, 0xA5, np.uint8)
    out = backing[:n]
    compile_cpu(fn).launch({"out": out})
    codes = (np.arange(64) * 5) % 2**bits
    expected = tl.pack_codes(codes.astype(np.uint8), tl.dtype(f"u{bits}")).data
    np.testing.assert_array_equal(out, expected)
    assert np.all(backing[n:] == 0xA5)  # the byte after the last code is not written


def test_thread_ir_atomics_print_and_verify():
    add = t.Atomic("y", t.Imm(8, I64), t.Reg("r", 4), 4, tl.f16, t.Name("p", tl.u1))
    merge = t.AtomicMerge("y", t.Imm(3, I64), t.Imm(5, U32), t.Imm(0x70, U32))
    params = (t.Param("y", tl.f16, True),)
    body = (t.Let(t.Name("p", tl.u1), t.Binary("lt", t.ThreadIndex(), t.Imm(9, I32))), add, merge)
    local = (t.Local("r", tl.f16, 4),)
    fn = t.ThreadFunction("k", params, 32, (t.Imm(1, I32),), 0, local, body)
    verify_thread_function(fn)
    text = print_thread_function(fn)
    assert "atomic.add.f16.4 y[8:i64] <- r@4 if %p" in text
    assert "atomic.merge y[3:i64] <- 5:u32 mask 112:u32" in text
    assert t.written_tensors(fn.body) == {"y"}
    for bad, message in (
        (replace(add, dtype=tl.u8), "no atomic addition of u8"),
        (replace(add, width=6), "6 bytes are not a power-of-two number of f16"),
        (replace(add, width=32), "an access of 32 bytes"),
        (replace(add, dtype=tl.f32, width=2), "not a power-of-two number of f32"),
        (replace(merge, mask=t.Imm(0x10000, U32)), "beyond two bytes"),
        (replace(merge, value=t.Imm(5, I32)), "the merged value has dtype i32"),
    ):
        with pytest.raises(ThreadIRError, match=message):
            verify_thread_function(replace(fn, body=(*body[:1], bad)))


# --------------------------------------------------------------------------- packed stores


@tl.kernel(warps=1)
def scatter_columns(
    x: tl.Tensor[tl.u8, "R", "C"],
    out: tl.Tensor["T", "R", "C"],
    T: tl.constexpr = tl.u4,
    BR: tl.constexpr = 256,
):
    """Column c of x, as T codes, into column c of out. Blocks of the first half of the
    grid write the even columns, the second half the odd ones: host threads that split
    the grid write the two halves of the same bytes at the same time."""
    r, b = tl.blocks(tl.cdiv(R, BR), C)
    half = C // 2
    c = (b % half) * 2 + b // half
    tl.store(out, [r * BR, c], tl.load(x, [r * BR, c], [BR, 1]).to(T))


@tl.kernel(warps=1)
def store_runs(
    x: tl.Tensor[tl.u8, "N"],
    out: tl.Tensor["T", "N"],
    T: tl.constexpr = tl.u3,
    B: tl.constexpr = 12,
):
    """Runs of B codes per block: for u3 and B = 12, every other block edge is mid-byte."""
    b = tl.blocks(tl.cdiv(N, B))
    tl.store(out, [b * B], tl.load(x, [b * B], [B]).to(T))


@pytest.mark.parametrize("dtype", [tl.u4, tl.u3], ids=str)
def test_codes_of_one_byte_from_blocks_on_several_host_threads(dtype):
    rows, cols = 1 << 14, 32  # a lost update is rare on a CPU; the IR test below is exact
    codes = RNG.integers(0, 2**dtype.bits, (rows, cols)).astype(np.uint8)
    compiled = scatter_columns.compile(assume=None, T=dtype)
    for trial in range(3):
        out = tl.pack_codes(np.full((rows, cols), trial % 2, np.uint8) * (2**dtype.bits - 1), dtype)
        compiled.cpu.launch({"x": codes, "out": out, "R": rows, "C": cols}, workers=2)
        np.testing.assert_array_equal(out.codes(), codes)
    out = tl.pack_codes(np.zeros((rows, 6), np.uint8), dtype)
    scatter_columns.interpret(codes[:, :6].copy(), out, T=dtype)
    np.testing.assert_array_equal(out.codes(), codes[:, :6])


@pytest.mark.parametrize(("dtype", "block"), [(tl.u3, 12), (tl.u4, 7), (tl.u3, 5)], ids=str)
def test_box_edges_inside_bytes(dtype, block):
    n = 1000
    codes = RNG.integers(0, 2**dtype.bits, n).astype(np.uint8)
    for run in (store_runs.interpret, store_runs):
        out = tl.pack_codes(np.full(n, 2**dtype.bits - 1, np.uint8), dtype)
        run(codes, out, T=dtype, B=block)
        np.testing.assert_array_equal(out.codes(), codes)


def writes_to(compiled, tensor: str) -> set[str]:
    return {
        type(s).__name__
        for s in t.walk_stmts(compiled.thread.body)
        if isinstance(s, t.GlobalStore | t.AtomicMerge) and s.tensor == tensor
    }


def test_bytes_shared_between_threads_are_merged_atomically_everywhere():
    compiled = scatter_columns.compile(T=tl.u4)
    assert writes_to(compiled, "out") == {"AtomicMerge"}
    llvm = compiled.cpu.llvm_ir
    assert "atomicrmw and ptr" in llvm and "atomicrmw or ptr" in llvm
    for arch in ("sm_80", "sm_90"):
        gpu = cuda_build(scatter_columns, arch, T=tl.u3)
        assert "tl_merge_bits(g_out" in gpu.source
        ptx = gpu.ptx
        assert "red.global.and.b32" in ptx and "red.global.or.b32" in ptx
        assert "st.global" not in ptx  # no plain read-merge-write of a shared byte


def test_whole_bytes_owned_by_one_thread_are_stored_plainly():
    """Aligned runs of whole bytes need no atomics: the fast path stays."""
    compiled = store_runs.compile(T=tl.u4, B=256)
    assert writes_to(compiled, "out") == {"GlobalStore"}
    assert "global_store_sub_byte" not in compiled.stats
