"""Ahead-of-time compilation: kernels built into cubins, PTX, C launchers and CPU
libraries that a C or C++ program links, with no Python at run time (`tilelang compile`).

`compile_aot(specs, archs, out)` (`tilelang.aot.build`) writes the folder; the C
interface is `tilelang.aot.interface`, the generated C `tilelang.aot.c_launcher` and
`tilelang.aot.bundle`, the PTX version handling `tilelang.aot.ptx`, the CPU object and
library `tilelang.aot.cpu_library`, the manifest `tilelang.aot.manifest`, the command
line `tilelang.aot.command`.

The names below load on first use: the command line registers `tilelang compile`
without loading the compiler.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "KernelSpec": "tilelang.aot.build",
    "compile_aot": "tilelang.aot.build",
    "AotError": "tilelang.aot.c_expr",
    "AotWarning": "tilelang.aot.c_expr",
    "STATUS_CODES": "tilelang.aot.c_launcher",
    "DEFAULT_PTX_ISA": "tilelang.aot.ptx",
    "parse_isa": "tilelang.aot.ptx",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tilelang.aot' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
