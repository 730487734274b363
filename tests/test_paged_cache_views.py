"""`write_paged_cache` into cache views whose pages are strided (issue 12): the K and V
halves of FlashInfer's combined cache [num_blocks, 2, block_size, H_kv, D] (kv[:, 0],
kv[:, 1], in either role), pages padded apart, vLLM's [2, num_blocks, ...] halves. Each
slot's rows are what a float64-free oracle written from the documented formulas gives
(copies, f8 codes of x / s, u8 asymmetric codes), every other element of the whole
sentinel-filled tensor keeps its sentinel, the interpreter writes the CPU backend's
bits, decode reads the views back as it reads contiguous copies, a device slot past
the cache writes nothing, and layouts the kernel cannot address are refused by name."""

import ml_dtypes
import numpy as np
import pytest

from tilelang.kernels import paged_cache as pc
from tilelang.kernels import paged_decode_attention, write_paged_cache

NB, BS, HK, D = 5, 8, 2, 16
SLOTS = np.array([3, -1, 17, 39, 8, 0], np.int32)  # pages 0, 2, 4, 1, 0; one padding token
F8 = ml_dtypes.float8_e4m3fn
SENTINEL = {"f16": -77.0, "bf16": -77.0, "f8e4m3": -3.0, "u8": 0xAB}
STORED = {"f16": np.float16, "bf16": ml_dtypes.bfloat16, "f8e4m3": F8, "u8": np.uint8}


def asymmetric(x: np.ndarray):
    """u8 codes, scales, zero points of rows x [H_kv, D] (f32) by the documented
    formulas: s = (max − min) / 255 (|min|, or 1, where that is 0), z = rint(−min / s),
    code = clip(rint(x / s) + z, 0, 255), rint ties to even, all in f32."""
    lo, hi = x.min(axis=-1), x.max(axis=-1)
    s = (hi - lo) / np.float32(255)
    s = np.where(s > 0, s, np.where(lo != 0, np.abs(lo), np.float32(1))).astype(np.float32)
    z = np.rint(-lo / s).astype(np.float32)
    return np.clip(np.rint(x / s[:, None]) + z[:, None], 0, 255).astype(np.uint8), s, z


class Case:
    """A step's keys and values, and the parameters a cache of `kind` takes."""

    def __init__(self, kind: str, seed: int = 0):
        rng = np.random.default_rng(seed)
        key_type = ml_dtypes.bfloat16 if kind == "bf16" else np.float16
        self.kind = kind
        self.key = rng.standard_normal((len(SLOTS), HK, D)).astype(key_type)
        self.value = (rng.standard_normal((len(SLOTS), HK, D)) * 2).astype(key_type)
        self.params = {}
        if kind == "f8e4m3":
            self.params = dict(k_scale=np.array([0.5, 0.25], np.float32), v_scale=0.125)
        elif kind == "u8":
            for name in ("k_scale", "v_scale", "k_zero", "v_zero"):
                self.params[name] = np.full((NB, BS, HK), 555.0, np.float32)

    def codes(self, x: np.ndarray, name: str, i: int, page: int, row: int) -> np.ndarray:
        """Token i's rows of x as the cache stores them (u8: its parameters expected too)."""
        x32 = x.astype(np.float32)
        if self.kind == "f8e4m3":
            s = np.broadcast_to(np.float32(self.params[f"{name}_scale"]), (HK,))
            return (x32 / s[:, None]).astype(F8)
        if self.kind == "u8":
            codes, s, z = asymmetric(x32)
            self.expected_params[f"{name}_scale"][page, row] = s
            self.expected_params[f"{name}_zero"][page, row] = z
            return codes
        return x

    def expect(self, storage: np.ndarray, where) -> np.ndarray:
        """storage after the write: `where(name, page)` is the [block_size, H_kv, D] page of
        cache `name` ("k" or "v") inside storage, or None where that cache lies elsewhere."""
        self.expected_params = {n: np.copy(a) for n, a in self.params.items()}
        expected = storage.copy()
        for i, slot in enumerate(SLOTS):
            if slot < 0:
                continue
            page, row = divmod(int(slot), BS)
            for name, x in (("k", self.key[i]), ("v", self.value[i])):
                page_view = where(expected, name, page)
                if page_view is not None:
                    page_view[row] = self.codes(x, name, i, page, row)
        return expected

    def write(self, k_cache, v_cache, slots=SLOTS, **options):
        write_paged_cache(self.key, self.value, k_cache, v_cache, slots, **self.params, **options)

    def check(self, got: np.ndarray, expected: np.ndarray) -> None:
        np.testing.assert_array_equal(got.view(np.uint8), expected.view(np.uint8))
        for name, value in self.params.items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(value, self.expected_params[name], err_msg=name)


