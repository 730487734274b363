"""`tilelang.kernels.write_paged_cache` (vLLM's reshape_and_cache_flash): every slot gets
its token, written as a numpy oracle of the module's formulas computes it (copies, f8
codes of x / scale, u8/u4 asymmetric min/max codes with their scales and zero points),
bit for bit, and every other element of the caches and parameter arrays keeps its
sentinel; the round trip through `paged_decode_attention` matches float64 attention
over the original keys within the bound the quantization error gives; the interpreter
writes the CPU backend's bits; sm_80/sm_90a builds spill nothing; bad input is named;
the torch operator mutates the caches in place and passes opcheck."""

import ml_dtypes
import numpy as np
import pytest

from tilelang import dtypes
from tilelang.dtypes import PackedArray, pack_codes
from tilelang.kernels import paged_cache as pc
from tilelang.kernels import paged_decode_attention, write_paged_cache

NUM_BLOCKS, BLOCK_SIZE = 6, 8
F8 = {"f8e4m3": ml_dtypes.float8_e4m3fn, "f8e5m2": ml_dtypes.float8_e5m2}
SENTINEL = {"f16": -77.0, "bf16": -77.0, "f8e4m3": -3.0, "f8e5m2": -3.0, "u8": 0xAB, "u4": 0xA}


# --------------------------------------------------------------------------- oracle


def asymmetric(x: np.ndarray, bits: int):
    """Codes, scales, zero points of rows x [..., D] (f32) by the documented formulas,
    in f32: s = (max − min) / (2^bits − 1) (|min|, or 1 at min = 0, where that is 0),
    z = rint(−min / s), codes = clip(rint(x / s) + z, 0, 2^bits − 1); rint: ties to even."""
    x = x.astype(np.float32)
    lo, hi = x.min(axis=-1), x.max(axis=-1)
    s = (hi - lo) / np.float32((1 << bits) - 1)
    s = np.where(s > 0, s, np.where(lo != 0, np.abs(lo), np.float32(1))).astype(np.float32)
    z = np.rint(-lo / s).astype(np.float32)
    codes = np.clip(np.rint(x / s[..., None]) + z[..., None], 0, (1 << bits) - 1)
    return codes.astype(np.uint8), s, z


def store_type(kind: str):
    return {"f16": np.float16, "bf16": ml_dtypes.bfloat16, **F8}.get(kind, np.uint8)


class Write:
    """One call's inputs (caches and parameter arrays filled with sentinels) and the
    caches, scales and zero points the oracle expects after it."""

    def __init__(
        self, kind, slots, kv_heads=2, d=16, key_type="f16", scales=None, seed=0, shift=0.0
    ):
        rng = np.random.default_rng(seed)
        self.kind, self.slots = kind, slots
        tokens = len(slots)
        key = rng.standard_normal((tokens, kv_heads, d)) + shift
        self.key = key.astype(store_type(key_type))
        self.value = (rng.standard_normal((tokens, kv_heads, d)) * 2).astype(self.key.dtype)
        shape = (NUM_BLOCKS, BLOCK_SIZE, kv_heads, d)
        self.codes = {n: np.full(shape, SENTINEL[kind], store_type(kind)) for n in "kv"}
        self.params = {}
        if kind in F8:
            self.params = dict(k_scale=scales[0], v_scale=scales[1])
        elif kind in ("u8", "u4"):
            for name in ("k_scale", "v_scale", "k_zero", "v_zero"):
                self.params[name] = np.full(shape[:3], 555.0, np.float32)
        self.expected = {n: a.copy() for n, a in self.codes.items()}
        self.expected_params = {n: np.copy(a) for n, a in self.params.items()}
        for i, slot in enumerate(slots):
            if slot >= 0:
                self.expect(i, slot)

    def expect(self, i, slot):
        page, row = divmod(slot, BLOCK_SIZE)
        for n, x in (("k", self.key[i]), ("v", self.value[i])):
            x32 = x.astype(np.float32)
            if self.kind in F8:
                s = np.broadcast_to(np.float32(self.params[f"{n}_scale"]), x.shape[:1])
                self.expected[n][page, row] = (x32 / s[:, None]).astype(F8[self.kind])
            elif self.kind in ("u8", "u4"):
                codes, s, z = asymmetric(x32, 8 if self.kind == "u8" else 4)
                self.expected[n][page, row] = codes
                self.expected_params[f"{n}_scale"][page, row] = s
                self.expected_params[f"{n}_zero"][page, row] = z
            else:
                self.expected[n][page, row] = x

    def caches(self):
        """The caches as the call takes them (u4: PackedArrays over fresh bytes)."""
        if self.kind == "u4":
            return [pack_codes(self.codes[n], "u4") for n in "kv"]
        return [self.codes[n] for n in "kv"]

    def run(self, slot_type=np.int32, **options):
        caches = self.caches()
        slots = np.array(self.slots, slot_type)
        write_paged_cache(self.key, self.value, *caches, slots, **self.params, **options)
        return [c.codes() if isinstance(c, PackedArray) else c for c in caches]

    def check(self, written):
        for n, got in zip("kv", written, strict=True):
            np.testing.assert_array_equal(got.view(np.uint8), self.expected[n].view(np.uint8))
        for name, got in self.params.items():
            if isinstance(got, np.ndarray):
                np.testing.assert_array_equal(got, self.expected_params[name], err_msg=name)


