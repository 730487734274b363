"""Binding checks the packing of weights packed by `tl.pack_for_dot` against the reads
of the kernel they are passed to (`tilelang.runtime.arguments.fragment_reads`,
`tilelang.packing.DotPacking.reads_as`): a mismatched tile, m, warps or operand type is a
ValueError naming the parameter, the packing given and the one the kernel needs, before
anything runs, on the CPU path and in the interpreter; matching packings (and a packing
whose K tile the kernel's divides, as `tilelang.quant` uses) still give numpy's answer.
Also `pack_for_dot` of numpy integer values (int8 is its own type's values)."""

import re

import numpy as np
import pytest

import tilelang as tl

BM, BN, BK = 16, 64, 64
K, N, M = 128, 64, 3


@tl.kernel(warps=4)
def u4_matmul(
    x: tl.Tensor[tl.f16, "M", "K"],
    w: tl.Tensor[tl.u4, "(N + BN - 1) // BN", "(K + BK - 1) // BK * BK * BN"],
    y: tl.Tensor[tl.f16, "M", "N"],
    BM: tl.constexpr = BM,
    BN: tl.constexpr = BN,
    BK: tl.constexpr = BK,
):
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    fragments = tl.dot_layout("b", BM, BN, BK)
    acc = tl.zeros([BM, BN], tl.f32)
    for k in tl.range(0, K, BK):
        q = tl.load_fragment(w, [k, bn * BN], fragments)
        acc = tl.dot(tl.load(x, [bm * BM, k], [BM, BK]), q.to(tl.f16), acc)
    tl.store(y, [bm * BM, bn * BN], acc.to(tl.f16))


@tl.kernel(warps=4)
def i8_as_f16_matmul(
    x: tl.Tensor[tl.f16, "M", "K"],
    w: tl.Tensor[tl.i8, "(N + BN - 1) // BN", "(K + BK - 1) // BK * BK * BN"],
    y: tl.Tensor[tl.f16, "M", "N"],
    BM: tl.constexpr = BM,
    BN: tl.constexpr = BN,
    BK: tl.constexpr = BK,
):
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    fragments = tl.dot_layout("b", BM, BN, BK)  # the f16 dot's b
    acc = tl.zeros([BM, BN], tl.f32)
    for k in tl.range(0, K, BK):
        q = tl.load_fragment(w, [k, bn * BN], fragments)
        acc = tl.dot(tl.load(x, [bm * BM, k], [BM, BK]), q.to(tl.f16), acc)
    tl.store(y, [bm * BM, bn * BN], acc.to(tl.f16))


@tl.kernel(warps=4)
def plain_sum(w: tl.Tensor[tl.u4, "R", "C"], out: tl.Tensor[tl.i32, "R"]):
    tile = tl.load(w, [0, 0], [4, 16])  # row-major codes
    tl.store(out, [0], tl.sum(tile.to(tl.i32), axis=1))


def _weights(seed: int = 0) -> tl.PackedArray:
    return tl.pack_codes(np.random.default_rng(seed).integers(0, 16, (K, N)), tl.u4)


