"""The text form of thread IR, for dumps and tests (printing only).

thread_kernel matmul(a: tensor<f16>, M: i32) threads(128) grid(div(add(M, 63:i32), 64:i32)) shared(8192) {
  local acc: f32[32]
  let %r0: i32 = add(mul(bid.x, 64:i32), tid)
  acc[0] = 0.0:f32
  ld.global.16 acc@0 <- a[%off] if %p
  mma.m16n8k16.f16 d=acc@0 a=fa@0 b=fb@0 c=acc@0
  for %k = 0:i32 to %K step 32:i32 {
    ...
  }
}
"""

from __future__ import annotations

from tilelang.ir import thread as t
from tilelang.ir import thread_mma as tm

INDENT = "  "


def print_expr(e: t.Expr) -> str:
    if isinstance(e, t.Imm):
        value = repr(float(e.value)) if e.type.is_float else str(int(e.value))
        return f"{value}:{e.type}"
    if isinstance(e, t.Name):
        return f"%{e.name}"
    if isinstance(e, t.ThreadIndex):
        return "tid"
    if isinstance(e, t.BlockIndex):
        return f"bid.{'xyz'[e.axis]}"
    if isinstance(e, t.Read):
        return f"{e.local}[{e.index}]"
    if isinstance(e, t.Unary | t.Binary):
        return f"{e.op}({', '.join(print_expr(c) for c in e.children())})"
    if isinstance(e, t.Select | t.Fma):
        kind = "select" if isinstance(e, t.Select) else "fma"
        return f"{kind}({', '.join(print_expr(c) for c in e.children())})"
    if isinstance(e, t.Cvt | t.Bitcast):
        kind = "cvt" if isinstance(e, t.Cvt) else "bitcast"
        return f"{kind}.{e.type}({print_expr(e.a)})"
    if isinstance(e, t.Lop3):
        args = ", ".join(print_expr(c) for c in e.children())
        return f"lop3({args}, 0x{e.lut:02x})"
    if isinstance(e, t.Prmt):
        return f"prmt({', '.join(print_expr(c) for c in e.children())})"
    if isinstance(e, t.Pair):
        return f"{e.op}.{e.elem}x2({', '.join(print_expr(c) for c in e.children())})"
    if isinstance(e, t.F8Pair):
        return f"cvt.f16x2.{e.src}x2({print_expr(e.a)}, half={e.half})"
    raise TypeError(f"not a thread-IR expression: {e!r}")


def _reg(r: t.Reg) -> str:
    return f"{r.local}@{r.byte}"


def _pred(p: t.Expr | None) -> str:
    return "" if p is None else f" if {print_expr(p)}"


def print_stmt(s: t.Stmt, depth: int, lines: list[str]) -> None:
    pad = INDENT * depth
    if isinstance(s, t.For):
        unroll = f" unroll {s.unroll}" if s.unroll is not None else ""
        lines.append(
            f"{pad}for %{s.var.name} = {print_expr(s.start)} to {print_expr(s.stop)} "
            f"step {print_expr(s.step)}{unroll} {{"
        )
        _body(s.body, depth + 1, lines)
        lines.append(pad + "}")
        return
    if isinstance(s, t.If):
        lines.append(f"{pad}if {print_expr(s.cond)} {{")
        _body(s.then_body, depth + 1, lines)
        if s.else_body:
            lines.append(pad + "} else {")
            _body(s.else_body, depth + 1, lines)
        lines.append(pad + "}")
        return
    lines.append(pad + _simple(s))


