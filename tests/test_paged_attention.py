"""`tilelang.kernels.paged_decode_attention`: one query token per sequence over vLLM's
paged KV cache, against a numpy float64 reference written from the definition
(softmax(scale · q·Kᵀ)·V over the sequence's tokens, token t in row t % block_size of
page block_table[b, t // block_size]), for every KV dtype, GQA ratios 1, 4 and 8,
block sizes 8, 16 and 128, ragged lengths and shuffled tables; the interpreter on tiny
shapes, the CPU backend on the rest; sm_80/sm_90 builds with 0 spills whose token loop
copies the cache with 16-byte cp.async, for every build a call can ask for, and whose
static performance report puts the u8/u4 caches at 85% of DRAM bandwidth at issue 12's
case; GPU launches (followed on fake device tensors) that copy nothing to the device;
bad input named."""

import warnings

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilelang import dtypes
from tilelang.analysis.replication import ReplicatedOperandWarning
from tilelang.dtypes import pack_codes
from tilelang.kernels import common
from tilelang.kernels import paged_arguments as arguments
from tilelang.kernels import paged_attention as pa
from tilelang.kernels.paged_attention import paged_decode_attention
from tilelang.runtime import call_plans, counters
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
        self.codes = {}  # a u8/u4 cache's codes by "k", "v", as float64
        self.k, self.k_ref = self.cache(kv, shape, rng, "k")
        self.v, self.v_ref = self.cache(kv, shape, rng, "v")
        self.q_type = q_type

    def cache(self, kv, shape, rng, name):
        if kv in ("f16", "bf16"):
            x = rng.standard_normal(shape).astype(NATIVE[kv])
            return x, x.astype(np.float64)
        if kv.startswith("f8"):  # "f8" per tensor, "f8h" per KV head; "f8e5...": e5m2
            f8 = ml_dtypes.float8_e5m2 if kv.startswith("f8e5") else ml_dtypes.float8_e4m3fn
            x = (rng.standard_normal(shape) * 8).astype(f8)
            s = 0.1 + rng.random(shape[2]).astype(np.float32) if kv.endswith("h") else 0.125
            self.kwargs[f"{name}_scale"] = s
            per_head = np.broadcast_to(np.asarray(s, np.float64), shape[2:3])
            return x, x.astype(np.float64) * per_head[:, None]
        bits = 8 if kv == "u8" else 4
        codes = rng.integers(0, 1 << bits, size=shape).astype(np.uint8)
        s = (0.01 + rng.random(shape[:3]) / (1 << bits)).astype(np.float32)
        z = rng.integers(0, 1 << bits, size=shape[:3]).astype(np.float32)
        self.kwargs[f"{name}_scale"] = s
        self.kwargs[f"{name}_zero"] = z
        self.codes[name] = codes.astype(np.float64)
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
        ("f8e5", 4, 16),
        ("f8e5h-bf16", 8, 8),
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


@pytest.mark.parametrize(("kv", "d"), [("f16", 65), ("bf16", 33), ("u8", 66), ("u4", 20)])
def test_head_dims_whose_rows_cannot_be_copied_asynchronously_warn_nothing(kv, d):
    """D codes that do not fill whole 4 bytes leave each cache row unaligned for cp.async:
    the call builds the loop unpipelined rather than ask for stages the compiler would
    then warn it cannot honour (a warning about the library's own source)."""
    q_type = "bf16" if kv == "bf16" else "f16"
    case = Case(kv, [37, 5, 100], group=2, kv_heads=2, bs=16, d=d, q_type=q_type, seed=d)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = case.run()
    assert [str(w.message) for w in caught] == []
    assert_close(out, case)
    assert pa.default_tiles(d, 2, dtypes.dtype(kv))["STAGES"] == 1
    assert pa.default_tiles(64, 2, dtypes.dtype(kv))["STAGES"] >= 2  # aligned rows: pipelined


# --------------------------------------------------------------------------- interpreter


@pytest.mark.parametrize("kv", ["f16", "f8h", "u4"])
def test_the_interpreter_agrees_on_tiny_shapes(kv):
    case = Case(kv, [0, 1, 9], group=4, kv_heads=1, bs=8, d=16, seed=3)
    interpreted = case.run(interpret=True, num_splits=2)
    assert_close(interpreted, case)
    compiled = case.run(num_splits=2)
    assert np.abs(compiled.astype(np.float64) - interpreted).max() <= case.tolerance()


