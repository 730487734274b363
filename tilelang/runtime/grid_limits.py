"""The grid a launch may have, checked before anything runs, in the same words on every path.

A grid dimension is a count of blocks: never negative (a negative count is a size
expression that overflowed, not an empty launch; 0 is one) and at most
`tilelang.target.MAX_GRID` (x up to 2^31 - 1, y and z up to 65535: what CUDA allows on
every supported GPU). The CPU backend keeps the same limits, so a launch the CPU runs is
one a GPU accepts, and a launch a GPU would refuse fails before it with a message that
names the dimension, the user's expression for it, its value and the limit, instead of
the driver's "cuLaunchKernel failed".

`check_grid(thread, dims)` is the check the CPU runtime (`tilelang.runtime.cpu`) and the
GPU runtime (`tilelang.runtime.gpu`) make; the C launchers of an ahead-of-time build
(`tilelang.aot.c_launcher`) emit the same tests and print the same words, through
`negative_prefix` and `too_large_parts`. `grid_sources(thread)` reads the user's
expressions from the `tl.blocks` line the thread IR points at (`ThreadFunction.grid_at`).
"""

from __future__ import annotations

import ast
import linecache
import textwrap

from tilelang.ir.thread import ThreadFunction
from tilelang.ir.thread_text import print_expr
from tilelang.target import MAX_GRID

AXES = "xyz"

#: How many lines a `tl.blocks(...)` call may span and still be read back.
_MAX_CALL_LINES = 12


def too_large_parts(kernel: str, at: str, axis: int, expr: str) -> tuple[str, str]:
    """The message of a grid dimension above its limit, cut where its block count goes
    (a C launcher prints the count between the two parts). `at` is " at FILE:LINE" or
    ""; `expr` the user's expression of that dimension."""
    name, limit = AXES[axis], MAX_GRID[axis]
    if axis == 0:
        advice = "give each block more of the work (fewer, larger blocks)"
    else:
        advice = (
            f"put the largest dimension first in tl.blocks (dimension x allows up to "
            f"{MAX_GRID[0]} blocks)"
        )
    prefix = f"{kernel}(){at}: the grid is too large: dimension {axis} ({name}), {expr}, is "
    suffix = f" blocks, above the {limit} a GPU launch allows in dimension {name}; {advice}"
    return prefix, suffix


def negative_prefix(kernel: str, at: str) -> str:
    """The words before " (N blocks in dimension D)" of a negative grid's message."""
    return f"{kernel}(){at}: the grid is negative"


def negative_message(kernel: str, at: str, axis: int, blocks: int) -> str:
    return f"{negative_prefix(kernel, at)} ({blocks} blocks in dimension {axis})"


def where(thread: ThreadFunction) -> str:
    """The " at FILE:LINE" of the `tl.blocks` line; "" for a kernel without one."""
    return f" at {thread.grid_at}" if thread.grid_at else ""


def check_grid(
    thread: ThreadFunction, dims: tuple[int, ...], sources: tuple[str, ...] | None = None
) -> None:
    """A `ValueError` when a dimension of the launch's grid `dims` (three counts) is
    negative or above `MAX_GRID`; `sources` names each dimension (default: the kernel's
    `tl.blocks` expressions, read only when a dimension is too large)."""
    at = where(thread)
    for axis, blocks in enumerate(dims):
        if blocks < 0:  # a size expression that overflowed, not an empty launch (0 is)
            raise ValueError(negative_message(thread.name, at, axis, blocks))
    for axis, blocks in enumerate(dims):
        if blocks > MAX_GRID[axis]:
            names = sources if sources is not None else grid_sources(thread)
            prefix, suffix = too_large_parts(thread.name, at, axis, names[axis])
            raise ValueError(f"{prefix}{blocks}{suffix}")


def grid_sources(thread: ThreadFunction) -> tuple[str, str, str]:
    """Each grid dimension as the user wrote it in `tl.blocks` ("tl.cdiv(M, BM)"), read
    from the source file; the thread IR's expression where the source cannot be read
    (and "1" for a dimension the kernel does not have)."""
    written = _blocks_arguments(thread.grid_at, len(thread.grid))
    if written is None:
        written = [print_expr(g) for g in thread.grid]
    return tuple((*written, "1", "1", "1")[:3])


def _blocks_arguments(grid_at: str, count: int) -> list[str] | None:
    """The source text of the `count` arguments of the `tl.blocks` call on the line
    `grid_at` ("file.py:12") names, or None when it cannot be read back."""
    file, _, line = grid_at.rpartition(":")
    if not file or not line.isdigit():
        return None
    lines = linecache.getlines(file)[int(line) - 1 :]
    for end in range(1, min(len(lines), _MAX_CALL_LINES) + 1):
        text = textwrap.dedent("".join(lines[:end]))
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _called_name(node.func) == "blocks":
                segments = [ast.get_source_segment(text, arg) for arg in node.args]
                if len(segments) != count or None in segments:
                    return None
                return [" ".join(segment.split()) for segment in segments]
        return None
    return None


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else None
