"""The attention and scan kernels of `tilelang.kernels` on the GPU, each number beside a
baseline measured in the same run (issue 12's targets):

* `flash_attention` forward, D=128, causal and not, q, k, v [4, 4096, 32, 128] f16: vs
  torch `scaled_dot_product_attention` with the flash backend (target: at least 90 % of
  its speed); the floor is the longer of the flops at the card's f16 tensor peak and
  the bytes (q, k, v, o once each) at its DRAM bandwidth. On an H100 (sm_90a, where
  the kernel reads K and V through the warpgroup mma) the build for sm_90 (mma.sync)
  is timed and checked too, first, in the same run (`mma_sync_build`).
* `paged_decode_attention` at batch 64, context 4096 (32 query heads over 8 KV heads,
  D=128, f16 cache in pages of 16 tokens, the table shuffled): vs a torch device copy
  moving as many bytes as the KV cache holds, in the same run (target: at least 85 % of
  that bandwidth).
* `selective_scan` (Mamba-1 forward) at batch 8 (and 1), Dm 2048, N 16, L 2048, f16 with D, z,
  delta_bias and softplus: vs its bandwidth floor, the bytes it must move (`scan_bytes`)
  at the bandwidth of a torch device copy of as many bytes in the same run (target: at
  least 80 % of that floor); mamba_ssm's `selective_scan_fn` beside it when installed.

Results are checked against float32 references computed with torch from the definition
(explicit products and a softmax): the forward on a slice of (batch, head) pairs, within
max(2 × torch's own error, 2e-3) as flash-attn's tests bound theirs; the decode on two
sequences, within 2e-3; the scan, before it is timed, against a numpy float64 recurrence
(`scan_reference`, step by step along L) on a slice of batches and channels, within
`SCAN_TOLERANCE` of the slice's largest output (f16 rounds to 2^-11). The checks are
device-agnostic: tests/test_gpu_check.py rehearses them on the CPU with the CPU backend
standing in for the GPU.

    python3 benchmarks/gpu_attention.py
"""

from __future__ import annotations

import math
import time
from typing import Any

from gpu_common import (
    Case,
    Context,
    benchmark_record,
    compare,
    floor_seconds,
    kept_if_failing,
    measurement,
    mma_sync_build,
    rate_text,
    require,
    target_record,
    time_gpu,
    time_text,
)

#: The forward's shape: FlashAttention-2's benchmark (16k tokens of 32 heads of 128).
FORWARD = dict(batch=4, seq=4096, heads=32, head_dim=128)
#: The decode's shape: batch 64, context 4096, GQA 4 (Llama-3-8B's heads).
DECODE = dict(batch=64, context=4096, heads=32, kv_heads=8, head_dim=128, block_size=16)
FORWARD_TARGET = 0.90  # of torch's flash SDPA speed
DECODE_TARGET = 0.85  # of the copy bandwidth over the KV bytes
#: The forward is checked on this many batches and heads (the f32 scores are [S, S]).
CHECKED_BATCHES, CHECKED_HEADS = 1, 2
DECODE_CHECKED = 2  # sequences
MIN_TOLERANCE = 2e-3
#: The scan's shape: a serving batch of 2048-token prompts through Mamba-370m's inner
#: width (d_inner 2048, d_state 16), as mamba_ssm lays it out ([batch, Dm, L]).
SCAN = dict(batch=8, channels=2048, state=16, length=2048)
#: One prompt: 64 warps of channels, so the walk cuts L into 8 segments.
SCAN_ONE = dict(SCAN, batch=1)
SCAN_TARGET = 0.80  # of the bandwidth floor
#: The scan's output is f16 (rounded once, relative 2^-11); its f32 recurrence over 2048
#: steps stays far below that. Relative to the checked slice's largest |output|.
SCAN_TOLERANCE = 2e-3


# --------------------------------------------------------------------------- the forward


def forward_inputs(torch, device: str, batch: int, seq: int, heads: int, head_dim: int):
    """q, k, v [batch, seq, heads, head_dim] f16, standard normal."""
    generator = torch.Generator(device=device).manual_seed(seq)
    shape = (batch, seq, heads, head_dim)
    return tuple(
        torch.randn(shape, device=device, generator=generator).to(torch.float16) for _ in range(3)
    )


