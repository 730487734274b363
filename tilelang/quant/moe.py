# ruff: noqa: F821 -- kernels use the size names of their tensor annotations (M, N, K) as variables
"""Quantized Mixture-of-Experts: `quantize_experts` (E expert weights [E, K, N] as one
stacked weight) and `moe_matmul` (each token's rows times the weights of the experts
its router chose), what vLLM's fused_moe / Marlin-MoE compute, in the kernel language.

The experts are one `QuantizedWeight` of shape [E·K, N] (`QuantizedExperts.stacked`):
expert e is rows e·K.. of it. Each expert is quantized by `quantize` on its own (its
own scales, zero points, MX blocks), and K is a multiple of the group size and of the
packing's K tile, so no group or packed tile straddles two experts. Everything the
single-weight kernels derive from a weight (`tilelang.quant.operands`: the codes
packed for the dot, signed codes for midpoint zero points, scales packed per tile, the
MX shift e0 of the whole stack, value facts) is derived from the stacked weight, and
the grouped GEMM dequantizes with `tilelang.quant.kernels.weight_tile` at row e·K + k:
the formats' arithmetic is written once. NVFP4 is refused: its f32 tensor scale is one
per expert, and the kernels multiply the accumulator by one per launch.

A call, S = T·top_k token slots (slot i is token i // top_k's choice i % top_k):

1. `moe_align` (one block): counts the slots of each expert, pads every expert's run
   to whole blocks of BM rows, and writes ``sorted_ids`` (slots grouped by expert, in
   slot order within one; padding entries hold S) and ``expert_ids`` (the expert of
   each BM-row block; -1 past the last). Slots routed to expert -1 (no expert, as
   expert parallelism marks experts of other ranks) form one more group, "none",
   whose blocks have expert id E.
2. `moe_gemm`: block (b, bn) reads its expert e from ``expert_ids`` (returns at once
   for -1), gathers rows ``sorted_ids // top_k`` of x (a padding entry S gathers row
   T, past x: the load reads 0 and the store of row S is skipped, no mask), multiplies
   by expert e's dequantized tiles on the tensor cores (`tl.dot`) and stores its rows
   of the [S, N] slot products. A "none" block runs no k-step and stores zeros.
3. Weighted (``topk_weights`` given): `moe_sum` adds each token's top_k f32 slot
   products times their weights, in slot order, and rounds once to x's type.

Ids outside [-1, E). The host path refuses them (a ValueError naming the first). The
GPU path does not look: a check would read the ids back, a device synchronization a
serving loop must not pay. There the align kernel puts such a slot in the group
"none", exactly as an id of -1: the slot adds nothing to y (weighted) or is zeros (the
slot products), and no kernel reads or writes outside a tensor for it (the id is
compared, never used as an index). The CPU tests run the align kernel on such ids.

Why a scatter of [S, N] f32 products and a sum rather than `tl.atomic_add` into y:
the sum is deterministic for every top_k (f32 atomics add in arrival order, which
top_k > 2 makes visible), rounds once, needs no zeroed output nor a cast pass
afterwards (atomics into f16 would round per slot), and the unweighted [T, top_k, N]
result is the same kernel storing x's type. Its cost is S·N·4 bytes written and read
again: at decode sizes nothing next to the weights (T = 64, top-2, N = 14336: 7 MiB
against 224 MiB of u4 weights for 8 experts), at T = 512 a quarter of them.

The GEMM's tile is the single-weight small-batch tile (`choice.choose` at m = 16: 16 x
128 x BK over 4 warps, the packing's 1 x 4 warp grid, so each weight is converted by
one thread): an expert usually gets few rows. Larger per-expert batches would want
the 64-row gemm tile; not done yet. The GPU path (torch CUDA tensors) compiles for
sm_80 and sm_90a without spills (tests) but is unmeasured.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.kernel import func, kernel
from tilelang.lang import api
from tilelang.lang.signature import Tensor, constexpr
from tilelang.runtime import gpu
from tilelang.runtime.host_calls import accepts_host_tensors

from .arrays import _host
from .choice import KernelCall, choose
from .formats import get_format
from .kernels import weight_tile
from .matmul import _host_dtype, _host_out, _on_host, _Tensors
from .operands import BLOCK_N, Operands, cached, operands, pack_tile_k
from .quantizer import quantize
from .weight import QuantizedWeight

tl = api.tl

#: The rows of a GEMM block (and the padding unit of each expert's run of slots).
BLOCK_M = 16

NVFP4_REFUSED = (
    "format: 'nvfp4' has one f32 tensor scale per expert, which the grouped GEMM cannot "
    "apply (it multiplies by one per launch); use 'mxfp4' or integer codes"
)
CODEBOOK_REFUSED = (
    "format: the codebook formats ('nf4', 'fp4_bnb', 'codebook') are not supported for "
    "experts yet: the grouped GEMM has no table parameter (`tilelang.quant.matmul` runs "
    "them per weight); use integer codes or an MX format"
)


@dataclass(frozen=True, eq=False)
class QuantizedExperts:
    """E quantized expert weights [K, N], stacked as one [E·K, N] `QuantizedWeight`
    (module docstring); `experts` is E."""

    stacked: QuantizedWeight
    experts: int

    def __post_init__(self) -> None:
        if not isinstance(self.stacked, QuantizedWeight):
            raise TypeError(f"stacked must be a QuantizedWeight, got {type(self.stacked).__name__}")
        e = self.experts
        if isinstance(e, bool) or not isinstance(e, (int, np.integer)) or e < 1:
            raise ValueError(f"experts must be a positive int, got {e!r}")
        if self.stacked.shape[0] % e:
            raise ValueError(f"experts={e} does not divide the stacked rows {self.stacked.shape}")
        _check_stackable(self.stacked, self.stacked.shape[0] // int(e))
        object.__setattr__(self, "experts", int(e))

    @property
    def shape(self) -> tuple[int, int, int]:
        """(E, K, N)."""
        rows, n = self.stacked.shape
        return self.experts, rows // self.experts, n

    @property
    def format(self) -> str:
        return self.stacked.format

    @property
    def dtype(self) -> dtypes.DType:
        return self.stacked.dtype

    @property
    def group_size(self) -> int:
        return self.stacked.group_size

    @property
    def nbytes(self) -> int:
        return self.stacked.nbytes

    def dequantize(self) -> np.ndarray:
        """The experts' weights as the kernels see them, float32 [E, K, N]."""
        return self.stacked.dequantize().reshape(self.shape)

    def error(self, w: Any) -> dict[str, float]:
        """`QuantizedWeight.error` of the stack against `w` [E, K, N]."""
        reference = _float_experts(w)
        if reference.shape != self.shape:
            raise ValueError(f"w has shape {reference.shape}, the experts {self.shape}")
        return self.stacked.error(reference.reshape(self.stacked.shape))

    def __repr__(self) -> str:
        e, k, n = self.shape
        return f"QuantizedExperts({e} x {self.stacked!r} rows [{k}, {n}] each)"