# --------------------------------------------------------------------------- CUDA


def split_build(arch, kv, d=128, group=8, **flags):
    """The split kernel at its default tiles; `flags` (K_HEAD, V_HEAD or K_ZEROS, V_ZEROS,
    in that order) default to reading every tensor."""
    kt = dtypes.dtype("f8e4m3" if kv == "f8" else kv)
    mode = {"f16": pa.PLAIN, "bf16": pa.PLAIN, "f8": pa.HEAD_SCALED}.get(kv, pa.TOKEN_SCALED)
    tiles = pa.default_tiles(d, group, kt, arch, tuple(flags.values()) or (True, True))
    t = dtypes.bf16 if kv == "bf16" else dtypes.f16
    return pa.paged_split_kernel.compile(
        target=arch, T=t, KT=kt, MODE=mode, BS=16, G=group, **flags, **tiles
    )


def flag_choices(kv, d, arch):
    """The builds a call can ask for: f8 scales as numbers or device tensors, u8/u4
    zero points given or absent, each of K and V on its own. Every choice at D 128 on
    sm_90a (the build an H100 runs); both or neither at the other head dims and on
    sm_80 (one tensor read is between the two in registers: a covering design, the
    suite's slowest test otherwise); sm_90, whose mma.sync code is sm_90a's, only the
    default (both read)."""
    names = {"f8": ("K_HEAD", "V_HEAD"), "u8": ("K_ZEROS", "V_ZEROS")}
    names["u4"] = names["u8"]
    if kv not in names:
        return [{}]
    k, v = names[kv]
    if arch == "sm_90":
        pairs = [(True, True)]
    elif d == 128 and arch == "sm_90a":
        pairs = [(a, b) for a in (False, True) for b in (False, True)]
    else:
        pairs = [(False, False), (True, True)]
    return [{k: a, v: b} for a, b in pairs]


@pytest.mark.parametrize("arch", ["sm_80", "sm_90", "sm_90a"])
@pytest.mark.parametrize("kv", ["f16", "bf16", "f8", "u8", "u4"])
def test_the_kernels_compile_with_no_spills_at_their_default_tiles(arch, kv):
    for d in (64, 128, 256):
        for flags in flag_choices(kv, d, arch):
            build = split_build(arch, kv, d, **flags)
            spilled = build.resources.spill_store_bytes + build.resources.spill_load_bytes
            assert spilled == 0, (d, flags, build.resources)
            stats = dict(build.thread.stats)
            # every gather of the token loop copied with cp.async, the rows in 16 bytes
            assert stats.get("gather_cp_async_bytes_16", 0) >= 1, (d, flags, stats)
            assert "pipeline_skipped" not in stats, (d, flags, stats)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("kv", ["f16", "f8", "u8", "u4"])
@pytest.mark.parametrize("group", [8, 32])
def test_head_dim_256_keeps_q_unreplicated_and_spills_nothing(arch, kv, group):
    """At D = 256 a [16, 256] q held whole by every warp costs 64 registers a thread and
    made the u8/u4 builds spill; the default tiles split it (paged_attention.HEAD_DIM_TILES).
    Except u4 with a group of at most 16 (GROUP_16_TILES): its K rows load in the score
    mma's B-fragment layout, which needs every warp along the tokens, so each holds q
    whole by design; it takes 228-240 registers (ptxas still below its 255) and spills
    nothing."""
    fragment = kv == "u4" and group <= 16
    with warnings.catch_warnings():  # the fragment build states it expects the replication
        warnings.simplefilter("error", ReplicatedOperandWarning)
        build = split_build(arch, kv, 256, group)
    words = build.stats.get("dot_operand_replicated_words", 0)
    assert (words >= 64) == fragment, build.stats  # q whole in every warp: 64 registers
    r = build.resources
    assert (r.spill_store_bytes, r.spill_load_bytes) == (0, 0), r
    # room left: ptxas is not at its 255 ceiling (the bare f16 -> f32 conversions, with
    # their NaN selects gone, let ptxas schedule the u8 build at 166 where it took 159)
    limit = 244 if fragment else 168
    assert r.registers <= limit, r


