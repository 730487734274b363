"""lower: instruction selection by layout division, access widths, and the budget error.

These read the thread IR the whole pipeline produces (`kernel.compile(...)`); that the
thread IR computes what the block IR means is tested by running it (test_cpu_backend).
"""

import numpy as np
import pytest
from conftest import load_example, statements

import tilelang as tl
from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir import thread_mma as tm
from tilelang.ir.visit import walk
from tilelang.passes.plan_registers import RegisterBudgetError


def load_widths(compiled, tensor: str) -> set[int]:
    """Bytes per global read of `tensor`, by plain loads and by cp.async."""
    reads = statements(compiled, t.GlobalLoad) + statements(compiled, t.CpAsync)
    return {s.width for s in reads if s.tensor == tensor}


def async_tensors(compiled) -> set[str]:
    return {s.tensor for s in statements(compiled, t.CpAsync)}


def test_matmul_selects_mma_and_ldmatrix_and_loads_16_bytes():
    compiled = load_example("matmul").matmul.compile()
    mmas = statements(compiled, tm.Mma)
    # 128x128 block tile over 2x2 warps, BK=32: 32 m16n8 blocks per warp (64x64) times
    # 2 k-steps.
    assert len(mmas) == 64 and {m.atom for m in mmas} == {"m16n8k16.f16"}
    ldmatrix = statements(compiled, tm.Ldmatrix)
    # x4 for the A fragment, x4.trans for B (row-major in shared memory)
    assert {(s.num, s.trans) for s in ldmatrix} == {(4, False), (4, True)}
    assert load_widths(compiled, "a") == {16} and load_widths(compiled, "b") == {16}
    assert compiled.stats["mma"] == 64
    # stages=3: both operands stream through shared memory with cp.async, no plain loads
    assert async_tensors(compiled) == {"a", "b"} and not statements(compiled, t.GlobalLoad)


def test_the_pipelining_is_visible_in_the_ir():
    compiled = load_example("matmul").matmul.compile()
    unpipelined = load_example("matmul").matmul.stages({"M": 128, "N": 128, "K": 128})[
        "verify_layouts"
    ]
    assert any(isinstance(i, ir.For) and i.stages == 3 for i in walk(unpipelined))
    assert "async_wait 1" in compiled.ir("pipeline") and "async_wait 0" in compiled.ir("pipeline")


def test_without_size_facts_the_loads_narrow_to_what_the_mask_allows():
    compiled = load_example("matmul").matmul.compile(assume=None)
    assert max(load_widths(compiled, "a")) < 16
    assert statements(compiled, tm.Mma)  # the selection does not depend on the sizes


@pytest.mark.parametrize("weight_type", [tl.u4, tl.i4, tl.u8, tl.f4e2m1, tl.u3])
def test_quant_matmul_selects_mma_ldmatrix_and_wide_weight_loads(weight_type):
    compiled = load_example("quant_matmul").quant_matmul.compile(WT=weight_type)
    assert statements(compiled, tm.Mma) and statements(compiled, tm.Ldmatrix)
    # stages=3: every load of the loop streams through cp.async (weights and scales too)
    assert load_widths(compiled, "x") == {16} and async_tensors(compiled) == {"x", "w", "s"}
    # The 16x128x128 tile gives each thread 128 codes: whole 16-byte words of every width
    # (u3: a 3-word run, the codes straddling the words).
    assert load_widths(compiled, "w") == {16}
    if weight_type == tl.u3:
        # BK = 64: 32 u3 codes are a 12-byte run, 4-byte aligned: three 4-byte cp.async.
        small = load_example("quant_matmul").quant_matmul.compile(WT=weight_type, BK=64)
        assert load_widths(small, "w") == {4} and "global_load_sub_byte" not in small.stats


def test_a_kernel_over_the_register_budget_fails_before_any_compiler_runs():
    @tl.kernel(warps=1)
    def huge(x: tl.Tensor[tl.f32, "M", "N"], y: tl.Tensor[tl.f32, "M", "N"]):
        a = tl.load(x, [0, 0], [128, 128])
        tl.store(y, [0, 0], a * 2.0)

    with pytest.raises(RegisterBudgetError, match="huge"):
        huge.compile()


def test_ir_stages_include_the_thread_ir():
    compiled = load_example("vector_add").vector_add.compile()
    text = compiled.ir("lower")
    assert text.startswith("thread_kernel vector_add(") and "ld.global.16" in text
    assert "infer_layouts" in compiled.stages
    with pytest.raises(ValueError, match="the stages are"):
        compiled.ir("nope")


