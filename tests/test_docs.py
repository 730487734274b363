"""The registries are complete and the documents generated from them are current."""

from __future__ import annotations

from pathlib import Path

import pytest

import tilelang as tl
from tilelang import op_reference
from tilelang.ir import nodes
from tilelang.ir.ops import ELEMENTWISE, Operand, expansion_operators
from tilelang.lang.ops import COMPOSITES
from tilelang.lowering import LOWERINGS
from tilelang.passes.infer_layouts import RULES
from tilelang.runtime.interpreter import SEMANTICS

ROOT = Path(__file__).resolve().parent.parent


def test_the_op_reference_is_generated_from_the_registries():
    written = (ROOT / "docs" / "ops.md").read_text()
    assert written == op_reference.markdown(), (
        "docs/ops.md is out of date: run `python -m tilelang.op_reference > docs/ops.md`"
    )


@pytest.mark.parametrize("cls", nodes.instruction_classes(), ids=lambda c: c.__name__)
def test_every_instruction_has_a_meaning_a_layout_rule_and_a_lowering(cls):
    assert cls in SEMANTICS, f"{cls.__name__} has no interpreter semantics"
    assert cls in LOWERINGS, f"{cls.__name__} has no lowering"
    assert cls.LAYOUT in RULES, f"{cls.__name__}.LAYOUT names no rule: {cls.LAYOUT!r}"
    assert cls.MNEMONIC and cls.__doc__


@pytest.mark.parametrize("name", sorted(COMPOSITES))
def test_every_composite_operation_is_public_and_made_of_known_instructions(name):
    assert getattr(tl, name).__name__ == name
    for cls in COMPOSITES[name]:
        assert cls in nodes.instruction_classes() and cls in SEMANTICS and cls in LOWERINGS
    assert f"`tl.{name}`" in (ROOT / "docs" / "ops.md").read_text()


@pytest.mark.parametrize("op", ELEMENTWISE.values(), ids=lambda op: op.name)
def test_every_elementwise_row_says_how_each_layer_computes_it(op):
    accepts_floats = op.operands is not Operand.INT
    accepts_ints = op.operands is not Operand.FLOAT
    # The interpreter needs numpy semantics for every operand kind the row accepts.
    if accepts_floats:
        assert op.reference is not None or op.typed_reference is not None
    if accepts_ints:
        assert op.reference is not None or op.int_reference is not None
    # Float operators the emitters do not build in are spelled or expanded.
    compiled = op.expand is not None or (op.llvm is not None and op.cuda is not None)
    builtin = op.result.value == "bool" or op.name == "where"
    if accepts_floats and not builtin:
        assert compiled, f"{op.name}: neither spelled for LLVM and CUDA nor expanded"
    if op.expand is not None:
        for used in expansion_operators(op):
            assert used in ELEMENTWISE and used != op.name
    if op.dsl is not None:
        assert getattr(tl, op.dsl).__name__ == op.dsl


def test_design_doc_says_how_to_add_an_operation():
    design = (ROOT / "docs" / "design.md").read_text()
    assert "## How to add an operation" in design
    for name in ("softplus", "log1p"):
        assert f"tl.{name}" in design
