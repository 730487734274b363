"""The warpgroup mma in the lowering (sm_90a): which dots take it, how B's shared layout
is checked against the descriptor, and that the lowered program means the same as
the mma.sync one. The thread-IR statement itself (its semantics on the CPU backend,
the verifier, NVRTC) is tested in test_wgmma_thread.py.

FlashAttention is the kernel that takes it today: its K and V tiles are pipelined into
shared memory and read by Q·Kᵀ (K-major B) and P·V (MN-major B), with 4 warps owning
16 rows each, which is one warpgroup's m64 block."""

import importlib

import ml_dtypes
import numpy as np
import pytest

import tilelang as tl
from tilelang import dtypes
from tilelang.analysis.shared_layouts import panel_layout
from tilelang.cli import launch_facts
from tilelang.ir import thread as t
from tilelang.ir import thread_mma as tm
from tilelang.ir.nodes import Dot, SharedAlloc
from tilelang.ir.shared_layout import Swizzle, row_major
from tilelang.ir.visit import walk
from tilelang.kernels.attention import default_tiles, flash_attention, flash_attention_kernel
from tilelang.lowering.values import SharedTile
from tilelang.lowering.wgmma import b_plan
from tilelang.runtime import sass
from tilelang.target import TARGETS


def _flash(arch: str, head_dim: int, causal: bool = False):
    return flash_attention_kernel.compile(
        assume="all",
        target=arch,
        T=dtypes.f16,
        CAUSAL=causal,
        LSE=False,
        **default_tiles(head_dim),
    )


def _count(fn: t.ThreadFunction, kind: type) -> int:
    return sum(isinstance(s, kind) for s in t.walk_stmts(fn.body))


# --------------------------------------------------------------------------- layouts


