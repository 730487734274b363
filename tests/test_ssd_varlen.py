"""`ssd_chunk_scan` on packed batches (issue 12; vLLM's Mamba-2 layer): `seq_idx`,
`cu_seqlens` with `return_varlen_states`, and `dt_limit`, against a float64 loop written
from the step recurrence (S[t] = exp(Δ·A)·S[t-1] + Δ·x[t] ⊗ B[t], S[t-1] taken as 0
at the first step of each sequence after step 0, initial_states at step 0 only; one
step at a time, not the kernel's chunks or segments). Sequences that start inside a
chunk, several in one chunk, of length 1 and empty, chunks that do not divide L; the
packed result equals each sequence run alone (bit for bit where the chunks line up);
a NaN or inf in one sequence never reaches another's outputs or states; f16/bf16;
0 spills on sm_80 and sm_90a; checks before any launch, naming the parameter."""

import ml_dtypes
import numpy as np
import pytest
from conftest import assert_close

import tilelang as tl
from tilelang.kernels import ssd, ssd_chunk_scan

BACKENDS = [True, False]
BACKEND_IDS = ["interpreter", "cpu"]
HEADS, P, GROUPS, N = 4, 8, 2, 16


def softplus(v):
    return np.logaddexp(0.0, v)


def silu(v):
    return v / (1.0 + np.exp(-v))


def packed_reference(v, seq_idx, softplus_dt=True, limit=None, cu=None):
    """out [b, L, H, P], the final state [b, H, P, N] and, with cu, the state at the last
    step of each sequence [n_seq, H, P, N] (zeros for an empty one), in float64."""
    x, dt, A, B, C = (np.asarray(v[k], np.float64) for k in ("x", "dt", "A", "B", "C"))
    nb, length, heads, p = x.shape
    groups, n = B.shape[2:]
    if v.get("dt_bias") is not None:
        dt = dt + np.asarray(v["dt_bias"], np.float64)
    if softplus_dt:
        dt = softplus(dt)
    if limit is not None:
        dt = np.clip(dt, *limit)  # NaN stays NaN
    out, states = np.zeros(x.shape), np.zeros((nb, length, heads, p, n))
    for b in range(nb):
        for h in range(heads):
            g = h // (heads // groups)
            initial = v.get("initial_states")
            state = np.zeros((p, n)) if initial is None else np.array(initial[b, h], np.float64)
            for t in range(length):
                if t > 0 and seq_idx[b, t] != seq_idx[b, t - 1]:
                    state = np.zeros((p, n))  # a new sequence: nothing carried over
                state = np.exp(dt[b, t, h] * A[h]) * state + dt[b, t, h] * np.outer(
                    x[b, t, h], B[b, t, g]
                )
                states[b, t, h] = state
                out[b, t, h] = state @ C[b, t, g]
                if v.get("D") is not None:
                    out[b, t, h] += np.asarray(v["D"], np.float64)[h] * x[b, t, h]
                if v.get("z") is not None:
                    out[b, t, h] *= silu(np.asarray(v["z"][b, t, h], np.float64))
    final = states[:, -1] if length else np.zeros((nb, heads, p, n))
    if cu is None:
        return out, final
    varlen = np.zeros((len(cu) - 1, heads, p, n))
    for i in range(len(cu) - 1):
        if cu[i + 1] > cu[i]:
            varlen[i] = states[0, cu[i + 1] - 1]
    return out, final, varlen


def inputs(lengths, nb=1, seed=0, dtype=np.float32):
    """Random inputs for sequences of `lengths` packed along L, their seq_idx [nb, L]
    (every row the same packing) and cu_seqlens."""
    rng = np.random.default_rng(seed)
    length = sum(lengths)
    v = dict(
        x=rng.standard_normal((nb, length, HEADS, P)).astype(dtype),
        dt=rng.uniform(0.0, 1.0, (nb, length, HEADS)).astype(dtype),
        A=-rng.uniform(0.5, 4.0, HEADS).astype(np.float32),
        B=rng.standard_normal((nb, length, GROUPS, N)).astype(dtype),
        C=rng.standard_normal((nb, length, GROUPS, N)).astype(dtype),
        D=rng.standard_normal(HEADS).astype(np.float32),
        z=rng.standard_normal((nb, length, HEADS, P)).astype(dtype),
        dt_bias=(rng.standard_normal(HEADS) * 0.5).astype(np.float32),
        initial_states=rng.standard_normal((nb, HEADS, P, N)).astype(np.float32),
    )
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    ids = np.repeat(np.arange(len(lengths)), lengths).astype(np.int32)
    return v, np.broadcast_to(ids, (nb, length)).copy(), cu


