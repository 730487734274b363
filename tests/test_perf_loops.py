"""The static performance report of kernels with several loops, shared-memory bank
conflicts, the low-occupancy note and the classes of conversions
(`tilelang.runtime.perf`, `perf_match`, `perf_traffic`, `perf_shared`, `sass.classify`).

Expected numbers come from the kernels' definitions (elements a thread handles, the
special functions each takes, the bytes of each tensor) and from an independent bank
model written here (distinct 4-byte words per bank, numpy); the layouts are read from
the planned IR, whatever layouts the passes choose. No GPU is needed; the report reads
SASS, so the tests that make one need a disassembler. Speed is never asserted."""

import math

import pytest
from conftest import marked_line

import tilelang as tl
from tilelang.ir import nodes as ir
from tilelang.ir.visit import walk
from tilelang.runtime import sass
from tilelang.target import HARDWARE

needs_disassembler = pytest.mark.usefixtures("disassembler")

H100 = HARDWARE["sm_90"]


# --------------------------------------------------------------------------- two passes


@tl.kernel(warps=4)
def two_pass(x: tl.Tensor[tl.f32, "M", "N"], y: tl.Tensor[tl.f32, "M"], BN: tl.constexpr = 1024):
    r = tl.blocks(M)
    acc = tl.zeros([1, BN], tl.f32)
    for n in tl.range(0, N, BN):  # <- first
        acc = acc + tl.load(x, [r, n], [1, BN])
    mean = tl.sum(acc, axis=1) / N
    acc2 = tl.zeros([1, BN], tl.f32)
    for n in tl.range(0, N, BN):  # <- second
        d = tl.load(x, [r, n], [1, BN]) - mean[:, None]
        acc2 = acc2 + tl.exp(d) * tl.exp(-d) / (d * d + 1.0)
    tl.store(y, [r], tl.sum(acc2, axis=1))


@tl.kernel(warps=4)
def one_pass(x: tl.Tensor[tl.f32, "M", "N"], y: tl.Tensor[tl.f32, "M"], BN: tl.constexpr = 1024):
    """The second pass of `two_pass` alone: x read once."""
    r = tl.blocks(M)
    acc = tl.zeros([1, BN], tl.f32)
    for n in tl.range(0, N, BN):
        d = tl.load(x, [r, n], [1, BN])
        acc = acc + tl.exp(d) * tl.exp(-d) / (d * d + 1.0)
    tl.store(y, [r], tl.sum(acc, axis=1))


BIG = {"M": 8192, "N": 65536}  # a row of 256 KB a block: the second pass misses L2