def _float_experts(w: Any) -> np.ndarray:
    w = _host(w)
    if gpu.is_torch_tensor(w):
        w = w.float().numpy()
    array = np.asarray(w)
    if array.dtype.kind not in "fiu" and array.dtype.name != "bfloat16":
        raise TypeError(f"w must be an array of real numbers, got {array.dtype}")
    if array.ndim != 3:
        raise ValueError(
            f"w must be a 3-D [E, K, N] array of expert weights, got shape {array.shape}"
        )
    return array.astype(np.float32) if array.dtype.name == "bfloat16" else array


def _check_stackable(qw: QuantizedWeight, k: int) -> None:
    """Refuses what the grouped GEMM cannot index by expert (module docstring)."""
    kind = get_format(qw.format).kind
    if kind == "nvfp4":
        raise ValueError(NVFP4_REFUSED)
    if kind == "codebook":
        raise ValueError(CODEBOOK_REFUSED)
    if qw.perm is not None:
        raise ValueError("act order (perm) is not supported for experts")
    if qw.group_size < k and k % qw.group_size:
        raise ValueError(f"group_size {qw.group_size} must divide K = {k}")
    tile = pack_tile_k(qw)
    if k % tile:
        raise ValueError(
            f"w: K = {k} must be a multiple of {tile} (the packed K tile for group_size "
            f"{qw.group_size}), so that no packed tile straddles two experts"
        )


