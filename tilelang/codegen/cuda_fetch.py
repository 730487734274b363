"""The CUDA helpers of atomics whose old values are used (thread IR's `Atomic` with a
`dst`): `tl_atom_<op>_<kind>(p, v[, expected])`, one element at global byte address p,
returning its bits before the update, for `cuda_prelude` to print and `cuda` to call.

Updates whose result nothing reads stay ``red.global.*`` (`cuda_prelude`): no value
travels back. These are ``atom.global.*``, which waits for the old value:

* integers: ``atom.global.{add,max,min}.{u,s}{32,64}`` (signed and unsigned additions
  are the same bits: ``.u``); f32/f64/f16 additions ``atom.global.add.f32`` (flushing
  subnormals, as ``red.global.add.f32`` does), ``.f64``, ``.noftz.f16``; bf16
  ``atom.global.add.noftz.bf16`` on sm_90, a compare-and-swap loop before;
* float max/min: `cuda_prelude`'s compare-and-swap loop around ``fmaxf``/``fminf``,
  returning the bits it saw (an element left unchanged is not written: its value read
  then is its value before this update);
* ``atom.global.exch.b{32,64}`` and ``atom.global.cas.b{32,64}``: bits, whatever the
  dtype (an f32 exchange moves its bits).

Arguments and results are raw bits: u16 (f16/bf16), u32, or `tl_b64` for 8 bytes.
"""

from __future__ import annotations

from tilelang.dtypes import DType

#: (C type of the bits, inline-asm constraint) by element bits.
_BITS = {16: ("u16", "h"), 32: ("u32", "r"), 64: ("u64", "l")}
#: The float view of each float dtype's bits in inline asm: (constraint, to, from).
_FLOAT_VIEW = {
    "f32": ("f", "__uint_as_float", "__float_as_uint"),
    "f64": ("d", "__longlong_as_double", "(u64)__double_as_longlong"),
}
_F32_OF = {"f16": "tl_f16_f32", "bf16": "tl_bf16_f32"}


def kind(dtype: DType, op: str) -> str:
    """The helper suffix of `dtype` for `op`: the float's name, else ``s``/``u`` and the
    bits (additions, exchanges and compare-and-swaps use ``u``: the same bits)."""
    if op in ("xchg", "cas"):
        return f"b{dtype.bits}"
    if dtype.is_float:
        return dtype.name
    signed = dtype.signed and op != "add"
    return f"{'s' if signed else 'u'}{dtype.bits}"


def helper(dtype: DType, op: str) -> str:
    """The helper that updates one element of `dtype` by `op` and returns its old bits."""
    return f"tl_atom_{op}_{kind(dtype, op)}"


def _signature(name: str, bits: int, extra: bool) -> tuple[str, str, str]:
    """(signature, prologue unpacking 64-bit arguments, the return of `old`)."""
    ty, _ = _BITS[bits]
    if bits == 64:
        args = "tl_b64 b" + (", tl_b64 c" if extra else "")
        pre = "  const u64 v = ((u64)b.y << 32) | b.x;\n"
        pre += "  const u64 e = ((u64)c.y << 32) | c.x;\n" if extra else ""
        ret = "  tl_b64 r;\n  r.x = (u32)old;\n  r.y = (u32)(old >> 32);\n  return r;\n"
        return f"tl_b64 {name}(u8* p, {args})", pre, ret
    args = f"{ty} v" + (f", {ty} e" if extra else "")
    return f"{ty} {name}(u8* p, {args})", "", "  return old;\n"


def _one(name: str, bits: int, instr: str, operands: list[str], extra=False, view=None) -> str:
    """A helper of one ``instr old, [p], operands`` (each operand a constraint and its
    expression); `view`, a float dtype whose registers the instruction reads and
    writes (the result comes back as its bits)."""
    ty, reg = _BITS[bits]
    signature, pre, ret = _signature(name, bits, extra)
    regs = ", ".join(f"%{i + 2}" for i in range(len(operands)))
    if view is None:
        declare, out, after = f"  {ty} old;\n", f'"={reg}"(old)', ""
    else:
        constraint, _, back = _FLOAT_VIEW[view]
        declare, out = f"  {view} f;\n", f'"={constraint}"(f)'
        after = f"  const {ty} old = {back}(f);\n"
    return (
        f"TL_INLINE {signature} {{\n{pre}{declare}"
        f'  asm volatile("{instr} %0, [%1], {regs};" : {out} : "l"(p), {", ".join(operands)} '
        f': "memory");\n{after}{ret}}}'
    )


