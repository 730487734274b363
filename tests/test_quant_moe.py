"""tilelang.quant.moe: `quantize_experts` and `moe_matmul` on the CPU backend against a
numpy reference written here (each format's dequantization by its own formula, then
the gather, the products and the weighted sum in float64), the align kernel's table
(ids outside the experts included, which only the host path refuses), the GPU builds
(sm_80, sm_90a: no spills) and the errors."""

import warnings

import ml_dtypes
import numpy as np
import pytest

import tilelang.quant as tq
from tilelang.quant import moe

E, K, N = 8, 256, 256
FORMATS = {
    "u4": dict(dtype="u4", group_size=128),
    "u4_zp": dict(dtype="u4", group_size=128, zero_point=True),
    "u8": dict(dtype="u8"),
    "mxfp4": dict(format="mxfp4"),
}
F4E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], np.float64)


@pytest.fixture(scope="module")
def weights():
    return np.random.default_rng(0).standard_normal((E, K, N)).astype(np.float32)


@pytest.fixture(scope="module")
def experts(weights):
    return {name: tq.quantize_experts(weights, **args) for name, args in FORMATS.items()}


def reference_weights(qe) -> np.ndarray:
    """[E, K, N] float64 from the stored codes, scales and zero points, by each format's
    formula: (q - z) * s for integer codes, f4e2m1(q) * 2^(c - 127) for MXFP4."""
    st = qe.stacked
    q = st.plain_codes().astype(np.int64)
    g = st.group_size
    if st.format == "mxfp4":
        values = np.where(q & 8, -1.0, 1.0) * F4E2M1[q & 7]
        scale = np.exp2(st.scale_codes.astype(np.float64) - 127)
        return (values * np.repeat(scale, g, axis=0)).reshape(qe.shape)
    # The product is exact in float64 and rounded once to the scales' type.
    kind = {"f16": np.float16, "bf16": ml_dtypes.bfloat16}[st.scale_dtype.name]
    values = q - (0 if st.zeros is None else np.repeat(st.zeros, g, axis=0))
    scale = st.scale_codes.view(kind).astype(np.float64)
    product = (values * np.repeat(scale, g, axis=0)).astype(kind).astype(np.float64)
    return product.reshape(qe.shape)


def slot_products(x, ids, w):
    """[T, top_k, N] float64 products x[t] @ W[ids[t, j]] (0 for id -1) and their bound
    terms |x| @ |W|."""
    x = x.astype(np.float64)
    chosen = np.where((ids >= 0)[..., None, None], w[np.maximum(ids, 0)], 0.0)
    return np.einsum("tk,tjkn->tjn", x, chosen), np.einsum("tk,tjkn->tjn", abs(x), abs(chosen))


def check(y, exact, magnitude, u):
    """|y - exact| <= Eb + u (|exact| + Eb) + tiny: f32 accumulation (K + 4 roundings
    of the magnitudes) and one final rounding."""
    bound = (K + 4) * 2.0**-24 * magnitude
    bound = bound + u * (np.abs(exact) + bound) + 2.0**-25
    err = np.abs(y.astype(np.float64) - exact)
    assert (err <= bound).all(), (
        f"max error {err.max():.3g}, bound there {bound.flat[err.argmax()]:.3g}"
    )


def run_and_check(qe, x, ids, u=2.0**-11):
    rng = np.random.default_rng(ids.size)
    weights = rng.random(ids.shape).astype(np.float32)
    products, magnitude = slot_products(x, ids, reference_weights(qe))
    y = tq.moe_matmul(x, qe, ids)
    assert y.shape == ids.shape + (N,) and y.dtype == x.dtype
    check(y, products, magnitude, u)
    y = tq.moe_matmul(x, qe, ids, weights)
    assert y.shape == (x.shape[0], N) and y.dtype == x.dtype
    w = weights.astype(np.float64)[..., None]
    check(y, (w * products).sum(1), (w * magnitude).sum(1), u)


def routing(tokens, top_k, seed=1):
    rng = np.random.default_rng(seed)
    return np.stack([rng.choice(E, top_k, replace=False) for _ in range(tokens)]).astype(np.int32)


def test_stacked_codes_are_each_experts_quantization(weights, experts):
    for name, args in FORMATS.items():
        qe = experts[name]
        assert qe.shape == (E, K, N)
        np.testing.assert_array_equal(qe.dequantize(), reference_weights(qe).astype(np.float32))
        for e in (0, E - 1):  # each expert is quantize's own result, scales and all
            one = tq.quantize(weights[e], **args)
            np.testing.assert_array_equal(qe.dequantize()[e], one.dequantize())
        error = qe.error(weights)
        diff = weights.astype(np.float64) - reference_weights(qe)
        assert error["max_abs"] == pytest.approx(np.abs(diff).max())
        assert 0 < error["relative"] < 0.2


