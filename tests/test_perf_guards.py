"""The static performance report on loops under an `if` (`tilelang.runtime.perf_guards`,
`perf_trips`): a loop counts in the blocks that take its `if`s (decided per block from
the block index, or from `tl.arrive`'s count), the other blocks pay only their work
outside it, and an `if` the report cannot decide is counted as taken, with a note.
Expected trip counts are computed here with Python loops over the grid from the
kernels' definitions, never from the code under test. The trip-count tests need no
disassembler; the reports do."""

import math

import pytest
from conftest import marked_line

import tilelang as tl
from tilelang.runtime import perf_trips
from tilelang.runtime.perf_loop import find_main_loop
from tilelang.runtime.perf_trips import loop_trips
from tilelang.target import HARDWARE

needs_disassembler = pytest.mark.usefixtures("disassembler")

H100 = HARDWARE["sm_90"]
ROWS = 16  # rows of x a block sums
COLS = 64  # columns a step loads


@tl.kernel(warps=4)
def guarded(
    x: tl.Tensor[tl.f32, "M", "N"],
    y: tl.Tensor[tl.f32, "M"],
    flag: tl.Tensor[tl.i32, 1],
    count: tl.Tensor[tl.i32, 4],
    CASE: tl.constexpr = 0,
):
    """Row sums of x over a grid of (row blocks, 4); the column loop runs where the
    `if` of CASE holds (in its `else` for CASE 2), else the block adds nothing."""
    r, q = tl.blocks(tl.cdiv(M, ROWS), 4)
    acc = tl.zeros([ROWS, COLS], tl.f32)
    if CASE == 0:
        cond = r == 0
    elif CASE == 1:
        cond = r < 3
    elif CASE == 2:
        cond = q == 1  # the loop is in the else branch: q != 1
    elif CASE == 3:
        cond = (r * 4 + q) % 3 == 0  # no single index against a constant
    elif CASE == 4:
        cond = r == tl.num_blocks(0) - 1
    elif CASE == 5:
        cond = tl.arrive(count, [q]) == tl.num_blocks(0) - 1  # the last of each column
    else:
        cond = tl.load(flag, [0]) > 0  # read at run time
    if CASE == 2:
        if cond:
            acc = acc * 2.0
        else:
            for n in tl.range(0, N, COLS):
                acc = acc + tl.load(x, [r * ROWS, n], [ROWS, COLS])
    elif cond:  # <- guard
        for n in tl.range(0, N, COLS):
            acc = acc + tl.load(x, [r * ROWS, n], [ROWS, COLS])
    tl.store(y, [r * ROWS], tl.sum(acc, axis=1))


@tl.kernel(warps=4)
def nested_ifs(x: tl.Tensor[tl.f32, "M", "N"], y: tl.Tensor[tl.f32, "M"]):
    """Two ifs on two grid dimensions, and one inside a loop on the loop's variable."""
    r, q = tl.blocks(tl.cdiv(M, ROWS), 4)
    acc = tl.zeros([ROWS, COLS], tl.f32)
    if r < 2:  # noqa: SIM102  (two ifs: two guards, merged by the report)
        if q == 3:
            for i in tl.range(0, 4):
                if i < r + 1:
                    for n in tl.range(0, N, COLS):
                        acc = acc + tl.load(x, [r * ROWS, n], [ROWS, COLS])
    tl.store(y, [r * ROWS], tl.sum(acc, axis=1))


CONDITIONS = {
    0: lambda r, q, rows: r == 0,
    1: lambda r, q, rows: r < 3,
    2: lambda r, q, rows: q != 1,
    3: lambda r, q, rows: (r * 4 + q) % 3 == 0,
    4: lambda r, q, rows: r == rows - 1,
    # one block of each q takes it (the last to arrive at count[q])
    5: lambda r, q, rows: r == rows - 1,
}