def quantize_experts(
    w: Any,
    dtype: Any = None,
    group_size: int | None = None,
    zero_point: bool = False,
    scale_dtype: Any = None,
    format: str | None = None,
    mx_scale: str = "floor",
) -> QuantizedExperts:
    """Quantize E expert weights `w` [E, K, N] (numpy, or a torch tensor), each as
    `tilelang.quant.quantize` does with these arguments (its own scales and zero
    points), stacked so that one kernel indexes expert e (module docstring). Every
    format of `quantize` except NVFP4; K a multiple of the packed K tile (128 for
    groups of 128 rows or more, else the group size)."""
    experts = _float_experts(w)
    e, k, n = experts.shape
    if e == 0 or k == 0 or n == 0:
        raise ValueError(
            f"w must have at least one expert, row and column, got shape {experts.shape}"
        )
    if format is not None and get_format(format).kind == "nvfp4":
        raise ValueError(NVFP4_REFUSED)
    if format is not None and get_format(format).kind == "codebook":
        raise ValueError(CODEBOOK_REFUSED)
    weights = [
        quantize(experts[i], dtype, group_size, zero_point, scale_dtype, format, mx_scale)
        for i in range(e)
    ]
    first = weights[0]
    codes = np.concatenate([qw.plain_codes() for qw in weights])
    zeros = None if first.zeros is None else np.concatenate([qw.zeros for qw in weights])
    stacked = QuantizedWeight(
        codes=dtypes.pack_codes(codes, first.dtype),
        scale_codes=np.concatenate([qw.scale_codes for qw in weights]),
        scale_dtype=first.scale_dtype,
        group_size=first.group_size,
        format=first.format,
        zeros=zeros,
    )
    return QuantizedExperts(stacked, e)


# ---------------------------------------------------------------------------- kernels


@func
def group_of(ids, E):
    """An id's group: itself for an expert, E ("none") for -1 and any other id outside
    [0, E) (module docstring: the GPU path does not check the ids)."""
    return tl.where((ids >= 0) & (ids < E), ids, E)


@func
def slot_groups(ids, t0, S, E, BT):
    """The groups of the BT slots from t0 (`group_of`); -1, no group, past the last."""
    t = t0 + tl.arange(0, BT)
    return tl.where(t < S, group_of(tl.load(ids, [t0], [BT]), E), -1)


# min_blocks=1: one block runs; without it ptxas caps the registers at 72 on sm_80
# and spills 8 bytes.
@kernel(warps=4, min_blocks=1)
def moe_align(
    ids: Tensor[dtypes.i32, "S"],
    sorted_ids: Tensor[dtypes.i32, "P"],
    expert_ids: Tensor[dtypes.i32, "NB"],
    E: constexpr = 8,
    EP: constexpr = 16,
    BM: constexpr = 16,
    BT: constexpr = 128,
):
    """Groups the S slots by expert into runs padded to BM rows (module docstring).
    Group E is "none" (id -1, and any id outside [0, E)); groups E+1..EP-1 stay empty
    (EP: a power of two for `tl.arange`)."""
    groups = tl.arange(0, EP)
    counts = tl.zeros([EP], tl.i32)
    for t0 in tl.range(0, S, BT):
        g = slot_groups(ids, t0, S, E, BT)
        counts = counts + tl.sum((g[:, None] == groups[None, :]).to(tl.i32), axis=0)
    padded = (counts + (BM - 1)) // BM * BM
    ends = tl.cumsum(padded, axis=0)
    starts = ends - padded
    total = tl.sum(padded)
    running = tl.zeros([EP], tl.i32)
    for t0 in tl.range(0, S, BT):
        g = slot_groups(ids, t0, S, E, BT)
        onehot = (g[:, None] == groups[None, :]).to(tl.i32)
        rank = tl.cumsum(onehot, axis=0) - onehot + running[None, :]
        pos = tl.sum(onehot * (starts[None, :] + rank), axis=1)
        # A lane past the slots goes to position P: past the table, so the store skips it.
        tl.store(sorted_ids, [tl.where(g >= 0, pos, P)], t0 + tl.arange(0, BT))
        running = running + tl.sum(onehot, axis=0)
    for p0 in tl.range(0, P, BT):
        p = p0 + tl.arange(0, BT)
        used = (p[:, None] >= starts[None, :]) & (p[:, None] < starts[None, :] + counts[None, :])
        pad = tl.sum(used.to(tl.i32), axis=1) == 0
        tl.store(sorted_ids, [tl.where(pad, p, P)], tl.full([BT], S, tl.i32))
    for b0 in tl.range(0, NB, BT):
        first = (b0 + tl.arange(0, BT)) * BM
        group = tl.sum((ends[None, :] <= first[:, None]).to(tl.i32), axis=1)
        tl.store(expert_ids, [b0], tl.where(first < total, group, -1))


