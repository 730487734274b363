"""The quantized matmul example (examples/quant_matmul.py) on the GPU at decode shapes:
y[m x n] = x[m x k] f16 @ dequant(W u4 [k x n], one f16 scale per 128 rows), m = 1..16.

Beside each time: torch's f16 matmul of the already-dequantized weights (`x @ W16`,
measured in the same run; it reads 4x the weight bytes), and the bandwidth floor: the
bytes the kernel must move (x, packed W, scales, y; the packed weights are nearly all of
it) at the card's DRAM bandwidth (gpu_common.Context.bandwidth). Every result is checked
against a float32 torch matmul of the same dequantized weights, within the example's
tolerance.

    python3 benchmarks/gpu_quant_matmul.py
"""

from __future__ import annotations

import functools
from typing import Any

from gpu_common import (
    Case,
    Context,
    benchmark_record,
    compare,
    floor_seconds,
    load_example,
    measurement,
    require,
    time_gpu,
)

GROUP = 128
SHAPES = ((4096, 4096), (8192, 28672))  # (k, n): a 4096-wide projection, a Llama-70B MLP
MS = (1, 2, 4, 8, 16)
TILES = ({}, {"BN": 32})  # the example's defaults, then narrower column tiles (more blocks)


def _is_torch(value: Any) -> bool:
    return type(value).__module__.split(".")[0] == "torch"


def unpack_u4(data: Any) -> Any:
    """Codes of a packed u4 byte array (numpy or torch, one dimension): element 2i is the
    low nibble of byte i, element 2i + 1 the high one (tilelang.dtypes.pack_bits)."""
    low, high = data & 15, data >> 4
    if _is_torch(data):
        import torch

        return torch.stack((low, high), dim=-1).reshape(-1)
    import numpy as np

    return np.stack((low, high), axis=-1).reshape(-1)


def dequantize_u4(data: Any, scales: Any, k: int, n: int, group: int) -> Any:
    """dequant(W)[k, n] = W[k, n] * s[k // group, n] in f16 (the kernel's rounding)."""
    codes = unpack_u4(data)[: k * n].reshape(k, n)
    if _is_torch(data):
        import torch

        return codes.to(torch.float16) * scales.repeat_interleave(group, dim=0)[:k]
    import numpy as np

    return codes.astype(np.float16) * np.repeat(scales, group, axis=0)[:k]


def host_weights(k: int, n: int, group: int, seed: int = 0) -> tuple[Any, Any]:
    """Random packed u4 weights (every byte is two valid codes) and f16 scales."""
    import numpy as np

    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (k * n + 1) // 2, dtype=np.uint8)
    scales = (rng.uniform(0.5, 1.5, (-(-k // group), n)) / 15).astype(np.float16)
    return data, scales


@functools.cache
def _device_weights(k: int, n: int, group: int, tiles: tuple[tuple[str, int], ...]):
    """The weights packed for the example's kernel with `tiles` (`pack_weights`), the
    scales, and the dequantized weights, on the GPU."""
    import torch

    import tilelang as tl

    data, scales = host_weights(k, n, group)
    weights = tl.PackedArray(data, tl.u4, (k, n))
    packed = tl.DeviceBuffer(load_example("quant_matmul").pack_weights(weights, **dict(tiles)))
    s = torch.from_numpy(scales).to("cuda")
    dequantized = dequantize_u4(torch.from_numpy(data).to("cuda"), s, k, n, group)
    return packed, s, dequantized


def quant_case(m: int, k: int, n: int, tiles: dict[str, int]) -> Case:
    tile_text = " ".join(f"{key}={value}" for key, value in tiles.items()) or "example tiles"

    def run(context: Context) -> dict[str, Any]:
        torch = context.torch
        import tilelang as tl

        qm = load_example("quant_matmul")
        packed, s, w16 = _device_weights(k, n, GROUP, tuple(sorted(tiles.items())))
        generator = torch.Generator(device="cuda").manual_seed(m)
        x = (torch.randn(m, k, device="cuda", generator=generator) / 4).to(torch.float16)
        y = torch.empty(m, n, device="cuda", dtype=torch.float16)
        y_torch = torch.empty_like(y)
        ours = time_gpu(lambda: qm.quant_matmul(x, packed, s, y, WT=tl.u4, G=GROUP, **tiles))
        theirs = time_gpu(lambda: torch.matmul(x, w16, out=y_torch))
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            reference = (x.float() @ w16.float()).half().cpu().numpy()
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
        tolerance = qm.tolerance(k)
        check = require(compare(y.cpu().numpy(), reference, "rel", tolerance), "tilelang result")
        torch_check = compare(y_torch.cpu().numpy(), reference, "rel", tolerance)
        nbytes = x.nbytes + packed.nbytes + s.nbytes + y.nbytes
        bandwidth, what = context.bandwidth()
        weights_floor = packed.nbytes / bandwidth
        torch_bytes = x.nbytes + w16.nbytes + y.nbytes
        return benchmark_record(
            shape=f"m={m} k={k} n={n} u4 g{GROUP}, {tile_text}",
            ours=measurement("tilelang quant_matmul", ours.median_s, nbytes),
            baseline=measurement("torch f16 x @ dequant(W)", theirs.median_s, torch_bytes),
            floor=measurement(what, floor_seconds(nbytes, bandwidth), nbytes, bound="DRAM"),
            timing=ours,
            baseline_timing=theirs,
            check=f"vs f32 reference: {check.describe()}",
            notes=(
                f"packed weights alone at that bandwidth: {weights_floor * 1e6:.1f} us; "
                f"torch's own floor (f16 weights): "
                f"{floor_seconds(torch_bytes, bandwidth) * 1e6:.1f} us; "
                f"torch vs f32 reference: {torch_check.describe()}"
            ),
        )

    return Case(
        f"quant_matmul u4 m={m} k={k} n={n} {tile_text}",
        6.0 if (k, n) == SHAPES[0] else 8.0,
        run,
        "tilelang vs torch f16 matmul of dequantized W vs bandwidth floor",
    )


def cases() -> list[Case]:
    """The example's tiles at every shape first, then the other tiles (skipped first when
    the time budget runs short)."""
    return [quant_case(m, k, n, tiles) for tiles in TILES for k, n in SHAPES for m in MS]


if __name__ == "__main__":
    import sys

    from gpu_common import run_standalone

    sys.exit(run_standalone(cases()))