def _trips(kernel, launch, notes=None, **constexprs):
    fn = list(kernel.stages(**constexprs).values())[-1]
    main = find_main_loop(fn)
    loop = main.loops[-1]  # the innermost: the column loop
    return loop_trips(fn, loop, launch, notes)


@pytest.mark.parametrize("case", sorted(CONDITIONS))
@pytest.mark.parametrize("m", [64, 16 * 2000])  # 16 blocks; 8000, more than a sample
def test_a_loop_under_an_if_counts_in_the_blocks_that_take_it(case, m):
    n = 1024
    rows = -(-m // ROWS)
    steps = len(range(0, n, COLS))
    taken = [CONDITIONS[case](r, q, rows) for r in range(rows) for q in range(4)]
    notes: list[str] = []
    found = _trips(guarded, {"M": m, "N": n}, notes, CASE=case)
    assert found.mean == pytest.approx(sum(taken) * steps / (rows * 4))
    assert found.high == steps and found.low == (steps if all(taken) else 0)
    assert f"{sum(taken)} of the {rows * 4} blocks take it" in notes[0]
    if case == 5:
        assert "tl.arrive" in notes[0] and "zero at launch" in notes[0]


def test_an_if_on_a_value_read_at_run_time_counts_as_taken_and_says_so():
    notes: list[str] = []
    found = _trips(guarded, {"M": 64, "N": 1024}, notes, CASE=6)
    assert found.mean == found.high == 1024 // COLS
    line = marked_line(guarded, "# <- guard")
    assert any(
        f"under the if at test_perf_guards.py:{line}" in note
        and "reads" in note
        and "'flag'" in note
        and "as if every block did" in note
        for note in notes
    ), notes


@pytest.mark.parametrize("m", [16 * 5, 16 * 3000])
def test_nested_ifs_and_an_if_inside_a_loop_count_per_block_and_iteration(m):
    n = 512
    rows = -(-m // ROWS)
    steps = len(range(0, n, COLS))
    total = 0
    for r in range(rows):
        for q in range(4):
            if r < 2 and q == 3:
                total += sum(steps for i in range(4) if i < r + 1)
    found = _trips(nested_ifs, {"M": m, "N": n})
    assert found.mean == pytest.approx(total / (rows * 4))
    assert found.high == 2 * steps  # r = 1: i = 0 and 1


def test_a_sparse_if_is_exact_however_large_the_grid(monkeypatch):
    """The blocks an `if` selects are enumerated, not sampled: an even sample of a large
    grid would miss the one block that runs the loop."""
    monkeypatch.setattr(perf_trips, "EXACT_BLOCKS", 16)
    rows = 100_000
    found = _trips(guarded, {"M": 16 * rows, "N": 640}, CASE=0)
    assert found.mean == pytest.approx(4 * 10 / (rows * 4))  # r == 0: the 4 blocks of q
    assert found.high == 10


# --------------------------------------------------------------------------- reports


@tl.kernel(warps=4)
def first_block_extra(
    x: tl.Tensor[tl.f32, "N"], y: tl.Tensor[tl.f32, "N"], out: tl.Tensor[tl.f32, 1]
):
    """A streaming kernel whose block 0 also sums the first 64K elements."""
    b = tl.blocks(tl.cdiv(N, 1024))
    tl.store(y, [b * 1024], tl.load(x, [b * 1024], [1024]) * 2.0)
    if b == 0:
        acc = tl.zeros([1024], tl.f32)
        for s in tl.range(0, 65536, 1024):  # <- extra
            acc = acc + tl.load(x, [s], [1024])
        tl.store(out, [0], tl.sum(acc, keepdims=True))


@tl.kernel(warps=4)
def streaming(x: tl.Tensor[tl.f32, "N"], y: tl.Tensor[tl.f32, "N"], out: tl.Tensor[tl.f32, 1]):
    """`first_block_extra` without the extra sum."""
    b = tl.blocks(tl.cdiv(N, 1024))
    tl.store(y, [b * 1024], tl.load(x, [b * 1024], [1024]) * 2.0)


@needs_disassembler
def test_a_loop_only_block_0_runs_is_not_charged_to_every_block():
    """The user's reproducer: 65536 blocks stream x to y (the DRAM floor binds), and
    block 0 also runs a 64-iteration sum. The busiest SM runs its ceil(B / SMs) blocks'
    streaming work plus block 0's 64 iterations, not 64 iterations for each block."""
    n = 1 << 26
    blocks = n // 1024
    report = first_block_extra.compile(target="sm_90a").perf(N=n)
    plain = streaming.compile(target="sm_90a").perf(N=n)
    nbytes = 2 * n * 4 + 4
    assert report.bytes_total == nbytes
    assert report.binds == plain.binds == "DRAM floor"
    assert report.predicted_seconds == pytest.approx(nbytes / H100.dram_bytes_per_s)
    assert report.loop == "no loop"  # the headline is the work every block does
    outside, extra = report.loops
    line = marked_line(first_block_extra, "# <- extra")
    assert extra.where == f"test_perf_guards.py:{line}"
    assert extra.iterations == pytest.approx(64 / blocks) and extra.most == 64
    busiest = math.ceil(blocks / H100.sms)
    issued = 4 * (
        busiest * outside.instructions_per_iteration + 64 * extra.instructions_per_iteration
    )
    seconds = {b.name: b.seconds for b in report.bounds}
    assert seconds["instruction issue"] == pytest.approx(issued / (4 * H100.clock_hz))
    assert any("1 of the 65536 blocks take it" in note for note in report.notes)


@tl.func
def _add(a, b):
    return a + b


@tl.kernel(warps=4)
def block_totals(
    x: tl.Tensor[tl.f32, "N"],
    totals: tl.Tensor[tl.f32, "NBLK"],
    prefix: tl.Tensor[tl.f32, "NBLK"],
    count: tl.Tensor[tl.i32, 1],
):
    """A cumsum's first pass (the guide's `tl.arrive` pattern): each block stores its
    total; the last block to arrive scans the totals."""
    b = tl.blocks(tl.cdiv(N, 1024))
    tl.store(totals, [b], tl.sum(tl.load(x, [b * 1024], [1024]), keepdims=True))
    if tl.arrive(count, [0]) == tl.num_blocks(0) - 1:
        carry = tl.zeros([1], tl.f32)
        for s in tl.range(0, NBLK, 1024):
            t = tl.load(totals, [s], [1024])
            tl.store(prefix, [s], tl.associative_scan(_add, t, axis=0) - t + carry)
            carry = carry + tl.sum(t, keepdims=True)
        tl.store(count, [0], tl.zeros([1], tl.i32))


@needs_disassembler
def test_the_last_block_to_arrive_runs_its_scan_alone():
    """8M elements: 8192 blocks each store a total; one block scans the 8192 totals in 8
    steps. The report counts the scan in that block only: near the DRAM floor (the
    user's report said 2.4 ms of shared memory against a 20 us floor)."""
    n, blocks = 1 << 23, (1 << 23) // 1024
    report = block_totals.compile(target="sm_90a").perf(N=n, NBLK=blocks)
    outside, scan = report.loops
    assert scan.iterations == pytest.approx(8 / blocks) and scan.most == 8
    busiest = math.ceil(blocks / H100.sms)
    moved = 4 * (busiest * outside.shared_per_iteration + 8 * scan.shared_per_iteration)
    seconds = {b.name: b.seconds for b in report.bounds}
    assert seconds["shared memory"] == pytest.approx(moved / (128 * H100.clock_hz))
    floor = (n * 4 + 3 * blocks * 4 + 4) / H100.dram_bytes_per_s  # x; totals twice; prefix
    assert report.predicted_seconds < 2 * floor
