"""`tilelang.kernels.ssm` (issue 12, part 2): `selective_scan` and
`selective_state_update` against numpy float64 loops written from the spec (step by
step along L, not the kernel's chunks), on the reference interpreter and the CPU
backend; sequence lengths that are not multiples of the chunk; Δ·|A| up to 20 staying
finite; f16 and bf16 inputs; 0 spills on sm_80, sm_90 and sm_90a at every build a
call can choose over a grid of shapes; errors that name the parameter, the
expectation and what was given."""

import functools
import warnings

import ml_dtypes
import numpy as np
import pytest
from conftest import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st

from tilelang import dtypes
from tilelang.kernels import common, selective_scan, selective_state_update, ssm
from tilelang.runtime.launch_facts import size_facts
from tilelang.spill_verdict import RegisterSpillWarning
from tilelang.tuning import library

BACKENDS = [True, False]
BACKEND_IDS = ["interpreter", "cpu"]


def softplus(x):
    return np.logaddexp(0.0, x)


def silu(x):
    return x / (1.0 + np.exp(-x))


def scan_reference(u, delta, A, B, C, D=None, z=None, bias=None, softplus_delta=False):
    """The Mamba-1 recurrence in float64, one step at a time."""
    u, delta, A, B, C = (np.asarray(v, np.float64) for v in (u, delta, A, B, C))
    if bias is not None:
        delta = delta + np.asarray(bias, np.float64)[None, :, None]
    if softplus_delta:
        delta = softplus(delta)
    nb, dm, length = u.shape
    h = np.zeros((nb, dm, A.shape[1]))
    out = np.zeros((nb, dm, length))
    for b in range(nb):
        for d in range(dm):
            state = np.zeros(A.shape[1])
            for t in range(length):
                dt = delta[b, d, t]
                state = np.exp(dt * A[d]) * state + dt * B[b, :, t] * u[b, d, t]
                out[b, d, t] = state @ C[b, :, t]
                if D is not None:
                    out[b, d, t] += float(D[d]) * u[b, d, t]
                if z is not None:
                    out[b, d, t] *= silu(float(z[b, d, t]))
            h[b, d] = state
    return out, h


