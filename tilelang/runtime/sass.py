"""Optional SASS inspection of a cubin: which machine instructions a kernel became.

This module owns reading SASS text: the opcodes of a kernel, its main loop (the
largest backward branch), and the classes a person reads an instruction mix by
(`classify`: global loads by width, shared memory, ldmatrix, tensor cores,
dequantization, conversions, integer/address arithmetic, ...), with the bytes of a global load
and the flops of a tensor-core instruction.

Uses NVIDIA's disassembler when one is installed — the `nvidia-cuda-nvdisasm` wheel
(found through `cuda.pathfinder`), else ``nvdisasm`` or ``cuobjdump`` on the PATH. None
is required by tilelang: `find_disassembler()` returns None without one, and callers
(tests, benchmarks) skip what needs it.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Mapping

from tilelang.ir.atoms import WARP_SIZE, WARPGROUP

__all__ = [
    "CLASSES",
    "SassUnavailableError",
    "classify",
    "disassemble",
    "find_disassembler",
    "global_load_bytes",
    "instruction_mix",
    "is_warpgroup_mma",
    "kernel_body",
    "main_loop",
    "mix_key",
    "mma_flops",
    "opcodes",
    "shared_bytes",
]


class SassUnavailableError(RuntimeError):
    """No SASS disassembler is installed."""


def find_disassembler() -> tuple[str, str] | None:
    """(tool, path) of an installed disassembler ("nvdisasm" or "cuobjdump"), or None."""
    for tool in ("nvdisasm", "cuobjdump"):
        path = None
        try:
            from cuda.pathfinder import find_nvidia_binary_utility

            path = find_nvidia_binary_utility(tool)
        except Exception:  # an old cuda-pathfinder, or none: fall back to the PATH
            path = None
        path = path or shutil.which(tool)
        if path:
            return tool, path
    return None


def disassemble(cubin: bytes) -> str:
    """The SASS text of every function in `cubin` (remembered for the last few cubins:
    the disassembler is a process, about 0.3 s a call, and a kernel's report, its tests
    and the tuner read the same cubin)."""
    found = find_disassembler()
    if found is None:
        raise SassUnavailableError(
            "no SASS disassembler: install `nvidia-cuda-nvdisasm` (pip) or the CUDA toolkit"
        )
    return _disassemble(*found, cubin)


@functools.lru_cache(maxsize=32)
def _disassemble(tool: str, path: str, cubin: bytes) -> str:
    with tempfile.TemporaryDirectory(prefix="tilelang-sass-") as tmp:
        file = os.path.join(tmp, "kernel.cubin")
        with open(file, "wb") as f:
            f.write(cubin)
        args = [path, "-c", file] if tool == "nvdisasm" else [path, "-sass", file]
        done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{tool} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


# An instruction line: "/*0120*/  @!P0 LDG.E.128.CONSTANT R4, [R2.64] ;" (nvdisasm) or
# "/*0120*/  @!P0 LDG.E.128.CONSTANT R4, [R2.64] ;  /* 0x... */" (cuobjdump).
# The warpgroup mma's shape is lowercase-x separated: "HGMMA.64x64x16.F32".
_INSTRUCTION = re.compile(
    r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*(?:x[0-9A-Z_.]+)*)"
)


def opcodes(sass: str) -> Counter[str]:
    """How often each opcode (with its modifiers, e.g. ``HMMA.16816.F32``) occurs."""
    return Counter(m.group(1) for m in _INSTRUCTION.finditer(sass))


_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_BRANCH = re.compile(r"BRA\s+`?\(?(\.L_x_\d+)\)?")


def kernel_body(sass: str) -> str:
    """`sass` without the trap that ends a kernel (a label and a branch to itself, after
    the last EXIT) and the padding NOPs after it: the instructions a block can run."""
    lines = sass.splitlines()
    for index, line in enumerate(lines):
        label = _LABEL.match(line)
        if label is None:
            continue
        following = [text for text in lines[index + 1 :] if _INSTRUCTION.search(text)]
        branch = _BRANCH.search(following[0]) if following else None
        if branch is not None and branch.group(1) == label.group(1):
            return "\n".join(lines[:index])
    return sass


def loops(sass: str) -> list[str]:
    """The SASS of every loop: each stretch from a label to the last branch back to it,
    in the order the loops start (an outer loop before the loops inside it). The
    branch-to-itself after the last EXIT, which every kernel ends with, is not a loop."""
    lines = sass.splitlines()
    labels: dict[str, int] = {}
    ends: dict[int, int] = {}  # a loop's first line -> its last backward branch
    for index, line in enumerate(lines):
        label = _LABEL.match(line)
        if label:
            labels[label.group(1)] = index
            continue
        branch = _BRANCH.search(line)
        if branch and branch.group(1) in labels:
            start = labels[branch.group(1)]
            # A branch to itself is the trap after EXIT that ends every kernel, not a loop.
            if any(_INSTRUCTION.search(text) for text in lines[start + 1 : index]):
                ends[start] = index
    return ["\n".join(lines[start : ends[start] + 1]) for start in sorted(ends)]


def main_loop(sass: str) -> str | None:
    """The SASS of the kernel's largest loop (the main loop of a kernel such as a
    matmul's k loop; `loops`), or None when the kernel has no backward branch."""
    return max(loops(sass), key=lambda loop: len(loop.splitlines()), default=None)


