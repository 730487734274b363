"""`compile_aot`: one or more kernels built ahead of time into a folder, no GPU needed.

For every `KernelSpec` (a kernel, the C name it gets, its constexprs and facts: size
facts, and value facts on tensors, ``{"s": 64}``: every element of s is +0 or positive
and below 64) and every requested architecture it writes, into `out`:

* per GPU architecture: ``NAME.ARCH.cubin`` (NVRTC, through the disk cache like any
  compile) and ``NAME.ARCH.ptx`` with the `.version` that `ptx_isa` asks for
  (`tilelang.aot.ptx`);
* ``NAME.h`` and, with any GPU architecture, ``NAME.c`` (the GPU launcher, the cubins
  and PTX embedded); with "cpu", ``NAME_cpu.c``, ``NAME_cpu.o`` and
  ``libNAME_cpu.so`` (the same entry point on the CPU) and the shared
  ``tilelang_half_runtime.o`` (`tilelang.aot.cpu_library`);
* with several kernels, ``BUNDLE.h``/``BUNDLE.c`` (`tilelang.aot.bundle`);
* ``manifest.json``: per kernel its signature, constexprs, size rules and facts
  (``assume``: size -> divisor; ``values``: tensor -> bound), grid,
  launch checks, and per architecture its files and resources (registers, spills,
  shared memory, threads; the CPU workspace); the sha256 of every file written; the
  tilelang and NVRTC versions and the PTX ISA with the oldest driver that loads it.

Value facts: the CPU library checks them on the host arrays before running
(``TILELANG_AOT_ERROR_VALUE_FACT``); the GPU launcher does not, and its header says so:
checking would copy device memory back on every launch, and the facts a build takes
are about weights (scales) that a program loads once and can check then, from the
manifest. A violated fact there gives wrong products, not an error.

Nothing is written until every kernel has compiled for every architecture, so a
compile error leaves `out` as it was (only linking the CPU library comes after).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tilelang.aot import bundle as bundle_c
from tilelang.aot import c_launcher, gpu_launcher
from tilelang.aot.c_expr import AotError
from tilelang.aot.interface import KernelInterface, c_identifier
from tilelang.aot.ptx import DEFAULT_PTX_ISA, Isa, driver_for, ptx_isa, retarget_ptx
from tilelang.ir.thread import ThreadFunction
from tilelang.ir.thread_text import print_expr
from tilelang.kernel import Kernel
from tilelang.target import TARGETS
from tilelang.version import __version__

MANIFEST = "manifest.json"
HALF_RUNTIME = "tilelang_half_runtime.o"


@dataclass(frozen=True)
class KernelSpec:
    """One kernel to build: `name` is its C prefix; `assume` as `Kernel.compile` takes
    it ("all", None, or size name -> power of two)."""

    kernel: Kernel
    name: str
    constexprs: Mapping[str, Any] = field(default_factory=dict)
    assume: Mapping[str, int] | str | None = None


@dataclass
class _Built:
    spec: KernelSpec
    iface: KernelInterface
    files: dict[str, bytes]  # file name -> contents
    manifest: dict[str, Any]


def check_archs(archs: Sequence[str]) -> tuple[str, ...]:
    """The architectures, checked: "cpu" or a GPU target tilelang knows."""
    if not archs:
        raise AotError("--arch: give at least one architecture (e.g. --arch sm_80 --arch cpu)")
    known = [name for name in TARGETS if TARGETS[name].is_gpu] + ["cpu"]
    for arch in archs:
        if arch not in known:
            raise AotError(f"--arch: expected one of {', '.join(known)}, got {arch!r}")
    return tuple(dict.fromkeys(archs))


def compile_aot(
    specs: Sequence[KernelSpec],
    archs: Sequence[str],
    out: str | Path,
    *,
    ptx_isa: Isa = DEFAULT_PTX_ISA,
    bundle: str | None = None,
) -> dict[str, Any]:
    """Builds every spec for every architecture into `out`; returns the manifest."""
    archs = check_archs(archs)
    names = [spec.name for spec in specs]
    for name in names:
        c_identifier(name, "--name")
    if len(set(names)) != len(names):
        raise AotError(f"--name: every kernel needs its own name, got {', '.join(names)}")
    if bundle is not None:
        c_identifier(bundle, "--bundle")
        if bundle in names:
            raise AotError(f"--bundle: {bundle!r} is also a kernel's name")
    built = [_build(spec, archs, ptx_isa) for spec in specs]
    files: dict[str, bytes] = {}
    for item in built:
        files.update(item.files)
    if bundle is not None:
        files[f"{bundle}.h"] = bundle_c.header(bundle, [b.iface for b in built]).encode()
        files[f"{bundle}.c"] = bundle_c.source(bundle, [b.iface for b in built]).encode()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
    if "cpu" in archs:
        from tilelang.aot.cpu_library import half_runtime_object, link_library

        half = out / HALF_RUNTIME
        half.write_bytes(half_runtime_object())
        files[HALF_RUNTIME] = half.read_bytes()
        for item in built:
            library = out / f"lib{item.iface.name}_cpu.so"
            sources = [out / f"{item.iface.name}_cpu.c"]
            link_library(library, sources, [out / f"{item.iface.name}_cpu.o", half])
            files[library.name] = library.read_bytes()
    manifest = {
        "tilelang_version": __version__,
        "nvrtc": _nvrtc_version() if any(a != "cpu" for a in archs) else None,
        "ptx_isa": f"{ptx_isa[0]}.{ptx_isa[1]}",
        "ptx_loads_on": f"drivers of {driver_for(ptx_isa)} and later",
        "archs": list(archs),
        "bundle": bundle,
        "kernels": [item.manifest for item in built],
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _nvrtc_version() -> str:
    from tilelang.runtime.nvrtc import nvrtc_version

    major, minor = nvrtc_version()
    return f"{major}.{minor}"


def _build(spec: KernelSpec, archs: tuple[str, ...], isa: Isa) -> _Built:
    kernel, name = spec.kernel, spec.name
    files: dict[str, bytes] = {}
    images: list[gpu_launcher.Image] = []
    per_arch: dict[str, Any] = {}
    threads: dict[str, ThreadFunction] = {}
    frontend = None
    cpu = None
    for arch in archs:
        compiled = kernel.compile(assume=spec.assume, target=arch, **dict(spec.constexprs))
        thread = threads[arch] = compiled.thread
        frontend = compiled.stages["frontend"] if frontend is None else frontend
        if arch == "cpu":
            # Deferred: only a CPU build loads the LLVM emitter and llvmlite.
            from tilelang.aot.cpu_library import cpu_object

            entry = f"{name}_cpu_entry"
            obj, lowered = cpu_object(thread, entry)
            files[f"{name}_cpu.o"] = obj
            cpu = (entry, lowered.workspace_bytes)
            per_arch[arch] = {
                "library": f"lib{name}_cpu.so",
                "object": f"{name}_cpu.o",
                "entry": entry,
                "workspace_bytes": lowered.workspace_bytes,
            }
            continue
        build = compiled.cuda
        ptx = retarget_ptx(build.ptx, isa, f"{kernel.__name__} for {arch}")
        files[f"{name}.{arch}.cubin"] = build.cubin
        files[f"{name}.{arch}.ptx"] = ptx.encode()
        embedded = [("cubin", build.cubin)]
        if not arch.endswith("a"):  # "a" PTX runs only where its own cubin does
            embedded.append(("ptx", ptx.encode() + b"\0"))
        for kind, data in embedded:
            images.append(
                gpu_launcher.Image(
                    arch, kind, data, build.symbol, thread.threads, thread.shared_bytes
                )
            )
        r = build.resources
        version = ptx_isa(ptx)
        per_arch[arch] = {
            "cubin": f"{name}.{arch}.cubin",
            "ptx": f"{name}.{arch}.ptx",
            "ptx_isa": f"{version[0]}.{version[1]}",
            "symbol": build.symbol,
            "threads": thread.threads,
            "dynamic_shared_bytes": thread.shared_bytes,
            "registers": r.registers,
            "spill_store_bytes": r.spill_store_bytes,
            "spill_load_bytes": r.spill_load_bytes,
            "static_shared_bytes": r.shared_bytes,
            "local_bytes": r.local_bytes,
        }
    first = threads[archs[0]]
    for arch, thread in threads.items():
        if (thread.grid, thread.checks, thread.params) != (first.grid, first.checks, first.params):
            raise AotError(
                f"{kernel.__name__}: the {arch} build launches differently from the "
                f"{archs[0]} build (grid, checks or parameters); build them separately"
            )
    iface = KernelInterface.of(name, frontend, first)
    gpu = [a for a in archs if a != "cpu"]
    note = f"\n * Builds: {', '.join(archs)}."
    files[f"{name}.h"] = c_launcher.header(iface, note).encode()
    if gpu:
        files[f"{name}.c"] = gpu_launcher.gpu_source(iface, tuple(images)).encode()
    if cpu is not None:
        files[f"{name}_cpu.c"] = c_launcher.cpu_source(iface, cpu[1], cpu[0]).encode()
    manifest = {
        "name": name,
        "kernel": kernel.__name__,
        "entry": iface.prototype(),
        "constexprs": {k: _json_value(v) for k, v in frontend.constexprs},
        "assume": {size: divisor for size, divisor in iface.facts},
        "values": {tensor: bound for tensor, bound in iface.values},  # 0 <= tensor < bound
        "signature": iface.signature(),
        "size_rules": {
            "read": {size: f"{tensor}.shape[{axis}]" for size, tensor, axis in iface.size_reads},
            "checked": [
                f"{tensor}.shape[{axis}] == {rule}" for tensor, axis, rule in iface.shape_checks
            ],
        },
        "grid": [print_expr(g) for g in first.grid],
        "launch_checks": [message for _, message in first.checks],
        "archs": per_arch,
        "header": f"{name}.h",
        "launcher": f"{name}.c" if gpu else None,
    }
    return _Built(spec, iface, files, manifest)


def _json_value(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)
