"""tilelang.quant.from_gptq / from_awq: synthetic checkpoints written by packers in this
file (from the published layouts, with Python integers, never tilelang's packing), read
back and compared element by element with the formats' reference formula
w[k, n] = (q[k, n] − z[g[k], n]) · s[g[k], n], computed in numpy's f16 arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from tilelang.quant import QuantizedWeight, from_awq, from_gptq

K, N = 256, 64
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]  # nibble i of a word holds column 8c + AWQ_ORDER[i]


# ------------------------------------------------------------ packers from the spec


def stream_words(codes, bits: int) -> list[int]:
    """Codes as one little-endian bit stream cut into 32-bit words (code i at bit i·bits)."""
    big = 0
    for i, code in enumerate(codes):
        big |= int(code) << (bits * i)
    return [(big >> (32 * r)) & 0xFFFF_FFFF for r in range(len(codes) * bits // 32)]


def autogptq_3bit_words(codes) -> list[int]:
    """AutoGPTQ's 3-bit loop, as published: per 32 codes, 10 codes, code 10 split 2 + 1
    bits, 10 codes at offset 1, code 21 split 1 + 2 bits, 10 codes at offset 2."""
    words, i = [], 0
    while i < len(codes):
        w0 = sum(int(codes[i + j]) << (3 * j) for j in range(10)) | (int(codes[i + 10]) << 30)
        w1 = (int(codes[i + 10]) >> 2) & 1
        w1 |= sum(int(codes[i + 11 + j]) << (3 * j + 1) for j in range(10))
        w1 |= int(codes[i + 21]) << 31
        w2 = (int(codes[i + 21]) >> 1) & 3
        w2 |= sum(int(codes[i + 22 + j]) << (3 * j + 2) for j in range(10))
        words += [w & 0xFFFF_FFFF for w in (w0, w1, w2)]
        i += 32
    return words


def as_int32(words) -> np.ndarray:
    return np.array(words, dtype=np.uint64).astype(np.uint32).view(np.int32)


def gptq_checkpoint(
    bits: int, group: int, sym: bool, act_order: bool, seed: int = 0, k: int = K, n: int = N
):
    """(qweight, qzeros, scales, g_idx) and the unpacked truth (q, z, s, g). Where `group`
    does not divide `k`, AutoGPTQ's groups: ⌈k / group⌉ of them, g_idx = (a row's
    position in act order) // group, so the last holds k mod group rows."""
    rng = np.random.default_rng(seed)
    groups = -(-k // group)
    q = rng.integers(0, 1 << bits, (k, n))
    # Symmetric: the midpoint; else any zero the v1 writer stores cleanly (1..2^bits-1).
    midpoint = np.full((groups, n), 1 << (bits - 1))
    z = midpoint if sym else rng.integers(1, 1 << bits, (groups, n))
    s = (rng.uniform(0.001, 0.05, (groups, n))).astype(np.float16)
    g = rng.permutation(k) // group if act_order else np.arange(k) // group
    qweight = as_int32([stream_words(q[:, c], bits) for c in range(n)]).reshape(n, -1).T
    stored = (z - 1) & ((1 << bits) - 1)  # the v1 quirk: z - 1 is written
    qzeros = as_int32([stream_words(stored[r], bits) for r in range(groups)]).reshape(groups, -1)
    return (np.ascontiguousarray(qweight), qzeros, s, g.astype(np.int32)), (q, z, s, g)


def reference(q, z, s, g) -> np.ndarray:
    """The GPTQ/AWQ formula, (q - z[g]) * s[g] in f16 (exact difference, one rounding)."""
    return ((q - z[g]).astype(np.float16) * s[g]).astype(np.float32)


# ------------------------------------------------------------------------- GPTQ


def test_the_stream_packer_is_autogptqs_3bit_layout():
    codes = np.random.default_rng(1).integers(0, 8, 96)
    assert stream_words(codes, 3) == autogptq_3bit_words(codes)


@pytest.mark.parametrize("act_order", [False, True], ids=["in_order", "act_order"])
@pytest.mark.parametrize("sym", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("group", [32, 128, K])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_gptq_dequantize_is_the_reference_formula(bits, group, sym, act_order):
    (qweight, qzeros, scales, g_idx), (q, z, s, g) = gptq_checkpoint(bits, group, sym, act_order)
    qw = from_gptq(qweight, qzeros, scales, g_idx=g_idx, bits=bits, sym=sym)
    assert (qw.format, qw.dtype.name, qw.group_size) == ("gptq", f"u{bits}", group)
    assert qw.shape == (K, N)
    np.testing.assert_array_equal(qw.zeros, z)
    np.testing.assert_array_equal(qw.scales, s.astype(np.float32))
    expected = reference(q, z, s, g)
    np.testing.assert_array_equal(qw.dequantize().view(np.uint32), expected.view(np.uint32))
    if act_order and group < K:  # (one group: every row order is the same)
        # The stored rows are the original rows in group order, each group contiguous.
        assert qw.perm is not None
        np.testing.assert_array_equal(g[qw.perm], np.arange(K) // group)
        np.testing.assert_array_equal(qw.plain_codes(), q[qw.perm])
    else:
        assert qw.perm is None
        np.testing.assert_array_equal(qw.plain_codes(), q)


def test_gptq_without_g_idx_and_without_qzeros_when_symmetric():
    (qweight, qzeros, scales, _), (q, z, s, g) = gptq_checkpoint(4, 128, True, False, seed=2)
    a = from_gptq(qweight, qzeros, scales)
    b = from_gptq(qweight, None, scales, bits=4, sym=True)
    np.testing.assert_array_equal(a.dequantize(), reference(q, z, s, g))
    np.testing.assert_array_equal(b.dequantize(), a.dequantize())


def test_gptq_v1_zero_offset_reads_all_ones_as_two_to_the_bits():
    """A stored field of all ones (what the v1 writer leaves for a true zero of 0) reads
    back as z = 2^bits, exactly as the reference reader computes."""
    (qweight, qzeros, scales, g_idx), (q, z, s, g) = gptq_checkpoint(4, 64, False, False)
    qzeros = qzeros.copy()
    qzeros[1, 0] = -1  # every field of the word: columns 0..7 of group 1
    z = z.copy()
    z[1, :8] = 16
    qw = from_gptq(qweight, qzeros, scales, g_idx=g_idx, bits=4, sym=False)
    np.testing.assert_array_equal(qw.zeros, z)
    np.testing.assert_array_equal(qw.dequantize(), reference(q, z, s, g))


def test_gptq_round_trips_through_a_file(tmp_path):
    (qweight, qzeros, scales, g_idx), truth = gptq_checkpoint(3, 32, False, True, seed=5)
    qw = from_gptq(qweight, qzeros, scales, g_idx=g_idx, bits=3, sym=False)
    qw.save(tmp_path / "layer.npz")
    back = QuantizedWeight.load(tmp_path / "layer.npz")
    np.testing.assert_array_equal(back.perm, qw.perm)
    np.testing.assert_array_equal(back.dequantize(), reference(*truth))


def test_gptq_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    (qweight, qzeros, scales, g_idx), truth = gptq_checkpoint(4, 64, False, True, seed=6)
    tensors = [torch.from_numpy(a) for a in (qweight, qzeros, scales, g_idx)]
    qw = from_gptq(*tensors[:3], g_idx=tensors[3], bits=4, sym=False)
    np.testing.assert_array_equal(qw.dequantize(), reference(*truth))


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (dict(bits=5), ValueError, "GPTQ packs 2, 3, 4, 8 bits"),
        (dict(sym=True), ValueError, "sym=True, but the zero point of group"),
        (dict(qzeros=None), ValueError, "qzeros are required unless sym=True"),
        (dict(scales=np.ones((3, N), np.float16), g_idx=None), ValueError,
         "3 groups do not divide K = 256 rows evenly; .* needs its g_idx"),
        (dict(scales=np.ones((3, N), np.float16)), ValueError,
         "g_idx puts 128 rows in group 0 but 0 in group 2"),
        (dict(scales=np.ones((0, N), np.float16)), ValueError, "1 ≤ groups ≤ K"),
        (dict(scales=np.ones((2, N))), TypeError, "f16, bf16, f32"),
        (dict(qweight=np.zeros((32, N), np.int64)), TypeError, "32-bit words"),
        (dict(qweight=np.zeros((32, N), np.float32)), TypeError, "integer array"),
        (dict(qzeros=np.zeros((2, 4), np.int32)), ValueError, "qzeros must be"),
        (dict(g_idx=np.zeros(K, np.int32)), ValueError, "puts 256 rows in group 0"),
        (dict(g_idx=np.arange(K) // 64), ValueError, r"g_idx must lie in \[0, 2\)"),
        (dict(g_idx=np.zeros(8, np.int32)), ValueError, "one group per row"),
    ],
    ids=str,
)  # fmt: skip
def test_gptq_refuses_what_it_cannot_read(change, error, match):
    (qweight, qzeros, scales, g_idx), _ = gptq_checkpoint(4, 128, False, True)
    args = dict(qweight=qweight, qzeros=qzeros, scales=scales, g_idx=g_idx, bits=4, sym=False)
    args.update(change)
    with pytest.raises(error, match=match):
        from_gptq(**args)


@pytest.mark.parametrize("act_order", [False, True], ids=["in_order", "act_order"])
@pytest.mark.parametrize(("bits", "k", "group"), [(4, 320, 128), (3, 224, 64), (8, 200, 64)])
def test_gptq_with_a_short_last_group_is_the_reference_formula(bits, k, group, act_order):
    """K not a multiple of G (Falcon-7B's 4544 = 35·128 + 64): AutoGPTQ's g_idx puts the
    K mod G rows left in a last group, which the weight keeps (⌈K / G⌉ scales)."""
    (qweight, qzeros, scales, g_idx), truth = gptq_checkpoint(
        bits, group, False, act_order, seed=k, k=k
    )
    _, _, s, g = truth
    assert np.bincount(g)[-1] == k % group  # the short group, as AutoGPTQ makes it
    qw = from_gptq(qweight, qzeros, scales, g_idx=g_idx, bits=bits, sym=False)
    assert (qw.shape, qw.group_size, qw.scale_codes.shape) == ((k, N), group, s.shape)
    np.testing.assert_array_equal(
        qw.dequantize().view(np.uint32), reference(*truth).view(np.uint32)
    )
    if act_order:
        np.testing.assert_array_equal(g[qw.perm], np.arange(k) // group)
    else:
        assert qw.perm is None


def test_gptq_refuses_a_g_idx_whose_groups_are_not_g_rows_but_the_last():
    (qweight, qzeros, scales, _), _ = gptq_checkpoint(4, 128, False, True, k=320)
    g_idx = np.repeat([0, 1, 2], [128, 96, 96]).astype(np.int32)  # group 1 is short
    with pytest.raises(ValueError, match="puts 128 rows in group 0 but 96 in group 1"):
        from_gptq(qweight, qzeros, scales, g_idx=g_idx, bits=4, sym=False)


@pytest.mark.parametrize(("bits", "n", "multiple"), [(4, 20, 8), (3, 40, 32), (2, 8, 16)])
def test_gptq_zero_points_need_whole_words_along_n(bits, n, multiple):
    """qzeros packs N zero points of `bits` bits into int32 words: N must fill them."""
    rng = np.random.default_rng(3)
    q = rng.integers(0, 1 << bits, (K, n))
    qweight = as_int32([stream_words(q[:, c], bits) for c in range(n)]).reshape(n, -1).T
    qzeros = np.zeros((2, n * bits // 32 + 1), np.int32)
    with pytest.raises(ValueError) as info:
        from_gptq(qweight, qzeros, np.ones((2, n), np.float16), bits=bits, sym=False)
    message = str(info.value)
    assert message.startswith("qzeros:") and f"multiple of {multiple}" in message
    assert f"got N = {n}" in message


def test_gptq_3bit_needs_whole_word_triples():
    with pytest.raises(ValueError, match="multiple of 3 rows"):
        from_gptq(np.zeros((4, 32), np.int32), None, np.ones((1, 32), np.float16), bits=3)


# -------------------------------------------------------------------------- AWQ


def awq_checkpoint(group: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    groups = K // group
    q = rng.integers(0, 16, (K, N))
    z = rng.integers(0, 16, (groups, N))
    s = rng.uniform(0.001, 0.05, (groups, N)).astype(np.float16)

    def pack(codes):  # [R, N] -> [R, N / 8]
        words = [
            [
                sum(int(codes[r, 8 * c + AWQ_ORDER[i]]) << (4 * i) for i in range(8))
                for c in range(N // 8)
            ]
            for r in range(codes.shape[0])
        ]
        return as_int32(words)

    return (pack(q), pack(z), s), (q, z, s, np.arange(K) // group)


@pytest.mark.parametrize("group", [32, 64, 128])
def test_awq_dequantize_is_the_reference_formula(group):
    (qweight, qzeros, scales), truth = awq_checkpoint(group, seed=group)
    qw = from_awq(qweight, qzeros, scales)
    assert (qw.format, qw.dtype.name, qw.group_size, qw.perm) == ("awq", "u4", group, None)
    np.testing.assert_array_equal(qw.plain_codes(), truth[0])
    np.testing.assert_array_equal(qw.zeros, truth[1])
    expected = reference(*truth)
    np.testing.assert_array_equal(qw.dequantize().view(np.uint32), expected.view(np.uint32))


def test_awq_nibble_order_is_interleaved():
    """Column j of a word sits in nibble AWQ_ORDER.index(j): a word whose nibble i is i."""
    word = sum(i << (4 * i) for i in range(8))
    qweight = np.full((32, 1), word, np.uint32).view(np.int32)
    qw = from_awq(qweight, np.zeros((1, 1), np.int32), np.ones((1, 8), np.float16))
    assert qw.plain_codes()[0].tolist() == [AWQ_ORDER.index(j) for j in range(8)]
    assert qw.plain_codes()[0].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


def test_awq_without_zero_points_is_refused_saying_awq_always_has_them():
    (qweight, _, scales), _ = awq_checkpoint(64)
    with pytest.raises(ValueError, match="qzeros: AWQ checkpoints always have zero points"):
        from_awq(qweight, None, scales)


def test_awq_refuses_mismatched_zeros():
    (qweight, qzeros, scales), _ = awq_checkpoint(64)
    with pytest.raises(ValueError, match="qzeros must be"):
        from_awq(qweight, qzeros[:2], scales)
