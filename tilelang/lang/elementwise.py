"""The `tl.` functions of the elementwise operators: one per row of
`tilelang.ir.ops.ELEMENTWISE` that names a `dsl` function (`tl.exp`, `tl.softplus`,
`tl.where`, `tl.minimum`, ...), made from the row, so adding a row adds the function.

Each applies numpy's broadcasting and the operand rules of `tilelang.lang.values`; a
Python number given to a one-operand function is an f32 scalar.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from tilelang import dtypes
from tilelang.ir.ops import ELEMENTWISE, ElementwiseOp
from tilelang.lang.builder import current
from tilelang.lang.values import as_scalar, elementwise, is_python_number

_PARAMETERS = {1: ("x",), 2: ("x", "y"), 3: ("x", "y", "z")}


def _parameters(op: ElementwiseOp) -> tuple[str, ...]:
    return ("condition", "x", "y") if op.name == "where" else _PARAMETERS[op.arity]


def _function(op: ElementwiseOp) -> Callable:
    signature = inspect.Signature(
        [inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in _parameters(op)]
    )

    def function(*args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as error:
            raise current().error(f"tl.{op.dsl}: {error}") from None
        values = list(bound.args)
        if op.arity == 1 and is_python_number(values[0]):
            values[0] = as_scalar(float(values[0]), dtypes.f32)
        return elementwise(op.name, *values)

    function.__name__ = function.__qualname__ = op.dsl
    function.__doc__ = f"Elementwise {op.name}: {op.doc}."
    function.__signature__ = signature
    return function


#: Every elementwise `tl.` function, by name.
FUNCTIONS: dict[str, Callable] = {
    op.dsl: _function(op) for op in ELEMENTWISE.values() if op.dsl is not None
}

globals().update(FUNCTIONS)
__all__ = sorted(FUNCTIONS)
