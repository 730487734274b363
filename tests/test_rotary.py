"""`tilelang.kernels.rotary_embedding`: vLLM's in-place rotary embedding, against a
float64 rotation written from the definition (the module docstring of
tilelang/kernels/rotary.py): each head's first rot_dim elements rotated pairwise by
the angles of its token's cache row, neox (halves) or GPT-J (interleaved) pairs, the
rest of the head untouched; computed in f32 and rounded once, so every element is
within half an ulp of its dtype (plus the f32 steps) of the exact rotation.
"""

import ml_dtypes
import numpy as np
import pytest

from tilelang.kernels import rotary
from tilelang.kernels.rotary import rotary_embedding

BF16 = ml_dtypes.bfloat16


def cos_sin_cache(max_position: int, rot: int, dtype=np.float32) -> np.ndarray:
    """Llama's table: θ_i = p / 10000^(2i / rot); cos in the first half, sin in the second."""
    inv = 1.0 / 10000.0 ** (np.arange(0, rot, 2) / rot)
    angles = np.arange(max_position)[:, None] * inv[None, :]
    return np.concatenate([np.cos(angles), np.sin(angles)], axis=1).astype(dtype)


def rotated(x: np.ndarray, positions: np.ndarray, cache: np.ndarray, head_size: int, neox: bool):
    """x [tokens, heads · head_size] rotated exactly (float64)."""
    out = x.astype(np.float64).reshape(x.shape[0], -1, head_size).copy()
    rot = cache.shape[1]
    half = rot // 2
    table = cache.astype(np.float64)[positions.reshape(-1)]
    cos, sin = table[:, None, :half], table[:, None, half:]
    first = slice(0, half) if neox else slice(0, rot, 2)
    second = slice(half, rot) if neox else slice(1, rot, 2)
    x1, x2 = out[..., first].copy(), out[..., second].copy()
    out[..., first] = x1 * cos - x2 * sin
    out[..., second] = x2 * cos + x1 * sin
    return out.reshape(x.shape[0], -1)


def assert_rounded_once(got: np.ndarray, exact: np.ndarray, x: np.ndarray) -> None:
    """Within half an ulp of got's dtype at the exact value, plus the f32 arithmetic's
    few 2^-24 relative to the products' magnitudes (bounded by 2 · max|x| · 1)."""
    eps = {np.dtype(np.float16): 2.0**-11, np.dtype(BF16): 2.0**-8}.get(got.dtype, 2.0**-24)
    scale = np.abs(x.astype(np.float64)).max()
    error = np.abs(got.astype(np.float64) - exact)
    allowed = eps * np.abs(exact) * (1 + 2**-10) + 8 * 2.0**-24 * 2 * scale + 1e-30
    worst = np.unravel_index(np.argmax(error / allowed), error.shape)
    assert (error <= allowed).all(), (worst, got[worst], exact[worst])


def qkv_case(tokens, heads, kv_heads, head_size, dtype, seed):
    """A fused qkv projection's output [tokens, (H + 2 H_kv) · D] and its q, k column
    ranges (strided views, as a model slices them)."""
    rng = np.random.default_rng(seed)
    width = (heads + 2 * kv_heads) * head_size
    qkv = rng.uniform(-4, 4, (tokens, width)).astype(dtype)
    q = qkv[:, : heads * head_size]
    k = qkv[:, heads * head_size : (heads + kv_heads) * head_size]
    return qkv, q, k


@pytest.mark.parametrize("neox", [True, False])
@pytest.mark.parametrize(
    "head_size, rot, dtype, cache_dtype",
    [
        (64, 64, np.float16, np.float32),
        (128, 128, BF16, BF16),
        (128, 32, np.float16, np.float16),  # partial rotary: a quarter of the head
        (80, 80, np.float32, np.float32),  # 40 pairs: a padded, masked tile of 64
        (64, 24, BF16, np.float32),  # 12 pairs (GPT-NeoX-like partial rotary)
    ],
)
def test_rotates_the_q_and_k_columns_of_a_fused_qkv_in_place(
    neox, head_size, rot, dtype, cache_dtype
):
    """37 tokens (not a multiple of the token tile), 4 query and 2 KV heads, the q and k
    column ranges of one qkv buffer: rotated where they lie; v and the unrotated tail of
    each head keep their bits."""
    qkv, q, k = qkv_case(37, 4, 2, head_size, dtype, seed=head_size + rot)
    before = qkv.copy()
    positions = np.random.default_rng(rot).integers(0, 300, 37).astype(np.int64)
    cache = cos_sin_cache(300, rot, cache_dtype)
    assert rotary_embedding(positions, q, k, head_size, cache, neox) is None
    assert_rounded_once(q, rotated(before[:, : q.shape[1]], positions, cache, head_size, neox), q)
    k_before = before[:, q.shape[1] : q.shape[1] + k.shape[1]]
    assert_rounded_once(k, rotated(k_before, positions, cache, head_size, neox), k_before)
    v_from = q.shape[1] + k.shape[1]
    assert qkv[:, v_from:].tobytes() == before[:, v_from:].tobytes()
    tails = qkv[:, :v_from].reshape(37, -1, head_size)[..., rot:]
    assert tails.tobytes() == before[:, :v_from].reshape(37, -1, head_size)[..., rot:].tobytes()


