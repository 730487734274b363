"""Atomics that return the old values: `tl.atomic_add/max/min` and the new
`tl.atomic_xchg` and `tl.atomic_cas` give a tile of what each element held just before
its own update (0 where masked off or outside the tensor).

The oracles are numpy, written from the specification: a fetch-add on a counter per
expert hands out exactly the slots 0..count-1 of that expert, whatever the order of the
blocks (the CPU backend runs blocks on several host threads), and in the interpreter's
order (program order, blocks in grid order) the k-th token of an expert gets slot k; of
the blocks racing to swap 0 for their id, exactly one sees 0; exchanges hand every
value on exactly once. Then the text form and the verifier, the language's errors at
the user's line, and the CUDA source: ``atom.global.*`` only where the result is read,
``red.global.*`` otherwise, on sm_80 and sm_90a.
"""

import numpy as np
import pytest
from conftest import ATOMIC_TEXT, NUMPY_TYPES, marked_line, statements

import tilelang as tl
from tilelang import TileLangError
from tilelang.ir import thread as t
from tilelang.ir.parser import parse_function
from tilelang.ir.printer import print_function
from tilelang.ir.thread_text import print_thread_function
from tilelang.ir.thread_verify import ThreadIRError, verify_thread_function
from tilelang.ir.verify import IRVerifyError, verify

RNG = np.random.default_rng(20261208)


@tl.kernel(warps=4)
def claim_slots(
    experts: tl.Tensor[tl.i32, "N"],
    cursor: tl.Tensor[tl.i32, "E"],
    slots: tl.Tensor[tl.i32, "N"],
    B: tl.constexpr = 64,
):
    """A MoE align step: each token claims the next slot of its expert."""
    b = tl.blocks(tl.cdiv(N, B))
    inside = b * B + tl.arange(0, B) < N
    e = tl.load(experts, [b * B], [B], mask=inside)
    slot = tl.atomic_add(cursor, [e], 1, mask=inside)
    tl.store(slots, [b * B], slot, mask=inside)


@pytest.mark.parametrize("block", [64, 256])  # 64 < 128 threads: a replicated layout
def test_a_fetch_add_per_expert_hands_out_each_slot_once(block):
    n, experts = 1000, 7
    tokens = RNG.integers(0, experts, n).astype(np.int32)
    counts = np.bincount(tokens, minlength=experts)
    in_order = np.zeros(n, np.int32)  # the k-th token of an expert: slot k
    for e in range(experts):
        in_order[tokens == e] = np.arange(counts[e])
    for run in (claim_slots.interpret, claim_slots):
        cursor, slots = np.zeros(experts, np.int32), np.full(n, -1, np.int32)
        run(tokens, cursor, slots, B=block)
        np.testing.assert_array_equal(cursor, counts)
        for e in range(experts):  # order-free: the set of slots
            np.testing.assert_array_equal(np.sort(slots[tokens == e]), np.arange(counts[e]))
        if run is claim_slots.interpret:  # program order, blocks in grid order
            np.testing.assert_array_equal(slots, in_order)


@tl.kernel(warps=4)
def claim_and_broadcast(
    experts: tl.Tensor[tl.i32, "N"],
    cursor: tl.Tensor[tl.i32, "E"],
    shown: tl.Tensor[tl.i32, 2, "N"],
):
    """64 slots claimed by 128 threads (each element held by two: one fetches), then
    broadcast to two rows, one per replica's threads."""
    b = tl.blocks(tl.cdiv(N, 64))
    inside = b * 64 + tl.arange(0, 64) < N
    e = tl.load(experts, [b * 64], [64], mask=inside)
    slot = tl.atomic_add(cursor, [e], 1, mask=inside)
    rows = tl.broadcast(tl.reshape(slot, [1, 64]), [2, 64])
    tl.store(shown, [0, b * 64], rows, mask=tl.reshape(inside, [1, 64]))


def test_every_thread_holding_an_element_gets_its_old_value():
    n, experts = 300, 5
    tokens = RNG.integers(0, experts, n).astype(np.int32)
    for run in (claim_and_broadcast.interpret, claim_and_broadcast):
        cursor, shown = np.zeros(experts, np.int32), np.full((2, n), -1, np.int32)
        run(tokens, cursor, shown)
        np.testing.assert_array_equal(shown[0], shown[1])
        for e in range(experts):
            np.testing.assert_array_equal(np.sort(shown[0][tokens == e]), np.arange(cursor[e]))


