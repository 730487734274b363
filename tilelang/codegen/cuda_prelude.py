"""The C++ helper library the CUDA emitter prints above a kernel (header-free).

NVRTC compiles the emitted source without any toolkit header: CUDA's builtins
(`threadIdx`, `__syncthreads`, `__fadd_rn`, `expf`, `__cvta_generic_to_shared`, ...) are
predeclared by NVRTC itself, and everything else is defined here: fixed-width integer
typedefs, f16/bf16 as `unsigned short` bit patterns, 8- and 16-byte raw words, and
`static __device__ __forceinline__` helpers, most of them one inline-PTX instruction.

Only the helpers a kernel uses are printed (with the helpers they use), always in the
order of `SNIPPETS`, so the same thread IR gives the same text.

Why inline PTX: f16/bf16 arithmetic (`add.rn.f16`, `fma.rn.bf16x2`, ...) and the
conversions with an explicit rounding mode and saturation (`cvt.rn.f16.f32`,
`cvt.rni.sat.s32.f32`) have no header-free C++ spelling, and an explicit `.rn` also
keeps ptxas from contracting a multiply and an add into one fma. bf16 add/sub/mul are
`fma.rn.bf16{x2}` with the constants 1.0 / -1.0 / -0.0: `add.bf16` needs sm_90, fma works
from sm_80, and `a·1 + b`, `b·(-1) + a` and `a·b + (-0)` round exactly once, with the
right zero signs.
"""

from __future__ import annotations

from dataclasses import dataclass

from tilelang import dtypes
from tilelang.dtypes import DType

# The C type of each register dtype in emitted code (u1 is a `bool`).
C_TYPES: dict[str, str] = {
    "u1": "bool",
    "u8": "u8",
    "u16": "u16",
    "u32": "u32",
    "u64": "u64",
    "i8": "i8",
    "i16": "i16",
    "i32": "i32",
    "i64": "i64",
    "f16": "f16",
    "bf16": "bf16",
    "f32": "f32",
    "f64": "f64",
}

# The C type that moves `width` raw bytes. All may alias any other type (as `u8` does):
# the bytes of one buffer are read and written at several widths and types.
RAW_TYPES: dict[int, str] = {1: "u8", 2: "tl_w16", 4: "tl_w32", 8: "tl_b64", 16: "tl_b128"}


def c_type(dt: DType) -> str:
    return C_TYPES[dt.name]


@dataclass(frozen=True)
class Snippet:
    text: str
    deps: tuple[str, ...] = ()


def _f(name: str, signature: str, body: str, deps: tuple[str, ...] = ()) -> tuple[str, Snippet]:
    """A one-function snippet: `TL_INLINE <signature> { <body> }`."""
    return name, Snippet(f"TL_INLINE {signature} {{ {body} }}", deps)


def _asm1(name: str, ret: str, rc: str, instr: str, args: list[tuple[str, str]]) -> tuple:
    """A helper returning the single output of one non-volatile PTX instruction (pure,
    so the compiler may combine or drop it like any expression)."""
    params = ", ".join(f"{ty} {n}" for n, (ty, _) in zip("abc", args, strict=False))
    operands = ", ".join(f"%{i + 1}" for i in range(len(args)))
    inputs = ", ".join(f'"{c}"({n})' for n, (_, c) in zip("abc", args, strict=False))
    body = f'{ret} r; asm("{instr} %0, {operands};" : "={rc}"(r) : {inputs}); return r;'
    return _f(name, f"{ret} {name}({params})", body)


_H, _R, _L, _F, _D = ("f16", "h"), ("u32", "r"), ("u64", "l"), ("f32", "f"), ("f64", "d")

BASE = """\
typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef short i16;
typedef unsigned int u32;
typedef int i32;
typedef unsigned long long u64;
typedef long long i64;
typedef float f32;
typedef double f64;
typedef unsigned short f16;  /* IEEE binary16, as its bits */
typedef unsigned short bf16; /* bfloat16, as its bits */
typedef u16 __attribute__((may_alias)) tl_w16;
typedef u32 __attribute__((may_alias)) tl_w32;
struct __attribute__((may_alias, aligned(8))) tl_b64 { u32 x, y; };
struct __attribute__((may_alias, aligned(16))) tl_b128 { u32 x, y, z, w; };
#define TL_INLINE static __device__ __forceinline__

/* `width` raw bytes of a local at a constant byte offset: the local stays in registers. */
template <class W, class T> TL_INLINE W& tl_reg(T* local, int byte) {
  return *reinterpret_cast<W*>(reinterpret_cast<u8*>(local) + byte);
}
template <class W> TL_INLINE W tl_load(const u8* p) { return *reinterpret_cast<const W*>(p); }
template <class W> TL_INLINE void tl_store(u8* p, W v) { *reinterpret_cast<W*>(p) = v; }
template <class T> TL_INLINE T tl_min(T a, T b) { return a < b ? a : b; }
template <class T> TL_INLINE T tl_max(T a, T b) { return a < b ? b : a; }
"""


