"""Library functions on torch CPU tensors (`tilelang.runtime.host_calls`): the same
result as on numpy arrays of the same values, bit for bit, returned as torch tensors;
an in-place update lands in the caller's tensor; what the caller passed comes back as
itself."""

import ml_dtypes
import numpy as np
import pytest
import torch  # the test extra installs it

import tilelang.kernels as K
from tilelang import quant

rng = np.random.default_rng(5)


def values(*shape, dtype=np.float16):
    return rng.standard_normal(shape).astype(np.float32).astype(dtype)


def as_torch(array: np.ndarray):
    """A torch CPU tensor of `array`'s values, made independently of the code under test
    (bf16 through torch's own float32 conversion, exact for bf16 values)."""
    if array.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(array.copy())


def as_numpy(tensor) -> np.ndarray:
    if tensor.dtype == torch.bfloat16:
        return tensor.to(torch.float32).numpy().astype(ml_dtypes.bfloat16)
    return tensor.numpy()


def assert_same(got, want: np.ndarray) -> None:
    assert isinstance(got, torch.Tensor), type(got)
    assert as_numpy(got).dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(as_numpy(got).view(np.uint8), want.view(np.uint8))


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32])
def test_rms_norm_and_silu_and_mul_on_torch_tensors(dtype):
    x, w, g = values(3, 64, dtype=dtype), values(64, dtype=dtype), values(3, 128, dtype=dtype)
    assert_same(K.rms_norm(as_torch(x), as_torch(w), 1e-5), K.rms_norm(x, w, 1e-5))
    assert_same(K.silu_and_mul(as_torch(g)), K.silu_and_mul(g))


def test_an_in_place_state_update_lands_in_the_callers_tensor():
    state, x, dt = values(2, 16, 4, dtype=np.float32), values(2, 16), values(2, 16)
    A, B, C = -np.abs(values(16, 4, dtype=np.float32)), values(2, 4), values(2, 4)
    state_t = as_torch(state)
    y_t = K.selective_state_update(state_t, *map(as_torch, (x, dt, A, B, C)), dt_softplus=True)
    y = K.selective_state_update(state, x, dt, A, B, C, dt_softplus=True)
    assert_same(y_t, y)
    assert_same(state_t, state)  # both updated in place, identically


def test_several_results_come_back_as_torch_tensors():
    q, k, v = (values(1, 20, 2, 32) for _ in range(3))
    out_t, lse_t = K.flash_attention(*map(as_torch, (q, k, v)), causal=True, return_lse=True)
    out, lse = K.flash_attention(q, k, v, causal=True, return_lse=True)
    assert_same(out_t, out)
    assert_same(lse_t, lse)


def test_quant_matmul_writes_the_callers_out_and_returns_it():
    qw = quant.quantize(values(128, 48, dtype=np.float32), "u4", group_size=32)
    x = values(3, 128)
    out_t = torch.empty(3, 48, dtype=torch.float16)
    returned = quant.matmul(as_torch(x), qw, out=out_t)
    assert returned is out_t
    assert_same(out_t, quant.matmul(x, qw))


def test_numpy_arrays_and_bad_input_are_untouched():
    x = values(2, 64)
    assert isinstance(K.rms_norm(x, values(64)), np.ndarray)
    with pytest.raises(ValueError, match="weight must have shape"):
        K.rms_norm(as_torch(x), as_torch(values(32)))


def test_a_tensor_that_requires_grad_is_read_detached(monkeypatch):
    """torch exports no tensor that requires grad through DLPack; the call reads its
    values all the same (no gradient flows through a tilelang call, and it says so)."""
    from tilelang.runtime import host_calls
    from tilelang.torch import NoGradientWarning

    monkeypatch.setattr(host_calls, "WARNED", set())
    x, w = values(2, 64, dtype=np.float32), values(64, dtype=np.float32)
    leaf = torch.from_numpy(x.copy()).requires_grad_()
    with pytest.warns(NoGradientWarning):
        got = K.rms_norm(leaf, as_torch(w))
    assert not got.requires_grad
    assert_same(got, K.rms_norm(x, w))


def test_a_tensor_requiring_grad_warns_once_per_function_that_no_gradient_flows(monkeypatch):
    """The kernels are forward-only: with grad mode on and an input that requires grad,
    the call says (once per function, at the caller's line) that the result has none."""
    import warnings

    from tilelang.runtime import host_calls
    from tilelang.torch import NoGradientWarning

    monkeypatch.setattr(host_calls, "WARNED", set())
    x = torch.randn(2, 8, requires_grad=True)
    w = torch.ones(8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            K.rms_norm(x, w)  # grad mode off: nothing to say
        K.rms_norm(x.detach(), w)  # no input requires grad
    with pytest.warns(NoGradientWarning, match=r"rms_norm\(\).*no gradient") as record:
        y = K.rms_norm(x, w)
    assert y.grad_fn is None and not y.requires_grad
    assert [r.filename for r in record] == [__file__]  # the caller's line, not tilelang's
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        K.rms_norm(x, w)  # once per function
    with pytest.warns(NoGradientWarning, match=r"silu_and_mul\(\)"):
        K.silu_and_mul(x)