def scan_inputs(nb, dm, n, length, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return dict(
        u=rng.standard_normal((nb, dm, length)).astype(dtype),
        delta=rng.uniform(0.0, 1.0, (nb, dm, length)).astype(dtype),
        A=-rng.uniform(1.0, 20.0, (dm, n)).astype(np.float32),  # Δ·|A| up to 20
        B=rng.standard_normal((nb, n, length)).astype(dtype),
        C=rng.standard_normal((nb, n, length)).astype(dtype),
        D=rng.standard_normal(dm).astype(np.float32),
        z=rng.standard_normal((nb, dm, length)).astype(dtype),
        delta_bias=(rng.standard_normal(dm) * 0.5).astype(np.float32),
    )


@pytest.mark.parametrize("interpret", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("length", [1, 7, 100, 257])
def test_selective_scan_matches_a_sequential_loop(length, interpret):
    x = scan_inputs(2, 5, 16, length, seed=length)
    expected, last = scan_reference(
        x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True
    )
    out, state = selective_scan(
        **x, delta_softplus=True, return_last_state=True, interpret=interpret
    )
    assert out.shape == (2, 5, length) and out.dtype == np.float32
    assert state.shape == (2, 5, 16) and state.dtype == np.float32
    assert_close(out, expected, 1e-5)
    assert_close(state, last, 1e-5)


@pytest.mark.parametrize("interpret", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("options", ["plain", "D", "z", "bias"])
def test_optional_arguments_and_a_state_size_that_is_not_a_power_of_two(options, interpret):
    x = scan_inputs(1, 3, 5, 40, seed=7)
    kept = {k: x[k] for k in ("u", "delta", "A", "B", "C")}
    if options == "D":
        kept["D"] = x["D"]
    elif options == "z":
        kept["z"] = x["z"]
    elif options == "bias":
        kept["delta_bias"] = x["delta_bias"]
    expected, _ = scan_reference(
        kept["u"],
        kept["delta"],
        kept["A"],
        kept["B"],
        kept["C"],
        kept.get("D"),
        kept.get("z"),
        kept.get("delta_bias"),
    )
    assert_close(selective_scan(**kept, interpret=interpret), expected, 1e-5)


def test_large_steps_stay_finite_where_the_log_space_form_overflows():
    x = scan_inputs(1, 4, 8, 100, seed=3)
    x["delta"] = np.full_like(x["delta"], 1.0)
    x["A"] = np.full_like(x["A"], -20.0)  # Δ·|A| = 20 at every step
    expected, _ = scan_reference(x["u"], x["delta"], x["A"], x["B"], x["C"])
    out = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"])
    assert_close(out, expected, 1e-5)
    with np.errstate(over="ignore"):  # the closed form: exp(-cumsum(Δ·A)) over 32 steps
        assert not np.isfinite(np.exp(-np.cumsum(x["delta"][0, 0, :32] * x["A"][0, 0]))).all()


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["f16", "bf16"])
def test_half_precision_inputs_compute_in_f32_and_round_once(dtype):
    x = scan_inputs(1, 4, 16, 33, seed=5, dtype=dtype)
    expected, _ = scan_reference(
        x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True
    )
    out = selective_scan(**x, delta_softplus=True)
    assert out.dtype == np.dtype(dtype)
    eps = 2.0**-10 if dtype == np.float16 else 2.0**-7
    assert_close(out, expected, 4 * eps)


def update_reference(state, x, dt, A, B, C, D=None, z=None, bias=None, softplus_dt=False):
    state, x, dt, A, B, C = (np.asarray(v, np.float64) for v in (state, x, dt, A, B, C))
    if bias is not None:
        dt = dt + np.asarray(bias, np.float64)
    if softplus_dt:
        dt = softplus(dt)
    new = np.empty_like(state)
    y = np.empty_like(x)
    for b in range(x.shape[0]):
        for d in range(x.shape[1]):
            new[b, d] = np.exp(dt[b, d] * A[d]) * state[b, d] + dt[b, d] * B[b] * x[b, d]
            y[b, d] = new[b, d] @ C[b]
            if D is not None:
                y[b, d] += float(D[d]) * x[b, d]
            if z is not None:
                y[b, d] *= silu(float(z[b, d]))
    return new, y


@pytest.mark.parametrize("interpret", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize(
    ("nb", "dm", "n", "full"), [(1, 1, 1, False), (3, 37, 16, True), (2, 300, 5, True)]
)
def test_state_update_matches_one_step_of_the_loop_in_place(nb, dm, n, full, interpret):
    rng = np.random.default_rng(dm)
    state = rng.standard_normal((nb, dm, n)).astype(np.float32)
    x, dt, z = (rng.standard_normal((nb, dm)).astype(np.float32) for _ in range(3))
    A = -rng.uniform(1.0, 20.0, (dm, n)).astype(np.float32)
    B, C = (rng.standard_normal((nb, n)).astype(np.float32) for _ in range(2))
    D, bias = (rng.standard_normal(dm).astype(np.float32) for _ in range(2))
    extra = dict(D=D, z=z, dt_bias=bias, dt_softplus=True) if full else {}
    new, expected = update_reference(state, x, dt, A, B, C, *((D, z, bias, True) if full else ()))
    s = state.copy()
    y = selective_state_update(s, x, dt, A, B, C, **extra, interpret=interpret)
    assert_close(y, expected, 1e-5)
    assert_close(s, new, 1e-5)


def test_the_state_after_a_scan_continues_with_decode_steps():
    x = scan_inputs(1, 3, 8, 12, seed=11)
    whole = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"])
    head, state = selective_scan(
        *(x[k][..., :10] for k in ("u", "delta")),
        x["A"],
        *(x[k][..., :10].copy() for k in ("B", "C")),
        x["D"],
        return_last_state=True,
    )
    for t in (10, 11):
        y = selective_state_update(
            state,
            x["u"][..., t].copy(),
            x["delta"][..., t].copy(),
            x["A"],
            x["B"][..., t].copy(),
            x["C"][..., t].copy(),
            x["D"],
        )
        assert_close(y, whole[..., t].astype(np.float64), 1e-5)
    assert_close(head, whole[..., :10].astype(np.float64), 1e-6)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90", "sm_90a"])
def test_compiles_for_sm80_and_sm90_without_spills(arch):
    full = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True)
    builds = [
        ssm.selective_scan_kernel.compile(target=arch, **full, LAST=True, BD=4, BN=16, BL=32),
        ssm.state_update_kernel.compile(target=arch, **full, BD=128, BN=16),
        # Mamba-2's decode step: values per head, state rows by index, N = 128
        ssm.state_update_kernel.compile(
            target=arch,
            **full,
            **dict.fromkeys(("DT_HEAD", "A_HEAD", "D_HEAD", "BIAS_HEAD"), True),
            INDEXED=True,
            IT=dtypes.i64,
            BD=16,
            BN=128,
        ),
    ]
    for build in builds:
        resources = build.resources
        assert resources.registers > 0
        assert resources.spill_store_bytes == 0 and resources.spill_load_bytes == 0


def test_bad_inputs_name_the_parameter_the_expectation_and_what_was_given():
    x = scan_inputs(1, 3, 4, 8)
    with pytest.raises(
        ValueError, match=r"delta must have shape \[1, 3, 8\], got shape \[1, 3, 7\]"
    ):
        selective_scan(x["u"], x["delta"][..., :7], x["A"], x["B"], x["C"])
    with pytest.raises(ValueError, match=r"A must have shape \[3, N\], got shape \[4, 4\]"):
        selective_scan(x["u"], x["delta"], np.zeros((4, 4), np.float32), x["B"], x["C"])
    with pytest.raises(TypeError, match="B must hold one of f32, got float16"):
        selective_scan(x["u"], x["delta"], x["A"], x["B"].astype(np.float16), x["C"])
    with pytest.raises(ValueError, match=r"D must have shape \[3\], got shape \[4\]"):
        selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], D=np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="u must hold one of f32, f16, bf16, got int32"):
        selective_scan(x["u"].astype(np.int32), x["delta"], x["A"], x["B"], x["C"])
    with pytest.raises(TypeError, match=r"u must be a numpy array .* or a device tensor, got list"):
        selective_scan([1.0], x["delta"], x["A"], x["B"], x["C"])
    with pytest.raises(ValueError, match=r"B's groups .* must divide Dm = 3, got G = 2"):
        grouped = np.stack([x["B"], x["B"]], axis=1)
        selective_scan(x["u"], x["delta"], x["A"], grouped, grouped)
    state = np.zeros((1, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"dt must have shape \[1, 3\], got shape \[1, 2\]"):
        selective_state_update(
            state, x["u"][..., 0], x["delta"][..., 0, :2], x["A"], x["B"][..., 0], x["C"][..., 0]
        )
    with pytest.raises(ValueError, match=r"C must have shape \[1, 4\], got shape \[1, 5\]"):
        selective_state_update(
            state,
            x["u"][..., 0],
            x["delta"][..., 0],
            x["A"],
            x["B"][..., 0],
            np.zeros((1, 5), np.float32),
        )


def test_a_wrong_size_says_which_argument_the_expected_size_came_from():
    x = scan_inputs(1, 4, 3, 10)
    wrong = np.zeros((1, 8, 10), np.float32)
    with pytest.raises(
        ValueError,
        match=r"B must have shape \[1, 3, 10\], got shape \[1, 8, 10\] "
        r"\(N = 3 from A.shape\[1\]\)",
    ):
        selective_scan(x["u"], x["u"], x["A"], wrong, wrong)
    with pytest.raises(ValueError, match=r"got shape \[2, 3, 10\] \(batch = 1 from u.shape\[0\]\)"):
        selective_scan(x["u"], x["u"], x["A"], x["B"], np.zeros((2, 3, 10), np.float32))
    with pytest.raises(
        ValueError, match=r"A must have shape \[4, N\], got shape \[3, 3\] \(Dm = 4 from u"
    ):
        selective_scan(x["u"], x["u"], x["A"][:3], x["B"], x["C"])
    state = np.zeros((1, 4, 3), np.float32)
    with pytest.raises(ValueError, match=r"\(N = 3 from state.shape\[2\]\)"):
        selective_state_update(
            state, x["u"][..., 0], x["u"][..., 0], x["A"], x["B"][..., 0], wrong[..., 0]
        )
    # A sibling using the same check: the size came from x's last dimension.
    from tilelang.kernels import rms_norm

    with pytest.raises(ValueError, match=r"got shape \[5\] \(6 from x.shape\[1\]\)"):
        rms_norm(np.zeros((2, 6), np.float32), np.zeros(5, np.float32))


def grouped_reference(x, groups):
    """Channel d reads group d // (Dm / G): the ungrouped loop, one channel at a time."""
    per = x["u"].shape[1] // groups
    rows = []
    for d in range(x["u"].shape[1]):
        g = d // per
        out, _ = scan_reference(
            x["u"][:, d : d + 1], x["delta"][:, d : d + 1], x["A"][d : d + 1],
            x["B"][:, g], x["C"][:, g], x["D"][d : d + 1], x["z"][:, d : d + 1],
        )  # fmt: skip
        rows.append(out)
    return np.concatenate(rows, axis=1)


@pytest.mark.parametrize("interpret", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize(("dm", "groups"), [(8, 2), (6, 3), (4, 4)])
def test_grouped_B_and_C(dm, groups, interpret):
    x = scan_inputs(2, dm, 16, 37, seed=dm + groups)
    rng = np.random.default_rng(groups)
    x["B"], x["C"] = (rng.standard_normal((2, groups, 16, 37)).astype(np.float32) for _ in "BC")
    del x["delta_bias"]
    assert_close(selective_scan(**x, interpret=interpret), grouped_reference(x, groups), 1e-5)
    with pytest.raises(ValueError, match=rf"C must have shape \[2, {groups}, 16, 37\]"):
        selective_scan(**{**x, "C": x["C"][:, :1]})


@settings(max_examples=6, deadline=None)
@given(nb=st.integers(1, 2), dm=st.integers(1, 9), n=st.integers(1, 20), length=st.integers(1, 90))
def test_random_shapes_on_the_cpu_backend(nb, dm, n, length):
    x = scan_inputs(nb, dm, n, length, seed=nb * 1000 + dm * 100 + n + length)
    expected, last = scan_reference(**{k: x[k] for k in ("u", "delta", "A", "B", "C", "D")})
    out, state = selective_scan(
        x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], return_last_state=True
    )
    assert_close(out, expected, 1e-5)
    assert_close(state, last, 1e-5)


class FakeDeviceTensor:
    """Something with only `__cuda_array_interface__` (no reshape), as DeviceBuffer."""

    def __init__(self):
        self.__cuda_array_interface__ = dict(
            data=(1024, False), shape=(2, 3, 4), typestr="<f4", version=3
        )


def test_device_tensors_without_reshape_get_a_view_of_the_same_memory():
    view = common.reshaped(FakeDeviceTensor(), (2, 1, 3, 4), "B")
    interface = view.__cuda_array_interface__
    assert interface["shape"] == (2, 1, 3, 4) and interface["data"] == (1024, False)


def test_half_precision_state_and_an_empty_sequence():
    rng = np.random.default_rng(4)
    state = rng.standard_normal((2, 8, 16)).astype(np.float16)
    x, dt = (rng.standard_normal((2, 8)).astype(np.float16) for _ in "xd")
    A = -rng.uniform(1.0, 20.0, (8, 16)).astype(np.float32)
    B, C = (rng.standard_normal((2, 16)).astype(np.float16) for _ in "BC")
    new, expected = update_reference(state, x, dt, A, B, C, softplus_dt=True)
    s = state.copy()
    y = selective_state_update(s, x, dt, A, B, C, dt_softplus=True)
    assert y.dtype == np.float16 and s.dtype == np.float16
    assert_close(y, expected, 2.0**-8)
    assert_close(s, new, 2.0**-9)
    x = scan_inputs(1, 3, 4, 0)
    out, last = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], return_last_state=True)
    assert out.shape == (1, 3, 0) and np.array_equal(last, np.zeros((1, 3, 4), np.float32))


