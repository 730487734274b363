"""Split-K for the quantized matmul (examples/quant_matmul.py): K sliced over a third
grid dimension, partial products reduced with atomic additions (f32) or through a
workspace that the last block of each tile to `tl.arrive` adds (deterministic, f16),
both in one launch.

On the CPU backend: every SPLIT_K (K not a multiple of the slices, slices left empty)
agrees with the unsplit kernel within the accumulation tolerance and with numpy;
SPLIT_K = 1 is bit-identical to the unsplit kernel; the last block's addition is
bit-exact against numpy's f32 sum of the written partial products in slice order. Then NVRTC for sm_90: no spills, the partial
sums leave through `red`.
"""

import numpy as np
import pytest
from conftest import load_example

import tilelang as tl
from tilelang.runtime.sass import disassemble, find_disassembler, opcodes

M, K, N, GROUP = 7, 300, 80, 32  # K = 300: no slice count divides it into whole tiles


@pytest.fixture(scope="module")
def qm():
    return load_example("quant_matmul")


def inputs(qm, weight_type, m=M, k=K, n=N, **tiles):
    """x, W packed for the tiles (`pack_weights`), scales."""
    x, w, s = qm.make_inputs(m, k, n, weight_type, GROUP)
    return x, qm.pack_weights(w, **tiles), s


def unsplit(qm, weight_type, m=M, k=K, n=N, **tiles) -> np.ndarray:
    x, w, s = inputs(qm, weight_type, m, k, n, **tiles)
    return qm.quant_matmul(x, w, s, np.zeros((m, n), np.float16), WT=weight_type, G=GROUP, **tiles)


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "workspace"])
@pytest.mark.parametrize("split_k", [2, 3, 4, 7])
def test_split_k_agrees_with_the_unsplit_kernel(qm, split_k, deterministic):
    weight_type = tl.u4
    tiles = {"BM": 16, "BN": 32, "BK": 32}
    # numpy first (check_split_k asserts the tolerance), then the unsplit kernel
    qm.check_split_k(M, K, N, weight_type, GROUP, split_k, deterministic, **tiles)
    x, w, s = inputs(qm, weight_type, **tiles)
    got = qm.split_k_matmul(x, w, s, weight_type, GROUP, split_k, deterministic, **tiles)
    assert got.dtype == (np.float16 if deterministic else np.float32)
    expected = unsplit(qm, weight_type, **tiles).astype(np.float32)
    scale = max(float(np.abs(expected).max()), 1e-3)
    error = float(np.abs(got.astype(np.float16).astype(np.float32) - expected).max()) / scale
    assert error <= 2 * qm.tolerance(K)


@pytest.mark.parametrize("weight_type", [tl.i3, tl.f4e2m1, tl.u8], ids=str)
def test_split_k_for_other_weight_types_and_empty_slices(qm, weight_type):
    """K = 100 in 8 slices of 32: the last four slices are empty and add nothing."""
    for deterministic in (False, True):
        qm.check_split_k(5, 100, 64, weight_type, GROUP, 8, deterministic, BK=32)


def test_one_slice_is_bit_identical_to_the_unsplit_kernel(qm):
    x, w, s = inputs(qm, tl.u4)
    expected = unsplit(qm, tl.u4)
    for deterministic in (False, True):
        got = qm.split_k_matmul(x, w, s, tl.u4, GROUP, 1, deterministic)
        np.testing.assert_array_equal(got.astype(np.float16), expected)


def test_the_interpreter_agrees(qm):
    x, w, s = inputs(qm, tl.u4, BN=32, BK=32)
    constants = {"WT": tl.u4, "G": GROUP, "SPLIT_K": 3, "BN": 32, "BK": 32}
    interpreted = qm.quant_matmul_split_k.interpret(
        x, w, s, np.zeros((M, N), np.float32), **constants
    )
    compiled = qm.quant_matmul_split_k(x, w, s, np.zeros((M, N), np.float32), **constants)
    scale = float(np.abs(interpreted).max())
    assert float(np.abs(compiled - interpreted).max()) <= K * 2.0**-24 * 4 * scale


def test_the_last_block_adds_the_slices_in_order_and_rounds_once(qm):
    """The partial products the launch leaves in its workspace, added by numpy in slice
    order (each f32 addition rounded), rounded to f16: the kernel's y, bit for bit, in
    every run; the counters end zeroed."""
    x, w, s = inputs(qm, tl.u4, BN=32, BK=32)
    constants = {"WT": tl.u4, "G": GROUP, "SPLIT_K": 5, "BN": 32, "BK": 32}
    outputs = []
    for _ in range(3):
        partials = np.full((5, M, N), np.nan, np.float32)
        counts, y = np.zeros((1, -(-N // 32)), np.int32), np.zeros((M, N), np.float16)
        qm.quant_matmul_partials(x, w, s, partials, counts, y, **constants)
        total = np.zeros((M, N), np.float32)
        for part in partials:
            total = total + part
        np.testing.assert_array_equal(y.view(np.uint16), total.astype(np.float16).view(np.uint16))
        assert (counts == 0).all()
        outputs.append(y.copy())
    assert all((out.view(np.uint16) == outputs[0].view(np.uint16)).all() for out in outputs)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_split_k_compiles_without_spills_and_reduces_with_red(qm, arch):
    for kernel, constants in (
        (qm.quant_matmul_split_k, {"WT": tl.u4, "SPLIT_K": 4}),
        (qm.quant_matmul_partials, {"WT": tl.u4, "SPLIT_K": 4}),
    ):
        compiled = kernel.compile(target=arch, **constants)
        r = compiled.resources
        assert r.spill_store_bytes == 0 and r.spill_load_bytes == 0 and r.local_bytes == 0
        atomic = kernel is qm.quant_matmul_split_k
        assert ("red.global.add" in compiled.ptx) == atomic
        if atomic and find_disassembler() is not None:
            ops = opcodes(disassemble(compiled.cubin))
            assert any(op.startswith("RED") for op in ops), sorted(ops)
            assert any(op.startswith("HMMA") for op in ops)
