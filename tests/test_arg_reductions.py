"""`tl.argmax` / `tl.argmin`: the first index of the extreme along an axis (of the
flattened tile when no axis is given), NaN ignored as `tl.max`/`tl.min` ignore it, a
row of NaN only giving 0 — on the interpreter and the CPU backend, against numpy."""

import numpy as np
import pytest

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
        flat, [0], tl.join(tl.argmax(tile, keepdims=True)[0], tl.argmin(tile, keepdims=True)[0])
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
