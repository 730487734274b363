"""`tilelang.kernels.conv` (issue 12, part 2): `causal_conv1d` and `causal_conv1d_update`
against numpy float64 sums written from the definition (out[t] = bias + Σ_k w[k]·x[t -
(W - 1) + k], x before step 0 being 0; the update runs it over [conv_state, x] and keeps
the newest state_len inputs), on the reference interpreter and the CPU backend; widths
2..4, lengths 1, 7, 100 and 257, f16 and bf16 inputs, initial and final states; the
update in place, continuing a sequence step by step; 0 spills on sm_80 and sm_90, and
the compiler's barrier before the state is overwritten; errors that name the
parameter, the expectation and what was given."""

import ml_dtypes
import numpy as np
import pytest
from conftest import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st

from tilelang.kernels import causal_conv1d, causal_conv1d_update, conv

BACKENDS = [True, False]
BACKEND_IDS = ["interpreter", "cpu"]


def silu(v):
    return v / (1.0 + np.exp(-v))


def conv_reference(x, weight, bias=None, activation=None):
    """The causal depthwise convolution in float64, one output step at a time."""
    x, weight = np.asarray(x, np.float64), np.asarray(weight, np.float64)
    width = weight.shape[1]
    out = np.zeros(x.shape)
    for t in range(x.shape[2]):
        for k in range(width):
            source = t - (width - 1) + k
            if source >= 0:
                out[:, :, t] += weight[None, :, k] * x[:, :, source]
    if bias is not None:
        out += np.asarray(bias, np.float64)[None, :, None]
    return silu(out) if activation in ("silu", "swish") else out


def inputs(nb, dm, length, width, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((nb, dm, length)).astype(dtype),
        rng.standard_normal((dm, width)).astype(np.float32),
        rng.standard_normal(dm).astype(np.float32),
    )


