"""tilelang: a tile-level kernel language and compiler for low-precision GPU computation.

The public API, re-exported from the modules that own it: data types and packing
(`tilelang.dtypes`), weights packed for a dot's fragments (`tilelang.packing`), the kernel
language (`tilelang.lang`), and the kernel object (`tilelang.kernel`).
"""

import re as _re

from tilelang.analysis.replication import ReplicatedOperandWarning
from tilelang.dtypes import (
    NAMED_TYPES,
    DType,
    FloatType,
    IntType,
    PackedArray,
    bf16,
    dtype,
    f3e1m1,
    f4e2m1,
    f6e2m3,
    f6e3m2,
    f8e4m3,
    f8e5m2,
    f16,
    f32,
    f64,
    float_type,
    i1,
    i2,
    i3,
    i4,
    i5,
    i6,
    i7,
    i8,
    i16,
    i32,
    i64,
    int_type,
    pack,
    pack_codes,
    u1,
    u2,
    u3,
    u4,
    u5,
    u6,
    u7,
    u8,
    u16,
    u32,
    u64,
)
from tilelang.ir.layout import Layout, Rep
from tilelang.kernel import CompiledKernel, Kernel, func, kernel
from tilelang.lang.elementwise import FUNCTIONS as _ELEMENTWISE
from tilelang.lang.errors import TileLangError
from tilelang.lang.ops import (
    arange,
    argmax,
    argmin,
    arrive,
    atomic_add,
    atomic_cas,
    atomic_max,
    atomic_min,
    atomic_xchg,
    blocks,
    broadcast,
    clamp,
    commit,
    concat,
    copy_async,
    cummax,
    cummin,
    cumprod,
    cumsum,
    dot,
    dot_layout,
    full,
    join,
    load,
    load_fragment,
    lookup,
    max,
    min,
    num_blocks,
    prod,
    reshape,
    shared,
    split,
    store,
    sum,
    sync,
    transpose,
    view,
    wait,
    zeros,
)
from tilelang.lang.ops import print_ as print
from tilelang.lang.ops import range_ as range
from tilelang.lang.random import rand, randint, randint4x, randn
from tilelang.lang.scan import associative_scan
from tilelang.lang.signature import Tensor, constexpr
from tilelang.lang.sort import argsort, flip, sort, topk
from tilelang.lang.values import cdiv
from tilelang.lowering.wgmma import WgmmaFallbackWarning
from tilelang.packing import DotPackedArray, DotPacking, pack_for_dot, unpack_from_dot
from tilelang.passes.plan_registers import RegisterBudgetError, RegisterSpillWarning
from tilelang.passes.software_pipeline import PipelineWarning
from tilelang.runtime.gpu import DeviceBuffer, gpu_available
from tilelang.runtime.gpu import device_arch as gpu_arch
from tilelang.runtime.value_facts import vouch
from tilelang.tuning import Autotuned, autotune
from tilelang.version import __version__

# tl.exp, tl.softplus, tl.where, ...: one function per elementwise operator of the table.
globals().update(_ELEMENTWISE)


def __getattr__(name: str) -> DType:
    """Any valid type name is an attribute: `tl.u7`, `tl.i3`, `tl.f5e2m2`."""
    try:
        return dtype(name)
    except (ValueError, TypeError) as error:
        # A name spelled like a type gets the reason it is not one.
        reason = f": {error}" if _TYPE_NAME.fullmatch(name) else ""
        raise AttributeError(f"module 'tilelang' has no attribute {name!r}{reason}") from None


_TYPE_NAME = _re.compile(r"[ui]\d+|f\d+(e\d+m\d+)?|bf\d+")
