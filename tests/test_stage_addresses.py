"""Shared-memory addresses in the sm_90 main loop of the quantized matmuls: fixed bases
plus one stage offset (issues 10 and 11), read from the SASS of NVRTC's cubin (no GPU).

A pipelined loop reads stage s of its buffers at ``base + s·stage_bytes``. The swizzled
part of an ldmatrix address (the XOR of a thread's row into its 16-byte chunk) does not
depend on the stage: the stage's bytes are a multiple of the swizzle period
(`tilelang.analysis.shared_layouts.staged_layout`), so the lowering adds the stage's
offset after the swizzle (`tilelang.lowering.shared.lower_sharedslice`) and the
per-thread bases are loop-invariant. Where the stage offset is block-uniform, an
ldmatrix takes ``[R_base + UR_stage]`` and costs no address instruction at all.

The kernels: the example at the issue's launch facts (u4, G = 128, m = 1, k = 8192,
n = 28672, as in tests/test_dequant_cost.py) and the library's kernels for an
8192 x 8192 weight at m = 1 (gemv) and m = 4096 (gemm), u4 and nvfp4 (the shapes of
``benchmarks/quant_matmul.py --static``).

The address criterion is the class ``integer/address`` of `tilelang.runtime.sass.classify`
per iteration: everything that is not dequantization, tensor-core, memory, barrier or
branch work (addresses, masks, the loop counter and the stage's rotation). The bounds are
what the loops take now; a change that adds address work to the loop fails.
"""

from __future__ import annotations

import re

import pytest
from conftest import load_example
from test_quant_gemm_path import static_weight

import tilelang as tl
from tilelang import quant
from tilelang.cli import launch_facts
from tilelang.runtime import sass

pytestmark = [pytest.mark.usefixtures("disassembler")]

quant_example = load_example("quant_matmul")

LAUNCH = {"M": 1, "K": 8192, "N": 28672}
SIZE = 8192  # the library's weight: SIZE x SIZE
ADDRESS = "integer/address"


def example_kernel():
    consts = {"WT": tl.u4, "G": 128}
    facts = launch_facts(quant_example.quant_matmul, consts, LAUNCH)
    return quant_example.quant_matmul.compile(target="sm_90", assume=facts, **consts)


def library_kernel(name: str, m: int):
    return quant.plan(static_weight(name, SIZE, SIZE), m, "sm_90").launches[0].compiled


def compiled(case: str):
    if case == "example u4":
        return example_kernel()
    name, m = case.split(" m=")
    return library_kernel(name, int(m))


def loop_of(kernel) -> str:
    assert kernel.resources.spill_store_bytes == 0
    loop = sass.main_loop(sass.disassemble(kernel.cubin))
    assert loop is not None
    return loop


# -- reading SASS ---------------------------------------------------------------------------

_LINE = re.compile(r"/\*[0-9a-f]+\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z0-9_.]+)\s+([^;]*);")
_LDSM_ADDRESS = re.compile(r"\[(R\d+)\+(UR\d+)(?:\+0x[0-9a-f]+)?\]")


def instructions(loop: str) -> list[tuple[str, list[str]]]:
    """(opcode, operands) of every instruction of `loop`."""
    return [
        (m.group(1), [o.strip() for o in m.group(2).split(",")])
        for m in map(_LINE.search, loop.splitlines())
        if m
    ]


def written_registers(opcode: str, operands: list[str]) -> set[str]:
    """The vector registers an instruction writes: its first operand when that is a
    register, with the registers after it that a wide result covers."""
    if not operands or not re.fullmatch(r"R\d+", operands[0]):
        return set()
    first = int(operands[0][1:])
    parts = opcode.split(".")
    if opcode.startswith(("LDSM", "HMMA")) or "128" in parts:
        width = 4
    elif "64" in parts or "WIDE" in parts:
        width = 2
    else:
        width = 1
    return {f"R{first + n}" for n in range(width)}


# -- laws -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["example u4", "u4 m=1"])
def test_every_ldmatrix_reads_an_invariant_base_plus_the_uniform_stage_offset(case):
    """Each ldmatrix of the loop addresses ``[R + UR (+ imm)]``: all of them the same
    uniform register (the stage's offset, one value per iteration), and registers R
    that nothing in the loop writes (bases computed once, before the loop)."""
    found = instructions(loop_of(compiled(case)))
    reads = [ops for op, ops in found if op.startswith("LDSM")]
    assert reads, "the loop reads its operands with ldmatrix"
    addresses = [_LDSM_ADDRESS.fullmatch(ops[-1]) for ops in reads]
    assert all(addresses), [ops[-1] for ops in reads]
    assert len({a.group(2) for a in addresses}) == 1, [ops[-1] for ops in reads]
    bases = {a.group(1) for a in addresses}
    written = set().union(*(written_registers(op, ops) for op, ops in found))
    assert not bases & written, sorted(bases & written)


#: integer/address instructions per iteration of the sm_90 loop, as compiled now. The
#: gemm loops (m=4096) read 128 rows of k an iteration (BK = 128, `tilelang.quant.choice`):
#: 34.5 and 63.5 per 64 rows, where their 64-row iterations took 43 and 68.
ADDRESS_BOUNDS = {
    "example u4": 51,
    "u4 m=1": 50,
    "u4 m=4096": 69,
    "nvfp4 m=1": 101,
    "nvfp4 m=4096": 127,
}


@pytest.mark.parametrize("case", list(ADDRESS_BOUNDS))
def test_address_work_per_iteration_stays_within_its_bound(case):
    ops = sass.opcodes(loop_of(compiled(case)))
    address = sum(n for op, n in ops.items() if sass.classify(op) == ADDRESS)
    assert address <= ADDRESS_BOUNDS[case], {
        op: n for op, n in ops.items() if sass.classify(op) == ADDRESS
    }