def packed(v, seq_idx, cu, chunk=16, interpret=False, **options):
    return ssd_chunk_scan(
        **v, chunk_size=chunk, seq_idx=seq_idx, cu_seqlens=cu, dt_softplus=True,
        return_final_states=True, return_varlen_states=True, interpret=interpret, **options,
    )  # fmt: skip


# (lengths, chunk): starts inside a chunk, several sequences in one chunk, length 1,
# empty sequences (first, inside, last), chunks not dividing L
LAYOUTS = [
    ([5, 20, 1, 24], 16),
    ([1, 1, 3, 40, 1], 16),
    ([0, 7, 0, 30, 0], 32),
    ([16, 16, 3], 16),
]


@pytest.mark.parametrize("interpret", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize(("lengths", "chunk"), LAYOUTS)
def test_packed_sequences_follow_the_recurrence_restarted_at_each_sequence(
    lengths, chunk, interpret
):
    v, seq_idx, cu = inputs(lengths, seed=sum(lengths))
    expected, final, varlen = packed_reference(v, seq_idx, cu=cu)
    out, got_final, got_varlen = packed(v, seq_idx, cu, chunk, interpret)
    assert got_varlen.shape == (len(lengths), HEADS, P, N) and got_varlen.dtype == np.float32
    assert_close(out, expected, 2e-5)
    assert_close(got_final, final, 2e-5)
    assert_close(got_varlen, varlen, 2e-5)


def test_rows_of_a_batch_pack_differently():
    """seq_idx per row, no cu_seqlens: each row restarts at its own boundaries."""
    v, _, _ = inputs([20, 17], nb=2, seed=3)
    seq_idx = np.zeros((2, 37), np.int32)
    seq_idx[0, 9:] = 1
    seq_idx[0, 30:] = 4  # ids need only not decrease
    seq_idx[1, 16:] = 7
    expected, final = packed_reference(v, seq_idx)
    out, got_final = ssd_chunk_scan(
        **v, chunk_size=16, seq_idx=seq_idx, dt_softplus=True, return_final_states=True
    )
    assert_close(out, expected, 2e-5)
    assert_close(got_final, final, 2e-5)


def alone(v, span, chunk, first, seq_idx=False):
    """Sequence `span` of packed inputs run by itself (the initial state only for the
    first); with seq_idx, through the packed kernel with one id."""
    steps = ("x", "dt", "B", "C", "z")
    part = {k: np.ascontiguousarray(v[k][:, span]) for k in steps}
    part |= {k: v[k] for k in ("A", "D", "dt_bias") if k in v}
    if first and "initial_states" in v:
        part["initial_states"] = v["initial_states"]
    ids = np.zeros(part["x"].shape[:2], np.int32) if seq_idx else None
    return ssd_chunk_scan(
        **part, chunk_size=chunk, seq_idx=ids, dt_softplus=True, return_final_states=True
    )


def test_the_packed_result_is_each_sequence_run_alone():
    lengths = [5, 20, 1, 24]
    v, seq_idx, cu = inputs(lengths, seed=7)
    out, _, varlen = packed(v, seq_idx, cu)
    for i in range(len(lengths)):
        span = slice(cu[i], cu[i + 1])
        y, state = alone(v, span, 16, first=i == 0)
        assert_close(out[:, span], y.astype(np.float64), 2e-5)
        assert_close(varlen[i], state[0].astype(np.float64), 2e-5)


def test_sequences_on_chunk_boundaries_give_the_same_bits_as_alone():
    """Where every sequence starts a chunk, each chunk does the same arithmetic packed
    or alone (the packed kernel with one id): the same bits, for the outputs and for
    the states of sequences that end a chunk. The last one ends inside its chunk: its
    varlen state is summed up to that step, the alone run's final state over the
    whole chunk's padded rows (zeros), in another dot: within rounding."""
    lengths = [32, 64, 20]
    v, seq_idx, cu = inputs(lengths, seed=8)
    out, _, varlen = packed(v, seq_idx, cu, chunk=32)
    for i in range(len(lengths)):
        span = slice(cu[i], cu[i + 1])
        y, state = alone(v, span, 32, first=i == 0, seq_idx=True)
        assert out[:, span].tobytes() == y.tobytes(), i
        if cu[i + 1] % 32 == 0:
            assert varlen[i].tobytes() == state[0].tobytes(), i
        else:
            assert_close(varlen[i], state[0].astype(np.float64), 2e-5)


@pytest.mark.parametrize("interpret", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("name", ["x", "B", "C", "dt"])
def test_a_non_finite_value_in_one_sequence_reaches_no_other(name, interpret):
    """An inf or NaN at a step of one sequence leaves every output and state of the
    others bit for bit as they were, and its own outputs before it; sequence 1 shares
    a chunk with sequence 0 (poisoned at its step 3) and with sequence 2."""
    lengths = [10, 12, 30]  # chunks of 16: [0, 16) holds 0 and 1, [16, 32) 1 and 2
    v, seq_idx, cu = inputs(lengths, seed=11)
    clean, _, clean_varlen = packed(v, seq_idx, cu, interpret=interpret)
    for victim, step in ((0, 3), (1, 20), (1, 21), (2, 40)):
        for bad in (np.inf, np.nan):
            poisoned = {**v, name: v[name].copy()}
            poisoned[name][:, step] = bad
            out, _, varlen = packed(poisoned, seq_idx, cu, interpret=interpret)
            others = seq_idx[0] != victim
            assert out[:, others].tobytes() == clean[:, others].tobytes(), (victim, step, bad)
            assert out[:, cu[victim] : step].tobytes() == clean[:, cu[victim] : step].tobytes()
            assert not np.isfinite(out[:, step]).all()
            for i in range(len(lengths)):
                same = varlen[i].tobytes() == clean_varlen[i].tobytes()
                assert same == (i != victim) or name == "C", (victim, i)  # C: outputs only


@pytest.mark.parametrize("interpret", BACKENDS, ids=BACKEND_IDS)
def test_dt_limit_clamps_after_the_bias_and_the_softplus(interpret):
    v, seq_idx, cu = inputs([9, 30], seed=12)
    for limit in ((0.3, 0.9), (0.0, float("inf"))):
        expected, _, varlen = packed_reference(v, seq_idx, limit=limit, cu=cu)
        out, _, got_varlen = packed(v, seq_idx, cu, interpret=interpret, dt_limit=limit)
        assert_close(out, expected, 2e-5)
        assert_close(got_varlen, varlen, 2e-5)
    # without seq_idx too (the packed kernel, one sequence); (0, inf) clamps a negative
    # Δ to 0 where no softplus keeps it positive, as mamba_ssm's does
    whole = {k: v[k] for k in ("x", "dt", "A", "B", "C")} | {"dt": v["dt"] - 0.5}
    expected, _ = packed_reference(whole, np.zeros((1, 39)), softplus_dt=False, limit=(0.0, 1e9))
    got = ssd_chunk_scan(**whole, chunk_size=16, dt_limit=(0.0, float("inf")), interpret=interpret)
    assert_close(got, expected, 2e-5)
    unclamped, _ = packed_reference(whole, np.zeros((1, 39)), softplus_dt=False)
    assert np.abs(expected - unclamped).max() > 0.1  # the clamp mattered


def test_a_nan_step_stays_nan_under_the_clamp():
    v, seq_idx, cu = inputs([9, 30], seed=13)
    v["dt"][:, 12] = np.nan
    out, _, _ = packed(v, seq_idx, cu, dt_limit=(0.1, 0.5))
    assert not np.isfinite(out[:, 12]).any()
    assert np.isfinite(out[:, :12]).all()


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["f16", "bf16"])
def test_half_precision_packed_inputs_stay_within_a_rounding_of_their_dtype(dtype):
    v, seq_idx, cu = inputs([5, 40, 1, 20], seed=14, dtype=dtype)
    expected, final, varlen = packed_reference(v, seq_idx, cu=cu)
    out, got_final, got_varlen = packed(v, seq_idx, cu, chunk=32)
    assert out.dtype == np.dtype(dtype)
    eps = 2.0**-10 if dtype == np.float16 else 2.0**-7
    assert_close(out, expected, eps)
    assert_close(got_final, final, eps)
    assert_close(got_varlen, varlen, eps)


def test_cpu_backend_and_interpreter_agree():
    """Within f32 rounding, not bit for bit: the interpreter computes each dot and
    cumulative sum in float64 and rounds once, compiled code folds in f32 (docs/design.md
    §10), and tl.associative_scan combines in a tree there, in order here."""
    v, seq_idx, cu = inputs([5, 20, 1, 24], seed=15)
    for got, want in zip(
        packed(v, seq_idx, cu), packed(v, seq_idx, cu, interpret=True), strict=True
    ):
        assert_close(got, want.astype(np.float64), 1e-5)


def test_no_steps_give_zero_sequence_states():
    v, seq_idx, cu = inputs([0, 0], seed=16)
    out, final, varlen = packed(v, seq_idx, cu)
    assert out.shape == (1, 0, HEADS, P)
    assert np.array_equal(final, v["initial_states"]) and not varlen.any()
    assert varlen.shape == (2, HEADS, P, N)


def test_return_order_is_mamba_ssms():
    v, seq_idx, cu = inputs([6, 10], seed=17)
    out, varlen = ssd_chunk_scan(
        **v, chunk_size=16, seq_idx=seq_idx, cu_seqlens=cu, return_varlen_states=True
    )
    both = ssd_chunk_scan(
        **v, chunk_size=16, seq_idx=seq_idx, cu_seqlens=cu, return_varlen_states=True,
        return_final_states=True,
    )  # fmt: skip
    assert len(both) == 3 and np.array_equal(both[0], out) and np.array_equal(both[2], varlen)
    np.testing.assert_array_equal(both[1][0], varlen[1])  # the last sequence's state


def test_bad_packing_is_refused_before_any_launch():
    v, seq_idx, cu = inputs([3, 5], seed=18)
    with pytest.raises(ValueError, match=r"seq_idx must have shape \[1, 8\], got shape \[1, 7\]"):
        ssd_chunk_scan(**v, chunk_size=16, seq_idx=seq_idx[:, :7])
    with pytest.raises(TypeError, match="seq_idx must hold one of i32, got int64"):
        ssd_chunk_scan(**v, chunk_size=16, seq_idx=seq_idx.astype(np.int64))
    falling = seq_idx.copy()
    falling[0, 6] = 0
    with pytest.raises(
        ValueError,
        match=r"seq_idx must not decrease along L .*, got seq_idx\[0, 5\] = 1 then "
        r"seq_idx\[0, 6\] = 0",
    ):
        ssd_chunk_scan(**v, chunk_size=16, seq_idx=falling)
    with pytest.raises(ValueError, match=r"return_varlen_states needs cu_seqlens .*, got None"):
        ssd_chunk_scan(**v, chunk_size=16, seq_idx=seq_idx, return_varlen_states=True)
    with pytest.raises(ValueError, match=r"cu_seqlens needs seq_idx .*, got None"):
        ssd_chunk_scan(**v, chunk_size=16, cu_seqlens=cu, return_varlen_states=True)
    with pytest.raises(
        ValueError, match=r"cu_seqlens must rise from 0 to L = 8 .*, got \[0, 3, 7\]"
    ):
        ssd_chunk_scan(
            **v, chunk_size=16, seq_idx=seq_idx, cu_seqlens=np.array([0, 3, 7], np.int32)
        )
    with pytest.raises(
        ValueError,
        match=r"seq_idx must number the sequences cu_seqlens delimits .*, got seq_idx\[0, 3\] = "
        r"1 where step 3 is in sequence 0",
    ):
        ssd_chunk_scan(
            **v, chunk_size=16, seq_idx=seq_idx, cu_seqlens=np.array([0, 4, 8], np.int32)
        )
    two, ids2, _ = inputs([3, 5], nb=2)
    with pytest.raises(ValueError, match=r"cu_seqlens needs batch 1 .*, got batch = 2"):
        ssd_chunk_scan(**two, chunk_size=16, seq_idx=ids2, cu_seqlens=cu)
    for limit, message in (((1.0,), "a pair"), ((2.0, 1.0), "lo <= hi"), (0.5, "a pair")):
        with pytest.raises(ValueError, match=f"dt_limit must be .*{message}.*, got"):
            ssd_chunk_scan(**v, chunk_size=16, dt_limit=limit)
    with pytest.raises(TypeError, match="return_varlen_states must be True or False, got ndarray"):
        ssd_chunk_scan(**v, chunk_size=16, return_varlen_states=cu)


ALL = dict(HAS_D=True, D_PER_P=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, HAS_INITIAL=True)


def packed_build(arch, n, dtype, varlen, **tiles):
    """The packed kernel with every option at the sizes a call at batch 8, L 2048, H 32,
    P 64 (D per column, z) assumes: each the largest power of two up to 32 dividing it
    (register use depends on these facts: without them f32 N = 128 spills on sm_80)."""
    per_head = dict(NB=8, L=2048, H=32, P=64, G=1, N=n)
    sizes = per_head | dict(HD=32, PD=64, NZ=8, LZ=2048, HZ=32, PZ=64, NBIAS=32, NI=8)
    sizes |= dict(HI=32, PI=64, SI=n, NF=8, HF=32, PF=64, SF=n, NS=8, LS=2048, NCU=2, NV=1)
    sizes |= dict(HV=32, PV=64, SV=n)
    facts = {k: max(d for d in (1, 2, 4, 8, 16, 32) if size % d == 0) for k, size in sizes.items()}
    tiles = tiles or dict(BP=ssd.block_p(n, 64, dtype != tl.f32))
    return ssd.ssd_packed_kernel.compile(
        target=arch, assume=facts, **ALL, FINAL=True, HAS_SEQ=True, LIMIT=varlen,
        VARLEN=varlen, T=dtype, TD=dtype, BL=32, BN=n, **tiles,
    )  # fmt: skip


def no_spills(build) -> bool:
    resources = build.resources
    assert resources.registers > 0
    return resources.spill_store_bytes == 0 and resources.spill_load_bytes == 0


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
@pytest.mark.parametrize(("n", "dtype"), [(16, tl.bf16), (128, tl.f32), (128, tl.bf16)])
def test_the_packed_kernel_compiles_without_spills(arch, n, dtype):
    """seq_idx at the default tiles. With varlen states (a loop over the sequences
    ending in each chunk) the default spills on sm_80 at f32 N = 128 (136 bytes) and on
    sm_90a at bf16 N = 16 (16 bytes, ptxas keeping 128 registers); a device call tunes
    among `configs`, which prunes spilling ones, so one of those must not spill. Masks
    of sequences made from ids instead of the scan's segment numbers (or positions)
    spilled f32 N = 128 with seq_idx alone on sm_80."""
    assert no_spills(packed_build(arch, n, dtype, varlen=False))
    tiles = ssd.configs(n, 64, half=dtype != tl.f32)
    assert any(no_spills(packed_build(arch, n, dtype, True, **t)) for t in tiles)


def test_the_torch_operator_takes_the_packed_arguments():
    torch = pytest.importorskip("torch")
    import tilelang.torch.kernels as tk

    v, seq_idx, cu = inputs([5, 20, 1, 10], seed=19)
    limit = (0.01, 0.8)
    direct = packed(v, seq_idx, cu, dt_limit=limit)
    t = {k: torch.from_numpy(a) for k, a in v.items()}
    ids, offsets = torch.from_numpy(seq_idx), torch.from_numpy(cu)
    got = tk.ssd_chunk_scan(
        **t, chunk_size=16, seq_idx=ids, cu_seqlens=offsets, dt_softplus=True, dt_limit=limit,
        return_final_states=True, return_varlen_states=True,
    )  # fmt: skip
    assert len(got) == 3
    for g, d in zip(got, direct, strict=True):
        np.testing.assert_array_equal(g.numpy(), d)
    positional = [t[k] for k in ("x", "dt", "A", "B", "C")]
    args = (*positional, 16, t["D"], t["z"], t["dt_bias"], True, t["initial_states"], True)
    torch.library.opcheck(
        torch.ops.tilelang.ssd_chunk_scan.default, (*args, ids, offsets, list(limit), True)
    )
    torch.library.opcheck(torch.ops.tilelang.ssd_chunk_scan.default, (*args, ids))
