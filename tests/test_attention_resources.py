"""FlashAttention's compiled resources, read without a GPU (NVRTC and the cubin's
SASS): 0 spills at the default tiles on sm_80 and sm_90 (causal, and over every key
with the longer key steps), P kept in registers between
its two mmas (no shared-memory store in the main loop), K and V by cp.async in 2
stages, K read through a transposed view (no materialized transpose) and no dot operand
held whole by several warps; the mask only on the key blocks some row does not see
whole, under a branch."""

import warnings

import pytest

from tilelang import dtypes
from tilelang.analysis.replication import ReplicatedOperandWarning
from tilelang.kernels.attention import (
    default_tiles,
    flash_attention_kernel,
    flash_attention_varlen_kernel,
)
from tilelang.passes import plan_registers
from tilelang.runtime import sass

ARCHS = ("sm_80", "sm_90", "sm_90a")  # sm_90a: the H100 build (wgmma)
HEAD_DIMS = (64, 128, 256)


def compiled(head_dim: int, arch: str, kernel=flash_attention_kernel, causal=True, **tiles):
    """A causal build at the tiles a causal call gets (or `tiles`); not causal: the
    tiles of a loop over every key."""
    with warnings.catch_warnings():  # the library's tiles give its callers no warning
        warnings.simplefilter("error", plan_registers.RegisterSpillWarning)
        warnings.simplefilter("error", ReplicatedOperandWarning)
        return kernel.compile(
            assume="all",
            target=arch,
            T=dtypes.f16,
            CAUSAL=causal,
            LSE=True,
            **(tiles or default_tiles(head_dim, every_key=not causal)),
        )


def assert_the_estimate_is_close(kernel) -> None:
    estimate = plan_registers.registers(kernel.stages["plan_registers"])
    used = kernel.resources.registers
    if "wgmma" in kernel.stats:  # sm_90a, D <= 128: no B fragment, ptxas needs fewer
        assert used <= estimate <= 1.3 * used, (estimate, used)
    else:
        assert abs(estimate - used) <= 0.15 * used


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize(
    "kernel", [flash_attention_kernel, flash_attention_varlen_kernel], ids=["fixed", "varlen"]
)
def test_the_default_tiles_compile_without_spills(kernel, head_dim, arch):
    kernel = compiled(head_dim, arch, kernel)
    assert kernel.resources.spills == 0, kernel.resources
    assert kernel.stats["pipeline_async"] == 2  # K and V by cp.async, also with run-time bounds
    assert_the_estimate_is_close(kernel)


@pytest.mark.parametrize("arch", ARCHS)
def test_d64_over_every_key_takes_128_keys_a_step_without_spills(arch):
    """Not causal, no window: the loop walks every key, 128 a step at D = 64 (a
    causal one keeps 64: tests/test_attention.py's NaN keys past the diagonal)."""
    assert default_tiles(64, every_key=True) == dict(HD=64, BM=64, BN=128)
    kernel = compiled(64, arch, causal=False)
    assert kernel.resources.spills == 0, kernel.resources
    assert kernel.stats["pipeline_async"] == 2
    assert_the_estimate_is_close(kernel)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("head_dim", [64, 128])
def test_head_dims_64_and_128_compile_without_spills_at_64x64_tiles(head_dim, arch):
    assert default_tiles(head_dim) == dict(HD=head_dim, BM=64, BN=64)
    kernel = compiled(head_dim, arch, HD=head_dim, BM=64, BN=64)
    assert kernel.resources.spills == 0


@pytest.mark.usefixtures("disassembler")
@pytest.mark.parametrize("head_dim", (64, 128))
def test_the_main_loop_keeps_p_in_registers_and_streams_k_and_v(head_dim):
    kernel = compiled(head_dim, "sm_90")
    loop = sass.opcodes(sass.main_loop(sass.disassemble(kernel.cubin)))
    assert not [op for op in loop if op.startswith("STS")], loop  # no round trip of P
    assert not [op for op in loop if op.startswith(("LDL", "STL"))], loop
    assert any(op.startswith("LDGSTS") for op in loop), loop  # cp.async
    assert any(op.startswith("LDSM") for op in loop), loop  # ldmatrix from the stages
    stats = kernel.stats
    assert stats["pipeline_async"] == 2  # K and V
    assert stats["ldmatrix_transposed_view"] >= 1  # Kᵀ read as K is stored
    assert stats.get("shared_relayout", 0) == 0
    assert stats.get("dot_operand_replicated", 0) == 0
    assert stats["reduce_shuffle"] == 2 and stats.get("reduce_shared", 0) == 0


def test_the_pipelined_loop_has_two_stages():
    kernel = compiled(128, "sm_80")
    loops = [line for line in kernel.ir("plan_registers").splitlines() if " = for " in line]
    assert loops and all("stages(2)" in line for line in loops)


@pytest.mark.usefixtures("disassembler")
@pytest.mark.parametrize("head_dim", (64, 128))
def test_only_the_blocks_some_row_does_not_see_whole_pay_for_the_mask(head_dim):
    """The mask is under a block-uniform branch: the loop's common path (every branch
    that skips work taken) selects no scores; the masked path selects each of a
    thread's 32 (BM = BN = 64 over 4 warps), with -inf."""
    loop = sass.main_loop(sass.disassemble(compiled(head_dim, "sm_90").cubin))

    def selects(ops) -> int:
        return sum(n for op, n in ops.items() if op.split(".")[0] in ("SEL", "FSEL"))

    common = sass.opcodes(sass.shortest_path(loop))
    assert selects(common) <= 4  # the rows' "saw nothing yet" guards
    assert selects(sass.opcodes(loop)) - selects(common) >= 32