# --------------------------------------------------------------------------- the walk
# `selective_scan_walk_kernel`: a thread per channel stepping through L; its channels
# come a warp at a time, so these shapes have 32 or 64 of them.


@pytest.mark.parametrize("interpret", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("length", [1, 7, 100, 257])
def test_the_walk_matches_a_sequential_loop(length, interpret):
    x = scan_inputs(2, 32, 16, length, seed=length + 1)
    expected, last = scan_reference(
        x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True
    )
    out, state = selective_scan(
        **x, delta_softplus=True, return_last_state=True, interpret=interpret, method="walk"
    )
    assert out.shape == (2, 32, length) and state.shape == (2, 32, 16)
    assert_close(out, expected, 1e-5)
    assert_close(state, last, 1e-5)


@pytest.mark.parametrize("options", ["plain", "D", "z", "bias"])
def test_the_walk_with_each_optional_argument_and_an_odd_state_size(options):
    x = scan_inputs(1, 32, 5, 40, seed=11)
    kept = {k: x[k] for k in ("u", "delta", "A", "B", "C")}
    name = {"D": "D", "z": "z", "bias": "delta_bias"}.get(options)
    if name:  # a bias of either sign without softplus would make some Δ < 0: growth
        kept[name] = np.abs(x[name]) if name == "delta_bias" else x[name]
    expected, _ = scan_reference(
        *(kept[k] for k in ("u", "delta", "A", "B", "C")),
        kept.get("D"), kept.get("z"), kept.get("delta_bias"),
    )  # fmt: skip
    assert_close(selective_scan(**kept, method="walk"), expected, 1e-5)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["f16", "bf16"])