def wide_ops(ops, prefix):
    """How many of `ops` (opcode counts) are 16-byte accesses starting with `prefix`."""
    return sum(n for op, n in ops.items() if op.startswith(prefix) and ".128" in op)


@pytest.mark.usefixtures("disassembler")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("kv", ["f16", "f8", "u8", "u4"])
def test_the_cache_rows_arrive_by_cp_async_not_by_loads_in_the_main_loop(arch, kv):
    """The default build (D 128, GQA 8) copies each step's K and V rows with 16-byte
    cp.async (LDGSTS) issued steps ahead, as many a thread as the rows hold (BN rows of
    D codes, 16 bytes each, over the block's threads, for K and V), and loads none of
    them in the loop that uses them (no LDG.E.128), spilling nothing."""
    build = split_build(arch, kv)
    r = build.resources
    assert (r.spill_store_bytes, r.spill_load_bytes) == (0, 0), r
    loop = main_loop(disassemble(build.cubin))
    assert loop is not None
    ops = opcodes(loop)
    bits = {"f16": 16, "f8": 8, "u8": 8, "u4": 4}[kv]
    tiles = pa.default_tiles(128, 8, dtypes.dtype("f8e4m3" if kv == "f8" else kv), arch)
    per_thread = tiles["BN"] * 128 * bits // 8 // 16 // (32 * tiles["WARPS"])
    assert wide_ops(ops, "LDGSTS") == 2 * per_thread, sorted(ops)
    assert wide_ops(ops, "LDG.") == 0, sorted(ops)  # LDG.E.128, not LDGSTS
    assert not any(op.startswith(("LDL", "STL")) for op in ops)


