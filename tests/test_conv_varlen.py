"""`causal_conv1d` on packed batches (issue 12; vLLM's Mamba-2 layer): `seq_idx` against
float64 sums written from the definition (out[t] = bias + Σ_k w[k]·x[t - (W - 1) + k],
where a step of another sequence reads 0 and a step before 0 reads initial_states only
for the sequence at step 0); each sequence equals its run alone bit for bit; a NaN or
inf in one sequence reaches no other; the CPU backend equals the interpreter bit for
bit; 0 spills on sm_80 and sm_90a; checks naming the parameter."""

import ml_dtypes
import numpy as np
import pytest
from conftest import assert_close

from tilelang.kernels import causal_conv1d, conv


def silu(v):
    return v / (1.0 + np.exp(-v))


def packed_reference(x, weight, bias, seq_idx, initial=None, activation="silu"):
    """out [batch, Dm, L] and the final states [batch, Dm, W - 1] in float64."""
    x, weight = np.asarray(x, np.float64), np.asarray(weight, np.float64)
    nb, dm, length = x.shape
    width = weight.shape[1]

    def source(b, t, j):
        """What output step t (or, for the final states, the last step's sequence) reads
        at step j."""
        if j < 0:
            first = initial is not None and seq_idx[b, t] == seq_idx[b, 0]
            return np.asarray(initial[b, :, j + width - 1], np.float64) if first else 0.0
        return x[b, :, j] if j < length and seq_idx[b, j] == seq_idx[b, t] else 0.0

    out = np.zeros(x.shape)
    for b in range(nb):
        for t in range(length):
            for k in range(width):
                out[b, :, t] += weight[:, k] * source(b, t, t - (width - 1) + k)
    out += np.asarray(bias, np.float64)[None, :, None]
    final = np.zeros((nb, dm, width - 1))
    for b in range(nb):
        for j in range(width - 1):
            final[b, :, j] = source(b, length - 1, length - (width - 1) + j)
    return (silu(out) if activation else out), final


def inputs(lengths, width=4, dm=6, nb=1, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    length = sum(lengths)
    x = rng.standard_normal((nb, dm, length)).astype(dtype)
    weight = rng.standard_normal((dm, width)).astype(np.float32)
    bias = rng.standard_normal(dm).astype(np.float32)
    initial = rng.standard_normal((nb, dm, width - 1)).astype(dtype)
    ids = np.repeat(np.arange(len(lengths)), lengths).astype(np.int32)
    return x, weight, bias, initial, np.broadcast_to(ids, (nb, length)).copy()


def run(x, weight, bias, initial, seq_idx, interpret=False, activation="silu"):
    return causal_conv1d(
        x, weight, bias, seq_idx=seq_idx, initial_states=initial, return_final_states=True,
        activation=activation, interpret=interpret,
    )  # fmt: skip


@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("lengths", [[1, 5, 1, 2, 140], [3, 0, 2], [130, 1]])
def test_a_window_reads_only_its_own_sequence(lengths, width):
    """Sequences shorter than the window, of length 1, across a block of 128 steps."""
    x, weight, bias, initial, seq_idx = inputs(lengths, width, seed=sum(lengths) + width)
    expected, final = packed_reference(x, weight, bias, seq_idx, initial)
    out, got_final = run(x, weight, bias, initial, seq_idx)
    assert_close(out, expected, 1e-6)
    assert_close(got_final, final, 0.0)
    # the CPU backend and the interpreter: the same f32 products and sums in the same
    # order, so the same bits (silu's exp is each platform's library: checked without)
    plain = [run(x, weight, bias, initial, seq_idx, mode, None)[0] for mode in (False, True)]
    assert plain[0].tobytes() == plain[1].tobytes()


def test_rows_pack_differently_and_ids_need_only_not_decrease():
    x, weight, bias, initial, _ = inputs([40], nb=2, seed=4)
    seq_idx = np.zeros((2, 40), np.int32)
    seq_idx[0, 3:] = 5
    seq_idx[0, 38:] = 9  # the final states: the last sequence's 2 steps, then 0
    seq_idx[1, 20:] = 1
    expected, final = packed_reference(x, weight, bias, seq_idx, initial)
    out, got_final = run(x, weight, bias, initial, seq_idx)
    assert_close(out, expected, 1e-6)
    assert_close(got_final, final, 0.0)
    assert not got_final[0, :, 0].any()  # step 37 is another sequence's


def test_each_sequence_is_its_run_alone_bit_for_bit():
    lengths = [2, 30, 1, 200]
    x, weight, bias, initial, seq_idx = inputs(lengths, seed=5)
    out, final = run(x, weight, bias, initial, seq_idx)
    cu = np.concatenate([[0], np.cumsum(lengths)])
    for i in range(len(lengths)):
        part = np.ascontiguousarray(x[:, :, cu[i] : cu[i + 1]])
        alone, alone_final = causal_conv1d(
            part, weight, bias, activation="silu", return_final_states=True,
            initial_states=initial if i == 0 else None,
        )  # fmt: skip
        assert out[:, :, cu[i] : cu[i + 1]].tobytes() == alone.tobytes(), i
    assert final.tobytes() == alone_final.tobytes()


@pytest.mark.parametrize("interpret", [True, False], ids=["interpreter", "cpu"])
def test_a_non_finite_step_reaches_no_other_sequence(interpret):
    lengths = [4, 3, 20]
    x, weight, bias, initial, seq_idx = inputs(lengths, seed=6)
    clean, _ = run(x, weight, bias, initial, seq_idx, interpret)
    for step in (3, 4, 6):  # the last step of sequence 0, the first and last of 1
        for bad in (np.inf, np.nan):
            poisoned = x.copy()
            poisoned[:, :, step] = bad
            out, _ = run(poisoned, weight, bias, initial, seq_idx, interpret)
            others = seq_idx[0] != seq_idx[0, step]
            assert out[:, :, others].tobytes() == clean[:, :, others].tobytes(), (step, bad)
            assert not np.isfinite(out[:, :, step]).any()
    poisoned_initial = np.full_like(initial, np.nan)  # feeds sequence 0 only
    out, _ = run(x, weight, bias, poisoned_initial, seq_idx, interpret)
    assert out[:, :, 4:].tobytes() == clean[:, :, 4:].tobytes()


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["f16", "bf16"])
def test_half_precision_packed_inputs_round_once(dtype):
    x, weight, bias, initial, seq_idx = inputs([3, 60, 1], seed=7, dtype=dtype)
    out, final = run(x, weight, bias, initial, seq_idx)
    expected, expected_final = packed_reference(x, weight, bias, seq_idx, initial)
    assert out.dtype == np.dtype(dtype) and final.dtype == np.dtype(dtype)
    eps = 2.0**-11 if dtype == np.float16 else 2.0**-8
    assert np.all(np.abs(out.astype(np.float64) - expected) <= eps * np.abs(expected) + 1e-6)
    assert_close(final, expected_final, 0.0)