def test_the_walk_over_half_precision_inputs(dtype):
    x = scan_inputs(1, 32, 16, 33, seed=6, dtype=dtype)
    expected, _ = scan_reference(
        x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True
    )
    out = selective_scan(**x, delta_softplus=True, method="walk")
    assert out.dtype == np.dtype(dtype)
    assert_close(out, expected, 4 * (2.0**-10 if dtype == np.float16 else 2.0**-7))


def test_the_walk_with_grouped_B_and_C_and_large_steps():
    x = scan_inputs(2, 64, 16, 37, seed=9)
    rng = np.random.default_rng(2)
    x["B"], x["C"] = (rng.standard_normal((2, 2, 16, 37)).astype(np.float32) for _ in "BC")
    x["delta"] = np.full_like(x["delta"], 1.0)
    x["A"] = np.full_like(x["A"], -20.0)  # Δ·|A| = 20: exp2 of -28.9, far from the flush
    del x["delta_bias"]
    assert_close(selective_scan(**x, method="walk"), grouped_reference(x, 2), 1e-5)


def test_the_method_follows_the_shape_and_a_walk_that_cannot_run_is_refused():
    assert ssm.scan_method(None, 8 * 2048, 2048, 2048, 16) == "walk"
    assert ssm.scan_method(None, 256, 256, 2048, 16) == "walk"  # 2^19 steps: segments fill it
    assert ssm.scan_method(None, 2 * 64, 64, 2048, 16) == "chunked"  # too little work
    assert ssm.scan_method(None, 2048, 2048, 128, 16) == "chunked"
    assert ssm.scan_method(None, 8 * 2040, 2040, 2048, 16) == "chunked"  # not whole warps
    assert ssm.scan_method("chunked", 8 * 2048, 2048, 2048, 16) == "chunked"
    x = scan_inputs(1, 5, 4, 8)
    with pytest.raises(ValueError, match=r"method='walk' needs the channels of a group"):
        selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], method="walk")
    with pytest.raises(ValueError, match=r"method must be None, 'walk' or 'chunked', got 'x'"):
        selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], method="x")


