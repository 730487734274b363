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

`HARDWARE` adds what a performance model needs (`tilelang.runtime.perf`): per target,
the per-SM limits of its compute capability and the size and speed of one
representative card, which each row names.
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
    def has_wgmma(self) -> bool:
        """Whether the warpgroup mma (`wgmma.mma_async`) exists: sm_90a only (sm_100
        replaced it with tcgen05)."""
        return self.name == "sm_90a"

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

#: The most blocks a launch may have along each grid dimension (x, y, z): CUDA's limits,
#: the same on every supported GPU. The CPU backend keeps them too, so that a launch the
#: CPU runs is one a GPU accepts (`tilelang.runtime.grid_limits` checks them; the C
#: launchers of `tilelang compile` emit the same checks).
MAX_GRID: tuple[int, int, int] = (2**31 - 1, 65535, 65535)


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


# --------------------------------------------------------------------------- hardware

MB = 1000 * 1000  # L2 sizes as the data sheets write them (50 MB on H100)


@dataclass(frozen=True)
class Hardware:
    """What a static performance model needs to know about the GPU a target runs on.

    Per-SM limits of the compute capability, from the CUDA C++ Programming Guide's table
    of technical specifications per compute capability: resident threads, resident
    blocks, 32-bit registers and shared memory (the largest carveout) per SM; registers
    are allocated per warp in units of `register_unit` (a thread's count rounded up to a
    multiple of 8) from `sub_partitions` equal slices of the register file, one per warp
    scheduler; shared memory per block is rounded up to `shared_unit` bytes, plus
    `shared_reserved` bytes the system keeps per block (1 KiB since sm_80).

    The size and speed of `card`, one representative card (data sheets and whitepapers):
    SMs, peak DRAM bandwidth, L2, the SM clock at which the data sheet's tensor-core
    peak is quoted, and that peak (dense f16 `mma` with f32 accumulation, in flop/s).
    `mma_sync_flops` is the peak of `mma.sync`, the only tensor-core instruction tilelang
    emits, where it is below the data sheet's: on H100 the data-sheet peak needs
    `wgmma`, and the FlashAttention-3 paper (Shah et al., 2024) reports that `mma.sync`
    reaches about 2/3 of it. `sfu_per_cycle` is the special-function unit's results
    per SM per cycle (MUFU: ex2, lg2, rcp, rsqrt, sin, cos), 16 for compute capability
    8.0 to 9.0 in the Programming Guide's table of arithmetic instruction throughputs:
    one warp's MUFU occupies its scheduler's unit for 8 cycles. `shared_bytes_per_cycle`
    is the SM's shared-memory bandwidth, 32 banks of 4 bytes a cycle (sm_80 to sm_90).

    `dram_latency_s` is an assumption, not a data-sheet figure: the average time a global
    load that misses L2 takes when the memory system is busy. Pointer-chasing
    microbenchmarks report idle latencies of several hundred nanoseconds on these cards,
    and queueing near peak bandwidth adds to them; 600 ns is a round figure between the
    two, not measured by this project. It is the least certain input of the model
    (`CompiledKernel.perf(latency_ns=...)` overrides it); calibrate it on a GPU.
    """

    card: str
    sms: int
    dram_bytes_per_s: float
    l2_bytes: int
    clock_hz: float
    tensor_flops: float
    max_threads_per_sm: int
    max_blocks_per_sm: int
    shared_bytes_per_sm: int
    registers_per_sm: int = 65536
    register_unit: int = 256
    sub_partitions: int = 4
    shared_unit: int = 128
    shared_reserved: int = 1 * KIB
    dram_latency_s: float = 600e-9
    issue_per_cycle: int = 4  # warp instructions per SM per cycle: one per scheduler
    sfu_per_cycle: int = 16
    shared_bytes_per_cycle: int = 128
    mma_sync_flops: float | None = None  # None: the data-sheet peak

    @property
    def issue_per_s(self) -> float:
        """Warp instructions the SM issues per second at most."""
        return self.issue_per_cycle * self.clock_hz

    @property
    def mma_flops(self) -> float:
        """The tensor-core peak of the code tilelang emits (`mma.sync`), in flop/s."""
        return self.mma_sync_flops or self.tensor_flops

    @property
    def special_per_s(self) -> float:
        """Thread-level special-function results (MUFU) an SM gives per second."""
        return self.sfu_per_cycle * self.clock_hz


_A100 = Hardware(
    card="A100 SXM4 80GB",
    sms=108,
    dram_bytes_per_s=2039e9,
    l2_bytes=40 * MB,
    clock_hz=1410e6,
    tensor_flops=312e12,
    max_threads_per_sm=2048,
    max_blocks_per_sm=32,
    shared_bytes_per_sm=164 * KIB,
)
_RTX3090 = Hardware(
    card="GeForce RTX 3090",
    sms=82,
    dram_bytes_per_s=936e9,
    l2_bytes=6 * MB,
    clock_hz=1695e6,
    tensor_flops=71e12,  # GeForce: f32 accumulation at half the f16-accumulate rate
    max_threads_per_sm=1536,
    max_blocks_per_sm=16,
    shared_bytes_per_sm=100 * KIB,
)
_RTX4090 = Hardware(
    card="GeForce RTX 4090",
    sms=128,
    dram_bytes_per_s=1008e9,
    l2_bytes=72 * MB,
    clock_hz=2520e6,
    tensor_flops=165.2e12,
    max_threads_per_sm=1536,
    max_blocks_per_sm=24,
    shared_bytes_per_sm=100 * KIB,
)
_H100 = Hardware(
    card="H100 SXM5 80GB",
    sms=132,
    dram_bytes_per_s=3350e9,
    l2_bytes=50 * MB,
    clock_hz=1830e6,  # 989 TFLOPS = 132 SMs x 4096 flop/cycle x 1.83 GHz (boost: 1.98)
    tensor_flops=989e12,  # with wgmma
    mma_sync_flops=989e12 * 2 / 3,  # what mma.sync reaches (the docstring)
    max_threads_per_sm=2048,
    max_blocks_per_sm=32,
    shared_bytes_per_sm=228 * KIB,
)

#: Hardware facts per target name. sm_100 and sm_120 have no row yet: their
#: representative cards' clocks are not settled here, and a guessed row would give a
#: confident-looking wrong prediction.
HARDWARE: dict[str, Hardware] = {
    "sm_80": _A100,
    "sm_86": _RTX3090,
    "sm_89": _RTX4090,
    "sm_90": _H100,
    "sm_90a": _H100,
}


def hardware(name: str | Target) -> Hardware:
    """The hardware facts of target `name`; a `ValueError` naming the targets that have
    them for any other (the CPU, or a GPU target without a row)."""
    key = target(name).name
    found = HARDWARE.get(key)
    if found is None:
        raise ValueError(
            f"target: no hardware facts for {key} (a performance model needs a card; "
            f"targets with one: {', '.join(HARDWARE)})"
        )
    return found


__all__ = [
    "CPU",
    "HARDWARE",
    "MAX_GRID",
    "TARGETS",
    "Hardware",
    "Target",
    "hardware",
    "supported",
    "target",
]