@pytest.mark.parametrize("neox", [True, False])
def test_the_interpreter_gives_the_cpu_backends_bits(neox):
    _, q, k = qkv_case(19, 2, 1, 64, BF16, seed=5)
    q2, k2 = q.copy(), k.copy()
    positions = np.arange(19, dtype=np.int32) * 7
    cache = cos_sin_cache(200, 48)
    rotary_embedding(positions, q, k, 64, cache, neox)
    rotary_embedding(positions, q2, k2, 64, cache, neox, interpret=True)
    assert q.tobytes() == q2.tobytes() and k.tobytes() == k2.tobytes()


def test_batched_positions_heads_apart_and_no_key():
    """positions [batch, seq] with query [batch, seq, H, D]; key None rotates q only; 0
    tokens touch nothing."""
    rng = np.random.default_rng(7)
    positions = rng.integers(0, 64, (3, 5)).astype(np.int32)
    query = rng.standard_normal((3, 5, 4, 64)).astype(np.float16)
    before = query.copy()
    cache = cos_sin_cache(64, 64)
    rotary_embedding(positions, query, None, 64, cache)
    exact = rotated(before.reshape(15, -1), positions, cache, 64, True)
    assert_rounded_once(query.reshape(15, -1), exact, before)
    empty = np.empty((0, 64), np.float16)
    rotary_embedding(np.empty(0, np.int64), empty, empty, 64, cache)


def test_bad_arguments_are_named_before_any_launch():
    _, q, k = qkv_case(4, 2, 1, 64, np.float16, seed=9)
    before = q.copy()
    cache = cos_sin_cache(16, 64)
    positions = np.array([0, 3, 16, 1])
    cases = [
        (
            dict(positions=positions),
            r"positions must lie in \[0, max_position = 16\).*got 16 at token 2",
        ),
        (dict(positions=positions.astype(np.float32)), r"positions must hold one of i32, i64"),
        (
            dict(head_size=48, cache=cos_sin_cache(16, 48)),
            r"query's last dimensions \[128\] must be heads · head_size",
        ),
        (dict(cache=np.zeros((16, 63), np.float32)), r"rot_dim must be even.*got 63"),
        (
            dict(cache=cos_sin_cache(16, 128), head_size=64),
            r"rot_dim must be even and in 2..head_size = 64, got 128",
        ),
        (dict(query=q.T), r"query must have shape \[4, heads · head_size\]"),
        (dict(is_neox=1.0), r"is_neox must be True or False"),
        (dict(head_size=64.0), r"head_size must be an int"),
    ]
    for change, message in cases:
        args = dict(
            positions=np.array([0, 3, 15, 1]),
            query=q,
            key=k,
            head_size=64,
            cache=cache,
            is_neox=True,
        )
        args.update(change)
        with pytest.raises((ValueError, TypeError), match=message):
            rotary_embedding(
                args["positions"],
                args["query"],
                args["key"],
                args["head_size"],
                args["cache"],
                args["is_neox"],
            )
    assert q.tobytes() == before.tobytes()  # nothing ran


def test_a_query_that_is_no_view_of_token_rows_is_refused_not_copied():
    """[tokens, heads, D] whose heads are not evenly strided with D (a transposed
    buffer): rows of tokens would need a copy, which would be rotated instead of it."""
    buffer = np.zeros((2, 3, 64), np.float16)  # [H, tokens, D] seen as [tokens, H, D]
    query = buffer.transpose(1, 0, 2)
    with pytest.raises(ValueError, match=r"viewable as rows of tokens \[3, 128\] without a copy"):
        rotary_embedding(np.arange(3), query, None, 64, cos_sin_cache(8, 64))


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
@pytest.mark.parametrize("neox", [True, False])
def test_compiles_without_spills_and_is_predicted_at_the_dram_floor(arch, neox):
    """Llama-3-8B's q at a 4096-token prefill (bf16, head 128, the full rotation, a bf16
    cache), 4 heads a block: no spill, and the static
    model's time is the DRAM floor (x read once and written once; the cos and sin rows
    read by every block of a token range are L2 hits)."""
    from tilelang import dtypes
    from tilelang.cli import launch_facts

    constexprs = dict(T=dtypes.bf16, PT=dtypes.i64, CT=dtypes.bf16, NEOX=neox, HALF=64, BT=16, HB=4)
    # a contiguous q (the model's floor counts a tensor's whole span: a fused qkv's
    # q columns would count its k and v too)
    launch = dict(NT=4096, NR=4096 * 32, D=128, P=8192, R=128, heads=32, step=32)
    kernel = rotary.rotary_kernel
    built = kernel.compile(
        assume=launch_facts(kernel, constexprs, launch), target=arch, **constexprs
    )
    assert built.resources.spill_store_bytes == 0 and built.resources.spill_load_bytes == 0
    report = built.perf(per="x", **launch)
    assert report.predicted_seconds <= 1.05 * report.bounds[0].seconds, str(report)


