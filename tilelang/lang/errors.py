"""Errors that point at the user's source: file, line, column, the line itself, a caret,
and, for an error inside a `@tilelang.func` helper, the line of each call that led there."""

from __future__ import annotations

import linecache

from tilelang.ir.nodes import Loc


class TileLangError(Exception):
    """A kernel that cannot be compiled, reported at the user's source line."""

    def __init__(self, message: str, loc: Loc | None = None, end_col: int | None = None):
        self.message = message
        self.loc = loc
        self.end_col = end_col
        #: The helper calls the error happened under, innermost first.
        self.called_from: list[Loc] = []
        super().__init__(self._render())

    def add_call_site(self, loc: Loc) -> None:
        """Records that the error happened inside a helper called at `loc` (added from the
        innermost call outwards); an error with no location of its own takes `loc`."""
        if loc.line <= 0:
            return
        if self.loc is None or self.loc.line <= 0:
            self.loc, self.end_col = loc, None
        else:
            self.called_from.append(loc)
        self.args = (self._render(),)

    def _render(self) -> str:
        if self.loc is None or self.loc.line <= 0:
            return self.message
        text = f"{self.loc}: error: {self.message}"
        source = linecache.getline(self.loc.file, self.loc.line).rstrip("\n")
        if source:
            width = 1
            if self.end_col is not None and self.end_col > self.loc.col:
                width = self.end_col - self.loc.col
            caret = " " * (self.loc.col - 1) + "^" * width
            text = f"{text}\n    {source}\n    {caret}"
        for call in self.called_from:
            line = linecache.getline(call.file, call.line).strip()
            text += f"\n    called from {call}" + (f": {line}" if line else "")
        return text


def no_power_message(runtime_base: bool, exponent: object, base_text: str = "t") -> str:
    """The error for `**` meeting a tile or runtime scalar. There is no power instruction,
    so the message spells the product to write instead (`t * t` for a square)."""
    small = isinstance(exponent, int) and not isinstance(exponent, bool) and 2 <= exponent <= 4
    if runtime_base and small:
        advice = f"write `{' * '.join([base_text] * exponent)}` instead"
    elif runtime_base:
        advice = (
            f"multiply instead (`{base_text} * {base_text}` for a square), or for a positive "
            "base write x ** y as tl.exp2(y * tl.log2(x))"
        )
    else:
        advice = "for a positive base write x ** y as tl.exp2(y * tl.log2(x))"
    return (
        "there is no power operator for tiles and runtime scalars (`**` works only on "
        f"compile-time numbers): {advice}"
    )
