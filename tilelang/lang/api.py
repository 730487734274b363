"""The kernel language as one namespace, for the kernels of tilelang's own packages.

`tilelang.quant` and `tilelang.kernels` write their kernels in the public DSL, but they
cannot import the package root (nothing inside `tilelang` does: tests/test_architecture.py).
`tl` here names the same functions the root exports for kernel bodies (loads, stores,
dots, reductions, scans, shapes, every elementwise function) and every dtype by its name
(`tl.f16`, `tl.e8m0`), so a library kernel reads exactly like a user's.
"""

from __future__ import annotations

from types import SimpleNamespace

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.ir.layout import Layout, Rep
from tilelang.lang import ops
from tilelang.lang.elementwise import FUNCTIONS
from tilelang.lang.random import rand, randint, randint4x, randn
from tilelang.lang.scan import associative_scan
from tilelang.lang.values import cdiv

__all__ = ["tl"]


class _Language(SimpleNamespace):
    """The DSL's functions as attributes; any other name is a dtype (`tl.u4`)."""

    def __getattr__(self, name: str) -> DType:
        try:
            return dtypes.dtype(name)
        except (TypeError, ValueError):
            raise AttributeError(f"the kernel language has no {name!r}") from None


tl = _Language(
    **FUNCTIONS,
    Layout=Layout,  # register layouts a kernel states (`load(..., layout=)`)
    Rep=Rep,
    arange=ops.arange,
    arrive=ops.arrive,
    associative_scan=associative_scan,
    blocks=ops.blocks,
    broadcast=ops.broadcast,
    cdiv=cdiv,
    concat=ops.concat,
    cumsum=ops.cumsum,
    dot=ops.dot,
    dot_layout=ops.dot_layout,
    full=ops.full,
    join=ops.join,
    load=ops.load,
    load_fragment=ops.load_fragment,
    max=ops.max,
    min=ops.min,
    rand=rand,
    randint=randint,
    randint4x=randint4x,
    randn=randn,
    range=ops.range_,
    reshape=ops.reshape,
    split=ops.split,
    store=ops.store,
    sum=ops.sum,
    transpose=ops.transpose,
    view=ops.view,
    zeros=ops.zeros,
)