# --------------------------------------------------------------------------- segments
# A walk over few channels cuts L into segments (`walk_segments`): each but the last
# gives (decay, local), and the walk over a segment starts from the fold of those
# before it. Forced here to counts that leave a short last segment and empty ones.


@pytest.mark.parametrize("interpret", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("segments", [2, 3, 5, 9])
def test_a_walk_cut_into_segments_matches_a_sequential_loop(segments, interpret, monkeypatch):
    monkeypatch.setattr(ssm, "walk_segments", lambda nb, dm, length: segments)
    x = scan_inputs(2, 32, 16, 100, seed=segments)  # segments of 64, 48, 32, 16 steps
    expected, last = scan_reference(
        x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True
    )
    out, state = selective_scan(
        **x, delta_softplus=True, return_last_state=True, interpret=interpret, method="walk"
    )
    assert_close(out, expected, 1e-5)
    assert_close(state, last, 1e-5)


def test_segments_fill_the_grid_with_steps_to_spare():
    assert ssm.walk_segments(8, 2048, 2048) == 1  # 512 warps: the GPU check's shape
    assert ssm.walk_segments(1, 2048, 2048) == 8  # 64 warps x 8 segments of 256 steps
    assert ssm.walk_segments(1, 256, 2048) == 16  # at most L / 128 segments
    assert ssm.walk_segments(1, 32, 100) == 1  # too short to cut


# --------------------------------------------------------------------------- state sizes
# mamba_ssm accepts d_state up to 256. The walk holds a channel's states in registers
# up to N = 32 (16 steps a chunk up to N = 16, 4 for 17..32); larger N run the chunked
# scan, whose chunk shrinks to 16 steps at N = 256.

STATE_SIZES = [1, 17, 32, 64, 256]


@pytest.mark.parametrize("n", STATE_SIZES)
def test_every_state_size_runs_with_the_default_method(n):
    x = scan_inputs(1, 32, n, 21, seed=n)
    expected, last = scan_reference(
        x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True
    )
    out, state = selective_scan(**x, delta_softplus=True, return_last_state=True)
    assert state.shape == (1, 32, n)
    assert_close(out, expected, 1e-5)
    assert_close(state, last, 1e-5)


@pytest.mark.parametrize("n", [17, 32])
def test_the_walk_runs_state_sizes_up_to_32(n):
    x = scan_inputs(1, 32, n, 21, seed=n + 1)
    expected, last = scan_reference(
        x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True
    )
    out, state = selective_scan(**x, delta_softplus=True, return_last_state=True, method="walk")
    assert_close(out, expected, 1e-5)
    assert_close(state, last, 1e-5)


def test_a_walk_of_32_states_cut_into_segments(monkeypatch):
    monkeypatch.setattr(ssm, "walk_segments", lambda nb, dm, length: 3)
    x = scan_inputs(1, 32, 32, 70, seed=5)  # segments of 32, 32 and 6 steps
    expected, last = scan_reference(
        x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True
    )
    out, state = selective_scan(**x, delta_softplus=True, return_last_state=True, method="walk")
    assert_close(out, expected, 1e-5)
    assert_close(state, last, 1e-5)


def test_the_default_method_walks_only_the_state_sizes_it_holds():
    # the shape: 2^19 channel-steps in whole warps, walked at every N up to 32
    for n in (1, 16, 17, 32):
        assert ssm.scan_method(None, 256, 256, 2048, n) == "walk", n
    for n in (33, 64, 128, 256):
        assert ssm.scan_method(None, 256, 256, 2048, n) == "chunked", n
        assert ssm.scan_method(None, 8 * 2048, 2048, 2048, n) == "chunked", n


@pytest.mark.parametrize("n", [33, 64, 256])
def test_an_explicit_walk_over_too_many_states_is_refused_before_compiling(n, monkeypatch):
    def no_compile(*args, **kwargs):
        raise AssertionError("compiled a walk it cannot run")

    monkeypatch.setattr(ssm, "step_columns", no_compile)
    x = scan_inputs(1, 32, n, 8)
    with pytest.raises(
        ValueError,
        match=rf"method='walk' .* supports a state size N \(A.shape\[1\]\) from 1 to 32, "
        rf"got N = {n}; use method='chunked' or None",
    ):
        selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], method="walk")