def shortest_path(loop: str) -> str:
    """The lines of `loop` (one of `loops`) on its shortest path: from its first
    instruction to its last backward branch, taking every forward branch that skips
    instructions (a predicated ``BRA`` may fall through or jump; an unpredicated one
    jumps). A nested loop's body is counted once. For a loop whose branches guard rare
    work (a mask applied to the last block only), the instructions most iterations
    issue."""
    lines = loop.splitlines()
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := _LABEL.match(line))}
    cost = [math.inf] * (len(lines) + 1)
    came_from = [-1] * (len(lines) + 1)
    cost[0] = 0
    for index, line in enumerate(lines):
        if cost[index] == math.inf:
            continue
        here = cost[index] + (1 if _INSTRUCTION.search(line) else 0)
        branch = _BRANCH.search(line) if index < len(lines) - 1 else None
        target = labels.get(branch.group(1), -1) if branch else -1
        successors = []
        if target > index:  # a forward jump; a backward one (a nested loop) falls through
            successors.append(target)
        if target <= index or _PREDICATED.search(line):
            successors.append(index + 1)
        for successor in successors:
            if here < cost[successor]:
                cost[successor], came_from[successor] = here, index
    path, at = [], len(lines)
    while at > 0:
        at = came_from[at]
        path.append(lines[at])
    return "\n".join(reversed(path))


_PREDICATED = re.compile(r"/\*[0-9a-f]{4,}\*/\s+@!?U?P[0-9]")


def loads_global(loop: str) -> bool:
    """Whether SASS text holds a global load (LDG, or LDGSTS: cp.async)."""
    return any(op.split(".")[0] in ("LDG", "LDGSTS") for op in opcodes(loop))


# --------------------------------------------------------------------------- classes

#: The classes of `classify`, in the order a report lists them.
CLASSES = (
    "global loads",
    "global stores/atomics",
    "shared loads/stores",
    "ldmatrix (LDSM)",
    "tensor core (HMMA/IMMA)",
    "dequantization (LOP3/PRMT/half2/cvt)",
    "conversions (F2F/F2FP/I2F/HADD2.F32)",
    "integer/address",
    "float",
    "warp shuffles/votes",
    "barriers",
    "branches",
    "local memory (spills)",
    "other",
)

