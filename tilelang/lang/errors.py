"""Errors that point at the user's source: file, line, column, the line itself, a caret."""

from __future__ import annotations

import linecache

from tilelang.ir.nodes import Loc


class TileLangError(Exception):
    """A kernel that cannot be compiled, reported at the user's source line."""

    def __init__(self, message: str, loc: Loc | None = None, end_col: int | None = None):
        self.message = message
        self.loc = loc
        self.end_col = end_col
        super().__init__(self._render())

    def _render(self) -> str:
        if self.loc is None or self.loc.line <= 0:
            return self.message
        text = f"{self.loc}: error: {self.message}"
        source = linecache.getline(self.loc.file, self.loc.line).rstrip("\n")
        if not source:
            return text
        width = 1
        if self.end_col is not None and self.end_col > self.loc.col:
            width = self.end_col - self.loc.col
        caret = " " * (self.loc.col - 1) + "^" * width
        return f"{text}\n    {source}\n    {caret}"
