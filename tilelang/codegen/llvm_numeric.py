"""Scalar semantics of thread IR in LLVM IR: types, constants, operators, conversions.

Helpers of the LLVM emitter (`tilelang.codegen.llvm`); every function takes an
`llvmlite.ir.IRBuilder` and values already lowered to their LLVM representation:

* u1 is `i1`; 8/16/32/64-bit integers are `iN` (signedness lives in the thread-IR
  dtype, not in LLVM); f16 and bf16 are `i16` bit patterns; f32 is `float`; f64 is
  `double`.
* f16 and bf16 arithmetic is done in f32 and rounded once back to 16 bits, round to
  nearest even. This is exact for add/sub/mul/div/rem/sqrt/min/max/floor/ceil/trunc: f32
  has 24 ≥ 2·11 + 2 significand bits, so double rounding through f32 is innocuous for
  the basic operations (and f16/bf16 products are exact in f32). A NaN result is the
  canonical NaN 0x7FFF (what the GPU's f16 units produce).
* Conversions follow `tilelang.dtypes` (the casting policy): RNE everywhere, ±inf on
  f16/bf16/f32/f64 overflow, canonical positive NaN, float→int via `llvm.rint` plus
  explicit saturation (never a poison-producing `fptosi` out of range), int→int
  saturation. Conversions that would round twice (f64→f16/bf16, i64/u64→bf16) first
  round to odd at the wider precision, which makes the second rounding exact.
"""

from __future__ import annotations

import struct

from llvmlite import ir

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.ir.ops import BY_THREAD_OP, FLUSH_BELOW, Result, expand

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I16 = ir.IntType(16)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
F32 = ir.FloatType()
F64 = ir.DoubleType()
HALF = ir.HalfType()
PTR = ir.PointerType()
VOID = ir.VoidType()

CANONICAL_NAN_16 = 0x7FFF


class EmitError(ValueError):
    """A thread-IR construct the LLVM emitter cannot lower (e.g. a float shift)."""


def ltype(dt: DType) -> ir.Type:
    """The LLVM type that holds a value of register dtype `dt`."""
    if dt == dtypes.u1:
        return I1
    if dt.is_int:
        return ir.IntType(dt.bits)
    if dt in (dtypes.f16, dtypes.bf16):
        return I16
    if dt == dtypes.f32:
        return F32
    if dt == dtypes.f64:
        return F64
    raise EmitError(f"{dt} is not a register dtype")


def storage_type(dt: DType) -> ir.Type:
    """The in-memory type of a Name slot (u1 is stored as a byte)."""
    return I8 if dt == dtypes.u1 else ltype(dt)


def int_const(ty: ir.IntType, value: int) -> ir.Constant:
    """An integer constant from any Python int (reduced modulo 2^width, printed signed)."""
    key = (ty.width, value)
    found = _INT_CONSTANTS.get(key)
    if found is None:
        width = ty.width
        value &= (1 << width) - 1
        if width > 1 and value >= 1 << (width - 1):
            value -= 1 << width
        if len(_INT_CONSTANTS) >= 1 << 14:
            _INT_CONSTANTS.clear()
        found = _INT_CONSTANTS[key] = ir.Constant(ty, value)
    return found


#: The constants `int_const` made, by (width, value): a constant has no parent and is
#: never changed, so instructions share it (and its text, which llvmlite keeps).
_INT_CONSTANTS: dict[tuple[int, int], ir.Constant] = {}


def imm(value: int | float, dt: DType) -> ir.Constant:
    """The constant of an `Imm`: integers wrap; floats are encoded by the casting policy."""
    ty = ltype(dt)
    if dt.is_int:
        if isinstance(value, float):
            value = int(dtypes.int_type(dt.bits, dt.signed).encode(value))
        return int_const(ty, int(value))
    code = int(dt.encode(value))
    if dt in (dtypes.f16, dtypes.bf16):
        return int_const(I16, code)
    if dt == dtypes.f32:
        return ir.Constant(F32, struct.unpack("<f", struct.pack("<I", code))[0])
    return ir.Constant(F64, struct.unpack("<d", struct.pack("<Q", code))[0])


# --------------------------------------------------------------------------- intrinsics