_BY_BASE: dict[str, str] = {}
for _class, _bases in (
    ("global loads", "LDG LDGSTS"),
    ("global stores/atomics", "STG RED REDG ATOMG ATOM"),
    ("shared loads/stores", "LDS STS ATOMS"),
    ("ldmatrix (LDSM)", "LDSM"),
    ("tensor core (HMMA/IMMA)", "HMMA IMMA HGMMA IGMMA QMMA BMMA DMMA"),
    # The bit tricks of tilelang's dequantization recipes (docs/design.md §6) and the
    # conversions around them; LOP3 also serves address masks, counted here all the same.
    (
        "dequantization (LOP3/PRMT/half2/cvt)",
        "LOP3 PRMT HFMA2 HMUL2 HADD2 HMNMX2 HSET2 HSETP2 I2F I2FP F2F F2FP I2I",
    ),
    (
        "integer/address",
        "IADD3 IADD IMAD IMUL LEA SHF SHL SHR ISETP VIADD VIADDMNMX IABS IMNMX VIMNMX SEL MOV "
        "CS2R S2R S2UR LDC POPC FLO BREV SGXT BMSK PLOP3 P2R R2P R2UR IDP LOP",
    ),
    (
        "float",
        "FADD FMUL FFMA FMNMX FSETP FSEL FCHK MUFU FRND F2I FSET DADD DMUL DFMA DSETP DMNMX",
    ),
    ("warp shuffles/votes", "SHFL VOTE VOTEU MATCH REDUX"),
    ("barriers", "BAR DEPBAR LDGDEPBAR MEMBAR WARPSYNC ERRBAR CCTL FENCE ARRIVES SYNCS"),
    ("branches", "BRA BRX JMP JMX CALL RET EXIT BSSY BSYNC BREAK BPT"),
    ("local memory (spills)", "LDL STL"),
):
    for _base in _bases.split():
        _BY_BASE[_base] = _class


#: Where the opcodes of the dequantization class go in code that dequantizes nothing.
_CONVERSIONS = "conversions (F2F/F2FP/I2F/HADD2.F32)"
_OUTSIDE_RECIPES = {
    **dict.fromkeys(("F2F", "F2FP", "I2F", "I2FP", "I2I"), _CONVERSIONS),
    **dict.fromkeys(("LOP3", "PRMT"), "integer/address"),
    **dict.fromkeys(("HFMA2", "HMUL2", "HADD2", "HMNMX2", "HSET2", "HSETP2"), "float"),
}


def classify(opcode: str, dequantizes: bool = True) -> str:
    """The class (one of `CLASSES`) of an opcode with its modifiers, e.g.
    ``"LDG.E.128.CONSTANT"`` -> ``"global loads"``.

    Uniform-datapath instructions (``UIADD3``, ``ULDC``, ``UMOV``...) compute the block-
    uniform loop and address values: integer/address. ``HFMA2.MMA`` is how ptxas moves
    a constant into a register, not half2 arithmetic: integer/address too.

    `dequantizes`: whether the code dequantizes (casts low-bit codes to floats). Where
    it does not, the dequantization class's opcodes are what they are elsewhere:
    conversions (``F2FP`` packs f32 into f16x2, ``HADD2.F32`` widens f16 to f32, ``F2F``,
    ``I2F``), integer/address (``LOP3``, ``PRMT``) and float (half2 arithmetic).
    """
    base = opcode.split(".", 1)[0]
    if opcode.startswith("HFMA2.MMA"):
        return "integer/address"
    if not dequantizes and base in _OUTSIDE_RECIPES:
        return _CONVERSIONS if opcode.startswith("HADD2.F32") else _OUTSIDE_RECIPES[base]
    found = _BY_BASE.get(base)
    if found is not None:
        return found
    if base.startswith("U") and len(base) > 1:
        return "integer/address"
    return "other"


_WIDTH_BITS = {"128": 128, "64": 64, "32": 32, "U8": 8, "S8": 8, "U16": 16, "S16": 16}


def global_load_bytes(opcode: str) -> int | None:
    """Bytes per thread of a global load (``LDG``) or asynchronous copy (``LDGSTS``) by its
    width modifier (``.128`` 16, ``.64`` 8, ``.U8`` 1, none 4); None for other opcodes."""
    parts = opcode.split(".")
    if parts[0] not in ("LDG", "LDGSTS"):
        return None
    for part in parts[1:]:
        if part in _WIDTH_BITS:
            return _WIDTH_BITS[part] // 8
    return 4