# Every build `selective_scan` can make over a grid of shapes, at every tile it may
# tune among: batch 2 and Dm 128 (room for twice the default BD at every N), N from 1
# to 256 (odd where a padded N can be: no size fact on N), both methods; L = 257 (no
# size fact on L: the masked last chunk; the walk in 2 segments) or L = 100 (a walk
# in one). A cold compile costs about a second, so each N is built for one target, in
# one dtype, with or without the final state: the grid covers each target, dtype, flag
# and kind of walk (9 N x 3 of each would take minutes). The last row is the call
# that warned on sm_90a (128 registers given, 140 estimated, 4 bytes spilled).
F16, F32, BF16 = np.float16, np.float32, ml_dtypes.bfloat16
CHUNKED, SEGMENTED, WHOLE = ("chunked", 257), ("walk", 257), ("walk", 100)
PLANNED = [
    # (target, Dm, N, dtype, return_last_state, (method, L) of each call)
    ("sm_80", 128, 1, F16, True, (CHUNKED, SEGMENTED)),
    ("sm_90", 128, 2, F16, False, (CHUNKED, SEGMENTED)),
    ("sm_90a", 128, 3, F16, True, (CHUNKED, SEGMENTED)),
    ("sm_80", 128, 5, F32, False, (CHUNKED, WHOLE)),
    ("sm_90", 128, 9, F32, True, (CHUNKED, WHOLE)),
    ("sm_90a", 128, 17, F32, False, (CHUNKED, WHOLE)),
    ("sm_80", 128, 33, BF16, True, (CHUNKED,)),
    ("sm_90", 128, 65, BF16, False, (CHUNKED,)),
    ("sm_90a", 128, 129, BF16, True, (CHUNKED,)),
    ("sm_90a", 32, 16, F16, False, (("chunked", 100),)),
]


def planned_builds(monkeypatch, target):
    """{name: (kernel, constexprs, size facts)} of each launch `target`'s calls of the
    grid would make, recorded instead of run (the tuner's configs: each one's launch)."""
    builds = {}

    def record(kernel, *args, **kwargs):
        values, constexprs = kernel._split_arguments(args, kwargs)
        sizes = kernel.specialization(**constexprs).arguments.bind(values).sizes
        facts = size_facts(sizes)
        builds[f"{kernel.fn.__name__} {constexprs} {facts}"] = (kernel, constexprs, facts)

    def every_config(kernel, args, fixed, configs, *_):
        for config in configs:
            kernel(*args, **fixed, **config)

    monkeypatch.setattr(type(ssm.selective_scan_kernel), "__call__", record)
    monkeypatch.setattr(library, "call", every_config)
    for arch, dm, n, dtype, last, calls in PLANNED:
        for method, length in calls if arch == target else ():
            x = scan_inputs(2, dm, n, length, dtype=dtype)
            selective_scan(**x, delta_softplus=True, return_last_state=last, method=method)
    return builds


@pytest.mark.parametrize("target", ["sm_80", "sm_90", "sm_90a"])
def test_every_build_a_call_can_choose_compiles_without_spills(target, monkeypatch):
    builds = planned_builds(monkeypatch, target)
    kinds = {kernel.fn.__name__ for kernel, _, _ in builds.values()}
    assert kinds == {
        "selective_scan_kernel",
        "selective_scan_walk_kernel",
        "walk_segments_kernel",
        "step_columns_kernel",
    }
    walks = [c for k, c, _ in builds.values() if k is ssm.selective_scan_walk_kernel]
    assert {c["SEGMENTED"] for c in walks} == {True, False}
    for name, (kernel, constexprs, facts) in builds.items():
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            r = kernel.compile(assume=facts, target=target, **constexprs).resources
        assert r.registers > 0 and r.spills == 0, (name, r)
        spills = [w for w in said if issubclass(w.category, RegisterSpillWarning)]
        assert not spills, (name, str(spills[0].message))


# ----------------------------------------------------------------- causality, calls, dtypes


@pytest.mark.parametrize(
    ("method", "interpret"), [("chunked", True), ("chunked", False), ("walk", False)]
)
def test_a_non_finite_step_leaves_every_earlier_output_as_it_was(method, interpret):
    """An inf or NaN in u, delta, B or C at step t0 (inside a chunk, at a chunk's start,
    at the last step) changes no output before t0, bit for bit."""
    x = scan_inputs(2, 32 if method == "walk" else 5, 16, 100, seed=100)
    run = dict(delta_softplus=True, return_last_state=True, interpret=interpret, method=method)
    clean, _ = selective_scan(**x, **run)
    for name in ("u", "delta", "B", "C"):
        for t0, bad in ((37, np.inf), (64, np.nan), (99, np.inf)):
            poisoned = {**x, name: x[name].copy()}
            poisoned[name][..., t0] = bad
            out, _ = selective_scan(**poisoned, **run)
            assert out[..., :t0].tobytes() == clean[..., :t0].tobytes(), (name, t0)
            assert not np.isfinite(out[..., t0]).all(), (name, t0)


