"""The operation reference (docs/ops.md), generated from the registries.

Everything it says comes from where the compiler itself reads it: the elementwise table
(`tilelang.ir.ops.ELEMENTWISE`), the instruction classes (`tilelang.ir.instructions`:
syntax, docstring, layout rule), the interpreter's semantics and the lowering's
functions registered against each class. `python -m tilelang.op_reference` prints it;
a test fails when docs/ops.md differs, so the reference cannot drift from the code.
"""

from __future__ import annotations

import inspect

from tilelang.ir import nodes
from tilelang.ir.ops import ELEMENTWISE, REDUCTIONS, SCANS, ElementwiseOp
from tilelang.ir.syntax import syntax_of
from tilelang.lang import ops as dsl
from tilelang.lowering import LOWERINGS
from tilelang.runtime.interpreter import SEMANTICS

HEADER = """# Operation reference

Generated from the registries by `python -m tilelang.op_reference > docs/ops.md`
(`tests/test_docs.py` fails when this file differs). How to add an operation:
docs/design.md, "How to add an operation".
"""


def markdown() -> str:
    """The whole reference, as Markdown."""
    parts = [HEADER, _elementwise(), _reductions(), _composites(), _instructions()]
    return "\n".join(parts).rstrip() + "\n"


def _elementwise() -> str:
    lines = [
        "## Elementwise operators",
        "",
        "One row of `tilelang.ir.ops.ELEMENTWISE` each. `compute` applies them to tiles and",
        "scalars; f16 and bf16 compute in f32 and round once.",
        "",
        "| operator | DSL | operands | result | meaning | compiled (f32 or 32-bit: LLVM / CUDA) |",
        "|---|---|---|---|---|---|",
    ]
    for op in ELEMENTWISE.values():
        dsl = ", ".join(
            f"`{s}`" for s in ((f"tl.{op.dsl}" if op.dsl else None), op.python) if s is not None
        )
        result = {"bool": "u1", "i32": "i32"}.get(op.result.value, "operand dtype")
        operands = op.operands.value + (
            f" ({'/'.join(map(str, op.widths))}-bit)" if op.widths else ""
        )
        cells = [f"`{op.name}`", dsl or "—", operands, result, op.doc, _compiled(op)]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _compiled(op: ElementwiseOp) -> str:
    if op.expand is not None:
        return f"`{op.expand}`"
    if op.llvm is not None and op.cuda is not None:
        return f"`{op.llvm[0]}` / `{op.cuda[0]}`"
    return "built into each emitter"


def _reductions() -> str:
    return (
        "## Reductions and scans\n\n"
        f"`reduce` operators: {', '.join(f'`{r}`' for r in REDUCTIONS)}. "
        f"`scan` operators: {', '.join(f'`{s}`' for s in SCANS)}.\n\n"
        "`tl.sum`, `tl.prod`, `tl.cumsum` and `tl.cumprod` widen before they fold, as numpy "
        "does: booleans and integers of fewer than 32 bits compute in i32 (unsigned ones in "
        "u32) and the result has that type, so a count of a mask does not wrap; f16 and bf16 "
        "compute in f32 and round once to their own type. `dtype=` converts the operand to "
        "the type given and folds in it instead (the result has that type). f16/bf16 "
        "`max`/`min` (and `cummax`/`cummin`) also compute in f32, which is exact. The frontend "
        "emits these casts around the `reduce`/`scan` instruction, which itself folds in its "
        "operand's type. `max`, `min` and the bitwise reductions keep the operand's type.\n"
    )


def _composites() -> str:
    lines = [
        "## DSL operations made of other instructions",
        "",
        "No instruction of their own (`tilelang.lang.ops.COMPOSITES`): each emits the",
        "instructions listed, whose meaning, layout rules and lowering below are theirs.",
        "",
        "| DSL | emits | what it does |",
        "|---|---|---|",
    ]
    for name, instructions in sorted(dsl.COMPOSITES.items()):
        emits = ", ".join(f"`{cls.MNEMONIC}`" for cls in instructions) or "nothing (compile time)"
        doc = inspect.cleandoc(dsl.COMPOSITE_FUNCTIONS[name].__doc__ or "").split("\n\n")[0]
        lines.append(f"| `tl.{name}` | {emits} | {doc.replace(chr(10), ' ')} |")
    return "\n".join(lines) + "\n"


def _instructions() -> str:
    lines = ["## Instructions", ""]
    for cls in sorted(nodes.instruction_classes(), key=lambda c: c.MNEMONIC):
        lines.extend(_instruction(cls))
    return "\n".join(lines)


def _instruction(cls: type[nodes.Instr]) -> list[str]:
    doc = inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].replace("\n", " ")
    results = "" if not cls.RESULTS else "%r = "
    if cls.SYNTAX is not None and cls.RESULTS and syntax_of(cls).optional_result:
        results = "<%r = >"  # a result that may be left out (an atomic's old values)
    syntax = f"{results}{cls.SYNTAX}" if cls.SYNTAX is not None else f"{cls.MNEMONIC} ... {{ }}"
    return [
        f"### `{cls.MNEMONIC}` ({cls.__name__})",
        "",
        doc,
        "",
        f"- text: `{syntax}`",
        f"- layout rule: `{cls.LAYOUT}`",
        f"- semantics: {_where(SEMANTICS.get(cls))}",
        f"- lowering: {_where(LOWERINGS.get(cls))}",
        "",
    ]


def _where(fn) -> str:
    return "none" if fn is None else f"`{fn.__module__}.{fn.__name__}`"


if __name__ == "__main__":
    print(markdown(), end="")
