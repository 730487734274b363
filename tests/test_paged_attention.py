"""`tilelang.kernels.paged_decode_attention`: one query token per sequence over vLLM's
paged KV cache, against a numpy float64 reference written from the definition
(softmax(scale · q·Kᵀ)·V over the sequence's tokens, token t in row t % block_size of
page block_table[b, t // block_size]), for every KV dtype, GQA ratios 1, 4 and 8,
block sizes 8, 16 and 128, ragged lengths and shuffled tables; the interpreter on tiny
shapes, the CPU backend on the rest; sm_80/sm_90 builds with 0 spills and 16-byte
loads of the cache; bad input named."""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilelang import dtypes
from tilelang.dtypes import pack_codes
from tilelang.kernels import paged_attention as pa
from tilelang.kernels.paged_attention import paged_decode_attention
from tilelang.runtime.sass import disassemble, main_loop, opcodes

NATIVE = {"f16": np.float16, "bf16": ml_dtypes.bfloat16}


# --------------------------------------------------------------------------- reference


def reference(q, k, v, table, lens, scale) -> np.ndarray:
    """float64 attention of q[b, h] over the first lens[b] tokens of sequence b, with
    k, v the dequantized caches [num_blocks, block_size, H_kv, D] (float64)."""
    batch, heads, _ = q.shape
    bs, kv_heads = k.shape[1], k.shape[2]
    group = heads // kv_heads
    out = np.zeros(q.shape)
    for b in range(batch):
        t = np.arange(lens[b])
        if t.size == 0:
            continue  # no token: o = 0
        keys, values = k[table[b, t // bs], t % bs], v[table[b, t // bs], t % bs]
        for h in range(heads):
            s = scale * (keys[:, h // group] @ q[b, h].astype(np.float64))
            p = np.exp(s - s.max())
            out[b, h] = (p / p.sum()) @ values[:, h // group]
    return out


class Case:
    """Random inputs of one configuration: the kernel's arguments and the float64
    dequantized caches the reference reads."""

    def __init__(self, kv, lens, group=1, kv_heads=2, bs=16, d=64, q_type="f16", seed=0):
        rng = np.random.default_rng(seed)
        self.lens = np.array(lens, np.int32)
        batch, heads = len(lens), kv_heads * group
        max_blocks = max(1, -(-max(lens) // bs)) + 1  # one unused column
        blocks = batch * max_blocks + 3
        shape = (blocks, bs, kv_heads, d)
        self.q = rng.standard_normal((batch, heads, d)).astype(NATIVE[q_type])
        # pages shuffled and not contiguous; the entries past a sequence's end are
        # garbage (outside the cache), which must never be read
        table = rng.permutation(blocks)[: batch * max_blocks].reshape(batch, max_blocks)
        for b, n in enumerate(lens):
            table[b, -(-n // bs) :] = 10**6
        self.table = table.astype(np.int32)
        self.kwargs = {}
        self.k, self.k_ref = self.cache(kv, shape, rng, "k")
        self.v, self.v_ref = self.cache(kv, shape, rng, "v")
        self.q_type = q_type

    def cache(self, kv, shape, rng, name):
        if kv in ("f16", "bf16"):
            x = rng.standard_normal(shape).astype(NATIVE[kv])
            return x, x.astype(np.float64)
        if kv.startswith("f8"):  # "f8" per tensor, "f8h" per KV head
            x = (rng.standard_normal(shape) * 8).astype(ml_dtypes.float8_e4m3fn)
            s = 0.1 + rng.random(shape[2]).astype(np.float32) if kv == "f8h" else 0.125
            self.kwargs[f"{name}_scale"] = s
            per_head = np.broadcast_to(np.asarray(s, np.float64), shape[2:3])
            return x, x.astype(np.float64) * per_head[:, None]
        bits = 8 if kv == "u8" else 4
        codes = rng.integers(0, 1 << bits, size=shape).astype(np.uint8)
        s = (0.01 + rng.random(shape[:3]) / (1 << bits)).astype(np.float32)
        z = rng.integers(0, 1 << bits, size=shape[:3]).astype(np.float32)
        self.kwargs[f"{name}_scale"] = s
        self.kwargs[f"{name}_zero"] = z
        deq = (codes - z[..., None].astype(np.float64)) * s[..., None].astype(np.float64)
        return (codes if bits == 8 else pack_codes(codes, "u4")), deq

    def run(self, **options):
        return paged_decode_attention(
            self.q, self.k, self.v, self.table, self.lens, **self.kwargs, **options
        )

    def expected(self):
        d = self.q.shape[2]
        return reference(self.q, self.k_ref, self.v_ref, self.table, self.lens, d**-0.5)

    def tolerance(self):
        """K, V and P are rounded to q's type before the mmas (f32 accumulation), the
        output once more: a few roundings of q's type, relative to max |V|."""
        eps = 2.0**-8 if self.q_type == "bf16" else 2.0**-11
        return 3 * eps * np.abs(self.v_ref).max()


def assert_close(got, case):
    err = np.abs(got.astype(np.float64) - case.expected()).max()
    assert err <= case.tolerance(), (err, case.tolerance())


# --------------------------------------------------------------------------- CPU backend

LENGTHS = [1, 7, 100, 257, 0]


@pytest.mark.parametrize(
    "kv, group, bs",
    [
        ("f16", 1, 16),
        ("f16", 4, 8),
        ("bf16", 8, 128),
        ("f8", 4, 16),
        ("f8h", 8, 8),
        ("u8", 1, 128),
        ("u8", 4, 16),
        ("u4", 8, 16),
        ("u4", 1, 8),
        ("u8-bf16", 4, 16),
        ("f8-bf16", 8, 16),
    ],
)
def test_paged_decode_matches_the_definition_for_every_cache_type(kv, group, bs):
    kv, _, q_type = kv.partition("-")
    q_type = q_type or ("bf16" if kv == "bf16" else "f16")
    case = Case(kv, LENGTHS, group=group, bs=bs, q_type=q_type, seed=group * bs)
    assert_close(case.run(), case)


@pytest.mark.parametrize("d", [64, 128, 256])
def test_paged_decode_matches_the_definition_at_each_head_dim(d):
    case = Case("f16", [3, 100], group=4, kv_heads=1, d=d, seed=d)
    assert_close(case.run(), case)


@settings(max_examples=4, deadline=None)
@given(
    lens=st.lists(st.sampled_from([0, 1, 7, 33, 100, 257]), min_size=1, max_size=3),
    splits=st.integers(1, 9),
    seed=st.integers(0, 999),
)
def test_the_split_combine_equals_one_pass_for_any_number_of_splits(lens, splits, seed):
    """Splits past a sequence's end see no token (m = -inf, l = 0) and weigh nothing."""
    case = Case("f16", lens, group=4, kv_heads=1, seed=seed)
    assert_close(case.run(num_splits=splits), case)


def test_a_short_head_dim_and_a_many_head_group_match_the_definition():
    case = Case("u8", [1, 50], group=32, kv_heads=1, d=40, seed=5)
    assert_close(case.run(), case)


# --------------------------------------------------------------------------- interpreter


@pytest.mark.parametrize("kv", ["f16", "f8h", "u4"])
def test_the_interpreter_agrees_on_tiny_shapes(kv):
    case = Case(kv, [0, 1, 9], group=4, kv_heads=1, bs=8, d=16, seed=3)
    interpreted = case.run(interpret=True, num_splits=2)
    assert_close(interpreted, case)
    compiled = case.run(num_splits=2)
    assert np.abs(compiled.astype(np.float64) - interpreted).max() <= case.tolerance()


# --------------------------------------------------------------------------- CUDA


def split_build(arch, kv, d=128, group=8):
    kt = dtypes.dtype("f8e4m3" if kv == "f8" else kv)
    mode = {"f16": pa.PLAIN, "bf16": pa.PLAIN, "f8": pa.HEAD_SCALED}.get(kv, pa.TOKEN_SCALED)
    tiles = pa.default_tiles(d, group, kt, arch)
    t = dtypes.bf16 if kv == "bf16" else dtypes.f16
    return pa.paged_split_kernel.compile(
        target=arch, T=t, KT=kt, MODE=mode, BS=16, G=group, **tiles
    )


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("kv", ["f16", "bf16", "f8", "u8", "u4"])
def test_the_kernels_compile_with_no_spills_at_their_default_tiles(arch, kv):
    for d in (64, 128, 256):
        build = split_build(arch, kv, d)
        spilled = build.resources.spill_store_bytes + build.resources.spill_load_bytes
        # the one known exception: per-token scales at D = 256 (paged_attention.TOKEN_TILES)
        allowed = 32 if kv in ("u8", "u4") and d == 256 else 0
        assert spilled <= allowed, (d, build.resources)
        assert dict(build.thread.stats).get("gather_load_bytes_16", 0) >= 1, d
    combine = pa.paged_combine_kernel.compile(target=arch, T=dtypes.f16, G=8, SP=16, HD=256)
    assert combine.resources.spill_store_bytes == 0


@pytest.mark.usefixtures("disassembler")
@pytest.mark.parametrize("kv", ["f16", "f8", "u8", "u4"])
def test_the_cache_streams_in_16_byte_loads_in_the_sm90_main_loop(kv):
    build = split_build("sm_90", kv)
    loop = main_loop(disassemble(build.cubin))
    assert loop is not None
    ops = opcodes(loop)
    wide = sum(n for op, n in ops.items() if op.startswith("LDG.E.128"))
    # every 16-byte access of the K and V rows a thread makes per step, at least
    assert wide >= dict(build.thread.stats)["gather_load_bytes_16"] >= 2, sorted(ops)
    assert not any(op.startswith(("LDL", "STL")) for op in ops)


# --------------------------------------------------------------------------- bad input


def test_bad_input_is_named_before_any_launch():
    case = Case("f16", [7, 20], group=2)
    q, k, v, table, lens = case.q, case.k, case.v, case.table, case.lens
    capacity = table.shape[1] * 16
    with pytest.raises(ValueError, match=r"seq_lens\[1\] = .* must be in 0\.\.max_blocks"):
        paged_decode_attention(q, k, v, table, np.array([7, capacity + 1], np.int32))
    with pytest.raises(ValueError, match=r"block_table\[0\] names page"):
        bad = table.copy()
        bad[0, 0] = -1
        paged_decode_attention(q, k, v, bad, lens)
    with pytest.raises(ValueError, match=r"block_size must be in 8\.\.128"):
        small = k.reshape(k.shape[0] * 4, 4, *k.shape[2:])
        paged_decode_attention(q, small, small, table, lens)
    with pytest.raises(ValueError, match=r"must divide q's heads \(H = 3\)"):
        paged_decode_attention(q[:, :3], k, v, table, lens)
    with pytest.raises(TypeError, match="block_table must hold one of i32"):
        paged_decode_attention(q, k, v, table.astype(np.int64), lens)
    with pytest.raises(ValueError, match="v_cache must be k_cache's shape and dtype"):
        paged_decode_attention(q, k, v[:, :8], table, lens)
    with pytest.raises(ValueError, match="head dimension must be q's"):
        paged_decode_attention(q[..., :32], k, v, table, lens)
    with pytest.raises(ValueError, match="k_scale is for quantized caches"):
        paged_decode_attention(q, k, v, table, lens, k_scale=1.0)
    f8 = k.astype(ml_dtypes.float8_e4m3fn)
    with pytest.raises(ValueError, match="k_scale is needed with an f8e4m3 cache"):
        paged_decode_attention(q, f8, f8, table, lens)
    with pytest.raises(ValueError, match=r"v_scale must be one number or hold one per KV head"):
        paged_decode_attention(q, f8, f8, table, lens, k_scale=1.0, v_scale=np.ones(3, np.float32))
    codes = np.zeros(k.shape, np.uint8)
    with pytest.raises(ValueError, match=r"k_scale is needed with a u8/u4 cache"):
        paged_decode_attention(q, codes, codes, table, lens)
    with pytest.raises(TypeError, match="k_cache must hold q's dtype"):
        paged_decode_attention(q, k.astype(np.float32), v.astype(np.float32), table, lens)
