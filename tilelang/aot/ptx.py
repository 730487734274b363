"""PTX a stated driver accepts: the `.version` directive and the features behind it.

NVRTC writes its own PTX ISA version into `.version` (NVRTC 13.5 writes 9.5), and a
driver refuses PTX whose ISA is newer than its own, even when the code uses nothing
new: driver 580 (CUDA 13.0) loads PTX ISA up to 9.0. Cubins are not affected (a
driver of the same CUDA major version loads them), but the PTX shipped next to them
is what the driver JIT-compiles for an architecture no cubin was built for.

`retarget_ptx(ptx, isa, arch)` rewrites the directive to the requested ISA (never
above what NVRTC wrote) after checking that nothing in the PTX needs a newer one: the
`.target` architecture's own minimum, and every instruction or directive in
`FEATURES` (the ones tilelang's CUDA emitter and NVRTC produce, with the ISA that
introduced each, from the PTX ISA manual's per-instruction "PTX ISA Notes"). PTX
that uses a feature newer than the request is an `AotError` naming the feature, the
ISA it needs and the oldest CUDA driver that loads that ISA. Features missing from
the table are not caught; a GPU-side `cuModuleLoadData` of the PTX on that driver is
the final word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tilelang.aot.c_expr import AotError

Isa = tuple[int, int]

#: The ISA `--ptx-isa` defaults to: what driver 580 (CUDA 13.0) loads.
DEFAULT_PTX_ISA: Isa = (9, 0)

#: The first CUDA release whose driver loads each PTX ISA version (PTX ISA manual,
#: "Release history"). ISA 8.6 arrived with CUDA 12.7 (never released on its own: 12.8).
_CUDA_OF_ISA: dict[Isa, tuple[int, int]] = {
    (7, 0): (11, 0),
    (7, 1): (11, 1),
    (7, 2): (11, 2),
    (7, 3): (11, 3),
    (7, 4): (11, 4),
    (7, 5): (11, 5),
    (7, 6): (11, 6),
    (7, 7): (11, 7),
    (7, 8): (11, 8),
    (8, 0): (12, 0),
    (8, 1): (12, 1),
    (8, 2): (12, 2),
    (8, 3): (12, 3),
    (8, 4): (12, 4),
    (8, 5): (12, 5),
    (8, 6): (12, 7),
    (8, 7): (12, 8),
    (8, 8): (12, 9),
    (9, 0): (13, 0),
    (9, 1): (13, 1),
    (9, 2): (13, 2),
    (9, 3): (13, 3),
    (9, 4): (13, 4),
    (9, 5): (13, 5),
}

#: The oldest ISA whose `.target` names each architecture.
_TARGET_ISA: dict[str, Isa] = {
    "sm_80": (7, 0),
    "sm_86": (7, 1),
    "sm_87": (7, 4),
    "sm_89": (7, 8),
    "sm_90": (7, 8),
    "sm_90a": (8, 0),
}


@dataclass(frozen=True)
class Feature:
    pattern: re.Pattern[str]  # matched against each instruction or directive
    isa: Isa
    what: str


def _feature(regex: str, isa: Isa, what: str) -> Feature:
    return Feature(re.compile(regex), isa, what)


#: Instructions and directives with the ISA that introduced them (newest first is not
#: needed: every match is checked).
FEATURES: tuple[Feature, ...] = (
    _feature(r"^mma\.sync\.aligned\.m16n8k(8|16|32)\b", (7, 0), "mma.sync m16n8k*"),
    _feature(r"^mma\.sync\..*\.e[45]m[23]\b", (8, 4), "mma.sync with f8 operands"),
    _feature(r"^ldmatrix\b", (6, 5), "ldmatrix"),
    _feature(r"^stmatrix\b", (7, 8), "stmatrix"),
    _feature(r"^cp\.async\.(ca|cg|commit_group|wait_group|wait_all)\b", (7, 0), "cp.async"),
    _feature(r"^cp\.async\.bulk\b", (8, 0), "cp.async.bulk"),
    _feature(r"^(wgmma|setmaxnreg|elect\.sync)\b", (8, 0), "sm_90 warpgroup instructions"),
    _feature(r"^mbarrier\.try_wait\b", (7, 8), "mbarrier.try_wait"),
    _feature(r"^(st|red)\.async\b", (8, 1), "st.async/red.async"),
    _feature(r"^red\.[\w.]*\.v[248]\.", (8, 1), "vector red (red.global.v*)"),
    _feature(r"^red\.[\w.]*\.(v[248]\.)?[\w.]*bf16(x2)?\b", (7, 8), "red.add of bf16"),
    _feature(r"^(red|atom)\.[\w.]*\.f16(x2)?\b", (6, 3), "red/atom of f16"),
    _feature(r"^atom\.[\w.]*cas\.b16\b", (6, 3), "atom.cas.b16"),
    _feature(r"^(add|sub|mul)(\.rn)?\.bf16(x2)?\b", (7, 8), "bf16 add/sub/mul"),
    _feature(r"^(fma\.rn|min|max|neg|abs)[\w.]*\.bf16(x2)?\b", (7, 0), "bf16 fma/min/max"),
    _feature(r"^cvt\.[\w.]*\.bf16(x2)?\.f32\b", (7, 0), "cvt to bf16"),
    _feature(r"^cvt\.[\w.]*\.e[45]m[23]x2\b", (7, 8), "cvt to f8x2"),
    _feature(r"^cvt\.[\w.]*\.e2m1x2\b", (8, 6), "cvt to f4 (e2m1x2)"),
    _feature(r"^(min|max)\.[\w.]*NaN\b", (7, 0), "min/max.NaN"),
    _feature(r"^(min|max)\.xorsign\b", (7, 2), "min/max.xorsign.abs"),
    _feature(r"^tanh\.approx\b", (7, 0), "tanh.approx"),
    _feature(r"^(ld|st)\.[\w.:]*\.b128\b", (8, 3), ".b128 loads and stores"),
    _feature(r"^(ld|st|cp)\.[\w.]*L2::(64|128|256)B\b", (7, 4), "L2 prefetch size qualifier"),
    _feature(r"^\.pragma\s+\"used_bytes_mask", (8, 3), ".pragma used_bytes_mask"),
)

_VERSION = re.compile(r"^\.version\s+(\d+)\.(\d+)\s*$", re.MULTILINE)
_TARGET = re.compile(r"^\.target\s+(\w+)", re.MULTILINE)


def parse_isa(text: str) -> Isa:
    """The version "9.0" as (9, 0); anything else is an `AotError` naming --ptx-isa."""
    match = re.fullmatch(r"(\d+)\.(\d+)", text.strip())
    if not match:
        raise AotError(
            f"--ptx-isa: expected a PTX ISA version MAJOR.MINOR (e.g. 9.0), got {text!r}"
        )
    isa = (int(match.group(1)), int(match.group(2)))
    if isa not in _CUDA_OF_ISA:
        known = f"{_isa_text(min(_CUDA_OF_ISA))} to {_isa_text(max(_CUDA_OF_ISA))}"
        raise AotError(f"--ptx-isa: {text} is not a PTX ISA version tilelang knows ({known})")
    return isa


def _isa_text(isa: Isa) -> str:
    return f"{isa[0]}.{isa[1]}"


def driver_for(isa: Isa) -> str:
    """The oldest CUDA release whose driver loads PTX of `isa`, e.g. "CUDA 13.0"."""
    major, minor = _CUDA_OF_ISA[isa]
    return f"CUDA {major}.{minor}"


def ptx_isa(ptx: str) -> Isa:
    """The ISA a PTX module's `.version` directive states."""
    match = _VERSION.search(ptx)
    if match is None:
        raise AotError("the PTX has no .version directive")
    return int(match.group(1)), int(match.group(2))