def test_a_panel_is_128_swizzled_bytes_wide_and_the_panels_follow_each_other():
    """Element (r, c) of a [64, 128] f16 tile: panel c // 64, row r of 128 bytes, its
    16-byte chunk (c % 64) // 8 moved to chunk ^ (r % 8)."""
    layout = panel_layout(dtypes.f16, (64, 128))
    r, c = np.meshgrid(np.arange(64), np.arange(128), indexing="ij")
    chunk = ((c % 64) // 8) ^ (r % 8)
    expected = (c // 64) * 64 * 64 + r * 64 + chunk * 8 + c % 8
    assert (layout.offset((r, c)) == expected).all()
    assert str(layout) == "shared(64:64, (2, 64):(4096, 1)) ^ swizzle(3, 3, 6)"


def _k_view(layout, offset: int = 0) -> SharedTile:
    """Kᵀ ([D, BN]) of a K tile [BN, D] stored in `layout`."""
    return SharedTile(offset, dtypes.f16, layout.permute((1, 0)))


def test_b_plan_reads_k_major_and_mn_major_panels():
    k_major = b_plan(_k_view(panel_layout(dtypes.f16, (64, 128))), 128, 64)
    assert k_major is not None and not k_major.trans and k_major.n == 64
    # k-steps move 32 bytes along a panel's row, then to the next panel (8192 bytes).
    assert [row[0] for row in k_major.starts] == [0, 32, 64, 96, 8192, 8224, 8256, 8288]
    mn_major = b_plan(SharedTile(0, dtypes.f16, panel_layout(dtypes.f16, (64, 128))), 64, 128)
    assert mn_major is not None and mn_major.trans and mn_major.n == 64
    assert mn_major.starts == ((0, 8192), (2048, 10240), (4096, 12288), (6144, 14336))


@pytest.mark.parametrize(
    "what, tile",
    [
        # 256-byte rows: 8 rows of a swizzle atom are not 128 bytes apart.
        (
            "row-major rows wider than 128 bytes",
            _k_view(row_major(64, 128).swizzled(Swizzle.for_bytes(128, 16))),
        ),
        (
            "a tile that starts inside a swizzle atom",
            _k_view(panel_layout(dtypes.f16, (64, 64)), 512),
        ),
        ("a 64-byte swizzle", _k_view(row_major(64, 32).swizzled(Swizzle.for_bytes(64, 16)))),
        ("no swizzle", _k_view(row_major(64, 64))),
    ],
)
def test_b_plan_refuses_layouts_no_descriptor_reads(what, tile):
    k, n = tile.layout.shape
    assert b_plan(tile, k, n) is None, what


def test_b_plan_checks_every_element():
    """A layout that agrees with the panels everywhere but in its swizzle's source bits
    (XOR of bits 7-9 moved to bits 8-10) is refused: the check is element by element."""
    panels = panel_layout(dtypes.f16, (64, 64))
    other = type(panels)(panels.dims, Swizzle(3, 3, 7))
    assert b_plan(_k_view(panels), 64, 64) is not None
    assert b_plan(_k_view(other), 64, 64) is None


# --------------------------------------------------------------------------- flash attention


@pytest.mark.parametrize("head_dim, expected", [(64, 4 + 4), (128, 8 + 8)])
def test_flash_attention_on_sm_90a_reads_k_and_v_through_wgmma(head_dim, expected):
    """Q·Kᵀ: one m64n64k16 per k-step of D; P·V: one per k-step of BN and 64-column
    panel of D. No ldmatrix reads K or V (those left read q), 0 spills, and the SASS
    main loop holds as many HGMMA as the thread IR has wgmmas and no LDSM."""
    kernel = _flash("sm_90a", head_dim)
    assert kernel.stats["wgmma"] == expected
    thread = kernel.thread
    assert _count(thread, tm.Wgmma) == expected
    assert _count(thread, tm.WgmmaWait) == 2  # one group per dot
    assert kernel.resources.spills == 0
    loop = sass.main_loop(sass.kernel_body(sass.disassemble(kernel.cubin)))
    ops = sass.opcodes(loop)
    hgmma = sum(n for op, n in ops.items() if op.startswith("HGMMA"))
    assert hgmma == expected
    assert not any(op.startswith("LDSM") for op in ops)
    assert any(op.startswith("FENCE.VIEW.ASYNC") for op in ops)  # cp.async -> async proxy


def test_sm_90_without_the_a_features_keeps_mma_sync():
    kernel = _flash("sm_90", 128)
    assert "wgmma" not in kernel.stats
    assert _count(kernel.thread, tm.Wgmma) == 0 and _count(kernel.thread, tm.Mma) > 0


def test_the_pipeline_buffers_start_on_whole_swizzle_periods_on_sm_90a():
    kernel = _flash("sm_90a", 128)
    allocs = [i for i in walk(kernel.stages["plan_shared"]) if isinstance(i, SharedAlloc)]
    assert allocs and all(int(i.attr("offset")) % 1024 == 0 for i in allocs)
    # The CUDA code starts the buffer on the first 1024-byte boundary of the dynamic
    # array, and asks for the slack that may need.
    assert "tl_smem_raw + ((0u - tl_shared_address(tl_smem_raw)) & 1023u)" in kernel.source
    assert kernel.thread.shared_bytes == _flash("sm_90", 128).thread.shared_bytes + 1008


def _reference(q, k, v, causal):
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    s = np.einsum("bmhd,bnhd->bhmn", q, k) / np.sqrt(q.shape[-1])
    if causal:  # bottom-right aligned, as flash-attn's
        m, n = s.shape[-2:]
        s = np.where(np.arange(n)[None, :] > np.arange(m)[:, None] + (n - m), -np.inf, s)
    p = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("bhmn,bnhd->bmhd", p / p.sum(-1, keepdims=True), v)


@pytest.mark.parametrize("head_dim, causal", [(64, True), (128, False)])
def test_flash_attention_lowered_for_sm_90a_gives_attention(monkeypatch, head_dim, causal):
    """The sm_90a thread IR, run on the CPU backend (which reads B through thread.py's
    descriptor formula), against float64 attention; sequence lengths that leave partial
    blocks. Also the mma.sync lowering's output, within the accumulation tolerance."""
    kernel_module = importlib.import_module("tilelang.kernel")
    rng = np.random.default_rng(head_dim)
    q = rng.standard_normal((1, 100, 2, head_dim)).astype(np.float16)
    k = rng.standard_normal((1, 130, 2, head_dim)).astype(np.float16)
    v = rng.standard_normal((1, 130, 2, head_dim)).astype(np.float16)
    plain = np.asarray(flash_attention(q, k, v, causal=causal)).astype(np.float64)
    monkeypatch.setattr(kernel_module, "CPU", TARGETS["sm_90a"])  # run sm_90a's thread IR
    got = np.asarray(flash_attention(q, k, v, causal=causal)).astype(np.float64)
    expected = _reference(q, k, v, causal)
    assert np.abs(got - expected).max() < 2e-3
    assert np.abs(got - plain).max() < 2e-3


# --------------------------------------------------------------------------- the model


def test_the_model_counts_a_warpgroup_mma_a_quarter_per_warp():
    """HGMMA.64xNx16 does 2·64·N·16 flops and reads B (16·N f16) once for its 4 warps."""
    assert sass.mma_flops("HGMMA.64x64x16.F32") == 2 * 64 * 64 * 16 // 4
    assert sass.mma_flops("HGMMA.64x256x16.F32.BF16") == 2 * 64 * 256 * 16 // 4
    assert sass.shared_bytes("HGMMA.64x128x16.F32") == 2 * 16 * 128 // 4
    assert sass.is_warpgroup_mma("HGMMA.64x8x16.F32") and not sass.is_warpgroup_mma(
        "HMMA.16816.F32"
    )
    line = (
        "        /*24c0*/                   HGMMA.64x64x16.F32 R24, R148, gdesc[UR12], RZ, !UPT ;"
    )
    assert sass.opcodes(line) == {"HGMMA.64x64x16.F32": 1}


def test_the_tensor_bound_of_flash_attention_on_sm_90a_is_at_the_data_sheet_peak():
    launch = dict(NB=1, M=1024, H=8, N=1024, HK=8, D=128, NL=1, HL=1, ML=1, scale=0.088)
    constexprs = dict(T=dtypes.f16, CAUSAL=False, LSE=False, **default_tiles(128))
    kernel = flash_attention_kernel.compile(
        assume=launch_facts(flash_attention_kernel, constexprs, launch),
        target="sm_90a",
        **constexprs,
    )
    report = kernel.perf(per="k", **launch)
    loop = sass.opcodes(sass.main_loop(sass.kernel_body(sass.disassemble(kernel.cubin))))
    per_warp = sum(n * sass.mma_flops(op) for op, n in loop.items() if op.startswith("HGMMA"))
    flops = per_warp * 4 * (1024 // 64) * (8 * 1024 // 64)  # warps, iterations, blocks
    tensor = next(b for b in report.bounds if b.name == "tensor cores")
    assert report.mma_flops == pytest.approx(flops / report.unroll)
    assert tensor.seconds == pytest.approx(report.mma_flops / 989e12)
    assert "wgmma" in tensor.detail


# --------------------------------------------------------------------------- other kernels


def _sm_90a_and_cpu(monkeypatch, call):
    """`call()` lowered for the CPU target, then for sm_90a (panels, proxy fences, and
    wgmma where a dot takes it), both run on the CPU backend."""
    kernel_module = importlib.import_module("tilelang.kernel")
    plain = np.asarray(call())
    monkeypatch.setattr(kernel_module, "CPU", TARGETS["sm_90a"])
    return plain, np.asarray(call())


def _matmul_example():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    from matmul import matmul

    return matmul


def _products(monkeypatch, kernel, mkn, out_dtype, in_dtype=np.float16):
    """(the CPU lowering's c, sm_90a's c, the float64 product) of kernel(a, b, c) on
    random a [m, k] and b [k, n] of `in_dtype`."""
    m, k, n = mkn
    rng = np.random.default_rng(m + k + n)
    a = rng.standard_normal((m, k)).astype(in_dtype)
    b = rng.standard_normal((k, n)).astype(in_dtype)

    def call():
        c = np.zeros((m, n), out_dtype)
        kernel(a, b, c)
        return c

    plain, got = _sm_90a_and_cpu(monkeypatch, call)
    return plain, got, a.astype(np.float64) @ b.astype(np.float64)


def test_a_plain_matmul_takes_warpgroup_layouts_and_wgmma_on_sm_90a():
    """The dense matmul example (128×128 tiles, 4 warps, B [32, 128] pipelined): on
    sm_90a its dot asks for warpgroup layouts (each warp 16 of every 64 rows), so the
    warpgroup mma reads B from its two 64-column panels: 2 row blocks x 2 k-steps x 2
    panels = 8 per step, only A through ldmatrix; on sm_90 the 2x2 warp grid and
    mma.sync stay."""
    matmul = _matmul_example()
    kernel = matmul.compile(target="sm_90a")
    assert kernel.stats["wgmma"] == 8 and _count(kernel.thread, tm.Mma) == 0
    assert kernel.resources.spills == 0
    loop = sass.opcodes(sass.main_loop(sass.kernel_body(sass.disassemble(kernel.cubin))))
    assert sum(n for op, n in loop.items() if op.startswith("HGMMA")) == 8
    assert sum(n for op, n in loop.items() if op.startswith("LDSM")) == 4  # A only
    assert "wgmma" not in matmul.compile(target="sm_90").stats


def test_the_matmul_lowered_for_sm_90a_gives_the_cpu_lowerings_result(monkeypatch):
    """M, N, K not multiples of the tiles; the same sums in the same k order, so the
    same bits."""
    plain, got, expected = _products(monkeypatch, _matmul_example(), (200, 96, 136), np.float16)
    assert (got.view(np.uint16) == plain.view(np.uint16)).all()
    assert np.abs(got.astype(np.float64) - expected).max() < 0.05


def test_a_kernel_where_no_dot_takes_wgmma_has_no_proxy_fence():
    """The fence after each cp.async wait is for the tensor cores' reads: FlashAttention
    at D = 256 (32-row blocks, mma.sync) builds for sm_90a without it."""
    thread = _flash("sm_90a", 256).thread
    assert _count(thread, tm.AsyncProxyFence) == 0 and _count(thread, tm.Wgmma) == 0
    assert _count(_flash("sm_90a", 64).thread, tm.AsyncProxyFence) > 0


def test_flash_attention_at_d_256_keeps_mma_sync_over_panels(monkeypatch):
    """D = 256 runs 32-row blocks (no warpgroup's 64 rows): mma.sync reading K and V
    from 512-byte rows cut into four panels."""
    assert "wgmma" not in _flash("sm_90a", 256).stats
    rng = np.random.default_rng(256)
    q = rng.standard_normal((1, 40, 1, 256)).astype(np.float16)
    k = rng.standard_normal((1, 70, 1, 256)).astype(np.float16)
    v = rng.standard_normal((1, 70, 1, 256)).astype(np.float16)
    plain, got = _sm_90a_and_cpu(monkeypatch, lambda: flash_attention(q, k, v, causal=True))
    assert (got.view(np.uint16) == plain.view(np.uint16)).all()


def test_the_quantized_matmul_lowered_for_sm_90a_is_unchanged(monkeypatch):
    """M = 128: the same tile on both targets (no masked rows, so sm_90's is not
    narrowed; tilelang.quant.choice), swapped on sm_90a, with the same bits."""
    from tilelang import quant

    rng = np.random.default_rng(4)
    qw = quant.quantize(rng.standard_normal((256, 136)) * 0.05, dtypes.u4, group_size=128)
    x = rng.standard_normal((128, 256)).astype(np.float16)
    plain, got = _sm_90a_and_cpu(monkeypatch, lambda: quant.matmul(x, qw))
    assert (got.view(np.uint16) == plain.view(np.uint16)).all()


@tl.kernel(warps=8)
def _unstaged(
    a: tl.Tensor[tl.bf16, "M", "K"],
    b: tl.Tensor[tl.bf16, "K", "N"],
    c: tl.Tensor[tl.f32, "M", "N"],
):
    """A dot whose B is loaded in a loop without stages: B stays in registers, so the
    dot keeps the squarest warp grid and mma.sync (8 warps, 128 rows)."""
    acc = tl.zeros([128, 64], tl.f32)
    for k in tl.range(0, K, 32):
        acc = tl.dot(tl.load(a, [0, k], [128, 32]), tl.load(b, [k, 0], [32, 64]), acc)
    tl.store(c, [0, 0], acc)


def test_a_dot_without_a_staged_b_keeps_its_warp_grid_and_mma_sync(monkeypatch):
    kernel = _unstaged.compile(target="sm_90a", assume=None)
    assert "wgmma" not in kernel.stats and kernel.stats["mma"] > 0
    dot = next(i for i in walk(kernel.stages["infer_layouts"]) if isinstance(i, Dot))
    assert str(dot.result.type.layout).startswith("spatial(4, 2)")  # not 8 warps of rows
    plain, got, expected = _products(
        monkeypatch, _unstaged, (128, 96, 64), np.float32, ml_dtypes.bfloat16
    )
    assert (got == plain).all()
    assert np.abs(got - expected).max() < 1e-3


@pytest.mark.parametrize("kv, head_dim", [("f16", 128), ("u4", 128), ("u8", 64)])
def test_paged_decode_lowered_for_sm_90a_gives_the_cpu_lowerings_bits(monkeypatch, kv, head_dim):
    """Paged decode (16-row dots: mma.sync) reads its pipelined rows through sm_90a's
    panels where they are wider than 128 bytes."""
    from test_paged_attention import Case

    case = Case(kv, [1, 100, 257], group=8, bs=16, d=head_dim, seed=31)
    plain, got = _sm_90a_and_cpu(monkeypatch, case.run)
    assert np.array_equal(got.view(np.uint16), plain.view(np.uint16))


@pytest.mark.parametrize("m", [1, 16, 40])
@pytest.mark.parametrize("fmt", [dict(dtype="u4", group_size=128), dict(format="nvfp4")])
def test_the_quantized_decode_paths_lowered_for_sm_90a_give_the_cpu_lowerings_bits(
    monkeypatch, m, fmt
):
    """The gemv and small-batch kernels (x tiles of 256-byte rows: panels on sm_90a)."""
    from tilelang import quant

    rng = np.random.default_rng(m)
    qw = quant.quantize(rng.standard_normal((512, 320)) * 0.05, **fmt)
    x = rng.standard_normal((m, 512)).astype(np.float16)
    plain, got = _sm_90a_and_cpu(monkeypatch, lambda: quant.matmul(x, qw, arch="sm_90a"))
    assert np.array_equal(got.view(np.uint16), plain.view(np.uint16))


@pytest.mark.parametrize("method", ["chunked", "walk"])
def test_the_selective_scan_lowered_for_sm_90a_gives_the_cpu_lowerings_bits(monkeypatch, method):
    from test_kernels_ssm import scan_inputs

    from tilelang.kernels import selective_scan

    x = scan_inputs(2, 32, 16, 100, seed=7, dtype=np.float16)
    plain, got = _sm_90a_and_cpu(
        monkeypatch, lambda: selective_scan(**x, delta_softplus=True, method=method)
    )
    assert np.array_equal(got.view(np.uint16), plain.view(np.uint16))


@tl.kernel(warps=4)
def _int8(
    a: tl.Tensor[tl.i8, "M", "K"], b: tl.Tensor[tl.i8, "K", "N"], c: tl.Tensor[tl.i32, "M", "N"]
):
    acc = tl.zeros([64, 64], tl.i32)
    for k in tl.range(0, K, 64, stages=2):
        acc = tl.dot(tl.load(a, [0, k], [64, 64]), tl.load(b, [k, 0], [64, 64]), acc)
    tl.store(c, [0, 0], acc)


def test_an_int8_dot_keeps_its_warp_grid_on_sm_90a():
    """The warpgroup mma here multiplies f16/bf16: an i8 dot with a staged B keeps the
    squarest grid (2 x 2), as on sm_90, rather than rows its mma.sync would pay for."""
    layouts = []
    for arch in ("sm_90", "sm_90a"):
        stage = _int8.compile(target=arch).stages["infer_layouts"]
        dot = next(i for i in walk(stage) if isinstance(i, Dot))
        layouts.append(dot.result.type.layout)
    assert layouts[0] == layouts[1] and str(layouts[1]).startswith("spatial(2, 2)")
