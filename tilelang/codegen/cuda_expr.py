"""Thread-IR expressions as C++ expressions: literals, operators, conversions.

Helpers of the CUDA emitter (`tilelang.codegen.cuda`). Every expression becomes a C++
expression of the C type of its dtype (`cuda_prelude.C_TYPES`); the semantics are those
of `tilelang.ir.thread` and match the LLVM backend (`tilelang.codegen.llvm_numeric`):

* Integer arithmetic wraps: it is done in `u32`/`u64` (unsigned arithmetic has no
  undefined overflow) and converted back; 8- and 16-bit results are cast back to their
  type, so C's integer promotions never leak. Division never traps: `x / 0` is all ones,
  `x % 0` is `x`, `MIN / -1` is `MIN` (the same choices as the LLVM backend). A shift
  amount is read as an unsigned value of its own dtype; shifts by at least the width
  give 0 or the sign fill.
* f32/f64 arithmetic is IEEE with one rounding per operation: `__fadd_rn` and friends
  (never contracted into an fma, whatever the compiler flags), `__fdiv_rn`,
  `__fsqrt_rn`; `min`/`max` are `fminf`/`fmaxf` (PTX `min.f32`: a NaN operand is
  ignored). Transcendentals are CUDA's math library (`expf`, ...: within a few ulps).
* f16 add/sub/mul are PTX `add.rn.f16`...; bf16 ones are `fma.rn.bf16` (see
  `cuda_prelude`). Other f16/bf16 operations compute in f32 and round once back, which
  is exact for div/rem/sqrt/min/max (f32 has more than 2·11 + 2 significand bits).
* `Cvt` follows the casting policy: RNE, ±inf on f16/bf16/f32/f64 overflow, the canonical
  positive NaN, float→int `cvt.rni.sat` (NaN → 0), integer saturation; conversions with
  no single sm_80 instruction round to odd first (f64→bf16, 32/64-bit int→bf16). A float
  `Cvt` whose source is never NaN or whose result only payload-blind operations read
  (`tilelang.codegen.nan_facts`) is the bare conversion, without the NaN compare and
  select: its result is the same, or a NaN whose payload nothing observes.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from tilelang import dtypes
from tilelang.codegen.cuda_prelude import c_type, is_half
from tilelang.codegen.nan_facts import NanFacts, needs_canonical_nan, operand_blindness
from tilelang.dtypes import DType
from tilelang.ir import thread as t
from tilelang.ir.ops import BY_THREAD_OP, expand


class CudaEmitError(ValueError):
    """A thread-IR construct the CUDA emitter cannot express (e.g. a float shift)."""


_U1 = dtypes.u1
_F32 = dtypes.f32
_F64 = dtypes.f64

_ARITH = {"add": "+", "sub": "-", "mul": "*"}
_BITS = {"and": "&", "or": "|", "xor": "^"}
_CMP = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def _signed(dt: DType) -> bool:
    return dt.is_int and dt.signed and dt != _U1


def _wide(dt: DType) -> str:
    """The unsigned C type integer arithmetic on `dt` is done in."""
    return "u64" if dt.bits == 64 else "u32"


def _unsigned_of(dt: DType) -> str:
    return {8: "u8", 16: "u16", 32: "u32", 64: "u64"}[dt.bits]


# --------------------------------------------------------------------------- literals


def int_literal(value: int, dt: DType) -> str:
    """`value` (wrapped to dt's width) as a C++ expression of dt's C type."""
    if dt == _U1:
        return "true" if value & 1 else "false"
    value &= (1 << dt.bits) - 1
    if dt.signed and value >= 1 << (dt.bits - 1):
        value -= 1 << dt.bits
    if dt.bits <= 16:
        return f"({c_type(dt)}){value}" if value >= 0 else f"({c_type(dt)})({value})"
    if dt == dtypes.u32:
        return f"{value}u"
    if dt == dtypes.u64:
        return f"{value}ull"
    suffix = "LL" if dt.bits == 64 else ""
    if value == dt.min:  # the literal -MIN does not fit: write MIN as -MAX - 1
        return f"(-{dt.max}{suffix} - 1)"
    return f"{value}{suffix}" if value >= 0 else f"({value}{suffix})"


def float_literal(value: float, dt: DType) -> str:
    """The exact value of an f16/bf16/f32/f64 immediate (encoded by the casting policy)."""
    code = int(np.asarray(dt.encode(value)).reshape(-1)[0])
    if is_half(dt):
        return f"({c_type(dt)})0x{code:04x}"
    if dt == _F32:
        x = struct.unpack("<f", struct.pack("<I", code))[0]
        if not math.isfinite(x):
            return f"__uint_as_float(0x{code:08x}u)"
        text = str(np.float32(x)) + "f"  # the shortest decimal that reads back as x
    else:
        x = struct.unpack("<d", struct.pack("<Q", code))[0]
        if not math.isfinite(x):
            return f"__longlong_as_double(0x{code:016x}LL)"
        text = repr(x)
    return f"({text})" if text.startswith("-") else text


def immediate(e: t.Imm) -> str:
    dt = e.type
    if dt.is_float:
        return float_literal(float(e.value), dt)
    value = e.value
    if isinstance(value, float):  # a float for an integer type: saturate, as `encode` does
        code = int(np.asarray(dt.encode(value)).reshape(-1)[0])
        return int_literal(code, dt)
    return int_literal(int(value), dt)


def imm_int(e: t.Expr) -> int | None:
    """The integer value of an integer immediate (read in its dtype, signed or not)."""
    if not isinstance(e, t.Imm) or not e.type.is_int or isinstance(e.value, float):
        return None
    dt = e.type
    value = int(e.value) & ((1 << dt.bits) - 1)
    if _signed(dt) and value >= 1 << (dt.bits - 1):
        value -= 1 << dt.bits
    return value


# --------------------------------------------------------------------------- expressions


class ExprEmitter:
    """Prints expressions; records the prelude helpers they use in `needed`.

    `name_of(name)` gives the C identifier of a scalar `Name`, `local_of(local)` that of
    a local array; `thread_index` and `block_index[axis]` name the index variables.
    `nan`: the function's `NanFacts`, which let float conversions leave out the NaN
    canonicalization (None: every one canonicalizes).
    """

    def __init__(self, name_of, local_of, nan: NanFacts | None = None) -> None:
        self.name_of = name_of
        self.local_of = local_of
        self.nan = nan
        self.needed: set[str] = set()
        self.uses_tid = False
        self.uses_bid: set[int] = set()

    def need(self, helper: str) -> str:
        self.needed.add(helper)
        return helper

    def call(self, helper: str, *args: str) -> str:
        self.need(helper)
        return f"{helper}({', '.join(args)})"

    # ------------------------------------------------------------------ dispatch

    def expr(self, e: t.Expr, blind: bool = False) -> str:
        """`e` as C++; `blind`: only payload-blind operations read its value
        (`nan_facts.operand_blindness`), so a float `Cvt` there may skip the canonical NaN."""
        if isinstance(e, t.Unary | t.Binary | t.Select | t.Fma | t.Cvt):
            return self.operator(e, blind)
        if isinstance(e, t.Imm):
            return immediate(e)
        if isinstance(e, t.Name):
            return self.name_of(e.name)
        if isinstance(e, t.ThreadIndex):
            self.uses_tid = True
            return "tl_tid"
        if isinstance(e, t.BlockIndex):
            self.uses_bid.add(e.axis)
            return f"tl_bid_{'xyz'[e.axis]}"
        if isinstance(e, t.Read):
            return f"{self.local_of(e.local)}[{e.index}]"
        if isinstance(e, t.Bitcast):
            return self.bitcast(self.expr(e.a), e.a.dtype, e.type)
        if isinstance(e, t.Lop3):
            self.need("tl_lop3")
            args = ", ".join(self.expr(c) for c in e.children())
            return f"tl_lop3<0x{e.lut & 0xFF:02x}>({args})"
        if isinstance(e, t.Prmt):
            return self.call("tl_prmt", *(self.expr(c) for c in e.children()))
        if isinstance(e, t.Pair):
            if e.op not in t.PAIR_OPS or not is_half(e.elem):
                raise CudaEmitError(f"unknown pair operation {e.op}.{e.elem}x2")
            return self.call(f"tl_{e.op}_{e.elem}x2", *(self.expr(c) for c in e.children()))
        if isinstance(e, t.F8Pair):
            source = {"f8e4m3": "e4m3", "f8e5m2": "e5m2"}[e.src.name]
            return self.call(f"tl_cvt_f16x2_{source}x2_{'lh'[e.half]}", self.expr(e.a))
        raise CudaEmitError(f"not a thread-IR expression: {e!r}")

    # ------------------------------------------------------------------ operators

    def operator(self, e: t.Unary | t.Binary | t.Select | t.Fma | t.Cvt, blind: bool) -> str:
        """An operator whose operands are emitted knowing how blindly it reads them."""
        kids = e.children()
        args = [self.expr(c, b) for c, b in zip(kids, operand_blindness(e, blind), strict=True)]
        if isinstance(e, t.Unary):
            return self.unary(e.op, args[0], e.a.dtype)
        if isinstance(e, t.Binary):
            if e.op in t.COMPARE_OPS:
                return self.compare(e.op, *args, e.a.dtype)
            return self.binary(e.op, e.a, e.b, *args)
        if isinstance(e, t.Select):
            return f"({args[0]} ? {args[1]} : {args[2]})"
        if isinstance(e, t.Fma):
            if e.dtype in (_F32, _F64):
                return self.float_op("fma", args, e.dtype)
            # f16/bf16: in f32 (fma.rn.f16 would round once at f16: another result)
            wide = [self.to_f32(a, e.dtype) for a in args]
            return self.from_f32(self.float_op("fma", wide, _F32), e.dtype)
        canonical = needs_canonical_nan(e, blind, self.nan)
        return self.convert(args[0], e.a.dtype, e.type, canonical)

    def compare(self, op: str, a: str, b: str, dt: DType) -> str:
        if is_half(dt):
            a, b = self.to_f32(a, dt), self.to_f32(b, dt)
        return f"({a} {_CMP[op]} {b})"

    def binary(self, op: str, ea: t.Expr, eb: t.Expr, a: str, b: str) -> str:
        dt = ea.dtype
        if dt.is_int:
            if op in ("shl", "shr"):
                return self.shift(op, a, b, dt, eb)
            if dt == _U1:
                return self.bool_binary(op, a, b)
            return self.int_binary(op, a, b, dt, eb)
        if dt in (_F32, _F64):
            return self.float_op(op, [a, b], dt)
        if op in _ARITH:  # one PTX instruction, rounded once in f16/bf16
            return self.call(f"tl_{op}_{dt}", a, b)
        return self.from_f32(self.float_op(op, [self.to_f32(a, dt), self.to_f32(b, dt)], _F32), dt)

    def bool_binary(self, op: str, a: str, b: str) -> str:
        """u1 arithmetic modulo 2 (every u1 expression is 0 or 1, as bool or int)."""
        if op in ("and", "mul", "min"):
            return f"({a} & {b})"
        if op in ("or", "max"):
            return f"({a} | {b})"
        if op in ("xor", "add", "sub"):
            return f"({a} ^ {b})"
        if op == "div":  # x / 0 is all ones (1); x / 1 = x
            return f"(!{b} | {a})"
        if op == "rem":  # x % 0 = x; x % 1 = 0
            return f"({a} & !{b})"
        raise CudaEmitError(f"unknown binary operator {op}")

    def int_binary(self, op: str, a: str, b: str, dt: DType, eb: t.Expr) -> str:
        ct, wide = c_type(dt), _wide(dt)
        native = ct in ("u32", "u64")  # no promotion, no undefined overflow
        if op in _ARITH:
            if native:
                return f"({a} {_ARITH[op]} {b})"
            return f"({ct})(({wide}){a} {_ARITH[op]} ({wide}){b})"
        if op in _BITS:
            return f"({a} {_BITS[op]} {b})" if dt.bits >= 32 else f"({ct})({a} {_BITS[op]} {b})"
        if op in ("min", "max"):
            return f"tl_{op}({a}, {b})"
        if op in ("div", "rem"):
            divisor = imm_int(eb)
            if divisor is not None and divisor != 0 and not (_signed(dt) and divisor == -1):
                sym = "/" if op == "div" else "%"
                return f"({a} {sym} {b})" if dt.bits >= 32 else f"({ct})({a} {sym} {b})"
            base = ("i" if _signed(dt) else "u") + ("64" if dt.bits == 64 else "32")
            helper = self.call(f"tl_{op}_{base}", a, b)
            return helper if base == ct else f"({ct}){helper}"
        return self.word_op(op, [a, b], dt)

    def shift(self, op: str, a: str, b: str, dt: DType, eb: t.Expr) -> str:
        bdt = eb.dtype
        if not bdt.is_int:
            raise CudaEmitError(f"a shift amount must be an integer, got {bdt}")
        width = dt.bits
        if dt == _U1:  # only a shift by 0 keeps the bit
            return f"(({b}) == 0 & {a})"
        ct, wide = c_type(dt), _wide(dt)
        amount = imm_int(eb)
        if amount is not None:
            amount &= (1 << bdt.bits) - 1  # read unsigned in its own dtype
            if op == "shr" and _signed(dt):
                return f"({ct})({a} >> {min(amount, width - 1)})"
            if amount >= width:
                return int_literal(0, dt)
            if op == "shl":
                return f"({ct})(({wide}){a} << {amount})"
            return f"({ct})({a} >> {amount})"
        k = b if bdt == _U1 or (bdt.bits == 64 and not bdt.signed) else f"({_unsigned_of(bdt)}){b}"
        k = f"(u64){k}"
        if width == 64:
            if op == "shl":
                return f"({ct}){self.call('tl_shl64', f'(u64){a}', k)}"
            if _signed(dt):
                return self.call("tl_ashr64", a, k)
            return self.call("tl_lshr64", a, k)
        if op == "shl":
            self.need("tl_shl32")
            return f"({ct})tl_shl32<{width}>((u32){a}, {k})"
        if _signed(dt):
            self.need("tl_ashr32")
            return f"({ct})tl_ashr32<{width}>((i32){a}, {k})"
        self.need("tl_lshr32")
        return f"({ct})tl_lshr32<{width}>((u32){a}, {k})"

    def unary(self, op: str, a: str, dt: DType) -> str:
        if dt.is_int:
            ct, wide = c_type(dt), _wide(dt)
            if op in ("floor", "ceil", "trunc") or (op == "abs" and not _signed(dt)):
                return a
            if dt == _U1 and op in ("neg", "not"):
                return a if op == "neg" else f"(!{a})"
            if op == "neg":
                return f"({ct})(({wide})0 - ({wide}){a})"
            if op == "not":
                return f"({ct})~{a}"
            if op == "abs":
                return f"({ct})({a} < 0 ? ({wide})0 - ({wide}){a} : ({wide}){a})"
            return self.word_op(op, [a], dt)
        if is_half(dt):
            if op == "neg":
                return f"({c_type(dt)})({a} ^ 0x8000)"
            if op == "abs":
                return f"({c_type(dt)})({a} & 0x7fff)"
            return self.from_f32(self.float_op(op, [self.to_f32(a, dt)], _F32), dt)
        return self.float_op(op, [a], dt)

    def word_op(self, op: str, args: list[str], dt: DType) -> str:
        """A row of `tilelang.ir.ops.ELEMENTWISE` on 32/64-bit integers (a row of `widths`:
        `__popc`, `__clzll`, ...), on the operands' bits as unsigned, the result in `dt`
        (a count, `Result.I32`: i32)."""
        row = BY_THREAD_OP.get(op)
        if row is None or row.widths is None or row.cuda is None:
            raise CudaEmitError(f"{op} is not defined on {dt}")
        if dt.bits not in (32, 64):
            raise CudaEmitError(f"{op} takes 32- or 64-bit integers, not {dt}")
        spelling, wide = row.cuda[0 if dt.bits == 32 else 1], _wide(dt)
        result = c_type(row.result_dtype(dt))
        return f"({result}){spelling}({', '.join(f'({wide}){a}' for a in args)})"

    def float_op(self, op: str, args: list[str], dt: DType) -> str:
        """An operator of `tilelang.ir.ops.ELEMENTWISE` (by its thread-IR name) on f32 or
        f64 operands, as its row spells it for CUDA, or through its row's expansion."""
        row = BY_THREAD_OP.get(op)
        if row is not None and row.expand is not None:
            return expand(
                row,
                args,
                lambda name, *xs: self.float_op(name, list(xs), dt),
                lambda value: float_literal(value, dt),
            )
        if row is None or row.cuda is None:
            raise CudaEmitError(f"{op} is not defined on {dt}")
        spelling = row.cuda[0 if dt == _F32 else 1]
        if not (spelling[0].isalpha() or spelling[0] == "_"):  # a prefix operator
            return f"({spelling}{args[0]})"
        if spelling.startswith("tl_"):  # a helper of the prelude
            return self.call(spelling, *args)
        return f"{spelling}({', '.join(args)})"

    # ------------------------------------------------------------------ conversions

    def to_f32(self, a: str, dt: DType) -> str:
        """An f16/bf16/f32 value as f32 (exact; NaN payloads kept)."""
        if dt == dtypes.f16:
            return self.call("tl_f16_f32", a)
        if dt == dtypes.bf16:
            return self.call("tl_bf16_f32", a)
        return a

    def from_f32(self, x: str, dt: DType) -> str:
        """An f32 value rounded (RNE) to f16/bf16, NaN canonical."""
        if dt == dtypes.f16:
            return self.call("tl_f32_f16", x)
        if dt == dtypes.bf16:
            return self.call("tl_f32_bf16", x)
        return x

    def convert(self, a: str, src: DType, dst: DType, canonical: bool = True) -> str:
        """`Cvt`; `canonical` False: a float result that is a NaN may be any NaN."""
        if src.is_float and dst.is_float:
            return self.float_to_float(a, src, dst, canonical)
        if src.is_float:
            return self.float_to_int(a, src, dst)
        if dst.is_float:
            return self.int_to_float(a, src, dst)
        return self.int_to_int(a, src, dst)

    def float_to_float(self, a: str, src: DType, dst: DType, canonical: bool = True) -> str:
        if src == _F64:
            if dst == _F64:
                return self.call("tl_canon_f64", a) if canonical else a
            if dst == _F32:
                x = f"__double2float_rn({a})"
                return self.call("tl_canon_f32", x) if canonical else x
            if dst == dtypes.f16 and not canonical:
                return self.call("tl_f64_f16_raw", a)
            return self.call(f"tl_f64_{dst}", a)
        x = self.to_f32(a, src)
        if dst == _F64:
            return self.call("tl_canon_f64", f"(f64){x}") if canonical else f"(f64){x}"
        if dst == _F32:
            return self.call("tl_canon_f32", x) if canonical else x
        if not canonical:  # cvt.rn gives a NaN for a NaN
            return self.call(f"tl_f32_{dst}_raw", x)
        return self.from_f32(x, dst)

    def float_to_int(self, a: str, src: DType, dst: DType) -> str:
        """RNE, saturate, NaN → 0; to u1: nonzero and not NaN."""
        x, fs, zero = (a, "f64", "0.0") if src == _F64 else (self.to_f32(a, src), "f32", "0.0f")
        if dst == _U1:
            return f"({x} < {zero} | {x} > {zero})"  # false for 0 and NaN
        ct = c_type(dst)
        if dst.bits >= 32:
            return self.call(f"tl_{fs}_{'s' if dst.signed else 'u'}{dst.bits}", x)
        if dst.signed:
            wide = self.call(f"tl_{fs}_s32", x)
            return f"({ct})tl_min(tl_max({wide}, {dst.min}), {dst.max})"
        wide = self.call(f"tl_{fs}_u32", x)
        return f"({ct})tl_min({wide}, {dst.max}u)"

    def int_to_float(self, a: str, src: DType, dst: DType) -> str:
        if src == _U1:
            one, zero = float_literal(1.0, dst), float_literal(0.0, dst)
            return f"({a} ? {one} : {zero})"
        if dst in (_F32, _F64):
            return f"({c_type(dst)}){a}"  # int -> float conversions round to nearest even
        sign = "s" if src.signed else "u"
        if dst == dtypes.f16 and src.bits == 8:
            # Exact without I2F: the f16 1024 + c has the byte c as its low mantissa bits
            # (c = x, or x + 128 for i8: flipping the sign bit), then one exact subtraction.
            if src.signed:
                code = f"(f16)(0x6400u | (u8)({a} ^ 0x80))"
                return self.call("tl_sub_f16", code, "(f16)0x6480")
            return self.call("tl_sub_f16", f"(f16)(0x6400u | {a})", "(f16)0x6400")
        if dst == dtypes.f16:
            if src.bits <= 16:
                return self.call(f"tl_{sign}16_f16", f"({sign.replace('s', 'i')}16){a}")
            return self.call(f"tl_{sign}{src.bits}_f16", a)
        if src.bits <= 16:  # exact in f32
            return self.call("tl_f32_bf16_raw", f"(f32){a}")
        return self.call(f"tl_{sign}{src.bits}_bf16", a)

    def int_to_int(self, a: str, src: DType, dst: DType) -> str:
        """Saturating; to u1, nonzero gives 1."""
        if dst == _U1:
            return a if src == _U1 else f"({a} != 0)"
        ct = c_type(dst)
        if src == _U1:
            return f"({ct}){a}"
        if src.min >= dst.min and src.max <= dst.max:
            return a if src == dst else f"({ct}){a}"
        x = a
        if src.min < dst.min:
            x = f"tl_max({x}, {int_literal(dst.min, src)})"
        if src.max > dst.max:
            x = f"tl_min({x}, {int_literal(dst.max, src)})"
        return f"({ct}){x}"

    def bitcast(self, a: str, src: DType, dst: DType) -> str:
        cs, cd = c_type(src), c_type(dst)
        if cs == cd:
            return a
        if (src.is_int and dst.is_int) or is_half(src) or is_half(dst):
            return f"({cd}){a}"  # same width: the bits are kept
        if dst == _F32:
            return f"__int_as_float({a})" if src.signed else f"__uint_as_float({a})"
        if src == _F32:
            return f"__float_as_int({a})" if dst.signed else f"__float_as_uint({a})"
        if dst == _F64:
            return f"__longlong_as_double((i64){a})"
        if src == _F64:
            return f"({cd})__double_as_longlong({a})"
        raise CudaEmitError(f"cannot bitcast {src} to {dst}")
