"""Who says a kernel spills: ptxas, once a GPU build has run it — not the estimate.

A top-level module that imports nothing from tilelang: the passes (which describe the
kernel), the runtime (whose build asks ptxas) and the tuner (which prunes spilling
configs) all read it.

`plan_registers` estimates a kernel's registers before ptxas runs. The estimate is
within 15% of ptxas's count but often above it, so "above the budget" is no reason to
warn: the library's own kernels are estimated at 264-278 registers where ptxas uses
234-248 and spills nothing. The pass therefore warns nothing itself (its hard refusal,
`RegisterBudgetError`, far above the budget, stays); for a GPU target it describes the
kernel in a `SpillNote` and hands it to the build lowering it (`defer`). A GPU build
(`tilelang.runtime.cuda_build`) lowers inside `deferred()` and, once ptxas has run,
warns `RegisterSpillWarning` only when `verdict` says so: when ptxas spilled (spill
stores), naming ptxas's count, the estimate and the kernel's line. When ptxas's report
lacks spill counts (read from a cubin) the estimate judges, as the only word there is.
The pass run outside a build (`Kernel.stages`, a cached build's stages, tools) says
nothing about spills: there is no ptxas to ask, and the build said it.

ptxas's count below the budget is a cap of its own, not the budget's: under the
launch bounds tilelang emits (``__launch_bounds__(threads)``, and a minimum of blocks
per multiprocessor only when the kernel states ``min_blocks``) ptxas may give a thread
fewer registers than it can have, to keep more blocks resident, and spill to get
there. The message then says so and, when the budget holds ptxas's registers and what
it spilled, names ``@tl.kernel(min_blocks=1)`` (no more blocks than one asked for) as
the fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol


class RegisterSpillWarning(UserWarning):
    """ptxas spilled the kernel's registers to local memory in a GPU build (warned by
    the build, `verdict`); the message gives the estimate beside ptxas's count and says
    what to change."""


class Spills(Protocol):
    """What ptxas reports (`tilelang.runtime.cubin.Resources`): None where unknown."""

    registers: int
    spill_store_bytes: int | None
    spill_load_bytes: int | None


@dataclass(frozen=True)
class SpillNote:
    """What `plan_registers` knows when it judges a kernel for a GPU target: the kernel,
    its source position (`where` as messages print it; `file`, `line` for the warning),
    the `estimate` and its `parts`, the `budget` (`limit` registers, `said` as messages
    say it), `advice` (the largest live tiles and what to change) and the launch bounds
    the build emits (`threads`, and the `min_blocks` the kernel states)."""

    kernel: str
    where: str
    file: str
    line: int
    estimate: int
    parts: str
    limit: int
    said: str
    advice: str
    threads: int = 0  # the block's threads, the launch bounds' maximum
    min_blocks: int | None = None  # the minimum blocks the kernel states (None: none)

    @property
    def over(self) -> bool:
        """Whether the estimate passes the budget (the guess that ptxas will spill)."""
        return self.estimate > self.limit

    def estimate_message(self) -> str:
        """The estimate's verdict: ptxas will probably spill."""
        return (
            f"{self.where}: kernel {self.kernel} needs about {self.estimate} registers per "
            f"thread ({self.parts}), more than {self.said}: ptxas will probably spill "
            f"registers to local memory, which is slow. {self.advice}"
        )

    def ptxas_message(self, report: Spills) -> str:
        """ptxas's verdict: it spilled, beside what the estimate said, and where the cap
        it spilled under comes from (the budget, or its own under the launch bounds)."""
        own = self._own_cap(report)
        cap = f"({self.said})" if own is None else own
        return (
            f"{self.where}: kernel {self.kernel} spills: ptxas gives it {report.registers} "
            f"registers per thread {cap} and stores {report.spill_store_bytes} bytes "
            f"a thread to local memory ({report.spill_load_bytes} loaded back), which is "
            f"slow. The estimate was {self.estimate} registers ({self.parts}). "
            f"{self._raise_cap(report) if own is not None else ''}{self.advice}"
        )

    def _own_cap(self, report: Spills) -> str | None:
        """Why ptxas stopped below the budget, when it did by at least a warp's
        allocation unit (8 registers a thread); None when the budget is the cap."""
        if not self.threads or report.registers > self.limit - 8:
            return None
        if self.min_blocks is None:
            bounds = f"__launch_bounds__({self.threads}), no minimum of blocks per multiprocessor"
        else:
            bounds = f"__launch_bounds__({self.threads}, {self.min_blocks})"
        return (
            f"(its own cap under the launch bounds tilelang chose, {bounds}, to keep more "
            f"blocks resident: not {self.said})"
        )

    def _raise_cap(self, report: Spills) -> str:
        """What stating min_blocks=1 does, for a kernel that states none (its budget is
        the same as without: one block): when the budget holds the registers ptxas used
        and the words it spilled, raising the cap to it removes the spill."""
        if self.min_blocks is not None:
            return ""  # its own min_blocks: the advice says what to change
        needed = report.registers + -(-(report.spill_store_bytes or 0) // 4)
        if needed > self.limit:
            return (
                f"@tl.kernel(min_blocks=1) would raise the cap to {self.limit}, fewer than "
                f"the {needed} registers it used and spilled; "
            )
        words = needed - report.registers
        return (
            f"State @tl.kernel(min_blocks=1): ptxas may then use up to {self.limit} "
            f"registers, room for the {report.registers} it used and the {words} "
            f"word{'s' if words != 1 else ''} it spilled (at the cost of fewer resident "
            "blocks). Or: "
        )


def verdict(note: SpillNote | None, report: Spills, kernel: str) -> str | None:
    """The spill warning a build gives once ptxas has reported (`report`), or None.

    `note` is None when the passes did not run inside the build (their result was
    already at hand): ptxas's verdict then names only the `kernel`."""
    if report.spill_store_bytes is None:  # ptxas did not say: the estimate judges
        return note.estimate_message() if note is not None and note.over else None
    if report.spill_store_bytes <= 0:
        return None
    if note is not None:
        return note.ptxas_message(report)
    return (
        f"kernel {kernel} spills: ptxas gives it {report.registers} registers per thread "
        f"and stores {report.spill_store_bytes} bytes a thread to local memory "
        f"({report.spill_load_bytes} loaded back), which is slow. Use smaller tiles."
    )


#: The notes of the build lowering now (None outside any build).
_PENDING: ContextVar[list[SpillNote] | None] = ContextVar("spill_notes", default=None)


@contextmanager
def deferred() -> Iterator[list[SpillNote]]:
    """A build's scope: `plan_registers` runs inside it leave their notes in the list
    this yields instead of warning (the build judges after ptxas)."""
    notes: list[SpillNote] = []
    token = _PENDING.set(notes)
    try:
        yield notes
    finally:
        _PENDING.reset(token)


def defer(note: SpillNote) -> None:
    """Leaves `note` to the build lowering now; outside a build it is dropped (there is
    no ptxas to ask: module docstring)."""
    notes = _PENDING.get()
    if notes is not None:
        notes.append(note)


__all__ = ["RegisterSpillWarning", "SpillNote", "Spills", "defer", "deferred", "verdict"]
