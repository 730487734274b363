"""The IR builder the DSL emits into: fresh names, nested bodies, the current location.

One `Builder` exists per kernel being compiled and is reachable as `current()` while
the frontend runs, so user-level operations (`tl.load`, `tile + 1`, ...) emit into it
and report errors at the source position the frontend is visiting.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tilelang.ir.nodes import NOWHERE, Block, Instr, Loc, Var
from tilelang.ir.types import Type
from tilelang.lang.errors import TileLangError


class Builder:
    """Emits one kernel's block IR; `warps` is the kernel's warp count (what the layouts
    the DSL computes, such as `tl.dot_layout`'s, are spread over)."""

    def __init__(self, warps: int = 4) -> None:
        self.warps = warps
        self._used_names: set[str] = set()
        self._bodies: list[list[Instr]] = [[]]
        self.loc: Loc = NOWHERE
        self.end_col: int | None = None

    # -- names ---------------------------------------------------------------------------

    def fresh_name(self, hint: str) -> str:
        base = hint if hint and (hint[0].isalpha() or hint[0] == "_") else f"v{hint}"
        name, suffix = base, 0
        while name in self._used_names:
            suffix += 1
            name = f"{base}_{suffix}"
        self._used_names.add(name)
        return name

    def reserve(self, name: str) -> None:
        if name in self._used_names:
            raise self.error(f"the name {name!r} is used twice")
        self._used_names.add(name)

    def var(self, hint: str, type_: Type) -> Var:
        return Var(self.fresh_name(hint), type_)

    # -- emission ------------------------------------------------------------------------

    def emit(self, instr: Instr) -> Instr:
        self._bodies[-1].append(instr)
        return instr

    @contextlib.contextmanager
    def body(self) -> Iterator[list[Instr]]:
        """Collects the instructions emitted inside the `with` into a separate list."""
        self._bodies.append([])
        try:
            yield self._bodies[-1]
        finally:
            self._bodies.pop()

    def finish(self) -> Block:
        if len(self._bodies) != 1:
            raise RuntimeError("unbalanced builder bodies")
        return Block(tuple(self._bodies[0]))

    @property
    def at_top_level(self) -> bool:
        return len(self._bodies) == 1

    # -- locations and errors ------------------------------------------------------------

    @contextlib.contextmanager
    def at(self, loc: Loc, end_col: int | None = None) -> Iterator[None]:
        saved = self.loc, self.end_col
        self.loc, self.end_col = loc, end_col
        try:
            yield
        finally:
            self.loc, self.end_col = saved

    def error(self, message: str) -> TileLangError:
        return TileLangError(message, self.loc, self.end_col)


_stack: list[Builder] = []


def active() -> Builder | None:
    """The builder of the kernel being compiled, or None outside one."""
    return _stack[-1] if _stack else None


def current() -> Builder:
    if not _stack:
        raise TileLangError(
            "tilelang operations can only be used inside a @tilelang.kernel or @tilelang.func"
        )
    return _stack[-1]


@contextlib.contextmanager
def building(builder: Builder) -> Iterator[Builder]:
    _stack.append(builder)
    try:
        yield builder
    finally:
        _stack.pop()
