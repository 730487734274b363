"""`tl.argmax` / `tl.argmin`: the first index of the extreme along an axis (of the
flattened tile when no axis is given), NaN ignored as `tl.max`/`tl.min` ignore it, a
row of NaN only giving 0 — on the interpreter and the CPU backend, against numpy."""

import numpy as np
import pytest
from conftest import assert_reported

import tilelang as tl


@tl.kernel(warps=2)
def extremes(
    x: tl.Tensor["T", "M", "N"],
    row_max: tl.Tensor[tl.i32, "M"],
    column_min: tl.Tensor[tl.i32, "N"],
    flat: tl.Tensor[tl.i32, "2"],
    T: tl.constexpr,
    BM: tl.constexpr = 8,
    BN: tl.constexpr = 16,
):
    tile = tl.load(x, [0, 0], [BM, BN])
    tl.store(row_max, [0], tl.argmax(tile, axis=1))
    tl.store(column_min, [0], tl.argmin(tile, axis=0))
    tl.store(
        flat, [0], tl.concat([tl.argmax(tile, keepdims=True)[0], tl.argmin(tile, keepdims=True)[0]])
    )


def first_index(values: np.ndarray, axis: int | None, largest: bool) -> np.ndarray:
    """Written from the definition: NaN never wins, ties go to the smaller index."""
    if axis is None:
        values, axis = values.reshape(-1), 0
    values = np.moveaxis(values.astype(np.float64), axis, -1)
    out = np.zeros(values.shape[:-1], np.int64)
    for where in np.ndindex(values.shape[:-1]):
        best = None
        for i, v in enumerate(values[where]):
            if not np.isnan(v) and (best is None or (v > best[1] if largest else v < best[1])):
                best = (i, v)
        out[where] = 0 if best is None else best[0]
    return out


@pytest.mark.parametrize(
    ("name", "dtype"), [("f32", np.float32), ("i8", np.int8), ("u16", np.uint16)]
)
def test_the_first_extreme_wins(name, dtype):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, (8, 16)).astype(dtype)  # small range: many ties
    if dtype == np.float32:
        x[2] = np.nan  # a row of NaN only
        x[5, :3] = np.nan
        x[rng.random((8, 16)) < 0.1] = np.nan
    args = (x, np.zeros(8, np.int32), np.zeros(16, np.int32), np.zeros(2, np.int32))
    expected = (
        first_index(x, 1, True),
        first_index(x, 0, False),
        [first_index(x, None, True), first_index(x, None, False)],
    )
    for results in (extremes.interpret(*args, T=name), extremes(*[a.copy() for a in args], T=name)):
        for got, want in zip(results, expected, strict=True):
            np.testing.assert_array_equal(got, np.asarray(want).reshape(got.shape))


def test_it_compiles_for_the_gpu():
    compiled = extremes.compile(target="sm_90", T="f32")
    resources = compiled.resources
    assert resources.spill_store_bytes == 0 and resources.spill_load_bytes == 0
    assert len(compiled.cubin) > 0 and compiled.stats["reduce_shuffle"] > 0


@tl.kernel(warps=2)
def extremes_with_indices(
    x: tl.Tensor[tl.f32, "M", "N"],
    row_max: tl.Tensor[tl.f32, "M"],
    row_argmax: tl.Tensor[tl.i32, "M"],
    flat_min: tl.Tensor[tl.f32, "1", "1"],
    flat_argmin: tl.Tensor[tl.i32, "1", "1"],
    BM: tl.constexpr = 8,
    BN: tl.constexpr = 16,
):
    tile = tl.load(x, [0, 0], [BM, BN])
    values, indices = tl.max(tile, axis=1, return_indices=True)
    tl.store(row_max, [0], values)
    tl.store(row_argmax, [0], indices)
    smallest, where = tl.min(tile, keepdims=True, return_indices=True)
    tl.store(flat_min, [0, 0], smallest)
    tl.store(flat_argmin, [0, 0], where)


def test_max_and_min_return_indices_as_triton_spells_it():
    rng = np.random.default_rng(5)
    x = rng.integers(-3, 3, (8, 16)).astype(np.float32)
    x[1, 4:] = np.nan
    args = (x, np.zeros(8, np.float32), np.zeros(8, np.int32), np.zeros((1, 1), np.float32))
    args += (np.zeros((1, 1), np.int32),)
    row_argmax = first_index(x, 1, True)
    flat_argmin = first_index(x, None, False)
    expected = (
        x[np.arange(8), row_argmax],
        row_argmax,
        x.reshape(-1)[flat_argmin].reshape(1, 1),
        np.reshape(flat_argmin, (1, 1)),
    )
    for results in (
        extremes_with_indices.interpret(*args),
        extremes_with_indices(*[a.copy() for a in args]),
    ):
        for got, want in zip(results, expected, strict=True):
            np.testing.assert_array_equal(got, want)


def test_return_indices_must_be_a_compile_time_bool():
    @tl.kernel
    def bad(x: tl.Tensor[tl.f32, "8"], y: tl.Tensor[tl.f32, "1"], flag: tl.i32):
        tl.store(y, [0], tl.max(tl.load(x, [0], [8]), return_indices=flag))  # <- error

    assert_reported(bad, "return_indices must be a compile-time bool")