def _snippets() -> dict[str, Snippet]:
    s: dict[str, Snippet] = {}

    def add(item: tuple[str, Snippet]) -> None:
        s[item[0]] = item[1]

    # ---------------------------------------------------------------- float bits
    add(
        _f(
            "tl_canon_f32",
            "f32 tl_canon_f32(f32 x)",
            "return x != x ? __uint_as_float(0x7fffffffu) : x;",
        )
    )
    add(
        _f(
            "tl_canon_f64",
            "f64 tl_canon_f64(f64 x)",
            "return x != x ? __longlong_as_double(0x7fffffffffffffffLL) : x;",
        )
    )
    # `fast_exp2` (tilelang.ir.ops): MUFU.EX2 flushes; f64 has no such instruction.
    add(_asm1("tl_ex2_ftz", "f32", "f", "ex2.approx.ftz.f32", [_F]))
    add(
        _f(
            "tl_exp2_ftz_f64",
            "f64 tl_exp2_ftz_f64(f64 x)",
            "f64 r = exp2(x); return r < 0x1p-126 ? 0.0 : r;",
        )
    )
    # f16/bf16 -> f32 are exact; the NaN payload is canonicalized by the caller where needed.
    add(_asm1("tl_f16_f32", "f32", "f", "cvt.f32.f16", [_H]))
    add(_f("tl_bf16_f32", "f32 tl_bf16_f32(bf16 x)", "return __uint_as_float((u32)x << 16);"))
    # f32/f64 -> f16/bf16: round to nearest even, overflow to inf, NaN to 0x7fff.
    add(_asm1("tl_f32_f16_raw", "f16", "h", "cvt.rn.f16.f32", [_F]))
    add(
        _f(
            "tl_f32_f16",
            "f16 tl_f32_f16(f32 x)",
            "return x != x ? (f16)0x7fff : tl_f32_f16_raw(x);",
            ("tl_f32_f16_raw",),
        )
    )
    add(_asm1("tl_f32_bf16_raw", "bf16", "h", "cvt.rn.bf16.f32", [_F]))
    add(
        _f(
            "tl_f32_bf16",
            "bf16 tl_f32_bf16(f32 x)",
            "return x != x ? (bf16)0x7fff : tl_f32_bf16_raw(x);",
            ("tl_f32_bf16_raw",),
        )
    )
    add(_asm1("tl_f64_f16_raw", "f16", "h", "cvt.rn.f16.f64", [_D]))
    add(
        _f(
            "tl_f64_f16",
            "f16 tl_f64_f16(f64 x)",
            "return x != x ? (f16)0x7fff : tl_f64_f16_raw(x);",
            ("tl_f64_f16_raw",),
        )
    )
    # f64 -> f32 rounded to odd (truncate, then set the last bit when inexact): a later
    # round to nearest even to <= 22 significand bits is then the single rounding of x.
    add(
        _f(
            "tl_f64_f32_odd",
            "f32 tl_f64_f32_odd(f64 x)",
            "f32 r = __double2float_rz(x); "
            "return (f64)r == x ? r : __uint_as_float(__float_as_uint(r) | 1u);",
        )
    )
    add(
        _f(
            "tl_f64_bf16",
            "bf16 tl_f64_bf16(f64 x)",
            "return x != x ? (bf16)0x7fff : tl_f32_bf16_raw(tl_f64_f32_odd(x));",
            ("tl_f64_f32_odd", "tl_f32_bf16_raw"),
        )
    )

    # ---------------------------------------------------------------- int -> f16 / bf16
    for src, (cty, cons) in {
        "s16": ("i16", "h"), "u16": ("u16", "h"), "s32": ("i32", "r"),
        "u32": ("u32", "r"), "s64": ("i64", "l"), "u64": ("u64", "l"),
    }.items():  # fmt: skip
        add(_asm1(f"tl_{src}_f16", "f16", "h", f"cvt.rn.f16.{src}", [(cty, cons)]))
    # 32/64-bit integers -> bf16 (no sm_80 instruction): to f32 rounded to odd, then RNE.
    for src, (cty, rz) in {
        "s32": ("i32", "__int2float_rz"), "u32": ("u32", "__uint2float_rz"),
        "s64": ("i64", "__ll2float_rz"), "u64": ("u64", "__ull2float_rz"),
    }.items():  # fmt: skip
        name = f"tl_{src}_bf16"
        body = (
            f"f32 r = {rz}(x); /* |r| <= |x|: converting back is exact */ "
            f"if (({cty})r != x) r = __uint_as_float(__float_as_uint(r) | 1u); "
            "return tl_f32_bf16_raw(r);"
        )
        add(_f(name, f"bf16 {name}({cty} x)", body, ("tl_f32_bf16_raw",)))

    # ---------------------------------------------------------------- float -> int
    # cvt.rni.sat: round to nearest even, saturate to the destination range, NaN -> 0.
    for src, scons in (("f32", _F), ("f64", _D)):
        for dst, (cty, dcons) in {
            "s32": ("i32", "r"), "u32": ("u32", "r"), "s64": ("i64", "l"), "u64": ("u64", "l"),
        }.items():  # fmt: skip
            add(_asm1(f"tl_{src}_{dst}", cty, dcons, f"cvt.rni.sat.{dst}.{src}", [scons]))

    # ---------------------------------------------------------------- integer division
    # Never traps, no undefined behaviour: x / 0 = all ones, x % 0 = x (what PTX's
    # div.u32 gives); the signed MIN / -1 wraps to MIN and MIN % -1 = 0.
    for bits in (32, 64):
        i, u = f"i{bits}", f"u{bits}"
        add(
            _f(
                f"tl_div_{i}",
                f"{i} tl_div_{i}({i} a, {i} b)",
                f"return b == 0 ? ({i})-1 : b == -1 ? ({i})(({u})0 - ({u})a) : a / b;",
            )
        )
        add(
            _f(
                f"tl_rem_{i}",
                f"{i} tl_rem_{i}({i} a, {i} b)",
                "return b == 0 ? a : b == -1 ? 0 : a % b;",
            )
        )
        add(_f(f"tl_div_{u}", f"{u} tl_div_{u}({u} a, {u} b)", f"return b == 0 ? ~({u})0 : a / b;"))
        add(_f(f"tl_rem_{u}", f"{u} tl_rem_{u}({u} a, {u} b)", "return b == 0 ? a : a % b;"))

    # ---------------------------------------------------------------- shifts
    # W: the value's width. Amounts >= W give 0, or the sign fill for a signed shr.
    s["tl_shl32"] = Snippet(
        "template <int W> TL_INLINE u32 tl_shl32(u32 a, u64 k) { return k >= W ? 0u : a << k; }"
    )
    s["tl_lshr32"] = Snippet(
        "template <int W> TL_INLINE u32 tl_lshr32(u32 a, u64 k) { return k >= W ? 0u : a >> k; }"
    )
    s["tl_ashr32"] = Snippet(
        "template <int W> TL_INLINE i32 tl_ashr32(i32 a, u64 k) "
        "{ return a >> (k >= W ? W - 1 : (int)k); }"
    )
    add(_f("tl_shl64", "u64 tl_shl64(u64 a, u64 k)", "return k >= 64 ? 0ull : a << k;"))
    add(_f("tl_lshr64", "u64 tl_lshr64(u64 a, u64 k)", "return k >= 64 ? 0ull : a >> k;"))
    add(_f("tl_ashr64", "i64 tl_ashr64(i64 a, u64 k)", "return a >> (k >= 64 ? 63 : (int)k);"))

    # ---------------------------------------------------------------- f16 / bf16 scalars
    one, neg_one, neg_zero = "(bf16)0x3f80", "(bf16)0xbf80", "(bf16)0x8000"
    for op in ("add", "sub", "mul"):
        add(_asm1(f"tl_{op}_f16", "f16", "h", f"{op}.rn.f16", [_H, _H]))
    fma_bf16 = _asm1("tl_fma_bf16", "bf16", "h", "fma.rn.bf16", [_H, _H, _H])
    add(fma_bf16)
    add(
        _f(
            "tl_add_bf16",
            "bf16 tl_add_bf16(bf16 a, bf16 b)",
            f"return tl_fma_bf16(a, {one}, b);",
            ("tl_fma_bf16",),
        )
    )
    add(
        _f(
            "tl_sub_bf16",
            "bf16 tl_sub_bf16(bf16 a, bf16 b)",
            f"return tl_fma_bf16(b, {neg_one}, a);",
            ("tl_fma_bf16",),
        )
    )
    add(
        _f(
            "tl_mul_bf16",
            "bf16 tl_mul_bf16(bf16 a, bf16 b)",
            f"return tl_fma_bf16(a, b, {neg_zero});",
            ("tl_fma_bf16",),
        )
    )

    # ---------------------------------------------------------------- f16x2 / bf16x2
    for op in ("add", "sub", "mul"):
        add(_asm1(f"tl_{op}_f16x2", "u32", "r", f"{op}.rn.f16x2", [_R, _R]))
    add(_asm1("tl_fma_f16x2", "u32", "r", "fma.rn.f16x2", [_R, _R, _R]))
    add(_asm1("tl_fma_bf16x2", "u32", "r", "fma.rn.bf16x2", [_R, _R, _R]))
    for op, body in (
        ("add", "tl_fma_bf16x2(a, 0x3f803f80u, b)"),
        ("sub", "tl_fma_bf16x2(b, 0xbf80bf80u, a)"),
        ("mul", "tl_fma_bf16x2(a, b, 0x80008000u)"),
    ):
        add(
            _f(
                f"tl_{op}_bf16x2",
                f"u32 tl_{op}_bf16x2(u32 a, u32 b)",
                f"return {body};",
                ("tl_fma_bf16x2",),
            )
        )

    # ---------------------------------------------------------------- bit tricks
    s["tl_lop3"] = Snippet(
        "template <int LUT> TL_INLINE u32 tl_lop3(u32 a, u32 b, u32 c) {\n"
        '  u32 r; asm("lop3.b32 %0, %1, %2, %3, %4;" : "=r"(r) : "r"(a), "r"(b), "r"(c), "n"(LUT));'
        "\n  return r;\n}"
    )
    add(_asm1("tl_prmt", "u32", "r", "prmt.b32", [_R, _R, _R]))

    # ---------------------------------------------------------------- f8x2 -> f16x2 (sm_89+)
    for source in ("e4m3", "e5m2"):
        for half, which in ((0, "l"), (1, "h")):
            name = f"tl_cvt_f16x2_{source}x2_{which}"
            body = (
                'u32 r; asm("{.reg .b16 lo, hi; mov.b32 {lo, hi}, %1;'
                f' cvt.rn.f16x2.{source}x2 %0, {("lo", "hi")[half]};}}" : "=r"(r) : "r"(a));'
                " return r;"
            )
            add(_f(name, f"u32 {name}(u32 a)", body))

    # ---------------------------------------------------------------- memory and warps
    add(
        _f(
            "tl_shared_address",
            "u32 tl_shared_address(const void* p)",
            "return (u32)__cvta_generic_to_shared(p);",
        )
    )
    # Collectives and asynchronous copies are volatile (never moved, merged or dropped);
    # those that touch memory also clobber it, so C++ accesses stay on their side.
    for num in (1, 2, 4):
        for trans in (False, True):
            suffix = ".trans" if trans else ""
            name = f"tl_ldmatrix_x{num}{'_trans' if trans else ''}"
            regs = ", ".join(f"%{i}" for i in range(num))
            outs = ", ".join(f'"=r"(d[{i}])' for i in range(num))
            s[name] = Snippet(
                f"TL_INLINE void {name}(u32* d, u32 address) {{\n"
                f'  asm volatile("ldmatrix.sync.aligned.m8n8.x{num}{suffix}.shared.b16 '
                f'{{{regs}}}, [%{num}];"\n'
                f'               : {outs} : "r"(address) : "memory");\n}}'
            )
    for width, level in ((4, "ca"), (8, "ca"), (16, "cg")):
        s[f"tl_cp_async_{width}"] = Snippet(
            f"TL_INLINE void tl_cp_async_{width}(u32 dst, const u8* src) {{\n"
            f'  asm volatile("cp.async.{level}.shared.global [%0], [%1], {width};" '
            ':: "r"(dst), "l"(src) : "memory");\n}'
        )
        # src-size 0 writes `width` zero bytes and reads nothing.
        s[f"tl_cp_async_{width}_zfill"] = Snippet(
            f"TL_INLINE void tl_cp_async_{width}_zfill(u32 dst, const u8* src, bool pred) {{\n"
            f'  asm volatile("cp.async.{level}.shared.global [%0], [%1], {width}, %2;" '
            f':: "r"(dst), "l"(src), "r"(pred ? {width}u : 0u) : "memory");\n}}'
        )
    s["tl_cp_async_commit"] = Snippet(
        'TL_INLINE void tl_cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }'
    )
    s["tl_cp_async_wait"] = Snippet(
        "template <int N> TL_INLINE void tl_cp_async_wait() "
        '{ asm volatile("cp.async.wait_group %0;" :: "n"(N) : "memory"); }'
    )
    for mode in ("idx", "bfly", "up", "down"):
        name = f"tl_shfl_{mode}"
        s[name] = Snippet(
            f"TL_INLINE u32 {name}(u32 v, u32 b, u32 c) {{\n"
            f'  u32 r; asm volatile("shfl.sync.{mode}.b32 %0, %1, %2, %3, -1;" '
            ': "=r"(r) : "r"(v), "r"(b), "r"(c));\n  return r;\n}'
        )
    # A shuffle argument as an int clamped to [-64, 64] (every value outside gives the
    # lane's own value in every mode), then this lane's source within its segment.
    s["tl_shfl_source"] = Snippet(
        "TL_INLINE i32 tl_shfl_source(i32 mode, i32 rel, i32 arg, i32 width) {\n"
        "  i32 src = mode == 0 ? arg : mode == 1 ? (rel ^ arg) : mode == 2 ? rel - arg : rel + arg;\n"
        "  return (u32)src < (u32)width ? src : rel;\n}"
    )
    s.update(_atomic_snippets())
    for (m, n, k), (acc, acons), ops in (
        ((16, 8, 16), ("f32", "f"), ("f16", "bf16")),
        ((16, 8, 32), ("i32", "r"), ("s8", "u8")),
    ):
        for op in ops:
            shape = f"m{m}n{n}k{k}"
            ptx_acc = "f32" if acc == "f32" else "s32"
            na, nb = (4, 2)
            name = f"tl_mma_{shape}_{op}"
            d = ", ".join(f"%{i}" for i in range(4))
            a = ", ".join(f"%{i}" for i in range(4, 4 + na))
            b = ", ".join(f"%{i}" for i in range(4 + na, 4 + na + nb))
            c = ", ".join(f"%{i}" for i in range(4 + na + nb, 8 + na + nb))
            outs = ", ".join(f'"={acons}"(d[{i}])' for i in range(4))
            ins = ", ".join(
                [f'"r"(a[{i}])' for i in range(na)]
                + [f'"r"(b[{i}])' for i in range(nb)]
                + [f'"{acons}"(c[{i}])' for i in range(4)]
            )
            s[name] = Snippet(
                f"TL_INLINE void {name}({acc}* d, const u32* a, const u32* b, const {acc}* c) {{\n"
                f'  asm volatile("mma.sync.aligned.{shape}.row.col.{ptx_acc}.{op}.{op}.{ptx_acc} '
                f'{{{d}}}, {{{a}}}, {{{b}}}, {{{c}}};"\n'
                f"               : {outs}\n               : {ins});\n}}"
            )
    return s


