"""Runs of a register layout: how many consecutive local indices of a thread hold
consecutive elements of a row (contiguous in a row-major tensor, so one access can move
them). `vectorize` sizes global accesses by it, `plan_registers` counts accesses by it
and the lowering of `gather_async` cuts its copies by it."""

from __future__ import annotations

from tilelang.ir.layout import Layout


def layout_run(layout: Layout | None) -> int:
    """v: how many consecutive local indices hold consecutive elements of a row. In the
    layout's canonical form, the size of the innermost local mode when that mode is the
    innermost mode of the last dim; 1 otherwise (and for no layout or rank 0)."""
    if layout is None or layout.rank == 0:
        return 1
    canonical = layout.canonicalize()
    if not canonical.local_modes:
        return 1
    innermost = canonical.local_modes[-1]
    is_row_digit = (
        innermost == canonical.num_modes - 1 and canonical.mode_dims[innermost] == layout.rank - 1
    )
    return canonical.mode_sizes[innermost] if is_row_digit else 1


__all__ = ["layout_run"]
