"""`tl.randint4x`, `tl.randint`, `tl.rand` and `tl.randn` are Philox-4x32-10 and the
documented conversions of its words (tilelang/lang/random.py): a Python Philox written
from the paper's description (Salmon et al., SC 2011) is checked against Random123's
published known-answer vectors, and kernels on the CPU backend and the interpreter give
its bits for every integer type of offsets and seed; `randn`, whose `tl.log` and
`tl.cos` are each backend's math library, is exact on the interpreter and within a few
ulps compiled. Then: the statistics of 2^16 draws, a dropout kernel against numpy, GPU
builds without spills, and bad arguments reported at the user's line."""

import numpy as np
import pytest
from conftest import assert_bitwise, assert_reported

import tilelang as tl

# -- an independent Philox-4x32-10 ---------------------------------------------------------

WORD = 2**32


def mulhi_mullo(a: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The 64-bit product of 32-bit words, split: a 32 x 32-bit product fits a uint64."""
    product = a * np.uint64(m)
    return product >> np.uint64(32), product & np.uint64(WORD - 1)


def philox4x32_10(counter, key) -> list[np.ndarray]:
    """The paper's Philox-4x32 with R = 10: each round is the S-box on the pairs (c0, c1)
    and (c2, c3) with multipliers M0 and M1 (the high half of the product xor the key word
    xor the other word, and the low half), followed by the P-box that swaps the two
    pairs' roles; the key is bumped by the Weyl constants between rounds."""
    c0, c1, c2, c3 = (np.asarray(w, np.uint64) for w in counter)
    k0, k1 = (int(k) for k in key)
    for round_ in range(10):
        if round_:
            k0, k1 = (k0 + 0x9E3779B9) % WORD, (k1 + 0xBB67AE85) % WORD
        hi0, lo0 = mulhi_mullo(c0, 0xD2511F53)
        hi1, lo1 = mulhi_mullo(c2, 0xCD9E8D57)
        c0, c1, c2, c3 = hi1 ^ c1 ^ np.uint64(k0), lo1, hi0 ^ c3 ^ np.uint64(k1), lo0
    return [w.astype(np.uint32) for w in (c0, c1, c2, c3)]


KNOWN_ANSWERS = [  # Random123's kat_vectors for philox4x32_10: counter, key, result
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((WORD - 1,) * 4, (WORD - 1,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (  # the digits of pi
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize("counter, key, result", KNOWN_ANSWERS)
def test_the_reference_gives_random123s_known_answers(counter, key, result):
    assert [int(w) for w in philox4x32_10(counter, key)] == list(result)


# -- the documented conversions, written from the module docstring -------------------------


def words_of(values, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(low, high): v mod 2^32 and, for a 64-bit type only, floor(v / 2^32) mod 2^32."""
    ints = [int(v) for v in np.ravel(values)]
    shape = np.shape(values)
    low = np.array([v % WORD for v in ints], np.uint64).reshape(shape)
    high = np.array([(v // WORD) % WORD if bits == 64 else 0 for v in ints], np.uint64)
    return low, high.reshape(shape)


def reference(seed: int, seed_bits: int, offsets: np.ndarray, offset_bits: int):
    """randint4x's four words, rand and randn, each f32 operation rounded once (numpy's
    float64 log and cos rounded to f32 are the correctly rounded ones)."""
    key = [int(w[0]) for w in words_of(np.array([seed], object), seed_bits)]
    low, high = words_of(offsets, offset_bits)
    zero = np.zeros_like(low)
    x = philox4x32_10((low, high, zero, zero), key)
    f32 = np.float32
    u = (x[0] >> 8).astype(f32) * f32(2.0**-24)
    u1 = (x[0] >> 9).astype(f32) * f32(2.0**-23) + f32(2.0**-24)
    u2 = (x[1] >> 8).astype(f32) * f32(2.0**-24)
    log = np.log(u1.astype(np.float64)).astype(f32)
    radius = np.sqrt(log * f32(-2.0))
    angle = u2 * f32(2 * np.pi)
    z = radius * np.cos(angle.astype(np.float64)).astype(f32)
    return x, u, z


def ulps_apart(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many f32 steps apart a and b are (their bit patterns in numeric order, -0 and
    +0 at the same place)."""

    def ordered(v: np.ndarray) -> np.ndarray:
        magnitude = (v.view(np.int32) & 0x7FFFFFFF).astype(np.int64)
        return np.where(np.signbit(v), -magnitude, magnitude)

    return np.abs(ordered(a) - ordered(b))


# -- kernels against the reference ---------------------------------------------------------


def both(kernel, *args, **constexprs):
    """(compiled, interpreted): the kernel's outputs from each path, each on fresh copies
    of the arrays among `args` (scalars passed as they are)."""
    fresh = lambda: [a.copy() if isinstance(a, np.ndarray) else a for a in args]  # noqa: E731
    return kernel(*fresh(), **constexprs), kernel.interpret(*fresh(), **constexprs)


@tl.kernel(warps=4)
def draws(
    offsets: tl.Tensor["T", "M", "N"],
    w0: tl.Tensor[tl.u32, "M", "N"],
    w1: tl.Tensor[tl.u32, "M", "N"],
    w2: tl.Tensor[tl.u32, "M", "N"],
    w3: tl.Tensor[tl.u32, "M", "N"],
    first: tl.Tensor[tl.u32, "M", "N"],
    u: tl.Tensor[tl.f32, "M", "N"],
    z: tl.Tensor[tl.f32, "M", "N"],
    seed: tl.i64,
    T: tl.constexpr,
    BM: tl.constexpr = 4,
    BN: tl.constexpr = 64,
):
    """Every generator function of the [BM, BN] tile of offsets."""
    o = tl.load(offsets, [0, 0], [BM, BN])
    x0, x1, x2, x3 = tl.randint4x(seed, o)
    tl.store(w0, [0, 0], x0)
    tl.store(w1, [0, 0], x1)
    tl.store(w2, [0, 0], x2)
    tl.store(w3, [0, 0], x3)
    tl.store(first, [0, 0], tl.randint(seed, o))
    tl.store(u, [0, 0], tl.rand(seed, o))
    tl.store(z, [0, 0], tl.randn(seed, o))


def _offsets(dtype, seed: int) -> np.ndarray:
    """[4, 64] offsets of `dtype`: its extremes, 0, and values drawn over its range."""
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    values = rng.integers(info.min, info.max, (4, 64), dtype=dtype, endpoint=True)
    values.flat[:4] = [0, info.min, info.max, 1]
    if info.bits == 64:
        values.flat[4:7] = [2**32, 2**32 - 1, 2**40 + 7]
    if info.min < 0:
        values.flat[7] = -1
    return values


CASES = [  # offsets dtype, seed (a runtime i64)
    (np.int32, 0),
    (np.int32, 0x123456789A),
    (np.uint32, -3),
    (np.int64, 2**63 - 1),
    (np.uint64, -(2**63)),
    (np.int8, 7),
    (np.uint16, 1),
]


@pytest.mark.parametrize("dtype, seed", CASES)
def test_every_generator_gives_the_reference_bits_on_both_paths(dtype, seed):
    offsets = _offsets(dtype, seed=abs(seed) % 1000)
    outputs = [np.zeros((4, 64), np.uint32) for _ in range(5)]
    outputs += [np.zeros((4, 64), np.float32) for _ in range(2)]
    T = tl.dtype(np.dtype(dtype).name)
    compiled, interpreted = both(draws, offsets, *outputs, seed, T=T)
    assert_bitwise(compiled[:6], interpreted[:6])  # randint4x, randint and rand
    words, u, z = reference(seed, 64, offsets, np.iinfo(dtype).bits)
    for got, want in zip(interpreted[:4], words, strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(interpreted[4], words[0])
    np.testing.assert_array_equal(interpreted[5], u)
    np.testing.assert_array_equal(interpreted[6], z)  # correctly rounded log and cos
    assert ulps_apart(compiled[6], z).max() <= 4  # the C library's logf and cosf


def test_seed_0_at_offset_0_is_random123s_zero_vector():
    """The counter (0, 0, 0, 0) under the key (0, 0): a known answer through a kernel."""
    offsets = np.zeros((4, 64), np.int32)
    outputs = [np.zeros((4, 64), np.uint32) for _ in range(5)]
    outputs += [np.zeros((4, 64), np.float32) for _ in range(2)]
    got = draws(offsets, *outputs, 0, T=tl.i32)
    assert [int(w[0, 0]) for w in got[:4]] == list(KNOWN_ANSWERS[0][2])


@tl.kernel(warps=1)
def narrow_seeds(
    offsets: tl.Tensor[tl.i32, "N"],
    by_scalar: tl.Tensor[tl.u32, "N"],
    by_number: tl.Tensor[tl.u32, "N"],
    at_number: tl.Tensor[tl.f32, "N"],
    seed: tl.i32,
    SEED: tl.constexpr,
    OFFSET: tl.constexpr,
):
    """A runtime i32 seed, a Python int seed and a Python int offset (all compile-time
    words: the result is a scalar)."""
    o = tl.load(offsets, [0], [32])
    tl.store(by_scalar, [0], tl.randint(seed, o))
    tl.store(by_number, [0], tl.randint(SEED, o))
    tl.store(at_number, [0], tl.full([32], tl.rand(SEED, OFFSET), tl.f32))


@pytest.mark.parametrize("seed, number, offset", [(-5, -5, 3), (9, 2**40 + 3, 2**33 + 1)])
def test_a_seed_of_32_bits_or_a_python_int_keys_as_documented(seed, number, offset):
    """i32 and Python ints that fit i32 take (v mod 2^32, 0); larger Python ints take
    both words of their 64-bit value."""
    offsets = np.arange(-16, 16, dtype=np.int32) * 1000003
    outputs = [np.zeros(32, np.uint32), np.zeros(32, np.uint32), np.zeros(32, np.float32)]
    compiled, interpreted = both(narrow_seeds, offsets, *outputs, seed, SEED=number, OFFSET=offset)
    assert_bitwise(compiled, interpreted)
    number_bits = 32 if -(2**31) <= number < 2**31 else 64
    offset_bits = 32 if -(2**31) <= offset < 2**31 else 64
    np.testing.assert_array_equal(compiled[0], reference(seed, 32, offsets, 32)[0][0])
    np.testing.assert_array_equal(compiled[1], reference(number, number_bits, offsets, 32)[0][0])
    at = reference(number, number_bits, np.array([offset], object), offset_bits)[1]
    np.testing.assert_array_equal(compiled[2], np.full(32, at[0], np.float32))


@tl.kernel(warps=1)
def per_block(words: tl.Tensor[tl.u32, "N", 4], seed: tl.u64):
    """Scalar offsets (each block's index, widened to i64): the four words are scalars."""
    i = tl.blocks(N)
    x0, x1, x2, x3 = tl.randint4x(seed, i.to(tl.i64) - 2)
    row = [tl.full([1, 1], x0, tl.u32), tl.full([1, 1], x1, tl.u32)]
    row += [tl.full([1, 1], x2, tl.u32), tl.full([1, 1], x3, tl.u32)]
    tl.store(words, [i, 0], tl.concat(row, axis=1))


def test_scalar_offsets_give_scalars_of_the_same_stream():
    seed = 2**64 - 2
    compiled, interpreted = both(per_block, np.zeros((6, 4), np.uint32), seed)
    assert_bitwise(compiled, interpreted)
    words = reference(seed, 64, np.arange(6, dtype=np.int64) - 2, 64)[0]
    np.testing.assert_array_equal(compiled, np.stack(words, axis=1))


# -- statistics, dropout, GPU builds -------------------------------------------------------


@tl.kernel(warps=4)
def uniforms_and_normals(
    u: tl.Tensor[tl.f32, "N"], z: tl.Tensor[tl.f32, "N"], seed: tl.i32, BN: tl.constexpr = 1024
):
    """rand and randn at the offsets 0..N-1, BN per block."""
    b = tl.blocks(tl.cdiv(N, BN))
    offsets = b * BN + tl.arange(0, BN)
    tl.store(u, [b * BN], tl.rand(seed, offsets))
    tl.store(z, [b * BN], tl.randn(seed, offsets))


def test_2_to_the_16_draws_have_the_moments_of_their_distributions():
    """Bounds of 5 standard errors around the exact moments (the draws are fixed: the
    test is deterministic, and a generator that repeats or skews its words fails it)."""
    n = 1 << 16
    u, z = uniforms_and_normals(np.zeros(n, np.float32), np.zeros(n, np.float32), 2024)
    np.testing.assert_array_equal(u, reference(2024, 32, np.arange(n), 32)[1])
    assert u.min() >= 0 and u.max() < 1 and np.all(u * 2**24 == np.floor(u * 2**24))
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / n)
    assert abs(u.var() - 1 / 12) < 5 * np.sqrt((1 / 80 - 1 / 144) / n)
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 5 / np.sqrt(n)  # neighbours independent
    assert np.isfinite(z).all() and abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs(np.mean(np.abs(z) < 1) - 0.682689) < 5 * np.sqrt(0.2166 / n)


@tl.kernel(warps=4)
def dropout(
    x: tl.Tensor[tl.f32, "M", "N"],
    y: tl.Tensor[tl.f32, "M", "N"],
    p: tl.f32,
    seed: tl.i32,
    BM: tl.constexpr = 16,
    BN: tl.constexpr = 64,
):
    """y = x / (1 - p) where rand(seed, row * N + column) > p, else 0."""
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    rows = bm * BM + tl.arange(0, BM)[:, None]
    columns = bn * BN + tl.arange(0, BN)[None, :]
    keep = tl.rand(seed, rows * N + columns) > p
    t = tl.load(x, [bm * BM, bn * BN], [BM, BN])
    tl.store(y, [bm * BM, bn * BN], tl.where(keep, t * (1.0 / (1.0 - p)), 0.0))


def test_a_dropout_kernel_keeps_what_the_reference_mask_keeps():
    m, n, p, seed = 37, 100, 0.3, 77
    x = np.random.default_rng(3).standard_normal((m, n)).astype(np.float32)
    compiled, interpreted = both(dropout, x, np.zeros_like(x), p, seed)
    assert_bitwise(compiled, interpreted)
    u = reference(seed, 32, np.arange(m * n).reshape(m, n), 32)[1]
    scale = np.float32(1) / (np.float32(1) - np.float32(p))
    np.testing.assert_array_equal(compiled, np.where(u > np.float32(p), x * scale, 0))
    assert abs(np.mean(compiled != 0) - (1 - p)) < 0.03


@pytest.mark.parametrize("target", ["sm_80", "sm_90a"])
def test_a_1024_element_tile_of_draws_builds_for_the_gpu_without_spills(target):
    resources = uniforms_and_normals.compile(target=target).resources
    assert resources.spill_store_bytes == 0 and resources.spill_load_bytes == 0, resources


# -- errors at the user's line -------------------------------------------------------------


def test_float_offsets_are_reported_at_the_line():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"]):
        tl.store(x, [0], tl.rand(1, tl.load(x, [0], [8])))  # <- error

    assert_reported(
        k,
        "tl.rand: offsets must be an integer tile, a runtime integer scalar or a Python "
        "int, got a tile [8] of f32",
    )


def test_a_float_seed_is_reported_at_the_line():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"]):
        tl.store(x, [0], tl.randn(0.5, tl.arange(0, 8)))  # <- error

    assert_reported(
        k, "tl.randn: seed must be a Python int or a runtime integer scalar, got float 0.5"
    )


def test_a_runtime_float_seed_is_reported_at_the_line():
    @tl.kernel
    def k(x: tl.Tensor[tl.u32, "N"], seed: tl.f32):
        tl.store(x, [0], tl.randint(seed, tl.arange(0, 8)))  # <- error

    assert_reported(k, "seed must be a Python int or a runtime integer scalar", "of f32")


def test_a_tile_of_seeds_is_reported_at_the_line():
    @tl.kernel
    def k(x: tl.Tensor[tl.u32, "N"]):
        offsets = tl.arange(0, 8)
        tl.store(x, [0], tl.randint(offsets, offsets))  # <- error

    assert_reported(k, "seed must be one number for the whole call", "a tile [8] of i32")


def test_a_seed_beyond_64_bits_is_reported_at_the_line():
    @tl.kernel
    def k(x: tl.Tensor[tl.u32, "N"]):
        tl.store(x, [0], tl.randint(2**64, tl.arange(0, 8)))  # <- error

    assert_reported(k, "seed must fit 64 bits", f"got {2**64}")


def test_the_library_namespace_names_the_generators():
    from tilelang.lang.api import tl as library

    assert (library.randint4x, library.randint) == (tl.randint4x, tl.randint)
    assert (library.rand, library.randn) == (tl.rand, tl.randn)
