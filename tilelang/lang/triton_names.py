"""What a kernel written with Triton's habits reaches for, and how tilelang says it.

A Triton porter's first lines are `pid = tl.program_id(0)` and `tl.load(x_ptr + offs)`.
The frontend's error for a `tl.` name tilelang lacks (`missing_attribute`) says the
tilelang spelling when the name is Triton's (`TRITON_NAMES`), else the close names (and
other libraries' names of an operation, `OTHER_SPELLINGS`) and where the list of
operations is; its error for arithmetic on a tensor (`pointer_arithmetic`) says that
tensors are addressed by offsets, not pointers. The table holds only Triton names tilelang has no function
of: a name tilelang shares (`tl.dot`, `tl.where`, `tl.zeros`, `tl.float32`) never
reaches it, and tests/test_triton_habits.py checks that every `tl.` name it
suggests exists.
"""

from __future__ import annotations

import ast
import difflib
import inspect

from tilelang.lang.values import Tensor, describe

_NOT_NEEDED = (
    "nothing: a launch specializes on how each size divides (by up to 128) and on the "
    "tensors' alignment by itself, and `tl.load`/`tl.store` address whole boxes"
)
_BLOCK_POINTER = (
    "`tl.load(t, [offsets...], shape)` and `tl.store(t, [offsets...], tile)`, which address "
    "a box of the tensor (move it by changing the offsets)"
)

#: Triton's `tl.` names that tilelang spells differently, with what to write instead.
TRITON_NAMES: dict[str, str] = {
    "program_id": (
        "`tl.blocks(n0, n1, n2)`, which declares the grid in the kernel (at the top level "
        "of its body) and returns this block's indices: `pid = tl.program_id(0)` launched "
        "on `(cdiv(N, BLOCK),)` is `pid = tl.blocks(tl.cdiv(N, BLOCK))`"
    ),
    "num_programs": "`tl.num_blocks(axis)`, the grid's size along an axis",
    "zeros_like": "`tl.zeros(x.shape, x.dtype)`",
    "static_range": (
        "Python's `range(...)`, which unrolls while compiling (`tl.range(...)` is the runtime loop)"
    ),
    "static_assert": "Python's `assert` on compile-time values, checked while compiling",
    "multiple_of": _NOT_NEEDED,
    "max_contiguous": _NOT_NEEDED,
    "max_constancy": _NOT_NEEDED,
    "make_block_ptr": _BLOCK_POINTER,
    "advance": _BLOCK_POINTER,
    "debug_barrier": "`tl.sync()`",
    "device_print": "`tl.print(label, value)`",
    "trans": "`tl.transpose(x, perm)`",
    "permute": "`tl.transpose(x, perm)`",
    "expand_dims": "an index with None: `x[:, None]`",
    "broadcast_to": "`tl.broadcast(x, shape)`",
    "cast": "`x.to(dtype)`",
    "float8e4nv": "`tl.f8e4m3`",
    "float8e5": "`tl.f8e5m2`",
    "math": (
        "the function itself: tilelang's math functions are `tl.` functions (`tl.math.asin(x)` "
        "is `tl.asin(x)`, `tl.math.pow(x, y)` is `tl.pow(x, y)`; docs/ops.md lists them)"
    ),
    "extra": (
        "the function itself: libdevice's functions tilelang has are `tl.` functions "
        "(`tl.popc`, `tl.clz`, `tl.brev`, `tl.asin`, `tl.cbrt`, ...; docs/ops.md lists them)"
    ),
}

#: Other libraries' names of tilelang's operations that difflib does not find close.
OTHER_SPELLINGS: dict[str, str] = {
    "popcount": "popc",
    "bitwise_count": "popc",
    "count_leading_zeros": "clz",
    "bit_reverse": "brev",
    "bitreverse": "brev",
    "mul_hi": "umulhi",
    "arcsin": "asin",
    "arccos": "acos",
    "arctan": "atan",
    "arctan2": "atan2",
    "power": "pow",
}

#: Where an unknown-operation error sends a user of the package.
SEE_OPS = "docs/ops.md lists every operation"


def missing_attribute(base: object, name: str) -> str:
    """The error for `base.name` that does not exist: for the package, what Triton's
    name of that spelling is here, or the close names."""
    if not inspect.ismodule(base):
        return f"{describe(base)} has no attribute `{name}`"
    unknown = f"unknown operation `{base.__name__}.{name}`"
    if base.__name__ == "tilelang" and name in TRITON_NAMES:
        return f"{unknown}; for Triton's `tl.{name}` write {TRITON_NAMES[name]}"
    known = [n for n in dir(base) if not n.startswith("_")]
    close = difflib.get_close_matches(name, known, n=3)
    if base.__name__ == "tilelang" and OTHER_SPELLINGS.get(name) in known:
        close = [OTHER_SPELLINGS[name], *(c for c in close if c != OTHER_SPELLINGS[name])][:3]
    see = f" ({SEE_OPS})" if base.__name__ == "tilelang" else ""
    if not close:
        return f"{unknown}{see}"
    return f"{unknown}; did you mean {', '.join(f'{base.__name__}.{c}' for c in close)}?{see}"


_OPERAND_FIELDS = {ast.BinOp: ("left", "right"), ast.AugAssign: ("target", "value")}


def pointer_arithmetic(args: list, node: ast.AST) -> str | None:
    """The error for an operator (`node`, on the values `args`) with a tensor among its
    operands, as Triton's `x_ptr + offs` has; None when no operand is a tensor."""
    index = next((i for i, a in enumerate(args) if isinstance(a, Tensor)), None)
    if index is None:
        return None
    fields = _OPERAND_FIELDS.get(type(node), ("operand",))
    operand = getattr(node, fields[min(index, len(fields) - 1)], None)
    text = ast.unparse(operand) if operand is not None else args[index].var.name
    return (
        f"`{text}` is a tensor in global memory, not a pointer: tilelang has no pointer "
        f"arithmetic. Read a box with `tl.load({text}, [offsets...], shape)` and write one "
        f"with `tl.store({text}, [offsets...], tile)`; an integer tile among the offsets "
        "gathers or scatters"
    )