SLOTS = [3, -1, 17, 8, 47, -5, 0, 26]  # pages 0, 2, 1, 5, 0, 3; two padding tokens

KINDS = [
    ("f16", None),
    ("bf16", None),
    ("f8e4m3", (0.02, 0.05)),  # per tensor: codes up to |x| / 0.02, below 448
    ("f8e5m2", (np.array([0.5, 0.25], np.float32), np.array([1.5, 0.125], np.float32))),
    ("u8", None),
    ("u4", None),
]


@pytest.mark.parametrize("kind, scales", KINDS)
def test_each_slot_gets_its_token_and_every_other_element_keeps_its_sentinel(kind, scales):
    case = Write(kind, SLOTS, key_type="bf16" if kind == "bf16" else "f16", scales=scales)
    case.check(case.run())


@pytest.mark.parametrize("kind", ["u8", "f8e4m3", "f16"])
def test_int64_slots_a_head_dim_padded_and_three_heads_write_the_same(kind):
    """D = 20 pads to 32 (the padding joins neither min nor max: the keys, all above 2,
    would otherwise get a minimum of 0), 3 heads to 4; vLLM's int64 slot_mapping."""
    case = Write(kind, SLOTS[:5], kv_heads=3, d=20, scales=(0.5, 0.25), shift=6.0)
    assert case.key.min() > 2
    case.check(case.run(np.int64))


def test_f8_codes_saturate_instead_of_overflowing_to_nan():
    case = Write("f8e4m3", [5], scales=(1e-3, 1.0))  # |x| / 1e-3 up to ~2000, past 448
    (k, _) = case.run()
    row, x = k[0, 5].astype(np.float32), case.key[0].astype(np.float32) / np.float32(1e-3)
    over = np.abs(x) > 464  # past the midpoint of 448 and the next binade's step
    assert over.sum() >= 4 and not np.isnan(row).any()
    np.testing.assert_array_equal(row[over], np.sign(x[over]) * 448.0)
    # below: the oracle's codes (ml_dtypes' cast, which gives NaN past 448, is not asked there)
    expected = case.expected["k"][0, 5].astype(np.float32)
    np.testing.assert_array_equal(row[~over], expected[~over])


def test_f8_codes_are_of_the_quotient_x_over_s_not_of_x_times_1_over_s():
    """x = 0.004395 (f16), s = 0.3: x / s and x · (1/s) round to different e4m3 codes."""
    case = Write("f8e4m3", [2], scales=(0.3, 0.3))
    case.key[0, 0, :4] = np.float16(0.004395)
    case.expected["k"][0, 2] = (case.key[0].astype(np.float32) / np.float32(0.3)).astype(
        F8["f8e4m3"]
    )
    (k, v) = case.run()
    x = np.float16(0.004395).astype(np.float32)
    times = (x * (np.float32(1) / np.float32(0.3))).astype(F8["f8e4m3"])
    assert k[0, 2, 0, 0] != times  # the case tells the two apart
    case.check([k, v])