def _cas_loop(name: str, bits: int, pre: str, step: str) -> str:
    """A compare-and-swap loop returning the bits it replaced: `step` computes `want`
    from `seen` (and v); an element that would not change is not written."""
    ty, reg = _BITS[bits]
    signature, unpack, ret = _signature(name, bits, False)
    return (
        f"TL_INLINE {signature} {{\n{unpack}{pre}"
        f"  {ty} seen, old = *(volatile {ty}*)p;\n"
        "  do {\n    seen = old;\n"
        f"{step}"
        "    if (want == seen) break;\n"
        f'    asm volatile("atom.global.cas.b{bits} %0, [%1], %2, %3;" : "={reg}"(old) '
        f': "l"(p), "{reg}"(seen), "{reg}"(want) : "memory");\n'
        "  } while (old != seen);\n"
        f"  old = seen;\n{ret}}}"
    )


def _float_step(op: str, name: str) -> tuple[str, str, tuple[str, ...]]:
    """(prologue, loop step defining `want`, helpers used) of a float max/min."""
    if name == "f64":
        step = (
            f"    const u64 want = (u64)__double_as_longlong(f{op}("
            "__longlong_as_double((i64)seen), __longlong_as_double((i64)v)));\n"
        )
        return "", step, ()
    if name == "f32":
        step = (
            f"    const u32 want = "
            f"__float_as_uint(f{op}f(__uint_as_float(seen), __uint_as_float(v)));\n"
        )
        return "", step, ()
    to = _F32_OF[name]  # the f32 max of two exact f32 images is one of them
    step = (
        f"    const f32 a = {to}(seen), m = f{op}f(a, b);\n"
        "    const u16 want = m != m ? (u16)0x7fff "
        ": __float_as_uint(m) == __float_as_uint(a) ? seen : v;\n"
    )
    return f"  const f32 b = {to}(v);\n", step, (to,)


def fetch_snippets() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every `tl_atom_*` helper: name -> (text, the helpers it uses)."""
    s: dict[str, tuple[str, tuple[str, ...]]] = {}
    for bits in (32, 64):
        v = f'"{_BITS[bits][1]}"(v)'
        s[f"tl_atom_xchg_b{bits}"] = (
            _one(f"tl_atom_xchg_b{bits}", bits, f"atom.global.exch.b{bits}", [v]),
            (),
        )
        cas = [v.replace("(v)", "(e)"), v]  # compare, then the new value
        s[f"tl_atom_cas_b{bits}"] = (
            _one(f"tl_atom_cas_b{bits}", bits, f"atom.global.cas.b{bits}", cas, extra=True),
            (),
        )
        for op in ("add", "max", "min"):
            for sign in ("u", "s") if op != "add" else ("u",):
                name = f"tl_atom_{op}_{sign}{bits}"
                s[name] = (_one(name, bits, f"atom.global.{op}.{sign}{bits}", [v]), ())
    for name, bits, instr, operand, view in (
        ("f32", 32, "atom.global.add.f32", '"f"(__uint_as_float(v))', "f32"),
        ("f64", 64, "atom.global.add.f64", '"d"(__longlong_as_double((i64)v))', "f64"),
        ("f16", 16, "atom.global.add.noftz.f16", '"h"(v)', None),
    ):
        text = _one(f"tl_atom_add_{name}", bits, instr, [operand], view=view)
        s[f"tl_atom_add_{name}"] = (text, ())
    step = "    const u16 want = tl_add_bf16(seen, v);\n"
    s["tl_atom_add_bf16_cas"] = (_cas_loop("tl_atom_add_bf16_cas", 16, "", step), ("tl_add_bf16",))
    native = '  asm volatile("atom.global.add.noftz.bf16 %0, [%1], %2;" : "=h"(old) : "l"(p), '
    s["tl_atom_add_bf16"] = (  # sm_80 has no bf16 atomic addition (PTX: sm_90)
        "TL_INLINE u16 tl_atom_add_bf16(u8* p, u16 v) {\n#if __CUDA_ARCH__ >= 900\n"
        f'  u16 old;\n{native}"h"(v) : "memory");\n  return old;\n#else\n'
        "  return tl_atom_add_bf16_cas(p, v);\n#endif\n}",
        ("tl_atom_add_bf16_cas",),
    )
    for op in ("max", "min"):
        for name, bits in (("f16", 16), ("bf16", 16), ("f32", 32), ("f64", 64)):
            pre, step, deps = _float_step(op, name)
            s[f"tl_atom_{op}_{name}"] = (_cas_loop(f"tl_atom_{op}_{name}", bits, pre, step), deps)
    return s