def _simple(s: t.Stmt) -> str:
    if isinstance(s, t.Let):
        return f"let %{s.name.name}: {s.name.type} = {print_expr(s.value)}"
    if isinstance(s, t.Uniform):
        return f"let %{s.name.name}: {s.name.type} = uniform {print_expr(s.value)}"
    if isinstance(s, t.SetLocal):
        return f"{s.local}[{s.index}] = {print_expr(s.value)}"
    if isinstance(s, t.Move):
        return f"mov.{s.width} {_reg(s.dst)} <- {_reg(s.src)}"
    if isinstance(s, t.GlobalLoad):
        return f"ld.global.{s.width} {_reg(s.dst)} <- {s.tensor}[{print_expr(s.offset)}]" + _pred(
            s.pred
        )
    if isinstance(s, t.GlobalStore):
        return f"st.global.{s.width} {s.tensor}[{print_expr(s.offset)}] <- {_reg(s.src)}" + _pred(
            s.pred
        )
    if isinstance(s, t.Atomic):
        fetched = "" if s.dst is None else f"{_reg(s.dst)} = "
        compare = "" if s.compare is None else f" if == {_reg(s.compare)}"
        return (
            f"{fetched}atomic.{s.op}.{s.dtype}.{s.width} {s.tensor}[{print_expr(s.offset)}] "
            f"<- {_reg(s.src)}{compare}" + _pred(s.pred)
        )
    if isinstance(s, t.AtomicFetchAdd):
        return (
            f"{_reg(s.dst)} = atomic.fetch_add.acq_rel {s.tensor}[{print_expr(s.offset)}] "
            f"<- {print_expr(s.value)}" + _pred(s.pred)
        )
    if isinstance(s, t.AtomicMerge):
        return (
            f"atomic.merge {s.tensor}[{print_expr(s.offset)}] <- {print_expr(s.value)} "
            f"mask {print_expr(s.mask)}" + _pred(s.pred)
        )
    if isinstance(s, t.SharedLoad):
        return f"ld.shared.{s.width} {_reg(s.dst)} <- [{print_expr(s.address)}]" + _pred(s.pred)
    if isinstance(s, t.SharedStore):
        return f"st.shared.{s.width} [{print_expr(s.address)}] <- {_reg(s.src)}" + _pred(s.pred)
    if isinstance(s, t.CpAsync):
        return (
            f"cp.async.{s.width} [{print_expr(s.address)}] <- {s.tensor}[{print_expr(s.offset)}]"
            + _pred(s.pred)
        )
    if isinstance(s, t.CpAsyncCommit):
        return "cp.async.commit"
    if isinstance(s, t.CpAsyncWait):
        return f"cp.async.wait {s.pending}"
    if isinstance(s, t.Barrier):
        return "barrier"
    if isinstance(s, tm.Mma):
        return f"mma.{s.atom}.{s.operands} d={_reg(s.d)} a={_reg(s.a)} b={_reg(s.b)} c={_reg(s.c)}"
    if isinstance(s, tm.Wgmma):
        major = "mn" if s.trans_b else "k"
        scale = "" if s.accumulate else " zero"
        return (
            f"wgmma.m64n{s.n}k16.{s.operands} d={_reg(s.d)} a={_reg(s.a)} "
            f"b=[{print_expr(s.b_address)}] {major}-major lbo={s.lbo} sbo={s.sbo}{scale}"
        )
    if isinstance(s, tm.WgmmaFence):
        return "wgmma.fence"
    if isinstance(s, tm.WgmmaCommit):
        return "wgmma.commit"
    if isinstance(s, tm.WgmmaWait):
        return f"wgmma.wait {s.pending}"
    if isinstance(s, tm.AsyncProxyFence):
        return "fence.proxy.async"
    if isinstance(s, tm.Ldmatrix):
        trans = ".trans" if s.trans else ""
        return f"ldmatrix.x{s.num}{trans} {_reg(s.dst)} <- [{print_expr(s.address)}]"
    if isinstance(s, t.Shfl):
        return (
            f"let %{s.result.name}: {s.result.type} = shfl.{s.mode}({print_expr(s.value)}, "
            f"{print_expr(s.arg)}, width={s.width})"
        )
    raise TypeError(f"not a thread-IR statement: {s!r}")


def _body(body: tuple[t.Stmt, ...], depth: int, lines: list[str]) -> None:
    for s in body:
        print_stmt(s, depth, lines)


def print_thread_function(fn: t.ThreadFunction) -> str:
    params = ", ".join(
        f"{p.name}: tensor<{p.dtype}>" if p.is_tensor else f"{p.name}: {p.dtype}" for p in fn.params
    )
    grid = ", ".join(print_expr(g) for g in fn.grid)
    lines = [
        f"thread_kernel {fn.name}({params}) threads({fn.threads}) grid({grid}) "
        f"shared({fn.shared_bytes}) {{"
    ]
    if fn.stats:
        lines.append(INDENT + "# " + ", ".join(f"{k}={v}" for k, v in fn.stats))
    for cond, message in fn.checks:
        lines.append(f"{INDENT}check {print_expr(cond)}  # {message}")
    for loc in fn.locals:
        lines.append(f"{INDENT}local {loc.name}: {loc.dtype}[{loc.count}]")
    _body(fn.body, 1, lines)
    lines.append("}")
    return "\n".join(lines) + "\n"