@pytest.mark.parametrize("kind", ["u8", "u4"])
@pytest.mark.parametrize("level", [0.0, 2.5, -0.375])
def test_an_all_equal_row_is_read_back_exactly_with_no_division_by_zero(kind, level):
    case = Write(kind, [9, 30])
    case.key[:] = level
    case.value[0] = level
    written = case.run()
    for n, cache in zip("kv", written, strict=True):
        s = case.params[f"{n}_scale"][1, 1]  # slot 9
        z = case.params[f"{n}_zero"][1, 1]
        assert np.isfinite(s).all() and (s > 0).all() and np.isfinite(z).all()
        deq = (cache[1, 1].astype(np.float64) - z[:, None]) * s[:, None]
        np.testing.assert_array_equal(deq, level)


@pytest.mark.parametrize("kind, scales", [("u8", None), ("f8e5m2", (0.5, 0.25))])
def test_the_interpreter_writes_the_cpu_backends_bits(kind, scales):
    compiled = Write(kind, SLOTS[:4], d=8, scales=scales)
    interpreted = Write(kind, SLOTS[:4], d=8, scales=scales)
    got = compiled.run()
    again = interpreted.run(interpret=True)
    for a, b in zip(got, again, strict=True):
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
    for name in compiled.params:
        np.testing.assert_array_equal(compiled.params[name], interpreted.params[name])
    interpreted.check(again)


# --------------------------------------------------------------------------- round trip


def attention(q, keys, values, scale):
    """float64 softmax(scale · q·Kᵀ)·V of one head over its tokens."""
    s = scale * (keys @ q)
    p = np.exp(s - s.max())
    return (p / p.sum()) @ values


def element_error(kind, rows, scale=None):
    """The largest |read back − x| over rows [..., D] (f32) the quantization allows:
    copies 0; f8 with mantissa m and smallest subnormal 2^e: half an ulp, 2^-(m+1)·|x|,
    or 2^(e−1)·s below the normals (no saturation in these cases); u8/u4: s/2 from the
    rounding, s more where the clamp cut a code (round(max/s) + round(−min/s) can be
    L + 1), 3s/2 with s = (max − min) / L, plus f32 rounding of x / s."""
    x = np.abs(rows.astype(np.float64))
    if kind in ("f16", "bf16"):
        return 0.0
    if kind in F8:
        m, e = (3, -9) if kind == "f8e4m3" else (2, -16)
        s = np.max(scale)
        return float(2.0 ** -(m + 1) * x.max() + 2.0 ** (e - 1) * s)
    span = rows.max(axis=-1).astype(np.float64) - rows.min(axis=-1)
    s = span.max() / ((1 << (8 if kind == "u8" else 4)) - 1)
    return float(1.5 * s + 2.0**-20 * x.max())


