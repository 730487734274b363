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
  shared memory, threads; the CPU workspace); the bundles and the kernels each
  dispatches over; the sha256 of every file; the tilelang and NVRTC versions and the
  PTX ISA with the oldest driver that loads it. A build into a folder that has a
  manifest adds to it (`tilelang.aot.manifest`: a kernel built again replaces its own
  entry).

The files name no absolute path (`tilelang.aot.interface.portable_path`: source paths
relative to the current directory, or the file's name), so two checkouts build the
same bytes. An image that needs more shared memory per block than a device the
launcher would load it on gives (an sm_80 build of a deep pipeline on sm_86/sm_89,
whose blocks get 99 KiB) is an `AotWarning` naming the ``--arch`` to add.

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
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tilelang.aot import bundle as bundle_c
from tilelang.aot import c_launcher, gpu_launcher
from tilelang.aot import manifest as manifest_file
from tilelang.aot.c_expr import AotError, AotWarning
from tilelang.aot.interface import KernelInterface, c_identifier
from tilelang.aot.manifest import HALF_RUNTIME
from tilelang.aot.ptx import DEFAULT_PTX_ISA, Isa, driver_for, ptx_isa, retarget_ptx
from tilelang.ir.thread import ThreadFunction
from tilelang.ir.thread_text import print_expr
from tilelang.kernel import Kernel
from tilelang.target import TARGETS
from tilelang.version import __version__


@dataclass(frozen=True)
class KernelSpec:
    """One kernel to build: `name` is its C prefix; `assume` the facts of the build:
    "all" (every size a multiple of 128), None (no fact, the default: every size the
    kernel's rules accept), or a mapping of size names to powers of two and tensor
    names to value facts, as `Kernel.compile` takes it, except that value facts never
    change the size facts: a mapping that names no size assumes none (where
    `Kernel.compile`, whose default is "all", keeps every size a multiple of 128)."""

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
    bundles = {}
    if bundle is not None:
        files[f"{bundle}.h"] = bundle_c.header(bundle, [b.iface for b in built]).encode()
        files[f"{bundle}.c"] = bundle_c.source(bundle, [b.iface for b in built]).encode()
        bundles[bundle] = [iface.name for iface in bundle_c.order([b.iface for b in built])]
    out = Path(out)
    manifest = {
        "tilelang_version": __version__,
        "nvrtc": _nvrtc_version() if any(a != "cpu" for a in archs) else None,
        "ptx_isa": f"{ptx_isa[0]}.{ptx_isa[1]}",
        "ptx_loads_on": f"drivers of {driver_for(ptx_isa)} and later",
        "archs": list(archs),
        "bundles": bundles,
        "kernels": [item.manifest for item in built],
        "files": {},
    }
    previous = manifest_file.read(out)
    manifest_file.merge(out, previous, manifest)  # refused before anything is written
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
    if "cpu" in archs:
        files.update(_link_cpu_libraries(out, built))
    manifest["files"] = {n: hashlib.sha256(data).hexdigest() for n, data in sorted(files.items())}
    merged = manifest_file.merge(out, previous, manifest)
    manifest_file.write(out, merged)
    return merged


def _link_cpu_libraries(out: Path, built: list[_Built]) -> dict[str, bytes]:
    """Writes the f16 helpers and links every kernel's ``libNAME_cpu.so`` in `out`."""
    from tilelang.aot.cpu_library import half_runtime_object, link_library

    half = out / HALF_RUNTIME
    half.write_bytes(half_runtime_object())
    files = {HALF_RUNTIME: half.read_bytes()}
    for item in built:
        name = item.iface.name
        library = f"lib{name}_cpu.so"
        link_library(out, library, [f"{name}_cpu.c"], [f"{name}_cpu.o", HALF_RUNTIME])
        files[library] = (out / library).read_bytes()
    return files


def _nvrtc_version() -> str:
    from tilelang.runtime.nvrtc import nvrtc_version

    major, minor = nvrtc_version()
    return f"{major}.{minor}"


def compile_assume(kernel: Kernel, constexprs: Mapping[str, Any], assume: object) -> object:
    """`KernelSpec.assume` as `Kernel.compile` takes it: a mapping that names no size
    (value facts alone) states every size's divisor as 1, the fact of a size nothing is
    known of, which `Kernel.compile` reads as no size fact (a mapping naming no size
    would keep its default, every size a multiple of 128)."""
    if not isinstance(assume, Mapping):
        return assume  # "all" or None, as Kernel.compile reads them
    if not assume:
        return None  # no fact at all (Kernel.compile would keep "all")
    sizes = [size.name for size in kernel.specialize(**dict(constexprs)).sizes]
    if any(name in sizes for name in assume):
        return assume
    return {**dict.fromkeys(sizes, 1), **assume}


def _build(spec: KernelSpec, archs: tuple[str, ...], isa: Isa) -> _Built:
    kernel, name = spec.kernel, spec.name
    files: dict[str, bytes] = {}
    images: list[gpu_launcher.Image] = []
    per_arch: dict[str, Any] = {}
    threads: dict[str, ThreadFunction] = {}
    frontend = None
    cpu = None
    assume = compile_assume(kernel, spec.constexprs, spec.assume)
    for arch in archs:
        compiled = kernel.compile(assume=assume, target=arch, **dict(spec.constexprs))
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
                "source": f"{name}_cpu.c",
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
        r = build.resources
        for kind, data in embedded:
            images.append(
                gpu_launcher.Image(
                    arch,
                    kind,
                    data,
                    build.symbol,
                    thread.threads,
                    thread.shared_bytes,
                    r.shared_bytes,
                )
            )
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
    warn_unfit_devices(kernel, name, tuple(images))
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
        "launch_checks": [message for _, message in iface.thread.checks],
        "archs": per_arch,
        "header": f"{name}.h",
        "launcher": f"{name}.c" if gpu else None,
    }
    return _Built(spec, iface, files, manifest)


