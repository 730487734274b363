"""Host expressions as C: the grid, the launch checks and the size rules of a kernel.

A C launcher must compute what the Python launch path computes before a launch, with
the same semantics, so this module owns translating both expression languages to C:

* thread-IR uniform expressions (`ThreadFunction.grid`, `ThreadFunction.checks`),
  whose semantics `tilelang.runtime.host_expr` defines: integers wrap to their dtype,
  division truncates (``x / 0`` is all ones, ``x % 0`` is x), shift amounts are read as
  unsigned and clamp, comparisons give 0 or 1, an integer `Cvt` saturates;
* size expressions of tensor shapes (`tilelang.ir.shape_expr`): Python integers, with
  floor division and modulo.

Every value is held in an ``int64_t`` and wrapped to its dtype after each operation by
the helpers in `C_HELPERS` (written once into each launcher), so the C code and
`eval_host_expr` agree bit for bit. Floats and 64-bit unsigned values are not
supported on the host side (no grid or check needs them); they are an `AotError`
naming the expression, raised when the launcher is generated.
"""

from __future__ import annotations

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.ir import thread as t
from tilelang.ir.shape_expr import BinOp, Lit, ShapeExpr, Sym


class AotError(ValueError):
    """Something the ahead-of-time compiler cannot build, said before anything is written."""


class AotWarning(UserWarning):
    """Something an ahead-of-time build holds that will not run everywhere it could be
    loaded (an image too big for the shared memory of some GPUs it would be used on)."""


#: The helpers the generated expressions call (static: one copy per launcher file).
C_HELPERS = r"""
static inline int64_t tl_wrap(int64_t v, int bits, int is_signed) {
  uint64_t mask, u;
  if (bits >= 64) return v;
  mask = ((uint64_t)1 << bits) - 1u;
  u = (uint64_t)v & mask;
  if (is_signed && ((u >> (bits - 1)) & 1u)) u |= ~mask;
  return (int64_t)u;
}
static inline int64_t tl_add(int64_t a, int64_t b, int bits, int s) { return tl_wrap((int64_t)((uint64_t)a + (uint64_t)b), bits, s); }
static inline int64_t tl_sub(int64_t a, int64_t b, int bits, int s) { return tl_wrap((int64_t)((uint64_t)a - (uint64_t)b), bits, s); }
static inline int64_t tl_mul(int64_t a, int64_t b, int bits, int s) { return tl_wrap((int64_t)((uint64_t)a * (uint64_t)b), bits, s); }
static inline int64_t tl_div(int64_t a, int64_t b, int bits, int s) {
  if (b == 0) return tl_wrap(-1, bits, s);
  if (b == -1) return tl_wrap((int64_t)(0u - (uint64_t)a), bits, s);
  return tl_wrap(a / b, bits, s);
}
static inline int64_t tl_rem(int64_t a, int64_t b, int bits, int s) {
  if (b == 0) return a;
  if (b == -1) return 0;
  return tl_wrap(a % b, bits, s);
}
static inline int64_t tl_shl(int64_t a, int64_t b, int bits, int s) {
  if (b < 0 || b >= bits) return 0;
  return tl_wrap((int64_t)((uint64_t)a << b), bits, s);
}
static inline int64_t tl_shr(int64_t a, int64_t b, int bits, int s) {
  (void)s;
  if (b < 0 || b >= bits) return a < 0 ? -1 : 0;
  return a < 0 ? ~(~a >> b) : a >> b;
}
static inline int64_t tl_sat(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : (v > hi ? hi : v); }
static inline int64_t tl_floordiv(int64_t a, int64_t b) {
  int64_t q;
  if (b == 0) return 0;
  q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}
static inline int64_t tl_floormod(int64_t a, int64_t b) { return b == 0 ? 0 : a - tl_floordiv(a, b) * b; }
"""

_BINARY = {"add", "sub", "mul", "div", "rem", "shl", "shr"}
_BITWISE = {"and": "&", "or": "|", "xor": "^"}
_COMPARE = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def _int_type(dtype: DType, where: str) -> tuple[int, int]:
    if not dtype.is_int or dtype.bits > 64 or (dtype.bits == 64 and not dtype.signed):
        raise AotError(f"{where}: a host expression of dtype {dtype} cannot be emitted as C")
    return dtype.bits, int(dtype.signed)