def _red(instr: str, *operands: str) -> str:
    """One fire-and-forget global reduction ``instr [p], operands`` (volatile, clobbers
    memory); each operand is a constraint and its expression, e.g. ``"r"(v)``."""
    regs = ", ".join(f"%{i + 1}" for i in range(len(operands)))
    if len(operands) > 1:
        regs = "{" + regs + "}"
    return f'asm volatile("{instr} [%0], {regs};" :: "l"(p), {", ".join(operands)} : "memory");'


def _cas_loop(bits: int, add: str) -> str:
    """A compare-and-swap loop that adds v to the `bits`-bit value at p with `add`."""
    ty, reg = ("u16", "h") if bits == 16 else ("u32", "r")
    return (
        f"  {ty} seen, old = *(volatile {ty}*)p;\n"
        "  do {\n    seen = old;\n"
        f'    asm volatile("atom.global.cas.b{bits} %0, [%1], %2, %3;" : "={reg}"(old) '
        f': "l"(p), "{reg}"(seen), "{reg}"({add}(seen, v)) : "memory");\n'
        "  } while (old != seen);\n"
    )


def _atomic_snippets() -> dict[str, Snippet]:
    """`tl_red_add_<type>[_v2|_v4](p, bits)`: atomic additions of one element, a pair or a
    vector at global byte address p (naturally aligned), the addends as their raw bits;
    `tl_merge_bits`: the atomic merge of sub-byte codes; `tl_fetch_add_acq_rel`: thread IR's
    `AtomicFetchAdd`.

    sm_80 lacks the bf16 reductions and every vector reduction (PTX: sm_90): there, bf16
    adds through a compare-and-swap loop on the element's own 16 bits (or the pair's 32;
    `atom.cas.b16` needs sm_70) and vectors split into scalars, chosen by __CUDA_ARCH__.
    `red.global.add.f32` flushes subnormal inputs and results to zero (PTX ISA); the f16
    and bf16 reductions (`.noftz`) keep them."""
    s: dict[str, Snippet] = {}
    wide = "  const u64 v = ((u64)b.y << 32) | b.x;\n"
    for name, arg, body in (
        ("u32", "u32 v", _red("red.global.add.u32", '"r"(v)')),
        ("u64", "tl_b64 b", wide + "  " + _red("red.global.add.u64", '"l"(v)')),
        ("f32", "u32 v", _red("red.global.add.f32", '"f"(__uint_as_float(v))')),
        (
            "f64",
            "tl_b64 b",
            wide + "  " + _red("red.global.add.f64", '"d"(__longlong_as_double((i64)v))'),
        ),
        ("f16", "u16 v", _red("red.global.add.noftz.f16", '"h"(v)')),
        ("f16x2", "u32 v", _red("red.global.add.noftz.f16x2", '"r"(v)')),
    ):
        s[f"tl_red_add_{name}"] = Snippet(
            f"TL_INLINE void tl_red_add_{name}(u8* p, {arg}) {{\n  {body.strip()}\n}}"
        )
    for name, arg, bits in (("bf16", "u16 v", 16), ("bf16x2", "u32 v", 32)):
        reduction = _red(f"red.global.add.noftz.{name}", '"h"(v)' if bits == 16 else '"r"(v)')
        s[f"tl_red_add_{name}"] = Snippet(
            f"TL_INLINE void tl_red_add_{name}(u8* p, {arg}) {{\n#if __CUDA_ARCH__ >= 900\n"
            f"  {reduction}\n#else\n{_cas_loop(bits, f'tl_add_{name}')}#endif\n}}",
            (f"tl_add_{name}",),
        )
    # Vectors of 8 and 16 bytes: one reduction on sm_90, scalar ones before.
    for name, ptx, convert in (
        ("f32", "red.global.add.{v}.f32", "__uint_as_float"),
        ("f16x2", "red.global.add.noftz.{v}.f16x2", ""),
        ("bf16x2", "red.global.add.noftz.{v}.bf16x2", ""),
    ):
        constraint = '"f"' if convert else '"r"'
        scalar = f"tl_red_add_{name}"
        for count, raw, fields in ((2, "tl_b64", "xy"), (4, "tl_b128", "xyzw")):
            helper = f"{scalar}_v{count}"
            operands = [f"{constraint}({convert}(v.{f}))" for f in fields]
            split = " ".join(f"{scalar}(p + {4 * i}, v.{f});" for i, f in enumerate(fields))
            s[helper] = Snippet(
                f"TL_INLINE void {helper}(u8* p, {raw} v) {{\n#if __CUDA_ARCH__ >= 900\n"
                f"  {_red(ptx.format(v=f'v{count}'), *operands)}\n#else\n"
                f"  {split}\n#endif\n}}",
                (scalar,),
            )
    # Sub-byte codes: clear the selected bits with an atomic and, then set the new ones
    # with an atomic or, on the aligned 32-bit word(s) the two bytes at p lie in. Threads
    # merging disjoint bits never lose each other's (and/or on disjoint bits commute). A
    # word's bytes outside the mask are and-ed with ones and or-ed with zeros: unchanged
    # (they may lie past the tensor's end, inside its allocation's 4-byte granule).
    # The fences make the relaxed atomic acquire-release at device scope (thread.py's
    # AtomicFetchAdd), the pattern of a grid barrier: with bar.sync around it, the
    # block's earlier stores are released and the counted blocks' stores acquired.
    s["tl_fetch_add_acq_rel"] = Snippet(
        "TL_INLINE u32 tl_fetch_add_acq_rel(u8* p, u32 value) {\n"
        "  u32 old;\n"
        '  asm volatile("fence.acq_rel.gpu;\\n\\tatom.relaxed.gpu.global.add.u32 %0, [%1], %2;'
        '\\n\\tfence.acq_rel.gpu;"\n'
        '               : "=r"(old) : "l"(p), "r"(value) : "memory");\n'
        "  return old;\n}"
    )
    s["tl_merge_bits"] = Snippet(
        "TL_INLINE void tl_merge_bits(u8* p, u32 value, u32 mask) {\n"
        "  const u64 a = (u64)p;\n"
        "  u8* w = (u8*)(a & ~(u64)3);\n"
        "  const u32 s = (u32)(a & 3) * 8;\n"
        "  const u64 m = (u64)(mask & 0xffffu) << s, v = (u64)(value & mask & 0xffffu) << s;\n"
        "  for (int i = 0; i < 2; ++i, w += 4) {\n"
        "    const u32 mi = (u32)(m >> (32 * i)), vi = (u32)(v >> (32 * i));\n"
        "    if (mi == 0) continue;\n"
        '    asm volatile("red.global.and.b32 [%0], %1;" :: "l"(w), "r"(~mi) : "memory");\n'
        '    asm volatile("red.global.or.b32 [%0], %1;" :: "l"(w), "r"(vi) : "memory");\n'
        "  }\n}"
    )
    s.update(_minmax_snippets())
    from tilelang.codegen.cuda_fetch import fetch_snippets  # after Snippet is defined

    s.update({name: Snippet(*item) for name, item in fetch_snippets().items()})
    s.update(_wgmma_snippets())
    return s