@pytest.mark.parametrize("interpret", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("length", [1, 7, 100, 257])
@pytest.mark.parametrize("width", [2, 3, 4])
def test_causal_conv1d_matches_the_definition(length, width, interpret):
    x, weight, bias = inputs(2, 11, length, width, seed=length + width)
    out = causal_conv1d(x, weight, bias, activation="silu", interpret=interpret)
    assert out.shape == x.shape and out.dtype == np.float32
    assert_close(out, conv_reference(x, weight, bias, "silu"), 1e-6)


@pytest.mark.parametrize("interpret", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize(
    ("with_bias", "activation"), [(False, None), (True, None), (False, "swish")]
)
def test_bias_and_activation_are_optional(with_bias, activation, interpret):
    x, weight, bias = inputs(1, 3, 20, 4, seed=2)
    bias = bias if with_bias else None
    out = causal_conv1d(x, weight, bias, activation=activation, interpret=interpret)
    assert_close(out, conv_reference(x, weight, bias, activation), 1e-6)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["f16", "bf16"])
def test_half_precision_inputs_compute_in_f32_and_round_once(dtype):
    x, weight, bias = inputs(2, 9, 70, 4, seed=9, dtype=dtype)
    out = causal_conv1d(x, weight, bias, activation="silu")
    assert out.dtype == np.dtype(dtype)
    eps = 2.0**-11 if dtype == np.float16 else 2.0**-8
    expected = conv_reference(x, weight, bias, "silu")
    assert np.all(np.abs(out.astype(np.float64) - expected) <= eps * np.abs(expected) + 1e-6)


def update_reference(x, state, weight, bias=None, activation=None):
    """Outputs for the steps of x [batch, Dm, S] after `state`, and the new state."""
    extended = np.concatenate([np.asarray(state, np.float64), np.asarray(x, np.float64)], axis=2)
    steps = x.shape[2]
    out = conv_reference(extended, weight, bias, activation)[:, :, -steps:]
    return out, extended[:, :, steps:]


@pytest.mark.parametrize("interpret", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize(
    ("dm", "width", "state_len", "steps"),
    [(1, 2, 1, 1), (37, 4, 3, 1), (300, 3, 5, 1), (16, 4, 3, 4), (8, 2, 6, 3)],
)
def test_update_matches_the_convolution_over_state_and_input_in_place(
    dm, width, state_len, steps, interpret
):
    rng = np.random.default_rng(dm + state_len)
    x = rng.standard_normal((3, dm, steps)).astype(np.float32)
    state = rng.standard_normal((3, dm, state_len)).astype(np.float32)
    weight = rng.standard_normal((dm, width)).astype(np.float32)
    bias = rng.standard_normal(dm).astype(np.float32)
    expected, new_state = update_reference(x, state, weight, bias, "silu")
    given_x = x[:, :, 0].copy() if steps == 1 else x
    out = causal_conv1d_update(given_x, state, weight, bias, "silu", interpret=interpret)
    assert out.shape == given_x.shape
    assert_close(out.reshape(expected.shape), expected, 1e-6)
    assert_close(state, new_state, 0.0)


@pytest.mark.parametrize("interpret", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("length", [1, 2, 7, 257])
@pytest.mark.parametrize("width", [2, 4])
def test_initial_states_come_before_step_0_and_the_final_ones_are_the_last_inputs(
    length, width, interpret
):
    x, weight, bias = inputs(2, 5, length, width, seed=length * width)
    initial = np.random.default_rng(length).standard_normal((2, 5, width - 1)).astype(np.float32)
    out, final = causal_conv1d(
        x, weight, bias, initial_states=initial, return_final_states=True, interpret=interpret
    )
    extended = np.concatenate([initial, x], axis=2)
    assert_close(out, conv_reference(extended, weight, bias)[:, :, width - 1 :], 1e-6)
    assert final.shape == (2, 5, width - 1) and final.dtype == np.float32
    assert_close(final, extended[:, :, -(width - 1) :].astype(np.float64), 0.0)
    _, zeros_before = causal_conv1d(x[:, :, :1].copy(), weight, return_final_states=True)
    assert np.array_equal(zeros_before[:, :, :-1], np.zeros((2, 5, width - 2)))


def test_decode_steps_continue_the_sequence_the_convolution_started():
    x, weight, bias = inputs(2, 6, 12, 4, seed=4)
    whole = causal_conv1d(x, weight, bias, activation="silu")
    _, state = causal_conv1d(
        x[:, :, :8].copy(), weight, bias, activation="silu", return_final_states=True
    )
    for t in range(8, 12):
        y = causal_conv1d_update(x[:, :, t].copy(), state, weight, bias, "silu")
        assert_close(y, whole[:, :, t].astype(np.float64), 1e-6)
    assert_close(state, x[:, :, 9:12].astype(np.float64), 0.0)


def test_half_precision_state_is_updated_in_its_dtype():
    rng = np.random.default_rng(6)
    state = rng.standard_normal((2, 8, 4)).astype(np.float16)
    x = rng.standard_normal((2, 8)).astype(ml_dtypes.bfloat16)
    weight = rng.standard_normal((8, 3)).astype(np.float32)
    expected, new_state = update_reference(x[:, :, None], state, weight)
    s = state.copy()
    y = causal_conv1d_update(x, s, weight)
    assert y.dtype == x.dtype and s.dtype == np.float16
    assert_close(y, expected[:, :, 0], 2.0**-7)
    assert_close(s, new_state, 0.0)


@settings(max_examples=6, deadline=None)
@given(
    nb=st.integers(1, 2),
    dm=st.integers(1, 40),
    length=st.integers(1, 300),
    width=st.sampled_from([2, 3, 4]),
)
def test_random_shapes_on_the_cpu_backend(nb, dm, length, width):
    x, weight, bias = inputs(nb, dm, length, width, seed=nb + dm + length + width)
    assert_close(causal_conv1d(x, weight, bias), conv_reference(x, weight, bias), 1e-6)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_compiles_for_sm80_and_sm90_without_spills(arch):
    full = dict(HAS_BIAS=True, SILU=True)
    builds = [
        conv.causal_conv1d_kernel.compile(target=arch, **full, HAS_INITIAL=True, FINAL=True),
        conv.conv_update_kernel.compile(target=arch, **full, WIDTH=4, BD=512, BS=1, BSL=4),
    ]
    for build in builds:
        resources = build.resources
        assert resources.registers > 0
        assert resources.spill_store_bytes == 0 and resources.spill_load_bytes == 0
    # the update reads the old state in some threads and overwrites it in others
    assert builds[1].stats.get("global_order_barrier", 0) >= 1


def test_bad_inputs_name_the_parameter_the_expectation_and_what_was_given():
    x, weight, bias = inputs(1, 3, 8, 4)
    with pytest.raises(ValueError, match=r"weight must have shape \[3, W\], got shape \[4, 4\]"):
        causal_conv1d(x, np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match=r"weight's width .* must be 2, 3 or 4, got W = 5"):
        causal_conv1d(x, np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match=r"bias must have shape \[3\], got shape \[2\]"):
        causal_conv1d(x, weight, bias[:2])
    with pytest.raises(ValueError, match="activation must be None, 'silu' or 'swish', got 'relu'"):
        causal_conv1d(x, weight, bias, activation="relu")
    with pytest.raises(TypeError, match="x must hold one of f32, f16, bf16, got int32"):
        causal_conv1d(x.astype(np.int32), weight)
    with pytest.raises(
        ValueError, match=r"initial_states must have shape \[1, 3, 3\], got shape \[1, 3, 4\]"
    ):
        causal_conv1d(x, weight, initial_states=np.zeros((1, 3, 4), np.float32))
    state = np.zeros((1, 3, 2), np.float32)
    with pytest.raises(ValueError, match=r"state_len .* must be at least W - 1 = 3, got 2"):
        causal_conv1d_update(x[:, :, 0], state, weight)
    with pytest.raises(
        ValueError, match=r"conv_state must have shape \[1, 3, state_len\], got shape \[1, 2, 3\]"
    ):
        causal_conv1d_update(x[:, :, 0], np.zeros((1, 2, 3), np.float32), weight)


# ----------------------------------------------------------------- causality, calls, dtypes


@pytest.mark.parametrize("interpret", BACKENDS, ids=BACKEND_IDS)
def test_a_non_finite_step_leaves_every_earlier_output_as_it_was(interpret):
    """An inf or NaN in x at step t0 (inside a block of steps, at a block's start, at the
    last step) changes no output before t0, bit for bit."""
    x, weight, bias = inputs(1, 3, 20, 4, seed=2)
    clean = causal_conv1d(x, weight, bias, interpret=interpret)
    for t0, bad in ((9, np.inf), (0, np.nan), (19, -np.inf)):
        poisoned = x.copy()
        poisoned[:, :, t0] = bad
        out = causal_conv1d(poisoned, weight, bias, interpret=interpret)
        assert out[:, :, :t0].tobytes() == clean[:, :, :t0].tobytes(), t0
        assert not np.isfinite(out[:, :, t0]).any(), t0


def test_only_causal_conv1ds_positions_are_positional_and_flags_refuse_arrays():
    x, weight, bias = inputs(1, 3, 20, 4, seed=2)
    seq_idx = np.zeros((1, 20), np.int32)  # causal_conv1d_fn(x, weight, bias, seq_idx, ...)
    with pytest.raises(TypeError, match="positional argument"):
        causal_conv1d(x, weight, bias, seq_idx)
    with pytest.raises(ValueError, match=r"activation must be .*, got an array of shape \[1, 20\]"):
        causal_conv1d(x, weight, bias, activation=seq_idx)
    with pytest.raises(TypeError, match=r"return_final_states must be True or False, got ndarray"):
        causal_conv1d(x, weight, bias, return_final_states=seq_idx)
    with pytest.raises(ValueError, match=r"activation must be .*, got an array of shape \[3\]"):
        causal_conv1d_update(x[:, :, 0].copy(), np.zeros((1, 3, 3), np.float32), weight, bias, bias)


def test_float64_weight_and_bias_are_converted_once():
    x, weight, bias = inputs(1, 3, 20, 4, seed=2)
    wide = (weight.astype(np.float64), bias.astype(np.float64))
    np.testing.assert_array_equal(
        causal_conv1d(x, *wide, activation="silu"),
        causal_conv1d(x, weight, bias, activation="silu"),
    )
    states = [np.ones((1, 3, 3), np.float32) for _ in range(2)]
    np.testing.assert_array_equal(
        causal_conv1d_update(x[:, :, 0].copy(), states[0], *wide, "silu"),
        causal_conv1d_update(x[:, :, 0].copy(), states[1], weight, bias, "silu"),
    )
    np.testing.assert_array_equal(states[0], states[1])
