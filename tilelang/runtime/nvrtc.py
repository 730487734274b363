"""NVRTC driver: CUDA C++ source → PTX + cubin for one GPU architecture, no GPU needed.

`compile_cuda(source, name, arch)` compiles in-process through `cuda.bindings.nvrtc`
(the NVRTC library comes from the `nvidia-cuda-nvrtc` wheel; `cuda.bindings` locates it
with `cuda.pathfinder`, or on the system's CUDA installation). One compilation for a
real architecture (``--gpu-architecture=sm_XX``) yields both the cubin and the PTX it
was assembled from. ptxas runs inside NVRTC with ``-v``, so the log carries the
kernel's resource usage (`tilelang.runtime.cubin.read_resources` reads it).

Options: ``--fmad=false`` (no multiply-add contraction: the emitted code already
rounds every f32 operation explicitly, this guards hand-written code too),
``-ftz=false -prec-div=true -prec-sqrt=true`` (IEEE semantics, the defaults, spelled
out), ``-default-device``, ``-std=c++17``.

`nvrtc_identity(cache)` names the NVRTC a compilation would use ("nvrtc 13.5") for
cache keys. Loading the library to ask costs tens of milliseconds in a fresh process,
more than a whole warm compile may take, so the answer is memoized in the cache
directory with the library's path, size and modification time and a fingerprint of
what decides which library loads (interpreter, site-packages directories, the CUDA and
library-path environment variables, the dynamic linker's cache); any change there
asks the library again.

A failed compilation raises `CudaCompileError`, whose message names the kernel and
architecture, holds NVRTC's whole log, and for every line the log refers to shows the
source lines around it, numbered (``name.cu(N)`` refers to the CUDA source, ``ptx
input, line N`` to the generated PTX). `NvrtcUnavailableError` says how to install
NVRTC when the library cannot be loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import site
import sys
import threading
from dataclasses import dataclass
from functools import cached_property

from tilelang.runtime.cache import DiskCache
from tilelang.runtime.cubin import Resources, read_resources
from tilelang.target import TARGETS

__all__ = [
    "ARCHS",
    "NVRTC_OPTIONS",
    "CudaBinary",
    "CudaCompileError",
    "NvrtcUnavailableError",
    "compile_cuda",
    "nvrtc_identity",
    "nvrtc_version",
]

#: The architectures tilelang targets (`tilelang.target`); others NVRTC accepts also work.
ARCHS = tuple(t.name for t in TARGETS.values() if t.is_gpu)

NVRTC_OPTIONS = (
    "--fmad=false",
    "-ftz=false",
    "-prec-div=true",
    "-prec-sqrt=true",
    "-default-device",
    "-std=c++17",
    "-Xptxas=-v",
)

_ARCH = re.compile(r"sm_(\d{2,3})([af]?)")
_CONTEXT = 3  # source lines shown on each side of a line an error names


class NvrtcUnavailableError(RuntimeError):
    """The NVRTC library (or `cuda.bindings`) cannot be loaded."""


class CudaCompileError(RuntimeError):
    """NVRTC rejected a kernel; the message holds the log and the numbered source lines."""

    def __init__(self, message: str, *, name: str, arch: str, log: str) -> None:
        super().__init__(message)
        self.name = name
        self.arch = arch
        self.log = log


@dataclass(frozen=True)
class CudaBinary:
    """One kernel compiled for one architecture."""

    name: str  # the kernel's symbol in the cubin
    arch: str
    ptx: str
    cubin: bytes
    log: str  # NVRTC's log: warnings and the ptxas -v resource lines

    @cached_property
    def resources(self) -> Resources:
        """Registers, spills, static shared memory and stack frame of the kernel."""
        return read_resources(self.log, self.cubin, self.name)


# --------------------------------------------------------------------------- the library

_LOCK = threading.Lock()
_MODULE: list[object] = []


def _nvrtc():
    """The `cuda.bindings.nvrtc` module, with its library loaded (else a clear error)."""
    with _LOCK:
        if _MODULE:
            return _MODULE[0]
        try:
            # Deferred: cuda-python is heavy and optional until a kernel is compiled.
            from cuda.bindings import nvrtc
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise NvrtcUnavailableError(
                "tilelang compiles CUDA kernels with NVRTC through `cuda.bindings` "
                f"(the cuda-python package), which cannot be imported: {e}. "
                "Install it with `pip install cuda-python nvidia-cuda-nvrtc`."
            ) from e
        try:
            result = nvrtc.nvrtcVersion()
        except Exception as e:
            raise NvrtcUnavailableError(
                f"the NVRTC library cannot be loaded ({type(e).__name__}: {str(e).strip()}). "
                "Install it with `pip install nvidia-cuda-nvrtc` (the wheel of your CUDA "
                "major version: `nvidia-cuda-nvrtc-cu12` for CUDA 12), or install the CUDA "
                "toolkit."
            ) from e
        _check(nvrtc, result[0], "nvrtcVersion")
        _MODULE.append(nvrtc)
        return nvrtc


def nvrtc_version() -> tuple[int, int]:
    """(major, minor) of the NVRTC library in use."""
    nvrtc = _nvrtc()
    err, major, minor = nvrtc.nvrtcVersion()
    _check(nvrtc, err, "nvrtcVersion")
    return int(major), int(minor)


_IDENTITY: list[str] = []

#: The memo of NVRTC's identity, one per Python interpreter.
_MEMO = "nvrtc-" + hashlib.sha256(sys.executable.encode()).hexdigest()[:16]

#: The environment variables cuda.pathfinder's library search reads.
_SEARCH_VARIABLES = ("CUDA_PATH", "CUDA_HOME", "CONDA_PREFIX", "LD_LIBRARY_PATH") + (
    ("PATH",) if os.name == "nt" else ()
)


def nvrtc_identity(cache: DiskCache) -> str:
    """The NVRTC this process compiles with, as "nvrtc MAJOR.MINOR": read from the memo
    in `cache` when nothing that decides which library loads has changed."""
    if not _IDENTITY:
        _IDENTITY.append(_identity(cache))
    return _IDENTITY[0]


def _identity(cache: DiskCache) -> str:
    environment = _environment()
    memo = cache.read_memo(_MEMO)
    if memo is not None and memo.get("environment") == environment:
        library, version = memo.get("library"), memo.get("version")
        fresh = isinstance(library, str) and memo.get("stamp") == _stamp(library)
        if fresh and isinstance(version, str):
            return version
    major, minor = nvrtc_version()
    version = f"nvrtc {major}.{minor}"
    library = _library_path()
    if library is not None:
        memo = {"environment": environment, "library": library, "version": version}
        cache.write_memo(_MEMO, {**memo, "stamp": _stamp(library)})
    return version


def _environment() -> str:
    """A fingerprint of what decides which NVRTC library `cuda.bindings` loads: the
    interpreter, its site-packages directories (whose modification time changes when a
    package is installed or removed), the variables the library search reads, and the
    dynamic linker's cache."""
    folders = [*getattr(site, "getsitepackages", list)(), site.getusersitepackages()]
    folders += os.environ.get("PYTHONPATH", "").split(os.pathsep)
    variables = [os.environ.get(name) for name in _SEARCH_VARIABLES]
    parts = [sys.executable, sys.prefix, variables]
    parts += [(folder, _stamp(folder)) for folder in folders if folder]
    parts.append(_stamp("/etc/ld.so.cache"))
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _stamp(path: str) -> str | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _library_path() -> str | None:
    """The file the NVRTC library was loaded from (cuda.bindings finds it with
    cuda.pathfinder, which remembers what it loaded), or None when it cannot tell."""
    try:
        # Deferred: cuda.pathfinder is an optional dependency that takes tens of
        # milliseconds to import, needed only when the memo must be rewritten.
        from cuda.pathfinder import load_nvidia_dynamic_lib

        return str(load_nvidia_dynamic_lib("nvrtc").abs_path)
    except Exception:  # an older cuda-python without pathfinder, or no such library
        return None


