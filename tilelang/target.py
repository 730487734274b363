"""Targets: what each machine a kernel compiles for can hold, in one table.

A `Target` names a GPU architecture (or the CPU backend) and the limits the passes
check before any compiler runs: shared memory per block, registers per thread, threads
per block. `target(name)` is the one way a name becomes a `Target`; it rejects
anything else with the list of supported names.

The CPU backend runs the lowered program a GPU would run, so it accepts exactly what
the most generous supported GPU (sm_90) accepts: a kernel that runs on the CPU fits on
an H100.

Shared memory is the opt-in maximum of one block (the driver's
`MAX_SHARED_MEMORY_PER_BLOCK_OPTIN`): 163 KiB on sm_80 (A100), 99 KiB on sm_86/sm_89
(consumer Ampere and Ada) and sm_120 (consumer Blackwell), 227 KiB on sm_90 (Hopper)
and sm_100 (datacenter Blackwell). Every supported GPU has `mma.sync` m16n8k16 for
f16/bf16, `ldmatrix` and `cp.async`, which is what the lowering emits; sm_75 and older
lack bf16 mma and cp.async and are not supported.
"""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024


@dataclass(frozen=True)
class Target:
    """One compilation target and its per-block limits."""

    name: str
    shared_bytes: int  # the most shared memory one block may use
    registers_per_thread: int = 255
    max_threads: int = 1024
    description: str = ""

    @property
    def is_gpu(self) -> bool:
        return self.name.startswith("sm_")

    @property
    def arch(self) -> str:
        """The NVRTC architecture (``sm_90a``); an error for the CPU."""
        if not self.is_gpu:
            raise ValueError("the CPU target has no GPU architecture")
        return self.name

    def __str__(self) -> str:
        return self.name


def _gpu(name: str, shared_kib: int, description: str) -> Target:
    return Target(name, shared_kib * KIB, description=description)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        _gpu("sm_80", 163, "A100, A30"),
        _gpu("sm_86", 99, "RTX 30xx, A10, A40"),
        _gpu("sm_89", 99, "RTX 40xx, L4, L40S"),
        _gpu("sm_90", 227, "H100, H200 (without the sm_90a features)"),
        _gpu("sm_90a", 227, "H100, H200"),
        _gpu("sm_100", 227, "B200, GB200"),
        _gpu("sm_120", 99, "RTX 50xx, RTX PRO 6000"),
        Target("cpu", 227 * KIB, description="the LLVM CPU backend (limits of sm_90)"),
    )
}

#: The target a call on host arrays compiles for.
CPU = TARGETS["cpu"]


def target(name: str | Target) -> Target:
    """The `Target` called `name`; a `TypeError`/`ValueError` naming the parameter
    `target` and listing the supported targets for anything else."""
    if isinstance(name, Target):
        return name
    if not isinstance(name, str):
        raise TypeError(
            f"target: expected a target name such as 'sm_90a' or 'cpu', got {name!r} "
            f"(supported: {supported()})"
        )
    found = TARGETS.get(name)
    if found is not None:
        return found
    hint = ""
    if name.startswith("sm_") and name[3:].rstrip("af").isdigit() and int(name[3:5]) < 80:
        hint = f"; {name} predates sm_80, which the generated code needs (bf16 mma.sync, cp.async)"
    raise ValueError(f"target: unknown target {name!r}{hint}; supported: {supported()}")


def supported() -> str:
    return ", ".join(TARGETS)


__all__ = ["CPU", "TARGETS", "Target", "supported", "target"]
