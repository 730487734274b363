"""The CUDA emitter: thread IR as one header-free CUDA C++ kernel with inline PTX.

`emit_cuda(fn)` returns the source text (deterministic: the same thread IR gives the
same text); `tilelang.runtime.nvrtc.compile_cuda` compiles it to PTX and cubin. The
numeric semantics of expressions are in `tilelang.codegen.cuda_expr`, the helper
library (typedefs, inline-PTX wrappers) in `tilelang.codegen.cuda_prelude`.

Kernel ABI (what a launcher passes)
-----------------------------------
One function ``extern "C" __global__ void <symbol>(...)`` where `symbol` is
`kernel_symbol(fn)` (the thread function's name when that is a plain C identifier).
Its parameters are `fn.params`, in order, one each:

* a tensor: ``const u8* __restrict__`` (``u8*`` when the kernel stores to it) — the
  device address of the tensor's bytes, 16-byte aligned (the lowering's vector accesses
  assume the buffer starts on a 16-byte boundary). Tensors must not overlap
  (``__restrict__``; read-only ones are read through the non-coherent cache);
* a scalar of dtype u8/u16/u32/u64/i8/i16/i32/i64/f32/f64: by value in that C type
  (sizes of tensor shapes are i32 scalars); f16/bf16: by value as its 16-bit code
  (``unsigned short``); u1: one byte, 0 or 1 (``unsigned char``).

`kernel_params(fn)` lists them with their C types and sizes. A launch uses
``blockDim = (fn.threads, 1, 1)``, ``gridDim`` = `fn.grid` evaluated on the host from
the scalar arguments (missing dimensions are 1), and ``fn.shared_bytes`` bytes of
*dynamic* shared memory (above 48 KiB the launcher must first raise
``CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES``).

How thread IR maps to C++
-------------------------
* Scalars (`Name`) are ``const`` C++ variables in the scope their definition is in;
  locals are zero-initialized ``alignas(16)`` arrays of their dtype, indexed only by
  constants, so they live in registers; raw accesses (`Reg`) go through
  ``tl_reg<W>(local, byte)``, a reference to W (u8, tl_w16, tl_w32, tl_b64, tl_b128:
  raw types that may alias any other) at that byte.
* Global memory: ``tl_load<W>(g_x + offset)`` / ``tl_store``, under ``if (pred)``
  (128-bit loads are ``ld.global.nc.v4`` on read-only tensors). `Atomic` is one
  ``red.global.add`` per element, f16/bf16 pair (``.f16x2``) or, on sm_90, vector of
  up to 16 bytes (``red.global.add.v4.f32``); an integer max/min one ``red.global.max``
  (``.min``) ``.s32``/``.u32``/``.s64``/``.u64`` per element, a float one a
  compare-and-swap loop around ``fmaxf``/``fminf`` (no PTX float max reduction below
  sm_90's vectors). An `Atomic` with a `dst` (its old values read) is one
  ``atom.global.*`` per element instead (`cuda_fetch`); `AtomicMerge` an atomic ``and`` then
  ``or`` on the 32-bit word(s) holding the bytes (``cuda_prelude.tl_merge_bits``);
  `AtomicFetchAdd` an ``atom.relaxed.gpu.global.add.u32`` between two
  ``fence.acq_rel.gpu``. Shared memory: the
  dynamic ``tl_smem`` array, by byte offset (with `Wgmma`: the first 1024-byte boundary
  of the dynamic array, whose slack the lowering's ``shared_bytes`` includes).
* `Mma`, `Ldmatrix`, `Shfl`, `CpAsync*` are inline PTX (``asm volatile``), `Barrier` is
  ``__syncthreads()`` (``bar.sync 0``).
* `For` becomes a counted loop whose trip count is computed once, as Python's `range`
  counts (upward for a positive step, downward for a negative one; no overflow of the
  loop variable near the ends of its range), or a plain ``for`` when the step is a
  positive constant and the bounds make overflow impossible; `unroll` n adds
  ``#pragma unroll n``, and a loop waiting for asynchronous copies in its body (software-
  pipelined, already scheduled S-1 iterations deep) gets ``#pragma unroll 1``: unrolled,
  it would hold twice the registers `plan_registers` plans for it.

Decisions where `tilelang.ir.thread` is silent (the same as the LLVM backend's)
-------------------------------------------------------------------------------
* Integer ``x / 0`` is all ones, ``x % 0`` is x, ``MIN / -1`` is MIN (no trap, no UB).
* Locals start as zero bytes (the LLVM backend leaves them unspecified; the lowering
  never reads a register before writing it, except for bits it then masks off).
* `Shfl` with an immediate argument in [0, width) is one native ``shfl.sync`` of its
  mode; any other argument computes the source lane exactly as thread.py says (a source
  outside the segment gives the lane's own value) and uses ``shfl.sync.idx``.
* NaN bits: conversions produce the canonical NaN; f16/bf16 arithmetic produces what
  the GPU's f16 units produce (the canonical NaN 0x7fff); f32/f64 NaN payloads are
  unspecified. A float conversion whose source is never NaN, or whose result only
  payload-blind arithmetic reads, is the bare conversion (`tilelang.codegen.nan_facts`).
  And where nothing but an `Mma`'s A or B operand reads
  a local (`mma_operand_locals`): an f32 → f16/bf16 `Cvt` into it is the bare
  ``cvt.rn``, a packed F2FP for two values where the canonical form costs a compare,
  a select and a single conversion each. Only NaN payloads differ, and an mma's product
  with a NaN is NaN whatever its payload (attention's P, converted for P·V).
* Float → int `Cvt` is ``cvt.rni.sat`` (NaN → 0); float `min`/`max` are PTX
  ``min``/``max`` (a NaN operand is ignored).
* f32 `Atomic` flushes subnormal inputs and results to zero: PTX's
  ``red.global.add.f32`` does (f16, bf16 and f64 keep them). bf16 additions on sm_80,
  which has no bf16 reduction, are a compare-and-swap loop on the element (or pair).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tilelang import dtypes
from tilelang.codegen import cuda_fetch
from tilelang.codegen import cuda_prelude as prelude
from tilelang.codegen.cuda_expr import CudaEmitError, ExprEmitter, imm_int, int_literal
from tilelang.codegen.cuda_prelude import RAW_TYPES, c_type
from tilelang.codegen.nan_facts import NanFacts
from tilelang.dtypes import DType
from tilelang.ir import thread as t
from tilelang.ir import thread_mma as tm
from tilelang.ir.atoms import MMA_ATOMS
from tilelang.ir.thread_text import print_expr
from tilelang.ir.thread_verify import verify_thread_function

__all__ = ["CudaEmitError", "CudaParam", "emit_cuda", "kernel_params", "kernel_symbol"]

INDENT = "  "
WARP = 32

# Names a kernel symbol must avoid: C++ keywords, the prelude's types and macro, CUDA's
# built-in variables and the C library / math functions NVRTC predeclares (extern "C").
_CPP_KEYWORDS = frozenset(
    """alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t
    char16_t char32_t class compl concept const consteval constexpr constinit const_cast
    continue co_await co_return co_yield decltype default delete do double dynamic_cast
    else enum explicit export extern false float for friend goto if inline int long
    mutable namespace new noexcept not not_eq nullptr operator or or_eq private protected
    public register reinterpret_cast requires return short signed sizeof static
    static_assert static_cast struct switch template this thread_local throw true try
    typedef typeid typename union unsigned using virtual void volatile wchar_t while xor
    xor_eq""".split()  # noqa: SIM905
)
_RESERVED = frozenset(prelude.C_TYPES.values()) | frozenset(
    """TL_INLINE threadIdx blockIdx blockDim gridDim warpSize main printf malloc free memcpy
    memset assert abs labs min max fmin fmax fminf fmaxf fabs fabsf exp exp2 exp10 expf exp2f
    expm1 log log2 log10 logf log2f log1p sqrt sqrtf rsqrt rsqrtf cbrt sin cos tan sinf cosf
    tanf sinh cosh tanh tanhf asin acos atan atan2 pow powf floor ceil floorf ceilf round
    trunc rint fmod fmodf erf erfc lgamma tgamma hypot norm""".split()  # noqa: SIM905
)
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_MMA_PTX_TYPES = {"f16": "f16", "bf16": "bf16", "i8": "s8", "u8": "u8"}


def kernel_symbol(fn: t.ThreadFunction) -> str:
    """The kernel's C symbol: `fn.name` when it is a usable C identifier, else a
    sanitized form prefixed with ``tl_kernel_``."""
    name = fn.name
    if (
        _PLAIN.fullmatch(name)
        and name not in _CPP_KEYWORDS
        and name not in _RESERVED
        and not name.startswith(("tl_", "__", "_"))
    ):
        return name
    return "tl_kernel_" + _escape(name)


def _escape(name: str) -> str:
    """A C identifier body for any string: letters, digits and '_' stay, others are _xHH."""
    return "".join(
        c if c.isascii() and (c.isalnum() or c == "_") else f"_x{ord(c):02x}" for c in name
    )


@dataclass(frozen=True)
class CudaParam:
    """One kernel parameter as a launcher passes it: its C type and size in bytes."""

    name: str
    dtype: DType
    is_tensor: bool
    c_type: str
    size: int


def _param_c_type(p: t.Param, stored: set[str]) -> tuple[str, int]:
    if p.is_tensor:
        return ("u8*" if p.name in stored else "const u8*"), 8
    if p.dtype == dtypes.u1:
        return "u8", 1
    return c_type(p.dtype), p.dtype.bits // 8


def kernel_params(fn: t.ThreadFunction) -> tuple[CudaParam, ...]:
    """The emitted kernel's parameters, in order (the ABI in the module docstring)."""
    stored = _stored_tensors(fn)
    out = []
    for p in fn.params:
        cty, size = _param_c_type(p, stored)
        out.append(CudaParam(p.name, p.dtype, p.is_tensor, cty, size))
    return tuple(out)