@pytest.mark.parametrize("top_k", [1, 2])
def test_u4_every_batch(experts, top_k):
    rng = np.random.default_rng(top_k)
    for tokens in (1, 7, 64, 300):
        x = rng.standard_normal((tokens, K)).astype(np.float16)
        run_and_check(experts["u4"], x, routing(tokens, top_k))


@pytest.mark.parametrize("name", ["u4_zp", "u8", "mxfp4"])
def test_formats(experts, name):
    rng = np.random.default_rng(3)
    for tokens in (7, 300):
        x = rng.standard_normal((tokens, K)).astype(np.float16)
        run_and_check(experts[name], x, routing(tokens, 2))


def test_bf16(weights):
    qe = tq.quantize_experts(weights, "u4", group_size=128, scale_dtype="bf16")
    x = np.random.default_rng(4).standard_normal((7, K)).astype(ml_dtypes.bfloat16)
    run_and_check(qe, x, routing(7, 2), u=2.0**-8)


def test_no_expert_and_one_expert(experts):
    qe = experts["u4"]
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, K)).astype(np.float16)
    ids = routing(64, 2)
    ids[::3, 1] = -1  # routed to no expert: the slot adds nothing
    ids[5] = -1
    ids[ids == 3] = 4  # expert 3 gets no token
    run_and_check(qe, x, ids)
    assert not tq.moe_matmul(x, qe, ids)[5].any()
    x = rng.standard_normal((300, K)).astype(np.float16)
    run_and_check(qe, x, np.full((300, 1), 6, np.int32))  # every token to one expert


