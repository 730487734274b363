"""Block IR: the instructions and control flow of one thread-block program.

Every node of the block IR in one namespace (`from tilelang.ir import nodes as ir`):
the skeleton (`tilelang.ir.core`: values, `Instr`, `Block`, `Function`) and every
instruction class (`tilelang.ir.instructions`), so a new instruction is seen here
without editing this file. Re-exports only.
"""

from tilelang.ir.core import (
    NOWHERE,
    Block,
    ByClass,
    Const,
    ConstexprValue,
    Function,
    Instr,
    Loc,
    Value,
    Var,
    instruction_classes,
)
from tilelang.ir.instructions.compute import *
from tilelang.ir.instructions.control import *
from tilelang.ir.instructions.memory import *
from tilelang.ir.instructions.shape import *
