"""`thread_mma.Wgmma` (wgmma.mma_async m64nNk16, sm_90a) and its fences, against an oracle
written from the `Wgmma` docstring alone.

Each kernel is a hand-built thread function: every thread loads its A fragment and its
D accumulators from global memory, the block copies a shared-memory image (B placed by
this file's own host-side function, the docstring's address formula and 128-byte
swizzle, every other byte a large decoy value) into its shared buffer, then
`AsyncProxyFence`, `Barrier`, `WgmmaFence`, the `Wgmma`s, `WgmmaCommit`,
`WgmmaWait(0)`, and every thread stores D back.

The laws: the CPU backend gives D = A·B + D (A·B without `accumulate`) bit for bit,
with values (small dyadic numbers) whose f32 sums are exact in any order; B is read at
the descriptor's addresses, K-major or MN-major, LBO and SBO each where the docstring
puts it, and a descriptor start moved within a swizzle atom reads later k columns;
each warpgroup multiplies its own A and D. The verifier rejects what the instruction
cannot run; the text form names it; NVRTC compiles it for sm_90a to HGMMA.
"""

from __future__ import annotations

import dataclasses
import re

import ml_dtypes
import numpy as np
import pytest

from tilelang import dtypes as d
from tilelang.codegen.cuda import emit_cuda, kernel_symbol
from tilelang.ir import thread as t
from tilelang.ir import thread_mma as tm
from tilelang.ir.thread_text import print_thread_function
from tilelang.ir.thread_verify import ThreadIRError, verify_thread_function
from tilelang.runtime import sass
from tilelang.runtime.cpu import compile_cpu
from tilelang.runtime.nvrtc import compile_cuda

I32, I64, U32, F32 = d.i32, d.i64, d.u32, d.f32
WARPGROUP = 128
NUMPY = {"f16": np.float16, "bf16": ml_dtypes.bfloat16}


# --------------------------------------------------------------------------- the oracle


def _swizzled(address: np.ndarray) -> np.ndarray:
    """The byte the 128-byte swizzle reads for `address`: bits 4-6 XOR bits 7-9."""
    return address ^ (((address >> 7) & 7) << 4)