@tl.kernel(warps=4)
def work_queue(
    x: tl.Tensor[tl.f32, "N"],
    y: tl.Tensor[tl.f32, "N"],
    queue: tl.Tensor[tl.i32, 1],
    STEPS: tl.constexpr = 3,
):
    """A persistent kernel: each block claims chunks of 128 from a queue and doubles
    them. The chunk is a scalar every thread uses (the old value of a [1] tile, which
    one thread fetches for the whole block)."""
    tl.blocks(2)
    for _ in range(STEPS):
        chunk = tl.reshape(tl.atomic_add(queue, [0], tl.full([1], 1, tl.i32)), []).item()
        tl.store(y, [chunk * 128], tl.load(x, [chunk * 128], [128]) * 2.0)


def test_a_work_queue_hands_each_chunk_to_one_block_and_every_thread_sees_it():
    x = RNG.standard_normal(6 * 128 - 40).astype(np.float32)
    for run in (work_queue.interpret, work_queue):
        y, queue = np.zeros_like(x), np.zeros(1, np.int32)
        run(x, y, queue)
        assert queue[0] == 6
        np.testing.assert_array_equal(y, 2 * x)


@tl.kernel(warps=4)
def fetch_box(
    y: tl.Tensor["T", "M", "N"],
    x: tl.Tensor["T", "M", "N"],
    old: tl.Tensor["T", "M", "N"],
    T: tl.constexpr = tl.f32,
    OP: tl.constexpr = "add",
    BM: tl.constexpr = 16,
    BN: tl.constexpr = 32,
):
    """One update of a box, its old values stored; odd columns masked off."""
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    tile = tl.load(x, [bm * BM, bn * BN], [BM, BN])
    even = (tl.arange(0, BN) % 2 == 0)[None, :]
    if OP == "add":
        before = tl.atomic_add(y, [bm * BM, bn * BN], tile, mask=even)
    elif OP == "max":
        before = tl.atomic_max(y, [bm * BM, bn * BN], tile, mask=even)
    elif OP == "min":
        before = tl.atomic_min(y, [bm * BM, bn * BN], tile, mask=even)
    else:
        before = tl.atomic_xchg(y, [bm * BM, bn * BN], tile, mask=even)
    tl.store(old, [bm * BM, bn * BN], before)


CASES = [
    (tl.f32, "add"),
    (tl.f16, "add"),
    (tl.i64, "add"),
    (tl.u32, "max"),
    (tl.i32, "min"),
    (tl.f64, "max"),
    (tl.bf16, "min"),
    (tl.i32, "xchg"),
    (tl.u64, "xchg"),
    (tl.f32, "xchg"),
]


def _values(dtype, shape):
    if dtype.is_float:
        return RNG.integers(-64, 64, shape).astype(np.float32) / 4  # exact in bf16 too
    low = 0 if not dtype.signed else -1000
    return RNG.integers(low, 1000, shape)


@pytest.mark.parametrize("dtype, op", CASES, ids=str)
def test_each_element_returns_its_value_before_the_update(dtype, op):
    """One block per element: the result is the tensor's initial value (0 where masked
    off and the edge 20 x 40 leaves out), the tensor the numpy update."""
    m, n = 20, 40
    y0, x = _values(dtype, (m, n)), _values(dtype, (m, n))
    even = np.zeros((m, n), bool)
    even[:, ::2] = True
    new = {"add": y0 + x, "max": np.maximum(y0, x), "min": np.minimum(y0, x), "xchg": x}[op]
    want_y = np.where(even, new, y0)
    want_old = np.where(even, y0, 0)
    for run in (fetch_box.interpret, fetch_box):
        y, old = y0.astype(_np(dtype)), np.full((m, n), 7).astype(_np(dtype))
        run(y, x.astype(_np(dtype)), old, T=dtype, OP=op)
        np.testing.assert_array_equal(np.asarray(y, np.float64), want_y.astype(np.float64))
        np.testing.assert_array_equal(np.asarray(old, np.float64), want_old.astype(np.float64))


def _np(dtype):
    return NUMPY_TYPES[dtype.name]


# --------------------------------------------------------------------------- cas


@tl.kernel(warps=2)
def first_writer_wins(
    keys: tl.Tensor[tl.i32, "G", "K"],
    owner: tl.Tensor["T", "S"],
    won: tl.Tensor[tl.u8, "G", "K"],
    T: tl.constexpr = tl.i32,
    K: tl.constexpr = 32,
):
    """Block g swaps 0 for g + 1 at each of its keys: it won a key where it saw 0."""
    g = tl.blocks(G)
    mine = tl.reshape(tl.load(keys, [g, 0], [1, K]), [K])
    me = tl.full([K], 1, T) + g.to(T)
    before = tl.atomic_cas(owner, [mine], 0, me)
    tl.store(won, [g, 0], tl.reshape((before == tl.full([K], 0, T)).to(tl.u8), [1, K]))


