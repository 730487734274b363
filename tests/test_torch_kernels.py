"""tilelang.torch.kernels' Mamba operators (``tilelang::selective_state_update``,
``tilelang::causal_conv1d``, ``tilelang::causal_conv1d_update``,
``tilelang::ssd_chunk_scan``) compute what float64 numpy recurrences do, bit for bit what
`tilelang.kernels` gives on numpy arrays, and pass opcheck; under torch.compile
(fullgraph) they, and a `tilelang.kernels` call on torch tensors, stay in the graph; the
torch functions refuse bad arguments with the library's own messages; `tt.op(...,
mutates=...)` makes a stored-only tensor an in-place argument; u1 scalars take bools
and refuse 2, and a negative grid is an error, in every runtime."""

import importlib
import inspect
import re

import numpy as np
import pytest
import torch

import tilelang as tl
import tilelang.kernels as K
import tilelang.torch as tt
import tilelang.torch.kernels as tk
from tilelang.runtime import host_calls


def randn(rng, *shape):
    return torch.from_numpy(rng.standard_normal(shape).astype(np.float32))


def f64(t):
    return None if t is None else t.double().numpy()


def silu(v):
    return v / (1 + np.exp(-v))


# --------------------------------------------------------------------------- oracles


def state_update_f64(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, softplus=False):
    """One step of h = exp(dt·A)·h + dt·x·B, y = h·C + D·x, times silu(z)."""
    if dt_bias is not None:
        dt = dt + dt_bias[None]
    if softplus:
        dt = np.log1p(np.exp(dt))
    new = np.exp(dt[:, :, None] * A[None]) * state + (dt * x)[:, :, None] * B[:, None, :]
    y = (new * C[:, None, :]).sum(-1)
    if D is not None:
        y = y + D[None] * x
    return new, y if z is None else y * silu(z)


def conv_f64(x, weight, bias, initial, activation):
    """out[t] = bias + Σ_k w[k]·x[t - (W - 1) + k] over [initial, x]; the last W - 1."""
    nb, dm, length = x.shape
    width = weight.shape[1]
    before = np.zeros((nb, dm, width - 1)) if initial is None else initial
    padded = np.concatenate([before, x], axis=2)
    out = sum(weight[None, :, k, None] * padded[:, :, k : k + length] for k in range(width))
    out = out + bias[None, :, None]
    return (silu(out) if activation else out), padded[:, :, length:]


def conv_update_f64(x, state, weight, bias):
    """The steps of x after the state's; the state shifted to end with x."""
    steps, state_len, width = x.shape[2], state.shape[2], weight.shape[1]
    joined = np.concatenate([state, x], axis=2)
    out = np.stack(
        [
            sum(
                weight[None, :, k] * joined[:, :, state_len + s - (width - 1) + k]
                for k in range(width)
            )
            for s in range(steps)
        ],
        axis=2,
    )
    return silu(out + bias[None, :, None]), joined[:, :, steps:]


def ssd_f64(x, dt, A, B, C, D, dt_bias, initial):
    """S[t] = exp(Δ·A)·S[t-1] + Δ·x[t] ⊗ B[t], y[t] = S[t]·C[t] + D·x[t], Δ softplus'd."""
    nb, length, heads, _ = x.shape
    groups = B.shape[2]
    out, states = np.zeros(x.shape), initial.copy()
    for b in range(nb):
        for h in range(heads):
            g = h // (heads // groups)
            s = states[b, h]
            for t in range(length):
                delta = np.log1p(np.exp(dt[b, t, h] + dt_bias[h]))
                s = np.exp(delta * A[h]) * s + delta * np.outer(x[b, t, h], B[b, t, g])
                out[b, t, h] = s @ C[b, t, g] + D[h] * x[b, t, h]
            states[b, h] = s
    return out, states


# --------------------------------------------------------------------------- the operators