def _b_address(k: np.ndarray, n: np.ndarray, start: int, lbo: int, sbo: int, trans_b: bool):
    """The docstring's (unswizzled) byte address of element (k, n) of B."""
    if trans_b:  # MN-major: 64 n contiguous, 8 k rows of 128 bytes, then SBO per 8 k
        return start + 2 * (n % 64) + lbo * (n // 64) + 128 * (k % 8) + sbo * (k // 8)
    return start + 128 * (n % 8) + sbo * (n // 8) + 2 * k  # K-major: a row of k per n


def _place(image: np.ndarray, b: np.ndarray, start: int, lbo: int, sbo: int, trans_b: bool):
    """Writes the (K, N) matrix `b` (16-bit codes) into the byte array `image` where a
    descriptor starting at `start` reads element (k, n), no two elements on one byte."""
    k, n = np.meshgrid(np.arange(b.shape[0]), np.arange(b.shape[1]), indexing="ij")
    byte = _swizzled(_b_address(k, n, start, lbo, sbo, trans_b)).ravel()
    assert (byte % 2 == 0).all() and len(np.unique(byte)) == byte.size
    assert byte.max() + 2 <= image.size
    image[byte] = (b.ravel() & 0xFF).astype(np.uint8)
    image[byte + 1] = (b.ravel() >> 8).astype(np.uint8)


def _fragments(threads: int, count: int, a_layout: bool):
    """(warpgroup, row, column) of element i < `count` of each thread's A fragment
    (`a_layout`) or D fragment: the docstring's layouts, w = warp % 4, g = lane // 4,
    q = lane % 4."""
    tid = np.arange(threads)[:, None]
    i = np.arange(count)[None, :]
    w, lane = (tid // 32) % 4, tid % 32
    g, q = lane // 4, lane % 4
    row = 16 * w + g + 8 * ((i // 2) % 2)
    a_column = 2 * q + i % 2 + 8 * (i // 4)
    d_column = 8 * (i // 4) + 2 * q + i % 2
    column = a_column if a_layout else d_column
    group = np.broadcast_to(tid // WARPGROUP, row.shape)
    return group, row, column


def test_the_fragment_layouts_cover_each_warpgroup_tile_once():
    """The oracle's own check: A's 8 elements per thread tile 64×16, D's n/2 tile 64×n."""
    for count, columns, a_layout in ((8, 16, True), (4, 8, False), (128, 256, False)):
        group, row, column = _fragments(2 * WARPGROUP, count, a_layout)
        cells = (group * 64 + row) * columns + column
        assert sorted(cells.ravel()) == list(range(2 * 64 * columns))


def _dyadic(rng: np.random.Generator, shape, top: int = 8) -> np.ndarray:
    """Nonzero ±m·2^-e (m ≤ `top`, e ≤ 3): exact in f16 and bf16, and every sum of up to
    a few dozen of their products is exact in f32."""
    m = rng.integers(1, top + 1, shape) * rng.choice([-1, 1], shape)
    return m * 2.0 ** -rng.integers(0, 4, shape)


# --------------------------------------------------------------------------- the kernel


@dataclasses.dataclass(frozen=True)
class Case:
    """`steps` Wgmmas into one D; step j multiplies A words 4j..4j+3 by B read at
    `starts[j]`. The first takes `accumulate`, later ones add to D. With `loop`
    (trips, stride): one Wgmma in a `For` over j < trips, each trip loading A words
    4j..4j+3 and reading B at `starts[0]` + stride·j (an address the loop computes)."""

    n: int
    trans_b: bool
    lbo: int
    sbo: int
    starts: tuple[int, ...] = (0,)
    accumulate: bool = True
    operands: str = "f16"
    threads: int = WARPGROUP
    loop: tuple[int, int] | None = None

    @property
    def steps(self) -> int:
        return self.loop[0] if self.loop else len(self.starts)

    @property
    def addresses(self) -> tuple[int, ...]:
        """Where each step's descriptor starts."""
        if self.loop is None:
            return self.starts
        trips, stride = self.loop
        return tuple(self.starts[0] + stride * j for j in range(trips))


def _kernel(case: Case, shared_bytes: int) -> t.ThreadFunction:
    n, threads, steps = case.n, case.threads, case.steps
    operands = getattr(d, case.operands)
    tid = t.ThreadIndex()
    a_off, d_off = t.Name("a_off", I64), t.Name("d_off", I64)
    chunk, s_off = t.Name("chunk", I32), t.Name("s_off", I32)

    def at(base: t.Expr, byte: int) -> t.Expr:
        return t.Binary("add", base, t.Imm(byte, I64))

    body: list[t.Stmt] = [
        t.Let(a_off, t.Binary("mul", t.Cvt(tid, I64), t.Imm(16 * steps, I64))),
        t.Let(d_off, t.Binary("mul", t.Cvt(tid, I64), t.Imm(2 * n, I64))),
    ]
    if case.loop is None:
        loads = range(steps)
        body += [t.GlobalLoad(t.Reg("a", 16 * j), 16, "a", at(a_off, 16 * j)) for j in loads]
    body += [t.GlobalLoad(t.Reg("d", 16 * j), 16, "d", at(d_off, 16 * j)) for j in range(n // 8)]
    # Shared byte 16·(c·threads + tid) .. +16 for c < rounds: the whole image.
    rounds = shared_bytes // (16 * threads)
    copy = (
        t.Let(
            s_off,
            t.Binary(
                "mul",
                t.Binary("add", t.Binary("mul", chunk, t.Imm(threads, I32)), tid),
                t.Imm(16, I32),
            ),
        ),
        t.GlobalLoad(t.Reg("stage", 0), 16, "b", t.Cvt(s_off, I64)),
        t.SharedStore(s_off, t.Reg("stage", 0), 16),
    )
    body += [
        t.For(chunk, t.Imm(0, I32), t.Imm(rounds, I32), t.Imm(1, I32), copy),
        tm.AsyncProxyFence(),
        t.Barrier(),
        tm.WgmmaFence(),
    ]
    body += (
        _loop(case, a_off)
        if case.loop
        else [
            tm.Wgmma(
                n,
                operands,
                t.Reg("d", 0),
                t.Reg("a", 16 * j),
                t.Imm(start, I32),
                case.lbo,
                case.sbo,
                case.trans_b,
                case.accumulate or j > 0,
            )
            for j, start in enumerate(case.starts)
        ]
    )
    body += [tm.WgmmaCommit(), tm.WgmmaWait(0)]
    body += [t.GlobalStore("y", at(d_off, 16 * j), t.Reg("d", 16 * j), 16) for j in range(n // 8)]
    return t.ThreadFunction(
        f"wgmma_n{n}_{case.operands}_{'mn' if case.trans_b else 'k'}",
        (
            t.Param("a", U32, True),
            t.Param("b", U32, True),
            t.Param("d", F32, True),
            t.Param("y", F32, True),
        ),
        threads,
        (t.Imm(1, I32),),
        shared_bytes,
        (
            t.Local("a", U32, 4 if case.loop else 4 * steps),
            t.Local("d", F32, n // 2),
            t.Local("stage", U32, 4),
        ),
        tuple(body),
    )


def _loop(case: Case, a_off: t.Name) -> list[t.Stmt]:
    """for j < trips: A words 4j..4j+3 from global, then one Wgmma at start + stride·j."""
    trips, stride = case.loop
    assert case.accumulate
    j, a_at, address = t.Name("j", I32), t.Name("a_at", I64), t.Name("b_at", I32)
    times = t.Binary("mul", j, t.Imm(stride, I32))
    body = (
        t.Let(a_at, t.Binary("add", a_off, t.Cvt(t.Binary("mul", j, t.Imm(16, I32)), I64))),
        t.GlobalLoad(t.Reg("a", 0), 16, "a", a_at),
        t.Let(address, t.Binary("add", t.Imm(case.starts[0], I32), times)),
        tm.WgmmaFence(),
        tm.Wgmma(
            case.n,
            getattr(d, case.operands),
            t.Reg("d", 0),
            t.Reg("a", 0),
            address,
            case.lbo,
            case.sbo,
            case.trans_b,
        ),
        tm.WgmmaCommit(),
        tm.WgmmaWait(0),
    )
    return [t.For(j, t.Imm(0, I32), t.Imm(trips, I32), t.Imm(1, I32), body)]


def _shared_bytes(case: Case, k_rows: int) -> int:
    """Enough for B's `k_rows` rows at every start, rounded up to whole copy rounds."""
    k, n = np.meshgrid(np.arange(k_rows), np.arange(case.n), indexing="ij")
    last = max(
        int(_swizzled(_b_address(k, n, start, case.lbo, case.sbo, case.trans_b)).max())
        for start in case.addresses
    )
    unit = 16 * case.threads
    return -(-(last + 2) // unit) * unit


def _run(case: Case, b_rows: int, b_start: int, seed: int = 0):
    """Runs `case` on random A, D and a (b_rows, n) B placed from `b_start`; returns
    (A: [groups, steps, 64, 16], B, D in, D out: [groups, 64, n]) as float64."""
    rng = np.random.default_rng(seed)
    codes = NUMPY[case.operands]
    groups = case.threads // WARPGROUP
    a = _dyadic(rng, (groups, case.steps, 64, 16))
    b = _dyadic(rng, (b_rows, case.n))
    d_in = _dyadic(rng, (groups, 64, case.n), top=64)
    shared = _shared_bytes(case, b_rows)
    # Decoys everywhere else: ±(1024 .. 2047), so a byte read from a wrong place shows.
    decoys = rng.integers(1024, 2048, shared // 2) * rng.choice([-1, 1], shared // 2)
    image = decoys.astype(np.float64).astype(codes).view(np.uint8).copy()
    _place(image, b.astype(codes).view(np.uint16), b_start, case.lbo, case.sbo, case.trans_b)

    group, row, column = _fragments(case.threads, 8, a_layout=True)
    a_frag = np.stack([a[group, j, row, column] for j in range(case.steps)], axis=1)
    group, row, column = _fragments(case.threads, case.n // 2, a_layout=False)
    y = np.full(case.threads * case.n // 2, np.nan, np.float32)
    args = {
        "a": a_frag.astype(codes).view(np.uint16).ravel().view("<u4"),
        "b": image.view("<u4"),
        "d": d_in[group, row, column].astype(np.float32).ravel(),
        "y": y,
    }
    compile_cpu(_kernel(case, shared)).launch(args, grid=(1,))
    d_out = np.full(d_in.shape, np.nan)
    d_out[group, row, column] = y.reshape(case.threads, case.n // 2)
    return a, b, d_in, d_out


def _assert_exact(got: np.ndarray, expected: np.ndarray) -> None:
    bad = np.argwhere(got != expected)
    assert bad.size == 0, [(tuple(i), got[tuple(i)], expected[tuple(i)]) for i in bad[:6]]


# --------------------------------------------------------------------------- the CPU backend


@pytest.mark.parametrize(
    ("n", "lbo", "sbo"), [(8, 16, 1024), (64, 16, 1024), (128, 16, 1024), (256, 16, 1024),
                          (64, 4096, 2048)]
)  # fmt: skip
def test_k_major_b_gives_a_times_b_plus_d(n, lbo, sbo):
    """B with K contiguous: row n at 128·(n % 8) + SBO·(n // 8), 2 bytes per k; LBO
    plays no part (SBO = 2048 leaves decoys between the groups of 8 rows)."""
    case = Case(n, trans_b=False, lbo=lbo, sbo=sbo)
    a, b, d_in, d_out = _run(case, 16, 0, seed=n)
    _assert_exact(d_out, a[:, 0] @ b + d_in)


@pytest.mark.parametrize(("n", "lbo", "sbo"), [(64, 16, 2048), (128, 4096, 1024)])
def test_mn_major_b_gives_a_times_b_plus_d(n, lbo, sbo):
    """B with N contiguous: 64 columns per 128-byte row, k % 8 the row; SBO between
    groups of 8 k, LBO between blocks of 64 n (n = 128: two atoms, LBO ≠ SBO, so a
    swapped pair reads decoys or the wrong block)."""
    case = Case(n, trans_b=True, lbo=lbo, sbo=sbo)
    a, b, d_in, d_out = _run(case, 16, 0, seed=n + 1)
    _assert_exact(d_out, a[:, 0] @ b + d_in)


@pytest.mark.parametrize("k0", [16, 32, 48])
def test_a_descriptor_start_inside_the_atom_reads_later_k_columns(k0):
    """B 64 k wide (K-major, one 128-byte row per n) placed at 1024; a descriptor
    starting 2·k0 bytes in (as a k-step loop advances it) reads its k columns
    k0..k0+15: the swizzle applies to the whole address, start included."""
    case = Case(64, trans_b=False, lbo=16, sbo=1024, starts=(1024 + 2 * k0,))
    a, b, d_in, d_out = _run(case, 64, 1024, seed=3)
    _assert_exact(d_out, a[:, 0] @ b[k0 : k0 + 16] + d_in)


@pytest.mark.parametrize(
    ("n", "trans_b", "lbo", "sbo", "stride"),
    [(64, False, 16, 1024, 32), (128, True, 8192, 1024, 2048)],
    ids=["k-major", "mn-major"],
)
def test_a_k_loop_advancing_the_descriptor_sums_every_step(n, trans_b, lbo, sbo, stride):
    """K = 64 as a `For` of four groups, the address of B a loop expression: 16 k
    further per trip (32 bytes K-major, two groups of 8 k rows MN-major)."""
    case = Case(n, trans_b, lbo, sbo, starts=(1024,), loop=(4, stride))
    a, b, d_in, d_out = _run(case, 64, 1024, seed=8)
    whole_a = np.concatenate([a[:, j] for j in range(4)], axis=-1)
    _assert_exact(d_out, whole_a @ b + d_in)


@pytest.mark.parametrize(
    ("trans_b", "sbo", "starts"),
    [(False, 1024, (2048, 2048 + 32)), (True, 1024, (2048, 2048 + 2 * 1024))],
    ids=["k-major", "mn-major"],
)
def test_two_k_steps_accumulate_into_one_d(trans_b, sbo, starts):
    """K = 32 as two instructions of one group: the first without `accumulate` (D's
    input ignored), the second adding A[:, 16:32]·B[16:32] to it."""
    case = Case(64, trans_b=trans_b, lbo=16, sbo=sbo, starts=starts, accumulate=False)
    a, b, _, d_out = _run(case, 32, starts[0], seed=4)
    _assert_exact(d_out, a[:, 0] @ b[:16] + a[:, 1] @ b[16:32])


@pytest.mark.parametrize("trans_b", [False, True], ids=["k-major", "mn-major"])
def test_without_accumulate_d_input_is_ignored(trans_b):
    case = Case(64, trans_b=trans_b, lbo=16, sbo=1024, accumulate=False)
    a, b, d_in, d_out = _run(case, 16, 0, seed=5)
    assert (d_in != 0).all()
    _assert_exact(d_out, a[:, 0] @ b)


@pytest.mark.parametrize("trans_b", [False, True], ids=["k-major", "mn-major"])
def test_bf16_operands(trans_b):
    case = Case(64, trans_b=trans_b, lbo=16, sbo=1024, operands="bf16")
    a, b, d_in, d_out = _run(case, 16, 0, seed=6)
    _assert_exact(d_out, a[:, 0] @ b + d_in)


def test_each_warpgroup_multiplies_its_own_a_and_d_by_the_same_b():
    """256 threads: warps 4..7 (w = warp % 4) hold the second warpgroup's A and D."""
    case = Case(64, trans_b=False, lbo=16, sbo=1024, threads=2 * WARPGROUP)
    a, b, d_in, d_out = _run(case, 16, 0, seed=7)
    assert not np.array_equal(a[0], a[1])
    _assert_exact(d_out, a[:, 0] @ b + d_in)


# --------------------------------------------------------------------------- verifier, text


def _plain() -> t.ThreadFunction:
    case = Case(64, trans_b=False, lbo=16, sbo=1024)
    return _kernel(case, _shared_bytes(case, 16))


def _with_wgmma(fn: t.ThreadFunction, **changes) -> t.ThreadFunction:
    body = tuple(
        dataclasses.replace(s, **changes) if isinstance(s, tm.Wgmma) else s for s in fn.body
    )
    return dataclasses.replace(fn, body=body)


def _per_warp_address() -> t.Expr:
    """1024·warp: a different B for each warp."""
    warp = t.Binary("shr", t.ThreadIndex(), t.Imm(5, I32))
    return t.Binary("shl", warp, t.Imm(10, I32))


def test_the_verifier_accepts_the_kernels_here():
    verify_thread_function(_plain())
    case = Case(256, trans_b=True, lbo=4096, sbo=1024, threads=256)
    verify_thread_function(_kernel(case, 8192))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda fn: dataclasses.replace(fn, threads=96), "warpgroups of 128 threads"),
        (lambda fn: _with_wgmma(fn, n=12), "N is a multiple of 8 .*not 12"),
        (lambda fn: _with_wgmma(fn, n=264), "N is a multiple of 8 .*not 264"),
        (
            lambda fn: _with_wgmma(fn, b_address=_per_warp_address()),
            "address of B must be the same in every thread",
        ),
        (lambda fn: _with_wgmma(fn, lbo=24), "lbo = 24"),
        (lambda fn: _with_wgmma(fn, sbo=1000), "sbo = 1000"),
    ],
    ids=["96 threads", "n=12", "n=264", "varying address", "lbo=24", "sbo=1000"],
)
def test_the_verifier_rejects_what_wgmma_cannot_run(change, message):
    with pytest.raises(ThreadIRError, match=message):
        verify_thread_function(change(_plain()))


def test_the_verifier_rejects_a_wgmma_under_a_varying_condition():
    fn = _plain()
    cond = t.Binary("lt", t.ThreadIndex(), t.Imm(64, I32))
    body = tuple(t.If(cond, (s,)) if isinstance(s, tm.Wgmma) else s for s in fn.body)
    with pytest.raises(ThreadIRError, match="collective operation under a condition"):
        verify_thread_function(dataclasses.replace(fn, body=body))


def test_the_text_form_names_the_instruction_and_its_descriptor():
    text = print_thread_function(_plain())
    assert "wgmma.m64n64k16.f16" in text and "k-major lbo=16 sbo=1024" in text, text
    for line in ("fence.proxy.async", "wgmma.fence", "wgmma.commit", "wgmma.wait 0"):
        assert line in text, text
    case = Case(128, trans_b=True, lbo=4096, sbo=1024, accumulate=False, operands="bf16")
    text = print_thread_function(_kernel(case, 8192))
    assert "wgmma.m64n128k16.bf16" in text and "mn-major lbo=4096 sbo=1024 zero" in text, text


# --------------------------------------------------------------------------- NVRTC


@pytest.mark.usefixtures("disassembler")
@pytest.mark.parametrize(
    "case",
    [
        Case(64, trans_b=False, lbo=16, sbo=1024),
        Case(256, trans_b=True, lbo=4096, sbo=1024, operands="bf16"),
        Case(64, trans_b=False, lbo=16, sbo=1024, starts=(0, 32), accumulate=False),
        Case(64, trans_b=True, lbo=16, sbo=1024, threads=2 * WARPGROUP),
        Case(64, trans_b=False, lbo=16, sbo=1024, loop=(4, 32)),
    ],
    ids=["n64-f16-k-major", "n256-bf16-mn-major", "two-steps", "two-warpgroups", "k-loop"],
)
def test_nvrtc_compiles_wgmma_to_hgmma(case):
    """One HGMMA per `Wgmma` (a loop's: once, or once per trip if ptxas unrolls it), of
    its shape and operand type, B transposed (`.tnspB`) exactly when MN-major, the first
    one's addend zero (RZ) exactly without `accumulate`; the shared buffer starts on the
    dynamic array's first 1024-byte boundary."""
    fn = _kernel(case, _shared_bytes(case, 16 * case.steps))
    unrolled = {len(case.starts), case.steps}  # a loop's HGMMA: once, or once per trip
    source = emit_cuda(fn, launch_bounds=case.threads)
    assert "tl_smem_raw + ((0u - tl_shared_address(tl_smem_raw)) & 1023u)" in source
    binary = compile_cuda(source, kernel_symbol(fn), "sm_90a")
    code = sass.kernel_body(sass.disassemble(binary.cubin))
    hgmma = re.findall(r"HGMMA\.(\S+) (\w+), (\w+), gdesc\[\w+\](\S*), (\w+)", code)
    assert len(hgmma) in unrolled, code
    shape = f"64x{case.n}x16.F32" + (".BF16" if case.operands == "bf16" else "")
    for j, (kind, _, _, transposed, addend) in enumerate(hgmma):
        assert kind == shape and transposed == (".tnspB" if case.trans_b else ""), hgmma
        assert (addend == "RZ") == (j == 0 and not case.accumulate), hgmma