@kernel(warps=lambda WARPS, **_: WARPS, min_blocks=1, expect_replicated=True)
def moe_gemm(
    x: Tensor["OT", "M", "K"],
    w: Tensor["WT", "(N + BN - 1) // BN", "(E * K + PK - 1) // PK * PK * BN"],
    s: Tensor["ST", "SK", "SN"],
    z: Tensor["ZT", "ZK", "ZN"],
    sorted_ids: Tensor[dtypes.i32, "P"],
    expert_ids: Tensor[dtypes.i32, "NB"],
    y: Tensor["YT", "S", "N"],
    t: dtypes.f32,
    OT: constexpr = dtypes.f16,
    WT: constexpr = dtypes.u4,
    ST: constexpr = dtypes.f16,
    ZT: constexpr = dtypes.u4,
    YT: constexpr = dtypes.f16,
    KIND: constexpr = "scaled",
    G: constexpr = 128,
    HAS_Z: constexpr = False,
    TENSOR_SCALE: constexpr = False,
    E: constexpr = 8,
    TOPK: constexpr = 2,
    BM: constexpr = 16,
    BN: constexpr = 128,
    BK: constexpr = 128,
    PK: constexpr = 128,
    WARPS: constexpr = 4,
    STAGES: constexpr = 3,
):
    """y[r] = x[r // TOPK] @ W_e for the slots r of each block of `sorted_ids`, e the
    block's expert (module docstring); rounded once to YT."""
    b, bn = tl.blocks(NB, tl.cdiv(N, BN))
    e = tl.load(expert_ids, [b])
    if e < 0:
        return
    rows = tl.load(sorted_ids, [b * BM], [BM])
    # The padding entry S gathers row T (past x, reads 0) and stores row S (skipped).
    src = rows // TOPK
    acc = tl.zeros([BM, BN], tl.f32)
    for k in tl.range(0, tl.where(e < E, K, 0), BK, stages=STAGES):
        a = tl.load(x, [src[:, None], k], [BM, BK])
        tile = weight_tile(w, s, z, e * K + k, bn * BN, G, KIND, OT, ST, HAS_Z, BM, BN, BK)
        acc = tl.dot(a, tile, acc)
    if TENSOR_SCALE:
        acc = acc * t
    tl.store(y, [rows[:, None], bn * BN], acc.to(YT))


@kernel(warps=4)
def moe_sum(
    p: Tensor[dtypes.f32, "T", "TOPK", "N"],
    weights: Tensor[dtypes.f32, "T", "TOPK"],
    y: Tensor["OT", "T", "N"],
    OT: constexpr = dtypes.f16,
    TOPK: constexpr = 2,
    BT: constexpr = 4,
    BN: constexpr = 256,
):
    """y[t] = Σ_j weights[t, j] · p[t, j], added in slot order in f32, rounded once."""
    bt, bn = tl.blocks(tl.cdiv(T, BT), tl.cdiv(N, BN))
    acc = tl.zeros([BT, BN], tl.f32)
    for j in range(TOPK):  # unrolled: the slots in order, whatever their expert
        part = tl.reshape(tl.load(p, [bt * BT, j, bn * BN], [BT, 1, BN]), [BT, BN])
        acc = acc + tl.load(weights, [bt * BT, j], [BT, 1]) * part
    tl.store(y, [bt * BT, bn * BN], acc.to(OT))