def warn_unfit_devices(kernel: Kernel, name: str, images: tuple[gpu_launcher.Image, ...]) -> None:
    """An `AotWarning` when the launcher would load an image on GPUs of a supported
    architecture this build has no image of its own for, but the image needs more
    shared memory per block than those GPUs give, with nothing smaller to fall back to:
    a launch there fails (``TILELANG_AOT_ERROR_ARCH``)."""
    built = {image.major_minor[:2] for image in images}
    unfit: dict[int, list[str]] = {}  # image -> the architectures that would refuse it
    for arch, target in TARGETS.items():
        if not target.is_gpu or arch.endswith("a"):
            continue
        version = gpu_launcher.arch_version(arch)
        if version in built:
            continue
        chosen = gpu_launcher.pick(images, *version, 1 << 62)
        if chosen >= 0 and gpu_launcher.pick(images, *version, target.shared_bytes) < 0:
            unfit.setdefault(chosen, []).append(arch)
    if not unfit:
        return
    cases = []
    for k, archs in unfit.items():
        image = images[k]
        cards = " and ".join(
            f"{a} ({TARGETS[a].description}: {TARGETS[a].shared_bytes} B)" for a in archs
        )
        kind = "PTX" if image.kind == "ptx" else image.kind
        cases.append(f"the {image.arch} {kind} ({image.shared_need} B) on {cards}")
    flags = " ".join(f"--arch {a}" for archs in unfit.values() for a in archs)
    message = (
        f"{name}: the build needs more shared memory per block than some GPUs it would "
        f"run on give a block, and has nothing smaller for them, so a launch there fails "
        f"with TILELANG_AOT_ERROR_ARCH: {'; and '.join(cases)}. Add {flags} to build for "
        "them (smaller tiles or fewer stages where the kernel does not fit)"
    )
    warnings.warn_explicit(message, AotWarning, *_kernel_line(kernel))


def _kernel_line(kernel: Kernel) -> tuple[str, int]:
    """The file and line of the kernel's definition, where its warnings point."""
    code = kernel.fn.__code__
    return code.co_filename, code.co_firstlineno


def _json_value(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)