def forward_reference(torch, q, k, v, causal: bool):
    """float32 softmax(q kᵀ / √D) v of the checked (batch, head) pairs, [b, S, h, D];
    causal: query i sees keys j <= i."""
    q, k, v = (x[:CHECKED_BATCHES, :, :CHECKED_HEADS].float() for x in (q, k, v))
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(q.shape[-1])
    if causal:
        n = scores.shape[-1]
        seen = torch.ones(n, n, dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~seen, float("-inf"))
    return torch.einsum("bhij,bjhd->bihd", torch.softmax(scores, dim=-1), v)


def torch_attention(torch, q, k, v, causal: bool):
    """torch's scaled_dot_product_attention on [B, S, H, D] tensors (it takes [B, H, S, D]);
    the backend is whatever the caller's `sdpa_kernel` context allows."""
    out = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal
    )
    return out.transpose(1, 2)


def check_forward(torch, ours, theirs, q, k, v, causal: bool):
    """(our check, torch's error): both against `forward_reference`; ours must be within
    max(2 × torch's max error, MIN_TOLERANCE), else CheckFailed."""
    reference = forward_reference(torch, q, k, v, causal).cpu().numpy()

    def checked(x):
        return x[:CHECKED_BATCHES, :, :CHECKED_HEADS].float().cpu().numpy()

    torch_error = compare(checked(theirs), reference, "abs", math.inf)
    tolerance = max(2 * torch_error.max_abs, MIN_TOLERANCE)
    check = require(compare(checked(ours), reference, "abs", tolerance), "tilelang flash_attention")
    return check, torch_error


def forward_flops(batch: int, seq: int, heads: int, head_dim: int, causal: bool) -> float:
    """Two products of [S, D] by [D, S] (S by [S, D]) per (batch, head); causal ones
    compute the S(S+1)/2 visible scores."""
    pairs = seq * (seq + 1) / 2 if causal else seq * seq
    return 4.0 * batch * heads * pairs * head_dim


def forward_case(causal: bool) -> Case:
    shape = FORWARD

    def run(context: Context) -> dict[str, Any]:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        from tilelang.kernels import flash_attention

        torch = context.torch
        q, k, v = forward_inputs(torch, "cuda", **shape)
        holder: dict[str, Any] = {}

        def ours_launch():
            holder["ours"] = flash_attention(q, k, v, causal=causal)

        def theirs_launch():
            holder["theirs"] = torch_attention(torch, q, k, v, causal)

        ours = time_gpu(ours_launch)
        out = holder["ours"]
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # raises if flash cannot run
            theirs = time_gpu(theirs_launch)
        # Timed and checked first: its number stands even if the device's build fails.
        sync = mma_sync_build(lambda: time_gpu(ours_launch))
        if sync is not None:
            sync_check, _ = check_forward(torch, holder["ours"], holder["theirs"], q, k, v, causal)
        with kept_if_failing(sync and sync.median_s, "the sm_90 build (mma.sync)"):
            check, torch_error = check_forward(torch, out, holder["theirs"], q, k, v, causal)
        flops = forward_flops(**shape, causal=causal)
        nbytes = 4 * q.nbytes  # q, k, v read and o written once
        bandwidth, what = context.bandwidth()
        peak_flops, flops_what = context.f16_flops()
        fraction = theirs.median_s / ours.median_s
        record = benchmark_record(
            shape=(
                f"B={shape['batch']} S={shape['seq']} H={shape['heads']} D={shape['head_dim']} "
                f"f16{' causal' if causal else ''}"
            ),
            ours=measurement("tilelang flash_attention", ours.median_s, nbytes, flops),
            baseline=measurement("torch SDPA (flash backend)", theirs.median_s, nbytes, flops),
            floor=measurement(
                f"{flops_what}; {what}",
                floor_seconds(nbytes, bandwidth, flops, peak_flops),
                nbytes,
                flops,
                bound="tensor cores" if peak_flops else "DRAM",
            ),
            timing=ours,
            baseline_timing=theirs,
            check=f"vs f32 reference ({CHECKED_BATCHES}x{CHECKED_HEADS} pairs): {check.describe()}",
            notes=(
                f"{fraction:.0%} of torch flash's speed, target {FORWARD_TARGET:.0%}: "
                f"{'met' if fraction >= FORWARD_TARGET else 'NOT met'}; torch vs f32 "
                f"reference: max abs diff {torch_error.max_abs:.3g}"
                + (
                    f"; the sm_90 build (mma.sync, no wgmma) in the same run: "
                    f"{sync.median_s * 1e3:.3f} ms, {sync_check.describe()}"
                    if sync is not None
                    else ""
                )
            ),
        )
        record["target"] = target_record(fraction, FORWARD_TARGET, "of torch flash SDPA's speed")
        if sync is not None:
            record["mma_sync_build"] = measurement(
                "tilelang flash_attention built for sm_90 (mma.sync, no wgmma)",
                sync.median_s,
                nbytes,
                flops,
            ) | {"check": sync_check.describe()}
        return record

    name = f"flash_attention D=128{' causal' if causal else ''} vs torch flash SDPA"
    return Case(name, 20.0, run, "tilelang forward vs torch SDPA (flash) vs tensor-core floor")