def check_align(ids, sorted_ids, table):
    """The align kernel's sorted ids and expert table against a numpy grouping: each
    expert's slots in order, then group "none" (id -1 and any id outside [0, E)), each
    run padded with S to whole blocks of BLOCK_M rows; -1 for the blocks past them."""
    flat, slots, start, bm = ids.reshape(-1), ids.size, 0, moe.BLOCK_M
    none = (flat < 0) | (flat >= E)
    for group in range(E + 1):
        mine = np.flatnonzero(none if group == E else flat == group)
        blocks = -(-mine.size // bm)
        run = sorted_ids[start : start + blocks * bm]
        np.testing.assert_array_equal(run[: mine.size], mine)
        assert (run[mine.size :] == slots).all()
        assert (table[start // bm : start // bm + blocks] == group).all()
        start += blocks * bm
    assert (table[start // bm :] == -1).all()


def align(ids, guard=0):
    """`moe_align` run directly (no host check) on `ids` [T, 2], each array in the middle
    of a larger one whose edges hold `guard` values; the tables and the edges after."""
    plan = moe.plan_moe(tq.quantize_experts(np.ones((E, 128, 128), np.float32), "u4"), *ids.shape)
    sizes, edge = plan.align.sizes, 64
    ids_buffer = np.full(ids.size + 2 * edge, guard, np.int32)  # valid ids: a read would count
    ids_buffer[edge:-edge] = ids.reshape(-1)
    sorted_buffer = np.full(sizes["P"] + 2 * edge, -7, np.int32)
    table_buffer = np.full(sizes["NB"] + 2 * edge, -7, np.int32)
    sorted_ids, table = sorted_buffer[edge:-edge], table_buffer[edge:-edge]
    moe.moe_align(ids_buffer[edge:-edge], sorted_ids, table, **plan.align.constexprs)
    edges = np.concatenate(
        [b[:edge] for b in (sorted_buffer, table_buffer)]
        + [b[-edge:] for b in (sorted_buffer, table_buffer)]
    )
    return sorted_ids.copy(), table.copy(), edges


def test_align_table():
    ids = routing(37, 2, seed=7)
    ids[3, 0] = -1
    sorted_ids, table, _ = align(ids)
    check_align(ids, sorted_ids, table)


def test_align_kernel_counts_ids_outside_the_experts_as_no_expert():
    """What the GPU path does with ids the host path refuses (it does not check them:
    that would be a device sync): the align kernel, run without the host check, puts
    each such slot in group "none" exactly as an id of -1, and touches nothing outside
    its tensors (the guards around them stay as they were)."""
    ids = routing(37, 2, seed=8)
    bad = {(0, 0): E, (5, 1): E + 9, (9, 0): -2, (20, 1): -(2**31), (36, 0): 2**31 - 1}
    for where, value in bad.items():
        ids[where] = value
    for guard in (0, E - 1):
        sorted_ids, table, edges = align(ids, guard)
        check_align(ids, sorted_ids, table)
        assert (edges == -7).all()
        as_none = np.where((ids >= 0) & (ids < E), ids, -1)
        expected_ids, expected_table, _ = align(as_none, guard)
        np.testing.assert_array_equal(sorted_ids, expected_ids)
        np.testing.assert_array_equal(table, expected_table)


def test_moe_matmul_past_the_host_check_treats_outside_ids_as_no_expert(experts, monkeypatch):
    """The three kernels on ids outside [-1, E) (the host check bypassed, as on the GPU):
    each such slot's products are zeros and the weighted sum is the one with -1 there,
    bit for bit; every slot is written (`out` starts as NaN)."""
    qe = experts["u4"]
    rng = np.random.default_rng(9)
    x = rng.standard_normal((6, K)).astype(np.float16)
    ids = routing(6, 2, seed=9)
    ids[1, 0], ids[4, 1], ids[5] = E, -3, [E + 1, 2**31 - 1]
    as_none = np.where((ids >= 0) & (ids < E), ids, -1)
    gate = rng.random(ids.shape).astype(np.float32)
    expected = tq.moe_matmul(x, qe, as_none), tq.moe_matmul(x, qe, as_none, gate)
    with pytest.raises(ValueError, match=r"topk_ids must be expert ids in \[0, 8\) or -1"):
        tq.moe_matmul(x, qe, ids)
    monkeypatch.setattr(moe, "_host_ids", lambda ids, tokens, e: ids.astype(np.int32))
    products = np.full((6, 2, N), np.nan, np.float16)
    tq.moe_matmul(x, qe, ids, out=products)
    assert not products[ids >= E].any() and not products[ids < -1].any()
    np.testing.assert_array_equal(products.view(np.int16), expected[0].view(np.int16))
    y = tq.moe_matmul(x, qe, ids, gate)
    np.testing.assert_array_equal(y.view(np.int16), expected[1].view(np.int16))


@pytest.mark.parametrize("target", ["sm_80", "sm_90a"])
def test_gpu_builds_do_not_spill(experts, target):
    for name in FORMATS:
        plan = moe.plan_moe(experts[name], 64, 2, arch=target)
        for launch in (plan.align, plan.gemm, plan.sum):
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a spill warns
                compiled = launch.compile(target)
            assert compiled.resources.spill_store_bytes == 0, (name, launch.kernel)
            assert compiled.resources.spill_load_bytes == 0, (name, launch.kernel)


def test_errors_name_the_parameter(weights, experts):
    qe = experts["u4"]
    x = np.zeros((3, K), np.float16)
    ids = np.zeros((3, 2), np.int32)
    cases = [
        (
            lambda: tq.moe_matmul(x.astype(np.float32), qe, ids),
            TypeError,
            "x must be an array of float16 or bfloat16",
        ),
        (lambda: tq.moe_matmul(x[:, :128], qe, ids), ValueError, "x must have shape"),
        (lambda: tq.moe_matmul(x, weights, ids), TypeError, "qe must be"),
        (lambda: tq.moe_matmul(x, qe, ids.astype(np.float32)), TypeError, "topk_ids must be"),
        (lambda: tq.moe_matmul(x, qe, ids[:2]), ValueError, "topk_ids must have shape"),
        (lambda: tq.moe_matmul(x, qe, ids + E), ValueError, r"topk_ids must be expert ids"),
        (lambda: tq.moe_matmul(x, qe, ids, np.ones((3, 2))), TypeError, "topk_weights must"),
        (
            lambda: tq.moe_matmul(x, qe, ids, np.ones((3, 1), np.float32)),
            ValueError,
            "topk_weights",
        ),
        (
            lambda: tq.moe_matmul(x, qe, ids, out=np.zeros((3, N), np.float16)),
            ValueError,
            "out must",
        ),
        (lambda: tq.quantize_experts(weights[0], "u4"), ValueError, r"w must be a 3-D"),
        (lambda: tq.quantize_experts(weights, format="nvfp4"), ValueError, "format: 'nvfp4'"),
        (lambda: tq.quantize_experts(weights[:, :200], "u4", -1), ValueError, "multiple of 16"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


def test_host_calls_reuse_the_weight_tensors_they_made():
    """The stacked weight's kernel tensors are made once per weight and operand type,
    not once per call (the cache key must not hold a per-call object)."""
    rng = np.random.default_rng(11)
    qe = tq.quantize_experts(rng.standard_normal((2, 128, 128)).astype(np.float32), "u4")
    x = rng.standard_normal((3, 128)).astype(np.float16)
    ids = np.array([[0], [1], [0]], np.int32)
    first = tq.moe_matmul(x, qe, ids)
    entries = len(qe.stacked.__dict__["_kernel_cache"])
    np.testing.assert_array_equal(tq.moe_matmul(x, qe, ids), first)
    assert len(qe.stacked.__dict__["_kernel_cache"]) == entries