@pytest.mark.parametrize("dtype", [tl.i32, tl.u32, tl.i64, tl.u64], ids=str)
def test_of_the_blocks_racing_for_a_key_exactly_one_wins(dtype):
    groups, k, slots = 12, 32, 40
    keys = np.stack([RNG.choice(slots, k, replace=False) for _ in range(groups)]).astype(np.int32)
    for run in (first_writer_wins.interpret, first_writer_wins):
        owner = np.zeros(slots, _np(dtype))
        won = np.zeros((groups, k), np.uint8)
        run(keys, owner, won, T=dtype)
        for s in range(slots):
            claimants = [g for g in range(groups) if s in keys[g]]
            winners = [g for g in claimants if won[g][list(keys[g]).index(s)]]
            if not claimants:
                assert owner[s] == 0
                continue
            assert len(winners) == 1, (s, claimants, winners)
            assert owner[s] == winners[0] + 1
            if run is first_writer_wins.interpret:  # blocks in grid order: the first
                assert winners[0] == claimants[0]


@tl.kernel(warps=1)
def swap_where_equal(
    y: tl.Tensor[tl.i64, "N"], e: tl.Tensor[tl.i64, "N"], old: tl.Tensor[tl.i64, "N"]
):
    """A cas with a tile of expected values: swaps in -1 where y equals e."""
    tl.blocks(1)
    expected = tl.load(e, [0], [64])
    before = tl.atomic_cas(y, [0], expected, tl.full([64], -1, tl.i64), mask=tl.arange(0, 64) < N)
    tl.store(old, [0], before)


def test_a_cas_swaps_exactly_where_the_element_equals_the_expected_value():
    n = 50
    y0 = RNG.integers(0, 4, n).astype(np.int64)
    e = RNG.integers(0, 4, n).astype(np.int64)
    for run in (swap_where_equal.interpret, swap_where_equal):
        y, old = y0.copy(), np.full(n, 9, np.int64)
        run(y, e, old)
        np.testing.assert_array_equal(y, np.where(y0 == e, -1, y0))
        np.testing.assert_array_equal(old, y0)


# --------------------------------------------------------------------------- xchg


@tl.kernel(warps=4)
def pass_along(slot: tl.Tensor["T", 1], got: tl.Tensor["T", "G", 1], T: tl.constexpr = tl.i32):
    """Block g exchanges g + 1 into the one slot and keeps what it took out."""
    g = tl.blocks(G)
    before = tl.atomic_xchg(slot, [0], tl.full([1], 1, T) + g.to(T))
    tl.store(got, [g, 0], tl.reshape(before, [1, 1]))


@pytest.mark.parametrize("dtype", [tl.i32, tl.u64, tl.f32], ids=str)
def test_exchanges_hand_every_value_on_exactly_once(dtype):
    groups = 64
    for run in (pass_along.interpret, pass_along):
        slot = np.full(1, 1000, _np(dtype))
        got = np.zeros((groups, 1), _np(dtype))
        run(slot, got, T=dtype)
        seen = sorted([*got[:, 0].tolist(), slot[0].item()])
        assert seen == sorted([1000, *range(1, groups + 1)])
        if run is pass_along.interpret:  # each block takes what the one before left
            assert got[:, 0].tolist() == [1000, *range(1, groups)]


# --------------------------------------------------------------------------- unused results


@tl.kernel(warps=4)
def count_or_claim(
    bins: tl.Tensor[tl.i32, "N"],
    hist: tl.Tensor["T", "E"],
    slots: tl.Tensor["T", "N"],
    T: tl.constexpr = tl.u32,
    USE: tl.constexpr = True,
    B: tl.constexpr = 128,
):
    b = tl.blocks(tl.cdiv(N, B))
    e = tl.load(bins, [b * B], [B])
    slot = tl.atomic_add(hist, [e], tl.full([B], 1, T))
    if USE:
        tl.store(slots, [b * B], slot)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
