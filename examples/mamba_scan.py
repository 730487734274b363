"""A Mamba-1 selective scan (`tilelang.kernels.selective_scan`): h = exp(Δ·A)·h + Δ·B·u,
y = C·h + D·u gated by silu(z), chunked along L with `tl.associative_scan` on the pairs
(exp(Δ·A), Δ·B·u) and a state carried between chunks. Runs on the GPU when there is
one, else on the CPU backend, and checks itself against a float64 loop over time."""

import numpy as np

import tilelang as tl
from tilelang.kernels import selective_scan


def reference(u, delta, A, B, C, D, z, delta_bias):
    """The recurrence one step at a time, in float64 (softplus on Δ + bias)."""
    u, delta, B, C, z = (x.astype(np.float64) for x in (u, delta, B, C, z))
    delta = np.logaddexp(0.0, delta + delta_bias[None, :, None])
    h = np.zeros((u.shape[0], u.shape[1], A.shape[1]))
    y = np.empty(u.shape)
    for t in range(u.shape[2]):
        dt = delta[:, :, t, None]
        h = np.exp(dt * A[None]) * h + dt * B[:, None, :, t] * u[:, :, t, None]
        y[:, :, t] = np.einsum("bdn,bn->bd", h, C[:, :, t]) + D * u[:, :, t]
    return y * z / (1.0 + np.exp(-z)), h


def scan_into(u, delta, A, B, C, D, z, delta_bias, out):
    """`selective_scan` with Δ softplus, written into `out` (numpy arrays or GPU tensors):
    the form the GPU self-check runs (benchmarks/gpu_examples.py)."""
    out[...] = selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True)


def main(batch: int = 2, channels: int = 8, states: int = 16, length: int = 100) -> None:
    rng = np.random.default_rng(0)
    u, z = (rng.standard_normal((batch, channels, length), dtype=np.float32) for _ in "uz")
    delta = rng.uniform(-3.0, 1.0, (batch, channels, length)).astype(np.float32)
    A = -rng.uniform(1.0, 16.0, (channels, states)).astype(np.float32)
    B, C = (rng.standard_normal((batch, states, length), dtype=np.float32) for _ in "BC")
    D, bias = rng.standard_normal(channels, dtype=np.float32), np.zeros(channels, np.float32)
    inputs = [u, delta, A, B, C, D, z, bias]
    where = "CPU backend"
    if tl.gpu_available():
        inputs, where = [tl.DeviceBuffer(x) for x in inputs], f"GPU ({tl.gpu_arch()})"
    y, last = selective_scan(*inputs, delta_softplus=True, return_last_state=True)
    if where != "CPU backend":
        y, last = y.numpy(), last.numpy()
    expected, state = reference(u, delta, A, B, C, D, z, bias)
    error = max(np.abs(y - expected).max(), np.abs(last - state).max())
    assert np.isfinite(y).all() and error < 1e-4, f"selective_scan differs by {error}"
    print(
        f"mamba_scan: batch {batch}, {channels} channels, {states} states, L = {length} on "
        f"the {where}, max abs error vs float64 numpy {error:.2e}"
    )


if __name__ == "__main__":
    main()