def combined(kind: str, shape=(NB, 2, BS, HK, D)) -> np.ndarray:
    return np.full(shape, SENTINEL[kind], STORED[kind])


@pytest.mark.parametrize("kind", ["f16", "bf16", "f8e4m3", "u8"])
@pytest.mark.parametrize("swapped", [False, True], ids=["k_first", "v_first"])
def test_a_combined_cache_gets_each_slot_and_nothing_else(kind, swapped):
    """FlashInfer's kv [num_blocks, 2, block_size, H_kv, D]: k_cache = kv[:, 0] and
    v_cache = kv[:, 1] (or the other way round): each slot's K and V rows land in their
    halves of its page, every other element of kv (the other half included) keeps its
    sentinel."""
    case = Case(kind)
    kv = combined(kind)
    k_half, v_half = (1, 0) if swapped else (0, 1)
    expected = case.expect(kv, lambda a, n, page: a[page, k_half if n == "k" else v_half])
    case.write(kv[:, k_half], kv[:, v_half])
    case.check(kv, expected)


@pytest.mark.parametrize("kind", ["f16", "u8"])
def test_the_interpreter_writes_the_cpu_backends_bits_into_a_combined_cache(kind):
    compiled, interpreted = Case(kind, seed=3), Case(kind, seed=3)
    a, b = combined(kind), combined(kind)
    expected = compiled.expect(a, lambda x, n, page: x[page, "kv".index(n)])
    interpreted.expect(b, lambda x, n, page: x[page, "kv".index(n)])
    compiled.write(a[:, 0], a[:, 1])
    interpreted.write(b[:, 0], b[:, 1], interpret=True)
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
    compiled.check(a, expected)
    interpreted.check(b, expected)


def test_pages_padded_apart_and_separate_halves_are_written_where_they_lie():
    """Pages three page-sizes apart (k at [:, 0], v at [:, 2], [:, 1] a gap no write may
    touch), vLLM's [2, num_blocks, ...] halves (each contiguous), and a strided K beside a
    separate contiguous V."""
    case = Case("f16")
    padded = combined("f16", (NB, 3, BS, HK, D))
    expected = case.expect(padded, lambda a, n, page: a[page, 0 if n == "k" else 2])
    case.write(padded[:, 0], padded[:, 2])
    case.check(padded, expected)

    halves = combined("f16", (2, NB, BS, HK, D))
    expected = case.expect(halves, lambda a, n, page: a["kv".index(n), page])
    case.write(halves[0], halves[1])
    case.check(halves, expected)

    strided, separate = combined("f16"), np.full((NB, BS, HK, D), -5.0, np.float16)
    want_k = case.expect(strided, lambda a, n, page: a[page, 0] if n == "k" else None)
    want_v = case.expect(separate, lambda a, n, page: a[page] if n == "v" else None)
    case.write(strided[:, 0], separate)
    case.check(strided, want_k)  # [:, 1] included: no write of V strays into it
    case.check(separate, want_v)