def _stored_tensors(fn: t.ThreadFunction) -> set[str]:
    return set(t.written_tensors(fn.body))


def emit_cuda(
    fn: t.ThreadFunction, launch_bounds: int | None = None, min_blocks: int | None = None
) -> str:
    """CUDA C++ source of `fn` (which should pass `verify_thread_function`).

    `launch_bounds`: the ``__launch_bounds__`` maximum threads per block (default and
    minimum: `fn.threads`); `min_blocks`, if given, its minimum blocks per
    multiprocessor (`tilelang.kernel`'s option). A function that breaks a rule of thread
    IR raises the verifier's `ThreadIRError` here, before any C++ exists."""
    verify_thread_function(fn)
    bound = fn.threads if launch_bounds is None else launch_bounds
    if bound < fn.threads:
        raise CudaEmitError(
            f"{fn.name}: launch bounds {bound} below the kernel's {fn.threads} threads"
        )
    if min_blocks is not None and min_blocks < 1:
        raise CudaEmitError(f"{fn.name}: min_blocks must be at least 1, got {min_blocks}")
    return _Emitter(fn).run(bound if min_blocks is None else f"{bound}, {min_blocks}")


# --------------------------------------------------------------------------- the emitter


#: The Reg fields a statement writes; every other Reg field is read.
_WRITTEN_REGS = {"dst", "d"}


