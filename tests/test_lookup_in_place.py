"""Lookups indexed by codes that a relayout only reorders within each thread: the
lowering names the loaded registers (`TileRegs.positions`) and each lookup reads its
code where it sits, rather than moving every code into local order first (the NF4
weight tile of `tilelang.quant.matmul`, loaded in the mma B fragments' load order).

Checked here: the compiled kernels against the interpreter (within a dot's documented
difference, nearly all elements equal), for every codebook width the quant kernels take (u4 NF4 and bitsandbytes FP4, a user's u3 table,
a u8 one); the thread IR of the NF4 kernels (no code is written back into a register
before its lookup); and the SASS loop of the m = 1 NF4 launch on sm_90a (its warp
instructions per iteration, 906 when the codes were moved)."""

import dataclasses
import re
import sys

import numpy as np
import pytest

import tilelang.quant as tq
import tilelang.quant.matmul  # noqa: F401 (the module, which `tq.matmul` shadows)

#: The module `tilelang.quant.matmul` (the package's attribute is the function).
quant_matmul = sys.modules["tilelang.quant.matmul"]

#: A statement of the thread IR that inserts one code into a register word, as moving
#: packed codes does (``rN[i] = or(and(rN[i], mask), code)``).
CODE_INSERT = re.compile(r"^\s*r\d+\[\d+\] = or\(and\(r\d+\[\d+\],", re.MULTILINE)


def weights(k, n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_t(5, (k, n)) * 0.05).astype(np.float32)


def codebooks(k, n):
    """(label, weight) for each codebook width: u4 (NF4, FP4), u3 (6 entries), u8."""
    w = weights(k, n)
    u8_table = np.linspace(-1.0, 1.0, 200)  # 200 entries: 8-bit codes
    return (
        ("nf4", tq.quantize(w, format="nf4")),
        ("fp4_bnb", tq.quantize(w, format="fp4_bnb")),
        ("u3", tq.quantize(w, format="codebook", codebook=[0.5, -1, 0, 1, -0.5, 0.1])),
        ("u8", tq.quantize(w, format="codebook", codebook=u8_table)),
    )


class _Interpreted:
    """A kernel whose calls run in the interpreter (`Kernel.interpret`)."""

    def __init__(self, kernel):
        self.kernel = kernel

    def __call__(self, *args, **kwargs):
        return self.kernel.interpret(*args, **kwargs)


def _interpreted_run(monkeypatch):
    """Make `tq.matmul` launch its kernels in the interpreter."""
    run = quant_matmul._run

    def interpreted(calls, *rest):
        calls = [dataclasses.replace(c, kernel=_Interpreted(c.kernel)) for c in calls]
        return run(calls, *rest)

    monkeypatch.setattr(quant_matmul, "_run", interpreted)


@pytest.mark.parametrize("label", ["nf4", "fp4_bnb", "u3", "u8"])
def test_codebook_matmuls_compiled_agree_with_interpreted(monkeypatch, label):
    """Within the documented difference of a dot (the interpreter sums in float64, the
    kernel in f32 in the hardware's order, each rounded once to f16): one f16 ulp of
    |x|·|W| per element; a code looked up at the wrong place is far beyond it."""
    k, n, m = 128, 128, 1
    x = np.random.default_rng(m).standard_normal((m, k)).astype(np.float16)
    qw = dict(codebooks(k, n))[label]
    assert qw.dtype.bits == {"nf4": 4, "fp4_bnb": 4, "u3": 3, "u8": 8}[label]
    compiled = np.asarray(tq.matmul(x, qw)).astype(np.float64)
    _interpreted_run(monkeypatch)
    interpreted = np.asarray(tq.matmul(x, qw)).astype(np.float64)
    magnitude = np.abs(x.astype(np.float64)) @ np.abs(qw.dequantize().astype(np.float64))
    allowed = 2.0**-10 * magnitude + (k + 2) * 2.0**-24 * magnitude + 2.0**-24
    assert (np.abs(compiled - interpreted) <= allowed).all()
    assert np.count_nonzero(compiled != interpreted) <= compiled.size // 16


@pytest.mark.parametrize("target", ["cpu", "sm_80", "sm_90a"])
@pytest.mark.parametrize("m", [1, 128])
def test_the_lookups_read_the_codes_where_they_were_loaded(target, m):
    qw = tq.quantize(weights(512, 256), format="nf4")
    for launch in tq.plan(qw, m, target).launches:
        text = str(launch.compiled.ir())
        assert "lookup=" in text  # the stats: the kernel looks codes up
        assert CODE_INSERT.findall(text) == [], (target, m)


def test_the_nf4_decode_loop_is_shorter_on_sm_90a():
    """The m = 1 launch's loop: each thread converts 128 codes an iteration; moving
    them first cost 906 warp instructions an iteration, reading them in place 684."""
    qw = tq.quantize(weights(512, 256), format="nf4")
    report = tq.plan(qw, 1, "sm_90a").launches[0].perf()
    assert report.instructions_per_iteration <= 700, report.mix
    # One shared-memory read per weight and the code words: no more.
    assert report.mix["shared loads/stores"]["LDS"] <= 136, report.mix