def issue_12_report(arch, kv, k_zeros=False, v_zeros=False, d=128):
    """The static performance report (`CompiledKernel.perf`) of the split kernel at
    issue 12's case: 64 sequences of 4096 tokens, 32 query heads over 8 KV heads, D 128
    (or `d`), 16-token pages, with the tiles, flags and splits a call picks."""
    from tilelang.cli import launch_facts

    batch, context, heads, kv_heads, page = 64, 4096, 32, 8, 16
    cache = dtypes.dtype(kv)
    tiles = pa.default_tiles(d, heads // kv_heads, cache, arch, (k_zeros, v_zeros))
    splits, per_split = pa.split_count(batch, kv_heads, context, tiles["BN"])
    rows = batch * context
    constexprs = dict(T=dtypes.f16, KT=cache, BS=page, G=heads // kv_heads, **tiles)
    constexprs |= dict(MODE=pa.TOKEN_SCALED, K_ZEROS=k_zeros, V_ZEROS=v_zeros)
    launch = dict(NB=batch, H=heads, D=d, R=rows, HK=kv_heads, MB=context // page, S=splits)
    launch |= dict(SR=rows, SH=kv_heads, scale=1.0, v_factor=1.0, per_split=per_split)
    facts = launch_facts(pa.paged_split_kernel, constexprs, launch)
    build = pa.paged_split_kernel.compile(assume=facts, target=arch, **constexprs)
    return build.perf(per="k", iterations=-(-per_split // tiles["BN"]), **launch)


@pytest.mark.usefixtures("disassembler")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("kv", ["u8", "u4"])
@pytest.mark.parametrize("zeros", [False, True])
def test_quantized_caches_are_predicted_at_85_percent_of_dram_bandwidth(arch, kv, zeros):
    """Issue 12: at batch 64, context 4096 the u8 and u4 caches (per-token scales, zero
    points absent or given for K and V) reach 85% of the DRAM bandwidth over their
    bytes in the static report: the instructions a step issues take no longer than the
    step's bytes (the row reductions combine warps once each, K is read in its B
    fragment's layout, the constant zero point folds into the dequantization)."""
    report = issue_12_report(arch, kv, zeros, zeros)
    assert report.dram_fraction >= 0.85, report


@pytest.mark.usefixtures("disassembler")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("d", [64, 256])
@pytest.mark.parametrize("zeros", [False, True])
def test_u4_at_head_dims_64_and_256_is_predicted_at_85_percent_of_dram_bandwidth(arch, d, zeros):
    """Issue 12 at the other head dims: u4 at D = 256 (64-token steps over 8 warps, K in
    its B-fragment layout) and at D = 64 (128-token steps over 2 warps), with or without
    zero points, reach 85% of the DRAM bandwidth in the static report. D = 64 with V's
    zero points stayed at 81-83% until the softmax took `tl.fast_exp2`."""
    report = issue_12_report(arch, "u4", zeros, zeros, d)
    assert report.dram_fraction >= 0.85, report


@pytest.mark.parametrize("kv", ["f16", "f8e4m3", "u8", "u4"])
@pytest.mark.parametrize("d", [40, 64, 128, 256])
@pytest.mark.parametrize("group", [1, 8, 32])
def test_the_default_stages_keep_16_kib_of_rows_in_flight_and_no_more_than_needed(kv, d, group):
    """STAGES − 1 steps of K and V rows (BN tokens of D codes each) are in flight while a
    step computes: at least 16 KiB unless at the 4-stage cap, one stage fewer would not
    reach it, and never fewer than 2 stages (a pipeline)."""
    cache = dtypes.dtype(kv)
    tiles = pa.default_tiles(d, group, cache)
    step = 2 * tiles["BN"] * tiles["HD"] * cache.bits / 8
    stages = tiles["STAGES"]
    assert 2 <= stages <= 4
    assert (stages - 1) * step >= 16 * 1024 or stages == 4, (stages, step)
    assert stages == 2 or (stages - 2) * step < 16 * 1024, (stages, step)


def test_pipelining_the_token_loop_changes_no_bit(monkeypatch):
    """The pipelined loop (cp.async copies steps ahead, run by the CPU backend as the GPU
    runs them) computes what the loop as written does, bit for bit, for a per-token
    scaled cache whose scales and zero points are copied ahead too."""
    case = Case("u8", [1, 100, 257, 0], group=4, bs=16, seed=21)
    pipelined = case.run(num_splits=2)
    assert_close(pipelined, case)
    monkeypatch.setattr(pa, "pipeline_stages", lambda bn, head_dim, cache: 1)
    as_written = case.run(num_splits=2)
    assert np.array_equal(pipelined.view(np.uint16), as_written.view(np.uint16))


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
    with pytest.raises(ValueError, match=r"k_scale must be 1 or absent: an unquantized cache"):
        paged_decode_attention(q, k, v, table, lens, k_scale=2.0)
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


def test_a_wrong_rank_names_each_dimension_it_expects():
    case = Case("f16", [7, 20], group=2)
    q, k, v, table, lens = case.q, case.k, case.v, case.table, case.lens
    with pytest.raises(
        ValueError, match=r"^q must have shape \[batch, H, D\], got shape \[2, 64\]$"
    ):
        paged_decode_attention(q[:, 0], k, v, table, lens)
    with pytest.raises(
        ValueError,
        match=r"^block_table must have shape \[2, max_blocks\], got shape \[2\] "
        r"\(batch = 2 from q.shape\[0\]\)$",
    ):
        paged_decode_attention(q, k, v, table[:, 0], lens)


# --------------------------------------------------------------------------- defaults


@pytest.mark.parametrize(
    "kv, given", [("u8", "none"), ("u4", "none"), ("u8", "k"), ("u4", "v")]
)  # each width with both absent, and with one of each absent beside one given
def test_absent_zero_points_are_the_middle_code(kv, given):
    """An absent k_zero / v_zero is 2^(bits − 1) (128, 8), read by no load: the
    definition with that zero point, as passing it in full is. Not bit for bit: the
    constant folds into the dequantization (codes − z, exact small integers, into the
    mmas) where zero points read per token are applied per token after them."""
    case = Case(kv, [1, 100, 0], group=4, bs=16, seed=11)
    middle = float(1 << ((8 if kv == "u8" else 4) - 1))
    absent = [name for name in ("k", "v") if name != given]
    for name in absent:
        scales = case.kwargs[f"{name}_scale"].astype(np.float64)[..., None]
        dequantized = (case.codes[name] - middle) * scales
        setattr(case, f"{name}_ref", dequantized)
        case.kwargs[f"{name}_zero"] = np.full(scales.shape[:3], middle, np.float32)
    explicit = case.run()
    assert_close(explicit, case)
    for name in absent:
        del case.kwargs[f"{name}_zero"]
    assert_close(case.run(), case)


@pytest.mark.parametrize("number", ["k", "v"])
def test_an_f8_cache_takes_a_number_for_one_scale_and_one_per_head_for_the_other(number):
    case = Case("f8h", [1, 7, 100], group=4, kv_heads=2, bs=8, seed=13)
    cache = case.k if number == "k" else case.v
    case.kwargs[f"{number}_scale"] = 0.75
    setattr(case, f"{number}_ref", cache.astype(np.float64) * 0.75)
    by_number = case.run()
    assert_close(by_number, case)
    # a host array of one element is the same number
    case.kwargs[f"{number}_scale"] = np.array([0.75], np.float32)
    assert np.array_equal(case.run().view(np.uint16), by_number.view(np.uint16))


# --------------------------------------------------------------------------- vLLM's calls


def test_an_unquantized_cache_takes_scales_of_exactly_one_and_refuses_others():
    """vLLM passes k_scale, v_scale to every backend, 1.0 for an unquantized cache: 1 in
    any form (a number, 0-d, one element, one per KV head) is taken and changes no bit;
    anything else is refused, saying why and what was given."""
    case = Case("f16", [7, 20], group=2, kv_heads=2)
    plain = case.run()
    ones = [1, 1.0, np.float32(1), np.array(1.0, np.float32), np.ones(1), np.ones(2, np.float32)]
    for one in ones:
        got = case.run(k_scale=one, v_scale=one)
        assert np.array_equal(got.view(np.uint16), plain.view(np.uint16)), one
    for bad, shown in [(0.5, "0.5"), (np.array([1.0, 0.5]), r"\[2\]"), (np.ones(3), r"\[3\]")]:
        with pytest.raises(
            ValueError, match=rf"v_scale must be 1 or absent: .*not scaled.*{shown}"
        ):
            case.run(k_scale=1.0, v_scale=bad)


def test_a_device_scale_beside_an_unquantized_cache_is_taken_unread(monkeypatch):
    """A device scale's value would cost a copy from the device (a call makes none: CUDA
    graphs): one element (0-d too) or one per KV head is taken, the cache used as it is;
    other shapes are refused."""
    recorder = LaunchRecorder(monkeypatch)
    tensors, _ = device_call("f16", False)
    for shape in [(), (1,), (2,)]:
        scale = FakeDeviceTensor(shape, "f32")
        paged_decode_attention(*tensors, k_scale=scale, v_scale=scale)
        assert recorder.launches[-1][2]["MODE"] == pa.PLAIN
        assert not any(arg is scale for arg in recorder.launches[-1][1])
    with pytest.raises(ValueError, match=r"k_scale must be 1 or absent.*got shape \[3\]"):
        paged_decode_attention(*tensors, k_scale=FakeDeviceTensor((3,), "f32"))


def test_a_0d_device_scale_serves_an_f8_cache_as_one_of_one_element(monkeypatch):
    """vLLM's layer._k_scale is a 0-d f32 device tensor: viewed as [1, 1], as [1] is."""
    recorder = LaunchRecorder(monkeypatch)
    tensors, _ = device_call("f8e4m3", False)
    for shape in [(), (1,)]:
        k_scale, v_scale = FakeDeviceTensor(shape, "f32"), FakeDeviceTensor(shape, "f32")
        paged_decode_attention(*tensors, k_scale=k_scale, v_scale=v_scale)
        _, args, constexprs = recorder.launches[-1]
        assert (constexprs["K_HEAD"], constexprs["V_HEAD"]) == (True, True)
        assert [np.shape(a) for a in (args[3], args[5])] == [(1, 1), (1, 1)]


def test_caches_of_a_type_not_taken_say_what_was_given_and_what_to_do():
    case = Case("f16", [7, 20], group=2)
    q, table, lens = case.q, case.table, case.lens
    # u4 codes packed two a byte into a uint8 tensor: the PackedArray it must be
    packed = np.zeros((*case.k.shape[:3], q.shape[2] // 2), np.uint8)
    with pytest.raises(
        ValueError, match=r"a u4 cache .*must be a tilelang\.PackedArray.*pack_codes"
    ):
        paged_decode_attention(q, packed, packed, table, lens)
    with pytest.raises(ValueError, match=r"no device tensor, torch's included"):
        paged_decode_attention(q, packed, packed, table, lens)
    fnuz = case.k.astype(ml_dtypes.float8_e4m3fnuz)
    with pytest.raises(TypeError, match=r"f8e5m2 \(float8_e5m2\).*got float8_e4m3fnuz; the fnuz"):
        paged_decode_attention(q, fnuz, fnuz, table, lens, k_scale=1.0, v_scale=1.0)


def wide_table(case, max_blocks):
    """The case's table widened to `max_blocks` pages a sequence (vLLM sizes it for
    max_model_len), the new entries outside the cache (never read)."""
    extra = np.full((case.table.shape[0], max_blocks - case.table.shape[1]), 10**6, np.int32)
    case.table = np.concatenate([case.table, extra], axis=1)


def launches_of(monkeypatch):
    """The launches a call makes (kernel, args, constexprs, interpret), run as usual."""
    launches = []
    real_run = pa.run
    monkeypatch.setattr(pa, "run", lambda *a: (launches.append(a), real_run(*a))[1])
    return launches


def test_max_seq_len_sizes_the_splits_not_the_table_width(monkeypatch):
    """A 600-token context in a table of 4096 tokens a sequence: sized by the table,
    the splits past 600 tokens have nothing to do; sized by max_seq_len every split of
    the longest sequence reads tokens, and the splits cover it."""
    case = Case("f16", [300, 600], group=4, kv_heads=1, bs=16, seed=31)
    wide_table(case, 256)
    launches = launches_of(monkeypatch)
    assert_close(case.run(max_seq_len=600), case)
    _, args, _, _ = launches[-1]
    splits, per_split = args[9].shape[2], int(args[16])
    covered = common.coarse_length(600)  # 640: max_seq_len's bucket
    assert splits > 1 and (splits - 1) * per_split < covered <= splits * per_split
    case.run()  # the table's capacity: most splits start past 600
    _, args, _, _ = launches[-1]
    assert (args[9].shape[2] - 1) * int(args[16]) >= 600


def test_coarse_lengths_round_up_by_at_most_an_eighth_in_8_buckets_an_octave():
    """max_seq_len keys a call plan through its bucket (`coarse_length`): never below
    it (the splits must cover max_seq_len), at most 1/8 above it, and few buckets an
    octave, so a decode loop growing by one token a step records a plan rarely."""
    for octave in range(13):
        lengths = range(1 << octave, 2 << octave)
        buckets = {common.coarse_length(n) for n in lengths}
        # the next octave's start is a bucket of this one's last lengths too
        assert len(buckets - {2 << octave}) <= 8, (octave, sorted(buckets))
        for n in lengths:
            assert n <= common.coarse_length(n) <= n + n / 8, n
    for odd in (None, 0, -3, 2.5, True, "100"):
        assert common.coarse_length(odd) is odd


def test_max_seq_len_past_the_table_is_its_capacity_and_below_a_length_is_refused():
    case = Case("f16", [7, 100], group=2, seed=33)
    plain = case.run()
    beyond = case.run(max_seq_len=10**9)
    assert np.array_equal(beyond.view(np.uint16), plain.view(np.uint16))
    with pytest.raises(ValueError, match=r"seq_lens\[1\] = 100 is above max_seq_len = 99"):
        case.run(max_seq_len=99)
    for bad in (-1, 2.5, True, "100"):
        with pytest.raises(ValueError, match=r"max_seq_len must be"):
            case.run(max_seq_len=bad)


def test_a_sequence_longer_than_max_seq_len_is_read_whole_by_its_last_split(monkeypatch):
    """On the GPU seq_lens are not read before the launch, so a max_seq_len below a
    length cannot be refused: the last split reads every token past the others (and
    none past the table). Followed here with the host check off, as on the GPU."""
    monkeypatch.setattr(pa, "check_lengths", lambda *args: None)
    case = Case("f16", [1000, 40, 0], group=4, kv_heads=1, bs=16, seed=35)
    wide_table(case, 256)
    assert_close(case.run(max_seq_len=300), case)
    assert_close(case.run(max_seq_len=0), case)


# --------------------------------------------------------------------------- launches


class FakeDeviceTensor:
    """A device tensor with no memory behind it: only the `__cuda_array_interface__`
    the wrapper reads (shape, dtype), enough to follow a GPU call up to its launch."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype = tuple(shape), dtypes.dtype(dtype)
        typestr = {"f16": "<f2", "f32": "<f4", "i32": "<i4", "u8": "|u1"}.get(dtype, "|V1")
        self.__cuda_array_interface__ = {
            "shape": self.shape, "typestr": typestr, "data": (4096 * id(self), False),
            "strides": None, "version": 3,
        }  # fmt: skip


class LaunchRecorder:
    """Stands in for the GPU: records the launches, the outputs `empty` makes and every
    host-to-device copy (`DeviceBuffer`: the counters' zeros, placeholders)."""

    def __init__(self, monkeypatch):
        self.launches, self.outputs, self.copies = [], [], []
        # the cache's dtype from the fake itself: f8 has no __cuda_array_interface__ typestr
        original = arguments.dtype_of
        monkeypatch.setattr(
            arguments,
            "dtype_of",
            lambda x, name: x.dtype if isinstance(x, FakeDeviceTensor) else original(x, name),
        )
        monkeypatch.setattr(pa.gpu, "device_arch", lambda: "sm_90")
        monkeypatch.setattr(pa.gpu, "DeviceBuffer", self.copy)
        monkeypatch.setattr(pa, "empty", self.empty)
        monkeypatch.setattr(common, "_UNREAD", {})
        monkeypatch.setattr(counters, "_KEPT", {})
        monkeypatch.setattr(pa, "run", lambda kernel, args, constexprs, interpret: (
            self.launches.append((kernel, list(args), dict(constexprs)))
        ))  # fmt: skip
        # No kernel runs, so none reports a launch to a call plan: every call in full.
        monkeypatch.setattr(call_plans, "ENABLED", False)

    def copy(self, host):
        self.copies.append((FakeDeviceTensor(np.shape(host), "f32"), host))
        return self.copies[-1][0]

    def empty(self, like, shape, dtype):
        self.outputs.append(FakeDeviceTensor(shape, dtype.name))
        return self.outputs[-1]


def device_call(kv, zeros, scales="number"):
    """The tensors of a GPU call (batch 2, 4 query heads on 2 KV heads, D 64) and its
    keyword arguments."""
    blocks, bs, heads, kv_heads, d = 6, 16, 4, 2, 64
    tensors = [
        FakeDeviceTensor((2, heads, d), "f16"),
        FakeDeviceTensor((blocks, bs, kv_heads, d), kv),
        FakeDeviceTensor((blocks, bs, kv_heads, d), kv),
        FakeDeviceTensor((2, 3), "i32"),
        FakeDeviceTensor((2,), "i32"),
    ]
    kwargs = {}
    if kv == "f8e4m3":
        size = {"number": 0, "per head": kv_heads, "one": 1}[scales]
        k_scale, v_scale = (FakeDeviceTensor((size,), "f32") for _ in "kv")
        kwargs = dict(k_scale=k_scale, v_scale=v_scale) if size else dict(k_scale=0.5, v_scale=2)
    if kv == "u8":
        params = ["k_scale", "v_scale"] + (["k_zero", "v_zero"] if zeros else [])
        kwargs = {name: FakeDeviceTensor((blocks, bs, kv_heads), "f32") for name in params}
    return tensors, kwargs


@pytest.mark.parametrize(
    "kv, zeros, scales",
    [
        ("f16", False, None),
        ("f8e4m3", False, "number"),
        ("f8e4m3", False, "per head"),
        ("f8e4m3", False, "one"),
        ("u8", True, None),
        ("u8", False, None),
    ],
)
def test_a_gpu_launch_copies_nothing_to_the_device_and_allocates_only_its_outputs(
    monkeypatch, kv, zeros, scales
):
    """CUDA-graph capture needs launches that copy nothing host-to-device and allocate
    nothing but their outputs (torch's allocator may, while capturing): absent scales and
    zero points, and f8 scales given as numbers, become constexpr flags and scalars; the
    slots the kernel does not read get tensors that exist already, and the one
    placeholder for them and the splits' counters (zeroed, left zeroed by the launch)
    are made, each by a copy of zeros, by the first call on a device only. One launch:
    the last split combines."""
    recorder = LaunchRecorder(monkeypatch)
    for call in range(2):
        tensors, kwargs = device_call(kv, zeros, scales)
        before = (len(recorder.outputs), len(recorder.copies))
        paged_decode_attention(*tensors, **kwargs, num_splits=2)
        made = len(recorder.outputs) - before[0]
        assert made == 4, made  # out, and the splits' acc, max and sum
        assert len(recorder.copies) - before[1] == (2 if call == 0 else 0)
        assert len(recorder.launches) == call + 1
        given = [*tensors, *kwargs.values(), *recorder.outputs]
        given += [copy for copy, _ in recorder.copies]
        for kernel, args, _ in recorder.launches[-1:]:
            for arg in args:
                while isinstance(arg, pa.gpu.ReshapedView):
                    arg = arg.base
                if isinstance(arg, (int, float)):
                    continue
                assert any(arg is g for g in given), (kernel.fn.__name__, arg)
    (counts,) = [host for _, host in recorder.copies if host.dtype == np.int32]
    assert counts.shape == (2, 2) and not counts.any()  # the splits' counters: (batch, KV heads)
    (unread,) = [host for _, host in recorder.copies if host.dtype != np.int32]
    assert unread.dtype == np.float32 and unread.shape == (1, 1)
    split = recorder.launches[-1][2]
    if kv == "u8":
        assert (split["K_ZEROS"], split["V_ZEROS"]) == (zeros, zeros)
    if kv == "f8e4m3":
        assert (split["K_HEAD"], split["V_HEAD"]) == ((scales != "number"),) * 2


def test_a_one_element_scale_tensor_serves_every_kv_head_as_its_number_does(monkeypatch):
    """A device f8 scale of one element reaches the kernel as [1, 1] (K_HEAD, V_HEAD read
    it at KV head hk % 1 = 0); the same split as the number folded into the scalars."""
    case = Case("f8", [1, 7, 100], group=4, kv_heads=2, bs=8, seed=17)
    launches = []
    real_run = pa.run
    monkeypatch.setattr(pa, "run", lambda *a: (launches.append(a), real_run(*a))[1])
    case.run(num_splits=2)
    kernel, args, constexprs, _ = launches[0]
    assert (constexprs["K_HEAD"], constexprs["V_HEAD"]) == (False, False)
    by_number = [a.copy() for a in args[9:12]]
    ks, vs = (np.full((1, 1), case.kwargs[f"{n}_scale"], np.float32) for n in "kv")
    tensor_args = [*args[:3], ks, ks, vs, vs, *args[7:9], *(np.empty_like(a) for a in by_number)]
    tensor_args += [np.zeros_like(args[12]), np.empty_like(args[13])]  # counters, out
    tensor_args += [np.float32(case.q.shape[2] ** -0.5), 1.0, args[16]]
    kernel(*tensor_args, **{**constexprs, "K_HEAD": True, "V_HEAD": True})
    for got, want in zip(tensor_args[9:12], by_number, strict=True):
        assert np.array_equal(got, want)


def test_device_f8_scales_of_two_sizes_are_refused_before_the_launch(monkeypatch):
    """The kernel binds one shape for both scale tensors; one element beside one per KV
    head would need a broadcast copy, which a launch does not make."""
    recorder = LaunchRecorder(monkeypatch)
    tensors, _ = device_call("f8e4m3", False)
    per_head, one = FakeDeviceTensor((2,), "f32"), FakeDeviceTensor((1,), "f32")
    with pytest.raises(ValueError, match=r"k_scale and v_scale must both hold one scale or"):
        paged_decode_attention(*tensors, k_scale=per_head, v_scale=one)
    assert recorder.launches == [] and recorder.copies == []