def test_positions_outside_the_cache_gather_nothing_on_the_gpu_path(monkeypatch):
    """The host cannot read device positions: with the host check off, as on the GPU, a
    position outside [0, max_position) gathers no cache row (cos = sin = 0; an int64
    position saturates to the gather's 32 bits: it stays outside), so its token's
    rotated elements become 0 and its other tokens are rotated as ever."""
    monkeypatch.setattr(rotary, "_check_positions", lambda *args: None)
    _, q, _ = qkv_case(4, 2, 1, 64, np.float32, seed=11)
    before = q.copy()
    cache = cos_sin_cache(16, 32)
    positions = np.array([3, -1, 2**32 + 5, 15], np.int64)  # not 5: casts saturate
    rotary_embedding(positions, q, None, 64, cache)
    heads = q.reshape(4, 2, 64)
    assert not heads[1:3, :, :32].any()
    assert heads[1:3, :, 32:].tobytes() == before.reshape(4, 2, 64)[1:3, :, 32:].tobytes()
    kept = np.array([0, 3])
    exact = rotated(before[kept], positions[kept], cache, 64, True)
    assert_rounded_once(q[kept], exact, before[kept])


def test_the_torch_operator_rotates_in_place_and_passes_opcheck():
    """``tilelang::rotary_embedding`` on CPU tensors: the q and k column ranges of a
    fused qkv tensor rotated where they lie, as the library call rotates numpy views;
    torch.library.opcheck (schema, fake, mutation declared) on contiguous tensors."""
    torch = pytest.importorskip("torch")
    from tilelang.torch import rotary as torch_rotary

    qkv, q, k = qkv_case(9, 2, 1, 64, np.float32, seed=13)
    positions = np.arange(9, dtype=np.int64) * 3
    cache = cos_sin_cache(32, 64)
    fused = torch.from_numpy(qkv.copy())
    tq, tk = fused[:, :128], fused[:, 128:192]
    torch_rotary.rotary_embedding(torch.from_numpy(positions), tq, tk, 64, torch.from_numpy(cache))
    rotary_embedding(positions, q, k, 64, cache)
    assert fused.numpy().tobytes() == qkv.tobytes()
    args = (
        torch.from_numpy(positions),
        torch.from_numpy(q.copy()),
        torch.from_numpy(k.copy()),
        64,
        torch.from_numpy(cache),
        False,
    )
    torch.library.opcheck(torch_rotary.rotary_embedding_op, args)


def test_strided_q_and_k_reach_the_kernel_as_contiguous_spans_of_the_same_memory(monkeypatch):
    """The GPU takes only contiguous tensors: the q and k columns of a fused qkv reach
    the kernel as the contiguous span of their own memory, in rows of one head, with the
    rows from one token to the next (H + 2 H_kv heads), not as copies."""
    qkv, q, k = qkv_case(6, 4, 2, 64, np.float16, seed=17)
    launches = []
    monkeypatch.setattr(rotary, "run", lambda kernel, args, *rest: launches.append(args))
    rotary_embedding(np.arange(6), q, k, 64, cos_sin_cache(8, 64))
    assert len(launches) == 2
    for args, heads, first in zip(launches, (4, 2), (0, 4 * 64), strict=True):
        span, step = args[1], args[4]
        assert span.flags.c_contiguous and np.shares_memory(span, qkv)
        assert span.shape == (5 * 8 + heads, 64) and (args[3], step) == (heads, 8)
        assert span.__array_interface__["data"][0] == qkv[:, first:].__array_interface__["data"][0]


@pytest.mark.parametrize("tokens", [1, 3])
def test_heads_that_are_not_contiguous_within_a_token_are_refused(tokens):
    """Every other element of a buffer is no row of heads the kernel can address as a
    span, one token or several: refused by name, nothing written."""
    buffer = np.zeros((tokens, 256), np.float16)
    with pytest.raises(
        ValueError, match=r"each token's heads must be contiguous, got a stride of 2"
    ):
        rotary_embedding(np.arange(tokens), buffer[:, ::2], None, 64, cos_sin_cache(8, 64))
    assert not buffer.any()