def test_decode_reads_the_written_views_as_it_reads_contiguous_copies():
    case = Case("bf16", seed=5)
    kv = combined("bf16")
    kv[:] = 0  # unwritten slots: finite, unread by the sequences below anyway
    case.write(kv[:, 0], kv[:, 1])
    q = np.random.default_rng(6).standard_normal((2, 4, D)).astype(ml_dtypes.bfloat16)
    table = np.array([[0, 2], [4, 1]], np.int32)  # pages SLOTS wrote (0: slots 0, 3, 8; ...)
    lengths = np.array([4, 8], np.int32)
    viewed = paged_decode_attention(q, kv[:, 0], kv[:, 1], table, lengths)
    copied = paged_decode_attention(
        q, np.ascontiguousarray(kv[:, 0]), np.ascontiguousarray(kv[:, 1]), table, lengths
    )
    np.testing.assert_array_equal(viewed.view(np.uint16), copied.view(np.uint16))
    assert np.isfinite(viewed.astype(np.float32)).all()


def test_a_device_slot_past_the_cache_writes_nothing(monkeypatch):
    """The host cannot read device slots: with the host check off, as on the GPU, slot
    num_blocks · block_size (K's row would be past its span only because V's pages end
    it) writes nothing, and the other slots still land."""
    monkeypatch.setattr(pc, "_slots", lambda slots, *rest: pc.dtypes.i32)
    case = Case("f16")
    kv = combined("f16")
    slots = SLOTS.copy()
    slots[3] = NB * BS  # token 3's slot (39) is past the cache now
    want = kv.copy()
    for i, slot in enumerate(SLOTS):  # every token but 3, by hand
        if slot >= 0 and i != 3:
            want[slot // BS, :, slot % BS] = (case.key[i], case.value[i])
    case.write(kv[:, 0], kv[:, 1], slots=slots)
    np.testing.assert_array_equal(kv.view(np.uint16), want.view(np.uint16))


def test_the_torch_op_writes_a_combined_cache_in_place():
    import torch

    from tilelang.torch import paged_cache as tpc

    case = Case("f16", seed=7)
    kv = combined("f16")
    expected = case.expect(kv, lambda a, n, page: a[page, "kv".index(n)])
    tensor = torch.from_numpy(kv.copy())
    key, value = torch.from_numpy(case.key), torch.from_numpy(case.value)
    tpc.write_paged_cache(key, value, tensor[:, 0], tensor[:, 1], torch.from_numpy(SLOTS))
    case.check(tensor.numpy(), expected)


def strided(base: np.ndarray, first_row: int, page_rows: int, blocks: int = NB) -> np.ndarray:
    """A [blocks, BS, HK, D] view of rows [.., HK, D] of base from first_row on, pages
    page_rows rows apart."""
    row = HK * D * base.itemsize
    return np.lib.stride_tricks.as_strided(
        base[first_row:], (blocks, BS, HK, D), (page_rows * row, HK * D * 2, D * 2, 2)
    )


def test_layouts_the_kernel_cannot_address_are_refused_by_name():
    case = Case("f16")
    rows = np.zeros((NB * 3 * BS, HK, D), np.float16)
    heads_first = np.zeros((NB, HK, BS, D), np.float16).transpose(0, 2, 1, 3)
    flat = np.zeros(NB * 2 * BS * HK * D + 64, np.float16)
    odd = np.lib.stride_tricks.as_strided(
        flat, (NB, BS, HK, D), ((2 * BS * HK * D + 1) * 2, HK * D * 2, D * 2, 2)
    )
    cases = [
        (heads_first, None, r"k_cache is written in place and each of its pages .* must be contiguous"),
        (odd, None, r"k_cache's pages must lie a whole number of rows .* got a page stride of 513"),
        (strided(rows, 0, BS // 2), None, r"pages must lie .* not overlap .* stride of 128 elements"),
        (strided(rows, 0, 2 * BS), strided(rows, BS // 2, 2 * BS), r"k_cache and v_cache share memory.*V 4 rows after K"),
        (strided(rows, 0, 2 * BS), strided(rows, BS, 3 * BS), r"page strides of 16 and 24 rows"),
    ]  # fmt: skip
    for k_cache, v_cache, message in cases:
        v_cache = np.zeros((NB, BS, HK, D), np.float16) if v_cache is None else v_cache
        with pytest.raises(ValueError, match=message):
            case.write(k_cache, v_cache)
    kv = combined("f16")
    kv.flags.writeable = False
    with pytest.raises(ValueError, match=r"k_cache is written in place and must be writeable"):
        case.write(kv[:, 0], kv[:, 1])


def test_u4_caches_side_by_side_in_one_buffer_are_apart_not_shared():
    """A u4 row is half as many bytes as codes: K and V PackedArrays cut from one
    buffer, V's bytes right after K's, do not overlap (their extent was once counted a
    byte a code, which made V start inside K and the call fail)."""
    from tilelang import PackedArray

    codes = NB * BS * HK * D // 2
    buffer = np.zeros(2 * codes, np.uint8)
    k_cache = PackedArray(buffer[:codes], "u4", (NB, BS, HK, D))
    v_cache = PackedArray(buffer[codes:], "u4", (NB, BS, HK, D))
    rng = np.random.default_rng(3)
    keys = rng.standard_normal((len(SLOTS), HK, D)).astype(np.float16)
    params = {
        n: np.zeros((NB, BS, HK), np.float32) for n in ("k_scale", "v_scale", "k_zero", "v_zero")
    }
    write_paged_cache(keys, -keys, k_cache, v_cache, SLOTS, **params)
    written = k_cache.codes().reshape(NB * BS, HK, D)
    page, row = SLOTS[0] // BS, SLOTS[0] % BS
    assert written[page * BS + row].any() and not written[1 * BS + 5].any()


@pytest.mark.parametrize("kind", ["f16", "u8"])
def test_decode_reads_a_combined_cache_through_spans_of_its_memory_not_copies(monkeypatch, kind):
    """paged_decode_attention on kv[:, 0] and kv[:, 1] hands the kernel the spans of the
    combined tensor's own memory (pages 2 · block_size rows apart), not whole-cache
    copies a reshape would make on every call, and decodes what contiguous copies of
    the halves decode, bit for bit. A u8 cache's per-token scales are dense, indexed by
    the cache's own row: its halves are still copied (the one layout left so)."""
    from tilelang.kernels import paged_attention as pa

    rng = np.random.default_rng(8)
    kv = rng.integers(0, 255, (NB, 2, BS, HK, D)).astype(np.uint8)
    if kind == "f16":
        kv = rng.standard_normal((NB, 2, BS, HK, D)).astype(np.float16)
    params = {}
    if kind == "u8":
        for name in ("k_scale", "v_scale", "k_zero", "v_zero"):
            params[name] = rng.uniform(0.01, 0.02, (NB, BS, HK)).astype(np.float32)
    q = rng.standard_normal((2, 4, D)).astype(np.float16)
    table = np.array([[0, 2], [4, 1]], np.int32)
    lengths = np.array([11, 16], np.int32)
    launches = []
    real_run = pa.run
    monkeypatch.setattr(pa, "run", lambda *a: (launches.append(a), real_run(*a))[1])
    viewed = paged_decode_attention(q, kv[:, 0], kv[:, 1], table, lengths, **params)
    _, args, constexprs, _ = launches[-1]
    spans = kind != "u8"
    assert constexprs["APART"] == spans and args[-1] == (2 * BS if spans else BS)
    for span in args[1:3]:
        assert span.flags.c_contiguous and np.shares_memory(span, kv) == spans
    halves = (np.ascontiguousarray(kv[:, 0]), np.ascontiguousarray(kv[:, 1]))
    copied = paged_decode_attention(q, *halves, table, lengths, **params)
    assert not launches[-1][2]["APART"]
    np.testing.assert_array_equal(viewed.view(np.uint16), copied.view(np.uint16))