#: Bytes of shared memory a warp moves per cycle (a wavefront): 32 banks of 4 bytes.
SHARED_WAVEFRONT = 128
_LDSM_MATRICES = {"4": 4, "2": 2}


def shared_bytes(opcode: str) -> int | None:
    """Bytes one warp instruction moves through shared memory, without bank conflicts,
    in whole wavefronts (`SHARED_WAVEFRONT`): ``LDS``/``STS``/``ATOMS`` 32 lanes by their
    width (``.128`` 512, ``.64`` 256, else one wavefront), ``LDSM`` 128 per 8x8 matrix
    (``.4`` 512), ``LDGSTS`` (cp.async) what it writes (``.128`` 512); None for opcodes
    that do not touch shared memory."""
    parts = opcode.split(".")
    base = parts[0]
    warpgroup = _WARPGROUP_MMA.match(opcode)
    if warpgroup is not None:  # B: k × n elements of 2 bytes, read once for 4 warps
        n, k = int(warpgroup.group(2)), int(warpgroup.group(3))
        return 2 * n * k // WARPS_PER_GROUP
    if base == "LDSM":
        return SHARED_WAVEFRONT * _LDSM_MATRICES.get(parts[-1], 1)
    if base not in ("LDS", "STS", "ATOMS", "LDGSTS"):
        return None
    bits = next((_WIDTH_BITS[p] for p in parts[1:] if p in _WIDTH_BITS), 32)
    return max(SHARED_WAVEFRONT, 32 * bits // 8)


_MMA_SHAPE = re.compile(r"^(HMMA|IMMA)\.(16|8)(8)(\d+)")


_WARPGROUP_MMA = re.compile(r"^HGMMA\.(\d+)x(\d+)x(\d+)")
#: Warps that issue one warpgroup mma together (each counts a quarter of its work).
WARPS_PER_GROUP = WARPGROUP // WARP_SIZE


def mma_flops(opcode: str) -> int | None:
    """Flops (multiply and add counted apart) one warp's tensor-core instruction does,
    from its shape: ``HMMA.16816.F32`` is m16 n8 k16, 2*16*8*16 = 4096; a warpgroup's
    ``HGMMA.64x64x16.F32`` a quarter of 2*64*64*16; None for other opcodes and for
    shapes it does not know."""
    warpgroup = _WARPGROUP_MMA.match(opcode)
    if warpgroup is not None:
        m, n, k = (int(warpgroup.group(i)) for i in (1, 2, 3))
        return 2 * m * n * k // WARPS_PER_GROUP
    found = _MMA_SHAPE.match(opcode)
    if found is None:
        return None
    m, n, k = (int(found.group(i)) for i in (2, 3, 4))
    return 2 * m * n * k


def is_warpgroup_mma(opcode: str) -> bool:
    """Whether a tensor-core instruction is the warpgroup mma (``wgmma``, peak rate)."""
    return _WARPGROUP_MMA.match(opcode) is not None


def mix_key(opcode: str) -> str:
    """How an opcode is listed within its class: global loads by instruction and width
    (``LDG.128``, ``LDGSTS.32``), anything else by its base opcode (``LOP3``, ``HMMA``)."""
    base = opcode.split(".", 1)[0]
    width = global_load_bytes(opcode)
    if width is not None:
        return f"{base}.{width * 8}"
    if opcode.startswith("HFMA2.MMA"):
        return "HFMA2.MMA"
    return base


def instruction_mix(ops: Mapping[str, int], dequantizes: bool = True) -> dict[str, dict[str, int]]:
    """Opcode counts (`opcodes`) grouped by class (`classify`, with `dequantizes`):
    class -> {`mix_key`: count}, classes in the order of `CLASSES`, empty classes left
    out."""
    grouped: dict[str, dict[str, int]] = {}
    for opcode, count in ops.items():
        entry = grouped.setdefault(classify(opcode, dequantizes), {})
        key = mix_key(opcode)
        entry[key] = entry.get(key, 0) + count
    return {name: dict(sorted(grouped[name].items())) for name in CLASSES if name in grouped}