def _minmax_snippets() -> dict[str, Snippet]:
    """`tl_red_<max|min>_<s|u><32|64>(p, bits)`: one integer max/min reduction (PTX
    ``red.global.max.s32``...; 64-bit ones since sm_32); `tl_atomic_<max|min>_<float>(p,
    bits)`: a float's, which PTX lacks at scalar widths (``red.max`` has no .f32; the
    .f16/.bf16 vector forms need sm_90): a compare-and-swap loop on the element's own
    bits around the elementwise max/min (`fmaxf`: NaN ignored, -0 < +0), which stops
    without writing once the element would not change (an amax's common case). The
    integer trick (a signed max of the bits for non-negative values, an unsigned min for
    negative ones) would keep a NaN already in the tensor, which `tl.maximum` replaces."""
    s: dict[str, Snippet] = {}
    wide = "  const u64 v = ((u64)b.y << 32) | b.x;\n"
    for op in ("max", "min"):
        for kind, arg, constraint in (
            ("s32", "u32 v", '"r"(v)'),
            ("u32", "u32 v", '"r"(v)'),
            ("s64", "tl_b64 b", '"l"(v)'),
            ("u64", "tl_b64 b", '"l"(v)'),
        ):
            prefix = wide if arg.startswith("tl_b64") else ""
            body = prefix + "  " + _red(f"red.global.{op}.{kind}", constraint)
            s[f"tl_red_{op}_{kind}"] = Snippet(
                f"TL_INLINE void tl_red_{op}_{kind}(u8* p, {arg}) {{\n  {body.strip()}\n}}"
            )
        f32_of = {"f16": "tl_f16_f32", "bf16": "tl_bf16_f32"}
        for name in ("f16", "bf16", "f32", "f64"):
            if name == "f64":
                ty, reg, bits, arg, pre, deps = "u64", "l", 64, "tl_b64 b", wide, ()
                step = (
                    f"    const {ty} want = (u64)__double_as_longlong(f{op}("
                    "__longlong_as_double((i64)seen), __longlong_as_double((i64)v)));\n"
                )
            elif name == "f32":
                ty, reg, bits, arg, pre, deps = "u32", "r", 32, "u32 v", "", ()
                step = (
                    f"    const {ty} want = "
                    f"__float_as_uint(f{op}f(__uint_as_float(seen), __uint_as_float(v)));\n"
                )
            else:  # the f32 max of two exact f32 images is one of them: no rounding back
                ty, reg, bits, arg = "u16", "h", 16, "u16 v"
                to = f32_of[name]
                pre, deps = f"  const f32 b = {to}(v);\n", (to,)
                step = (
                    f"    const f32 a = {to}(seen), m = f{op}f(a, b);\n"
                    "    const u16 want = m != m ? (u16)0x7fff "
                    ": __float_as_uint(m) == __float_as_uint(a) ? seen : v;\n"
                )
            helper = f"tl_atomic_{op}_{name}"
            s[helper] = Snippet(
                f"TL_INLINE void {helper}(u8* p, {arg}) {{\n{pre}"
                f"  {ty} seen, old = *(volatile {ty}*)p;\n"
                "  do {\n    seen = old;\n"
                f"{step}"
                "    if (want == seen) return;\n"
                f'    asm volatile("atom.global.cas.b{bits} %0, [%1], %2, %3;" : "={reg}"(old) '
                f': "l"(p), "{reg}"(seen), "{reg}"(want) : "memory");\n'
                "  } while (old != seen);\n}",
                deps,
            )
    return s