def intrinsic(module: ir.Module, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    """Get or declare `name` (a full symbol such as `llvm.rint.f32`)."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    return ir.Function(module, ir.FunctionType(ret, args), name=name)


def _suffix(ty: ir.Type) -> str:
    if isinstance(ty, ir.IntType):
        return f"i{ty.width}"
    return {F32: "f32", F64: "f64", HALF: "f16"}[ty]


def call(b: ir.IRBuilder, name: str, *args: ir.Value, ret: ir.Type | None = None) -> ir.Value:
    """Call the overloaded intrinsic `llvm.<name>.<type of the first argument>`."""
    ty = args[0].type
    fn = intrinsic(b.module, f"llvm.{name}.{_suffix(ty)}", ret or ty, [a.type for a in args])
    return b.call(fn, list(args))


# --------------------------------------------------------------------------- float codecs


def is_half(dt: DType) -> bool:
    return dt in (dtypes.f16, dtypes.bf16)


def f16_to_f32(b: ir.IRBuilder, bits: ir.Value) -> ir.Value:
    return b.fpext(b.bitcast(bits, HALF), F32)


def bf16_to_f32(b: ir.IRBuilder, bits: ir.Value) -> ir.Value:
    return b.bitcast(b.shl(b.zext(bits, I32), int_const(I32, 16)), F32)


def _is_nan(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    return b.fcmp_unordered("uno", x, x)


def f32_to_f16(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """RNE (fptrunc), overflow to ±inf, NaN to the canonical 0x7FFF."""
    bits = b.bitcast(b.fptrunc(x, HALF), I16)
    return b.select(_is_nan(b, x), int_const(I16, CANONICAL_NAN_16), bits)


def f32_to_bf16(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """RNE with integer arithmetic (a carry into the exponent gives the next binade or
    ±inf, as it should); NaN gives the canonical 0x7FFF."""
    bits = b.bitcast(x, I32)
    odd = b.and_(b.lshr(bits, int_const(I32, 16)), int_const(I32, 1))
    rounded = b.add(bits, b.add(int_const(I32, 0x7FFF), odd))
    high = b.trunc(b.lshr(rounded, int_const(I32, 16)), I16)
    return b.select(_is_nan(b, x), int_const(I16, CANONICAL_NAN_16), high)


def f64_to_f32_odd(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """x rounded to f32 *to odd*: truncate toward zero, then set the last bit when the
    result is inexact. A later RNE rounding to ≤ 22 bits of significand is then exact
    (no double rounding). Out of f32 range this gives ±max-finite|1, which still rounds
    to ±inf in f16/bf16. NaN inputs must be handled by the caller."""
    nearest = b.fptrunc(x, F32)
    back = b.fpext(nearest, F64)
    inexact = b.fcmp_ordered("one", back, x)
    away = b.fcmp_ordered("ogt", call(b, "fabs", back), call(b, "fabs", x))
    bits = b.bitcast(nearest, I32)
    toward_zero = b.sub(bits, b.zext(away, I32))
    return b.bitcast(b.or_(toward_zero, b.zext(inexact, I32)), F32)


def to_f32(b: ir.IRBuilder, v: ir.Value, dt: DType) -> ir.Value:
    """An f16/bf16/f32 value as f32 (exact)."""
    if dt == dtypes.f16:
        return f16_to_f32(b, v)
    if dt == dtypes.bf16:
        return bf16_to_f32(b, v)
    assert dt == dtypes.f32
    return v


def from_f32(b: ir.IRBuilder, x: ir.Value, dt: DType) -> ir.Value:
    """An f32 value rounded (RNE) to f16/bf16 bits, or kept as f32."""
    if dt == dtypes.f16:
        return f32_to_f16(b, x)
    if dt == dtypes.bf16:
        return f32_to_bf16(b, x)
    assert dt == dtypes.f32
    return x


def from_f64(b: ir.IRBuilder, x: ir.Value, dt: DType) -> ir.Value:
    """An f64 value rounded once (RNE) to `dt` in {f16, bf16, f32, f64}; NaN canonical."""
    if dt == dtypes.f64:
        return canonical_nan(b, x, dt)
    if dt == dtypes.f32:
        return canonical_nan(b, b.fptrunc(x, F32), dt)
    odd = f64_to_f32_odd(b, x)
    bits = from_f32(b, odd, dt)
    return b.select(_is_nan(b, x), int_const(I16, CANONICAL_NAN_16), bits)


def canonical_nan(b: ir.IRBuilder, v: ir.Value, dt: DType) -> ir.Value:
    """`v` with any NaN replaced by dt's canonical NaN (sign 0, every other bit 1)."""
    if is_half(dt):
        magnitude = b.and_(v, int_const(I16, 0x7FFF))
        exp_all_ones = 0x7C00 if dt == dtypes.f16 else 0x7F80
        nan = b.icmp_unsigned(">", magnitude, int_const(I16, exp_all_ones))
        return b.select(nan, int_const(I16, CANONICAL_NAN_16), v)
    ity = I32 if dt == dtypes.f32 else I64
    canon = b.bitcast(int_const(ity, (1 << (ity.width - 1)) - 1), v.type)
    return b.select(_is_nan(b, v), canon, v)


def round_to_odd_sum(b: ir.IRBuilder, p: ir.Value, c: ir.Value) -> ir.Value:
    """p + c in f64 rounded to odd (TwoSum gives the exact error of the RNE sum)."""
    s = b.fadd(p, c)
    bb = b.fsub(s, p)
    err = b.fadd(b.fsub(p, b.fsub(s, bb)), b.fsub(c, bb))
    inexact = b.fcmp_ordered("one", err, ir.Constant(F64, 0.0))
    bits = b.bitcast(s, I64)
    even = b.icmp_unsigned("==", b.and_(bits, int_const(I64, 1)), int_const(I64, 0))
    # Toward the exact value: the magnitude grows when err has the sign of s.
    same_sign = b.icmp_signed(">=", b.xor(bits, b.bitcast(err, I64)), int_const(I64, 0))
    step = b.select(same_sign, int_const(I64, 1), int_const(I64, -1))
    adjusted = b.add(bits, step)
    return b.bitcast(b.select(b.and_(inexact, even), adjusted, bits), F64)


# --------------------------------------------------------------------------- conversions


def _int_to_f64_odd(b: ir.IRBuilder, v: ir.Value, dt: DType) -> ir.Value:
    """A 64-bit integer as f64 rounded to odd (exact below 2^53)."""
    negative = b.icmp_signed("<", v, int_const(I64, 0)) if dt.signed else ir.Constant(I1, 0)
    magnitude = b.select(negative, b.neg(v), v)  # |INT64_MIN| = 2^63 as an unsigned i64
    lz = call(b, "ctlz", magnitude, ir.Constant(I1, 0))
    # Bits beyond 53 significant ones; clamped at 0 for small magnitudes.
    shift = b.select(
        b.icmp_signed(">", lz, int_const(I64, 11)), int_const(I64, 0), b.sub(int_const(I64, 11), lz)
    )
    kept = b.lshr(magnitude, shift)
    low_mask = b.sub(b.shl(int_const(I64, 1), shift), int_const(I64, 1))
    sticky = b.icmp_unsigned("!=", b.and_(magnitude, low_mask), int_const(I64, 0))
    kept = b.or_(kept, b.zext(sticky, I64))
    scale = b.bitcast(b.shl(b.add(shift, int_const(I64, 1023)), int_const(I64, 52)), F64)
    value = b.fmul(b.uitofp(kept, F64), scale)
    return b.select(negative, b.fneg(value), value)


def int_to_float(b: ir.IRBuilder, v: ir.Value, src: DType, dst: DType) -> ir.Value:
    convert = b.sitofp if src.signed and src != dtypes.u1 else b.uitofp
    if dst in (dtypes.f32, dtypes.f64):
        return convert(v, ltype(dst))  # LLVM's int→fp conversions round to nearest even
    if dst == dtypes.f16 or src.bits <= 24:
        # Exact in f32 below 2^24; beyond that both the f32 value and the exact one
        # overflow f16, so the second rounding cannot differ.
        return from_f32(b, convert(v, F32), dst)
    if src.bits <= 32:
        return from_f64(b, convert(v, F64), dst)  # exact in f64
    return from_f64(b, _int_to_f64_odd(b, v, src), dst)


def float_to_int(b: ir.IRBuilder, v: ir.Value, src: DType, dst: DType) -> ir.Value:
    """RNE, saturate, NaN → 0 (`cvt.rni.sat`); to u1: nonzero (not NaN) gives 1."""
    x = v if src in (dtypes.f32, dtypes.f64) else to_f32(b, v, src)
    fty = x.type
    if dst == dtypes.u1:
        return b.fcmp_ordered("one", x, ir.Constant(fty, 0.0))
    ity = ltype(dst)
    r = call(b, "rint", x)
    high = float(2 ** (dst.bits - 1 if dst.signed else dst.bits))
    low = float(dst.min)
    too_high = b.fcmp_ordered("oge", r, ir.Constant(fty, high))
    too_low = b.fcmp_ordered("olt", r, ir.Constant(fty, low))
    nan = _is_nan(b, r)
    bad = b.or_(b.or_(too_high, too_low), nan)
    safe = b.select(bad, ir.Constant(fty, 0.0), r)
    exact = b.fptosi(safe, ity) if dst.signed else b.fptoui(safe, ity)
    out = b.select(too_high, int_const(ity, dst.max), exact)
    return b.select(too_low, int_const(ity, dst.min), out)


def int_to_int(b: ir.IRBuilder, v: ir.Value, src: DType, dst: DType) -> ir.Value:
    """Saturating; to u1, nonzero gives 1."""
    if dst == dtypes.u1:
        return b.icmp_unsigned("!=", v, ir.Constant(v.type, 0))
    src_signed = src.signed and src != dtypes.u1
    dty = ltype(dst)
    if src.min >= dst.min and src.max <= dst.max:  # fits: extend (or keep)
        if dty.width == v.type.width:
            return v
        return b.sext(v, dty) if src_signed else b.zext(v, dty)
    wide = ir.IntType(max(src.bits, dst.bits) + 1)
    x = b.sext(v, wide) if src_signed else b.zext(v, wide)
    lo, hi = int_const(wide, dst.min), int_const(wide, dst.max)
    x = b.select(b.icmp_signed("<", x, lo), lo, x)
    x = b.select(b.icmp_signed(">", x, hi), hi, x)
    return b.trunc(x, dty)


def float_to_float(
    b: ir.IRBuilder, v: ir.Value, src: DType, dst: DType, canonical: bool = True
) -> ir.Value:
    """`canonical` False: a NaN result may be any NaN (`tilelang.codegen.nan_facts`)."""
    if src == dtypes.f64:
        if dst == dtypes.f64 and not canonical:
            return v
        if dst == dtypes.f32 and not canonical:
            return b.fptrunc(v, F32)
        return from_f64(b, v, dst)
    x = to_f32(b, v, src)  # exact
    if dst == dtypes.f64:
        wide = b.fpext(x, F64)
        return canonical_nan(b, wide, dst) if canonical else wide
    if dst == dtypes.f32:
        return canonical_nan(b, x, dst) if canonical else x
    if dst == dtypes.f16 and not canonical:  # fptrunc gives a NaN for a NaN
        return b.bitcast(b.fptrunc(x, HALF), I16)
    return from_f32(b, x, dst)  # canonical NaN included (bf16's rounding needs the check)


def convert(
    b: ir.IRBuilder, v: ir.Value, src: DType, dst: DType, canonical: bool = True
) -> ir.Value:
    """`Cvt`: a value conversion under tilelang's casting policy (`canonical` False: a
    float result that is a NaN may be any NaN)."""
    if src.is_float and dst.is_float:
        return float_to_float(b, v, src, dst, canonical)
    if src.is_float:
        return float_to_int(b, v, src, dst)
    if dst.is_float:
        return int_to_float(b, v, src, dst)
    return int_to_int(b, v, src, dst)


def bitcast(b: ir.IRBuilder, v: ir.Value, dst: DType) -> ir.Value:
    ty = ltype(dst)
    return v if v.type == ty else b.bitcast(v, ty)


# --------------------------------------------------------------------------- operators

_ICMP = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_FCMP = {"eq": "oeq", "ne": "une", "lt": "olt", "le": "ole", "gt": "ogt", "ge": "oge"}


def _compute_type(dt: DType) -> DType:
    return dtypes.f32 if is_half(dt) else dt


def compare(b: ir.IRBuilder, op: str, x: ir.Value, y: ir.Value, dt: DType) -> ir.Value:
    if dt.is_float:
        if is_half(dt):
            x, y = to_f32(b, x, dt), to_f32(b, y, dt)
        if op == "ne":
            return b.fcmp_unordered("une", x, y)
        return b.fcmp_ordered(_FCMP[op], x, y)
    signed = dt.signed and dt != dtypes.u1
    pred = _ICMP[op]
    return b.icmp_signed(pred, x, y) if signed else b.icmp_unsigned(pred, x, y)


def _shift(b: ir.IRBuilder, op: str, x: ir.Value, amount: ir.Value, dt: DType, at: DType):
    """Shifts by ≥ width give 0 (or the sign fill for a signed `shr`). The amount is read
    as an unsigned value of its own width (a negative amount is a huge shift, as PTX's
    unsigned shift operand would read it)."""
    width = x.type.width
    aw = amount.type.width
    if aw > width:
        too_far = b.icmp_unsigned(">=", amount, int_const(amount.type, width))
        amount = b.trunc(amount, x.type)
    else:
        if aw < width:
            amount = b.zext(amount, x.type)
        too_far = b.icmp_unsigned(">=", amount, int_const(x.type, width))
    clamped = b.select(too_far, int_const(x.type, width - 1), amount)
    if op == "shl":
        return b.select(too_far, ir.Constant(x.type, 0), b.shl(x, clamped))
    if dt.signed and dt != dtypes.u1:
        return b.ashr(x, clamped)  # width-1 gives the sign fill
    return b.select(too_far, ir.Constant(x.type, 0), b.lshr(x, clamped))


def _int_divide(b: ir.IRBuilder, op: str, x: ir.Value, y: ir.Value, dt: DType) -> ir.Value:
    """Truncating division without UB: x / 0 = -1 (all ones), x % 0 = x; the signed
    overflow MIN / -1 wraps to MIN, MIN % -1 = 0."""
    ty = x.type
    zero = b.icmp_unsigned("==", y, ir.Constant(ty, 0))
    signed = dt.signed and dt != dtypes.u1
    bad = zero
    if signed:
        overflow = b.and_(
            b.icmp_unsigned("==", x, int_const(ty, dt.min)),
            b.icmp_unsigned("==", y, int_const(ty, -1)),
        )
        bad = b.or_(zero, overflow)
    safe = b.select(bad, ir.Constant(ty, 1), y)
    if op == "div":
        q = b.sdiv(x, safe) if signed else b.udiv(x, safe)
        return b.select(zero, int_const(ty, -1), q)
    r = b.srem(x, safe) if signed else b.urem(x, safe)
    return b.select(zero, x, r)


def binary(b: ir.IRBuilder, op: str, x: ir.Value, y: ir.Value, dt: DType, bdt: DType) -> ir.Value:
    """A `BINARY_OPS` operator on dtype `dt` (`bdt`: the second operand's dtype)."""
    if dt.is_int:
        if op in ("shl", "shr"):
            if not bdt.is_int:
                raise EmitError(f"a shift amount must be an integer, got {bdt}")
            return _shift(b, op, x, y, dt, bdt)
        signed = dt.signed and dt != dtypes.u1
        if op == "add":
            return b.add(x, y)
        if op == "sub":
            return b.sub(x, y)
        if op == "mul":
            return b.mul(x, y)
        if op in ("div", "rem"):
            return _int_divide(b, op, x, y, dt)
        if op in ("min", "max"):
            pred = "<" if op == "min" else ">"
            cmp = b.icmp_signed(pred, x, y) if signed else b.icmp_unsigned(pred, x, y)
            return b.select(cmp, x, y)
        if op == "and":
            return b.and_(x, y)
        if op == "or":
            return b.or_(x, y)
        if op == "xor":
            return b.xor(x, y)
        return word_op(b, op, [x, y], dt)
    ct = _compute_type(dt)
    if is_half(dt):
        x, y = to_f32(b, x, dt), to_f32(b, y, dt)
    r = float_op(b, op, [x, y])
    # An arithmetic NaN is the canonical one, as the GPU makes it (x86 makes 0xFFC00000).
    return from_f32(b, r, dt) if ct != dt else canonical_nan(b, r, dt)


#: LLVM instructions a row of `ELEMENTWISE` may name as its spelling (others are calls).
_INSTRUCTIONS = frozenset(("fneg", "fadd", "fsub", "fmul", "fdiv", "frem"))


def float_op(b: ir.IRBuilder, op: str, args: list[ir.Value]) -> ir.Value:
    """An operator of `tilelang.ir.ops.ELEMENTWISE` (by its thread-IR name) on f32 or f64
    values, as its row spells it for LLVM, or through its row's expansion."""
    row = BY_THREAD_OP.get(op)
    ty = args[0].type
    if row is not None and row.expand is not None:
        return expand(
            row, args, lambda name, *xs: float_op(b, name, list(xs)), lambda v: ir.Constant(ty, v)
        )
    if row is None or row.llvm is None:
        raise EmitError(f"{op} is not defined on floats")
    spelling = row.llvm[0 if ty == F32 else 1]
    if spelling in _INSTRUCTIONS:
        return getattr(b, spelling)(*args)
    fn = intrinsic(b.module, spelling, ty, [a.type for a in args])
    result = b.call(fn, args)
    return flush(b, result) if row.flush else result


def word_op(b: ir.IRBuilder, op: str, args: list[ir.Value], dt: DType) -> ir.Value:
    """A row of `tilelang.ir.ops.ELEMENTWISE` on 32/64-bit integers (a row of `widths`:
    popc, clz, brev, umulhi), as its row spells it for LLVM; the result in `dt`'s width,
    a count (`Result.I32`) in i32."""
    row = BY_THREAD_OP.get(op)
    if row is None or row.widths is None or row.llvm is None:
        raise EmitError(f"{op} is not defined on {dt}")
    if dt.bits not in (32, 64):
        raise EmitError(f"{op} takes 32- or 64-bit integers, not {dt}")
    spelling = row.llvm[0 if dt.bits == 32 else 1]
    if spelling in _WORD_FORMULAS:
        return _WORD_FORMULAS[spelling](b, *args)
    # ctlz's second operand says whether a zero input is poison: here it is the width.
    extra = [ir.Constant(ir.IntType(1), 0)] if spelling.startswith("llvm.ctlz.") else []
    fn = intrinsic(b.module, spelling, args[0].type, [a.type for a in args + extra])
    result = b.call(fn, args + extra)
    # A count (ctpop.i64) is at most 64: as an i32 (`Result.I32`) it loses nothing.
    return b.trunc(result, I32) if row.result is Result.I32 and dt.bits == 64 else result


def _umulhi(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    """The high half of the unsigned double-width product (LLVM has no intrinsic for it)."""
    width = x.type.width
    wide = ir.IntType(2 * width)
    product = b.mul(b.zext(x, wide), b.zext(y, wide))
    return b.trunc(b.lshr(product, ir.Constant(wide, width)), x.type)


#: Spellings of `WORD` rows that are formulas written out here, not LLVM functions.
_WORD_FORMULAS = {"tl.umulhi": _umulhi}


def flush(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """x, or a zero of its sign where |x| < 2^-126 (PTX `.ftz`; `tilelang.ir.ops.flushed`)."""
    tiny = b.fcmp_ordered("<", call(b, "fabs", x), ir.Constant(x.type, FLUSH_BELOW))
    return b.select(tiny, b.fmul(x, ir.Constant(x.type, 0.0)), x)


def fma(b: ir.IRBuilder, args: list[ir.Value], dt: DType) -> ir.Value:
    """a·b + c rounded once (`llvm.fma`); f16/bf16 in f32, then rounded."""
    if is_half(dt):
        return from_f32(b, float_op(b, "fma", [to_f32(b, x, dt) for x in args]), dt)
    return canonical_nan(b, float_op(b, "fma", args), dt)


def unary(b: ir.IRBuilder, op: str, x: ir.Value, dt: DType) -> ir.Value:
    if dt.is_int:
        ty = x.type
        if op == "neg":
            return b.sub(ir.Constant(ty, 0), x)
        if op == "not":
            return b.xor(x, int_const(ty, -1))
        if op == "abs":
            if not dt.signed or dt == dtypes.u1:
                return x
            return b.select(b.icmp_signed("<", x, ir.Constant(ty, 0)), b.neg(x), x)
        if op in ("floor", "ceil", "trunc"):
            return x
        return word_op(b, op, [x], dt)
    if is_half(dt):
        if op == "neg":
            return b.xor(x, int_const(I16, 0x8000))
        if op == "abs":
            return b.and_(x, int_const(I16, 0x7FFF))
        return from_f32(b, float_op(b, op, [to_f32(b, x, dt)]), dt)
    if op in ("neg", "abs"):
        return float_op(b, op, [x])  # sign-bit operations keep a NaN's payload
    return canonical_nan(b, float_op(b, op, [x]), dt)


def lop3(b: ir.IRBuilder, x: ir.Value, y: ir.Value, z: ir.Value, lut: int) -> ir.Value:
    """Sum of minterms: bit i of lut selects (a, b, c) = (i>>2 & 1, i>>1 & 1, i & 1)."""
    ones = int_const(I32, -1)
    result = ir.Constant(I32, 0)
    for i in range(8):
        if not (lut >> i) & 1:
            continue
        term = ones
        for value, bit in ((x, 4), (y, 2), (z, 1)):
            term = b.and_(term, value if i & bit else b.xor(value, ones))
        result = b.or_(result, term)
    return result


def prmt(b: ir.IRBuilder, x: ir.Value, y: ir.Value, selector: ir.Value) -> ir.Value:
    """PTX prmt.b32 default mode (see `tilelang.ir.thread.Prmt`)."""
    wide = b.or_(b.zext(x, I64), b.shl(b.zext(y, I64), int_const(I64, 32)))
    result = ir.Constant(I32, 0)
    for i in range(4):
        nibble = b.and_(b.lshr(selector, int_const(I32, 4 * i)), int_const(I32, 0xF))
        index = b.zext(b.and_(nibble, int_const(I32, 7)), I64)
        byte = b.trunc(b.lshr(wide, b.shl(index, int_const(I64, 3))), I8)
        sign = b.ashr(byte, int_const(I8, 7))
        replicate = b.icmp_unsigned("!=", b.and_(nibble, int_const(I32, 8)), int_const(I32, 0))
        byte = b.select(replicate, sign, byte)
        result = b.or_(result, b.shl(b.zext(byte, I32), int_const(I32, 8 * i)))
    return result


def f8_pair(b: ir.IRBuilder, x: ir.Value, src: DType, half: int) -> ir.Value:
    """PTX cvt.rn.f16x2.{e4m3x2,e5m2x2} (see `tilelang.ir.thread.F8Pair`)."""
    halves = []
    for byte in (2 * half, 2 * half + 1):
        code = b.and_(b.lshr(x, int_const(I32, 8 * byte)), int_const(I32, 0xFF))
        magnitude = b.and_(code, int_const(I32, 0x7F))
        if src == dtypes.f8e5m2:  # the code is the upper byte of the f16
            bits = b.trunc(b.shl(code, int_const(I32, 8)), I16)
            nan = b.icmp_unsigned(">", magnitude, int_const(I32, 0x7C))
        else:
            # The magnitude under f32's exponent field is the value times 2^(7 - 127),
            # subnormals included; the product by 2^120 is exact, and so is the f16.
            placed = b.bitcast(b.shl(magnitude, int_const(I32, 20)), F32)
            sign = b.trunc(b.shl(b.and_(code, int_const(I32, 0x80)), int_const(I32, 8)), I16)
            bits = b.or_(f32_to_f16(b, b.fmul(placed, ir.Constant(F32, 2.0**120))), sign)
            nan = b.icmp_unsigned("==", magnitude, int_const(I32, 0x7F))
        bits = b.select(nan, int_const(I16, CANONICAL_NAN_16), bits)
        halves.append(b.zext(bits, I32))
    return b.or_(halves[0], b.shl(halves[1], int_const(I32, 16)))


def _fma_f64(b: ir.IRBuilder, elem: DType, x: ir.Value, y: ir.Value, z: ir.Value) -> ir.Value:
    """x·y + z (f16 or bf16 values given as f32) in f64, such that rounding the result
    once to `elem` (`from_f64`) is the single rounding of the exact x·y + z.

    bf16: the product is exact in f64 and TwoSum makes the sum round-to-odd.
    f16: the product is exact in f32 and the plain f64 sum suffices. Proof: the exact
    sum s is a multiple of 2^-48; if f64 rounds it, s spans more than 53 bits, so
    |s| ≥ 32, where f16 midpoints (and the overflow threshold) are multiples of 2^-6.
    Rounding twice differs only if RN64(s) is such a point M ≠ s, |s - M| < 2^-36.
    Then z (an f16 ≥ 31 in magnitude, a multiple of 2^-6) differs from M by a multiple
    of 2^-6 and the product p = s - z would be that multiple plus a nonzero part below
    2^-36: more than 22 significant bits, or, if z = M, z would be a midpoint. Neither
    is possible."""
    if elem == dtypes.f16:
        return b.fadd(b.fpext(b.fmul(x, y), F64), b.fpext(z, F64))
    p = b.fmul(b.fpext(x, F64), b.fpext(y, F64))
    return round_to_odd_sum(b, p, b.fpext(z, F64))


def pair(
    b: ir.IRBuilder, op: str, elem: DType, x: ir.Value, y: ir.Value, z: ir.Value | None
) -> ir.Value:
    """f16x2/bf16x2 arithmetic on u32 words, each half rounded once (RNE)."""
    halves = []
    for shift in (0, 16):
        parts = []
        for word in (x, y) + ((z,) if z is not None else ()):
            bits = (
                b.trunc(b.lshr(word, int_const(I32, shift)), I16) if shift else b.trunc(word, I16)
            )
            parts.append(to_f32(b, bits, elem))
        if op == "fma":
            bits16 = from_f64(b, _fma_f64(b, elem, *parts), elem)
        else:
            fop = {"add": b.fadd, "sub": b.fsub, "mul": b.fmul}[op]
            bits16 = from_f32(b, fop(parts[0], parts[1]), elem)
        halves.append(b.zext(bits16, I32))
    return b.or_(halves[0], b.shl(halves[1], int_const(I32, 16)))


# --------------------------------------------------------------------------- half runtime


def f16_bits_to_f32_int(b: ir.IRBuilder, h: ir.Value) -> ir.Value:
    """f16 bits → f32 without hardware half support (exact, subnormals included)."""
    w = b.zext(h, I32)
    sign = b.shl(b.and_(w, int_const(I32, 0x8000)), int_const(I32, 16))
    magnitude = b.and_(w, int_const(I32, 0x7FFF))
    shifted = b.shl(magnitude, int_const(I32, 13))
    # Reinterpreting with the exponent bias of f32 is off by 2^112; the product is exact.
    scaled = b.bitcast(b.fmul(b.bitcast(shifted, F32), ir.Constant(F32, 2.0**112)), I32)
    special = b.icmp_unsigned(">=", magnitude, int_const(I32, 0x7C00))
    special_bits = b.or_(shifted, int_const(I32, 0x7F800000))
    return b.bitcast(b.or_(b.select(special, special_bits, scaled), sign), F32)


def f32_to_f16_bits_int(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """f32 → f16 bits, RNE, without hardware half support (F. Giesen's method)."""
    bits = b.bitcast(x, I32)
    sign = b.and_(bits, int_const(I32, 0x80000000))
    f = b.xor(bits, sign)
    # Overflow / inf / NaN.
    big = b.icmp_unsigned(">=", f, int_const(I32, (127 + 16) << 23))
    nan = b.icmp_unsigned(">", f, int_const(I32, 255 << 23))
    big_bits = b.select(nan, int_const(I32, 0x7E00), int_const(I32, 0x7C00))
    # Subnormal results: let the f32 adder do the rounding.
    magic = ((127 - 15) + (23 - 10) + 1) << 23
    small = b.icmp_unsigned("<", f, int_const(I32, 113 << 23))
    summed = b.fadd(b.bitcast(f, F32), b.bitcast(int_const(I32, magic), F32))
    small_bits = b.sub(b.bitcast(summed, I32), int_const(I32, magic))
    # Normal results: rebias, round to nearest even by hand.
    odd = b.and_(b.lshr(f, int_const(I32, 13)), int_const(I32, 1))
    normal = b.add(b.add(f, int_const(I32, ((15 - 127) << 23) + 0xFFF)), odd)
    normal_bits = b.lshr(normal, int_const(I32, 13))
    out = b.select(big, big_bits, b.select(small, small_bits, normal_bits))
    return b.trunc(b.or_(out, b.lshr(sign, int_const(I32, 16))), I16)


def half_runtime_module() -> ir.Module:
    """`__extendhfsf2` and `__truncsfhf2` (the compiler-rt half conversions) in integer
    code, plus bit-level test entry points `tilelang_f16_to_f32(i16) -> float` and
    `tilelang_f32_to_f16(float) -> i16`."""
    module = ir.Module(name="tilelang_half_runtime")
    functions = (
        ("__extendhfsf2", F32, HALF, lambda b, v: f16_bits_to_f32_int(b, b.bitcast(v, I16))),
        ("__truncsfhf2", HALF, F32, lambda b, v: b.bitcast(f32_to_f16_bits_int(b, v), HALF)),
        ("tilelang_f16_to_f32", F32, I16, f16_bits_to_f32_int),
        ("tilelang_f32_to_f16", I16, F32, f32_to_f16_bits_int),
    )
    for name, ret, arg, body in functions:
        fn = ir.Function(module, ir.FunctionType(ret, [arg]), name=name)
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        b.ret(body(b, fn.args[0]))
    return module
