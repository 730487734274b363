"""The text of an LLVM module built with `llvmlite.ir`: `str(module)`, faster.

llvmlite prints each instruction through its string cache, a list, a `str.format` whose
type arguments print themselves again for every instruction, and a `rstrip`: over half
of the LLVM emitter's time on a large kernel (50k instructions). `module_text` prints
the instructions the emitter makes most (arithmetic, casts, compares, selects, address
arithmetic, loads, stores, branches, phis) with the same formats, each type printed
once per module, and leaves every other instruction, and any instruction with metadata,
to llvmlite itself. The text is llvmlite's, byte for byte (tests/test_compile_speed.py
compares the two on kernels that use every instruction class).
"""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir


def module_text(module: ir.Module) -> str:
    """`str(module)`, for a module of functions and declarations only (anything else:
    llvmlite prints it)."""
    if module.get_identified_types() or module.namedmetadata or module.metadata:
        return str(module)
    lines = [
        f'; ModuleID = "{module.name}"',
        f'target triple = "{module.triple}"',
        f'target datalayout = "{module.data_layout}"',
        "",
    ]
    types = _Types()
    for value in module.globals.values():
        defined = isinstance(value, ir.Function) and value.blocks
        lines.append(_function_text(value, types) if defined else str(value))
    return "\n".join(lines)


class _Types(dict):
    """The text of each type met, by identity (the type is kept, so its id stays its
    own); llvmlite formats a type anew each time an instruction prints it."""

    def __call__(self, ty: ir.Type) -> str:
        try:
            return self[id(ty)][1]
        except KeyError:
            self[id(ty)] = (ty, str(ty))
            return self[id(ty)][1]


def _function_text(fn: ir.Function, types: _Types) -> str:
    buf: list[str] = []
    fn.descr_prototype(buf)
    buf.append("{\n")
    append, lines = buf.append, _LINES.get
    for block in fn.blocks:
        append(f"{block._format_name()}:\n")
        for instr in block.instructions:
            line = lines(type(instr))
            if line is None or instr.metadata:
                append(f"  {instr}\n")
            elif isinstance(instr.type, ir.VoidType):
                append(f"  {line(instr, types).rstrip()}\n")
            else:
                append(f"  {instr.get_reference()} = {line(instr, types).rstrip()}\n")
    append("}\n")
    return "".join(buf)


# Each function below is the `descr` of its llvmlite class without metadata (an
# instruction with metadata is printed by llvmlite), the same format string for string.


def _plain(instr: ir.Instruction, types: _Types) -> str:
    opname = instr.opname
    if instr.flags:
        opname = " ".join([opname, *instr.flags])
    operands = ", ".join([op.get_reference() for op in instr.operands])
    return f"{opname} {types(instr.type)} {operands}\n"


def _cast(instr: ir.CastInstr, types: _Types) -> str:
    (op,) = instr.operands
    return f"{instr.opname} {types(op.type)} {op.get_reference()} to {types(instr.type)} \n"


def _gep(instr: ir.GEPInstr, types: _Types) -> str:
    indices = ", ".join([f"{types(i.type)} {i.get_reference()}" for i in instr.indices])
    op = "getelementptr inbounds" if instr.inbounds else "getelementptr"
    pointer = instr.pointer
    return (
        f"{op} {types(instr.source_etype)}, {types(pointer.type)} "
        f"{pointer.get_reference()}, {indices} \n"
    )


def _load(instr: ir.LoadInstr, types: _Types) -> str:
    (ptr,) = instr.operands
    align = f", align {instr.align:d}" if instr.align is not None else ""
    return f"load {types(instr.type)}, {types(ptr.type)} {ptr.get_reference()}{align}\n"


def _store(instr: ir.StoreInstr, types: _Types) -> str:
    val, ptr = instr.operands
    align = f", align {instr.align:d}" if instr.align is not None else ""
    return (
        f"store {types(val.type)} {val.get_reference()}, {types(ptr.type)} "
        f"{ptr.get_reference()}{align}\n"
    )


def _compare(instr: ir.CompareInstr, types: _Types) -> str:
    lhs, rhs = instr.operands
    flags = "".join(" " + flag for flag in instr.flags)
    return (
        f"{instr.opname}{flags} {instr.op} {types(lhs.type)} {lhs.get_reference()}, "
        f"{rhs.get_reference()} \n"
    )


def _select(instr: ir.SelectInstr, types: _Types) -> str:
    cond, lhs, rhs = instr.operands
    return (
        f"select {' '.join(instr.flags)} {types(cond.type)} {cond.get_reference()}, "
        f"{types(lhs.type)} {lhs.get_reference()}, {types(rhs.type)} {rhs.get_reference()} \n"
    )


def _terminator(instr: ir.Terminator, types: _Types) -> str:
    operands = ", ".join([f"{types(op.type)} {op.get_reference()}" for op in instr.operands])
    return f"{instr.opname} {operands}"


def _phi(instr: ir.PhiInstr, types: _Types) -> str:
    incoming = ", ".join(
        [f"[{v.get_reference()}, {b.get_reference()}]" for v, b in instr.incomings]
    )
    return f"phi {' '.join(instr.flags)} {types(instr.type)} {incoming} \n"


_LINES: dict[type, Callable[..., str]] = {
    ir.Instruction: _plain,
    ir.CastInstr: _cast,
    ir.GEPInstr: _gep,
    ir.LoadInstr: _load,
    ir.StoreInstr: _store,
    ir.ICMPInstr: _compare,
    ir.FCMPInstr: _compare,
    ir.SelectInstr: _select,
    ir.Branch: _terminator,
    ir.ConditionalBranch: _terminator,
    ir.PhiInstr: _phi,
}
