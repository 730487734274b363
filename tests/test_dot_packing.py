"""Weights packed for a dot's fragments (tilelang.packing, tilelang.ir.fragments) and the
kernel side that reads them (tl.dot_layout, tl.load_fragment, tl.load/tl.view with
layouts).

- `pack_for_dot` / `unpack_from_dot` round-trip every width, integer and small float,
  ragged K and N, from numpy codes and from PackedArrays;
- the packing's defining property, checked from `Layout.table()` alone: in every tile,
  each thread's runs hold exactly the codes the B layout assigns to it, in local order,
  16-byte aligned where the width allows, padding zero;
- kernels (CPU backend and interpreter) that read packed weights give back W's codes,
  its f16 values through the vector dequantization recipes, bit for bit;
- the quantized matmul example keeps the dequantized weights in registers: no relayout
  of b in its block IR, and on sm_90 a main loop with no STS, no LDSM of b, at most one
  barrier and no spills;
- mistakes are errors at the user's line.
"""

import math

import numpy as np
import pytest
from conftest import load_example, require_disassembler

import tilelang as tl
from tilelang.ir import nodes as ir
from tilelang.ir.fragments import FragmentError
from tilelang.ir.parser import parse_function
from tilelang.ir.visit import walk
from tilelang.lowering import dequant
from tilelang.passes import infer_layouts
from tilelang.passes.infer_layouts import LayoutInferenceError

WIDTHS = [tl.dtype(f"u{b}") for b in range(1, 9)] + [tl.dtype(f"i{b}") for b in range(1, 9)]
WIDTHS += [tl.f4e2m1, tl.f6e3m2, tl.f6e2m3, tl.f8e4m3, tl.f8e5m2]


def random_codes(dtype: tl.DType, shape: tuple[int, int], seed: int) -> np.ndarray:
    """Every bit pattern, NaN codes included: packing only moves codes."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2**dtype.bits, shape, dtype=np.uint64).astype(dtype.storage)


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", WIDTHS, ids=str)
def test_unpack_inverts_pack_for_every_width(dtype):
    for i, (k, n, tile) in enumerate(
        [(128, 64, (64, 64)), (100, 70, (64, 64)), (1, 3, (32, 32)), (300, 200, (128, 64))]
    ):
        codes = random_codes(dtype, (k, n), seed=i)
        packed = tl.pack_for_dot(codes, dtype, tile=tile)
        assert isinstance(packed, tl.PackedArray) and packed.dtype == dtype
        kp, np_ = -(-k // tile[0]) * tile[0], -(-n // tile[1]) * tile[1]
        assert packed.shape == (np_ // tile[1], kp * tile[1])
        back = tl.unpack_from_dot(packed)
        assert back.dtype == dtype and np.array_equal(back.codes(), codes)
        # The same from a PackedArray, and again from the packed bytes and the packing.
        plain = tl.pack_codes(codes, dtype)
        assert tl.unpack_from_dot(tl.pack_for_dot(plain, tile=tile)) == plain
        bare = tl.PackedArray(packed.data, dtype, packed.shape)
        assert tl.unpack_from_dot(bare, packed.packing) == plain


@pytest.mark.parametrize(
    ("m", "warps", "operand", "acc", "tile"),
    [
        (64, 4, tl.f16, tl.f32, (64, 64)),  # warps along M hold the same B elements
        (32, 8, tl.bf16, tl.f32, (32, 128)),
        (16, 2, tl.f16, tl.f32, (32, 16)),
        (32, 4, tl.i8, tl.i32, (64, 32)),  # the m16n8k32 atom
    ],
)
def test_unpack_inverts_pack_for_other_dots(m, warps, operand, acc, tile):
    for dtype in (tl.u4, tl.i3, tl.f6e2m3):
        codes = random_codes(dtype, (150, 90), seed=m + warps)
        packed = tl.pack_for_dot(
            codes, dtype, tile=tile, m=m, warps=warps, operand=operand, acc=acc
        )
        assert np.array_equal(tl.unpack_from_dot(packed).codes(), codes)


# -- the defining property -------------------------------------------------------------------


def expected_run(codes_per_thread: int, bits: int) -> int:
    """The documented choice: the fewest codes filling whole 16-byte words, when they
    divide a thread's share of the tile; else the whole share."""
    words = 128 // math.gcd(128, bits)
    return words if codes_per_thread % words == 0 else codes_per_thread


