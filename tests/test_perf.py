"""The static performance report (`tilelang.runtime.perf`, `CompiledKernel.perf`,
`tilelang inspect --perf`): its occupancy arithmetic against cases computed by hand from
the targets' documented limits, the SASS classes of a hand-written snippet, and the loop
facts, bytes in flight, instructions per element and bounds of small kernels whose loop
structure the test knows, each expected number computed here from the kernel's
definition (the SASS instruction count by a different method than the code under
test: from the instructions' addresses). No GPU is needed; the parts that read SASS are
skipped when no disassembler is installed. Speed is never asserted."""

import math
import re
from pathlib import Path

import pytest

import tilelang as tl
from tilelang import cli
from tilelang.runtime import sass
from tilelang.runtime.perf import PerfError, occupancy
from tilelang.runtime.perf_loop import find_main_loop
from tilelang.runtime.perf_trips import trip_count
from tilelang.target import HARDWARE, MB

needs_disassembler = pytest.mark.usefixtures("disassembler")  # the report counts SASS

H100 = HARDWARE["sm_90"]


# --------------------------------------------------------------------------- kernels


@tl.kernel(warps=4)
def tiled_dot(
    x: tl.Tensor[tl.f16, "M", "K"],
    w: tl.Tensor[tl.f16, "K", "N"],
    y: tl.Tensor[tl.f16, "M", "N"],
    BM: tl.constexpr = 16,
    BN: tl.constexpr = 64,
    BK: tl.constexpr = 32,
    S: tl.constexpr = 3,
):
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    acc = tl.zeros([BM, BN], tl.f32)
    for k in tl.range(0, K, BK, stages=S):
        acc = tl.dot(tl.load(x, [bm * BM, k], [BM, BK]), tl.load(w, [k, bn * BN], [BK, BN]), acc)
    tl.store(y, [bm * BM, bn * BN], acc.to(tl.f16))


@tl.kernel(warps=4)
def column_sums(
    x: tl.Tensor[tl.f32, "M", "N"],
    y: tl.Tensor[tl.f32, "N"],
    BM: tl.constexpr = 32,
    BN: tl.constexpr = 128,
    PREFETCH: tl.constexpr = False,
):
    bn = tl.blocks(tl.cdiv(N, BN))
    acc = tl.zeros([BN], tl.f32)
    if PREFETCH:  # the next tile loaded one iteration ahead, carried in registers
        ahead = tl.load(x, [0, bn * BN], [BM, BN])
        for m in tl.range(0, M, BM):
            tile = ahead
            ahead = tl.load(x, [m + BM, bn * BN], [BM, BN])
            acc = acc + tl.sum(tile, axis=0)
    else:
        for m in tl.range(0, M, BM):
            acc = acc + tl.sum(tl.load(x, [m, bn * BN], [BM, BN]), axis=0)
    tl.store(y, [bn * BN], acc)


@tl.kernel(warps=4)
def ragged_row_sums(
    x: tl.Tensor[tl.f32, "B", "N"],
    lengths: tl.Tensor[tl.i32, "B"],
    y: tl.Tensor[tl.f32, "B", "BN"],
    BN: tl.constexpr = 128,
):
    b = tl.blocks(B)
    length = tl.load(lengths, [b])  # the loop bound is read at run time
    acc = tl.zeros([1, BN], tl.f32)
    for j in tl.range(0, length, BN):
        acc = acc + tl.load(x, [b, j], [1, BN])
    tl.store(y, [b, 0], acc)


@tl.kernel(warps=1)
def shifting_sums(
    x: tl.Tensor[tl.f32, "R", "C"], y: tl.Tensor[tl.f32, "R"], P: tl.i32, BC: tl.constexpr = 32
):
    p = tl.blocks(P)  # a persistent grid: P blocks, a scalar argument
    start = 0
    acc = tl.zeros([BC], tl.f32)
    for _ in tl.range(0, 4):
        for c in tl.range(start, C, BC):  # a bound carried by the outer loop
            acc = acc + tl.load(x, [p, c], [BC])
        start = start + 1
    tl.store(y, [p], tl.sum(acc))


