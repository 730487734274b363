"""Atomic memory updates in LLVM IR: thread IR's `Atomic` (add, max, min, xchg, cas;
each returns the element's value before it, as ``atomicrmw`` and ``cmpxchg`` do) and
`AtomicMerge`.

Helpers of the LLVM emitter (`tilelang.codegen.llvm`). The CPU backend runs the threads
of a block one after another but blocks on several host threads, so updates that
threads of different blocks make to the same memory must be real atomics:

* integer additions are one ``atomicrmw add`` (wrapping, as thread IR says), integer
  max/min one ``atomicrmw max``/``umax``/``min``/``umin``;
* float additions are a compare-and-swap loop on the element's own 16, 32 or 64 bits,
  the sum computed by `llvm_numeric.binary`, so an atomic f16/bf16/f32/f64 addition
  rounds exactly like the backend's ordinary ``add`` (an f16 sum rounds once, to f16;
  NaN results are canonical for f16/bf16); a float max/min is the same loop around the
  backend's ordinary ``max``/``min`` (NaN ignored, -0 < +0), so it agrees bit for bit
  with `tl.maximum` (LLVM's ``atomicrmw fmax`` leaves the order of -0 and +0 open);
* exchanges are one ``atomicrmw xchg``, compare-and-swaps one ``cmpxchg``, both on the
  element's bits as an integer (a float's bits, compared bit for bit);
  Never wider than the element: the bytes around it may belong to another tensor or
  lie past the buffer's end;
* merges of sub-byte codes are, per byte whose mask is not empty, an ``atomicrmw and``
  that clears the selected bits, then an ``atomicrmw or`` that sets the new ones:
  threads merging disjoint bits of one byte never lose each other's bits, in either
  order of their steps.

Every operation is ``monotonic`` (relaxed): the launch's end orders them with the host;
except `fetch_add` (thread IR's `AtomicFetchAdd`), ``acq_rel``: a block's threads run
in one host thread, so its accesses before (after) the fetch-add in program order are
released (acquired) with it.
"""

from __future__ import annotations

from llvmlite import ir

from tilelang.codegen import llvm_numeric as num
from tilelang.codegen.llvm_numeric import I8, I32, int_const
from tilelang.dtypes import DType

__all__ = ["atomic_add", "atomic_merge", "fetch_add"]

#: The ``atomicrmw`` of an integer max/min by (op, signed).
_INT_RMW = {
    ("max", True): "max",
    ("max", False): "umax",
    ("min", True): "min",
    ("min", False): "umin",
}

ORDER = "monotonic"


def atomic_add(
    b: ir.IRBuilder,
    ptr: ir.Value,
    value: ir.Value,
    dtype: DType,
    op: str = "add",
    compare: ir.Value | None = None,
) -> ir.Value:
    """``*ptr = *ptr op value`` atomically (`op`: add, max, min; xchg: ``*ptr = value``;
    cas: that where ``*ptr == compare`` bit for bit), for one element of `dtype` (values
    in its LLVM representation, `llvm_numeric.ltype`) at `ptr`, naturally aligned.
    Returns the element's value before the update, in that representation."""
    if op in ("xchg", "cas"):  # bits move: compare and exchange them as integers
        bits = ir.IntType(dtype.bits)
        as_bits = (lambda v: v) if dtype.is_int else (lambda v: b.bitcast(v, bits))
        if op == "xchg":
            old = b.atomic_rmw("xchg", ptr, as_bits(value), ORDER)
        else:
            swapped = b.cmpxchg(ptr, as_bits(compare), as_bits(value), ORDER, ORDER)
            old = b.extract_value(swapped, 0)
        return old if dtype.is_int else b.bitcast(old, num.ltype(dtype))
    if dtype.is_int:
        rmw = "add" if op == "add" else _INT_RMW[op, dtype.signed]
        return b.atomic_rmw(rmw, ptr, value, ORDER)
    bits = ir.IntType(dtype.bits)
    first = b.load_atomic(ptr, ORDER, dtype.bits // 8, typ=bits)
    entry = b.block
    loop = b.append_basic_block("atomic.add")
    done = b.append_basic_block("atomic.added")
    b.branch(loop)
    b.position_at_end(loop)
    old = b.phi(bits)
    old.add_incoming(first, entry)
    current = old if dtype.bits == 16 else b.bitcast(old, num.ltype(dtype))
    total = num.binary(b, op, current, value, dtype, dtype)
    new = total if dtype.bits == 16 else b.bitcast(total, bits)
    swapped = b.cmpxchg(ptr, old, new, ORDER, ORDER)
    old.add_incoming(b.extract_value(swapped, 0), b.block)
    b.cbranch(b.extract_value(swapped, 1), done, loop)
    b.position_at_end(done)
    return current  # what the successful cmpxchg replaced


def atomic_merge(b: ir.IRBuilder, ptr: ir.Value, value: ir.Value, mask: ir.Value) -> None:
    """The bits of `value` (i32) that `mask` (i32, low 16 bits) selects into the two
    bytes at `ptr`, little-endian; a byte with no selected bit is not accessed."""
    for k in range(2):
        byte_mask = b.trunc(b.lshr(mask, int_const(I32, 8 * k)), I8)
        byte_value = b.and_(b.trunc(b.lshr(value, int_const(I32, 8 * k)), I8), byte_mask)
        at = b.gep(ptr, [int_const(I32, k)], source_etype=I8) if k else ptr
        with b.if_then(b.icmp_unsigned("!=", byte_mask, int_const(I8, 0))):
            b.atomic_rmw("and", at, b.not_(byte_mask), ORDER)
            b.atomic_rmw("or", at, byte_value, ORDER)


def fetch_add(b: ir.IRBuilder, ptr: ir.Value, value: ir.Value) -> ir.Value:
    """The i32 at `ptr` before ``*ptr += value`` (wrapping), acquire-release."""
    return b.atomic_rmw("add", ptr, value, "acq_rel")