def test_bad_seq_idx_is_refused_naming_it():
    x, weight, _, _, seq_idx = inputs([3, 5], seed=8)
    with pytest.raises(ValueError, match=r"seq_idx must have shape \[1, 8\], got shape \[1, 9\]"):
        causal_conv1d(x, weight, seq_idx=np.zeros((1, 9), np.int32))
    with pytest.raises(TypeError, match="seq_idx must hold one of i32, got float32"):
        causal_conv1d(x, weight, seq_idx=seq_idx.astype(np.float32))
    with pytest.raises(
        ValueError,
        match=r"seq_idx must not decrease along L .*seq_idx\[0, 4\] = 1 then seq_idx\[0, 5\] = 0",
    ):
        causal_conv1d(x, weight, seq_idx=seq_idx[:, ::-1].copy())


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_compiles_without_spills_with_seq_idx(arch):
    full = dict(HAS_BIAS=True, SILU=True, HAS_INITIAL=True, FINAL=True)
    for seq in (False, True):
        resources = conv.causal_conv1d_kernel.compile(target=arch, **full, HAS_SEQ=seq).resources
        assert resources.registers > 0
        assert resources.spill_store_bytes == 0 and resources.spill_load_bytes == 0


def test_the_torch_operator_takes_seq_idx():
    torch = pytest.importorskip("torch")
    import tilelang.torch.kernels as tk

    x, weight, bias, initial, seq_idx = inputs([3, 1, 12], seed=9)
    direct = run(x, weight, bias, initial, seq_idx)
    t = [torch.from_numpy(a) for a in (x, weight, bias, initial, seq_idx)]
    got = tk.causal_conv1d(
        *t[:3], seq_idx=t[4], initial_states=t[3], return_final_states=True, activation="silu"
    )
    for g, d in zip(got, direct, strict=True):
        np.testing.assert_array_equal(g.numpy(), d)
    torch.library.opcheck(
        torch.ops.tilelang.causal_conv1d.default, (*t[:3], "silu", t[3], True, t[4])
    )