def test_row_reductions_use_warp_shuffles():
    compiled = load_example("softmax").softmax.compile()
    shuffles = statements(compiled, t.Shfl)
    assert shuffles and {s.mode for s in shuffles} == {"xor"}
    assert compiled.stats.get("reduce_shuffle") == 2 and "reduce_shared" not in compiled.stats


def test_a_reduction_across_warps_shuffles_then_combines_warps_in_shared_memory():
    # [256, 4] over 4 warps: the column's thread digit spans lanes and warps.
    @tl.kernel(warps=4)
    def column_sum(x: tl.Tensor[tl.f32, "M", "N"], y: tl.Tensor[tl.f32, "N"]):
        tl.store(y, [0], tl.sum(tl.load(x, [0, 0], [256, 4]), axis=0))

    compiled = column_sum.compile()
    assert compiled.stats.get("reduce_warps") == 1 and "reduce_shared" not in compiled.stats
    x = np.random.default_rng(0).integers(-8, 8, (256, 4)).astype(np.float32)
    assert np.array_equal(column_sum(x, np.zeros(4, np.float32)), x.sum(axis=0))


def test_a_reduction_the_shuffles_cannot_take_folds_through_shared_memory():
    # f64 has no shuffle path: each thread folds its outputs from shared memory.
    @tl.kernel(warps=4)
    def column_max(x: tl.Tensor[tl.f64, "M", "N"], y: tl.Tensor[tl.f64, "N"]):
        tl.store(y, [0], tl.max(tl.load(x, [0, 0], [256, 4]), axis=0))

    compiled = column_max.compile()
    assert compiled.stats.get("reduce_shared") == 1
    x = np.random.default_rng(0).standard_normal((256, 4))
    assert np.array_equal(column_max(x, np.zeros(4)), x.max(axis=0))


def test_row_scans_use_shuffles_and_column_scans_shared_memory():
    assert load_example("cumsum").cumsum_rows.compile(T=tl.i32).stats.get("scan_shuffle") == 1

    @tl.kernel(warps=4)
    def column_cumsum(x: tl.Tensor[tl.i32, "M", "N"], y: tl.Tensor[tl.i32, "M", "N"]):
        tl.store(y, [0, 0], tl.cumsum(tl.load(x, [0, 0], [256, 4]), axis=0))

    assert column_cumsum.compile().stats.get("scan_shared") == 1
    x = np.random.default_rng(0).integers(-100, 100, (256, 4)).astype(np.int32)
    assert np.array_equal(column_cumsum(x, np.zeros_like(x)), np.cumsum(x, axis=0))


@pytest.mark.parametrize("reverse", [False, True])
def test_shuffle_scans_match_numpy_both_ways(reverse):
    @tl.kernel(warps=2)
    def scan(x: tl.Tensor[tl.i32, "M", "N"], y: tl.Tensor[tl.i32, "M", "N"], R: tl.constexpr):
        tile = tl.load(x, [0, 0], [4, 64])
        tl.store(y, [0, 0], tl.cumsum(tile, axis=1, reverse=R))

    assert scan.compile(R=reverse).stats.get("scan_shuffle") == 1
    x = np.random.default_rng(1).integers(-1000, 1000, (4, 64)).astype(np.int32)
    expected = np.flip(np.cumsum(np.flip(x, 1), 1), 1) if reverse else np.cumsum(x, 1)
    assert np.array_equal(scan(x, np.zeros_like(x), R=reverse), expected)


def test_a_run_of_three_elements_moves_in_legal_widths():
    # A [3] tile has a 3-element run per thread; shared accesses must still be 1, 2, 4,
    # 8 or 16 bytes (found by the differential tests: a 3-byte st.shared).
    @tl.kernel(warps=1)
    def sum3(x: tl.Tensor[tl.i8, "N"], y: tl.Tensor[tl.i8, "N"]):
        tl.store(y, [0], tl.sum(tl.load(x, [0], [3]), axis=0, keepdims=True, dtype=tl.i8))

    widths = {s.width for s in statements(sum3.compile(), t.SharedStore)}
    assert widths and widths <= {1, 2, 4, 8, 16}
    x = np.array([5, -7, 100], np.int8)
    assert sum3(x, np.zeros(3, np.int8))[0] == 98