def sass_loop_count(text: str) -> int:
    """Instructions from the target of the backward branch spanning the most bytes to
    that branch, from their addresses (16 bytes each since sm_70): a count made without
    `sass.main_loop`."""
    label_at: dict[str, int] = {}
    pending: list[str] = []
    best = 0
    for line in text.splitlines():
        if m := re.match(r"\s*(\.L_x_\d+):", line):
            pending.append(m.group(1))
            continue
        if not (a := re.search(r"/\*([0-9a-f]{4,})\*/", line)):
            continue
        address = int(a.group(1), 16)
        for name in pending:
            label_at[name] = address
        pending = []
        target = re.search(r"BRA\s+`?\(?(\.L_x_\d+)", line)
        if target and label_at.get(target.group(1), address) < address:
            best = max(best, (address - label_at[target.group(1)]) // 16 + 1)
    return best


def sass_of(compiled) -> str:
    return sass.disassemble(compiled.cubin)


# --------------------------------------------------------------------------- occupancy


def test_occupancy_of_a_register_bound_block_on_sm90():
    # 72 registers x 32 lanes = 2304 per warp (a multiple of 256); a scheduler's slice of
    # 65536 / 4 = 16384 registers holds 7 such warps: 28 warps, 7 blocks of 4 warps.
    # Shared: 14336 + 1024 reserved = 15360 (a multiple of 128); 228 KiB / 15360 = 15.
    o = occupancy(H100, threads=128, registers=72, shared_bytes=14336)
    assert (o.by_registers, o.by_shared, o.by_threads, o.by_blocks) == (7, 15, 16, 32)
    assert o.resident == 7 and o.limiters == ("registers",)
    assert o.shared_allocated == 15360


def test_registers_are_counted_per_scheduler_slice():
    # 200 registers: 6400 per warp; 16384 // 6400 = 2 warps per slice, 8 per SM, so 8
    # one-warp blocks, where 65536 // 6400 = 10 for the whole register file.
    o = occupancy(H100, threads=32, registers=200, shared_bytes=0)
    assert o.by_registers == 8 and o.resident == 8
    assert o.by_shared == 228 * 1024 // 1024 and o.by_threads == 64


def test_registers_round_up_to_the_allocation_unit_on_sm86():
    # 33 registers x 32 = 1056 -> 1280 per warp; 16384 // 1280 = 12 per slice, 48 per
    # SM: 6 blocks of 8 warps; 1536 threads / 256 = 6 as well; shared 100 KiB / 1 KiB.
    o = occupancy(HARDWARE["sm_86"], threads=256, registers=33, shared_bytes=0)
    assert (o.by_registers, o.by_threads, o.by_shared, o.by_blocks) == (6, 6, 100, 16)
    assert o.limiters == ("registers", "threads")


def test_shared_memory_rounds_up_to_128_bytes_on_sm80():
    # 40000 + 1024 = 41024 -> 41088 (321 x 128); 164 KiB = 167936; 167936 // 41088 = 4.
    o = occupancy(HARDWARE["sm_80"], threads=128, registers=32, shared_bytes=40000)
    assert o.shared_allocated == 41088 and o.by_shared == 4
    assert o.by_registers == 16 and o.resident == 4 and o.limiters == ("shared",)


def test_a_block_that_cannot_launch_has_no_resident_block():
    # 32 warps x 2304 registers = 73728 > 65536 registers a block may hold.
    assert occupancy(H100, threads=1024, registers=72, shared_bytes=0).resident == 0
    # 5 warps of 255 registers (8192 per warp): the launch check rounds 5 warps up to 8,
    # 65536 registers, which fits; the slices hold 2 warps each, 8 in all: one block.
    assert occupancy(H100, threads=160, registers=255, shared_bytes=0).by_registers == 1


# --------------------------------------------------------------------------- SASS classes

SNIPPET = """
        /*0000*/                   IMAD.MOV.U32 R1, RZ, RZ, c[0x0][0x28] ;
        /*0010*/                   S2R R0, SR_TID.X ;
.L_x_0:
        /*0020*/              @!P0 LDG.E.128.CONSTANT R4, desc[UR4][R2.64] ;
        /*0030*/                   LDG.E R8, desc[UR4][R2.64+0x10] ;
        /*0040*/                   LDG.E.U8 R9, desc[UR4][R2.64+0x20] ;
        /*0050*/                   LDGSTS.E.BYPASS.128 [R10], desc[UR4][R2.64] ;
        /*0060*/                   LDGDEPBAR ;
        /*0070*/                   DEPBAR.LE SB0, 0x1 ;
        /*0080*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0090*/                   LDSM.16.M88.4 R12, [R10] ;
        /*00a0*/                   LDSM.16.MT88.4 R16, [R10+0x800] ;
        /*00b0*/                   PRMT R20, R4, 0x1010, RZ ;
        /*00c0*/                   LOP3.LUT R20, R20, 0xf0000f, R21, 0x6a, !PT ;
        /*00d0*/                   HFMA2 R20, R20, R22, -64, -1024 ;
        /*00e0*/                   HFMA2.MMA R23, -RZ, RZ, 0, 0 ;
        /*00f0*/                   STS.128 [R24], R20 ;
        /*0100*/              @!PT LDS RZ, [RZ] ;
        /*0110*/                   HMMA.16816.F32 R28, R12, R16, R28 ;
        /*0120*/                   IMMA.16832.S8.S8 R32, R12, R16, R32 ;
        /*0130*/                   UIADD3 UR6, UR6, 0x1, URZ ;
        /*0140*/                   VIADD R2, R2, 0x40 ;
        /*0150*/                   ISETP.GE.U32.AND P0, PT, R2, UR7, PT ;
        /*0160*/                   FFMA R40, R41, R42, R40 ;
        /*0170*/                   MUFU.EX2 R43, R40 ;
        /*0180*/                   SHFL.BFLY PT, R44, R40, 0x1, 0x1f ;
        /*0190*/                   LDL R45, [R1] ;
        /*01a0*/              @!P0 BRA `(.L_x_0) ;
        /*01b0*/                   STG.E.64 desc[UR4][R2.64], R28 ;
        /*01c0*/                   EXIT ;
.L_x_1:
        /*01d0*/                   BRA `(.L_x_1);
        /*01e0*/                   NOP;
        /*01f0*/                   NOP;
"""


def test_a_hand_written_loop_is_classified_by_class_and_width():
    mix = sass.instruction_mix(sass.opcodes(sass.main_loop(SNIPPET)))
    assert mix == {
        "global loads": {"LDG.128": 1, "LDG.32": 1, "LDG.8": 1, "LDGSTS.128": 1},
        "shared loads/stores": {"LDS": 1, "STS": 1},
        "ldmatrix (LDSM)": {"LDSM": 2},
        "tensor core (HMMA/IMMA)": {"HMMA": 1, "IMMA": 1},
        "dequantization (LOP3/PRMT/half2/cvt)": {"HFMA2": 1, "LOP3": 1, "PRMT": 1},
        "integer/address": {"HFMA2.MMA": 1, "ISETP": 1, "UIADD3": 1, "VIADD": 1},
        "float": {"FFMA": 1, "MUFU": 1},
        "warp shuffles/votes": {"SHFL": 1},
        "barriers": {"BAR": 1, "DEPBAR": 1, "LDGDEPBAR": 1},
        "branches": {"BRA": 1},
        "local memory (spills)": {"LDL": 1},
    }
    assert list(mix) == [c for c in sass.CLASSES if c in mix]  # the report's order


def test_global_load_widths_and_mma_flops():
    widths = {
        "LDG.E.128.CONSTANT": 16,
        "LDG.E.64": 8,
        "LDG.E": 4,
        "LDG.E.U16": 2,
        "LDG.E.S8": 1,
        "LDGSTS.E.BYPASS.LTC128B.128": 16,  # LTC128B is a cache hint, not a width
        "STG.E.128": None,
    }
    assert {op: sass.global_load_bytes(op) for op in widths} == widths
    # m x n x k multiply-adds, 2 flops each.
    assert sass.mma_flops("HMMA.16816.F32") == 2 * 16 * 8 * 16
    assert sass.mma_flops("HMMA.1688.F32.TF32") == 2 * 16 * 8 * 8
    assert sass.mma_flops("IMMA.16832.S8.S8") == 2 * 16 * 8 * 32
    assert sass.mma_flops("IMMA.8816.S8.S8") == 2 * 8 * 8 * 16
    assert sass.mma_flops("LDSM.16.M88.4") is None


def test_shared_memory_bytes_of_a_warp_instruction():
    """32 lanes' bytes, in whole 128-byte wavefronts; ldmatrix 128 bytes an 8x8 matrix
    of 16-bit elements; cp.async what it writes to shared memory."""
    moved = {
        "LDS.128": 32 * 16,
        "LDS.64": 32 * 8,
        "LDS": 32 * 4,
        "LDS.U16": 128,  # 64 bytes, one wavefront
        "STS.128": 32 * 16,
        "ATOMS.ADD": 32 * 4,
        "LDSM.16.M88.4": 4 * 8 * 8 * 2,
        "LDSM.16.MT88.2": 2 * 8 * 8 * 2,
        "LDSM.16.M88": 8 * 8 * 2,
        "LDGSTS.E.BYPASS.LTC128B.128": 32 * 16,
        "LDGSTS.E.64": 32 * 8,
        "LDG.E.128": None,
        "HMMA.16816.F32": None,
    }
    assert {op: sass.shared_bytes(op) for op in moved} == moved


def test_the_trap_after_exit_is_not_a_loop_and_not_kernel_code():
    straight = SNIPPET.replace(".L_x_0:\n", "").replace("@!P0 BRA `(.L_x_0) ;", "NOP ;")
    assert sass.main_loop(straight) is None
    body = sass.kernel_body(SNIPPET)
    assert ".L_x_1" not in body and "NOP" not in body
    assert sass.opcodes(body)["EXIT"] == 1 and sass.opcodes(body)["BRA"] == 1


def test_loops_lists_every_loop_in_program_order_and_main_loop_is_the_largest():
    two = SNIPPET.replace(
        "        /*01b0*/                   STG.E.64 desc[UR4][R2.64], R28 ;\n",
        ".L_x_2:\n"
        "        /*01b0*/                   LDG.E R8, desc[UR4][R2.64] ;\n"
        "        /*01b8*/              @!P0 BRA `(.L_x_2) ;\n",
    )
    found = sass.loops(two)
    assert [sass.opcodes(loop)["BRA"] for loop in found] == [1, 1]
    assert sass.opcodes(found[1]) == {"LDG.E": 1, "BRA": 1}
    assert sass.main_loop(two) == found[0]  # the larger one
    assert all(sass.loads_global(loop) for loop in found)
    assert not sass.loads_global(".L_x_9:\n        /*0000*/  FFMA R1, R2, R3, R4 ;")


BRANCHY = """
.L_x_0:
        /*0000*/                   HMMA.16816.F32 R4, R8, R12, R4 ;
        /*0010*/              @P0 BRA `(.L_x_1) ;
        /*0020*/                   FSEL R1, R1, -INF , P1 ;
        /*0030*/                   FSEL R2, R2, -INF , P1 ;
        /*0040*/                   FSEL R3, R3, -INF , P1 ;
.L_x_1:
        /*0050*/              @!P2 BRA `(.L_x_2) ;
        /*0060*/                   FADD R5, R5, R6 ;
        /*0070*/                   BRA `(.L_x_3) ;
.L_x_2:
        /*0080*/                   FMUL R5, R5, R6 ;
        /*0090*/                   FMUL R7, R7, R6 ;
        /*0098*/                   FMUL R8, R8, R6 ;
.L_x_3:
        /*00a0*/                   SHFL.BFLY PT, R9, R5, 0x1, 0x1f ;
.L_x_4:
        /*00b0*/                   IADD3 R10, R10, 0x1, RZ ;
        /*00c0*/              @P3 BRA `(.L_x_4) ;
        /*00d0*/              @!P4 BRA `(.L_x_0) ;
"""


def test_the_shortest_path_takes_the_branches_that_skip_work():
    """The guarded FSELs are skipped, the shorter arm of the if/else taken (an
    unconditional BRA jumps), the nested loop counted once, the back edge kept."""
    path = sass.opcodes(sass.shortest_path(sass.loops(BRANCHY)[0]))
    assert path == {
        "HMMA.16816.F32": 1,
        "BRA": 5,  # two forward, the if's jump to its join, the nested loop's, the back edge
        "FADD": 1,
        "SHFL.BFLY": 1,
        "IADD3": 1,
    }
    straight = SNIPPET.split(".L_x_1:")[0]
    assert sass.shortest_path(sass.main_loop(straight)) == sass.main_loop(straight)


@tl.kernel(warps=4)
def two_passes(
    x: tl.Tensor[tl.f32, "M", "N"],
    y: tl.Tensor[tl.f32, "N"],
    BM: tl.constexpr = 32,
    BN: tl.constexpr = 128,
):
    """Column sums of x, then of sin(x)·cos(x): two loops loading the same tiles, the
    second with more arithmetic a tile (the larger SASS loop)."""
    bn = tl.blocks(tl.cdiv(N, BN))
    acc = tl.zeros([BN], tl.f32)
    for m in tl.range(0, M, BM):
        acc = acc + tl.sum(tl.load(x, [m, bn * BN], [BM, BN]), axis=0)
    for m in tl.range(0, M, BM):
        tile = tl.load(x, [m, bn * BN], [BM, BN])
        acc = acc + tl.sum(tl.sin(tile) * tl.cos(tile), axis=0)
    tl.store(y, [bn * BN], acc)


@pytest.mark.usefixtures("disassembler")
def test_the_report_counts_the_sass_loop_of_the_block_ir_main_loop():
    """Two loops load as much: the block-IR main loop is the first, and its SASS loop is
    the first that loads, not the largest loop (the second's sin and cos)."""
    compiled = two_passes.compile(target="sm_90", assume="all")
    report = compiled.perf(M=4096, N=8192)
    loading = sass.loops(sass.disassemble(compiled.cubin))
    assert len(loading) == 2 and all(sass.loads_global(loop) for loop in loading)
    first, second = (sum(sass.opcodes(loop).values()) for loop in loading)
    assert first < second
    assert report.instructions_per_iteration * report.unroll == first
    assert "2 loops load global memory" in " ".join(report.notes)


# --------------------------------------------------------------------------- block IR


def test_a_load_carried_to_the_next_iteration_is_one_iteration_ahead():
    plain = find_main_loop(column_sums.stages(PREFETCH=False)["plan_registers"])
    carried = find_main_loop(column_sums.stages(PREFETCH=True)["plan_registers"])
    assert [(x.tensor, x.kind, x.shape, x.ahead, x.depth) for x in plain.loads] == [
        ("x", "load", (32, 128), 0, 1)
    ]
    assert [(x.tensor, x.kind, x.ahead, x.depth) for x in carried.loads] == [("x", "load", 1, 1)]


@tl.kernel(warps=4)
def stream_then_add(
    w: tl.Tensor[tl.f16, "K", "N"],
    parts: tl.Tensor[tl.f32, "S", "N"],
    y: tl.Tensor[tl.f32, "N"],
    S_: tl.constexpr = 4,
):
    """A split-K kernel's shape: a k loop streaming w, then a loop adding wider slices."""
    bn = tl.blocks(tl.cdiv(N, 128))
    acc = tl.zeros([128], tl.f32)
    for k in tl.range(0, K, 16):
        acc = acc + tl.sum(tl.load(w, [k, bn * 128], [16, 128]).to(tl.f32), axis=0)
    for s in tl.range(0, S_, unroll=1):
        acc = acc + tl.sum(tl.load(parts, [s * 32, bn * 128], [32, 128]), axis=0)
    tl.store(y, [bn * 128], acc)


def test_the_main_loop_is_the_one_that_loads_the_per_tensor():
    """The second loop loads more bytes an iteration (32 x 128 f32 against 16 x 128 f16):
    it is the main loop unless the report is asked per weight of w."""
    planned = stream_then_add.stages()["plan_registers"]
    assert {x.tensor for x in find_main_loop(planned).loads} == {"parts"}
    assert {x.tensor for x in find_main_loop(planned, "w").loads} == {"w"}
    assert {x.tensor for x in find_main_loop(planned, "y").loads} == {"parts"}  # none loads y


@pytest.mark.parametrize("m", [100, 128, 0])
def test_the_trip_count_is_pythons_range_at_the_launch(m):
    fn = column_sums.stages()["plan_registers"]
    main = find_main_loop(fn)
    assert trip_count(fn, main, {"M": m, "N": 256}) == math.ceil(m / 32)


def test_a_loop_free_kernel_is_one_iteration_of_its_loads(example):
    vector_add = example("vector_add").vector_add
    main = find_main_loop(vector_add.stages()["plan_registers"])
    assert main.loop is None
    assert [(x.tensor, x.shape, x.depth) for x in main.loads] == [
        ("x", (1024,), 1),
        ("y", (1024,), 1),
    ]


# --------------------------------------------------------------------------- the report

LAUNCH = {"M": 128, "K": 512, "N": 256}


@needs_disassembler
@pytest.mark.parametrize("stages", [1, 2, 3, 4])
def test_bytes_in_flight_and_instructions_per_element_of_a_pipelined_dot(stages):
    compiled = tiled_dot.compile(target="sm_90", S=stages)
    report = compiled.perf(per="w", **LAUNCH)
    BM, BN, BK, warps = 16, 64, 32, 4
    # From the definition: per iteration a BM x BK tile of x and a BK x BN tile of w,
    # f16; with stages=S >= 2 each is copied S - 1 iterations ahead (S - 1 in flight).
    depth = max(1, stages - 1)
    tile_x, tile_w = BM * BK * 2, BK * BN * 2
    assert {(r.tensor, r.bytes, r.depth) for r in report.loads} == {
        ("x", tile_x, depth),
        ("w", tile_w, depth),
    }
    assert report.in_flight_block == (tile_x + tile_w) * depth
    assert report.iterations == LAUNCH["K"] // BK
    assert report.grid == (LAUNCH["M"] // BM, LAUNCH["N"] // BN)
    # One pass of the SASS loop, counted from its addresses, is `unroll` iterations.
    per_iteration = sass_loop_count(sass_of(compiled)) / report.unroll
    assert report.instructions_per_iteration == per_iteration
    assert report.instructions_per_element == pytest.approx(per_iteration * warps / (BK * BN))
    # A BM x BN x BK dot of m16n8k16 atoms over 4 warps: BM*BN*BK / 2048 / 4 per warp.
    hmma = report.mix["tensor core (HMMA/IMMA)"]["HMMA"]
    assert hmma == BM * BN * BK / (16 * 8 * 16) / warps


@needs_disassembler
def test_the_bounds_follow_the_documented_model():
    compiled = tiled_dot.compile(target="sm_90", S=3)
    report = compiled.perf(per="w", **LAUNCH)
    M, K, N = LAUNCH["M"], LAUNCH["K"], LAUNCH["N"]
    blocks = (M // 16) * (N // 64)
    iterations = K // 32
    nbytes = (M * K + K * N + M * N) * 2  # x and w read, y written, f16
    floor = nbytes / H100.dram_bytes_per_s
    # All 32 blocks fit at once; each keeps 2 tiles of x and of w in flight.
    in_flight = blocks * (16 * 32 + 32 * 64) * 2 * 2
    latency = nbytes * H100.dram_latency_s / in_flight
    per_iteration = sass_loop_count(sass_of(compiled)) / report.unroll
    issue = math.ceil(blocks / H100.sms) * 4 * iterations * per_iteration / (4 * H100.clock_hz)
    # Per warp and iteration through shared memory: each cp.async of 16 bytes a lane,
    # each ldmatrix 128 bytes a matrix, each 32-bit LDS a wavefront.
    loop = sass.shortest_path(sass.main_loop(sass_of(compiled)))
    sizes = {r"LDGSTS\S*\.128": 512, r"LDSM\S*\.4": 512, r"LDSM\S*\.2": 256, r"LDS ": 128}
    moved = sum(n * len(re.findall(pattern, loop)) for pattern, n in sizes.items())
    assert moved  # a pipelined dot stages and reads its tiles
    shared = math.ceil(blocks / H100.sms) * 4 * iterations * moved / report.unroll
    shared /= 128 * H100.clock_hz
    flops = 2 * M * N * K  # no padding: every tile is full
    tensor = flops / (H100.tensor_flops * 2 / 3)  # mma.sync: 2/3 of H100's wgmma peak
    seconds = {b.name: b.seconds for b in report.bounds}
    assert seconds == pytest.approx(
        {
            "DRAM floor": floor,
            "memory latency": latency,
            "instruction issue": issue,
            "special functions": 0.0,  # no MUFU in a dot's loop
            "shared memory": shared,
            "tensor cores": tensor,
            "atomics on one address": 0.0,  # no atomic
        }
    )
    assert report.bytes_total == nbytes and report.mma_flops == flops
    assert report.predicted_seconds == pytest.approx(max(floor, latency, issue, shared, tensor))
    assert report.dram_fraction == pytest.approx(floor / report.predicted_seconds)
    assert report.binds == max(seconds, key=seconds.get)
    assert report.occupancy.registers == compiled.resources.registers
    assert report.occupancy.shared_bytes == compiled.thread.shared_bytes
    assert report.waves == pytest.approx(blocks / (report.occupancy.resident * H100.sms))
    # Twice the latency halves the bandwidth the same bytes in flight sustain.
    slower = compiled.perf(per="w", latency_ns=1200, **LAUNCH)
    assert slower.bounds[1].seconds == pytest.approx(2 * latency)
    assert report.to_dict()["occupancy"]["resident"] == report.occupancy.resident


@tl.kernel(warps=lambda BN, **_: BN // 32)
def decays(
    x: tl.Tensor[tl.f32, "M", "N"],
    y: tl.Tensor[tl.f32, "N"],
    BM: tl.constexpr = 8,
    BN: tl.constexpr = 128,
):
    """Σ over rows of 2^x, a thread per column (BN / 32 warps): BM MUFU a thread an
    iteration."""
    bn = tl.blocks(tl.cdiv(N, BN))
    acc = tl.zeros([BN], tl.f32)
    for m in tl.range(0, M, BM):
        acc = acc + tl.sum(tl.fast_exp2(tl.load(x, [m, bn * BN], [BM, BN])), axis=0)
    tl.store(y, [bn * BN], acc)


@needs_disassembler
def test_the_special_function_bound_counts_a_warp_mufu_as_eight_cycles():
    """Each thread takes BM·BN / 128 exponentials an iteration, one MUFU.EX2 each: the
    unit gives 16 results a cycle per SM, so the busiest SM needs blocks x iterations x
    BM·BN / 16 cycles, whatever else the loop issues."""
    compiled = decays.compile(target="sm_90")
    launch = dict(M=4096, N=128 * 264)  # 264 blocks: 2 on the busiest of 132 SMs
    report = compiled.perf(per="x", **launch)
    loop = sass.main_loop(sass_of(compiled))
    mufu = len(re.findall(r"\bMUFU\.EX2\b", loop)) / report.unroll
    assert mufu == 8 * 128 / 128  # BM·BN exponentials over 128 threads
    special = 2 * 4 * (4096 // 8) * mufu * 32 / (16 * H100.clock_hz)
    assert {b.name: b.seconds for b in report.bounds}["special functions"] == pytest.approx(special)
    assert "MUFU" in str(report)


@needs_disassembler
def test_a_lone_warp_issues_from_one_scheduler_and_uses_its_special_function_unit():
    """One block of one warp per SM: a quarter of the SM's issue slots and of its
    special-function rate (4 results a cycle) serve it."""
    compiled = decays.compile(target="sm_90", BN=32)  # one warp
    report = compiled.perf(per="x", M=4096, N=32 * 100)  # 100 blocks on 132 SMs
    loop = sass.main_loop(sass_of(compiled))
    per_iteration = sass_loop_count(sass_of(compiled)) / report.unroll
    mufu = len(re.findall(r"\bMUFU\.EX2\b", loop)) / report.unroll
    iterations = 4096 // 8
    seconds = {b.name: b.seconds for b in report.bounds}
    assert seconds["instruction issue"] == pytest.approx(
        iterations * per_iteration / (1 * H100.clock_hz)
    )
    assert seconds["special functions"] == pytest.approx(
        iterations * mufu * 32 / (4 * H100.clock_hz)
    )
    assert "1 of 4 schedulers with a warp" in str(report)


@needs_disassembler
def test_a_tile_larger_than_the_tensor_is_clipped_to_it():
    compiled = tiled_dot.compile(target="sm_90", assume={"M": 1, "K": 128, "N": 128}, S=3)
    report = compiled.perf(M=1, K=512, N=256)
    x = next(r for r in report.loads if r.tensor == "x")
    # One row of the 16 x 32 tile of x exists: 32 f16, two tiles in flight.
    assert (x.elements, x.bytes, x.clipped, x.in_flight) == (32, 64, True, 128)
    w = next(r for r in report.loads if r.tensor == "w")
    assert (w.elements, w.clipped) == (32 * 64, False)


@needs_disassembler
def test_a_loop_free_kernel_counts_its_whole_body_once(example):
    vector_add = example("vector_add").vector_add
    compiled = vector_add.compile(target="sm_90")
    report = compiled.perf(N=1 << 20, per="x")
    text = sass_of(compiled)
    # Instructions before the trap that ends the kernel, by address.
    trap = re.search(r"(\.L_x_\d+):\s*\n\s*/\*([0-9a-f]+)\*/\s+BRA `\(\1\)", text)
    count = int(trap.group(2), 16) // 16
    assert report.iterations == 1 and report.instructions_per_iteration == count
    assert report.in_flight_block == 2 * 1024 * 4
    assert report.instructions_per_element == pytest.approx(count * 4 / 1024)


@needs_disassembler
def test_a_loop_bound_read_at_run_time_takes_its_trip_count_from_the_caller():
    compiled = ragged_row_sums.compile(target="sm_90")
    with pytest.raises(PerfError, match=r"reads from tensor 'lengths' at run time.*iterations="):
        compiled.perf(B=128, N=4096)
    report = compiled.perf(B=128, N=4096, iterations=32, per="x")
    assert report.iterations == 32
    x = next(r for r in report.loads if r.tensor == "x")
    assert (x.elements, x.bytes) == (128, 512)
    with pytest.raises(PerfError, match=r"iterations: expected a positive int .* got 0"):
        compiled.perf(B=128, N=4096, iterations=0)


def test_a_bound_carried_by_a_loop_or_a_missing_scalar_says_what_to_pass():
    compiled = shifting_sums.compile(target="sm_90")
    source = Path(__file__).read_text().splitlines()
    line = source.index("    for _ in tl.range(0, 4):") + 1  # the loop that carries start
    carried = rf"test_perf.py:{line}:\d+: 'start' is carried by this loop .*`iterations=`"
    with pytest.raises(PerfError, match=carried):
        compiled.perf(R=1024, C=4096, P=132)
    with pytest.raises(PerfError, match=r"the grid uses 'P', which was not given: .* P=\.\.\."):
        compiled.perf(R=1024, C=4096, iterations=128)
    assert compiled.perf(R=1024, C=4096, P=132, iterations=128).iterations == 128


# --------------------------------------------------------------------------- errors


def test_a_tensor_the_main_loop_does_not_load_is_a_clear_error():
    compiled = tiled_dot.compile(target="sm_90")
    with pytest.raises(
        PerfError, match=r"does not load tensor 'y' in its main loop .*it loads w, x"
    ):
        compiled.perf(per="y", **LAUNCH)
    with pytest.raises(PerfError, match=r"'nope' is not a tensor of tiled_dot"):
        compiled.perf(per="nope", **LAUNCH)


def test_a_missing_disassembler_is_a_clear_error(monkeypatch):
    compiled = tiled_dot.compile(target="sm_90")
    monkeypatch.setattr(sass, "find_disassembler", lambda: None)
    with pytest.raises(sass.SassUnavailableError, match="nvidia-cuda-nvdisasm"):
        compiled.perf(per="w", **LAUNCH)


def test_launches_that_do_not_fit_the_kernel_are_clear_errors():
    compiled = tiled_dot.compile(target="sm_90")  # every size assumed a multiple of 128
    with pytest.raises(PerfError, match="missing N"):
        compiled.perf(M=128, K=512)
    with pytest.raises(PerfError, match="Q is not a size or scalar"):
        compiled.perf(Q=1, **LAUNCH)
    with pytest.raises(PerfError, match=r"M=1 is not a multiple of 128.*assume"):
        compiled.perf(M=1, K=512, N=256)
    with pytest.raises(ValueError, match="exists for a GPU target"):
        tiled_dot.compile().perf(**LAUNCH)
    with pytest.raises(PerfError, match="no hardware facts for sm_100"):
        tiled_dot.compile(target="sm_100").perf(**LAUNCH)


def test_hardware_rows_name_their_card_and_agree_with_their_peaks():
    for name, hw in HARDWARE.items():
        assert hw.card and hw.sms > 0, name
        assert hw.l2_bytes >= MB and hw.max_threads_per_sm in (1536, 2048)
    # The H100 row's peak is its SMs x 4096 f16 flops per cycle at the clock it states;
    # mma.sync, all tilelang emits, reaches 2/3 of it; elsewhere the data sheet's peak.
    assert H100.sms * 4096 * H100.clock_hz == pytest.approx(H100.tensor_flops, rel=1e-3)
    assert H100.mma_flops == pytest.approx(H100.tensor_flops * 2 / 3)
    assert HARDWARE["sm_80"].mma_flops == HARDWARE["sm_80"].tensor_flops
    assert all(hw.sfu_per_cycle == 16 for hw in HARDWARE.values())


# --------------------------------------------------------------------------- the CLI


@needs_disassembler
def test_inspect_perf_prints_the_report_of_an_example(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TILELANG_CACHE_DIR", str(tmp_path))
    args = ["inspect", "examples/matmul.py:matmul", "--arch", "sm_90", "--perf", "--per", "b"]
    sizes = ["--size", "M=4096", "--size", "K=4096", "--size", "N=4096"]
    assert cli.main(args + sizes) == 0
    out = capsys.readouterr().out
    assert out.startswith("==== static performance report: matmul on sm_90 (H100 SXM5 80GB)")
    for text in ("not a measurement", "blocks per SM:", "ldmatrix (LDSM)", "memory latency"):
        assert text in out
    assert "predicted" in out and "IR after" not in out
    # M=1 specializes the kernel on M % 1, as a launch would, so the report can be made.
    one = ["--size", "M=1", "--size", "K=4096", "--size", "N=4096"]
    assert cli.main(args + one) == 0
    assert "M=1 K=4096 N=4096: grid 1 x 32" in capsys.readouterr().out  # BN = 128


def test_inspect_perf_errors_name_what_is_wrong(capsys):
    base = ["inspect", "examples/matmul.py:matmul"]
    assert cli.main([*base, "--size", "M=1"]) == 1
    assert "go with --perf" in capsys.readouterr().err
    assert cli.main([*base, "--iterations", "3"]) == 1
    assert "go with --perf" in capsys.readouterr().err
    assert cli.main([*base, "--perf", "--size", "M=x"]) == 1
    assert "--size expects NAME=INT" in capsys.readouterr().err