def state_update_inputs(rng, nb=2, dm=8, n=4):
    return dict(
        state=randn(rng, nb, dm, n),
        x=randn(rng, nb, dm),
        dt=randn(rng, nb, dm) * 0.5,
        A=-torch.rand(dm, n),
        B=randn(rng, nb, n),
        C=randn(rng, nb, n),
        D=randn(rng, dm),
        z=randn(rng, nb, dm),
        dt_bias=randn(rng, dm) * 0.1,
    )


def test_selective_state_update_op_updates_the_state_like_the_recurrence():
    given = state_update_inputs(np.random.default_rng(0))
    before = {k: v.clone() for k, v in given.items()}
    y = tk.selective_state_update(**given, dt_softplus=True)
    expected_state, expected_y = state_update_f64(*(f64(v) for v in before.values()), True)
    np.testing.assert_allclose(y.numpy(), expected_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(given["state"].numpy(), expected_state, rtol=1e-5, atol=1e-5)
    arrays = {k: v.numpy().copy() for k, v in before.items()}
    direct = K.selective_state_update(**arrays, dt_softplus=True)
    np.testing.assert_array_equal(y.numpy(), direct)
    np.testing.assert_array_equal(given["state"].numpy(), arrays["state"])
    args = tuple(before.values())
    torch.library.opcheck(
        torch.ops.tilelang.selective_state_update.default, (*[a.clone() for a in args], True)
    )


def heads_update_f64(state, x, dt, A, B, C, D, z, dt_bias, rows, pad=-1):
    """Mamba-2's step per (entry, head): Δ = softplus(dt + dt_bias) [P]; h = exp(Δ·A)·h
    + Δ·x ⊗ B[g]; y = h·C[g] + D·x, times silu(z); entry b on state row rows[b], none
    (a zero state, not written) at the pad. state [S, H, P, N] is a new array."""
    new, (nb, heads, _), groups = state.copy(), x.shape, B.shape[1]
    y = np.zeros(x.shape)
    for b in range(nb):
        row = int(rows[b])
        for h in range(heads):
            g = h // (heads // groups)
            delta = np.log1p(np.exp(dt[b, h] + dt_bias[h]))
            old = np.zeros(new.shape[2:]) if row == pad else new[row, h]
            value = np.exp(delta[:, None] * A[h]) * old + np.outer(delta * x[b, h], B[b, g])
            if row != pad:
                new[row, h] = value
            y[b, h] = (value @ C[b, g] + D[h] * x[b, h]) * silu(z[b, h])
    return new, y


def test_selective_state_update_op_takes_mamba2_heads_state_rows_and_expanded_views():
    """Mamba2.step's call: dt, A, D and dt_bias repeated over P (and N) as expanded
    views, vLLM's state_batch_indices (int64, a pad entry), two groups of B and C."""
    rng = np.random.default_rng(7)
    nb, heads, p, n, groups = 3, 4, 8, 5, 2
    state, x, z = randn(rng, 6, heads, p, n), randn(rng, nb, heads, p), randn(rng, nb, heads, p)
    B, C = randn(rng, nb, groups, n), randn(rng, nb, groups, n)
    dt_h, A_h = randn(rng, nb, heads) * 0.5, -torch.rand(heads) - 0.5
    D_h, bias_h = randn(rng, heads), randn(rng, heads) * 0.1
    dt, A = dt_h[:, :, None].expand(nb, heads, p), A_h[:, None, None].expand(heads, p, n)
    D, bias = D_h[:, None].expand(heads, p), bias_h[:, None].expand(heads, p)
    rows = torch.tensor([4, -1, 1])
    before = state.clone()
    y = tk.selective_state_update(state, x, dt, A, B, C, D, z, bias, True, rows)
    tensors = (before, x, dt, A, B, C, D, z, bias, rows)
    expected_state, expected_y = heads_update_f64(*(f64(t) for t in tensors[:-1]), rows.numpy())
    assert y.shape == (nb, heads, p)
    np.testing.assert_allclose(y.numpy(), expected_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state.numpy(), expected_state, rtol=1e-5, atol=1e-5)
    direct_state = before.numpy().copy()  # the library on numpy, one value per head
    direct = K.selective_state_update(
        direct_state, x.numpy(), dt_h.numpy(), A_h.numpy(), B.numpy(), C.numpy(), D_h.numpy(),
        z.numpy(), bias_h.numpy(), True, rows.numpy(),
    )  # fmt: skip
    np.testing.assert_array_equal(y.numpy(), direct)
    np.testing.assert_array_equal(state.numpy(), direct_state)
    torch.library.opcheck(
        torch.ops.tilelang.selective_state_update.default,
        (before.clone(), x, dt, A, B, C, D, z, bias, True, rows, -1),
    )
    with pytest.raises(TypeError, match=r"dt_softplus must be True or False, got Tensor"):
        tk.selective_state_update(before.clone(), x, dt, A, B, C, D, z, bias, rows)


@pytest.mark.parametrize("initial, final", [(False, False), (True, True)])
def test_causal_conv1d_op_is_the_convolution(initial, final):
    rng = np.random.default_rng(1)
    x, weight, bias = randn(rng, 2, 6, 11), randn(rng, 6, 4), randn(rng, 6)
    states = randn(rng, 2, 6, 3) if initial else None
    got = tk.causal_conv1d(
        x, weight, bias, activation="silu", initial_states=states, return_final_states=final
    )
    out, got_final = got if final else (got, None)
    expected, expected_final = conv_f64(f64(x), f64(weight), f64(bias), f64(states), True)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)
    direct = K.causal_conv1d(
        x.numpy(),
        weight.numpy(),
        bias.numpy(),
        activation="silu",
        initial_states=states if states is None else states.numpy(),
        return_final_states=final,
    )
    np.testing.assert_array_equal(out.numpy(), direct[0] if final else direct)
    if final:
        np.testing.assert_array_equal(got_final.numpy(), expected_final.astype(np.float32))
    torch.library.opcheck(
        torch.ops.tilelang.causal_conv1d.default, (x, weight, bias, "silu", states, final)
    )


