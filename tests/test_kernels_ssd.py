"""`tilelang.kernels.ssd` (issue 12, part 2): `ssd_chunk_scan`, Mamba-2's SSD scan,
against a numpy float64 loop written from the recurrence (S[t] = exp(Δ·A)·S[t-1] +
Δ·x[t] ⊗ B[t], y[t] = S[t]·C[t] + D·x[t], gated by silu(z); one step at a time, not the
kernel's chunks), on the reference interpreter and the CPU backend; lengths 1, 7, 100
and 257 with chunks that do not divide them, groups 1 and more, initial and final
states, f16 and bf16 inputs, Δ·|A| large enough that exp of a long cumulative sum
underflows; 0 spills on sm_80 and sm_90; errors that name the parameter, the
expectation and what was given."""

import ml_dtypes
import numpy as np
import pytest
from conftest import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st

import tilelang as tl
from tilelang.kernels import ssd, ssd_chunk_scan

BACKENDS = [True, False]
BACKEND_IDS = ["interpreter", "cpu"]


def softplus(v):
    return np.logaddexp(0.0, v)


def silu(v):
    return v / (1.0 + np.exp(-v))


def ssd_reference(x, dt, A, B, C, D=None, z=None, bias=None, softplus_dt=False, initial=None):
    """The recurrence in float64, one step at a time: out [b, L, H, P], S [b, H, P, N]."""
    x, dt, A, B, C = (np.asarray(v, np.float64) for v in (x, dt, A, B, C))
    nb, length, heads, p = x.shape
    groups, n = B.shape[2:]
    if bias is not None:
        dt = dt + np.asarray(bias, np.float64)
    if softplus_dt:
        dt = softplus(dt)
    out = np.zeros((nb, length, heads, p))
    final = np.zeros((nb, heads, p, n))
    for b in range(nb):
        for h in range(heads):
            g = h // (heads // groups)
            state = np.zeros((p, n)) if initial is None else np.array(initial[b, h], np.float64)
            for t in range(length):
                state = np.exp(dt[b, t, h] * A[h]) * state + dt[b, t, h] * np.outer(
                    x[b, t, h], B[b, t, g]
                )
                out[b, t, h] = state @ C[b, t, g]
                if D is not None:
                    out[b, t, h] += np.asarray(D, np.float64)[h] * x[b, t, h]
                if z is not None:
                    out[b, t, h] *= silu(np.asarray(z[b, t, h], np.float64))
            final[b, h] = state
    return out, final


