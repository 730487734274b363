"""Block IR: the instructions and control flow of one thread-block program.

Every node of the block IR in one namespace (`from tilelang.ir import nodes as ir`):
the skeleton (`tilelang.ir.core`: values, `Instr`, `Block`, `Function`) and the
instruction classes (`tilelang.ir.instructions`). Re-exports only.
"""

from tilelang.ir.core import (
    NOWHERE,
    Block,
    Const,
    ConstexprValue,
    Function,
    Instr,
    Loc,
    Value,
    Var,
    instruction_classes,
)
from tilelang.ir.instructions.compute import (
    DOT_ACCUMULATORS,
    Arange,
    Cast,
    Compute,
    Dot,
    Full,
    Reduce,
    Scan,
)
from tilelang.ir.instructions.control import Blocks, For, If, Print, Yield
from tilelang.ir.instructions.memory import (
    AsyncCommit,
    AsyncWait,
    CopyAsync,
    Load,
    SharedAlloc,
    SharedLoad,
    SharedSlice,
    SharedStore,
    Store,
    Sync,
)
from tilelang.ir.instructions.shape import Broadcast, Relayout, Reshape, Transpose, View

__all__ = [
    "DOT_ACCUMULATORS",
    "NOWHERE",
    "Arange",
    "AsyncCommit",
    "AsyncWait",
    "Block",
    "Blocks",
    "Broadcast",
    "Cast",
    "Compute",
    "Const",
    "ConstexprValue",
    "CopyAsync",
    "Dot",
    "For",
    "Full",
    "Function",
    "If",
    "Instr",
    "Load",
    "Loc",
    "Print",
    "Reduce",
    "Relayout",
    "Reshape",
    "Scan",
    "SharedAlloc",
    "SharedLoad",
    "SharedSlice",
    "SharedStore",
    "Store",
    "Sync",
    "Transpose",
    "Value",
    "Var",
    "View",
    "Yield",
    "instruction_classes",
]