def test_causal_conv1d_op_with_no_steps_returns_a_copy_of_the_initial_states():
    rng = np.random.default_rng(2)
    x, weight, states = randn(rng, 1, 3, 0), randn(rng, 3, 3), randn(rng, 1, 3, 2)
    out, final = tk.causal_conv1d(x, weight, initial_states=states, return_final_states=True)
    assert out.shape == (1, 3, 0) and torch.equal(final, states)
    assert final.data_ptr() != states.data_ptr()  # an operator returns no input


@pytest.mark.parametrize("steps", [None, 3])
def test_causal_conv1d_update_op_shifts_the_state_in_place(steps):
    rng = np.random.default_rng(3)
    x = randn(rng, 2, 5) if steps is None else randn(rng, 2, 5, steps)
    state, weight, bias = randn(rng, 2, 5, 4), randn(rng, 5, 3), randn(rng, 5)
    before = state.clone()
    out = tk.causal_conv1d_update(x, state, weight, bias, "silu")
    x3 = f64(x)[:, :, None] if steps is None else f64(x)
    expected, shifted = conv_update_f64(x3, f64(before), f64(weight), f64(bias))
    assert out.shape == x.shape
    np.testing.assert_allclose(out.numpy().reshape(expected.shape), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(state.numpy(), shifted.astype(np.float32))
    direct_state = before.numpy().copy()
    direct = K.causal_conv1d_update(x.numpy(), direct_state, weight.numpy(), bias.numpy(), "silu")
    np.testing.assert_array_equal(out.numpy(), direct)
    torch.library.opcheck(
        torch.ops.tilelang.causal_conv1d_update.default, (x, before.clone(), weight, bias, "silu")
    )


def test_ssd_chunk_scan_op_is_the_recurrence_across_chunks():
    rng = np.random.default_rng(4)
    nb, length, heads, p, groups, n = 1, 37, 4, 8, 2, 16  # 37 steps: chunks of 16, a ragged end
    x, dt = randn(rng, nb, length, heads, p), randn(rng, nb, length, heads) * 0.5
    B, C = randn(rng, nb, length, groups, n), randn(rng, nb, length, groups, n)
    A, D, bias = -torch.rand(heads) - 0.1, randn(rng, heads), randn(rng, heads) * 0.1
    initial = randn(rng, nb, heads, p, n)
    out, final = tk.ssd_chunk_scan(
        x, dt, A, B, C, 16, D, None, bias, initial, dt_softplus=True, return_final_states=True
    )
    expected, expected_final = ssd_f64(*(f64(v) for v in (x, dt, A, B, C, D, bias, initial)))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(final.numpy(), expected_final, rtol=1e-4, atol=1e-4)
    arrays = [v.numpy() for v in (x, dt, A, B, C)]
    direct, direct_final = K.ssd_chunk_scan(
        *arrays, 16, D.numpy(), None, bias.numpy(), initial.numpy(), dt_softplus=True,
        return_final_states=True,
    )  # fmt: skip
    np.testing.assert_array_equal(out.numpy(), direct)
    np.testing.assert_array_equal(final.numpy(), direct_final)
    torch.library.opcheck(
        torch.ops.tilelang.ssd_chunk_scan.default,
        (x, dt, A, B, C, 16, D, None, bias, True, initial, False),
    )


def test_under_torch_compile_the_operators_and_a_library_call_stay_in_one_graph():
    """The reported failure: K.selective_state_update on torch tensors under
    torch.compile(fullgraph=True) died in dynamo; it is now traced as its operator."""
    rng = np.random.default_rng(5)
    step = state_update_inputs(rng)
    conv_x, conv_state, conv_w = randn(rng, 2, 8), randn(rng, 2, 8, 3), randn(rng, 8, 4)
    h, w = randn(rng, 2, 3, 32), torch.rand(32)
    ssd_in = (randn(rng, 1, 5, 2, 4), randn(rng, 1, 5, 2) * 0.5, -torch.rand(2))
    ssd_bc = (randn(rng, 1, 5, 1, 16), randn(rng, 1, 5, 1, 16))

    def model(state, x, dt, A, B, C, conv_state):
        y = K.selective_state_update(state, x, dt, A, B, C) * 2  # the library function
        c = tk.causal_conv1d_update(conv_x, conv_state, conv_w, None, "silu")
        s = tk.ssd_chunk_scan(*ssd_in, *ssd_bc, 16)
        out, final = tk.causal_conv1d(tk.rms_norm(h, w), conv_w[:3], return_final_states=True)
        return y, c, s, out, final

    names = ("state", "x", "dt", "A", "B", "C")
    eager_in = [step[k].clone() for k in names] + [conv_state.clone()]
    compiled_in = [t.clone() for t in eager_in]
    expected = model(*eager_in)
    got = torch.compile(model, fullgraph=True, backend="aot_eager")(*compiled_in)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=0)
    for g, e in zip(compiled_in, eager_in, strict=True):  # the in-place updates too
        torch.testing.assert_close(g, e, rtol=0, atol=0)
    oracle_state, oracle_y = state_update_f64(*(f64(step[k]) for k in names))
    np.testing.assert_allclose(got[0].numpy(), 2 * oracle_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(compiled_in[0].numpy(), oracle_state, rtol=1e-5, atol=1e-5)


def test_what_torch_compile_traces_for_a_library_function(monkeypatch):
    """The form dynamo traces in place of a `tilelang.kernels` function (its
    `_torchdynamo_inline`), called here directly: the torch function, or a TypeError
    saying what to call."""
    traced = K.selective_state_update._torchdynamo_inline
    given = state_update_inputs(np.random.default_rng(6))
    state = given["state"].clone()
    y = traced(**given)
    np.testing.assert_array_equal(
        y.numpy(), tk.selective_state_update(state, *list(given.values())[1:]).numpy()
    )
    with pytest.raises(TypeError, match="takes no interpret="):
        traced(**given, interpret=True)
    host_matmul = importlib.import_module("tilelang.quant.matmul")._host_matmul
    with pytest.raises(TypeError, match=r"cannot be traced by torch.compile.*QuantLinear"):
        host_matmul._torchdynamo_inline(torch.zeros(1))
    monkeypatch.setattr(host_calls, "TORCH_FORMS", {})  # tilelang.torch.kernels not imported
    with pytest.raises(TypeError, match=r"import tilelang.torch.kernels, and the call is traced"):
        traced(**given)


# --------------------------------------------------------------------------- the library's messages


def numpy_message(fn, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    return str(info.value)


def test_rms_norm_reports_a_bad_weight_as_the_numpy_call_does():
    message = numpy_message(tk.rms_norm, torch.randn(2, 3, 256), torch.rand(255))
    assert message == "weight must have shape [256], got shape [255] (256 from x.shape[2])"
    assert message == numpy_message(
        K.rms_norm, np.zeros((2, 3, 256), np.float32), np.zeros(255, np.float32)
    )
    with pytest.raises(TypeError, match=r"x must hold one of f32, f16, bf16, got int32$"):
        tk.silu_and_mul(torch.zeros(2, 4, dtype=torch.int32))


def test_flash_attention_names_the_layout_it_expected():
    q = torch.zeros(2, 5, 16, dtype=torch.float16)
    message = numpy_message(tk.flash_attention, q, q, q)
    assert message == "q must have shape [batch, Sq, H, D], got shape [2, 5, 16]"
    k = torch.zeros(3, 7, 2, 16, dtype=torch.float16)
    message = numpy_message(tk.flash_attention, q[:, :, None].expand(2, 5, 4, 16), k, k)
    assert message == (
        "k must have shape [2, Sk, H_kv, 16], got shape [3, 7, 2, 16] (batch = 2 from q.shape[0])"
    )
    cu = torch.tensor([0, 2], dtype=torch.int32)
    varlen = dict(cu_seqlens_q=cu, cu_seqlens_k=cu)
    message = numpy_message(tk.flash_attention, q[0, 0], q[0], q[0], **varlen)
    assert message == "q must have shape [total_q, H, D], got shape [16]"


# --------------------------------------------------------------------------- tt.op(mutates=)


@tl.kernel(warps=1)
def cache_write(
    cache: tl.Tensor[tl.f16, "S", "D"],
    k: tl.Tensor[tl.f16, "D"],
    pos: tl.i32,
    BD: tl.constexpr = 64,
):
    tl.store(cache, [pos, 0], tl.load(k, [0], [BD])[None, :])


def test_a_tensor_the_kernel_only_stores_to_can_be_mutated_in_place():
    with pytest.raises(ValueError, match=r"mutates=\('cache',\) to tilelang.torch.op"):
        tt.op(cache_write, "test_mutates::refused")
    write = tt.op(cache_write, "test_mutates::cache_write", mutates=("cache",))
    assert write.schema == "(Tensor(a!) cache, Tensor k, int pos) -> ()"
    assert tt.op(cache_write, "test_mutates::cache_write", mutates=("cache",)) is write
    cache = torch.from_numpy(np.arange(8 * 64, dtype=np.float16).reshape(8, 64))
    expected = cache.numpy().copy()
    k = torch.randn(64).half()
    version = cache._version
    assert write(cache, k, 3) is None
    expected[3] = k.numpy()
    np.testing.assert_array_equal(cache.numpy(), expected)  # one row written, the rest kept
    assert cache._version > version
    torch.library.opcheck(write.overload, (cache, k, 5))
    with pytest.raises(ValueError, match=r"mutates names 'k', which the kernel only reads"):
        tt.op(cache_write, "test_mutates::bad_k", mutates=("k",))
    with pytest.raises(ValueError, match=r"mutates names 'pos', which is no tensor parameter"):
        tt.op(cache_write, "test_mutates::bad_pos", mutates="pos")


# --------------------------------------------------------------------------- u1 scalars, grids


@tl.kernel(warps=1)
def flagged(out: tl.Tensor[tl.i32, "N"], n: tl.i32, flag: tl.u1):
    b = tl.blocks(n)
    tl.store(out, [b], tl.where(flag, tl.full([1], 5, tl.i32), tl.full([1], 9, tl.i32)))


def test_a_u1_scalar_takes_a_bool_and_refuses_2_in_python_and_through_torch():
    for flag, value in ((True, 5), (np.bool_(False), 9), (1, 5), (0, 9)):
        np.testing.assert_array_equal(
            flagged(np.full(3, -1, np.int32), 2, flag), [value] * 2 + [-1]
        )
    with pytest.raises(
        ValueError, match=r"flagged\(\): parameter 'flag' expects a u1 in \[0, 1\], got 2"
    ):
        flagged(np.zeros(3, np.int32), 2, 2)
    with pytest.raises(TypeError, match=r"parameter 'n' expects a i32 scalar, got bool True"):
        flagged(np.zeros(3, np.int32), True, 1)  # a bool is a u1's value only
    op = tt.op(flagged, "test_u1::flagged", mutates=("out",))
    out = torch.full((3,), -1, dtype=torch.int32)
    op(out, 3, True)
    assert out.tolist() == [5, 5, 5]
    with pytest.raises(ValueError, match=r"expects a u1 in \[0, 1\], got 2"):
        op(out, 3, 2)


def blocks_line(kernel) -> str:
    """ "file:line" of the `tl.blocks(...)` call in `kernel`'s Python source."""
    lines, first = inspect.getsourcelines(kernel.fn)
    offset = next(i for i, line in enumerate(lines) if "tl.blocks(" in line)
    return f"{inspect.getsourcefile(kernel.fn)}:{first + offset}"


def negative_grid(kernel) -> str:
    """The message of a launch of `flagged` at n = -2, naming its `tl.blocks` line."""
    at = re.escape(blocks_line(kernel))
    return rf"^flagged\(\) at {at}: the grid is negative \(-2 blocks in dimension 0\)$"


def test_a_negative_grid_is_an_error_and_an_empty_one_launches_nothing():
    out = np.full(3, -1, np.int32)
    with pytest.raises(ValueError, match=negative_grid(flagged)):
        flagged(out, -2, True)
    np.testing.assert_array_equal(flagged(out, 0, True), [-1, -1, -1])
    # the GPU launch, compiled without a GPU: refused before any driver call
    build = flagged.compile(target="sm_90").cuda
    launcher = build.launcher
    scalars = {"n": -2, "flag": 1, "N": 3}
    with pytest.raises(ValueError, match=negative_grid(flagged)):
        launcher({"out": 0}, scalars, launcher.grid(scalars), 0)
    empty = {"n": 0, "flag": 1, "N": 3}
    assert launcher({"out": 0}, empty, launcher.grid(empty), 0) is None  # no driver needed


def test_a_build_read_from_the_disk_cache_still_names_the_grids_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TILELANG_CACHE_DIR", str(tmp_path))
    for target in ("cpu", "sm_90"):
        first = tl.kernel(flagged.fn, warps=1).compile(target=target)  # fresh: no memory
        if target == "cpu":
            first.cpu  # noqa: B018 (a CPU entry is written when its code is built)
        again = tl.kernel(flagged.fn, warps=1).compile(target=target)
        assert (again.cpu_build if target == "cpu" else again.cuda).cached, target
        assert again.thread.grid_at == blocks_line(flagged), target
    with pytest.raises(ValueError, match=negative_grid(flagged)):
        tl.kernel(flagged.fn, warps=1)(np.zeros(3, np.int32), -2, True)  # the CPU hit
    launcher = again.cuda.launcher
    scalars = {"n": -2, "flag": 1, "N": 3}
    with pytest.raises(ValueError, match=negative_grid(flagged)):
        launcher({"out": 0}, scalars, launcher.grid(scalars), 0)