def ssd_inputs(nb, length, heads, p, groups, n, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return dict(
        x=rng.standard_normal((nb, length, heads, p)).astype(dtype),
        dt=rng.uniform(0.0, 1.0, (nb, length, heads)).astype(dtype),
        A=-rng.uniform(0.5, 8.0, heads).astype(np.float32),
        B=rng.standard_normal((nb, length, groups, n)).astype(dtype),
        C=rng.standard_normal((nb, length, groups, n)).astype(dtype),
        D=rng.standard_normal(heads).astype(np.float32),
        z=rng.standard_normal((nb, length, heads, p)).astype(dtype),
        dt_bias=(rng.standard_normal(heads) * 0.5).astype(np.float32),
        initial_states=rng.standard_normal((nb, heads, p, n)).astype(np.float32),
    )


def reference_of(v, softplus_dt=True):
    return ssd_reference(
        v["x"], v["dt"], v["A"], v["B"], v["C"], v.get("D"), v.get("z"), v.get("dt_bias"),
        softplus_dt, v.get("initial_states"),
    )  # fmt: skip


@pytest.mark.parametrize("interpret", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize(("length", "chunk"), [(1, 16), (7, 16), (100, 32), (257, 16)])
def test_ssd_chunk_scan_matches_a_sequential_loop(length, chunk, interpret):
    v = ssd_inputs(2, length, 4, 8, 2, 16, seed=length)
    expected, final = reference_of(v)
    out, state = ssd_chunk_scan(
        **v, chunk_size=chunk, dt_softplus=True, return_final_states=True, interpret=interpret
    )
    assert out.shape == (2, length, 4, 8) and out.dtype == np.float32
    assert state.shape == (2, 4, 8, 16) and state.dtype == np.float32
    assert_close(out, expected, 2e-5)
    assert_close(state, final, 2e-5)


@pytest.mark.parametrize("interpret", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize(("heads", "groups"), [(3, 1), (4, 4), (6, 2)])
def test_heads_read_their_group_of_B_and_C(heads, groups, interpret):
    v = ssd_inputs(1, 37, heads, 4, groups, 8, seed=heads * 10 + groups)
    del v["initial_states"], v["z"]
    expected, _ = reference_of(v)
    assert_close(
        ssd_chunk_scan(**v, chunk_size=16, dt_softplus=True, interpret=interpret), expected, 2e-5
    )


@pytest.mark.parametrize("interpret", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("option", ["plain", "D", "D per column", "z", "dt_bias"])
def test_optional_arguments_and_sizes_that_are_not_powers_of_two(option, interpret):
    v = ssd_inputs(1, 40, 2, 5, 1, 6, seed=3)
    kept = {k: v[k] for k in ("x", "dt", "A", "B", "C")}
    if option == "D":
        kept["D"] = v["D"]
    elif option == "D per column":
        kept["D"] = np.random.default_rng(1).standard_normal((2, 5)).astype(np.float32)
    elif option in ("z", "dt_bias"):
        kept[option] = v[option]
    expected, _ = reference_of(kept, softplus_dt=False)  # D[h]·x[t, h] is per column too
    assert_close(ssd_chunk_scan(**kept, chunk_size=16, interpret=interpret), expected, 2e-5)


def test_the_chunk_does_not_change_the_result():
    v = ssd_inputs(1, 90, 2, 8, 1, 16, seed=8)
    results = [ssd_chunk_scan(**v, chunk_size=c, dt_softplus=True) for c in (1, 16, 20, 256)]
    expected, _ = reference_of(v)
    for out in results:
        assert_close(out, expected, 2e-5)


def test_large_steps_stay_finite_where_exp_of_a_long_cumulative_sum_underflows():
    v = ssd_inputs(1, 100, 2, 8, 1, 16, seed=5)
    v["dt"] = np.full_like(v["dt"], 1.0)
    v["A"] = np.full_like(v["A"], -20.0)  # Δ·|A| = 20 at every step
    del v["dt_bias"]
    expected, final = reference_of(v, softplus_dt=False)
    out, state = ssd_chunk_scan(**v, chunk_size=32, return_final_states=True)
    assert_close(out, expected, 2e-5)
    assert_close(state, final, 2e-5)
    # exp(s[t]) / exp(s[u]) over one chunk: 0/0 in f32 already at step 5
    cumulative = np.cumsum(np.full(32, -20.0, np.float32))
    with np.errstate(divide="ignore", invalid="ignore"):
        assert not np.isfinite(np.exp(cumulative[-1]) / np.exp(cumulative[-2]))


def test_initial_states_continue_a_split_sequence():
    v = ssd_inputs(1, 50, 2, 8, 1, 16, seed=9)
    del v["initial_states"]
    whole = ssd_chunk_scan(**v, chunk_size=16, dt_softplus=True)
    parts = [{k: (a[:, s] if a.ndim > 2 else a) for k, a in v.items()} for s in (
        slice(0, 23), slice(23, 50))]  # fmt: skip
    head, state = ssd_chunk_scan(
        **{k: np.ascontiguousarray(a) for k, a in parts[0].items()},
        chunk_size=16, dt_softplus=True, return_final_states=True,
    )  # fmt: skip
    tail = ssd_chunk_scan(
        **{k: np.ascontiguousarray(a) for k, a in parts[1].items()},
        chunk_size=16, dt_softplus=True, initial_states=state,
    )  # fmt: skip
    assert_close(np.concatenate([head, tail], axis=1), whole.astype(np.float64), 1e-5)


@pytest.mark.parametrize("length", [33, 257])
@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["f16", "bf16"])
def test_half_precision_inputs_stay_within_a_rounding_of_their_dtype(dtype, length):
    v = ssd_inputs(1, length, 2, 16, 1, 32, seed=6, dtype=dtype)
    expected, final = reference_of(v)
    out, state = ssd_chunk_scan(**v, chunk_size=32, dt_softplus=True, return_final_states=True)
    assert out.dtype == np.dtype(dtype) and state.dtype == np.float32
    eps = 2.0**-10 if dtype == np.float16 else 2.0**-7
    assert_close(out, expected, eps)  # the dots' operands and the output round once each
    assert_close(state, final, eps)
    v["dt"] = v["dt"].astype(np.float32)  # dt may keep its own dtype
    assert_close(ssd_chunk_scan(**v, chunk_size=32, dt_softplus=True), expected, eps)


def test_an_empty_sequence_returns_the_initial_states():
    v = ssd_inputs(1, 0, 2, 4, 1, 8)
    out, state = ssd_chunk_scan(**v, chunk_size=16, return_final_states=True)
    assert out.shape == (1, 0, 2, 4)
    assert np.array_equal(state, v["initial_states"])


@settings(max_examples=5, deadline=None)
@given(
    length=st.integers(1, 80),
    heads_per_group=st.integers(1, 3),
    groups=st.integers(1, 2),
    p=st.integers(1, 12),
    n=st.integers(1, 20),
    chunk=st.sampled_from([7, 16, 32]),
)
def test_random_shapes_on_the_cpu_backend(length, heads_per_group, groups, p, n, chunk):
    v = ssd_inputs(1, length, heads_per_group * groups, p, groups, n, seed=length * 7 + p + n)
    expected, final = reference_of(v)
    out, state = ssd_chunk_scan(**v, chunk_size=chunk, dt_softplus=True, return_final_states=True)
    assert_close(out, expected, 2e-5)
    assert_close(state, final, 2e-5)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90", "sm_90a"])
@pytest.mark.parametrize("n", [16, 64, 128])
@pytest.mark.parametrize("dtype", [tl.f32, tl.bf16], ids=["f32", "bf16"])
def test_compiles_for_sm80_and_sm90_without_spills_at_the_default_tiles(arch, n, dtype):
    full = dict(HAS_D=True, D_PER_P=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True)
    build = ssd.ssd_chunk_scan_kernel.compile(
        target=arch, **full, HAS_INITIAL=True, FINAL=True, T=dtype, TD=dtype,
        BL=ssd.chunk_for(256), BN=n, BP=ssd.block_p(n, 64, dtype != tl.f32),
    )  # fmt: skip
    resources = build.resources
    assert resources.registers > 0
    assert resources.spill_store_bytes == 0 and resources.spill_load_bytes == 0
    if dtype == tl.f32:  # f32 dots multiply in f32, off the tensor cores
        assert build.stats.get("mma", 0) == 0
    else:  # every dot of half-precision inputs runs on the tensor cores (sm_90a: some
        # through the warpgroup mma)
        tensor_cores = build.stats.get("mma", 0) + build.stats.get("wgmma", 0)
        assert tensor_cores > 0 and build.stats.get("dot_generic", 0) == 0


def test_bad_inputs_name_the_parameter_the_expectation_and_what_was_given():
    v = ssd_inputs(1, 8, 4, 4, 2, 8)
    base = {k: v[k] for k in ("x", "dt", "A", "B", "C")}
    with pytest.raises(ValueError, match=r"dt must have shape \[1, 8, 4\], got shape \[1, 7, 4\]"):
        ssd_chunk_scan(**{**base, "dt": v["dt"][:, :7]}, chunk_size=16)
    with pytest.raises(ValueError, match=r"B's groups .* must divide H = 4, got G = 3"):
        ssd_chunk_scan(**{**base, "B": np.zeros((1, 8, 3, 8), np.float32)}, chunk_size=16)
    with pytest.raises(
        ValueError, match=r"C must have shape \[1, 8, 2, 8\], got shape \[1, 8, 1, 8\]"
    ):
        ssd_chunk_scan(**{**base, "C": v["C"][:, :, :1]}, chunk_size=16)
    with pytest.raises(ValueError, match=r"A must have shape \[4\], got shape \[3\]"):
        ssd_chunk_scan(**{**base, "A": v["A"][:3]}, chunk_size=16)
    with pytest.raises(ValueError, match=r"D must have shape \[4, 4\], got shape \[4, 3\]"):
        ssd_chunk_scan(**base, chunk_size=16, D=np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"initial_states must have shape \[1, 4, 4, 8\]"):
        ssd_chunk_scan(**base, chunk_size=16, initial_states=np.zeros((1, 4, 8, 4), np.float32))
    with pytest.raises(ValueError, match="chunk_size must be a positive int, got 0"):
        ssd_chunk_scan(**base, chunk_size=0)
    with pytest.raises(TypeError, match="B must hold one of f32, got float16"):
        ssd_chunk_scan(**{**base, "B": v["B"].astype(np.float16)}, chunk_size=16)


# ----------------------------------------------------------------- causality, calls, dtypes


def full_call(v, interpret=False):
    """The scan with every option (one build, shared with the loop test above)."""
    return ssd_chunk_scan(
        **v, chunk_size=16, dt_softplus=True, return_final_states=True, interpret=interpret
    )[0]


@pytest.mark.parametrize("interpret", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("name", ["x", "B", "C", "dt"])
def test_a_non_finite_step_leaves_every_earlier_output_as_it_was(name, interpret):
    """One inf or NaN at step t0 (inside a chunk, at a chunk's start, at the last step)
    changes no output before t0, bit for bit, and the output at t0 is not finite."""
    v = ssd_inputs(2, 40, 4, 8, 2, 16, seed=12)
    clean = full_call(v, interpret)
    for t0 in (21, 16, 39):  # chunks of 16: [16, 32) holds 21 and starts at 16
        for bad in (np.inf, np.nan):
            poisoned = {**v, name: v[name].copy()}
            poisoned[name][:, t0] = bad
            out = full_call(poisoned, interpret)
            assert out[:, :t0].tobytes() == clean[:, :t0].tobytes(), (t0, bad)
            assert not np.isfinite(out[:, t0]).any(), (t0, bad)


def test_positional_arguments_follow_mamba_ssm_and_flags_are_keywords():
    v = ssd_inputs(1, 20, 2, 4, 1, 8, seed=13)
    order = ("x", "dt", "A", "B", "C")
    given = [v[k] for k in order]
    tail = [v[k] for k in ("D", "z", "dt_bias", "initial_states")]
    by_keyword = ssd_chunk_scan(**v, chunk_size=16)
    # mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states)
    np.testing.assert_array_equal(ssd_chunk_scan(*given, 16, *tail), by_keyword)
    with pytest.raises(TypeError, match="positional argument"):  # mamba_ssm's seq_idx next
        ssd_chunk_scan(*given, 16, *tail, None)
    with pytest.raises(TypeError, match=r"dt_softplus must be True or False, got ndarray"):
        ssd_chunk_scan(*given, 16, dt_softplus=v["dt_bias"])
    with pytest.raises(TypeError, match=r"return_final_states must be True or False, got 2"):
        ssd_chunk_scan(*given, 16, return_final_states=2)


def test_float64_host_parameters_are_converted_once():
    """A, D, dt_bias and initial_states as float64 (numpy's default) give what their
    f32 values give, bit for bit; x and the other inputs keep their dtype rule."""
    v = ssd_inputs(2, 40, 4, 8, 2, 16, seed=14)
    converted = {k: v[k].astype(np.float32) for k in v}
    wide = {**v, **{k: v[k].astype(np.float64) for k in ("A", "D", "dt_bias", "initial_states")}}
    np.testing.assert_array_equal(full_call(wide), full_call(converted))
    with pytest.raises(TypeError, match="x must hold one of f32, f16, bf16, got float64"):
        full_call({**v, "x": v["x"].astype(np.float64)})