def test_flags_refuse_arrays_and_float64_host_parameters_are_converted():
    x = scan_inputs(2, 5, 16, 100, seed=100)
    order = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    with pytest.raises(TypeError, match=r"delta_softplus must be True or False, got ndarray"):
        selective_scan(*(x[k] for k in order), x["u"])  # one tensor too many, positionally
    with pytest.raises(TypeError, match=r"return_last_state must be True or False, got 'yes'"):
        selective_scan(**x, return_last_state="yes")
    wide = {**x, **{k: x[k].astype(np.float64) for k in ("A", "D", "delta_bias")}}
    run = dict(delta_softplus=True, return_last_state=True)
    for got, expected in zip(
        selective_scan(**wide, **run), selective_scan(**x, **run), strict=True
    ):
        np.testing.assert_array_equal(got, expected)
    state = np.zeros((2, 5, 16), np.float32)
    step = [x[k][..., 0].copy() for k in ("u", "delta")]
    bc = [x[k][..., 0].copy() for k in ("B", "C")]
    params = [x[k] for k in ("A", "D", "delta_bias")]
    wide_params = [v.astype(np.float64) for v in params]
    results = [
        selective_state_update(state.copy(), *step, a, *bc, d, None, bias, True)
        for a, d, bias in (params, wide_params)
    ]
    np.testing.assert_array_equal(results[1], results[0])
    with pytest.raises(TypeError, match=r"dt_softplus must be True or False, got ndarray"):
        selective_state_update(state, *step, params[0], *bc, x["D"], None, None, x["D"])


# ----------------------------------------------------------------- Mamba-2's decode step


def heads_reference(state, x, dt, A, B, C, D, z, bias, rows=None, pad=-1):
    """One step of h = exp(Δ·A)·h + Δ·B·x, y = C·h + D·x, times silu(z), Δ =
    softplus(dt + bias), in float64, one (entry, head, channel) at a time, written from
    the recurrence: state [S, H, P, N] (a new array), x, dt, z [batch, H, P], A [H, P,
    N], B, C [batch, G, N], D, bias [H, P]; entry b's state row rows[b] (b without),
    none where it is `pad` (read as zeros, not written)."""
    new = np.array(state, np.float64)
    nb, heads, p = x.shape
    groups = B.shape[1]
    y = np.zeros((nb, heads, p))
    for b in range(nb):
        row = b if rows is None else int(rows[b])
        for h in range(heads):
            g = h // (heads // groups)
            for c in range(p):
                delta = softplus(float(dt[b, h, c]) + float(bias[h, c]))
                old = np.zeros(A.shape[2]) if row == pad else new[row, h, c]
                value = np.exp(delta * np.float64(A[h, c])) * old
                value = value + delta * np.float64(B[b, g]) * float(x[b, h, c])
                if row != pad:
                    new[row, h, c] = value
                y[b, h, c] = value @ np.float64(C[b, g]) + float(D[h, c]) * float(x[b, h, c])
                y[b, h, c] *= silu(float(z[b, h, c]))
    return new, y


def heads_inputs(nb, heads, p, n, groups, slots=None, seed=0):
    rng = np.random.default_rng(seed)
    f32 = np.float32
    return dict(
        state=rng.standard_normal((slots or nb, heads, p, n)).astype(f32),
        x=rng.standard_normal((nb, heads, p)).astype(f32),
        dt=rng.standard_normal((nb, heads)).astype(f32),  # one a head, as Mamba-2's
        A=-rng.uniform(0.5, 4.0, heads).astype(f32),
        B=rng.standard_normal((nb, groups, n)).astype(f32),
        C=rng.standard_normal((nb, groups, n)).astype(f32),
        D=rng.standard_normal(heads).astype(f32),
        z=rng.standard_normal((nb, heads, p)).astype(f32),
        dt_bias=(rng.standard_normal(heads) * 0.5).astype(f32),
    )


def spread(v, p, n):
    """The per-head values as the full tensors the reference takes."""
    nb, heads = v["dt"].shape
    full = dict(
        dt=np.broadcast_to(v["dt"][:, :, None], (nb, heads, p)),
        A=np.broadcast_to(v["A"][:, None, None], (heads, p, n)),
        D=np.broadcast_to(v["D"][:, None], (heads, p)),
        dt_bias=np.broadcast_to(v["dt_bias"][:, None], (heads, p)),
    )
    return {**v, **full}


def reference_call(v, rows=None, pad=-1):
    names = ("state", "x", "dt", "A", "B", "C", "D", "z", "dt_bias")
    return heads_reference(*(v[k] for k in names), rows, pad)


