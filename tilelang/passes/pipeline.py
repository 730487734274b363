"""The pass pipeline: the one list of block-IR passes, in order, and the IR dump.

`TILELANG_DUMP_IR=DIR` writes the function's text after every pass to
`DIR/<kernel>.<index>.<pass>.ir`, so a person can read what each pass did.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tilelang.ir.nodes import Function
from tilelang.ir.printer import print_function
from tilelang.passes import simplify, verify

Pass = Callable[[Function], Function]

PIPELINE: tuple[tuple[str, Pass], ...] = (
    ("verify", verify.run),
    ("simplify", simplify.run),
)


def run_pipeline(fn: Function, dump_dir: str | os.PathLike | None = None) -> dict[str, Function]:
    """The function after each pass, by pass name (the input is under "frontend")."""
    dump_dir = dump_dir if dump_dir is not None else os.environ.get("TILELANG_DUMP_IR")
    stages = {"frontend": fn}
    _dump(dump_dir, fn, 0, "frontend")
    for index, (name, run) in enumerate(PIPELINE, start=1):
        fn = run(fn)
        stages[name] = fn
        _dump(dump_dir, fn, index, name)
    return stages


def _dump(dump_dir: str | os.PathLike | None, fn: Function, index: int, name: str) -> None:
    if not dump_dir:
        return
    folder = Path(dump_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{fn.name}.{index:02d}.{name}.ir").write_text(print_function(fn))