# --------------------------------------------------------------------------- the decode


def decode_inputs(
    torch,
    device: str,
    batch: int,
    context: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    block_size: int,
):
    """q [batch, heads, D] f16; the caches [num_blocks, block_size, kv_heads, D] f16, every
    page in use, the table [batch, pages] a random permutation of them (int32);
    seq_lens [batch] = context."""
    generator = torch.Generator(device=device).manual_seed(context)
    pages = -(-context // block_size)
    blocks = batch * pages

    def normal(*shape):
        return torch.randn(shape, device=device, generator=generator).to(torch.float16)

    q = normal(batch, heads, head_dim)
    k_cache = normal(blocks, block_size, kv_heads, head_dim)
    v_cache = normal(blocks, block_size, kv_heads, head_dim)
    order = torch.randperm(blocks, device=device, generator=generator)
    table = order.reshape(batch, pages).to(torch.int32)
    seq_lens = torch.full((batch,), context, device=device, dtype=torch.int32)
    return q, k_cache, v_cache, table, seq_lens


def quantize_per_token(torch, cache):
    """A u8 cache of `cache` [blocks, block_size, H_kv, D] as `paged_decode_attention`
    takes one: per-token (one per [block, row, head]) asymmetric codes over the row's
    range, c = round(x / s + z) clamped to 0..255, s = (max − min) / 255, z = round(−min
    / s); returns (codes uint8, s f32, z f32 [blocks, block_size, H_kv]) and the values
    the codes stand for, (c − z)·s, as f32 (what the reference attends over)."""
    x = cache.float()
    low, high = x.amin(dim=-1), x.amax(dim=-1)
    scale = ((high - low) / 255).clamp_min(1e-8)
    zero = torch.round(-low / scale)
    codes = torch.clamp(torch.round(x / scale[..., None] + zero[..., None]), 0, 255)
    codes = codes.to(torch.uint8)
    values = (codes.float() - zero[..., None]) * scale[..., None]
    return codes, scale, zero, values


def decode_reference(torch, q, k_cache, v_cache, table, seq_lens):
    """float32 attention of the first DECODE_CHECKED sequences' queries over their
    tokens (token t in row t % block_size of page table[b, t // block_size]), [b, H, D]."""
    heads, kv_heads = q.shape[1], k_cache.shape[2]
    outs = []
    for b in range(min(DECODE_CHECKED, q.shape[0])):
        n = int(seq_lens[b])
        t = torch.arange(n, device=q.device)
        page, row = table[b].long()[t // k_cache.shape[1]], t % k_cache.shape[1]
        keys = k_cache[page, row].float().repeat_interleave(heads // kv_heads, dim=1)
        values = v_cache[page, row].float().repeat_interleave(heads // kv_heads, dim=1)
        scores = torch.einsum("hd,thd->ht", q[b].float(), keys) / math.sqrt(q.shape[-1])
        outs.append(torch.einsum("ht,thd->hd", torch.softmax(scores, dim=-1), values))
    return torch.stack(outs)


def check_decode(torch, ours, q, k_cache, v_cache, table, seq_lens):
    """Ours on the checked sequences against `decode_reference`, within MIN_TOLERANCE."""
    reference = decode_reference(torch, q, k_cache, v_cache, table, seq_lens).cpu().numpy()
    checked = ours[:DECODE_CHECKED].float().cpu().numpy()
    return require(
        compare(checked, reference, "abs", MIN_TOLERANCE), "tilelang paged_decode_attention"
    )


def decode_case(cache: str = "f16") -> Case:
    """The decode at `DECODE` over an f16 cache, or (cache="u8") over the same values
    quantized per token with scales and zero points (`quantize_per_token`): the copy
    baseline moves the bytes the kernel must read, codes, scales and zero points."""
    shape = DECODE

    def run(context: Context) -> dict[str, Any]:
        from tilelang.kernels import paged_decode_attention

        torch = context.torch
        q, k_cache, v_cache, table, seq_lens = decode_inputs(torch, "cuda", **shape)
        kv = [k_cache, v_cache]
        options: dict[str, Any] = {}
        if cache == "u8":
            (kc, ks, kz, k_values), (vc, vs, vz, v_values) = (
                quantize_per_token(torch, x) for x in (k_cache, v_cache)
            )
            options = dict(k_scale=ks, v_scale=vs, k_zero=kz, v_zero=vz)
            kv = [kc, vc, ks, vs, kz, vz]
            k_cache, v_cache = kc, vc
        holder: dict[str, Any] = {}

        def ours_launch():
            holder["ours"] = paged_decode_attention(q, k_cache, v_cache, table, seq_lens, **options)

        kv_bytes = sum(x.nbytes for x in kv)
        source = torch.empty(kv_bytes // 2, dtype=torch.uint8, device="cuda")
        target = torch.empty_like(source)  # read + written: kv_bytes moved
        ours = time_gpu(ours_launch)
        copy = time_gpu(lambda: target.copy_(source))
        attended = (k_values, v_values) if cache == "u8" else (k_cache, v_cache)
        check = check_decode(torch, holder["ours"], q, *attended, table, seq_lens)
        nbytes = kv_bytes + 2 * q.nbytes + table.nbytes + seq_lens.nbytes
        bandwidth, what = context.bandwidth()
        fraction = copy.median_s / ours.median_s
        layout = "f16 cache" if cache == "f16" else "u8 cache, per-token scales and zero points"
        record = benchmark_record(
            shape=(
                f"batch={shape['batch']} context={shape['context']} H={shape['heads']} "
                f"H_kv={shape['kv_heads']} D={shape['head_dim']} pages of "
                f"{shape['block_size']}, {layout}"
            ),
            ours=measurement("tilelang paged_decode_attention", ours.median_s, nbytes),
            baseline=measurement("torch device copy of the KV bytes", copy.median_s, kv_bytes),
            floor=measurement(what, floor_seconds(nbytes, bandwidth), nbytes, bound="DRAM"),
            timing=ours,
            baseline_timing=copy,
            check=f"vs f32 reference ({DECODE_CHECKED} sequences): {check.describe()}",
            notes=(
                f"{fraction:.0%} of the copy bandwidth over the KV bytes, target "
                f"{DECODE_TARGET:.0%}: {'met' if fraction >= DECODE_TARGET else 'NOT met'}"
            ),
        )
        record["target"] = target_record(fraction, DECODE_TARGET, "of the copy bandwidth")
        return record

    suffix = "" if cache == "f16" else f" ({cache} cache)"
    return Case(
        f"paged_decode_attention batch=64 context=4096{suffix} vs copy bandwidth",
        20.0,
        run,
        "tilelang paged decode vs a torch copy of the KV bytes vs DRAM floor",
    )


# --------------------------------------------------------------------------- the scan


def scan_bytes(
    batch: int, channels: int, state: int, length: int, itemsize: int, groups: int = 1
) -> int:
    """What `selective_scan` with D, z and delta_bias must move, each tensor once: u,
    delta, z read and out written ([batch, Dm, L] in the inputs' dtype), B and C read
    ([batch, G, N, L], same dtype), A ([Dm, N]), D and delta_bias ([Dm]) read as f32."""
    sequences = 4 * batch * channels * length * itemsize
    projections = 2 * batch * groups * state * length * itemsize
    parameters = (channels * state + 2 * channels) * 4
    return sequences + projections + parameters


def copy_bandwidth(moved_bytes: float, seconds: float) -> float:
    """Bytes per second of a copy that read and wrote `moved_bytes` in all."""
    if seconds <= 0:
        raise ValueError(f"seconds: expected a positive copy time, got {seconds!r}")
    return moved_bytes / seconds


def scan_inputs(torch, device: str, batch: int, channels: int, state: int, length: int):
    """Mamba-1's tensors as mamba_ssm takes them, with its initializations: u, delta
    (before the bias and softplus), z [batch, Dm, L] and B, C [batch, N, L] f16, standard
    normal (delta halved); A [Dm, N] = -(1 .. N) per channel (S4D-real); D [Dm] standard
    normal; delta_bias [Dm] = softplus⁻¹ of step sizes log-uniform in [1e-3, 0.1]; f32."""
    generator = torch.Generator(device=device).manual_seed(length)

    def normal(*shape, scale=1.0):
        values = torch.randn(shape, device=device, generator=generator) * scale
        return values.to(torch.float16)

    u = normal(batch, channels, length)
    delta = normal(batch, channels, length, scale=0.5)
    z = normal(batch, channels, length)
    B = normal(batch, state, length)
    C = normal(batch, state, length)
    A = -torch.arange(1, state + 1, device=device, dtype=torch.float32).repeat(channels, 1)
    D = torch.randn(channels, device=device, generator=generator)
    uniform = torch.rand(channels, device=device, generator=generator)
    steps = torch.exp(math.log(1e-3) + uniform * (math.log(0.1) - math.log(1e-3)))
    delta_bias = steps + torch.log(-torch.expm1(-steps))  # softplus(bias) = steps
    return dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)


def scan_reference(u, delta, A, B, C, D, z, delta_bias):
    """Mamba-1's selective scan with softplus, in float64, one step at a time (numpy
    arrays: u, delta, z [b, d, L]; A [d, N]; B, C [b, N, L]; D, delta_bias [d]):
    Δ = softplus(delta + bias); h = exp(Δ·A)·h + Δ·B·u from h = 0;
    y = (C·h + D·u)·silu(z)."""
    import numpy as np

    u, delta, A, B, C, D, z, bias = (
        np.asarray(x, np.float64) for x in (u, delta, A, B, C, D, z, delta_bias)
    )
    step = np.logaddexp(0.0, delta + bias[None, :, None])
    state = np.zeros(u.shape[:2] + A.shape[1:])
    out = np.empty_like(u)
    for t in range(u.shape[2]):
        dt = step[:, :, t, None]
        state = np.exp(dt * A[None]) * state + dt * B[:, None, :, t] * u[:, :, t, None]
        out[:, :, t] = np.einsum("bdn,bn->bd", state, C[:, :, t])
    out += D[None, :, None] * u
    return out * z / (1.0 + np.exp(-z))


def scan_checked_channels(channels: int) -> list[int]:
    """The channels the check covers: neighbours within one block, one in the middle and
    the last (blocks at both ends of the grid)."""
    return sorted({0, 1, 2, 3, 5, channels // 2 + 1, channels - 1} & set(range(channels)))


def check_scan(torch, ours, inputs: dict):
    """Ours on the first and last batch and `scan_checked_channels` against
    `scan_reference`, within SCAN_TOLERANCE of the slice's largest output."""
    batch, channels = inputs["u"].shape[:2]
    rows = torch.tensor(sorted({0, batch - 1}), device=ours.device)
    cols = torch.tensor(scan_checked_channels(channels), device=ours.device)

    def host(x, batch_axis: int | None, channel_axis: int | None):
        """x at the checked batches and channels (where it has those axes), float32."""
        if batch_axis is not None:
            x = x.index_select(batch_axis, rows)
        if channel_axis is not None:
            x = x.index_select(channel_axis, cols)
        return x.float().cpu().numpy()

    axes = dict(u=(0, 1), delta=(0, 1), z=(0, 1), B=(0, None), C=(0, None))
    axes |= dict(A=(None, 0), D=(None, 0), delta_bias=(None, 0))
    sliced = {name: host(inputs[name], *where) for name, where in axes.items()}
    reference = scan_reference(**sliced)
    return require(
        compare(host(ours, 0, 1), reference, "rel", SCAN_TOLERANCE), "tilelang selective_scan"
    )


def mamba_scan() -> tuple[Any, str]:
    """(mamba_ssm's `selective_scan_fn`, "") or (None, why it is not there)."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ModuleNotFoundError:
        return None, "mamba_ssm: not installed"
    except (ImportError, OSError) as error:  # installed, but its extension does not load
        return None, f"mamba_ssm: not importable ({type(error).__name__}: {error})"
    return selective_scan_fn, ""


def scan_case(shape: dict[str, int] = SCAN) -> Case:

    def run(context: Context) -> dict[str, Any]:
        from tilelang.kernels import selective_scan

        torch = context.torch
        inputs = scan_inputs(torch, "cuda", **shape)
        holder: dict[str, Any] = {}

        def ours_launch():
            holder["ours"] = selective_scan(**inputs, delta_softplus=True)

        started = time.perf_counter()
        ours_launch()  # compiles and tunes BD on the first call
        torch.cuda.synchronize()
        first_s = time.perf_counter() - started
        check = check_scan(torch, holder["ours"], inputs)
        ours = time_gpu(ours_launch)
        nbytes = scan_bytes(**shape, itemsize=inputs["u"].element_size())
        source = torch.empty(nbytes // 2, dtype=torch.uint8, device="cuda")
        target = torch.empty_like(source)  # read + written: about nbytes moved
        copy = time_gpu(lambda: target.copy_(source))
        bandwidth = copy_bandwidth(2 * source.nbytes, copy.median_s)
        floor_s = floor_seconds(nbytes, bandwidth)
        fraction = floor_s / ours.median_s
        peak, peak_what = context.bandwidth()
        theirs_fn, missing = mamba_scan()
        baseline = measurement("torch device copy of as many bytes", copy.median_s, nbytes)
        baseline_timing, mamba_note = copy, missing
        if theirs_fn is not None:

            def theirs_launch():
                holder["theirs"] = theirs_fn(**inputs, delta_softplus=True)

            theirs = time_gpu(theirs_launch)
            their_check = check_scan(torch, holder["theirs"], inputs)
            baseline = measurement("mamba_ssm selective_scan_fn", theirs.median_s, nbytes)
            baseline_timing = theirs
            mamba_note = (
                f"mamba_ssm selective_scan_fn {time_text(theirs.median_s)}, ours "
                f"{theirs.median_s / ours.median_s:.0%} of its speed; its check: "
                f"{their_check.describe()}"
            )
        record = benchmark_record(
            shape=(
                f"B={shape['batch']} Dm={shape['channels']} N={shape['state']} "
                f"L={shape['length']} f16, D, z, delta_bias, softplus"
            ),
            ours=measurement("tilelang selective_scan", ours.median_s, nbytes),
            baseline=baseline,
            floor=measurement(
                f"the bytes at the same run's copy bandwidth, {rate_text(bandwidth)}",
                floor_s,
                nbytes,
                bound="DRAM (measured copy)",
            ),
            timing=ours,
            baseline_timing=baseline_timing,
            check=(
                f"vs float64 numpy recurrence ({len({0, shape['batch'] - 1})} batches x "
                f"{len(scan_checked_channels(shape['channels']))} channels): {check.describe()}"
            ),
            notes=(
                f"{fraction:.0%} of the bandwidth floor, target {SCAN_TARGET:.0%}: "
                f"{'met' if fraction >= SCAN_TARGET else 'NOT met'}; "
                f"{nbytes / ours.median_s / peak:.0%} of {peak_what}; first call (compile "
                f"and tune) {first_s:.1f} s; {mamba_note}"
            ),
        )
        record["target"] = target_record(fraction, SCAN_TARGET, "of the bandwidth floor")
        return record

    return Case(
        f"selective_scan B={shape['batch']} Dm={shape['channels']} N={shape['state']} "
        f"L={shape['length']} vs bandwidth floor",
        10.0,
        run,
        "tilelang Mamba-1 scan vs the bytes at the same run's copy bandwidth "
        "(vs mamba_ssm when installed)",
    )


def cases() -> list[Case]:
    return [
        forward_case(False),
        forward_case(True),
        decode_case(),
        scan_case(),
        decode_case("u8"),
        scan_case(SCAN_ONE),
    ]


if __name__ == "__main__":
    import sys

    from gpu_common import run_standalone

    sys.exit(run_standalone(cases()))
