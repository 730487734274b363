"""f32 → f16/bf16 conversions that only an mma reads: the CUDA emitter leaves out the
NaN canonicalization there (`tilelang.codegen.cuda`, module docstring), since an mma's
product with a NaN is NaN whatever its payload.

Laws: when P (an mma's f32 result made f16, as attention's P is) only feeds `tl.dot`,
the CUDA source converts it with the bare `cvt.rn` helper and the SASS has no NaN compare; once P is also stored,
its conversion keeps the canonical form (a stored NaN is observable); the results do
not change: a NaN score still makes its row of P·V NaN, on the CPU backend.
"""

import numpy as np
import pytest

import tilelang as tl
from tilelang.codegen.cuda import mma_operand_locals
from tilelang.runtime.sass import disassemble, opcodes


@tl.kernel(warps=1)
def scores_times_values(
    q: tl.Tensor["T", "M", "K"],
    k: tl.Tensor["T", "K", "N"],
    v: tl.Tensor["T", "N", "D"],
    o: tl.Tensor[tl.f32, "M", "D"],
    p_out: tl.Tensor[tl.f16, "M", "N"],
    T: tl.constexpr = tl.f16,
    STORE_P: tl.constexpr = False,
):
    """P = (q·k) made T, in the accumulator's registers, which are P·v's A operand."""
    s = tl.dot(tl.load(q, [0, 0], [16, 16]), tl.load(k, [0, 0], [16, 16]))
    p = s.to(T)
    tl.store(o, [0, 0], tl.dot(p, tl.load(v, [0, 0], [16, 16])))
    if STORE_P:
        tl.store(p_out, [0, 0], p.to(tl.f16))


def _source(arch: str = "sm_80", **constexprs) -> str:
    return scores_times_values.compile(target=arch, assume="all", **constexprs).source


@pytest.mark.parametrize("dtype", [tl.f16, tl.bf16], ids=str)
def test_a_conversion_only_an_mma_reads_is_the_bare_cvt(dtype):
    source = _source(T=dtype)
    assert f"tl_f32_{dtype.name}_raw(" in source
    assert f"tl_f32_{dtype.name}(" not in source


def test_a_stored_conversion_keeps_the_canonical_nan():
    source = _source(STORE_P=True)
    assert "tl_f32_f16(" in source


@pytest.mark.usefixtures("disassembler")
def test_the_sass_has_no_nan_compare_for_mma_operands():
    compiled = scores_times_values.compile(target="sm_90", assume="all")
    ops = opcodes(disassemble(compiled.cubin))
    assert not [op for op in ops if op.startswith("FSETP.NAN")], ops
    stored = scores_times_values.compile(target="sm_90", assume="all", STORE_P=True)
    assert [op for op in opcodes(disassemble(stored.cubin)) if op.startswith("FSETP.NAN")]


def test_mma_operand_locals_excludes_locals_read_elsewhere():
    plain = scores_times_values.compile(target="sm_80", assume="all").thread
    stored = scores_times_values.compile(target="sm_80", assume="all", STORE_P=True).thread
    assert mma_operand_locals(plain)
    assert len(mma_operand_locals(stored)) < len(mma_operand_locals(plain))


def test_a_nan_score_still_makes_its_row_nan():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((16, 16)).astype(np.float16) for _ in range(3))
    q[3, 5] = np.nan
    o = np.zeros((16, 16), np.float32)
    scores_times_values(q, k, v, o, np.zeros((16, 16), np.float16))
    scores = q.astype(np.float64) @ k.astype(np.float64)
    want = scores.astype(np.float16).astype(np.float64) @ v.astype(np.float64)
    assert np.isnan(o[3]).all() and not np.isnan(np.delete(o, 3, axis=0)).any()
    np.testing.assert_allclose(
        np.delete(o, 3, axis=0), np.delete(want, 3, axis=0), rtol=1e-3, atol=1e-3
    )
