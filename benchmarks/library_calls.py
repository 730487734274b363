"""The host time of a `tilelang.kernels` call on the GPU path, with its call plan
(`tilelang.runtime.call_plans`) and without: what a decode step pays per library call
before the GPU sees anything. A measurement, never a test.

    .venv/bin/python benchmarks/library_calls.py

The CUDA driver is stubbed (`cuLaunchKernel` a no-op, torch's stream query left out),
so this runs on any machine with NVRTC: the tensors are `__cuda_array_interface__`
stand-ins that own no memory, and `tilelang.DeviceBuffer` (the outputs and scratch
of such calls) hands out addresses without allocating. Shapes are one decode step of a
Llama-3-8B-like layer (hidden 4096, 32 heads on 8 KV heads of 128, MLP 14336; batch 8 at
context 1000 for paged decode) and of a Mamba-1 layer (Dm 2048, N 16, conv width 4).
`quant.matmul` at m = 1, k = n = 4096, u4 g128 (split-K: one launch, its counters and
workspace kept). Each row: process time per call, median of alternating rounds
(`paired_us`), plans off (`TILELANG_CALL_PLANS=off` behaviour: the full call, the
kernel's own warm path included) and on (the third call on: the plan's replay).
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TILELANG_AUTOTUNE", "off")  # nothing to time tiles on

import call_overhead
from call_overhead import paired_us

import tilelang.kernels as K
from tilelang import PackedArray, quant
from tilelang.runtime import call_plans, gpu

ARCH = "sm_90a"
_addresses = itertools.count(1 << 40, 1 << 24)


class Tensor:
    """A device tensor as `__cuda_array_interface__` describes it, at an address of its
    own, owning no memory."""

    dtype = None  # a `DeviceBuffer`'s packed dtype: none

    def __init__(self, shape: tuple[int, ...], typestr: str) -> None:
        self.shape = tuple(shape)
        self.__cuda_array_interface__ = {
            "data": (next(_addresses), False), "shape": self.shape, "typestr": typestr,
            "strides": None, "version": 3,
        }  # fmt: skip


class Buffer(Tensor):
    """`tilelang.DeviceBuffer` stubbed: an address, no allocation, no copy."""

    def __init__(self, host) -> None:
        if isinstance(host, PackedArray):  # its bytes, its dtype and shape beside them
            super().__init__((host.data.nbytes,), "|u1")
            self.dtype, self.shape = host.dtype, host.shape
            return
        host = np.asarray(host)
        super().__init__(host.shape, host.dtype.str)

    @classmethod
    def empty(cls, shape, dtype) -> Tensor:
        return Tensor(shape, np.dtype(dtype).str)


def stub_driver() -> None:
    """The driver stubbed (`call_overhead.stub_driver`) and `DeviceBuffer` with it."""
    call_overhead.stub_driver(ARCH)
    gpu.DeviceBuffer = Buffer


def f16(*shape):
    return Tensor(shape, "<f2")


def f32(*shape):
    return Tensor(shape, "<f4")


def weights(k: int, n: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((k, n)).astype(np.float32)


def cases() -> dict[str, tuple]:
    batch, blocks = 8, 64  # paged decode: 8 sequences of up to 64 pages of 16 tokens
    table = Tensor((batch, blocks), "<i4")
    state = f32(batch, 2048, 16)
    return {
        "rms_norm [1, 4096]": (K.rms_norm, (f16(1, 4096), f16(4096))),
        "silu_and_mul [1, 2·14336]": (K.silu_and_mul, (f16(1, 2 * 14336),)),
        "paged_decode_attention b=8": (
            K.paged_decode_attention,
            (
                f16(batch, 32, 128),
                f16(batch * blocks, 16, 8, 128),
                f16(batch * blocks, 16, 8, 128),
                table,
                Tensor((batch,), "<i4"),
            ),
        ),
        "selective_state_update b=8": (
            K.selective_state_update,
            (state, f16(batch, 2048), f16(batch, 2048), f32(2048, 16), f16(batch, 16)),
            dict(C=f16(batch, 16), D=f32(2048), z=f16(batch, 2048), dt_bias=f32(2048)),
        ),
        "quant.matmul u4 g128 m=1 k=n=4096": (
            quant.matmul,
            (f16(1, 4096), quant.quantize(weights(4096, 4096), "u4", group_size=128)),
        ),
        "causal_conv1d_update b=8": (
            K.causal_conv1d_update,
            (f16(batch, 2048), f16(batch, 2048, 3), f32(2048, 4), f32(2048)),
            dict(activation="silu"),
        ),
    }


def main() -> None:
    stub_driver()
    print(f"host time per library call on the GPU path ({ARCH}, driver stubbed), us per call")
    print(f"  {'call':>32} {'full':>8} {'planned':>8} {'saved':>8}")
    for name, (fn, args, *rest) in cases().items():
        kwargs = rest[0] if rest else {}

        def full(fn=fn, args=args, kwargs=kwargs):
            call_plans.ENABLED = False
            fn(*args, **kwargs)
            call_plans.ENABLED = True

        def planned(fn=fn, args=args, kwargs=kwargs):
            fn(*args, **kwargs)

        for _ in range(3):  # compile; record; replay from here on
            planned()
        off, on, saved = paired_us(full, planned)
        print(f"  {name:>32} {off:8.1f} {on:8.1f} {saved:8.1f}")


if __name__ == "__main__":
    main()
