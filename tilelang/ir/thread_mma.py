"""Thread IR's tensor-core statements: `Mma` (mma.sync), `Ldmatrix`, and the warpgroup
mma of sm_90a (`Wgmma`, its fences, commit and wait, and the async-proxy fence that
orders shared-memory writes before it reads them).

They are statements of the thread IR (`tilelang.ir.thread`, whose execution model
they follow): registers addressed by byte offset, shared memory by i32 byte address.
Every one is a collective except `AsyncProxyFence`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tilelang.dtypes import DType
from tilelang.ir.thread import Expr, Reg, Stmt


@dataclass(frozen=True)
class Mma(Stmt):
    """`mma.sync.aligned` of the atom `atom` (a name in `tilelang.ir.atoms.MMA_ATOMS`),
    per warp: D = A·B + C. Each lane's fragment of an operand is the operand's register
    bytes from its `Reg`, element i of the fragment (the atom's layout's local index i,
    `atom.a`/`.b`/`.c`) at element i of those bytes. A and B hold `operands` (one of
    the atom's operand dtypes). Integer atoms accumulate exactly (wrapping s32);
    f16/bf16 atoms compute every product exactly and add them to C in f32 in k order,
    rounding after each addition (the hardware's order differs: results agree within
    the accumulation tolerance, not bitwise)."""

    atom: str
    operands: DType
    d: Reg
    a: Reg
    b: Reg
    c: Reg
    COLLECTIVE: ClassVar[bool] = True


#: The shared buffer's alignment in a function with `Wgmma` (its swizzle reads address bits).
WGMMA_SHARED_ALIGN = 1024


@dataclass(frozen=True)
class Wgmma(Stmt):
    """`wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{operands}.{operands}` (sm_90a),
    per warpgroup (the 128 threads of warps 4g..4g+3): D = A·B + D, or D = A·B when
    not `accumulate`. A is in registers, B in shared memory.

    With w = warp % 4, g = lane // 4, q = lane % 4:

    * A (64×16, `operands`): 8 elements at `a` (4 words); element i is at row
      16w + g + 8·((i // 2) % 2), column 2q + i % 2 + 8·(i // 4) (each warp holds
      16 rows as an mma.sync m16n8k16 A fragment).
    * D (64×n f32): n/2 elements at `d`, read and written; element i is at row
      16w + g + 8·((i // 2) % 2), column 8·(i // 4) + 2q + i % 2.
    * B (16×n) through the matrix descriptor of `b_address` (a shared byte offset,
      the same in every thread), `lbo` and `sbo` (bytes) with the 128-byte swizzle.
      K-major (not `trans_b`): element (k, n) at b_address + 128·(n % 8) +
      sbo·(n // 8) + 2k; MN-major (`trans_b`): at b_address + 2·(n % 64) +
      lbo·(n // 64) + 128·(k % 8) + sbo·(k // 8). The byte read is that address with
      bits 4–6 XOR bits 7–9 (a function using `Wgmma` has its shared buffer 1024-byte
      aligned, so offsets and shared-window addresses agree on those bits).

    Products are exact and added to D in f32 in k order, rounding after each
    addition, as for `Mma`. On the GPU the instruction is asynchronous: a `WgmmaFence`
    goes between the last register write and the first `Wgmma` of a group, and D and A
    are neither read nor written until a `WgmmaWait` covers the group."""

    n: int
    operands: DType
    d: Reg
    a: Reg
    b_address: Expr
    lbo: int
    sbo: int
    trans_b: bool
    accumulate: bool = True
    COLLECTIVE: ClassVar[bool] = True


@dataclass(frozen=True)
class WgmmaFence(Stmt):
    """`wgmma.fence.sync.aligned`: orders this warpgroup's earlier register writes
    before its next `Wgmma`s read them (nothing on the CPU, where `Wgmma` is
    synchronous)."""

    COLLECTIVE: ClassVar[bool] = True


@dataclass(frozen=True)
class WgmmaCommit(Stmt):
    """`wgmma.commit_group.sync.aligned`: closes the group of `Wgmma`s issued since the
    last commit."""

    COLLECTIVE: ClassVar[bool] = True


@dataclass(frozen=True)
class WgmmaWait(Stmt):
    """`wgmma.wait_group.sync.aligned pending`: waits until at most `pending` committed
    groups are in flight; their D registers are then written and their shared-memory
    reads done."""

    pending: int
    COLLECTIVE: ClassVar[bool] = True


@dataclass(frozen=True)
class AsyncProxyFence(Stmt):
    """`fence.proxy.async.shared::cta`: this thread's earlier shared-memory writes
    (stores, finished `CpAsync` copies) become visible to the async proxy, through which
    `Wgmma` reads B. Followed by a `Barrier`, every thread's are."""


@dataclass(frozen=True)
class Ldmatrix(Stmt):
    """`ldmatrix.sync.aligned.m8n8.x{num}[.trans].shared.b16`, per warp.

    Lane 8j + r (j < num, r < 8) gives in `address` the shared byte address of row r of
    matrix j (16 contiguous bytes, 16-byte aligned). Each lane receives `num` u32 words
    at `dst`: word j holds row `lane // 4`, elements 2·(lane % 4) and +1 of matrix j
    (low half first); with `trans`, the transposed matrix."""

    num: int
    trans: bool
    dst: Reg
    address: Expr
    COLLECTIVE: ClassVar[bool] = True