def thread_expr_c(e: t.Expr, names: dict[str, str], where: str) -> str:
    """`e` (a uniform thread-IR expression of scalar parameters) as a C ``int64_t``
    expression; `names` maps each parameter to the C variable holding its value."""
    if isinstance(e, t.Imm):
        _int_type(e.type, where)
        return int_literal(int(e.value))
    if isinstance(e, t.Name):
        if e.name not in names:
            raise AotError(f"{where}: %{e.name} is not a scalar argument of the kernel")
        bits, signed = _int_type(e.type, where)
        return f"tl_wrap((int64_t){names[e.name]}, {bits}, {signed})"
    if isinstance(e, t.Select):
        cond = thread_expr_c(e.cond, names, where)
        a, b = thread_expr_c(e.a, names, where), thread_expr_c(e.b, names, where)
        return f"(({cond}) ? ({a}) : ({b}))"
    if isinstance(e, t.Cvt):
        inner = thread_expr_c(e.a, names, where)
        to = e.type
        if to == dtypes.u1:
            return f"(int64_t)(({inner}) != 0)"
        _int_type(to, where)
        _int_type(e.a.dtype, where)
        return f"tl_sat({inner}, {int_literal(to.min)}, {int_literal(to.max)})"
    if isinstance(e, t.Binary):
        bits, signed = _int_type(e.a.dtype, where)
        a, b = thread_expr_c(e.a, names, where), thread_expr_c(e.b, names, where)
        if e.op in _BINARY:
            # A shift amount keeps its own dtype; a negative one clamps like a huge one.
            return f"tl_{e.op}({a}, {b}, {bits}, {signed})"
        if e.op in _BITWISE:
            return f"tl_wrap(({a}) {_BITWISE[e.op]} ({b}), {bits}, {signed})"
        if e.op in _COMPARE:
            return f"(int64_t)(({a}) {_COMPARE[e.op]} ({b}))"
        if e.op in ("min", "max"):
            pick = "<" if e.op == "min" else ">"
            return f"((({a}) {pick} ({b})) ? ({a}) : ({b}))"
        raise AotError(f"{where}: the operator {e.op} cannot be emitted as C")
    if isinstance(e, t.Unary):
        bits, signed = _int_type(e.a.dtype, where)
        a = thread_expr_c(e.a, names, where)
        table = {
            "neg": f"tl_sub(0, {a}, {bits}, {signed})",
            "not": f"tl_wrap(~({a}), {bits}, {signed})",
            "abs": f"tl_wrap(({a}) < 0 ? (int64_t)(0u - (uint64_t)({a})) : ({a}), {bits}, {signed})",
            "floor": a,
            "ceil": a,
            "trunc": a,
        }
        if e.op not in table:
            raise AotError(f"{where}: the operator {e.op} cannot be emitted as C")
        return table[e.op]
    raise AotError(f"{where}: a {type(e).__name__} cannot be evaluated on the host")


def int_literal(value: int) -> str:
    """An ``int64_t`` literal (the most negative value has no literal of its own)."""
    if value == -(2**63):
        return "INT64_MIN"
    return f"INT64_C({value})"


_SHAPE_OPS = {"+": "+", "-": "-", "*": "*"}


def shape_expr_c(e: ShapeExpr, names: dict[str, str]) -> str:
    """A size expression as a C ``int64_t`` expression (Python's floor division and
    modulo); `names` maps each size symbol to its C variable."""
    if isinstance(e, Lit):
        return int_literal(e.value)
    if isinstance(e, Sym):
        return f"(int64_t){names[e.name]}"
    if isinstance(e, BinOp):
        a, b = shape_expr_c(e.lhs, names), shape_expr_c(e.rhs, names)
        if e.op == "//":
            return f"tl_floordiv({a}, {b})"
        if e.op == "%":
            return f"tl_floormod({a}, {b})"
        return f"({a} {_SHAPE_OPS[e.op]} {b})"
    raise AotError(f"cannot emit the size expression {e!r} as C")


def c_string(text: str) -> str:
    """`text` as a C string literal (UTF-8 bytes, everything but plain ASCII escaped)."""
    out = []
    for byte in text.encode():
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F and char != "?":  # '?' escaped: no trigraphs
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'