def distinct_threads(table: np.ndarray) -> list[int]:
    """The threads that hold a set of elements first, in thread order (replicas of a
    thread hold the same elements in the same order)."""
    seen: dict[bytes, int] = {}
    for thread in range(table.shape[0]):
        seen.setdefault(table[thread].tobytes(), thread)
    return sorted(seen.values())


def stored_order(codes: np.ndarray, bits: int) -> np.ndarray:
    """A thread's codes in the order they are stored: for 2 and 4-bit codes, each
    32-bit word's codes paired across its halves (local 2j + h at code j + h·c/2, c codes
    a word), when the thread's codes fill whole words; others as they are."""
    per_word = 32 // bits if 32 % bits == 0 else 0
    if bits not in (2, 4) or codes.size % per_word:
        return codes
    words = codes.reshape(-1, per_word // 2, 2)  # [word, j, h]
    return words.transpose(0, 2, 1).reshape(-1)  # [word, h, j]


CASES = [
    (tl.u4, 16, 4, (64, 64)),
    (tl.u4, 16, 4, (128, 64)),  # two 16-byte runs per thread
    (tl.u8, 16, 4, (64, 64)),
    (tl.u3, 16, 4, (256, 64)),  # 3-word runs: codes straddle the 16-byte words
    (tl.u3, 16, 4, (64, 64)),  # too few k-steps for whole words: the thread's 12 bytes
    (tl.u1, 16, 4, (256, 64)),
    (tl.i6, 16, 4, (128, 64)),
    (tl.f4e2m1, 64, 4, (64, 64)),  # replicated over the two warps along M
    (tl.f6e3m2, 32, 8, (64, 128)),
    (tl.u2, 16, 2, (32, 32)),
]


@pytest.mark.parametrize(("dtype", "m", "warps", "tile"), CASES, ids=str)
def test_each_thread_run_holds_the_codes_its_fragments_need_paired_in_words(dtype, m, warps, tile):
    block_k, block_n = tile
    k, n = 2 * block_k + 5, 2 * block_n - 3  # ragged: padded with zero codes
    codes = random_codes(dtype, (k, n), seed=block_k + block_n)
    packed = tl.pack_for_dot(codes, dtype, tile=tile, m=m, warps=warps).codes()

    table = tl.dot_layout("b", m, block_n, block_k, warps=warps).table()  # [T, N, (k, n)]
    threads = distinct_threads(table)
    share = table.shape[1]
    run = expected_run(share, dtype.bits)
    padded = np.zeros((-(-k // block_k) * block_k, -(-n // block_n) * block_n), dtype.storage)
    padded[:k, :n] = codes
    for kt in range(padded.shape[0] // block_k):
        for nt in range(padded.shape[1] // block_n):
            tile_codes = padded[kt * block_k :, nt * block_n :][:block_k, :block_n]
            start = kt * block_k * block_n  # tiles follow each other along K, per column tile
            for rank, thread in enumerate(threads):
                local_order = tile_codes[table[thread, :, 0], table[thread, :, 1]]
                wanted = stored_order(local_order, dtype.bits)
                for r in range(share // run):
                    at = start + (r * len(threads) + rank) * run
                    got = packed[nt, at : at + run]
                    assert np.array_equal(got, wanted[r * run : (r + 1) * run]), (kt, nt, thread)
                    if run * dtype.bits % 128 == 0:
                        assert at * dtype.bits % 128 == 0  # every run starts a 16-byte word


def test_the_run_is_whole_16_byte_words_where_the_width_allows():
    """With the example's 64-column tile over 4 warps, a k-step is 8 codes a thread:
    16-byte runs take 2 k-steps of u8, 4 of u4, 8 of u2, 16 of u1; 3-, 5-, 7-bit runs
    take 16 k-steps (3, 5, 7 words) and 6-bit ones 8 (3 words)."""
    steps = {}
    for bits in range(1, 9):
        dtype = tl.dtype(f"u{bits}")
        packing = tl.pack_for_dot(np.zeros((256, 64), np.uint8), dtype, tile=(256, 64)).packing
        assert packing.run * bits % 128 == 0
        steps[bits] = packing.run // 8
    assert steps == {1: 16, 2: 8, 3: 16, 4: 4, 5: 16, 6: 8, 7: 16, 8: 2}


# -- kernels that read packed weights ----------------------------------------------------------


@tl.kernel(warps=4)
def fragment_copy(
    w: tl.Tensor["WT", "(N + BN - 1) // BN", "(K + BK - 1) // BK * BK * BN"],
    codes: tl.Tensor["WT", "K", "N"],
    values: tl.Tensor[tl.f16, "K", "N"],
    WT: tl.constexpr = tl.u4,
    BM: tl.constexpr = 16,
    BN: tl.constexpr = 64,
    BK: tl.constexpr = 64,
):
    """Each [BK, BN] tile of packed W, read in the dot's B fragments, stored back as W's
    codes and as f16 values (the cast happens in the fragment layout)."""
    bk, bn = tl.blocks(tl.cdiv(K, BK), tl.cdiv(N, BN))
    q = tl.load_fragment(w, [bk * BK, bn * BN], tl.dot_layout("b", BM, BN, BK))
    tl.store(codes, [bk * BK, bn * BN], q)
    tl.store(values, [bk * BK, bn * BN], q.to(tl.f16))


@pytest.mark.parametrize("dtype", WIDTHS, ids=str)
def test_a_kernel_reads_packed_weights_back_exactly(dtype):
    k, n = 150, 70  # ragged: the last tiles are partly padding, masked on store
    codes = random_codes(dtype, (k, n), seed=dtype.bits)
    if dtype.is_float:  # finite values, so that f16 comparisons are exact
        codes[~np.isfinite(dtype.decode(codes))] = 0
    packed = tl.pack_for_dot(codes, dtype, tile=(64, 64))
    outputs = (tl.pack_codes(np.zeros((k, n), dtype.storage), dtype), np.zeros((k, n), np.float16))
    compiled = fragment_copy(packed, *outputs, WT=dtype)
    interpreted = fragment_copy.interpret(packed, *outputs, WT=dtype)
    values = dtype.decode(codes).astype(np.float16)
    for got_codes, got_values in (compiled, interpreted):
        assert np.array_equal(got_codes.codes(), codes)
        assert np.array_equal(got_values.view(np.uint16), values.view(np.uint16))
    stats = fragment_copy.compile(WT=dtype).stats
    if dequant.has_vector_recipe(dtype, tl.f16):  # whole u32 words of codes, in place
        assert stats.get("dequant_vector", 0) > 0 and "dequant_scalar" not in stats


# -- the example: no relayout of b, and what sm_90 runs ------------------------------------

quant = load_example("quant_matmul")


@pytest.mark.parametrize("weight_type", [tl.u4, tl.u8, tl.u3, tl.f4e2m1], ids=str)
@pytest.mark.parametrize(
    ("kernel", "constexprs"),
    [
        ("quant_matmul", {"G": 128}),  # one scale row per tile
        ("quant_matmul", {"G": 32}),  # four scale groups per tile
        ("quant_matmul_split_k", {"G": 128, "BK": 64}),
        ("quant_matmul_partials", {"G": 64, "BN": 32, "BK": 64}),
    ],
)
def test_the_dequantized_weights_are_never_relayouted(weight_type, kernel, constexprs):
    fn = infer_layouts.run(getattr(quant, kernel).specialize(WT=weight_type, **constexprs))
    (dot,) = [i for i in walk(fn) if isinstance(i, ir.Dot)]
    relayouts = [i for i in walk(fn) if isinstance(i, ir.Relayout)]
    values = [r for r in relayouts if r.result.type.dtype != weight_type]
    assert [r.result for r in values] == [dot.a]  # the activations' ldmatrix, nothing else
    tiles = {"BM": quant.BLOCK_M, "BN": quant.BLOCK_N, "BK": quant.BLOCK_K, **constexprs}
    fragments = tl.dot_layout("b", tiles["BM"], tiles["BN"], tiles["BK"], warps=quant.WARPS)
    assert dot.b.type.layout == fragments
    (view,) = [i for i in walk(fn) if isinstance(i, ir.View)]
    stored = view.result.type.layout  # the codes, seen in place
    codes = [r for r in relayouts if r.result.type.dtype == weight_type]
    if weight_type.bits in (2, 4):  # stored paired across word halves, relabelled
        assert stored != fragments and [(r.value, r.result.type.layout) for r in codes] == [
            (view.result, fragments)
        ]

        def held(layout):  # each thread's elements, as sorted flat indices
            table = layout.table()
            return np.sort(table[..., 0] * tiles["BN"] + table[..., 1], axis=1)

        assert np.array_equal(held(stored), held(fragments))  # nothing moves between threads
    else:
        assert stored == fragments and not codes


@pytest.mark.parametrize(
    ("weight_type", "block_k"), [(tl.u3, 256), (tl.i5, 256), (tl.u6, 128), (tl.f6e2m3, 128)]
)
def test_multiword_runs_stream_through_the_pipeline(weight_type, block_k):
    """Tiles with enough k-steps give 3-, 5-, 6-bit codes runs of several 16-byte words,
    copied ahead and read back from shared memory in 16-byte pieces: the example still
    matches numpy, and the interpreter bit for bit with x = I."""
    quant.check(4, 2 * block_k, 64, weight_type, 64, BK=block_k)
    _, w, s = quant.make_inputs(1, block_k, 64, weight_type, 64)
    eye = np.eye(block_k, dtype=np.float16)
    args = (eye, quant.pack_weights(w, BK=block_k), s)
    consts = {"WT": weight_type, "G": 64, "BK": block_k}
    out = np.zeros((block_k, 64), np.float16)
    compiled = quant.quant_matmul(*args, out.copy(), **consts)
    interpreted = quant.quant_matmul.interpret(*args, out.copy(), **consts)
    expected = w.unpack().astype(np.float16) * np.repeat(s, 64, axis=0)
    assert np.array_equal(compiled, expected) and np.array_equal(interpreted, expected)


@pytest.mark.parametrize("weight_type", [tl.u4, tl.i3], ids=str)
def test_warps_along_m_read_the_same_fragments(weight_type):
    """BM = 64 over 4 warps: a 2 x 2 warp grid, so two warps hold each B fragment (the
    layout's replication) and load the same runs; ragged sizes, both split-K forms."""
    quant.check(70, 200, 130, weight_type, 32, BM=64, BK=32)
    quant.check_split_k(70, 200, 130, weight_type, 32, 3, True, BM=64, BK=32)
    assert tl.dot_layout("b", 64, 64, 32, warps=4).replication == 2


def main_loop_mix(weight_type: tl.DType, **constexprs):
    from tilelang.cli import launch_facts
    from tilelang.runtime import sass

    require_disassembler()
    launch = {"M": 1, "K": 8192, "N": 28672}
    consts = {"WT": weight_type, "G": 128, **constexprs}
    # The size facts of the launch and the value fact the example states about its scales.
    assume = {**launch_facts(quant.quant_matmul, consts, launch), "s": quant.SCALE_BOUND}
    compiled = quant.quant_matmul.compile(target="sm_90", assume=assume, **consts)
    loop = sass.main_loop(sass.disassemble(compiled.cubin))
    return compiled, compiled.perf(per="w", **launch), loop


@pytest.mark.parametrize("weight_type", [tl.u4, tl.u8, tl.u3, tl.f4e2m1], ids=str)
def test_sm90_main_loop_keeps_the_weights_in_registers(weight_type):
    """No STS (nothing is stored to shared memory: the packed codes arrive by cp.async),
    no LDSM of b (only the activations' non-transposed x4 loads, one per 16x16 block of
    the A tile), at most one barrier per iteration, no spills."""
    compiled, report, loop = main_loop_mix(weight_type)
    resources = compiled.resources
    assert resources.spill_store_bytes == 0 and resources.spill_load_bytes == 0
    counts = {op: n for ops in report.mix.values() for op, n in ops.items()}
    assert counts.get("STS", 0) == 0
    assert counts.get("BAR", 0) <= 1
    assert counts["HMMA"] > 0 and counts.get("LDGSTS.128", 0) > 0
    a_blocks = (quant.BLOCK_M // 16) * (quant.BLOCK_K // 16)  # 16x16 blocks of the x tile
    assert counts.get("LDSM", 0) <= a_blocks
    ldsm = {line.split()[-4] for line in loop.splitlines() if "LDSM" in line}
    assert ldsm <= {"LDSM.16.M88.4"}, ldsm  # no .MT88 (transposed: what b would need)


# -- errors at the user's line ---------------------------------------------------------------


def _compile_error(body, match):
    with pytest.raises(tl.TileLangError, match=match) as caught:
        body.specialize()
    assert caught.value.loc is not None and caught.value.loc.line > 0


def test_mistakes_are_reported_at_the_users_line():
    @tl.kernel(warps=4)
    def wrong_rank(w: tl.Tensor[tl.u4, "A", "B", "C"]):
        tl.blocks(1)
        tl.load_fragment(w, [0, 0], tl.dot_layout("b", 16, 64, 64))

    _compile_error(wrong_rank, "reads a tensor packed by tl.pack_for_dot")

    @tl.kernel(warps=4)
    def wrong_warps(w: tl.Tensor[tl.u4, "A", "B"]):
        tl.blocks(1)
        tl.load_fragment(w, [0, 0], tl.dot_layout("b", 16, 64, 64, warps=8))

    _compile_error(wrong_warps, r"spans 256 threads, the kernel has 128 \(4 warps\)")

    @tl.kernel(warps=4)
    def no_atom(w: tl.Tensor[tl.u4, "A", "B"]):
        tl.blocks(1)
        tl.dot_layout("b", 8, 64, 64)

    _compile_error(no_atom, "no mma atom fits")

    @tl.kernel(warps=4)
    def view_without_layout(w: tl.Tensor[tl.u4, "A", "B"]):
        tl.blocks(1)
        q = tl.load(w, [0, 0], [64, 64])
        tl.view(q, tl.u4, [64, 64], tl.dot_layout("b", 16, 64, 64))

    _compile_error(view_without_layout, "has no layout yet")

    @tl.kernel(warps=4)
    def view_other_bits(w: tl.Tensor[tl.u4, "A", "B"]):
        tl.blocks(1)
        q = tl.load(w, [0, 0], [1, 4096], layout=tl.dot_layout("b", 16, 64, 64).reshape([1, 4096]))
        tl.view(q, tl.u8, [64, 64], tl.dot_layout("b", 16, 64, 64))

    _compile_error(view_other_bits, "each thread holds 128 bits of the tile and 256 bits")

    @tl.kernel(warps=4)
    def load_other_shape(w: tl.Tensor[tl.u4, "A", "B"]):
        tl.blocks(1)
        tl.load(w, [0, 0], [32, 64], layout=tl.dot_layout("b", 16, 64, 64))

    _compile_error(load_other_shape, r"a layout of a \[64, 64\] tile, not \[32, 64\]")


def test_host_side_mistakes():
    codes = np.zeros((64, 64), np.uint8)
    with pytest.raises(TypeError, match="needs their dtype"):
        tl.pack_for_dot(codes, tile=(64, 64))
    with pytest.raises(ValueError, match="tile must be"):
        tl.pack_for_dot(codes, tl.u4, tile=(64,))
    with pytest.raises(ValueError, match="codes"):
        tl.pack_for_dot(codes + 16, tl.u4, tile=(64, 64))  # 16 is no u4 code
    with pytest.raises(FragmentError, match="no mma atom fits"):
        tl.pack_for_dot(codes, tl.u4, tile=(64, 64), m=8)
    with pytest.raises(
        FragmentError, match=r"4 i3 elements \(12 bits\), not a whole number of bytes"
    ):
        tl.pack_for_dot(codes, tl.i3, tile=(16, 16), warps=2)  # one k-step of 4 codes a thread
    with pytest.raises(ValueError, match="a PackedArray of u4, but dtype u3"):
        tl.pack_for_dot(tl.pack_codes(codes, tl.u4), tl.u3, tile=(64, 64))
    packed = tl.pack_for_dot(codes, tl.u4, tile=(64, 64))
    with pytest.raises(TypeError, match="needs the DotPacking"):
        tl.unpack_from_dot(tl.PackedArray(packed.data, tl.u4, packed.shape))
    with pytest.raises(ValueError, match="was packed, got u4 of shape"):
        tl.unpack_from_dot(tl.pack_codes(codes, tl.u4), packed.packing)
    with pytest.raises(TypeError, match="needs warps="):
        tl.dot_layout("b", 16, 64, 64)
    assert tl.dot_layout("b", 16, 64, 64, warps=4) == packed.packing.layout


def test_infer_layouts_checks_given_layouts_at_their_line():
    text = """kernel k(%w: tensor<u4, [64, 64]>) warps(4) {
  %bx = blocks 1:i32 : i32
  %a = load %w[0:i32, 0:i32] : tile<u4, [64, 64], spatial(64, 4).local(1, 16)>  loc("k.py":3:7)
}
"""
    with pytest.raises(
        LayoutInferenceError, match=r"k.py:3:7: .*spans 256 threads, the kernel has 128"
    ):
        infer_layouts.run(parse_function(text))


def test_sm90_u4_decode_targets_of_the_weight_streaming_issue():
    """The issue's static targets for the example at m = 1, k = 8192, n = 28672, u4, g128,
    on sm_90, read from the cubin: weights arrive by 16-byte copies issued 2 iterations
    ahead, at least 24 KB of weight loads are in flight per SM, no spills, and the model
    predicts at least 85% of DRAM bandwidth (an upper bound until a GPU calibrates it),
    and the whole main loop takes at most 2.5 instructions per weight a thread
    converts."""
    compiled, report, _ = main_loop_mix(tl.u4)
    (w,) = [row for row in report.loads if row.tensor == "w"]
    assert w.kind == "copy_async" and w.ahead >= 2
    counts = {op: n for ops in report.mix.values() for op, n in ops.items()}
    assert counts.get("LDGSTS.128", 0) > 0 and not any(
        op.startswith("LDGSTS") and op != "LDGSTS.128" for op in counts
    )
    weight_bytes_in_flight = w.in_flight * report.occupancy.resident
    assert weight_bytes_in_flight >= 24 * 1024
    assert compiled.resources.spill_store_bytes == 0
    assert report.dram_fraction >= 0.85
    weights_per_thread = quant.BLOCK_K * quant.BLOCK_N / (quant.WARPS * 32)
    per_weight = report.instructions_per_iteration / weights_per_thread
    assert per_weight <= 2.5, per_weight
