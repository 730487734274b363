"""Optional SASS inspection of a cubin: which machine instructions a kernel became.

Uses NVIDIA's disassembler when one is installed — the `nvidia-cuda-nvdisasm` wheel
(found through `cuda.pathfinder`), else ``nvdisasm`` or ``cuobjdump`` on the PATH. None
is required by tilelang: `find_disassembler()` returns None without one, and callers
(tests, benchmarks) skip what needs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter

__all__ = ["SassUnavailableError", "disassemble", "find_disassembler", "main_loop", "opcodes"]


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
    """The SASS text of every function in `cubin`."""
    found = find_disassembler()
    if found is None:
        raise SassUnavailableError(
            "no SASS disassembler: install `nvidia-cuda-nvdisasm` (pip) or the CUDA toolkit"
        )
    tool, path = found
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
_INSTRUCTION = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)")


def opcodes(sass: str) -> Counter[str]:
    """How often each opcode (with its modifiers, e.g. ``HMMA.16816.F32``) occurs."""
    return Counter(m.group(1) for m in _INSTRUCTION.finditer(sass))


_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_BRANCH = re.compile(r"BRA\s+`?\(?(\.L_x_\d+)\)?")


def main_loop(sass: str) -> str | None:
    """The SASS of the kernel's largest loop: the longest stretch from a label to a
    branch back to it (the main loop of a kernel such as a matmul's k loop), or None
    when the kernel has no backward branch."""
    lines = sass.splitlines()
    labels: dict[str, int] = {}
    best: tuple[int, int] | None = None
    for index, line in enumerate(lines):
        label = _LABEL.match(line)
        if label:
            labels[label.group(1)] = index
            continue
        branch = _BRANCH.search(line)
        if branch and branch.group(1) in labels:
            start = labels[branch.group(1)]
            if best is None or index - start > best[1] - best[0]:
                best = (start, index)
    if best is None:
        return None
    return "\n".join(lines[best[0] : best[1] + 1])