@needs_disassembler
def test_each_loop_is_counted_with_its_own_sass_loop():
    """The first loop only adds; the second takes two exponentials and a reciprocal an
    element: 1024 elements over 128 threads, 8 a thread, 24 MUFU a warp an iteration.
    The main loop (the first) shows no MUFU, the second carries all of them."""
    report = two_pass.compile(target="sm_90").perf(**BIG)
    first, second = (marked_line(two_pass, m) for m in ("# <- first", "# <- second"))
    assert report.loop == f"test_perf_loops.py:{first}"
    assert not any(op.startswith("MUFU") for ops in report.mix.values() for op in ops)
    assert [x.where for x in report.loops] == [
        f"test_perf_loops.py:{first}",
        f"test_perf_loops.py:{second}",
    ]
    assert [x.iterations for x in report.loops] == [BIG["N"] // 1024] * 2
    assert [x.special_per_iteration for x in report.loops] == [0, 1024 // 128 * 3]
    # each loop's SASS: a loop that loads, the second the one with the MUFU
    text = sass.disassemble(two_pass.compile(target="sm_90").cubin)
    mufu = [loop for loop in sass.loops(text) if "MUFU" in loop and "LDG" in loop]
    assert len(mufu) == 1
    second_row = report.loops[1]
    full = sum(sass.opcodes(mufu[0]).values())
    assert 0 < second_row.instructions_per_iteration * second_row.unroll <= full
    # the bounds add the loops up: every block runs both
    busiest = math.ceil(report.blocks / H100.sms)
    issue = busiest * 4 * sum(x.iterations * x.instructions_per_iteration for x in report.loops)
    special = busiest * 4 * sum(x.iterations * x.special_per_iteration for x in report.loops)
    seconds = {b.name: b.seconds for b in report.bounds}
    assert seconds["instruction issue"] == pytest.approx(issue / (4 * H100.clock_hz))
    assert seconds["special functions"] == pytest.approx(special * 32 / (16 * H100.clock_hz))


@needs_disassembler
@pytest.mark.parametrize("n", [65536, 2048])
def test_a_second_pass_pays_dram_again_unless_l2_holds_the_row(n):
    """Between a block's two reads of an element it reads its whole row (n f32); the
    blocks at once read that many rows. Over the L2 the second pass reads x again."""
    report = two_pass.compile(target="sm_90").perf(M=8192, N=n)
    x, y = 8192 * n * 4, 8192 * 4
    distance = report.concurrent_blocks * n * 4
    spills = distance > H100.l2_bytes
    assert spills == (n == 65536)  # the two sizes fall on either side
    nbytes = x + y + (x if spills else 0)
    assert report.bounds[0].seconds == pytest.approx(nbytes / H100.dram_bytes_per_s)
    assert [(r.tensor, r.charged) for r in report.rereads] == [("x", x if spills else 0)]
    assert report.rereads[0].distance == pytest.approx(distance)
    assert ("from DRAM" if spills else "served from L2") in str(report)


@needs_disassembler
def test_a_two_pass_kernel_predicts_more_than_a_one_pass_one():
    two = two_pass.compile(target="sm_90").perf(**BIG)
    one = one_pass.compile(target="sm_90").perf(**BIG)
    assert two.predicted_seconds > one.predicted_seconds
    assert one.rereads == () and len(one.loops) == 1


@tl.kernel(warps=4)
def two_sums(x: tl.Tensor[tl.f32, "M", "N"], y: tl.Tensor[tl.f32, "M"], BN: tl.constexpr = 512):
    """Two passes alike but for a subtraction: nothing but their order tells them apart."""
    r = tl.blocks(M)
    acc = tl.zeros([1, BN], tl.f32)
    for n in tl.range(0, N, BN):
        acc = acc + tl.load(x, [r, n], [1, BN])
    mean = tl.sum(acc, axis=1) / N
    acc2 = tl.zeros([1, BN], tl.f32)
    for n in tl.range(0, N, BN):
        acc2 = acc2 + (tl.load(x, [r, n], [1, BN]) - mean[:, None])
    tl.store(y, [r], tl.sum(acc2, axis=1))


@needs_disassembler
def test_a_loop_ptxas_splits_keeps_its_remainder_and_leaves_the_next_loop_its_own():
    """Where ptxas makes an unrolled loop and a remainder of each pass, the SASS loops
    that load come in pairs, each pair's first the more unrolled: the second pass is
    the third, never the first pass's remainder."""
    build = two_sums.compile(target="sm_90")
    text = sass.disassemble(build.cubin)
    loads = [
        sum(n for op, n in sass.opcodes(loop).items() if op.startswith("LDG"))
        for loop in sass.loops(text)
        if "LDG" in loop
    ]
    per_thread = 512 // 128 // 4  # LDG.128 a thread an iteration
    if len(loads) != 4 or loads[0] == per_thread:
        pytest.skip(f"ptxas did not split both loops here (loads per SASS loop: {loads})")
    report = build.perf(M=8192, N=65536)
    assert [x.sass for x in report.loops] == [
        "SASS loop 1 of the 4 that load",
        "SASS loop 3 of the 4 that load",
    ]
    assert [x.unroll for x in report.loops] == [loads[0] // per_thread, loads[2] // per_thread]


def _loop(memory: int, mma: int = 0, mufu: bool = False, instructions: int = 0):
    from tilelang.runtime.perf_match import _Sass

    return _Sass({"OTHER": instructions} if instructions else {}, memory, mma, mufu)


def test_loops_are_matched_by_their_loads_and_special_functions():
    """Three SASS loops for two block-IR loops of 2 loads an iteration: an unrolled x4
    loop, a remainder, and a loop with MUFU. Without the MUFU (and with bodies of no
    size to compare) the middle one could be either loop's: the second loop is counted
    with the costlier of the two, and says it is unsure."""
    from tilelang.runtime.perf_loop import ThreadLoop
    from tilelang.runtime.perf_match import Match, _assign

    plain, special = ThreadLoop(0, 2, False), ThreadLoop(0, 2, True)
    loops = [_loop(8), _loop(2), _loop(2, mufu=True)]
    assert _assign(loops, [plain, special], (0, 1)) == {
        0: Match(0, 2, (0,)),
        1: Match(2, 1, (2,)),
    }
    loops = [_loop(8), _loop(2), _loop(2)]
    found = _assign(loops, [plain, plain], (0, 1))
    assert (found[0].index, found[0].candidates) == (0, (0,))
    assert found[1].candidates == (1, 2) and found[1].unsure
    # an unrolled body before its remainder: [x4, x1, x4] splits after the remainder
    loops = [_loop(8), _loop(2), _loop(8), _loop(2)]
    assert _assign(loops, [plain, plain], (0, 1)) == {0: Match(0, 2, (0,)), 1: Match(2, 2, (2,))}
    # counts that fit only one way: the mma of a dot loop
    dot, add = ThreadLoop(4, 2, False), ThreadLoop(0, 1, False)
    assert _assign([_loop(4, 8), _loop(3)], [dot, add], (0, 1)) == {
        0: Match(0, 1, (0,)),
        1: Match(1, 1, (1,)),
    }


@tl.kernel(warps=4)
def layer_norm(
    x: tl.Tensor[tl.f32, "M", "N"],
    w: tl.Tensor[tl.f32, "N"],
    y: tl.Tensor[tl.f32, "M", "N"],
    BN: tl.constexpr = 1024,
):
    """A layer norm's three passes over a row (a port of Triton's tutorial): the mean,
    the variance of the masked centred values, the normalized row."""
    row = tl.blocks(M)
    acc = tl.zeros([1, BN], tl.f32)
    for c in tl.range(0, N, BN):  # <- mean
        acc = acc + tl.load(x, [row, c], [1, BN])
    mu = tl.sum(acc, axis=1) / N
    acc = tl.zeros([1, BN], tl.f32)
    for c in tl.range(0, N, BN):  # <- variance
        cols = c + tl.arange(0, BN)
        d = tl.where((cols < N)[None, :], tl.load(x, [row, c], [1, BN]) - mu[:, None], 0.0)
        acc = acc + d * d
    rs = 1.0 / tl.sqrt(tl.sum(acc, axis=1) / N + 1e-5)
    for c in tl.range(0, N, BN):  # <- normalize
        t = tl.load(x, [row, c], [1, BN])
        tl.store(y, [row, c], (t - mu[:, None]) * rs[:, None] * tl.load(w, [c], [BN])[None, :])


@needs_disassembler
def test_a_layer_norm_counts_all_three_passes():
    """The second pass loads as much an iteration as the first (one tile of x) and, where
    ptxas splits the first into an unrolled loop and its remainder, either could be the
    remainder's: its size tells them apart (the remainder runs the first pass's body,
    the second pass computes a masked square). None of the passes is left out."""
    build = layer_norm.compile(target="sm_90a")
    report = build.perf(M=4096, N=4096)
    lines = [marked_line(layer_norm, f"# <- {m}") for m in ("mean", "variance", "normalize")]
    wheres = {f"test_perf_loops.py:{line}" for line in lines}
    assert {x.where for x in report.loops} == wheres
    assert len({x.sass for x in report.loops}) == 3
    assert not any("left out" in note or "could be SASS loop" in note for note in report.notes)
    by_line = {x.where: x for x in report.loops}
    mean, variance = (by_line[f"test_perf_loops.py:{line}"] for line in lines[:2])
    assert variance.instructions_per_iteration > mean.instructions_per_iteration
    # x's three passes: a pass reads a row of 16 KB a block; the third finds in L2 what
    # the second read (one pass of the blocks at once between them: under the 50 MB L2),
    # though the first read is two passes back (over it)
    pass_bytes = report.concurrent_blocks * 4096 * 4
    assert pass_bytes <= H100.l2_bytes < 2 * pass_bytes
    assert [(r.charged, r.distance) for r in report.rereads] == [(0, pass_bytes)] * 2


def test_sass_loops_of_one_loop_run_bodies_of_about_one_size(monkeypatch):
    """The layer norm's SASS: an unrolled x4 first pass (88 instructions, 22 an
    iteration), its remainder (26), the second pass (81), the third (73). Counts alone
    let the remainder be the second pass's; sizes do not. Where sizes cannot tell
    (`ALIKE` huge) the second pass takes the costlier of its candidates and says so."""
    from tilelang.runtime import perf_match
    from tilelang.runtime.perf_loop import ThreadLoop
    from tilelang.runtime.perf_match import Match, _assign

    two, six = ThreadLoop(0, 2, False), ThreadLoop(0, 6, False)
    loops = [_loop(8, instructions=88), _loop(2, instructions=26), _loop(2, instructions=81)]
    loops.append(_loop(6, instructions=73))
    found = _assign(loops, [two, two, six], (0, 1, 2))
    assert found == {0: Match(0, 2, (0,)), 1: Match(2, 1, (2,)), 2: Match(3, 1, (3,))}
    monkeypatch.setattr(perf_match, "ALIKE", 1e9)
    found = _assign(loops, [two, two, six], (0, 1, 2))
    assert found[1] == Match(2, 1, (1, 2), unsure=True)  # 81 instructions over 26


# --------------------------------------------------------------------------- bank conflicts

#: A warp per column of a [32, 4] tile, its 32 lanes down the rows.
COLUMNS = tl.Layout((32, 4), ((32,), (4,)), (1, 0), ())


@tl.kernel(warps=4)
def column_stage(x: tl.Tensor[tl.f32, "M", 4], y: tl.Tensor[tl.f32, "M", 4]):
    """A [32, 4] f32 tile through a shared tile of 16-byte rows (no swizzle fits in a
    16-byte row), stored a column per warp: 32 lanes in 8 banks."""
    bm = tl.blocks(tl.cdiv(M, 32))
    stage = tl.shared([32, 4], tl.f32)
    stage.store(tl.load(x, [bm * 32, 0], [32, 4], layout=COLUMNS))  # <- column
    tl.store(y, [bm * 32, 0], stage.load())


@tl.kernel(warps=4)
def staged_transpose(x: tl.Tensor[tl.f32, "M", "N"], y: tl.Tensor[tl.f32, "N", "M"]):
    bm, bn = tl.blocks(tl.cdiv(M, 64), tl.cdiv(N, 64))
    stage = tl.shared([64, 64], tl.f32)
    stage.store(tl.transpose(tl.load(x, [bm * 64, bn * 64], [64, 64])))  # <- stage
    tl.store(y, [bn * 64, bm * 64], stage.load())


def bank_oracle(layout, shared, elem: int) -> tuple[float, float]:
    """(wavefronts, ideal) per warp, averaged over the warps, of storing a register
    tile of `layout` element by element into `shared` (one 4-byte store an element:
    32 lanes a phase): the most distinct words any bank holds, each store; replicas
    store nothing (none in these layouts)."""
    table = layout.table()
    warps = layout.num_threads // 32
    waves = ideal = 0
    for w in range(warps):
        for li in range(layout.num_locals):
            index = table[32 * w : 32 * w + 32, li]
            words = {int(shared.offset(tuple(int(i) for i in idx))) * elem // 4 for idx in index}
            per_bank = {}
            for word in words:
                per_bank.setdefault(word % 32, set()).add(word)
            waves += max(len(v) for v in per_bank.values())
            ideal += 1
    return waves / warps, ideal / warps


def shared_store(build):
    fn = build.stages[list(build.stages)[-1]]
    (store,) = [i for i in walk(fn) if isinstance(i, ir.SharedStore)]
    return store.value.type.layout, store.shared.type.layout


@needs_disassembler
def test_a_column_store_into_narrow_rows_pays_its_bank_conflicts():
    build = column_stage.compile(target="sm_90")
    layout, shared = shared_store(build)
    waves, ideal = bank_oracle(layout, shared, 4)
    assert (waves, ideal) == (4, 1)  # 32 rows of 16 bytes: 8 banks, 4 words each
    report = build.perf(M=32 * 132 * 4)
    # the shared bound: the SASS's conflict-free bytes plus 128 for each extra wavefront
    text = sass.kernel_body(sass.disassemble(build.cubin))
    clean = sum(n * (sass.shared_bytes(op) or 0) for op, n in sass.opcodes(text).items())
    busiest = math.ceil(report.blocks / H100.sms)
    moved = busiest * 4 * (clean + (waves - ideal) * 128)
    seconds = {b.name: b.seconds for b in report.bounds}
    assert seconds["shared memory"] == pytest.approx(moved / (128 * H100.clock_hz))
    line = marked_line(column_stage, "# <- column")
    assert [(c.kind, c.loc, c.wavefronts, c.ideal) for c in report.conflicts] == [
        ("store", f"test_perf_loops.py:{line}", waves, ideal)
    ]
    assert "shared-memory bank conflicts" in str(report)


@needs_disassembler
def test_the_staged_transpose_is_charged_what_its_layouts_conflict():
    """The transposed tile goes to shared memory a column at a time: whatever swizzle
    the tile gets, the report charges the wavefronts the bank model finds."""
    build = staged_transpose.compile(target="sm_90")
    layout, shared = shared_store(build)
    waves, ideal = bank_oracle(layout, shared, 4)
    report = build.perf(M=8192, N=8192)
    found = [(c.kind, c.wavefronts, c.ideal) for c in report.conflicts]
    assert found == ([("store", waves, ideal)] if waves > ideal else [])


# --------------------------------------------------------------------------- occupancy


@tl.kernel(warps=4)
def decays(x: tl.Tensor[tl.f32, "M", "N"], y: tl.Tensor[tl.f32, "N"]):
    bn = tl.blocks(tl.cdiv(N, 128))
    acc = tl.zeros([128], tl.f32)
    for m in tl.range(0, M, 8):
        acc = acc + tl.sum(tl.fast_exp2(tl.load(x, [m, bn * 128], [8, 128])), axis=0)
    tl.store(y, [bn * 128], acc)


@needs_disassembler
@pytest.mark.parametrize(("blocks_per_sm", "noted"), [(1, True), (2, True), (3, False)])
def test_one_or_two_warps_per_scheduler_are_noted(blocks_per_sm, noted):
    """4 warps a block over 4 schedulers: a block per warp per scheduler. With one or
    two, a warp must find 2 to 4 independent instructions in a row to issue every
    cycle."""
    report = decays.compile(target="sm_90").perf(M=4096, N=128 * H100.sms * blocks_per_sm)
    assert report.occupancy.resident >= blocks_per_sm
    text = " ".join(report.notes)
    assert (f"{blocks_per_sm} warps per scheduler" in text) == noted


# --------------------------------------------------------------------------- conversions


def test_conversions_outside_a_dequantization_recipe_are_conversions():
    conversions = "conversions (F2F/F2FP/I2F/HADD2.F32)"
    dequant = "dequantization (LOP3/PRMT/half2/cvt)"
    for opcode in ("HADD2.F32", "F2FP.F16.F32.PACK_AB", "F2F.F16.F32", "I2F.U32"):
        assert sass.classify(opcode, dequantizes=False) == conversions
        assert sass.classify(opcode) == dequant  # a recipe's own
    assert sass.classify("LOP3.LUT", dequantizes=False) == "integer/address"
    assert sass.classify("PRMT", dequantizes=False) == "integer/address"
    assert sass.classify("HFMA2", dequantizes=False) == "float"
    assert sass.classify("HFMA2.MMA", dequantizes=False) == "integer/address"
    assert sass.CLASSES.index(conversions) == sass.CLASSES.index(dequant) + 1


@tl.kernel(warps=4)
def widen(x: tl.Tensor[tl.f16, "M", "N"], y: tl.Tensor[tl.f32, "M"]):
    """Row sums of f16 as f32: an f16 softmax's or norm's conversions."""
    r = tl.blocks(M)
    acc = tl.zeros([1, 1024], tl.f32)
    for n in tl.range(0, N, 1024):
        acc = acc + tl.load(x, [r, n], [1, 1024]).to(tl.f32)
    tl.store(y, [r], tl.sum(acc, axis=1))


@tl.kernel(warps=4)
def decode(x: tl.Tensor[tl.u8, "M", "N"], y: tl.Tensor[tl.f32, "M"]):
    """Row sums of u8 codes through f16: a dequantization recipe."""
    r = tl.blocks(M)
    acc = tl.zeros([1, 1024], tl.f32)
    for n in tl.range(0, N, 1024):
        acc = acc + tl.load(x, [r, n], [1, 1024]).to(tl.f16).to(tl.f32)
    tl.store(y, [r], tl.sum(acc, axis=1))


@needs_disassembler
def test_an_f16_kernel_lists_conversions_a_dequantizing_one_dequantization():
    plain = widen.compile(target="sm_90").perf(M=4096, N=8192)
    assert "dequantization (LOP3/PRMT/half2/cvt)" not in plain.mix
    assert plain.mix["conversions (F2F/F2FP/I2F/HADD2.F32)"]
    codes = decode.compile(target="sm_90").perf(M=4096, N=8192)
    assert "dequantization (LOP3/PRMT/half2/cvt)" in codes.mix


def test_the_bank_oracle_agrees_with_hand_counts():
    """Sanity of the oracle itself: a row of 32 words is one wavefront, a column of a
    32-word-wide row-major tile 32, of a 33-word-wide one 1."""
    from tilelang.ir.layout import spatial
    from tilelang.ir.shared_layout import row_major, strided

    assert bank_oracle(spatial(1, 32), row_major(1, 32), 4) == (1, 1)
    by_column = spatial(32, 1)
    assert bank_oracle(by_column, row_major(32, 1), 4) == (1, 1)
    assert bank_oracle(by_column, strided((32, 1), (32, 1)), 4) == (32, 1)
    assert bank_oracle(by_column, strided((32, 1), (33, 1)), 4) == (1, 1)


def test_the_lowering_the_layout_choice_and_the_report_call_the_one_shared_rule(monkeypatch):
    """`tilelang.ir.shared_access` is the one rule: replaced by a stand-in, the
    lowering's runs, the swizzle `access_layout` picks and the report's conflict counts
    are the stand-in's."""
    import numpy as np

    from tilelang import dtypes
    from tilelang.analysis import shared_layouts
    from tilelang.analysis.layout_policy import blocked_layout
    from tilelang.ir import shared_access
    from tilelang.ir.shared_layout import Swizzle, row_major
    from tilelang.lowering.shared import shared_runs
    from tilelang.lowering.values import SharedTile
    from tilelang.runtime.perf_shared import shared_conflicts

    fn = staged_transpose.stages(target="sm_90")["plan_shared"]  # planned by the real rule
    layout = blocked_layout((64, 64), dtypes.f32, 128)
    monkeypatch.setattr(shared_access, "access_runs", lambda *args: (2, 8))
    assert shared_runs(SharedTile(0, dtypes.f32, row_major(64, 64)), layout) == (2, 8)

    favoured = Swizzle(1, 2, 9)

    def stand_in(shared, regs, bits, store=False):
        cheap = shared.swizzle == favoured
        return np.array([[store + 5, 6 if cheap else 9, 4]] * (regs.num_threads // 32))

    monkeypatch.setattr(shared_access, "access_wavefronts", stand_in)
    choose = shared_layouts.access_layout.__wrapped__  # not the cached choice
    assert choose(dtypes.f32, (64, 64), (layout,)) == row_major(64, 64).swizzled(favoured)

    rows = shared_conflicts(list(walk(fn)))
    assert [(r.kind, r.instructions, r.wavefronts, r.ideal) for r in rows] == [
        ("store", 6, 9, 4),
        ("load", 5, 9, 4),
    ]


def test_a_store_counts_each_elements_first_replica_a_load_every_lane():
    """`shared_access.access_wavefronts` against a count written here: the lanes that
    issue (a store's first replicas, a load's all), in lane order, fill phases of
    128 // max(width, 4); each phase takes the most distinct words one bank holds."""
    from tilelang.ir.layout_parser import parse_layout
    from tilelang.ir.shared_access import access_runs, access_wavefronts
    from tilelang.ir.shared_layout import row_major, strided

    layout = parse_layout("spatial(4, 1).replicated(2, rank=2).spatial(16, 1).local(1, 64)")
    table = layout.table()
    for shared in (row_major(64, 64), strided((64, 64), (68, 1)), strided((64, 64), (1, 64))):
        _, width = access_runs(shared, layout, 32)
        vector, lanes_per_phase = width // 4, 128 // max(width, 4)
        for store in (False, True):
            owners: dict = {}
            for thread in range(layout.num_threads):
                for li in range(layout.num_locals):
                    owners.setdefault(tuple(int(v) for v in table[thread, li]), thread)
            expected = []
            for warp in range(layout.num_threads // 32):
                lanes = [
                    lane
                    for lane in range(32 * warp, 32 * warp + 32)
                    if not store or owners[tuple(int(v) for v in table[lane, 0])] == lane
                ]
                waves = phases = 0
                for k in range(0, layout.num_locals, vector):
                    for p in range(0, len(lanes), lanes_per_phase):
                        banks: dict = {}
                        for lane in lanes[p : p + lanes_per_phase]:
                            byte = int(shared.offset(tuple(int(v) for v in table[lane, k]))) * 4
                            for word in range(byte // 4, byte // 4 + max(1, width // 4)):
                                banks.setdefault(word % 32, set()).add(word)
                        waves += max(len(words) for words in banks.values())
                        phases += 1
                issued = layout.num_locals // vector if lanes else 0
                expected.append([issued, waves, phases])
            got = access_wavefronts(shared, layout, 32, store=store)
            assert got.tolist() == expected, (shared, store)