@pytest.mark.parametrize("interpret", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("form", ["per head", "broadcast views", "full"])
@pytest.mark.parametrize(("heads", "groups"), [(4, 1), (6, 3)])
def test_mamba2_decode_step_matches_the_recurrence(heads, groups, form, interpret):
    p, n = 8, 5  # N = 5: padded to 8 in the kernel
    v = heads_inputs(3, heads, p, n, groups, seed=heads + groups)
    full = spread(v, p, n)
    if form == "broadcast views":  # mamba_ssm's repeat/expand: zero strides
        v = {**v, **{k: full[k] for k in ("dt", "A", "D", "dt_bias")}}
    elif form == "full":  # values that differ along P and N too
        rng = np.random.default_rng(heads)
        full = {**full, "A": -rng.uniform(0.5, 4.0, (heads, p, n)).astype(np.float32)}
        full["dt"] = rng.standard_normal((3, heads, p)).astype(np.float32)
        v = {**v, **{k: np.ascontiguousarray(full[k]) for k in ("dt", "A", "D", "dt_bias")}}
    new, expected = reference_call(full)
    state = v["state"].copy()
    y = selective_state_update(**{**v, "state": state}, dt_softplus=True, interpret=interpret)
    assert y.shape == (3, heads, p) and y.dtype == np.float32
    assert_close(y, expected, 1e-5)
    assert_close(state, new, 1e-5)


@pytest.mark.parametrize("interpret", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize(("index_type", "pad"), [(np.int32, -1), (np.int64, -1), (np.int64, 3)])
def test_state_batch_indices_pick_rows_and_nothing_else_is_read_or_written(
    index_type, pad, interpret
):
    """Entries update the rows their index picks; a pad entry reads a zero state and
    writes none; rows no entry picks (NaN here, so a read would show in y) keep their
    bits. pad 3 is a row of the state: it is skipped all the same."""
    v = heads_inputs(4, 4, 8, 5, 2, slots=7, seed=21)
    rows = np.array([5, pad, 0, 2], index_type)
    picked = {5, 0, 2}
    for r in set(range(7)) - picked:
        v["state"][r] = np.nan
    new, expected = reference_call(spread(v, 8, 5), rows, pad)
    state = v["state"].copy()
    y = selective_state_update(
        **{**v, "state": state}, dt_softplus=True, state_batch_indices=rows, pad_slot_id=pad,
        interpret=interpret,
    )  # fmt: skip
    assert np.isfinite(y).all()
    assert_close(y, expected, 1e-5)
    for r in range(7):
        if r in picked:
            assert_close(state[r], new[r], 1e-5)
        else:
            assert state[r].tobytes() == v["state"][r].tobytes(), r


def test_mamba1_state_batch_indices():
    rng = np.random.default_rng(22)
    state = rng.standard_normal((5, 6, 4)).astype(np.float32)
    x, dt = (rng.standard_normal((3, 6)).astype(np.float32) for _ in "xd")
    A = -rng.uniform(1.0, 5.0, (6, 4)).astype(np.float32)
    B, C = (rng.standard_normal((3, 4)).astype(np.float32) for _ in "BC")
    rows = np.array([4, -1, 1], np.int32)
    s = state.copy()
    y = selective_state_update(s, x, dt, A, B, C, None, None, None, True, rows)
    for b, row in enumerate(rows):
        old = state[row] if row >= 0 else np.zeros((6, 4), np.float32)
        want_state, want_y = update_reference(old[None], x[b : b + 1], dt[b : b + 1], A,
            B[b : b + 1], C[b : b + 1], softplus_dt=True)  # fmt: skip
        assert_close(y[b], want_y[0], 1e-5)
        if row >= 0:
            assert_close(s[row], want_state[0], 1e-5)
    for r in (0, 2, 3):
        assert s[r].tobytes() == state[r].tobytes()


def test_mamba2_bad_inputs_name_the_parameter():
    v = heads_inputs(2, 4, 8, 5, 2, slots=3)
    rows = np.array([0, 2], np.int32)
    call = functools.partial(selective_state_update, state_batch_indices=rows)
    with pytest.raises(ValueError, match=r"B's groups \(shape \[batch, G, N\]\) must divide H"):
        call(**{**v, "B": np.zeros((2, 3, 5), np.float32)})
    with pytest.raises(ValueError, match=r"dt must have shape \[2, 4, 8\] or \[2, 4\], got"):
        call(**{**v, "dt": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match=r"A must have shape \[4, 8, 5\], got shape \[4, 8, 4\]"):
        call(**{**v, "A": np.zeros((4, 8, 4), np.float32)})
    with pytest.raises(ValueError, match=r"x must have shape \[3, 4, 8\]"):  # a row each
        selective_state_update(**v)
    with pytest.raises(ValueError, match=r"state_batch_indices\[1\] = 3 is no row of state"):
        selective_state_update(**v, state_batch_indices=np.array([0, 3], np.int32))
    with pytest.raises(TypeError, match=r"state_batch_indices must hold one of i32, i64"):
        selective_state_update(**v, state_batch_indices=rows.astype(np.float32))
    with pytest.raises(TypeError, match=r"pad_slot_id must be an int, got 0.5"):
        call(**v, pad_slot_id=0.5)
