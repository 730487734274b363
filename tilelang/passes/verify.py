"""Pass `verify`: checks the block IR (types, SSA, uniform control flow) and returns it.

Assumes nothing. Guarantees the function satisfies `tilelang.ir.verify`; every later
pass may rely on that. Errors name the user's source line.
"""

from tilelang.ir.nodes import Function
from tilelang.ir.verify import verify
from tilelang.target import CPU, Target


def run(fn: Function, target: Target = CPU) -> Function:
    verify(fn)
    return fn
