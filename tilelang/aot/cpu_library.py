"""The CPU build of an ahead-of-time kernel: an object file from the LLVM backend and a
shared library with the same C entry point as the GPU launcher.

`cpu_object(thread, entry)` emits the thread IR as LLVM IR (`tilelang.codegen.llvm`, the
code the JIT path runs), renames its entry ``tilelang_entry`` to `entry` (so several
kernels link into one program), makes every other function internal, optimizes it at
-O2 and writes a position-independent object for the host's triple and a *generic*
CPU of its family: the library runs on any machine of that architecture, not only the
one that built it, and gives the same bits (the emitter's semantics do not depend on
CPU features). Without F16C, f16 conversions become calls to ``__extendhfsf2`` and
``__truncsfhf2``; `half_runtime_object()` provides them (hidden: not exported from the
library, so they never interpose on another library's).

`link_library(folder, library, sources, objects)` runs the host C compiler (``cc``, or
``$CC``) in `folder` to make the shared library, linked with libm (the backend's math
functions call it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tilelang.aot.c_expr import AotError
from tilelang.codegen.llvm import ENTRY, LLVMKernel, lower_to_llvm
from tilelang.codegen.llvm_numeric import half_runtime_module
from tilelang.ir import thread as t
from tilelang.ir.thread_verify import verify_thread_function

OPT_LEVEL = 2


def _binding():
    """llvmlite's binding with the native target initialized, and a generic,
    position-independent target machine for the host's triple."""
    # Deferred: loading LLVM is only needed for a CPU build.
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    triple = llvm.get_process_triple()
    target = llvm.Target.from_triple(triple)
    machine = target.create_target_machine(opt=OPT_LEVEL, reloc="pic", codemodel="default")
    return llvm, machine, triple


def _compile(llvm, machine, triple: str, text: str, keep: set[str], hidden: bool) -> bytes:
    module = llvm.parse_assembly(text)
    module.triple = triple
    module.data_layout = str(machine.target_data)
    for function in module.functions:
        if function.is_declaration:
            continue
        if function.name in keep:
            if hidden:
                function.visibility = "hidden"
        else:
            function.linkage = "internal"
    for variable in module.global_variables:
        if not variable.is_declaration:
            variable.linkage = "internal"
    module.verify()
    options = llvm.create_pipeline_tuning_options(speed_level=OPT_LEVEL)
    builder = llvm.create_pass_builder(machine, options)
    builder.getModulePassManager().run(module, builder)
    return machine.emit_object(module)


def cpu_object(thread: t.ThreadFunction, entry: str) -> tuple[bytes, LLVMKernel]:
    """The object file of `thread` whose one exported function is `entry` (the LLVM
    backend's ABI, `tilelang.codegen.llvm`), and the lowered kernel's facts."""
    verify_thread_function(thread)
    lowered = lower_to_llvm(thread)
    text = re.sub(rf'@"?{ENTRY}"?(?=\()', f'@"{entry}"', lowered.ir)
    llvm, machine, triple = _binding()
    return _compile(llvm, machine, triple, text, {entry}, hidden=False), lowered


def half_runtime_object() -> bytes:
    """``__extendhfsf2`` and ``__truncsfhf2`` for CPUs without F16C, hidden."""
    llvm, machine, triple = _binding()
    module = half_runtime_module()
    names = {f.name for f in module.functions}
    return _compile(llvm, machine, triple, str(module), names, hidden=True)


def c_compiler() -> str:
    """The host C compiler: ``$CC``, else ``cc``; an `AotError` when there is none."""
    name = os.environ.get("CC") or "cc"
    found = shutil.which(name)
    if found is None:
        raise AotError(
            f"--arch cpu needs a C compiler to link the library: {name!r} is not on PATH (set CC)"
        )
    return found


def link_library(folder: Path, library: str, sources: list[str], objects: list[str]) -> None:
    """Compiles `sources` and links them with `objects` into the shared library
    `library`, all files of `folder`. The compiler runs in `folder` on the bare names,
    so the library names no path of the machine that built it."""
    command = [c_compiler(), "-shared", "-fPIC", "-O2", "-o", library, *sources, *objects]
    # libm: the LLVM backend's math (exp, log, ...) calls the C library's functions.
    command.append("-lm")
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=folder)
    if done.returncode != 0:
        raise AotError(
            f"linking {library} in {folder} failed ({' '.join(command)}):\n"
            f"{done.stdout}{done.stderr}"
        )