# ---------------------------------------------------------------------------- calls


@dataclass(frozen=True)
class MoeLaunch(KernelCall):
    """One kernel of a `moe_matmul` call (a `KernelCall`: its constexprs, sizes, value
    facts, and for the GEMM the tile its scales are read for)."""

    def compile(self, target: str):
        """The kernel compiled for `target` with the call's size and value facts."""
        from tilelang.runtime.launch_facts import size_facts

        facts = {**size_facts(self.sizes), **self.values}
        return self.kernel.compile(assume=facts, target=target, **self.constexprs)


@dataclass(frozen=True)
class MoePlan:
    """The launches of a call of T tokens with top_k slots each (`plan_moe`)."""

    ops: Operands
    align: MoeLaunch
    gemm: MoeLaunch
    sum: MoeLaunch | None


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def plan_moe(
    qe: QuantizedExperts,
    tokens: int,
    top_k: int,
    *,
    x_dtype: Any = "f16",
    weighted: bool = True,
    arch: str = "sm_90",
) -> MoePlan:
    """The three launches (`moe_align`, `moe_gemm`, and `moe_sum` when `weighted`) of a
    `moe_matmul` of `tokens` rows of `x_dtype` with `top_k` experts each, the tile
    chosen for `arch` (module docstring); `MoeLaunch.compile` builds one."""
    if not isinstance(qe, QuantizedExperts):
        raise TypeError(f"qe must be a tilelang.quant.QuantizedExperts, got {type(qe).__name__}")
    ops = operands(qe.stacked, x_dtype)
    e, k, n = qe.shape
    ot = ops.constexprs["OT"]
    choice = choose(BLOCK_M, k, n, arch, packing=ops.packing, wgmma=False)
    slots = tokens * top_k
    groups = _next_power_of_two(e + 1)
    rows = slots + (e + 1) * (BLOCK_M - 1)  # every group's run padded to BLOCK_M rows
    blocks = -(-rows // BLOCK_M)
    align = MoeLaunch(
        moe_align,
        {"E": e, "EP": groups, "BM": BLOCK_M, "BT": max(16, min(128, 2048 // groups))},
        {"S": slots, "P": rows, "NB": blocks},
        None,
    )
    scale_tile = (choice.bk, BLOCK_M, choice.warps)
    sk, sn = ops.scales_for(*scale_tile).shape
    zk, zn = ops.zeros.shape if ops.zeros is not None else (1, 1)
    weight = {
        name: ops.constexprs[name]
        for name in ("OT", "WT", "ST", "ZT", "KIND", "G", "HAS_Z", "TENSOR_SCALE", "PK")
    }
    gemm = MoeLaunch(
        moe_gemm,
        {
            **weight,
            "YT": dtypes.f32 if weighted else ot,
            "E": e,
            "TOPK": top_k,
            "BM": BLOCK_M,
            "BN": BLOCK_N,
            "BK": choice.bk,
            "WARPS": choice.warps,
            "STAGES": choice.stages,
        },
        {"M": tokens, "K": k, "N": n, "SK": sk, "SN": sn, "ZK": zk, "ZN": zn}
        | {"P": rows, "NB": blocks, "S": slots},
        "w",
        dict(ops.facts),
        scale_tile,
    )
    total = None
    if weighted:
        total = MoeLaunch(moe_sum, {"OT": ot, "TOPK": top_k}, {"T": tokens, "N": n}, None)
    return MoePlan(ops, align, gemm, total)


def moe_matmul(
    x: Any,
    qe: QuantizedExperts,
    topk_ids: Any,
    topk_weights: Any = None,
    out: Any = None,
    *,
    arch: str | None = None,
) -> Any:
    """The experts' products for each token (module docstring): x [T, K] of f16 or bf16,
    `topk_ids` [T, top_k] integer expert ids (-1: no expert, the slot adds nothing),
    `topk_weights` [T, top_k] f32 or None. Returns y [T, N] = Σ_j topk_weights[t, j] ·
    (x[t] @ W[topk_ids[t, j]]) (f32 sum, rounded once to x's type), or without weights
    the slot products [T, top_k, N] (a slot of id -1: zeros); `out`, when given, is
    written and returned. numpy arrays, and CPU tensors of torch or any DLPack library
    (as `matmul` takes them; bf16 too), run on the CPU backend, which refuses an id
    outside [-1, E); torch CUDA tensors run on the GPU (compiled for sm_80 and sm_90a
    without spills, not yet measured), which does not check the ids (a device sync)
    and treats such an id as -1 (module docstring). `arch`: whose tile choice
    (default: the device's; sm_90 on the CPU)."""
    if not isinstance(qe, QuantizedExperts):
        raise TypeError(f"qe must be a tilelang.quant.QuantizedExperts, got {type(qe).__name__}")
    if gpu.is_device_array(x):
        return _device_moe(x, qe, topk_ids, topk_weights, out, arch)
    return _host_moe(x, qe, topk_ids, topk_weights, out, arch or "sm_90")


@accepts_host_tensors
def _host_moe(x, qe: QuantizedExperts, topk_ids, topk_weights, out, arch: str) -> np.ndarray:
    """The CPU-backend path of `moe_matmul` (other libraries' host tensors as numpy
    views, as `quant.matmul` takes them: `runtime.host_calls`)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"x must be a numpy array (the CPU backend) or a device tensor, got {type(x).__name__}"
        )
    e, k, n = qe.shape
    ot = _host_dtype(x, "x")
    if x.ndim != 2 or x.shape[1] != k:
        raise ValueError(
            f"x must have shape [T, K] with K = {k} (the experts' rows), got {list(x.shape)}"
        )
    tokens = x.shape[0]
    ids = _host_ids(topk_ids, tokens, e)
    top_k = ids.shape[1]
    weights = None if topk_weights is None else _host_weights(topk_weights, ids.shape)
    shape = (tokens, n) if weights is not None else (tokens, top_k, n)
    y = _host_out(out, x, shape)
    if tokens == 0 or top_k == 0:
        if weights is not None:
            y[...] = 0
        return y
    plan = plan_moe(qe, tokens, top_k, x_dtype=ot, weighted=weights is not None, arch=arch)
    ops = plan.ops
    tensors = cached(ops.source, ("host tensors", ot), lambda: _Tensors.of(ops, _on_host))
    slots = tokens * top_k
    sorted_ids = np.empty(plan.align.sizes["P"], np.int32)
    expert_ids = np.empty(plan.align.sizes["NB"], np.int32)
    moe_align(ids.reshape(slots), sorted_ids, expert_ids, **plan.align.constexprs)
    products = y.reshape(slots, n) if weights is None else np.empty((slots, n), np.float32)
    weight = (tensors.w, tensors.s(plan.gemm), tensors.z)
    args = (np.ascontiguousarray(x), *weight, sorted_ids, expert_ids, products, ops.t)
    moe_gemm(*args, assume=plan.gemm.values, **plan.gemm.constexprs)
    if weights is not None:
        moe_sum(products.reshape(tokens, top_k, n), weights, y, **plan.sum.constexprs)
    return y


def _host_array(value: Any, what: str) -> np.ndarray:
    if gpu.is_device_array(value):
        raise TypeError(
            f"{what} must be a host array like x (numpy, or a CPU tensor), got a device "
            f"tensor {type(value).__name__}"
        )
    return np.asarray(value)


def _host_ids(topk_ids: Any, tokens: int, experts: int) -> np.ndarray:
    ids = _host_array(topk_ids, "topk_ids")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"topk_ids must be an integer array (int32), got {ids.dtype}")
    if ids.ndim != 2 or ids.shape[0] != tokens:
        raise ValueError(
            f"topk_ids must have shape [T, top_k] with T = {tokens} (x's rows), got "
            f"{list(ids.shape)}"
        )
    bad = (ids < -1) | (ids >= experts)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"topk_ids must be expert ids in [0, {experts}) or -1 (no expert), got "
            f"{int(ids[where])} at {where}"
        )
    return np.ascontiguousarray(ids, dtype=np.int32)


def _host_weights(topk_weights: Any, shape: tuple[int, int]) -> np.ndarray:
    weights = _host_array(topk_weights, "topk_weights")
    if weights.dtype != np.float32:
        raise TypeError(f"topk_weights must be a float32 array, got {weights.dtype}")
    if weights.shape != shape:
        raise ValueError(
            f"topk_weights must have topk_ids' shape {list(shape)}, got {list(weights.shape)}"
        )
    return np.ascontiguousarray(weights)


def _device_moe(x, qe: QuantizedExperts, topk_ids, topk_weights, out, arch) -> Any:
    """The GPU path (torch CUDA tensors; compiled in the tests, not yet measured): the
    same three launches on x's stream, the weight's tensors copied to the device once.
    The ids' values are not checked (no sync): one outside [-1, E) counts as -1."""
    if not gpu.is_torch_tensor(x):
        raise TypeError("x: the GPU path of moe_matmul takes torch CUDA tensors")
    import torch  # a torch tensor was handed over

    names = {torch.float16: dtypes.f16, torch.bfloat16: dtypes.bf16}
    if x.dtype not in names:
        raise TypeError(f"x must hold float16 or bfloat16 values, got {x.dtype}")
    _, k, n = qe.shape
    if x.dim() != 2 or x.shape[1] != k:
        raise ValueError(
            f"x must have shape [T, K] with K = {k} (the experts' rows), got {list(x.shape)}"
        )
    tokens = x.shape[0]
    if topk_ids.dtype != torch.int32 or topk_ids.dim() != 2 or topk_ids.shape[0] != tokens:
        raise ValueError(
            f"topk_ids must be an int32 tensor of shape [T, top_k] with T = {tokens}, got "
            f"{topk_ids.dtype} {list(topk_ids.shape)}"
        )
    top_k = topk_ids.shape[1]
    weighted = topk_weights is not None
    if weighted and (topk_weights.dtype != torch.float32 or topk_weights.shape != topk_ids.shape):
        raise ValueError(
            f"topk_weights must be a float32 tensor of topk_ids' shape "
            f"{list(topk_ids.shape)}, got {topk_weights.dtype} {list(topk_weights.shape)}"
        )
    shape = (tokens, n) if weighted else (tokens, top_k, n)
    if out is None:
        out = torch.empty(shape, dtype=x.dtype, device=x.device)
    elif tuple(out.shape) != shape or out.dtype != x.dtype:
        raise ValueError(f"out must be a {x.dtype} tensor of shape {list(shape)}")
    if tokens == 0 or top_k == 0:
        return out.zero_() if weighted else out
    plan = plan_moe(
        qe, tokens, top_k, x_dtype=names[x.dtype], weighted=weighted, arch=arch or gpu.device_arch()
    )
    ops = plan.ops
    key = ("device tensors", ops.constexprs["OT"])
    tensors = cached(ops.source, key, lambda: _Tensors.of(ops, gpu.DeviceBuffer))
    slots = tokens * top_k
    device = x.device
    sorted_ids = torch.empty(plan.align.sizes["P"], dtype=torch.int32, device=device)
    expert_ids = torch.empty(plan.align.sizes["NB"], dtype=torch.int32, device=device)
    moe_align(topk_ids.contiguous().view(slots), sorted_ids, expert_ids, **plan.align.constexprs)
    if weighted:
        products = torch.empty((slots, n), dtype=torch.float32, device=device)
    else:
        products = out.view(slots, n)
    weight = (tensors.w, tensors.s(plan.gemm), tensors.z)
    args = (x.contiguous(), *weight, sorted_ids, expert_ids, products, ops.t)
    moe_gemm(*args, assume=plan.gemm.values, **plan.gemm.constexprs)
    if weighted:
        moe_sum(
            products.view(tokens, top_k, n),
            topk_weights.contiguous(),
            out,
            **plan.sum.constexprs,
        )
    return out


__all__ = ["MoePlan", "QuantizedExperts", "moe_matmul", "plan_moe", "quantize_experts"]