def _wgmma_snippets() -> dict[str, Snippet]:
    """The warpgroup mma (sm_90a): its matrix descriptor, fences, and one helper per N
    and operand type: D (N/2 f32, read and written) += A (4 words) · B (through the
    descriptor), the transposition of B and whether D is added given as immediates."""
    s: dict[str, Snippet] = {}
    # Start address, LBO and SBO in 16-byte units; 1 << 62: the 128-byte swizzle.
    s["tl_wgmma_desc"] = Snippet(
        "TL_INLINE u64 tl_wgmma_desc(u32 address, u32 lbo, u32 sbo) {\n"
        "  return (u64)((address & 0x3FFFFu) >> 4) | ((u64)(lbo >> 4) << 16)\n"
        "       | ((u64)(sbo >> 4) << 32) | (1ull << 62);\n}"
    )
    for name, instr in (
        ("tl_wgmma_fence", "wgmma.fence.sync.aligned;"),
        ("tl_wgmma_commit", "wgmma.commit_group.sync.aligned;"),
        ("tl_fence_proxy_async", "fence.proxy.async.shared::cta;"),
    ):
        s[name] = Snippet(f'TL_INLINE void {name}() {{ asm volatile("{instr}" ::: "memory"); }}')
    s["tl_wgmma_wait"] = Snippet(
        "template <int N> TL_INLINE void tl_wgmma_wait() "
        '{ asm volatile("wgmma.wait_group.sync.aligned %0;" :: "n"(N) : "memory"); }'
    )
    for op in ("f16", "bf16"):
        for n in range(8, 257, 8):
            regs = n // 2
            d = ", ".join(f"%{i}" for i in range(regs))
            a = ", ".join(f"%{regs + i}" for i in range(4))
            desc, acc, trans = regs + 4, regs + 5, regs + 6
            outs = ", ".join(f'"+f"(d[{i}])' for i in range(regs))
            ins = ", ".join(f'"r"(a[{i}])' for i in range(4))
            name = f"tl_wgmma_m64n{n}k16_{op}"
            s[name] = Snippet(
                f"template <int TRANS_B, int ACCUMULATE>\n"
                f"TL_INLINE void {name}(f32* d, const u32* a, u64 desc) {{\n"
                f'  asm volatile("{{ .reg .pred p; setp.ne.b32 p, %{acc}, 0; '
                f"wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{op}.{op} "
                f'{{{d}}}, {{{a}}}, %{desc}, p, 1, 1, %{trans}; }}"\n'
                f"               : {outs}\n"
                f'               : {ins}, "l"(desc), "n"(ACCUMULATE), "n"(TRANS_B)\n'
                f'               : "memory");\n}}'
            )
    return s


SNIPPETS: dict[str, Snippet] = _snippets()


def render(needed: set[str]) -> str:
    """The prelude text: `BASE` and the needed snippets with their dependencies, in the
    order of `SNIPPETS` (deterministic)."""
    closure: set[str] = set()
    stack = list(needed)
    while stack:
        name = stack.pop()
        if name in closure:
            continue
        if name not in SNIPPETS:
            raise KeyError(f"no CUDA helper named {name}")
        closure.add(name)
        stack.extend(SNIPPETS[name].deps)
    parts = [BASE]
    parts.extend(SNIPPETS[name].text for name in SNIPPETS if name in closure)
    return "\n".join(parts) + "\n"


def is_half(dt: DType) -> bool:
    return dt in (dtypes.f16, dtypes.bf16)
