"""The compiler pipeline: the one list of block-IR passes, in order, the lowering to
thread IR after it, the thread-IR passes, and the IR dump.

Every pass is `run(fn, target) -> fn` (most ignore the target; `plan_shared` and
`plan_registers` check its limits). `run_pipeline(fn, target)` gives the function after
each pass; `lower_function(fn, target)` lowers the last of them and runs the thread-IR
passes, verifying the thread IR after each.

`TILELANG_DUMP_IR=DIR` writes the function's text after every pass to
`DIR/<kernel>.<index>.<pass>.ir` (the thread IR to `<kernel>.<index>.lower.ir`), so a
person can read what each pass did.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tilelang.ir.nodes import Function
from tilelang.ir.printer import print_function
from tilelang.ir.thread import ThreadFunction
from tilelang.ir.thread_text import print_thread_function
from tilelang.ir.thread_verify import Checked, verify_thread_function
from tilelang.lowering import lower
from tilelang.passes import (
    analyze,
    hoist_relayouts,
    infer_layouts,
    plan_registers,
    plan_shared,
    shared_reads,
    simplify,
    software_pipeline,
    strength_reduce,
    thread_cleanup,
    vectorize,
    verify,
)
from tilelang.target import CPU, Target

Pass = Callable[[Function, Target], Function]

PIPELINE: tuple[tuple[str, Pass], ...] = (
    ("verify", verify.run),
    ("simplify", simplify.run),
    ("infer_layouts", infer_layouts.run),
    ("verify_layouts", verify.run),
    ("hoist_relayouts", hoist_relayouts.run),
    ("shared_reads", shared_reads.run),
    ("pipeline", software_pipeline.run),
    ("analyze", analyze.run),
    ("vectorize", vectorize.run),
    ("plan_shared", plan_shared.run),
    ("plan_registers", plan_registers.run),
)

THREAD_PIPELINE: tuple[tuple[str, Callable[[ThreadFunction, Target], ThreadFunction]], ...] = (
    ("thread_cleanup", thread_cleanup.run),
    ("strength_reduce", strength_reduce.run),
)

DumpDir = str | os.PathLike | None


def run_pipeline(
    fn: Function, target: Target = CPU, dump_dir: DumpDir = None
) -> dict[str, Function]:
    """The function after each pass, by pass name (the input is under "frontend")."""
    dump_dir = dump_dir if dump_dir is not None else os.environ.get("TILELANG_DUMP_IR")
    stages = {"frontend": fn}
    _dump(dump_dir, fn, 0, "frontend")
    for index, (name, run) in enumerate(PIPELINE, start=1):
        fn = run(fn, target)
        stages[name] = fn
        _dump(dump_dir, fn, index, name)
    return stages


def lower_function(fn: Function, target: Target = CPU, dump_dir: DumpDir = None) -> ThreadFunction:
    """The thread IR of a function that went through `PIPELINE`, after its cleanup."""
    dump_dir = dump_dir if dump_dir is not None else os.environ.get("TILELANG_DUMP_IR")
    thread = lower(fn, target)
    checked = Checked()  # each pass keeps most expressions: verified once, not per pass
    verify_thread_function(thread, checked)
    if dump_dir:
        _dump_text(dump_dir, fn.name, len(PIPELINE) + 1, "lower", print_thread_function(thread))
    for index, (name, run) in enumerate(THREAD_PIPELINE, start=len(PIPELINE) + 2):
        thread = run(thread, target)
        verify_thread_function(thread, checked)
        if dump_dir:  # printing a large kernel costs as much as a pass
            _dump_text(dump_dir, fn.name, index, name, print_thread_function(thread))
    return thread


def _dump(dump_dir: DumpDir, fn: Function, index: int, name: str) -> None:
    if dump_dir:
        _dump_text(dump_dir, fn.name, index, name, print_function(fn))


def _dump_text(dump_dir: DumpDir, kernel: str, index: int, name: str, text: str) -> None:
    if not dump_dir:
        return
    folder = Path(dump_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{kernel}.{index:02d}.{name}.ir").write_text(text)