@pytest.mark.parametrize("kind, scales", KINDS[:1] + KINDS[2:])
def test_decoding_the_written_cache_matches_attention_over_the_original_keys(kind, scales):
    """Two sequences of 5 and 21 tokens (vLLM's flattened batch, padding tokens between)
    written, then decoded. With K read back within e_k and V within e_v of the
    originals, a score moves by at most δ = scale · Σ|q| · e_k, each softmax weight by
    a factor within e^(±2δ) (Σ|p' − p| ≤ e^(2δ) − 1), so |o' − o| ≤ (e^(2δ) − 1) ·
    max_t |V_t − o| + e_v, plus decode's own rounding (3 roundings of q's f16 relative
    to max |V|, its tolerance in test_paged_attention). Sequence b's values are offset
    by 8b, so a cache read from the other sequence's slots misses the bound."""
    rng = np.random.default_rng(1)
    lens, pages = [5, 21], np.array([[4, 0, 0], [2, 5, 1]], np.int32)
    slots = []
    for b, n in enumerate(lens):
        t = np.arange(n)
        slots += (pages[b, t // BLOCK_SIZE] * BLOCK_SIZE + t % BLOCK_SIZE).tolist() + [-1]
    case = Write(kind, slots, kv_heads=2, d=16, scales=scales, seed=2)
    offset = np.repeat([0.0, 8.0, 0.0], [6, 21, 1])[:, None, None]  # the padding tokens too
    case.value[:] = (case.value.astype(np.float64) + offset).astype(np.float16)
    if kind in F8:
        scales = (scales[0], 0.125)  # V's rows hold up to ~17: 0.125 keeps them below 448
        case.params["v_scale"] = 0.125
    caches = case.caches()
    write_paged_cache(case.key, case.value, *caches, np.array(slots, np.int32), **case.params)
    q = (rng.standard_normal((2, 4, 16)) * 0.1).astype(np.float16)
    lengths = np.array(lens, np.int32)
    got = paged_decode_attention(q, *caches, pages, lengths, **case.params).astype(np.float64)
    swapped = paged_decode_attention(
        q, *caches, pages[::-1].copy(), lengths[::-1].copy(), **case.params
    )
    e_k = element_error(kind, case.key.astype(np.float32), scales and scales[0])
    e_v = element_error(kind, case.value.astype(np.float32), scales and scales[1])
    start = 0
    for b, n in enumerate(lens):
        keys = case.key[start : start + n].astype(np.float64)
        values = case.value[start : start + n].astype(np.float64)
        start += n + 1
        for h in range(4):
            qh = q[b, h].astype(np.float64)
            o = attention(qh, keys[:, h // 2], values[:, h // 2], 0.25)
            delta = 0.25 * np.abs(qh).sum() * e_k
            spread = np.abs(values[:, h // 2] - o).max()
            bound = np.expm1(2 * delta) * spread + e_v + 3 * 2.0**-11 * (np.abs(values).max() + e_v)
            err = np.abs(got[b, h] - o).max()
            assert err <= bound, (b, h, err, bound)
            assert np.abs(swapped[b, h].astype(np.float64) - o).max() > bound


# --------------------------------------------------------------------------- CUDA builds


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
@pytest.mark.parametrize(
    "kind, head", [("f16", False), ("f8e4m3", True), ("f8e5m2", False), ("u8", False)]
)
def test_the_kernel_compiles_with_no_spills(arch, kind, head):
    """Every head dimension gives a thread the same TILE_ELEMENTS / 128 elements of a
    tile (BH · HD = TILE_ELEMENTS), so D = 128 stands for them; u8 also at D = 256."""
    mode = {"f16": pc.PLAIN, "u8": pc.TOKEN_SCALED}.get(kind, pc.HEAD_SCALED)
    for hd in (128, 256) if kind == "u8" else (128,):
        build = pc.cache_write_kernel.compile(
            target=arch, T=dtypes.bf16, CT=dtypes.dtype(kind), IT=dtypes.i64, MODE=mode,
            K_HEAD=head, V_HEAD=head, BH=pc.TILE_ELEMENTS // hd, HD=hd,
        )  # fmt: skip
        r = build.resources
        assert (r.spill_store_bytes, r.spill_load_bytes) == (0, 0), (hd, r)


# --------------------------------------------------------------------------- bad input


def bad(**changes):
    case = Write("u8", [1, 2])
    args = dict(
        key=case.key, value=case.value, k_cache=case.codes["k"], v_cache=case.codes["v"],
        slot_mapping=np.array([1, 2], np.int32), **case.params,
    )  # fmt: skip
    args.update(changes)
    return args


def test_bad_input_is_named_before_any_launch():
    u8 = np.zeros((NUM_BLOCKS, BLOCK_SIZE, 2, 16), np.uint8)
    cases = [
        (dict(slot_mapping=np.array([1, 48], np.int32)), ValueError, r"slot_mapping\[1\] = 48 is past the cache.*0\.\.47"),
        (dict(slot_mapping=np.array([7, 7], np.int64)), ValueError, r"tokens 0 and 1 to slot 7"),
        (dict(slot_mapping=np.array([1, 2], np.int16)), TypeError, r"slot_mapping must hold one of i32, i64, got int16"),
        (dict(k_zero=None), ValueError, r"k_zero is written with a u8/u4 cache.*\[6, 8, 2\], got None"),
        (dict(v_scale=np.zeros((6, 8, 2))), TypeError, r"v_scale must hold one of f32, got float64"),
        (dict(k_scale="fp8"), TypeError, r"no kv_cache_dtype"),
        (dict(v_cache=u8[:, :, :1]), ValueError, r"v_cache must be k_cache's shape"),
        (dict(key=np.zeros((2, 2, 16), np.float32)), TypeError, r"key must hold one of f16, bf16"),
        (dict(value=np.zeros((3, 2, 16), np.float16)), ValueError, r"value must have shape \[2, 2, 16\]"),
        (dict(k_cache=u8[:, :, :, ::2].copy(), v_cache=u8[:, :, :, ::2].copy()), ValueError, r"k_cache is uint8 \[\.\.\., 8\].*pack"),
        (dict(k_cache=np.zeros((6, 8, 3, 16), np.uint8), v_cache=np.zeros((6, 8, 3, 16), np.uint8)), ValueError, r"k_cache's heads must be key's, H_kv = 2"),
        (dict(k_zero=np.zeros((6, 8, 4), np.float32)[:, :, ::2]), ValueError, r"k_zero is written in place and must be C-contiguous"),
    ]  # fmt: skip
    for changes, error, message in cases:
        with pytest.raises(error, match=message):
            write_paged_cache(**bad(**changes))
    f16 = Write("f16", [1])
    with pytest.raises(TypeError, match=r"k_cache must hold key's dtype \(bf16\)"):
        write_paged_cache(
            f16.key.astype(ml_dtypes.bfloat16),
            f16.value.astype(ml_dtypes.bfloat16),
            *f16.caches(),
            np.array([1], np.int32),
        )
    with pytest.raises(ValueError, match=r"k_scale must be 1 or absent"):
        f16.run(k_scale=0.5)
    f8 = Write("f8e4m3", [1], scales=(0.5, 0.5))
    with pytest.raises(ValueError, match=r"k_zero is for u8/u4 caches only"):
        f8.run(k_zero=np.zeros((6, 8, 2), np.float32))
    f8.params = {}
    with pytest.raises(ValueError, match=r"k_scale is needed with an f8e4m3 cache"):
        f8.run()


# --------------------------------------------------------------------------- torch


def test_the_torch_op_writes_in_place_like_the_library_and_passes_opcheck():
    import torch

    from tilelang.torch import paged_cache as tpc

    case = Write("u8", SLOTS)
    tensors = {n: torch.from_numpy(a) for n, a in case.params.items()}  # case.check's
    k, v = (torch.from_numpy(case.codes[n].copy()) for n in "kv")
    key, value = torch.from_numpy(case.key), torch.from_numpy(case.value)
    slots = torch.tensor(SLOTS, dtype=torch.int64)
    assert tpc.write_paged_cache(key, value, k, v, slots, **tensors) is None
    case.check([k.numpy(), v.numpy()])
    for name, t in tensors.items():
        np.testing.assert_array_equal(t.numpy(), case.expected_params[name], err_msg=name)
    args = (key, value, k, v, slots, tensors["k_scale"], tensors["v_scale"])
    torch.library.opcheck(tpc.write_paged_cache_op, (*args, tensors["k_zero"], tensors["v_zero"]))
    f8 = Write("f8e4m3", SLOTS, scales=(0.02, 0.05))
    k8, v8 = (
        torch.from_numpy(f8.codes[n].copy().view(np.uint8)).view(torch.float8_e4m3fn) for n in "kv"
    )
    key8, value8 = torch.from_numpy(f8.key), torch.from_numpy(f8.value)
    tpc.write_paged_cache(key8, value8, k8, v8, slots, 0.02, 0.05)
    f8.check([k8.view(torch.uint8).numpy(), v8.view(torch.uint8).numpy()])