def mma_operand_locals(fn: t.ThreadFunction) -> frozenset[str]:
    """The locals that nothing but an `Mma`'s A or B operand reads."""
    operands: set[str] = set()
    read_otherwise: set[str] = set()
    for stmt in t.walk_stmts(fn.body):
        for field in stmt.__dataclass_fields__:
            reg = getattr(stmt, field)
            if not isinstance(reg, t.Reg) or field in _WRITTEN_REGS:
                continue
            mma_operand = isinstance(stmt, tm.Mma | tm.Wgmma) and field in ("a", "b")
            (operands if mma_operand else read_otherwise).add(reg.local)
        for expr in t.stmt_exprs(stmt):
            read_otherwise.update(e.local for e in t.walk_expr(expr) if isinstance(e, t.Read))
    return frozenset(operands - read_otherwise)


def _rounds_f32_to_half(e: t.Expr) -> bool:
    return isinstance(e, t.Cvt) and e.a.dtype == dtypes.f32 and e.type in (dtypes.f16, dtypes.bf16)


class _Idents:
    """Collision-free C identifiers: prefix + the IR name (escaped when not plain)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.table: dict[str, str] = {}
        self.taken: set[str] = set()

    def __call__(self, name: str) -> str:
        ident = self.table.get(name)
        if ident is None:
            ident = base = self.prefix + _escape(name)
            k = 1
            while ident in self.taken:
                ident = f"{base}_{k}"
                k += 1
            self.table[name] = ident
            self.taken.add(ident)
        return ident


class _Emitter:
    def __init__(self, fn: t.ThreadFunction) -> None:
        self.fn = fn
        self.locals = {loc.name: loc for loc in fn.locals}
        self.names = _Idents("v_")
        self.local_ids = _Idents("l_")
        self.tensor_ids = _Idents("g_")
        self.flag_ids = _Idents("a_")  # u1 scalar parameters, passed as a byte
        self.nan = NanFacts(fn)
        self.x = ExprEmitter(self.names, self.local_ids, self.nan)
        self.lines: list[str] = []
        self.depth = 1
        self.loops = 0
        self.uses_smem_address = False
        self.uses_lane = False
        self.mma_operands = mma_operand_locals(fn)

    # ------------------------------------------------------------------ output

    def line(self, text: str) -> None:
        self.lines.append(INDENT * self.depth + text)

    def expr(self, e: t.Expr) -> str:
        return self.x.expr(e)

    def run(self, bound: int | str) -> str:
        fn = self.fn
        params = kernel_params(fn)
        signature: list[str] = []
        prologue: list[str] = []
        for p in params:
            if p.is_tensor:
                signature.append(f"{p.c_type} __restrict__ {self.tensor_ids(p.name)}")
            elif p.dtype == dtypes.u1:
                arg = self.flag_ids(p.name)
                signature.append(f"u8 {arg}")
                prologue.append(f"const bool {self.names(p.name)} = {arg} != 0;")
            else:
                signature.append(f"{p.c_type} {self.names(p.name)}")
        for loc in fn.locals:
            prologue.append(
                f"alignas(16) {c_type(loc.dtype)} {self.local_ids(loc.name)}[{loc.count}] = {{}};"
            )
        for stmt in fn.body:
            self.stmt(stmt)
        body, self.lines = self.lines, []
        setup = ["extern __shared__ __align__(16) u8 tl_smem[];"]
        if any(isinstance(x, tm.Wgmma) for x in t.walk_stmts(fn.body)):
            # wgmma swizzles shared-window address bits 4-9, so the buffer starts on a
            # 1024-byte boundary; the lowering's shared_bytes holds the 1008 bytes of slack.
            raw = self.x.call("tl_shared_address", "tl_smem_raw")
            setup = [
                "extern __shared__ __align__(16) u8 tl_smem_raw[];",
                f"u8* const tl_smem = tl_smem_raw + ((0u - {raw}) & {tm.WGMMA_SHARED_ALIGN - 1}u);",
            ]
        if self.uses_smem_address:
            setup.append(f"const u32 tl_smem_addr = {self.x.call('tl_shared_address', 'tl_smem')};")
        if self.x.uses_tid or self.uses_lane:
            setup.append("const i32 tl_tid = (i32)threadIdx.x;")
        if self.uses_lane:
            setup.append("const i32 tl_lane = tl_tid & 31;")
        for axis in sorted(self.x.uses_bid):
            setup.append(f"const i32 tl_bid_{'xyz'[axis]} = (i32)blockIdx.{'xyz'[axis]};")
        head = _header(fn)
        symbol = kernel_symbol(fn)
        out = [head, prelude.render(self.x.needed)]
        out.append(f'extern "C" __global__ void __launch_bounds__({bound}) {symbol}(')
        out.append(",\n".join(INDENT * 2 + s for s in signature) + ") {")
        out.extend(INDENT + s for s in setup + prologue)
        out.extend(body)
        out.append("}")
        return "\n".join(out) + "\n"

    # ------------------------------------------------------------------ registers

    def reg(self, r: t.Reg, width: int) -> str:
        return f"tl_reg<{RAW_TYPES[width]}>({self.local_ids(r.local)}, {r.byte})"

    def reg_ptr(self, r: t.Reg, ctype: str) -> str:
        return f"&tl_reg<{ctype}>({self.local_ids(r.local)}, {r.byte})"

    def tensor_at(self, tensor: str, offset: t.Expr) -> str:
        return f"{self.tensor_ids(tensor)} + {self.expr(offset)}"

    def shared_at(self, address: t.Expr) -> str:
        return f"tl_smem + {self.expr(address)}"

    def shared_address(self, address: t.Expr) -> str:
        """The shared-window address (``.shared`` state space) of a shared byte offset."""
        self.uses_smem_address = True
        return f"tl_smem_addr + (u32){self.expr(address)}"

    def predicated(self, pred: t.Expr | None, text: str) -> None:
        self.line(text if pred is None else f"if ({self.expr(pred)}) {text}")

    # ------------------------------------------------------------------ statements

    def stmt(self, s: t.Stmt) -> None:
        method = getattr(self, f"stmt_{type(s).__name__}", None)
        if method is None:
            raise CudaEmitError(f"not a thread-IR statement: {s!r}")
        method(s)

    def stmt_Let(self, s: t.Let) -> None:
        value = self.x.expr(s.value, self.nan.value_blind(s))
        self.line(f"const {c_type(s.name.type)} {self.names(s.name.name)} = {value};")

    def stmt_Uniform(self, s: t.Uniform) -> None:
        # every thread computes the same value from its own registers
        value = self.x.expr(s.value, self.nan.value_blind(s))
        self.line(f"const {c_type(s.name.type)} {self.names(s.name.name)} = {value};")

    def stmt_SetLocal(self, s: t.SetLocal) -> None:
        value = s.value
        if s.local in self.mma_operands and _rounds_f32_to_half(value):
            # only an mma reads it: a NaN's payload is unobservable there (module docstring)
            text = self.x.call(f"tl_f32_{value.type.name}_raw", self.expr(value.a))
        else:
            text = self.x.expr(value, self.nan.value_blind(s))
        self.line(f"{self.local_ids(s.local)}[{s.index}] = {text};")

    def stmt_Move(self, s: t.Move) -> None:
        self.line(f"{self.reg(s.dst, s.width)} = {self.reg(s.src, s.width)};")

    def stmt_GlobalLoad(self, s: t.GlobalLoad) -> None:
        w = RAW_TYPES[s.width]
        load = f"tl_load<{w}>({self.tensor_at(s.tensor, s.offset)})"
        self.predicated(s.pred, f"{self.reg(s.dst, s.width)} = {load};")

    def stmt_GlobalStore(self, s: t.GlobalStore) -> None:
        w = RAW_TYPES[s.width]
        at = self.tensor_at(s.tensor, s.offset)
        self.predicated(s.pred, f"tl_store<{w}>({at}, {self.reg(s.src, s.width)});")

    def stmt_Atomic(self, s: t.Atomic) -> None:
        if s.dst is not None:  # the old values are read: atom, one element at a time
            self.fetch_atomic(s)
            return
        calls = []
        for at, width, helper in _atomic_calls(s.dtype, s.width, s.op):
            target = self.tensor_at(s.tensor, s.offset) + (f" + {at}" if at else "")
            reg = self.reg(t.Reg(s.src.local, s.src.byte + at), width)
            calls.append(f"{self.x.call(helper, target, reg)};")
        self.predicated_lines(s.pred, calls)

    def fetch_atomic(self, s: t.Atomic) -> None:
        size = s.dtype.bits // 8
        helper = cuda_fetch.helper(s.dtype, s.op)
        lines = []
        for at in range(0, s.width, size):
            target = self.tensor_at(s.tensor, s.offset) + (f" + {at}" if at else "")
            regs = [self.reg(t.Reg(r.local, r.byte + at), size) for r in (s.src, s.compare) if r]
            dst = self.reg(t.Reg(s.dst.local, s.dst.byte + at), size)
            lines.append(f"{dst} = {self.x.call(helper, target, *regs)};")
        self.predicated_lines(s.pred, lines)

    def predicated_lines(self, pred: t.Expr | None, lines: list[str]) -> None:
        """`lines` under `pred` (None: always): one statement, or a block of them."""
        if len(lines) == 1:
            self.predicated(pred, lines[0])
            return
        self.line("{" if pred is None else f"if ({self.expr(pred)}) {{")
        self.block_lines(lines)
        self.line("}")

    def stmt_AtomicMerge(self, s: t.AtomicMerge) -> None:
        at = self.tensor_at(s.tensor, s.offset)
        call = self.x.call("tl_merge_bits", at, self.expr(s.value), self.expr(s.mask))
        self.predicated(s.pred, f"{call};")

    def stmt_AtomicFetchAdd(self, s: t.AtomicFetchAdd) -> None:
        call = self.x.call(
            "tl_fetch_add_acq_rel", self.tensor_at(s.tensor, s.offset), self.expr(s.value)
        )
        self.predicated(s.pred, f"{self.reg(s.dst, 4)} = {call};")

    def block_lines(self, lines: list[str]) -> None:
        self.depth += 1
        for text in lines:
            self.line(text)
        self.depth -= 1

    def stmt_SharedLoad(self, s: t.SharedLoad) -> None:
        load = f"tl_load<{RAW_TYPES[s.width]}>({self.shared_at(s.address)})"
        self.predicated(s.pred, f"{self.reg(s.dst, s.width)} = {load};")

    def stmt_SharedStore(self, s: t.SharedStore) -> None:
        at = self.shared_at(s.address)
        self.predicated(
            s.pred, f"tl_store<{RAW_TYPES[s.width]}>({at}, {self.reg(s.src, s.width)});"
        )

    def stmt_CpAsync(self, s: t.CpAsync) -> None:
        if s.width not in (4, 8, 16):
            raise CudaEmitError(f"cp.async copies 4, 8 or 16 bytes, not {s.width}")
        dst, src = self.shared_address(s.address), self.tensor_at(s.tensor, s.offset)
        if s.pred is None:
            self.line(f"{self.x.call(f'tl_cp_async_{s.width}', dst, src)};")
        else:
            helper = f"tl_cp_async_{s.width}_zfill"
            self.line(f"{self.x.call(helper, dst, src, self.expr(s.pred))};")

    def stmt_CpAsyncCommit(self, s: t.CpAsyncCommit) -> None:
        self.line(f"{self.x.call('tl_cp_async_commit')};")

    def stmt_CpAsyncWait(self, s: t.CpAsyncWait) -> None:
        self.x.need("tl_cp_async_wait")
        self.line(f"tl_cp_async_wait<{int(s.pending)}>();")

    def stmt_Barrier(self, s: t.Barrier) -> None:
        self.line("__syncthreads();")

    def stmt_Mma(self, s: tm.Mma) -> None:
        atom = MMA_ATOMS.get(s.atom)
        if atom is None or str(s.operands) not in atom.operand_dtypes:
            raise CudaEmitError(f"no mma atom {s.atom} for {s.operands}")
        shape = f"m{atom.m}n{atom.n}k{atom.k}"
        helper = f"tl_mma_{shape}_{_MMA_PTX_TYPES[str(s.operands)]}"
        acc = "f32" if atom.acc_dtype == "f32" else "i32"
        args = (
            self.reg_ptr(s.d, acc),
            self.reg_ptr(s.a, "u32"),
            self.reg_ptr(s.b, "u32"),
            self.reg_ptr(s.c, acc),
        )
        self.line(f"{self.x.call(helper, *args)};")

    def stmt_Wgmma(self, s: tm.Wgmma) -> None:
        if str(s.operands) not in ("f16", "bf16") or s.n % 8 or not 8 <= s.n <= 256:
            raise CudaEmitError(f"no wgmma m64n{s.n}k16 for {s.operands}")
        desc = self.x.call(
            "tl_wgmma_desc", self.shared_address(s.b_address), f"{s.lbo}u", f"{s.sbo}u"
        )
        helper = self.x.need(f"tl_wgmma_m64n{s.n}k16_{s.operands}")
        flags = f"<{int(s.trans_b)}, {int(s.accumulate)}>"
        args = (self.reg_ptr(s.d, "f32"), self.reg_ptr(s.a, "u32"), desc)
        self.line(f"{helper}{flags}({', '.join(args)});")

    def stmt_WgmmaFence(self, s: tm.WgmmaFence) -> None:
        self.line(f"{self.x.call('tl_wgmma_fence')};")

    def stmt_WgmmaCommit(self, s: tm.WgmmaCommit) -> None:
        self.line(f"{self.x.call('tl_wgmma_commit')};")

    def stmt_WgmmaWait(self, s: tm.WgmmaWait) -> None:
        self.x.need("tl_wgmma_wait")
        self.line(f"tl_wgmma_wait<{int(s.pending)}>();")

    def stmt_AsyncProxyFence(self, s: tm.AsyncProxyFence) -> None:
        self.line(f"{self.x.call('tl_fence_proxy_async')};")

    def stmt_Ldmatrix(self, s: tm.Ldmatrix) -> None:
        if s.num not in (1, 2, 4):
            raise CudaEmitError(f"ldmatrix loads 1, 2 or 4 matrices, not {s.num}")
        helper = f"tl_ldmatrix_x{s.num}{'_trans' if s.trans else ''}"
        args = (self.reg_ptr(s.dst, "u32"), self.shared_address(s.address))
        self.line(f"{self.x.call(helper, *args)};")

    def stmt_Shfl(self, s: t.Shfl) -> None:
        vt = s.value.dtype
        if vt.bits != 32 or s.result.type != vt or s.width not in (1, 2, 4, 8, 16, 32):
            raise CudaEmitError("a shuffle moves one 32-bit value within 1..32 lanes")
        value = self.expr(s.value)
        bits = self.x.bitcast(value, vt, dtypes.u32)
        segment = (WARP - s.width) << 8  # shfl.sync's c operand: segment mask, then clamp
        arg = imm_int(s.arg)
        if arg is not None and 0 <= arg < s.width:
            mode = {"xor": "bfly"}.get(s.mode, s.mode)
            clamp = 0 if s.mode == "up" else 0x1F
            got = self.x.call(f"tl_shfl_{mode}", bits, f"{arg}u", f"0x{segment | clamp:x}u")
        else:
            self.uses_lane = True
            mode_id = ("idx", "xor", "up", "down").index(s.mode)
            source = self.x.call(
                "tl_shfl_source",
                str(mode_id),
                f"(tl_lane & {s.width - 1})",
                self.shfl_arg(s.arg),
                str(s.width),
            )
            got = self.x.call("tl_shfl_idx", bits, f"(u32){source}", f"0x{segment | 0x1F:x}u")
        result = self.x.bitcast(got, dtypes.u32, vt)
        self.line(f"const {c_type(vt)} {self.names(s.result.name)} = {result};")

    def shfl_arg(self, arg: t.Expr) -> str:
        """A shuffle argument as an i32 clamped to [-64, 64] (values beyond give the
        lane's own value in every mode, as they would unclamped)."""
        dt = arg.dtype
        if not dt.is_int:
            raise CudaEmitError(f"a shuffle argument must be an integer, got {dt}")
        a = self.expr(arg)
        if dt == dtypes.u1:
            return f"(i32){a}"
        hi = int_literal(64, dt)
        if dt.signed:
            return f"(i32)tl_min(tl_max({a}, {int_literal(-64, dt)}), {hi})"
        return f"(i32)tl_min({a}, {hi})"

    def stmt_For(self, s: t.For) -> None:
        dt = s.var.type
        if not dt.is_int or dt == dtypes.u1:
            raise CudaEmitError(f"a loop variable must be an integer, not {dt}")
        ct, wide = c_type(dt), ("u64" if dt.bits == 64 else "u32")
        var = self.names(s.var.name)
        start, stop, step = (self.expr(e) for e in (s.start, s.stop, s.step))
        stop_imm, step_imm = imm_int(s.stop), imm_int(s.step)
        pragma = [f"#pragma unroll {s.unroll}"] if s.unroll is not None else []
        if s.unroll is None and _pipelined(s):
            pragma = ["#pragma unroll 1"]
        safe = (
            step_imm is not None
            and step_imm > 0
            and dt.bits >= 32
            and (step_imm == 1 or (stop_imm is not None and stop_imm + step_imm - 1 <= dt.max))
        )
        if safe:
            # v < stop and v + step <= stop + step - 1 <= MAX: the increment cannot overflow.
            for p in pragma:
                self.line(p)
            self.line(f"for ({ct} {var} = {start}; {var} < {stop}; {var} += {step}) {{")
            self.block(s.body)
            self.line("}")
            return
        if step_imm == 0:  # a launch never runs one (ThreadFunction.checks); no iteration
            self.line("/* a loop with a zero step runs no iteration */")
            return
        k = self.loops
        self.loops += 1
        lo, hi, n, i = f"tl_lo{k}", f"tl_hi{k}", f"tl_n{k}", f"tl_i{k}"
        self.line("{")
        self.depth += 1
        self.line(f"const {ct} {lo} = {start};")
        self.line(f"const {ct} {hi} = {stop};")
        self.line(f"const {wide} {n} = {self.trip_count(lo, hi, step, step_imm, dt, wide)};")
        for p in pragma:
            self.line(p)
        self.line(f"for ({wide} {i} = 0; {i} < {n}; ++{i}) {{")
        self.depth += 1
        step_w = f"({wide}){step}" if step_imm is None else int_literal(step_imm, _UNSIGNED[wide])
        self.line(f"const {ct} {var} = ({ct})(({wide}){lo} + {i} * {step_w});")
        self.depth -= 1
        self.block(s.body)
        self.line("}")
        self.depth -= 1
        self.line("}")

    @staticmethod
    def trip_count(lo: str, hi: str, step: str, step_imm: int | None, dt, wide: str) -> str:
        """Iterations of range(lo, hi, step) as Python counts them, in unsigned arithmetic
        that cannot overflow: upward while var < hi, downward while var > hi."""

        def count(first: str, last: str, magnitude: str) -> str:
            span = f"({wide}){last} - ({wide}){first} - 1"
            return f"({first} < {last} ? ({span}) / {magnitude} + 1 : 0)"

        if step_imm is not None:
            magnitude = int_literal(abs(step_imm), _UNSIGNED[wide])
            return count(lo, hi, magnitude) if step_imm > 0 else count(hi, lo, magnitude)
        up, down = count(lo, hi, f"({wide}){step}"), count(hi, lo, f"(({wide})0 - ({wide}){step})")
        if not dt.signed:
            return f"({step} != 0 ? {up} : 0)"
        return f"({step} > 0 ? {up} : {step} < 0 ? {down} : 0)"

    def stmt_If(self, s: t.If) -> None:
        self.line(f"if ({self.expr(s.cond)}) {{")
        self.block(s.then_body)
        if s.else_body:
            self.line("} else {")
            self.block(s.else_body)
        self.line("}")

    def block(self, body: tuple[t.Stmt, ...]) -> None:
        self.depth += 1
        for s in body:
            self.stmt(s)
        self.depth -= 1


_UNSIGNED = {"u32": dtypes.u32, "u64": dtypes.u64}


def _atomic_calls(dtype: DType, width: int, op: str = "add") -> list[tuple[int, int, str]]:
    """(byte, width, prelude helper) of each call an `Atomic` of `width` bytes of
    `dtype` makes: f16/bf16 elements add alone, or in pairs (`x2`) and vectors of 2 or
    4 pairs; f32 alone or in vectors of 2 or 4; 32- and 64-bit integers and f64 one
    element at a time (signed and unsigned additions are the same bits). A max/min is
    one call per element: an integer reduction, or a float's compare-and-swap loop."""
    vector = {8: "_v2", 16: "_v4"}
    name = dtype.name
    size = dtype.bits // 8
    if op != "add":
        kind = cuda_fetch.kind(dtype, op)
        helper = f"tl_atomic_{op}_{kind}" if dtype.is_float else f"tl_red_{op}_{kind}"
        return [(at, size, helper) for at in range(0, width, size)]
    if name in ("f16", "bf16"):
        helper = f"tl_red_add_{name}" if width == 2 else f"tl_red_add_{name}x2"
        return [(0, width, helper + vector.get(width, ""))]
    if name == "f32":
        return [(0, width, "tl_red_add_f32" + vector.get(width, ""))]
    kind = "f64" if name == "f64" else f"u{dtype.bits}"
    return [(at, size, f"tl_red_add_{kind}") for at in range(0, width, size)]


def _header(fn: t.ThreadFunction) -> str:
    """A comment naming the kernel, its parameters and launch shape (one line per fact;
    names are printed with `repr`-style escapes so that none can end the comment)."""

    def clean(text: str) -> str:
        return text.encode("unicode_escape").decode("ascii")

    params = ", ".join(
        f"{p.name}: tensor<{p.dtype}>" if p.is_tensor else f"{p.name}: {p.dtype}" for p in fn.params
    )
    grid = ", ".join(print_expr(g) for g in fn.grid) or "1"
    return (
        f"// tilelang kernel {clean(fn.name)}({clean(params)})\n"
        f"// threads per block: {fn.threads}; dynamic shared memory: {fn.shared_bytes} bytes\n"
        f"// grid: ({clean(grid)})\n"
        "// Generated from thread IR: CUDA C++ that needs no header (NVRTC or nvcc).\n"
    )


def _pipelined(loop: t.For) -> bool:
    """Whether `loop` waits for asynchronous copies in its own body: a software-pipelined
    loop, already scheduled S-1 iterations deep (`software_pipeline`). NVVM would unroll
    it (its stage rotation is cheap), doubling the registers the copies in flight and the
    fragments hold, and `plan_registers` plans it rolled."""
    return any(isinstance(stmt, t.CpAsyncWait) for stmt in loop.body)