@pytest.mark.parametrize(
    "dtype, fetch, reduce",
    [
        (tl.u32, "atom.global.add.u32", "red.global.add.u32"),
        (tl.i64, "atom.global.add.u64", "red.global.add.u64"),
        (tl.f32, "atom.global.add.f32", "red.global.add.f32"),
    ],
    ids=str,
)
def test_cuda_fetches_only_where_the_result_is_read(arch, dtype, fetch, reduce):
    used = count_or_claim.compile(target=arch, T=dtype, USE=True)
    unused = count_or_claim.compile(target=arch, T=dtype, USE=False)
    assert fetch in used.ptx and reduce not in used.ptx
    assert reduce in unused.ptx and "atom.global" not in unused.ptx
    assert "tl_atom_" not in unused.source
    assert all(s.dst is None for s in statements(unused, t.Atomic))
    planned = unused.ir("plan_registers")  # simplify dropped the unread result
    assert " scatter_atomic add" in planned and "= scatter_atomic" not in planned
    assert "= scatter_atomic add" in used.ir("plan_registers")


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
@pytest.mark.parametrize(
    "dtype, op, wanted",
    [
        (tl.i32, "xchg", "atom.global.exch.b32"),
        (tl.f32, "xchg", "atom.global.exch.b32"),
        (tl.u64, "xchg", "atom.global.exch.b64"),
        (tl.i32, "max", "atom.global.max.s32"),
        (tl.u64, "min", "atom.global.min.u64"),
        (tl.f32, "max", "atom.global.cas.b32"),
        (tl.f16, "add", "atom.global.add.noftz.f16"),
        (tl.bf16, "add", "atom.global.cas.b16"),  # on sm_80; sm_90 has a bf16 atom
    ],
    ids=str,
)
def test_cuda_builds_of_every_fetching_op_compile(arch, dtype, op, wanted):
    compiled = fetch_box.compile(target=arch, T=dtype, OP=op)
    if dtype == tl.bf16 and arch == "sm_90a":
        wanted = "atom.global.add.noftz.bf16"
    assert wanted in compiled.ptx
    assert "red.global" not in compiled.ptx


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
@pytest.mark.parametrize("dtype, wanted", [(tl.i32, ".b32"), (tl.u64, ".b64")], ids=str)
def test_cuda_cas_compiles(arch, dtype, wanted):
    compiled = first_writer_wins.compile(target=arch, T=dtype)
    assert "atom.global.cas" + wanted in compiled.ptx


def test_the_cpu_backend_keeps_what_llvm_atomics_return():
    llvm = first_writer_wins.compile(T=tl.i64).cpu.llvm_ir
    assert "cmpxchg ptr" in llvm
    llvm = pass_along.compile(T=tl.f32).cpu.llvm_ir
    assert "atomicrmw xchg ptr" in llvm


# --------------------------------------------------------------------------- IR


def test_the_text_form_round_trips_results_and_expected_values():
    for dtype, line in (
        ("f32", "%o = atomic add %y[0:i32], %v mask(%m) : tile<f32, [32]>"),
        ("i32", "%o = atomic cas %y[0:i32], %v expected(%v) : tile<i32, [32]>"),
        ("u64", "atomic xchg %y[0:i32], %v mask(%m)"),
        (
            "i64",
            "%o = scatter_atomic cas %y[0:i32], %i, axis=0, %v expected(%v) mask(%m) : "
            "tile<i64, [32]>",
        ),
        ("i32", "%o = scatter_atomic max %y[0:i32], %i, axis=0, %v : tile<i32, [32]>"),
    ):
        fn = parse_function(ATOMIC_TEXT.replace("T", dtype).replace("LINE", line))
        verify(fn)
        assert line in print_function(fn)
        assert print_function(parse_function(print_function(fn))) == print_function(fn)


@pytest.mark.parametrize(
    "dtype, line, message",
    [
        ("i32", "atomic cas %y[0:i32], %v", "expected an `expected` tile with op cas"),
        ("i32", "atomic add %y[0:i32], %v expected(%v)", "with op cas and only there"),
        ("f16", "%o = atomic xchg %y[0:i32], %v : tile<f16, [32]>", "found a tensor of f16"),
        ("f32", "atomic cas %y[0:i32], %v expected(%v)", "found a tensor of f32"),
        ("i32", "%o = atomic add %y[0:i32], %v : tile<i32, [16]>", "expected an result of i32"),
        ("i32", "%o = atomic add %y[0:i32], %v : tile<u32, [32]>", "found tile<u32, [32]>"),
        (
            "i32",
            "%o, %p = atomic add %y[0:i32], %v : tile<i32, [32]>, tile<i32, [32]>",
            "at most one result",
        ),
    ],
    ids=range(7),
)
def test_the_verifier_checks_results_expected_values_and_dtypes(dtype, line, message):
    with pytest.raises(IRVerifyError) as info:
        verify(parse_function(ATOMIC_TEXT.replace("T", dtype).replace("LINE", line)))
    assert str(info.value).startswith("user.py:7:5:"), str(info.value)
    assert message in str(info.value)


