"""Resources of every `tilelang.kernels` kernel at its default tiles, per architecture:
registers, spill bytes (stores/loads) and shared memory (the thread IR's dynamic
shared plus ptxas's static count), read from NVRTC's builds. No GPU is needed.

    .venv/bin/python benchmarks/kernel_resources.py [--arch sm_80 --arch sm_90] [--only paged]
        [--loop]

Each kernel is built with every optional input on (bias, gates, states), which is its
largest form. Prints one markdown table, the one docs/benchmarks.md records. `--only`
keeps the kernels whose name holds its text; `--loop` adds each build's main-loop SASS
counts (instructions, 16-byte loads, cp.async copies, barriers).
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tilelang import dtypes
from tilelang.kernel import CompiledKernel, Kernel
from tilelang.kernels import attention, conv, norm, ssd, ssm
from tilelang.kernels import paged_attention as paged

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Case:
    """One build: `constexprs` may depend on the architecture (tile tables do)."""

    name: str
    kernel: Kernel
    constexprs: Callable[[str], dict[str, Any]]
    assume: Any = "all"


def _fixed(**constexprs: Any) -> Callable[[str], dict[str, Any]]:
    return lambda _arch: constexprs


def _ssm_cases() -> Iterator[Case]:
    full = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True)
    yield Case(
        "selective_scan (BD 4, BN 16, BL 32)",
        ssm.selective_scan_kernel,
        _fixed(**full, LAST=True, BD=4, BN=16, BL=32),
    )
    yield Case(
        "selective_scan walk (BD 32, BN 16, BL 16)",
        ssm.selective_scan_walk_kernel,
        _fixed(**full, LAST=True, BD=32, BN=16, BL=16),
    )
    yield Case(
        "selective_scan walk, segmented (BD 32, BN 16, BL 16)",
        ssm.selective_scan_walk_kernel,
        _fixed(**full, LAST=True, SEGMENTED=True, BD=32, BN=16, BL=16),
    )
    yield Case(
        "selective_scan walk segments (BD 32, BN 16, BL 16)",
        ssm.walk_segments_kernel,
        _fixed(HAS_BIAS=True, SOFTPLUS=True, BD=32, BN=16, BL=16),
    )
    yield Case(
        "selective_state_update (BD 128, BN 16)",
        ssm.state_update_kernel,
        _fixed(**full, BD=128, BN=16),
    )
    yield Case("rms_norm", norm.rms_norm_kernel, _fixed())
    yield Case("silu_and_mul", norm.silu_and_mul_kernel, _fixed())
    yield Case(
        "causal_conv1d (W 4)",
        conv.causal_conv1d_kernel,
        _fixed(HAS_BIAS=True, SILU=True, HAS_INITIAL=True, FINAL=True),
    )
    yield Case(
        "causal_conv1d_update (W 4)", conv.conv_update_kernel, _fixed(HAS_BIAS=True, SILU=True)
    )
    every = dict(
        HAS_D=True, D_PER_P=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, HAS_INITIAL=True
    )
    for n in (16, 64, 128):
        for t in (dtypes.f32, dtypes.bf16):
            tiles = dict(T=t, TD=t, BN=n, BP=ssd.block_p(n, 64, t != dtypes.f32))
            yield Case(
                f"ssd_chunk_scan {t.name}, N {n} (BP {tiles['BP']})",
                ssd.ssd_chunk_scan_kernel,
                _fixed(**every, FINAL=True, **tiles),
            )


def _attention_cases() -> Iterator[Case]:
    narrow = [(d, attention.default_tiles(d)) for d in (64, 128, 256)]
    wide = [(d, {**attention.default_tiles(d), **attention.WIDE_TILES[d]}) for d in (64, 128, 256)]
    for d, tiles in narrow + wide:
        shape = f"BM {tiles['BM']}, BN {tiles['BN']}, {tiles.get('WARPS', 4)} warps"
        yield Case(
            f"flash_attention D {d}, causal, lse ({shape})",
            attention.flash_attention_kernel,
            _fixed(T=dtypes.f16, CAUSAL=True, LSE=True, **tiles),
        )
        yield Case(
            f"flash_attention varlen D {d}, causal, lse ({shape})",
            attention.flash_attention_varlen_kernel,
            _fixed(T=dtypes.f16, CAUSAL=True, LSE=True, **tiles),
        )
    modes = {"f16": paged.PLAIN, "f8e4m3": paged.HEAD_SCALED}
    for cache in ("f16", "f8e4m3", "u8", "u4"):
        kt = dtypes.dtype(cache)
        for d in (64, 128, 256):

            def constexprs(arch: str, kt=kt, d=d, cache=cache) -> dict[str, Any]:
                tiles = paged.default_tiles(d, 8, kt, arch)
                mode = modes.get(cache, paged.TOKEN_SCALED)
                # every scale and zero point a tensor (f8: vLLM's device scales)
                return dict(T=dtypes.f16, KT=kt, MODE=mode, BS=16, G=8, **tiles)

            stages = paged.default_tiles(d, 8, kt)["STAGES"]  # the same for every arch
            yield Case(
                f"paged_decode_attention split, {cache} cache, D {d}, GQA 8 ({stages} stages)",
                paged.paged_split_kernel,
                constexprs,
            )


def _cell(build: CompiledKernel, loop: bool = False) -> str:
    r = build.resources
    shared = build.thread.shared_bytes + r.shared_bytes
    spills = f"{r.spill_store_bytes}/{r.spill_load_bytes} B spilled"
    cell = f"{r.registers} regs, {spills}, {shared} B shared"
    return cell + _loop_counts(build) if loop else cell


def _loop_counts(build: CompiledKernel) -> str:
    """The main loop's SASS (`tilelang.runtime.sass.main_loop`): its instructions, its
    16-byte global loads (LDG.E.128) and cp.async copies (LDGSTS, the 16-byte ones in
    parentheses) and its barriers (BAR)."""
    from tilelang.runtime.sass import disassemble, main_loop, opcodes

    text = main_loop(disassemble(build.cubin))
    if text is None:
        return "; no loop"
    ops = opcodes(text)

    def count(prefix: str, wide: bool = False) -> int:
        return sum(
            n for op, n in ops.items() if op.startswith(prefix) and (".128" in op or not wide)
        )

    return (
        f"; loop {sum(ops.values())} instrs, LDG.E.128 {count('LDG.', True)}, "
        f"LDGSTS {count('LDGSTS')} ({count('LDGSTS', True)}), BAR {count('BAR')}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", action="append", help="sm_80, sm_90 (default: both)")
    parser.add_argument("--only", default="", help="the kernels whose name holds this text")
    parser.add_argument(
        "--loop", action="store_true", help="add main-loop SASS counts (needs nvdisasm)"
    )
    options = parser.parse_args(argv)
    archs = options.arch or ["sm_80", "sm_90"]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}")
    print("| kernel | " + " | ".join(archs) + " |")
    print("|---|" + "---|" * len(archs))
    for case in [*_ssm_cases(), *_attention_cases()]:
        if options.only not in case.name:
            continue
        cells = []
        for arch in archs:
            try:
                build = case.kernel.compile(
                    assume=case.assume, target=arch, **case.constexprs(arch)
                )
                cells.append(_cell(build, options.loop))
            except Exception as error:  # one case that cannot build must not hide the rest
                cells.append(f"does not build: {type(error).__name__}: {error}".splitlines()[0])
        print(f"| {case.name} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
