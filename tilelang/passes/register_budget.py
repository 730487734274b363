"""The register budget: how many registers ptxas lets a thread of a kernel have.

255 (`Target.registers_per_thread`), or less when several blocks must share a
multiprocessor: ``@tl.kernel(min_blocks=b)`` emits ``__launch_bounds__(threads, b)``
and is recorded as ``min_blocks=b`` on the `blocks` instruction (`min_blocks`); without
it one block must fit. A multiprocessor's 65536 registers are four register files, one
per scheduler; a warp is allocated whole units of 256 registers (8 a thread) in one of
them, and the busiest file holds ``ceil(b · warps / 4)`` warps, so a thread gets

    min(255, floor(64 / ceil(b · warps / 4)) · 8)

— 168 for 3 blocks of 4 warps, 128 for 2 blocks of 8, 64 for one block of 32 warps.
ptxas applies exactly this cap on every case measured (sm_80 to sm_120; the table in
tests/test_plan.py). A ``min_blocks`` the multiprocessor cannot hold (more threads or
blocks than `tilelang.target.Hardware` allows) ptxas ignores with an "out of range"
warning, and so does the budget.

`RegisterBudget.of(fn, target)` is the budget `plan_registers` checks its estimate
against; `str(budget)` says it and what sets it, for its messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from tilelang.ir.nodes import Blocks, Function
from tilelang.target import CPU, HARDWARE, Hardware, Target

WARP_SIZE = 32


@dataclass(frozen=True)
class RegisterBudget:
    """`limit` registers a thread of `warps` warps may have; `min_blocks` is what the
    kernel states (None: nothing), `blocks` the blocks that share a multiprocessor
    under it (1 when none is stated or ptxas ignores it), `most` the target's limit
    per thread (255)."""

    limit: int
    warps: int
    min_blocks: int | None = None
    blocks: int = 1
    most: int = 255

    @classmethod
    def of(cls, fn: Function, target: Target = CPU) -> RegisterBudget:
        """The budget of `fn`'s blocks on `target` (its warps, its recorded min_blocks)."""
        return cls.of_block(fn.warps, min_blocks(fn), target)

    @classmethod
    def of_block(
        cls, warps: int, stated: int | None = None, target: Target = CPU
    ) -> RegisterBudget:
        """The budget of a block of `warps` warps when `stated` blocks must share a
        multiprocessor of `target`."""
        hardware = _hardware(target)
        blocks = _blocks_held(warps, stated, hardware)
        most = target.registers_per_thread
        return cls(min(most, _ceiling(warps, blocks, hardware)), warps, stated, blocks, most)

    @property
    def by_multiprocessor(self) -> bool:
        """Whether the multiprocessor's register files bind, not a thread's limit."""
        return self.limit < self.most

    def __str__(self) -> str:
        text = f"the {self.limit} a thread can have"
        threads = self.warps * WARP_SIZE
        if self.blocks > 1:
            text += (
                f" when min_blocks={self.blocks} blocks of {threads} threads share a multiprocessor"
            )
        elif self.by_multiprocessor:
            text += f" in a block of {threads} threads"
        if self.min_blocks is not None and self.blocks != self.min_blocks:
            text += (
                f" (min_blocks={self.min_blocks} blocks of {threads} threads do not fit a "
                "multiprocessor: ptxas ignores it)"
            )
        return text

    def advice(self) -> str:
        """What to change besides the tiles. Under the multiprocessor's bound more warps
        shrink the budget as fast as the tiles' share of a thread: they do not help."""
        if self.blocks > 1:
            return f"or a smaller min_blocks (now {self.blocks})"
        if self.by_multiprocessor:
            return f"(the block's {self.warps} warps share one multiprocessor's registers)"
        return f"or more warps (now {self.warps}: @tl.kernel(warps=...))"


def min_blocks(fn: Function) -> int | None:
    """The ``min_blocks`` recorded on `fn`'s `blocks` instruction (None: none)."""
    for instr in fn.body.instrs:
        if isinstance(instr, Blocks):
            value = instr.attr("min_blocks")
            return value if isinstance(value, int) and not isinstance(value, bool) else None
    return None


def _ceiling(warps: int, blocks: int, hardware: Hardware) -> int:
    """Registers a thread gets when `blocks` blocks of `warps` warps fill the busiest of
    the multiprocessor's register files, a warp's in whole allocation units."""
    units = hardware.registers_per_sm // hardware.sub_partitions // hardware.register_unit
    busiest = -(-(blocks * warps) // hardware.sub_partitions)
    return units // busiest * hardware.register_unit // WARP_SIZE


def _blocks_held(warps: int, stated: int | None, hardware: Hardware) -> int:
    """The blocks ptxas budgets for: `stated`, unless none is or the multiprocessor
    cannot hold that many."""
    if stated is None or stated > hardware.max_blocks_per_sm:
        return 1
    return 1 if stated * warps * WARP_SIZE > hardware.max_threads_per_sm else stated


def _hardware(target: Target) -> Hardware:
    """The target's multiprocessor; sm_90's for the CPU backend (which accepts what
    sm_90 does) and for a GPU target without a row in `HARDWARE` (sm_100 has its
    limits; sm_120 holds fewer threads and blocks, so ptxas there ignores a large
    min_blocks that this budget still counts)."""
    return HARDWARE.get(target.name, HARDWARE["sm_90"])


__all__ = ["RegisterBudget", "min_blocks"]