def test_thread_ir_atomics_fetch_into_dst_and_cas_needs_its_compare():
    cas = t.Atomic(
        "y", t.Imm(8, tl.i64), t.Reg("r", 4), 4, tl.i32, None, "cas", t.Reg("o", 4), t.Reg("e", 0)
    )
    params = (t.Param("y", tl.i32, True),)
    local = tuple(t.Local(n, tl.i32, 4) for n in "roe")
    fn = t.ThreadFunction("k", params, 32, (t.Imm(1, tl.i32),), 0, local, (cas,))
    verify_thread_function(fn)
    assert "o@4 = atomic.cas.i32.4 y[8:i64] <- r@4 if == e@0" in print_thread_function(fn)
    for bad, message in (
        (t.Atomic("y", cas.offset, cas.src, 4, tl.i32, None, "cas"), "op cas needs one"),
        (
            t.Atomic("y", cas.offset, cas.src, 4, tl.f32, None, "cas", None, cas.compare),
            "no atomic cas of f32",
        ),
        (
            t.Atomic("y", cas.offset, cas.src, 8, tl.i32, None, "xchg", t.Reg("o", 12)),
            "out of range",
        ),
    ):
        with pytest.raises(ThreadIRError, match=message):
            verify_thread_function(fn.__class__(**{**fn.__dict__, "body": (bad,)}))


# --------------------------------------------------------------------------- errors


def test_errors_name_the_operation_and_point_at_the_users_line():
    @tl.kernel
    def xchg_f16(y: tl.Tensor[tl.f16, "N"]):
        tl.blocks(1)
        tl.atomic_xchg(y, [0], tl.full([32], 1, tl.f16))  # <- error

    @tl.kernel
    def cas_f32(y: tl.Tensor[tl.f32, "N"]):
        tl.blocks(1)
        tl.atomic_cas(y, [0], 0.0, tl.full([32], 1, tl.f32))  # <- error

    @tl.kernel
    def expected_shape(y: tl.Tensor[tl.i32, "N"]):
        tl.blocks(1)
        tl.atomic_cas(y, [0], tl.full([16], 0, tl.i32), tl.full([32], 1, tl.i32))  # <- error

    @tl.kernel
    def expected_dtype(y: tl.Tensor[tl.i32, "N"]):
        tl.blocks(1)
        tl.atomic_cas(y, [0], tl.full([32], 0, tl.u32), tl.full([32], 1, tl.i32))  # <- error

    @tl.kernel
    def desired_dtype(y: tl.Tensor[tl.u64, "N"]):
        tl.blocks(1)
        tl.atomic_xchg(y, [0], tl.full([32], 1, tl.i64))  # <- error

    for kernel, fragments in (
        (xchg_f16, ("tl.atomic_xchg into y, a tensor of f16", "f32, f64, i32, u32, i64, u64")),
        (cas_f32, ("tl.atomic_cas into y, a tensor of f32", "i32, u32, i64, u64")),
        (expected_shape, ("expected (of tl.atomic_cas) has shape [16]", "[32]")),
        (expected_dtype, ("expected (of tl.atomic_cas) is a u32 tile", ".to(tl.i32)")),
        (desired_dtype, ("exchanging a i64 tile into y", ".to(tl.u64)")),
    ):
        with pytest.raises(TileLangError) as info:
            kernel.specialize()
        assert info.value.loc.line == marked_line(kernel), str(info.value)
        for fragment in fragments:
            assert fragment in str(info.value), str(info.value)


@tl.kernel(warps=1)
def masked_by_false(y: tl.Tensor[tl.i32, "N"], old: tl.Tensor[tl.i32, "N"]):
    tl.blocks(1)
    tl.store(old, [0], tl.atomic_add(y, [0], tl.full([32], 5, tl.i32), mask=False))


def test_a_constant_false_mask_updates_nothing_and_returns_zeros():
    for run in (masked_by_false.interpret, masked_by_false):
        y, old = np.full(32, 3, np.int32), np.full(32, 9, np.int32)
        run(y, old)
        assert (y == 3).all() and (old == 0).all()