def _check(nvrtc, err, what: str) -> None:
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        _, text = nvrtc.nvrtcGetErrorString(err)
        raise RuntimeError(f"{what} failed: {text.decode(errors='replace')}")


def _read(nvrtc, prog, size_fn, get_fn) -> bytes:
    err, size = size_fn(prog)
    _check(nvrtc, err, size_fn.__name__)
    # NVRTC writes into the buffer, so it must be mutable and our own. A bytes object is
    # neither: `b" " * 1` *is* CPython's one shared b" " (all 1-byte bytes objects are
    # cached), and the NUL NVRTC writes into a 1-byte result (the empty PTX of a failed
    # compile) turned every b" " of the process into b"\0" — which later made
    # torch.load(weights_only=True) read memo index 32 as 0.
    buffer = bytearray(size)
    (err,) = get_fn(prog, buffer)
    _check(nvrtc, err, get_fn.__name__)
    return bytes(buffer)


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode(errors="replace").strip()


# --------------------------------------------------------------------------- compiling


def compile_cuda(source: str, name: str, arch: str, options: tuple[str, ...] = ()) -> CudaBinary:
    """Compile `source` (whose kernel symbol is `name`) for `arch` (e.g. ``"sm_90a"``).

    `options` are extra NVRTC options, after `NVRTC_OPTIONS`."""
    if not _ARCH.fullmatch(arch):
        raise ValueError(
            f"unknown GPU architecture {arch!r}: expected sm_XX (tilelang targets {', '.join(ARCHS)})"
        )
    nvrtc = _nvrtc()
    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), f"{name}.cu".encode(), 0, [], [])
    _check(nvrtc, err, "nvrtcCreateProgram")
    try:
        opts = [f"--gpu-architecture={arch}".encode()] + [
            o.encode() for o in (*NVRTC_OPTIONS, *options)
        ]
        (result,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        log = _text(_read(nvrtc, prog, nvrtc.nvrtcGetProgramLogSize, nvrtc.nvrtcGetProgramLog))
        ptx = ""
        with contextlib.suppress(RuntimeError):  # the PTX exists when only ptxas failed
            ptx = _text(_read(nvrtc, prog, nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX))
        if result != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            _, reason = nvrtc.nvrtcGetErrorString(result)
            raise CudaCompileError(
                _error_message(name, arch, reason.decode(errors="replace"), log, source, ptx),
                name=name,
                arch=arch,
                log=log,
            )
        cubin = bytes(_read(nvrtc, prog, nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN))
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    return CudaBinary(name=name, arch=arch, ptx=ptx + "\n", cubin=cubin, log=log)


# --------------------------------------------------------------------------- errors


def _numbered(text: str, lines: list[int], title: str) -> list[str]:
    """The lines of `text` around each of `lines` (1-based), numbered, the named ones
    marked with '>'; overlapping windows are merged."""
    all_lines = text.splitlines()
    wanted: set[int] = set()
    for n in lines:
        wanted.update(range(max(1, n - _CONTEXT), min(len(all_lines), n + _CONTEXT) + 1))
    if not wanted:
        return []
    out = [title]
    previous = None
    width = len(str(max(wanted)))
    for n in sorted(wanted):
        if previous is not None and n != previous + 1:
            out.append("   " + "." * width)
        mark = ">" if n in lines else " "
        out.append(f"{mark} {n:>{width}} | {all_lines[n - 1]}")
        previous = n
    return out


def _error_message(name: str, arch: str, reason: str, log: str, source: str, ptx: str) -> str:
    source_lines = sorted({int(n) for n in re.findall(rf"{re.escape(name)}\.cu\((\d+)\)", log)})
    ptx_lines = sorted({int(n) for n in re.findall(r"ptx input, line (\d+)", log)})
    # Other "line N" mentions (e.g. a remark that names no file) refer to the source.
    others = {int(n) for n in re.findall(r"\bline (\d+)", log)} - set(ptx_lines)
    source_lines = sorted(set(source_lines) | others)
    parts = [f"NVRTC could not compile kernel {name} for {arch} ({reason}).", "", "NVRTC log:"]
    parts += ["  " + line for line in (log or "(empty)").splitlines()]
    if source_lines:
        parts += ["", *_numbered(source, source_lines, f"{name}.cu (generated CUDA source):")]
    if ptx_lines and ptx:
        parts += ["", *_numbered(ptx, ptx_lines, f"{name}.ptx (generated PTX):")]
    return "\n".join(parts)
