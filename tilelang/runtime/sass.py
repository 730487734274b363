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

__all__ = ["SassUnavailableError", "disassemble", "find_disassembler", "opcodes"]


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