def _x(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((M, K)).astype(np.float16)


def _close(y: np.ndarray, x: np.ndarray, w: np.ndarray) -> None:
    exact = x.astype(np.float64) @ w.astype(np.float64)
    assert np.abs(y - exact).max() <= 2.0**-9 * np.abs(exact).max()


RUNNERS = {"cpu": lambda kernel: kernel, "interpreter": lambda kernel: kernel.interpret}


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize(
    ("packed_with", "given"),
    [
        ({"warps": 8}, "warps=8"),
        ({"warps": 2}, "warps=2"),
        ({"m": 64}, "m=64"),
        ({"tile": (32, 64)}, "tile=(32, 64)"),
        ({"operand": tl.i8, "acc": tl.i32}, "operand=tl.i8, acc=tl.i32"),
    ],
    ids=str,
)
def test_a_mismatched_packing_is_refused_before_anything_runs(runner, packed_with, given):
    options = {"tile": (BK, BN), "m": BM, "warps": 4, **packed_with}
    packed = tl.pack_for_dot(_weights(), **options)
    y = np.full((M, N), 7, np.float16)
    with pytest.raises(ValueError) as raised:
        RUNNERS[runner](u4_matmul)(_x(), packed, y)
    message = str(raised.value)
    assert "u4_matmul(): parameter 'w'" in message
    assert f"was packed for {given} (tl.pack_for_dot(w, " in message
    assert "as dot operand b of [16, 64] @ [64, 64] of f16 accumulated in f32 over 4 warps" in (
        message
    )
    assert message.endswith("pack it with tl.pack_for_dot(w, tile=(64, 64), m=16, warps=4)")
    assert re.search(r"test_dot_packing_checks\.py:\d+", message)  # the load_fragment line
    assert (y == 7).all()  # nothing ran


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_matching_packing_gives_numpys_answer(runner):
    weights, x = _weights(), _x()
    packed = tl.pack_for_dot(weights, tile=(BK, BN), m=BM, warps=4)
    y = RUNNERS[runner](u4_matmul)(x, packed, np.empty((M, N), np.float16))
    _close(y, x, weights.unpack())


def test_a_packing_whose_k_tile_the_kernels_divides_is_read_as_packed():
    """Packed in 128-row tiles, read in 64-row ones: the same stream of codes (the
    two 64-row tiles' orders, one after the other), which `tilelang.quant` relies on."""
    weights, x = _weights(2), _x(3)
    packed = tl.pack_for_dot(weights, tile=(128, BN), m=BM, warps=4)
    y = u4_matmul(x, packed, np.empty((M, N), np.float16))
    _close(y, x, weights.unpack())


def test_i8_weights_packed_for_an_i8_dot_are_refused_by_an_f16_dot():
    values = np.random.default_rng(4).integers(-128, 128, (K, N)).astype(np.int8)
    packed = tl.pack_for_dot(values, tile=(BK, BN), m=BM, warps=4, operand=tl.i8, acc=tl.i32)
    with pytest.raises(ValueError, match=r"was packed for operand=tl\.i8, acc=tl\.i32") as raised:
        i8_as_f16_matmul(_x(), packed, np.empty((M, N), np.float16))
    assert str(raised.value).endswith("tl.pack_for_dot(w, tile=(64, 64), m=16, warps=4)")
    with pytest.raises(ValueError, match=r"operand=tl\.i8"):
        i8_as_f16_matmul.interpret(_x(), packed, np.empty((M, N), np.float16))
    # packed for the dot the kernel does: numpy int8 values taken as they are
    x = _x(5)
    packed = tl.pack_for_dot(values, tile=(BK, BN), m=BM, warps=4)
    assert tl.unpack_from_dot(packed) == tl.pack(values, tl.i8)
    _close(i8_as_f16_matmul(x, packed, np.empty((M, N), np.float16)), x, values)


def test_packed_codes_read_as_row_major_codes_are_refused():
    packed = tl.pack_for_dot(_weights(), tile=(BK, BN), m=BM, warps=4)
    out = np.zeros(packed.shape[0], np.int32)
    with pytest.raises(ValueError, match=r"plain_sum\(\): parameter 'w' holds codes permuted by"):
        plain_sum(packed, out)
    # the bytes as they are, on purpose: a plain PackedArray is taken as it is
    raw = tl.PackedArray(packed.data, packed.dtype, packed.shape)
    out = plain_sum(raw, out)
    np.testing.assert_array_equal(out, raw.codes()[:, :16].sum(axis=1)[: out.size])


def test_plain_bytes_of_the_right_packing_are_taken_as_they_are():
    """Nothing tells already permuted bytes from row-major codes: a plain PackedArray
    is not checked (the guide says so), so bytes packed for the kernel still work."""
    weights, x = _weights(6), _x(7)
    packed = tl.pack_for_dot(weights, tile=(BK, BN), m=BM, warps=4)
    raw = tl.PackedArray(packed.data, packed.dtype, packed.shape)
    _close(u4_matmul(x, raw, np.empty((M, N), np.float16)), x, weights.unpack())


def test_pack_for_dot_of_numpy_integer_values():
    values = np.random.default_rng(8).integers(-128, 128, (64, 64)).astype(np.int8)
    expected = tl.pack_for_dot(tl.pack(values, tl.i8), tile=(64, 64))
    assert tl.pack_for_dot(values, tile=(64, 64)) == expected  # int8 says i8
    assert tl.pack_for_dot(values, tl.i8, tile=(64, 64)) == expected
    with pytest.raises(ValueError, match=r"bit patterns .*tl\.pack\(w, tl\.i8\)"):
        tl.pack_for_dot(values.astype(np.int64), tl.i8, tile=(64, 64))
    with pytest.raises(TypeError, match="needs their dtype"):
        tl.pack_for_dot(values.astype(np.uint8), tile=(64, 64))  # u4 codes? u8?


def device_bytes(packed: tl.DotPackedArray, pointer: int, made: list) -> tl.DeviceBuffer:
    """What `tl.DeviceBuffer(packed)` makes, without a driver: the codes' bytes at
    `pointer`, their dtype, shape and packing (`made` lists it, to disown it after)."""
    buffer = tl.DeviceBuffer.__new__(tl.DeviceBuffer)
    buffer.nbytes, buffer.shape = packed.data.nbytes, packed.shape
    buffer.host_dtype, buffer.pointer = np.dtype(np.uint8), pointer
    buffer.dtype, buffer.packing = packed.dtype, packed.packing
    made.append(buffer)
    return buffer


class DeviceHalf:
    def __init__(self, pointer: int, shape: tuple[int, ...]) -> None:
        self.__cuda_array_interface__ = {
            "data": (pointer, False), "shape": shape, "typestr": "<f2", "version": 3,
        }  # fmt: skip


def test_device_buffers_keep_their_packing_and_the_gpu_call_checks_it(monkeypatch):
    """With the driver stubbed: a mismatched packing is refused before any launch, on
    the first call and on a call that would otherwise be warm."""
    from tilelang.runtime import gpu

    launches = []
    monkeypatch.setattr(gpu, "device_arch", lambda: "sm_80")
    monkeypatch.setattr(gpu, "current_stream", lambda tensors: 0)
    monkeypatch.setattr(gpu, "launch", lambda *args: launches.append(args))
    good = tl.pack_for_dot(_weights(), tile=(BK, BN), m=BM, warps=4)
    bad = tl.pack_for_dot(_weights(), tile=(BK, BN), m=BM, warps=8)
    x, y = DeviceHalf(0x7F0000000000, (M, K)), DeviceHalf(0x7F0000100000, (M, N))
    made: list = []
    try:
        u4_matmul(x, device_bytes(good, 0x7F0000200000, made), y)
        u4_matmul(x, device_bytes(good, 0x7F0000300000, made), y)  # warm
        assert len(launches) == 2
        for _ in range(2):
            with pytest.raises(ValueError, match=r"parameter 'w' was packed for warps=8"):
                u4_matmul(x, device_bytes(bad, 0x7F0000200000, made), y)
        assert len(launches) == 2
    finally:
        for buffer in made:
            buffer.pointer = 0  # nothing to free: no driver allocated it
