"""Shared-memory addresses keep their constant parts out of registers (issue 12): a
swizzled offset x + c with c a multiple of the swizzle's period P is computed as
swizzle(x) + c, so accesses a constant number of rows apart share one address register
and differ by immediates. Held across a loop, one register per access is what made
flash attention at D=128, 64×64 tiles spill; with the constants outside it compiles
with 0 spills on sm_80 and sm_90, written as users write it."""

import re
import warnings

import numpy as np
import pytest

import tilelang as tl
from tilelang.ir.shared_layout import Swizzle
from tilelang.lowering.shared import _outside_swizzle
from tilelang.passes import plan_registers
from tilelang.runtime import sass

SWIZZLES = [Swizzle.for_bytes(w, bits) for w in (32, 64, 128) for bits in (8, 16, 32)]


@pytest.mark.parametrize("swizzle", SWIZZLES, ids=str)
def test_a_multiple_of_the_period_commutes_with_the_swizzle(swizzle):
    period = 1 << (swizzle.shift + swizzle.bits)
    rng = np.random.default_rng(swizzle.shift)
    x = rng.integers(-(1 << 20), 1 << 20, size=4096)
    for c in (period, 3 * period, -2 * period, 17 * period + 5, 7):
        outside = _outside_swizzle(swizzle, c)
        assert outside % period == 0 and 0 <= c - outside < period
        assert (swizzle.apply(x + c) == swizzle.apply(x + (c - outside)) + outside).all()


def test_without_a_swizzle_every_constant_stays_outside():
    assert _outside_swizzle(None, 1234) == 1234
    assert _outside_swizzle(Swizzle(0, 0, 0), -7) == -7


def test_a_swizzle_writing_above_the_bits_it_reads_keeps_constants_inside():
    assert _outside_swizzle(Swizzle(2, 6, 3), 1 << 12) == 0


@tl.kernel(warps=4)
def attention(
    q: tl.Tensor[tl.f16, "BH", "M", "D"],
    k: tl.Tensor[tl.f16, "BH", "N", "D"],
    v: tl.Tensor[tl.f16, "BH", "N", "D"],
    o: tl.Tensor[tl.f16, "BH", "M", "D"],
    HD: tl.constexpr = 128,
    BM: tl.constexpr = 64,
    BN: tl.constexpr = 64,
):
    """Causal flash attention as a user writes it first: rank-3 loads reshaped, Q·Kᵀ as
    `tl.dot(q, tl.transpose(k))`, an online softmax."""
    bh, bm = tl.blocks(BH, tl.cdiv(M, BM))
    qt = tl.reshape(tl.load(q, [bh, bm * BM, 0], [1, BM, HD]), [BM, HD])
    rows = bm * BM + tl.arange(0, BM)
    m_i = tl.full([BM], float("-inf"), tl.f32)
    l_i = tl.zeros([BM], tl.f32)
    acc = tl.zeros([BM, HD], tl.f32)
    for n in tl.range(0, N, BN, stages=2):
        kt = tl.reshape(tl.load(k, [bh, n, 0], [1, BN, HD]), [BN, HD])
        vt = tl.reshape(tl.load(v, [bh, n, 0], [1, BN, HD]), [BN, HD])
        s = tl.dot(qt, tl.transpose(kt)) * (1.0 / HD**0.5)
        cols = n + tl.arange(0, BN)
        s = tl.where(cols[None, :] <= rows[:, None], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = tl.dot(p.to(tl.f16), vt, acc * alpha[:, None])
        m_i = m_new
    tl.store(o, [bh, bm * BM, 0], tl.reshape((acc / l_i[:, None]).to(tl.f16), [1, BM, HD]))


def compiled(arch: str, head_dim: int):
    with warnings.catch_warnings():
        warnings.simplefilter("error", plan_registers.RegisterSpillWarning)
        return attention.compile(assume="all", target=arch, HD=head_dim)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_the_natural_flash_attention_compiles_without_spills_at_64x64_tiles(arch, head_dim):
    kernel = compiled(arch, head_dim)
    assert kernel.resources.spills == 0, kernel.resources
    estimate = plan_registers.registers(kernel.stages["plan_registers"])
    assert abs(estimate - kernel.resources.registers) <= 0.15 * kernel.resources.registers


@pytest.mark.usefixtures("disassembler")
def test_ldmatrix_reads_a_constant_apart_share_an_address_register():
    loop = sass.main_loop(sass.disassemble(compiled("sm_90", 128).cubin))
    bases = re.findall(r"LDSM[.\w]* R\d+, \[(R\d+)", loop)
    # Kᵀ: 8 k-steps of 64 keys; V: 4 k-steps of 128 columns. The rows (keys) of one
    # column group are a multiple of the 128-byte swizzle's period apart: one register
    # per column group and stage base, not one per ldmatrix.
    assert len(bases) >= 64
    assert len(set(bases)) <= 24, sorted(set(bases))
