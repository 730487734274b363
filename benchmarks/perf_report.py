"""Static performance reports (`CompiledKernel.perf`) of the quantized matmul at decode
shapes and of the dense matmul: what the model in `tilelang.runtime.perf` predicts on
the target's representative card. A prediction from the SASS, resources and block IR,
never a measurement, and no GPU is needed; it needs NVRTC and a SASS disassembler.

    .venv/bin/python benchmarks/perf_report.py [--arch sm_90a] [--latency-ns 600] [--brief]

Prints each case's full report, then one summary table (the lines docs/benchmarks.md
records). A case that cannot be built prints why and the others go on.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# examples/ goes first: benchmarks/quant_matmul.py (the library at Llama shapes) would
# otherwise shadow examples/quant_matmul.py, whose kernel the cases compile.
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples"))

import matmul  # noqa: E402
import natural_gemv  # noqa: E402
import quant_matmul  # noqa: E402

import tilelang as tl  # noqa: E402
from tilelang.cli import launch_facts  # noqa: E402
from tilelang.kernels import attention, norm, paged_prefill, rotary, ssm  # noqa: E402
from tilelang.kernels import paged_attention as pa  # noqa: E402
from tilelang.runtime.nvrtc import nvrtc_version  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    kernel: tl.Kernel
    constexprs: dict[str, Any]
    launch: dict[str, int]
    per: str
    iterations: int | None = None  # the main loop's trip count, where the kernel reads it


def _quant(weight: tl.DType, n: int) -> Case:
    return Case(
        f"quant_matmul {weight.name} g128 m=1 k=8192 n={n}",
        quant_matmul.quant_matmul,
        {"WT": weight, "G": 128},
        {"M": 1, "K": 8192, "N": n},
        "w",
    )


def _natural(weight: tl.DType) -> Case:
    """`natural_gemv`: the GEMV as a sum over K of x times the dequantized tile."""
    return Case(
        f"natural gemv (tl.sum) {weight.name} g128 m=1 k=8192 n=28672",
        natural_gemv.natural_gemv,
        {"WT": weight},
        {"M": 1, "K": 8192, "N": 28672},
        "q",
    )


def _paged(cache: tl.DType, head_dim: int, batch: int, context: int, zeros: bool = False) -> Case:
    """The split kernel of `tilelang.kernels.paged_decode_attention` at a Llama-3-8B-like
    decode step (32 query heads over 8 KV heads, 16-token pages), `batch` sequences of
    `context` tokens each (issue 12's target is batch 64, context 4096): the tiles,
    flags and splits a call would pick; `zeros`: K and V given zero points too."""
    heads, kv_heads, page = 32, 8, 16
    scaled = cache in (tl.u8, tl.u4)
    reads = (zeros, zeros) if scaled else (True, True)  # what a call reads picks the tiles
    tiles = pa.default_tiles(head_dim, heads // kv_heads, cache, "sm_90", reads)
    pages = context // page
    splits, per_split = pa.split_count(batch, kv_heads, pages * page, tiles["BN"])
    flags = dict(MODE=pa.TOKEN_SCALED, K_ZEROS=zeros, V_ZEROS=zeros) if scaled else {}
    rows = batch * pages * page
    scales = dict(SR=rows, SH=kv_heads) if scaled else dict(SR=1, SH=1)
    return Case(
        f"paged decode {cache.name} D={head_dim}{' zero points' if zeros else ''} "
        f"b={batch} ctx={context}",
        pa.paged_split_kernel,
        dict(T=tl.f16, KT=cache, BS=page, G=heads // kv_heads, **flags, **tiles),
        dict(
            NB=batch,
            H=heads,
            D=head_dim,
            R=rows,
            HK=kv_heads,
            MB=pages,
            S=splits,
            **scales,
            scale=1.0,
            v_factor=1.0,
            per_split=per_split,
        ),
        "k",
        iterations=-(-per_split // tiles["BN"]),
    )


def _flash(causal: bool) -> Case:
    """`tilelang.kernels.flash_attention`'s kernel at the GPU check's forward shape (B=4,
    S=4096, H=32, D=128), the tiles a call at that shape picks. Causal row block b reads
    b + 1 of the key blocks: the report averages the trip count over the grid, no override."""
    batch, seq, heads, d = 4, 4096, 32, 128
    tiles = attention.default_tiles(d, batch * heads, seq)
    return Case(
        f"flash_attention D={d} S={seq}{' causal' if causal else ''}",
        attention.flash_attention_kernel,
        dict(T=tl.f16, CAUSAL=causal, LSE=False, **tiles),
        dict(NB=batch, M=seq, H=heads, N=seq, HK=heads, D=d, NL=1, HL=1, ML=1, scale=0.088),
        "k",
    )


def _scan(walk: bool) -> Case:
    """`tilelang.kernels.selective_scan`'s kernels at the GPU check's shape (batch 8, Dm
    2048, N 16, L 2048, f16, with D, z, delta_bias and softplus), default tiles: the
    walk, which a call at this shape picks, and the chunked associative scan."""
    nb, dm, n, length = 8, 2048, 16, 2048
    flags = dict(T=tl.f16, HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, BN=16)
    unused = {}  # the walk's segment states: none at this shape (512 warps)
    if walk:
        kernel, tiles = ssm.selective_scan_walk_kernel, ssm.walk_configs(dm)[0]
        unused = dict(PB=1, S1=1, PD=1, PN=1)
    else:
        kernel, tiles = (
            ssm.selective_scan_kernel,
            {"BL": ssm.CHUNK, **ssm.scan_configs(n, dm, dm)[0]},
        )
    return Case(
        f"selective_scan {'walk' if walk else 'chunked'} b={nb} Dm={dm} N={n} L={length}",
        kernel,
        {**flags, **tiles},
        dict(NB=nb, DM=dm, L=length, N=n, G=1, ND=dm, NBIAS=dm)
        | dict(NZ=nb, DZ=dm, LZ=length, NL=1, DL=1, SL=1)  # z given, no last state
        | unused,
        "u",
    )


def _scan_one(first: bool) -> Case:
    """The two kernels of a `selective_scan` call at batch 1 (the GPU check's second
    scan case; the rest as `_scan`): 64 warps of channels, so the walk cuts L into
    `walk_segments` = 8 segments of 256 steps; `first`: the kernel that gives the
    first 7 their (decay, local), else the walk over the segments."""
    nb, dm, n, length = 1, 2048, 16, 2048
    segments = ssm.walk_segments(nb, dm, length)
    flags = dict(T=tl.f16, HAS_BIAS=True, SOFTPLUS=True, BN=16)
    sizes = dict(NB=nb, DM=dm, L=length, N=n, G=1, NBIAS=dm)
    iterations = length // segments // 16  # a block's chunks of BL = 16 steps
    if first:
        return Case(
            f"selective_scan segments b={nb} Dm={dm} N={n} L={length} ({segments - 1} of "
            f"{segments})",
            ssm.walk_segments_kernel,
            {**flags, "BD": 32, "BL": 16},
            sizes | dict(S1=segments - 1),
            "u",
            iterations=iterations,
        )
    return Case(
        f"selective_scan walk b={nb} Dm={dm} N={n} L={length} ({segments} segments)",
        ssm.selective_scan_walk_kernel,
        {**flags, "HAS_D": True, "HAS_Z": True, "SEGMENTED": True, **ssm.walk_configs(dm)[0]},
        sizes
        | dict(ND=dm, NZ=nb, DZ=dm, LZ=length, NL=1, DL=1, SL=1)
        | dict(PB=nb, S1=segments - 1, PD=dm, PN=n),
        "u",
        iterations=iterations,
    )


def _paged_prefill(cache: tl.DType = tl.f16) -> Case:
    """`flash_attention(..., block_table=)` (`kernels.paged_prefill`) at a vLLM chunked
    prefill: 8 sequences of 2048 cached + 512 new tokens, 32 query heads over 8 KV
    heads, D 128, 16-token pages, causal, the tiles a call picks; a block's causal loop
    walks its keys up to its last row's diagonal, on average (`iterations`). An f8
    cache has a scale per KV head for K and V (vLLM's kv_cache_dtype="fp8")."""
    batch, cached, new, heads, kv_heads, d, bs = 8, 2048, 512, 32, 8, 128, 16
    tiles = attention.default_tiles(d, batch * heads, new, every_key=False)
    rows = batch * (cached + new)
    steps = -(-(cached + new // 2 + tiles["BM"] // 2) // tiles["BN"])
    quantized = dict(KT=cache, K_HEAD=True, V_HEAD=True, PER_HEAD=1) if cache != tl.f16 else {}
    return Case(
        f"paged prefill {cache.name} cache D={d} 8x(2048+512) causal",
        paged_prefill.paged_prefill_kernel,
        dict(T=tl.f16, CAUSAL=True, LSE=True, BS=bs, **tiles, **quantized),
        dict(TQ=batch * new, H=heads, D=d, HK=kv_heads, B1=batch + 1, HL=heads, TL=batch * new)
        | dict(scale=d**-0.5, MQ=new, R=rows, NL=batch, NT=batch, MB=rows // batch // bs),
        "k",
        iterations=steps,
    )


def _rotary() -> Case:
    """`tilelang.kernels.rotary_embedding` on Llama-3-8B's q at a 4096-token prefill
    (bf16, head 128, the full rotation, a bf16 cos/sin cache, contiguous)."""
    tokens, heads, d = 4096, 32, 128
    return Case(
        f"rotary_embedding q bf16 {tokens} tokens H={heads} D={d}",
        rotary.rotary_kernel,
        dict(T=tl.bf16, PT=tl.i64, CT=tl.bf16, NEOX=True, HALF=d // 2, BT=16, HB=4),
        dict(NT=tokens, NR=tokens * heads, D=d, P=8192, R=d, heads=heads, step=heads),
        "x",
    )


def _fused_norm() -> Case:
    """`tilelang.kernels.fused_add_rms_norm` on [4096, 4096] bf16 rows (a prefill's
    residual stream at Llama-3-8B's width), the tiles a call picks."""
    rows, width = 4096, 4096
    return Case(
        f"fused_add_rms_norm bf16 [{rows}, {width}]",
        norm.fused_add_rms_norm_kernel,
        dict(T=tl.bf16, WT=tl.bf16, **norm.fused_tiles(width)),
        dict(M=rows, H=width, eps=1e-6),
        "x",
    )


CASES = (
    _quant(tl.u4, 28672),
    _quant(tl.u4, 8192),
    _quant(tl.u3, 28672),
    _quant(tl.u8, 28672),
    _quant(tl.f4e2m1, 28672),
    _natural(tl.u4),
    _natural(tl.f16),
    Case("matmul f16 4096^3", matmul.matmul, {}, {"M": 4096, "K": 4096, "N": 4096}, "b"),
    _flash(False),
    _flash(True),
    _paged(tl.f16, 128, 64, 4096),
    _paged(tl.u8, 128, 64, 4096),
    _paged(tl.u4, 128, 64, 4096),
    _paged(tl.u4, 64, 64, 4096, zeros=True),
    _scan(walk=True),
    _scan(walk=False),
    _scan_one(first=True),
    _scan_one(first=False),
    _paged_prefill(),
    _paged_prefill(tl.f8e4m3),
    _rotary(),
    _fused_norm(),
)


def report(case: Case, arch: str, latency_ns: float | None):
    """The case's report, compiled with the size facts its launch gives (as a call would)."""
    assume = launch_facts(case.kernel, case.constexprs, case.launch)
    compiled = case.kernel.compile(assume=assume, target=arch, **case.constexprs)
    return compiled.perf(
        per=case.per, latency_ns=latency_ns, iterations=case.iterations, **case.launch
    )


def summary_row(case: Case, r) -> str:
    floor = r.bounds[0].seconds
    return (
        f"| {case.name} | {r.predicted_seconds * 1e6:.1f} us | {floor * 1e6:.1f} us | "
        f"{r.dram_fraction:.0%} | {r.binds} | {r.instructions_per_element:.3g} | "
        f"{r.issue_budget_per_element:.3g} | {r.in_flight_sm / 1e3:.1f} KB | "
        f"{r.occupancy.resident} ({', '.join(r.occupancy.limiters)}) | {r.blocks} |"
    )


def _commit() -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True
        )
        return done.stdout.strip() + (" with uncommitted changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90a", help="default: what an H100 builds")
    parser.add_argument("--latency-ns", type=float, default=None)
    parser.add_argument("--brief", action="store_true", help="print only the summary table")
    args = parser.parse_args()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    major, minor = nvrtc_version()
    print(
        f"static performance reports for {args.arch}: {now}, NVRTC {major}.{minor}, "
        f"commit {_commit()} (a prediction, not a measurement)\n"
    )
    rows, failed = [], 0
    for case in CASES:
        try:
            r = report(case, args.arch, args.latency_ns)
        except Exception as error:  # a benchmark reports a case it cannot build and goes on
            print(f"{case.name}: could not be built: {type(error).__name__}: {error}\n")
            failed += 1
            continue
        if not args.brief:
            print(f"---- {case.name}\n{r}\n")
        rows.append(summary_row(case, r))
    print(
        "| case | predicted | DRAM floor | of DRAM bw | binds | warp instr/element | "
        "issue budget/element | in flight/SM | blocks/SM | blocks |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