def required_isa(ptx: str) -> tuple[Isa, str]:
    """The newest ISA that something in `ptx` needs, and what needs it."""
    needed: tuple[Isa, str] = ((1, 0), "nothing")
    target = _TARGET.search(ptx)
    if target is not None and target.group(1) in _TARGET_ISA:
        needed = (_TARGET_ISA[target.group(1)], f".target {target.group(1)}")
    for line in ptx.splitlines():
        statement = line.strip()
        if not statement or statement.startswith("//"):
            continue
        statement = re.sub(r"^@!?%\w+\s+", "", statement)  # a guard predicate
        for feature in FEATURES:
            if feature.isa > needed[0] and feature.pattern.search(statement):
                needed = (feature.isa, feature.what)
    return needed


def retarget_ptx(ptx: str, isa: Isa, what: str) -> str:
    """`ptx` with `.version` lowered to `isa` (kept when it is already older), or an
    `AotError` when the PTX needs something newer than `isa` (`what`: the kernel and
    architecture, for the message)."""
    written = ptx_isa(ptx)
    if isa >= written:
        return ptx
    needed, by = required_isa(ptx)
    if needed > isa:
        raise AotError(
            f"{what}: the PTX needs ISA {_isa_text(needed)} ({by}), newer than --ptx-isa "
            f"{_isa_text(isa)} ({driver_for(isa)}); pass --ptx-isa {_isa_text(needed)} or newer "
            f"(loads on drivers of {driver_for(needed)} and later)"
        )
    return _VERSION.sub(f".version {_isa_text(isa)}", ptx, count=1)
